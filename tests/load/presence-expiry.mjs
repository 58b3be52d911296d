#!/usr/bin/env node
/*
 * presence-expiry.mjs: presence's Redis-side costs that do not depend on traffic
 * (docs/benchmarks.md "Presence (issue 15)"), against a private redis-server it starts (so
 * Redis's counters hold nothing else) and pushedge processes it starts:
 *
 *   vanish: node A holds M presence members (SSE) of a channel, node B answers
 *           GET /api/presence on it every 20 ms; A is killed with SIGKILL and the time until B
 *           lists none is taken. R runs per --presence-node-timeout value (default 5, and 2).
 *   beat:   one idle node for S seconds: Redis commands and bytes per heartbeat (INFO
 *           commandstats and INFO stats total_net_input/output_bytes, read on one raw
 *           connection whose own bytes are subtracted).
 *   count:  C channels with two presence members each, on one node, for S seconds: the count
 *           queries' commands (HLEN), Redis CPU and bytes per channel per second, beyond the
 *           idle node's.
 *   joinleave: J connect/disconnect cycles of one SSE stream on a channel that a presence
 *           watcher holds, with presence=1 and without (interleaved halves): Redis commands and
 *           bytes per cycle; the difference is what a member's join and leave cost (the FCALL,
 *           the node set's SADD/SREM, and the event's PUBLISH to the watching node).
 *
 *   node tests/load/presence-expiry.mjs --bin build-rel/edge/pushedge [--runs 5] [--members 20]
 *        [--timeouts 5,2] [--seconds 10] [--channels 100] [--cycles 300] [--threads 2]
 * One JSON line per measurement. Every wait is bounded; every process it starts is stopped.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const args = Object.fromEntries(
    process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const bin = args.bin || 'build-rel/edge/pushedge';
const runs = Math.min(Number(args.runs || 5), 50);
const members = Math.min(Number(args.members || 20), 1000);
const timeouts = String(args.timeouts || '5,2').split(',').map(Number);
const seconds = Math.min(Number(args.seconds || 10), 120);
const channels = Math.min(Number(args.channels || 100), 2000);
const threads = String(args.threads || 2);
const cycles = Math.min(Number(args.cycles || 300), 5000);
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer();
        s.listen(0, '127.0.0.1', () => {
            const p = s.address().port;
            s.close(() => resolve(p));
        });
    });
}

function request(port, p) {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () => resolve({ status: res.statusCode, text }));
        });
        req.setTimeout(5000, () => req.destroy(new Error('timeout')));
        req.on('error', reject);
        req.end();
    });
}

async function waitFor(cond, ms, what) {
    const until = Date.now() + ms;
    while (Date.now() < until) {
        if (await cond())
            return;
        await delay(20);
    }
    throw new Error(`timed out: ${what}`);
}

/* A RESP connection for INFO: one socket, so its own bytes are known exactly. */
async function respClient(port) {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r, j) => sock.once('connect', r).once('error', j));
    let buf = Buffer.alloc(0), waiter = null;
    sock.on('data', (c) => {
        buf = Buffer.concat([buf, c]);
        if (waiter)
            waiter();
    });
    const cmd = async (...argv) => {
        const req = `*${argv.length}\r\n` + argv.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
        sock.write(req);
        for (;;) {
            const nl = buf.indexOf('\r\n');
            if (nl > 0) {
                const head = buf.subarray(0, nl).toString();
                if (head[0] === '$') {
                    const len = Number(head.slice(1)), total = nl + 2 + len + 2;
                    if (buf.length >= total) {
                        const body = buf.subarray(nl + 2, nl + 2 + len).toString();
                        buf = buf.subarray(total);
                        return { body, reqBytes: Buffer.byteLength(req), replyBytes: total };
                    }
                } else {
                    buf = buf.subarray(nl + 2);
                    return { body: head, reqBytes: Buffer.byteLength(req), replyBytes: nl + 2 };
                }
            }
            await new Promise((r) => (waiter = r));
            waiter = null;
        }
    };
    return { cmd, close: () => sock.destroy() };
}

/* Redis's counters: commandstats and the byte totals, minus what this very INFO costs. */
async function snapshot(rc) {
    const s = await rc.cmd('INFO', 'stats');
    const c = await rc.cmd('INFO', 'commandstats');
    const num = (k) => Number(new RegExp(`^${k}:(\\d+)`, 'm').exec(s.body)[1]);
    const cmds = {};
    for (const m of c.body.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm))
        cmds[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
    /* The totals read by INFO stats count neither its own reply nor the INFO commandstats
     * exchange after it; both show in the next snapshot's totals. */
    return { in: num('total_net_input_bytes'), out: num('total_net_output_bytes'), cmds,
        ownIn: c.reqBytes + s.reqBytes, ownOut: s.replyBytes + c.replyBytes };
}

function delta(a, b, per) {
    const cmds = {};
    for (const [k, v] of Object.entries(b.cmds)) {
        const calls = v.calls - (a.cmds[k]?.calls || 0), usec = v.usec - (a.cmds[k]?.usec || 0);
        if (k === 'info' || calls <= 0)
            continue;
        cmds[k] = { calls_per: +(calls / per).toFixed(3), usec_per: +(usec / per).toFixed(2) };
    }
    return {
        cmds,
        in_bytes_per: +((b.in - a.in - a.ownIn) / per).toFixed(1),
        out_bytes_per: +((b.out - a.out - a.ownOut) / per).toFixed(1),
    };
}

async function startRedis() {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-presence-expiry-'));
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        { stdio: 'ignore' });
    const rcUntil = Date.now() + 5000;
    for (;;) {
        try {
            const rc = await respClient(port);
            await rc.cmd('PING');
            rc.close();
            break;
        } catch (e) {
            if (Date.now() > rcUntil)
                throw e;
            await delay(50);
        }
    }
    return { port, url: `redis://127.0.0.1:${port}`, stop: () => { proc.kill('SIGTERM'); fs.rmSync(dir, { recursive: true, force: true }); } };
}

const procs = new Set();
async function startNode(redisUrl, extra = []) {
    const port = await freePort();
    const proc = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--threads', threads, '--log-level', 'warn', '--redis', redisUrl, ...extra],
        { stdio: ['ignore', 'ignore', 'inherit'] });
    procs.add(proc);
    proc.on('exit', () => procs.delete(proc));
    await waitFor(async () => (await request(port, '/readyz').catch(() => ({}))).status === 200, 10000, 'pushedge ready');
    return { port, proc };
}

/* An SSE stream, resolved once live (its first id line: the subscription is up, a member is
 * registered). */
function sseLive(port, p) {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
            let text = '';
            const onData = (c) => {
                text += c;
                if (/(^|\n)id: /.test(text)) {
                    res.off('data', onData);
                    res.on('data', () => {});
                    resolve(req);
                }
            };
            res.on('data', onData);
            res.on('error', () => {});
        });
        req.on('error', () => {});
        req.once('error', reject);
        req.end();
    });
}

/* An SSE stream, resolved once its response began. */
function sse(port, p) {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
            res.on('data', () => {});
            res.on('error', () => {});
            resolve(req);
        });
        req.on('error', () => {});
        req.once('error', reject);
        req.end();
    });
}

const countOf = async (port, ch) => JSON.parse((await request(port, `/api/presence?channel=${ch}&members=0`)).text).count;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const redis = await startRedis();
const guard = setTimeout(() => {
    for (const p of procs)
        p.kill('SIGKILL');
    redis.stop();
    console.error('presence-expiry: timed out');
    process.exit(1);
}, (runs * timeouts.reduce((a, b) => a + b + 8, 0) + 4 * seconds + 120) * 1000);
try {
    /* vanish */
    for (const timeout of timeouts) {
        const ms = [];
        for (let r = 0; r < runs; r++) {
            const extra = timeout === 5 ? [] : ['--presence-node-timeout', String(timeout)];
            const a = await startNode(redis.url, extra), b = await startNode(redis.url, extra);
            const ch = `vanish${timeout}x${r}x${Date.now()}`;
            const streams = [];
            for (let i = 0; i < members; i++)
                streams.push(await sse(a.port, `/sse?channel=${ch}&presence=1`));
            await waitFor(async () => (await countOf(b.port, ch)) === members, 10000, 'members listed');
            /* A random phase against the heartbeats (both nodes beat once a second), so the runs
             * sample the bound's whole range rather than one startup offset. */
            await delay(Math.floor(Math.random() * 1000));
            const t0 = Date.now();
            a.proc.kill('SIGKILL');
            await waitFor(async () => (await countOf(b.port, ch)) === 0, (timeout + 5) * 1000, 'members gone');
            ms.push(Date.now() - t0);
            for (const s of streams)
                s.destroy();
            b.proc.kill('SIGTERM');
            await new Promise((res) => (b.proc.exitCode !== null ? res() : b.proc.once('exit', res)));
        }
        console.log(JSON.stringify({ test: 'vanish after SIGKILL', node_timeout_s: timeout, default: timeout === 5, members, runs: ms,
            median_ms: median(ms), max_ms: Math.max(...ms) }));
    }

    /* beat: one idle node */
    const rc = await respClient(redis.port);
    /* The vanish runs' last node left its heartbeat entry (a clean stop does not remove it):
     * without this the idle node would sweep it inside the window. The library stays. */
    await rc.cmd('FLUSHALL');
    const idle = await startNode(redis.url);
    await delay(1500);
    let a = await snapshot(rc);
    await delay(seconds * 1000);
    let b = await snapshot(rc);
    const idleDelta = delta(a, b, seconds);
    console.log(JSON.stringify({ test: 'idle node, per second (one heartbeat a second)', seconds, ...idleDelta }));

    /* count: C channels with presence members on the same node, past the bound (1) */
    idle.proc.kill('SIGTERM');
    await new Promise((res) => (idle.proc.exitCode !== null ? res() : idle.proc.once('exit', res)));
    await rc.cmd('FLUSHALL'); /* the idle node's entry, as above */
    const node = await startNode(redis.url, ['--presence-max-members', '1']);
    const streams = [];
    for (let i = 0; i < channels; i++) {
        streams.push(await sse(node.port, `/sse?channel=cnt${i}&presence=1`));
        streams.push(await sse(node.port, `/sse?channel=cnt${i}&presence=1`));
    }
    await waitFor(async () => (await countOf(node.port, `cnt${channels - 1}`)) === 2, 10000, 'members listed');
    await delay(1500);
    a = await snapshot(rc);
    await delay(seconds * 1000);
    b = await snapshot(rc);
    const withCounts = delta(a, b, seconds);
    const hlen = withCounts.cmds.hlen || { calls_per: 0, usec_per: 0 };
    console.log(JSON.stringify({ test: `${channels} channels with presence members, per second`, seconds, ...withCounts,
        per_channel_per_s: { hlen_calls: +(hlen.calls_per / channels).toFixed(3), hlen_usec: +(hlen.usec_per / channels).toFixed(3),
            in_bytes: +((withCounts.in_bytes_per - idleDelta.in_bytes_per) / channels).toFixed(1),
            out_bytes: +((withCounts.out_bytes_per - idleDelta.out_bytes_per) / channels).toFixed(1) } }));
    for (const s of streams)
        s.destroy();
    node.proc.kill('SIGTERM');
    await new Promise((res) => (node.proc.exitCode !== null ? res() : node.proc.once('exit', res)));

    /* joinleave: a watcher keeps the channel subscribed on the node (as a room with someone in
     * it); cycles with and without presence, in interleaved halves. */
    await rc.cmd('FLUSHALL');
    const jn = await startNode(redis.url);
    const jch = `jl${Date.now()}`;
    const watcher = await sseLive(jn.port, `/sse?channel=${jch}&presence=1`);
    await delay(1500);
    const per = { 0: [], 1: [] };
    for (const presence of [0, 1, 0, 1]) {
        const x = await snapshot(rc);
        for (let i = 0; i < cycles / 2; i++)
            (await sseLive(jn.port, `/sse?channel=${jch}&presence=${presence}`)).destroy();
        await delay(500); /* the last leave */
        const y = await snapshot(rc);
        per[presence].push(delta(x, y, cycles / 2));
    }
    for (const presence of [0, 1])
        console.log(JSON.stringify({ test: `connect/disconnect cycle, presence=${presence}, per cycle (two halves)`, cycles, halves: per[presence] }));
    const inb = (k) => per[k].reduce((a, d) => a + d.in_bytes_per, 0) / per[k].length;
    const outb = (k) => per[k].reduce((a, d) => a + d.out_bytes_per, 0) / per[k].length;
    console.log(JSON.stringify({ test: 'a member\'s join + leave (presence=1 minus presence=0), per cycle', in_bytes: +(inb(1) - inb(0)).toFixed(1),
        out_bytes: +(outb(1) - outb(0)).toFixed(1) }));
    watcher.destroy();
    jn.proc.kill('SIGTERM');
    await new Promise((res) => (jn.proc.exitCode !== null ? res() : jn.proc.once('exit', res)));
    rc.close();
} finally {
    clearTimeout(guard);
    for (const p of procs)
        p.kill('SIGKILL');
    redis.stop();
}

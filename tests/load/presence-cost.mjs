#!/usr/bin/env node
/*
 * presence-cost.mjs: what presence costs (docs/benchmarks.md "Presence"), measured against a
 * pushedge it starts, with presence on (presence=1) and off, in the same run:
 *
 *   fan-out:  S SSE streams on one channel; M messages published (8 requests in flight);
 *             deliveries/s from the first publish to the last event received. With presence
 *             on the streams are members and receive events; the message path then carries the
 *             per-delivery kind check only.
 *   churn:    W presence watchers on a channel, then C connect/disconnect cycles (an SSE stream
 *             opened until live, then closed; 10 in flight); cycles/s. With presence on each
 *             cycle is a member's join and leave: two registry changes and two events, each
 *             delivered to the W watchers.
 *
 *   node tests/load/presence-cost.mjs --bin build-rel/edge/pushedge [--redis redis://127.0.0.1:6379]
 *        [--streams 500] [--messages 500] [--cycles 2000] [--watchers 10] [--threads 2]
 * With --redis, each churn line also gives Redis's CPU per cycle (INFO commandstats around the
 * run, through redis-cli: calls and usec of FCALL, SADD, SREM, HSET, HDEL per cycle), and a last
 * line the cost of one heartbeat (pushedge_beat, measured over 5 idle seconds).
 * One JSON line per measurement. Bounded: --timeout seconds per measurement (default 120).
 * Single-threaded node: the client saturates before a multi-core server; compare on with off.
 */
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';

const args = Object.fromEntries(
    process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const bin = args.bin || 'build-rel/edge/pushedge';
const streams = Math.min(Number(args.streams || 500), 10000);
const messages = Math.min(Number(args.messages || 500), 100000);
const cycles = Math.min(Number(args.cycles || 2000), 100000);
const watchers = Math.min(Number(args.watchers || 10), 1000);
const threads = String(args.threads || 2);
const timeoutMs = Number(args.timeout || 120) * 1000;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer();
        s.listen(0, '127.0.0.1', () => {
            const p = s.address().port;
            s.close(() => resolve(p));
        });
    });
}

function request(port, path, { method = 'GET', body } = {}) {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path, method, agent }, (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () => resolve({ status: res.statusCode, text }));
        });
        req.on('error', reject);
        req.end(body);
    });
}

async function start(port) {
    const argv = ['--listen', `127.0.0.1:${port}`, '--threads', threads, '--log-level', 'warn'];
    if (args.redis)
        argv.push('--redis', args.redis);
    const proc = spawn(bin, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
    const until = Date.now() + 10000;
    while (Date.now() < until) {
        try {
            if ((await request(port, '/readyz')).status === 200)
                return proc;
        } catch {
            /* not yet */
        }
        await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGKILL');
    throw new Error('pushedge did not become ready');
}

/* A raw SSE stream: counts complete blocks ("\n\n"); resolves once live (the bare id line). */
function stream(port, path, counter) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1', () => sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`));
        let tail = '', live = false;
        sock.setEncoding('utf8');
        sock.on('data', (c) => {
            const text = tail + c;
            let i = -1, n = 0;
            while ((i = text.indexOf('\n\n', i + 1)) !== -1)
                ++n;
            tail = text.slice(-1);
            counter.blocks += n;
            if (!live && /\nid: [^\n]*\n\n/.test(text)) {
                live = true;
                resolve(sock);
            }
        });
        sock.on('error', reject);
        setTimeout(() => reject(new Error('stream not live in 10 s')), 10000).unref();
    });
}

async function waitFor(cond, ms, what) {
    const until = Date.now() + ms;
    while (!cond()) {
        if (Date.now() > until)
            throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, 5));
    }
}

async function fanout(port, presence) {
    const ch = `fan${presence}${Date.now()}`;
    const counter = { blocks: 0 };
    const socks = [];
    for (let i = 0; i < streams; i += 50)
        socks.push(...(await Promise.all(Array.from({ length: Math.min(50, streams - i) }, () => stream(port, `/sse?channel=${ch}&presence=${presence}`, counter)))));
    await new Promise((r) => setTimeout(r, 500)); /* the joins settle */
    const base = counter.blocks;
    const t0 = process.hrtime.bigint();
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
        while (next < messages) {
            const n = next++;
            const r = await request(port, `/api/publish?channel=${ch}`, { method: 'POST', body: `{"n":${n},"pad":"${'x'.repeat(100)}"}` });
            if (r.status !== 200)
                throw new Error(`publish: ${r.status} ${r.text}`);
        }
    }));
    await waitFor(() => counter.blocks - base >= streams * messages, timeoutMs, 'every delivery');
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    for (const sock of socks)
        sock.destroy();
    return { test: 'fanout', presence: !!presence, streams, messages, seconds: +s.toFixed(3), deliveries_per_s: Math.round((streams * messages) / s) };
}

/* Redis INFO commandstats as {cmd: {calls, usec}} (redis-cli on the URL's port), or null. */
function commandstats() {
    if (!args.redis)
        return null;
    const port = new URL(args.redis).port || '6379';
    const text = execFileSync('redis-cli', ['-p', port, 'INFO', 'commandstats'], { encoding: 'utf8' });
    const out = {};
    for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm))
        out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
    return out;
}

function statsDelta(a, b, per) {
    if (!a)
        return undefined;
    const out = {};
    for (const [k, v] of Object.entries(b)) {
        const calls = v.calls - (a[k]?.calls || 0), usec = v.usec - (a[k]?.usec || 0);
        if (calls > 0)
            out[k] = { calls_per: +(calls / per).toFixed(2), usec_per: +(usec / per).toFixed(2) };
    }
    return out;
}

async function churn(port, presence) {
    const ch = `churn${presence}${Date.now()}`;
    const wc = { blocks: 0 };
    const ws = [];
    for (let i = 0; i < watchers; i++)
        ws.push(await stream(port, `/sse?channel=${ch}&presence=1`, wc));
    const st0 = commandstats();
    const t0 = process.hrtime.bigint();
    let next = 0;
    await Promise.all(Array.from({ length: 10 }, async () => {
        while (next++ < cycles) {
            const s = await stream(port, `/sse?channel=${ch}&presence=${presence}`, { blocks: 0 });
            s.destroy();
        }
    }));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    /* The leaves of the last cycles (their closes reach the server after this). */
    await new Promise((r) => setTimeout(r, 300));
    const redis_per_cycle = st0 ? statsDelta(st0, commandstats(), cycles) : undefined;
    for (const sock of ws)
        sock.destroy();
    return { test: 'churn', presence: !!presence, cycles, watchers, seconds: +s.toFixed(3), cycles_per_s: Math.round(cycles / s), watcher_events: wc.blocks,
        redis_per_cycle };
}

const port = await freePort();
const proc = await start(port);
const guard = setTimeout(() => {
    proc.kill('SIGKILL');
    console.error('presence-cost: timed out');
    process.exit(1);
}, timeoutMs * 6);
try {
    const engine = args.redis ? 'redis' : 'memory';
    for (const presence of [0, 1, 0, 1])
        console.log(JSON.stringify({ engine, ...(await fanout(port, presence)) }));
    for (const presence of [0, 1, 0, 1])
        console.log(JSON.stringify({ engine, ...(await churn(port, presence)) }));
    if (args.redis) {
        /* The idle node's own traffic: its heartbeats (one pushedge_beat per second). */
        const a = commandstats();
        await new Promise((r) => setTimeout(r, 5000));
        console.log(JSON.stringify({ engine, test: 'idle 5 s', redis: statsDelta(a, commandstats(), 1) }));
    }
} finally {
    clearTimeout(guard);
    proc.kill('SIGTERM');
    agent.destroy();
}

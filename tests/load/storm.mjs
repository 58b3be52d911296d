#!/usr/bin/env node
/*
 * storm.mjs: a reconnect storm on the Redis engine (issue 17 item 3), before and after, in one
 * run. For each variant (each binary and its arguments):
 *   1. a private redis-server on a free loopback port; a publisher node P (the "after" binary)
 *      and the subscriber node S (the variant), both on it with --history-size 10000;
 *   2. P publishes to --channels channels at --rate messages/s each, all through the run;
 *   3. --clients SSE subscribers (raw sockets, one process) connect to S and go live, and wait
 *      until each has seen more than --behind messages;
 *   4. S is killed (SIGKILL: a crash or a deploy without drain) and started again on the same
 *      port; once its /readyz is 200, every client reconnects at once (at most --inflight
 *      connections not yet answered, so the listen backlog does not drop SYNs) with the cursor
 *      of a message 1..--behind before the last one it saw;
 *   5. measured from the first reconnect to the last client live (its bare `id:` line): Redis's
 *      commands (INFO commandstats: all, FCALL_RO = reads, FCALL = publishes, with their usec),
 *      Redis CPU (INFO cpu used_cpu_sys + used_cpu_user), S's pushedge_catchup_reads_total;
 *   6. the publisher stops; once every client has the newest message of its channel, each
 *      client's messages since its reconnect are compared with the stream (XRANGE): lost and
 *      duplicated messages (both must be 0).
 * Usage (ulimit -n must allow --clients sockets plus a few):
 *   ulimit -n 20000; flock /tmp/pushedge-bench.lock node tests/load/storm.mjs \
 *       --bin build-rel/edge/pushedge --before-bin OTHER/edge/pushedge [--before-args "..."] \
 *       [--clients 10000] [--channels 4] [--rate 20] [--behind 50] [--threads 1] [--rounds 1]
 * --to warm: instead of restarting S, the clients move to a second subscriber node W (same binary
 * and arguments as S) that already serves every channel (one subscriber each since the start):
 * a drained node's clients arriving at a node that already serves their channels.
 * Without --before-bin the "before" variant is --bin with --catchup-cache 0 (the cache and read
 * coalescing off). Rounds alternate before/after. Prints one JSON line per run and a table.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { redisCmd } from '../e2e/redislib.mjs';

const argv = process.argv.slice(2);
function opt(name, def) {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : def;
}
const BIN = opt('bin', 'build-rel/edge/pushedge');
const BEFORE_BIN = opt('before-bin', null);
const BEFORE_ARGS = (opt('before-args', BEFORE_BIN ? '' : '--catchup-cache 0') || '').split(/\s+/).filter(Boolean);
const CLIENTS = Number(opt('clients', 10000));
const CHANNELS = Number(opt('channels', 4));
const RATE = Number(opt('rate', 20));
const BEHIND = Number(opt('behind', 50));
const THREADS = opt('threads', '1');
const ROUNDS = Number(opt('rounds', 1));
const INFLIGHT = Number(opt('inflight', 1000));
const TO = opt('to', 'same');
const LIVE_LIMIT = Number(opt('live-limit', 120)) * 1000;
const HOST = '127.0.0.1';
const delay = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.listen(0, HOST, () => {
            const p = s.address().port;
            s.close(() => resolve(p));
        });
        s.on('error', reject);
    });
}

async function until(fn, ms, what) {
    const end = Date.now() + ms;
    for (;;) {
        const v = await fn();
        if (v)
            return v;
        if (Date.now() > end)
            throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await delay(20);
    }
}

function get(port, p) {
    return new Promise((resolve) => {
        const req = http.get({ host: HOST, port, path: p, agent: false, timeout: 2000 }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode, body }));
        });
        req.on('error', () => resolve({ status: 0, body: '' }));
        req.on('timeout', () => req.destroy());
    });
}

const children = new Set();
process.on('exit', () => {
    for (const c of children)
        try {
            c.kill('SIGKILL');
        } catch {
            /* gone */
        }
});

function startProc(cmd, args, label) {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c) => (err = (err + c).slice(-4000)));
    p.label = label;
    p.errText = () => err;
    children.add(p);
    p.on('exit', () => children.delete(p));
    return p;
}

async function stopProc(p, sig = 'SIGTERM') {
    if (p.exitCode !== null || p.signalCode !== null)
        return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill(sig);
    await Promise.race([done, delay(15000).then(() => p.kill('SIGKILL'))]);
    await done;
}

async function startNode(bin, port, redisUrl, extra) {
    const p = startProc(bin, ['--listen', `${HOST}:${port}`, '--redis', redisUrl, '--history-size', '10000', '--threads', THREADS,
        ...extra], `pushedge ${port}`);
    await until(async () => (await get(port, '/readyz')).status === 200, 15000, `pushedge on ${port} ready`);
    return p;
}

function parseInfo(text) {
    const out = {};
    for (const line of String(text).split('\r\n')) {
        const m = /^([a-z_]+):(.*)$/.exec(line);
        if (m)
            out[m[1]] = m[2];
    }
    return out;
}

async function redisStats(port) {
    const info = parseInfo(await redisCmd(port, ['INFO', 'all'], { timeoutMs: 5000 }));
    let calls = 0;
    const cmd = {};
    for (const [k, v] of Object.entries(info)) {
        if (!k.startsWith('cmdstat_'))
            continue;
        const c = Number(/calls=(\d+)/.exec(v)[1]), us = Number(/usec=(\d+)/.exec(v)[1]);
        cmd[k.slice(8)] = { calls: c, usec: us };
        calls += c;
    }
    return { calls, cmd, cpu: Number(info.used_cpu_sys) + Number(info.used_cpu_user) };
}

/* The node's pushedge_catchup_reads_total by source (null where the binary has no such metric). */
async function readsOf(port) {
    const metrics = (await get(port, '/metrics')).body;
    const reads = {};
    for (const src of ['engine', 'cache', 'shared']) {
        const m = new RegExp(`pushedge_catchup_reads_total\\{source="${src}"\\} (\\d+)`).exec(metrics);
        reads[src] = m ? Number(m[1]) : null;
    }
    return reads;
}

/* ---- SSE clients on raw sockets -------------------------------------------------------------- */

const ID_IN_DATA = /"id":"(\d+-\d+)"/;

class Client {
    constructor(i, channel) {
        this.i = i;
        this.channel = channel;
        this.seen = []; /* message IDs before the restart */
        this.after = []; /* message IDs since the reconnect */
        this.phase = 0;
        this.live = false;
        this.liveAt = 0;
        this.cursor = null;
    }

    connect(port, since, onHead) {
        this.live = false;
        this.buf = '';
        this.head = false;
        const q = `/sse?channel=${this.channel}${since ? `&since=${since}` : ''}`;
        const s = net.connect(port, HOST);
        this.sock = s;
        s.setEncoding('latin1');
        s.on('connect', () => s.write(`GET ${q} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n`));
        s.on('data', (d) => this.onData(d, onHead));
        s.on('error', () => {});
        s.on('close', () => {
            if (!this.head)
                onHead(false);
            this.head = true;
        });
    }

    onData(d, onHead) {
        this.buf += d;
        if (!this.head) {
            const e = this.buf.indexOf('\r\n\r\n');
            if (e < 0)
                return;
            this.head = true;
            onHead(this.buf.startsWith('HTTP/1.1 200'));
            this.buf = this.buf.slice(e + 4);
        }
        let k;
        while ((k = this.buf.indexOf('\n\n')) >= 0) {
            const block = this.buf.slice(0, k);
            this.buf = this.buf.slice(k + 2);
            const di = block.indexOf('data:');
            if (di >= 0) {
                const m = ID_IN_DATA.exec(block.slice(di));
                if (m && !/^event: (gap|join|leave)/m.test(block))
                    (this.phase === 0 ? this.seen : this.after).push(m[1]);
                if (/^event: gap/m.test(block))
                    this.gaps = (this.gaps || 0) + 1;
            } else if (/^id:/m.test(block) && !this.live) {
                this.live = true;
                this.liveAt = Date.now();
            }
        }
    }
}

/* Connects every client, at most INFLIGHT without a response head; a connection refused, reset
 * or answered with another status than 200 is tried again (at most 50 times, 100 ms apart).
 * Resolves with the number of retries once every client has its 200. */
function connectAll(clients, port, sinceOf) {
    return new Promise((resolve, reject) => {
        const queue = [...clients];
        let pending = 0, done = 0, retries = 0;
        const tries = new Map();
        const pump = () => {
            while (pending < INFLIGHT && queue.length !== 0) {
                const c = queue.shift();
                ++pending;
                c.connect(port, sinceOf(c), (ok) => {
                    --pending;
                    if (ok) {
                        if (++done === clients.length)
                            resolve(retries);
                    } else {
                        const n = (tries.get(c) ?? 0) + 1;
                        tries.set(c, n);
                        ++retries;
                        c.sock?.destroy();
                        if (n > 50) {
                            reject(new Error(`client ${c.i}: no 200 after ${n} attempts`));
                            return;
                        }
                        setTimeout(() => {
                            queue.push(c);
                            pump();
                        }, 100);
                    }
                    pump();
                });
            }
        };
        pump();
    });
}

/* ---- one run --------------------------------------------------------------------------------- */

async function run(variant, bin, extra) {
    const rport = await freePort();
    const rdir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-storm-'));
    const redis = startProc('redis-server', ['--port', String(rport), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', rdir,
        '--daemonize', 'no'], 'redis');
    await until(async () => {
        try {
            return (await redisCmd(rport, ['PING'], { timeoutMs: 500 })) === 'PONG';
        } catch {
            return false;
        }
    }, 10000, 'redis');
    const url = `redis://${HOST}:${rport}`;
    const pport = await freePort(), sport = await freePort();
    const pub = await startNode(BIN, pport, url, []);
    let sub = await startNode(bin, sport, url, extra);
    const chans = Array.from({ length: CHANNELS }, (_, i) => `storm${Date.now().toString(36)}x${i}`);
    /* --to warm: the node the clients move to, serving every channel from the start. */
    const wport = TO === 'warm' ? await freePort() : 0;
    const warm = TO === 'warm' ? await startNode(bin, wport, url, extra) : null;
    const keepers = TO === 'warm' ? chans.map((ch, i) => new Client(-1 - i, ch)) : [];
    if (warm)
        await connectAll(keepers, wport, () => null);

    /* The publisher: RATE messages/s per channel through P, one keep-alive connection. */
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    let publishing = true, published = 0, pubErrors = 0;
    const publisher = (async () => {
        const t0 = Date.now();
        for (let n = 0; publishing; n++) {
            const wait = t0 + (n * 1000) / RATE - Date.now();
            if (wait > 0)
                await delay(wait);
            await Promise.all(chans.map((ch) => new Promise((resolve) => {
                const body = JSON.stringify({ n, t: Date.now(), pad: 'x'.repeat(60) });
                const req = http.request({ host: HOST, port: pport, path: `/api/publish?channel=${ch}`, method: 'POST', agent,
                    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
                    res.resume();
                    res.on('end', () => {
                        if (res.statusCode === 200)
                            ++published;
                        else
                            ++pubErrors;
                        resolve();
                    });
                });
                req.on('error', () => {
                    ++pubErrors;
                    resolve();
                });
                req.end(body);
            })));
        }
    })();

    const clients = Array.from({ length: CLIENTS }, (_, i) => new Client(i, chans[i % CHANNELS]));
    /* The warm-up is not measured: clients join in batches of 1,000, each batch live before the
     * next (10,000 at once can already overwhelm the "before" variant's reads). */
    let refused0 = 0;
    for (let i = 0; i < clients.length; i += 1000) {
        const batch = clients.slice(i, i + 1000);
        refused0 += await connectAll(batch, sport, () => null);
        await until(() => batch.every((c) => c.live), 60000, 'a warm-up batch live');
    }
    await until(() => clients.every((c) => c.live && c.seen.length > BEHIND), 120000, 'every client live with enough messages');

    /* The restart: the node dies (its clients' connections are dropped first, so that nothing
     * arrives after the cursor is taken), and each client takes the cursor of a message k = 1..BEHIND
     * before the last one it saw. */
    for (const c of clients) {
        c.sock.destroy();
        c.cursor = c.seen[c.seen.length - (1 + (c.i % BEHIND))];
        c.phase = 1;
        c.after = [];
    }
    await stopProc(sub, 'SIGKILL');
    if (warm)
        sub = warm;
    else
        sub = await startNode(bin, sport, url, extra);
    const port2 = warm ? wport : sport;
    const r0 = await readsOf(port2);
    const s0 = await redisStats(rport);
    const t0 = Date.now();
    const refused1 = await connectAll(clients, port2, (c) => c.cursor);
    /* Bounded: a storm that does not settle within LIVE_LIMIT is reported as such. */
    let notLive = 0;
    await until(() => clients.every((c) => c.live), LIVE_LIMIT, 'every client live again').catch((e) => {
        notLive = clients.filter((c) => !c.live).length;
        console.error(`# ${variant}: ${e.message}: ${notLive} not live; the node's log: ${sub.errText().slice(-600)}`);
    });
    const tLive = notLive ? null : Math.max(...clients.map((c) => c.liveAt)) - t0;
    const s1 = await redisStats(rport);
    const r1 = await readsOf(port2);
    const reads = {};
    for (const k of Object.keys(r1))
        reads[k] = r1[k] === null ? null : r1[k] - r0[k];
    const rss = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${sub.pid}/status`, 'utf8'))[1]);

    /* Stop publishing; every client must reach its channel's newest message. */
    publishing = false;
    await publisher;
    const streams = {};
    for (const ch of chans) {
        const r = await redisCmd(rport, ['XRANGE', `pe:{${ch}}`, '-', '+'], { timeoutMs: 10000 });
        streams[ch] = r.map((e) => String(e[0]));
    }
    await until(() => clients.every((c) => c.after[c.after.length - 1] === streams[c.channel][streams[c.channel].length - 1]), 60000,
        'every client at its channel\'s newest message').catch((e) => console.error(`# ${e.message}`));
    let lost = 0, dup = 0, gaps = 0, bad = 0;
    for (const c of clients) {
        const s = streams[c.channel];
        const from = s.indexOf(c.cursor);
        if (from < 0) {
            ++bad;
            continue;
        }
        const want = s.slice(from + 1);
        const got = new Set();
        for (const id of c.after) {
            if (got.has(id))
                ++dup;
            got.add(id);
        }
        for (const id of want)
            if (!got.has(id))
                ++lost;
        for (const id of got)
            if (!want.includes(id))
                ++dup; /* at or before the cursor, or not in the stream */
        gaps += c.gaps || 0;
    }
    const d = (k) => (s1.cmd[k]?.calls ?? 0) - (s0.cmd[k]?.calls ?? 0);
    const du = (k) => (s1.cmd[k]?.usec ?? 0) - (s0.cmd[k]?.usec ?? 0);
    const res = {
        variant, to: TO, bin, extra: extra.join(' '), clients: CLIENTS, channels: CHANNELS, rate: RATE, behind: BEHIND, threads: THREADS,
        live_ms: tLive, not_live: notLive, redis_calls: s1.calls - s0.calls, fcall_ro: d('fcall_ro'), fcall_ro_usec: du('fcall_ro'),
        fcall: d('fcall'), fcall_usec: du('fcall'), subscribe: d('subscribe'),
        redis_cpu_ms: Math.round((s1.cpu - s0.cpu) * 1000), reads, lost, dup, gaps, bad_cursor: bad,
        refused: refused0 + refused1, published, pub_errors: pubErrors, s_rss_kib: rss,
    };
    for (const c of [...clients, ...keepers])
        c.sock?.destroy();
    agent.destroy();
    await stopProc(sub);
    await stopProc(pub);
    await stopProc(redis);
    fs.rmSync(rdir, { recursive: true, force: true });
    return res;
}

const variants = [
    ['before', BEFORE_BIN || BIN, BEFORE_ARGS],
    ['after', BIN, []],
];
const results = [];
try {
    for (let r = 0; r < ROUNDS; r++)
        for (const [name, bin, extra] of r % 2 === 0 ? variants : [...variants].reverse()) {
            const res = await run(name, bin, extra);
            console.log(JSON.stringify(res));
            results.push(res);
        }
} catch (e) {
    /* Stop what this run started (the exit hook alone does not run when node:test, loaded with
     * the e2e helpers, handles the failure). */
    console.error(e);
    for (const c of children)
        c.kill('SIGKILL');
    process.exit(2);
}
console.log('\n| variant | clients, to | time to all live | Redis commands | FCALL_RO (reads) | FCALL_RO usec | FCALL (publishes) | Redis CPU | reads engine / cache / shared | lost / dup |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of results)
    console.log(`| ${r.variant} | ${r.clients}, ${r.to} | ${r.live_ms === null ? `> ${LIVE_LIMIT} ms (${r.not_live} not live)` : `${r.live_ms} ms`} | ${r.redis_calls} | ${r.fcall_ro} | ${r.fcall_ro_usec} | ${r.fcall} | ${r.redis_cpu_ms} ms | ` +
        `${r.reads.engine ?? '-'} / ${r.reads.cache ?? '-'} / ${r.reads.shared ?? '-'} | ${r.lost} / ${r.dup} |`);
process.exit(results.every((r) => r.lost === 0 && r.dup === 0 && r.bad_cursor === 0) ? 0 : 1);

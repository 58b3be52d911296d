#!/usr/bin/env node
/*
 * engine.mjs: the engine benchmark of the Redis issue. For each configuration
 *   memory   one pushedge, the embedded engine
 *   redis-1  one pushedge on a private redis-server
 *   redis-2  two pushedge nodes on one redis-server: published on node A, received on node B
 * it measures, in the same run:
 *   - publish throughput: M messages through POST /api/publish with C requests in flight
 *     (keep-alive), counting only 200 answers (each one means the engine stored the message);
 *   - publish -> deliver latency: R messages per second, each carrying its send time, to S SSE
 *     subscribers (on the receiving node), p50/p90/p99/max, lost and duplicated;
 * and prints one JSON line per configuration, then a table with ratios to the memory engine.
 *
 *   node tests/bench/engine.mjs --bin build-rel/edge/pushedge [--messages 20000] [--concurrency 32]
 *        [--streams 100] [--rate 500] [--seconds 5] [--only memory,redis-1,redis-2]
 * Needs redis-server on PATH for the redis rows. Bounded: every phase has a deadline, at most
 * 200,000 messages and 2,000 streams. The client is one node process: at high rates it, not the
 * server, may be the limit (its CPU share is printed).
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
const bin = args.bin || 'build/edge/pushedge';
const M = Math.min(Number(args.messages || 20000), 200000);
const C = Math.min(Number(args.concurrency || 32), 256);
const S = Math.min(Number(args.streams || 100), 2000);
const R = Number(args.rate || 500);
const seconds = Number(args.seconds || 5);
const only = (args.only || 'memory,redis-1,redis-2').split(',');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hard = setTimeout(() => {
    console.error('engine.mjs: timed out');
    process.exit(1);
}, 600000);

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: C });
function request(port, method, p, body, useAgent = false) {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method, path: p, agent: useAgent ? agent : false }, (res) => {
            let data = '';
            res.on('data', (c) => (data += c));
            res.on('end', () => resolve({ status: res.statusCode, body: data }));
        });
        req.on('error', reject);
        req.end(body);
    });
}

async function waitHttp(port, p, ms = 10000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        try {
            if ((await request(port, 'GET', p)).status === 200) return;
        } catch (e) {
            /* not up yet */
        }
        await sleep(50);
    }
    throw new Error(`port ${port}: ${p} not 200 in ${ms} ms`);
}

const children = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

async function startRedis() {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-redis-'));
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
        stdio: 'ignore',
    });
    children.push(proc);
    for (let i = 0; i < 100; i++) {
        const ok = await new Promise((resolve) => {
            const s = net.connect(port, '127.0.0.1', () => {
                s.end();
                resolve(true);
            });
            s.on('error', () => resolve(false));
        });
        if (ok) break;
        await sleep(50);
    }
    return { port, proc, dir };
}

async function startNode(extra) {
    const port = await freePort();
    const proc = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--threads', '1', '--log-level', 'warn', ...extra], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(proc);
    await waitHttp(port, '/readyz');
    return { port, proc };
}

function cpuMs(pid) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}

/* Publishes M messages with C in flight; returns acked messages per second. */
async function throughput(port, channel) {
    let next = 0, ok = 0, failed = 0;
    const t0 = process.hrtime.bigint();
    const deadline = Date.now() + 120000;
    async function worker() {
        while (next < M && Date.now() < deadline) {
            const n = next++;
            const r = await request(port, 'POST', `/api/publish?channel=${channel}`, `{"n":${n},"pad":"${'x'.repeat(96)}"}`, true);
            if (r.status === 200) ok++;
            else failed++;
        }
    }
    await Promise.all(Array.from({ length: C }, worker));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    return { acked: ok, failed, publishes_per_s: Math.round(ok / s) };
}

/* S SSE streams on the receiving node; R messages/s for `seconds` from the publishing node. */
async function latency(pubPort, subPort, channel) {
    const N = Math.round(R * seconds);
    const seen = Array.from({ length: S }, () => new Set());
    const lat = [];
    let dups = 0, live = 0;
    const socks = [];
    for (let i = 0; i < S; i++) {
        const sock = net.connect(subPort, '127.0.0.1');
        let buf = '', isLive = false;
        sock.on('data', (chunk) => {
            buf += chunk.toString('latin1');
            let idx;
            while ((idx = buf.indexOf('\n\n')) >= 0) {
                const ev = buf.slice(0, idx);
                buf = buf.slice(idx + 2);
                if (!isLive && /^id: /m.test(ev) && !/^data: /m.test(ev)) {
                    isLive = true;
                    live++;
                }
                const m = /^data: (.*)$/m.exec(ev);
                if (!m) continue;
                const env = JSON.parse(m[1]);
                const now = Number(process.hrtime.bigint() / 1000n);
                if (seen[i].has(env.data.n)) dups++;
                seen[i].add(env.data.n);
                lat.push(now - env.data.t);
            }
        });
        sock.write(`GET /sse?channel=${channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
        socks.push(sock);
    }
    const liveBy = Date.now() + 10000;
    while (live < S && Date.now() < liveBy) await sleep(10);
    const t0 = Date.now();
    const inflight = [];
    for (let n = 0; n < N; n++) {
        const wait = t0 + (n * 1000) / R - Date.now();
        if (wait > 0) await sleep(wait);
        const t = Number(process.hrtime.bigint() / 1000n);
        inflight.push(request(pubPort, 'POST', `/api/publish?channel=${channel}`, JSON.stringify({ n, t }), true));
    }
    await Promise.all(inflight);
    const expected = N * S;
    const by = Date.now() + 10000;
    const total = () => seen.reduce((a, s) => a + s.size, 0);
    while (total() < expected && Date.now() < by) await sleep(20);
    socks.forEach((s) => s.destroy());
    lat.sort((a, b) => a - b);
    const pct = (p) => (lat.length ? Number((lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] / 1000).toFixed(2)) : null);
    return { deliveries: total(), lost: expected - total(), duplicated: dups, p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99), max_ms: pct(100) };
}

const rows = [];
for (const cfg of only) {
    let redis = null;
    const nodes = [];
    if (cfg.startsWith('redis')) {
        redis = await startRedis();
        const url = `redis://127.0.0.1:${redis.port}`;
        nodes.push(await startNode(['--redis', url]));
        if (cfg === 'redis-2') nodes.push(await startNode(['--redis', url]));
    } else {
        nodes.push(await startNode([]));
    }
    const pub = nodes[0], sub = nodes[nodes.length - 1];
    const cpu0 = nodes.map((n) => cpuMs(n.proc.pid)), me0 = process.cpuUsage();
    const t = await throughput(pub.port, `tp-${cfg}`);
    const l = await latency(pub.port, sub.port, `lat-${cfg}`);
    const cpu = nodes.map((n, i) => Math.round(cpuMs(n.proc.pid) - cpu0[i]));
    const me = process.cpuUsage(me0);
    const row = { config: cfg, messages: M, concurrency: C, streams: S, rate: R, ...t, ...l, server_cpu_ms: cpu, client_cpu_ms: Math.round((me.user + me.system) / 1000) };
    console.log(JSON.stringify(row));
    rows.push(row);
    for (const n of nodes) {
        n.proc.kill('SIGTERM');
        await new Promise((r) => n.proc.once('exit', r));
    }
    if (redis) {
        redis.proc.kill('SIGTERM');
        await new Promise((r) => redis.proc.once('exit', r));
        fs.rmSync(redis.dir, { recursive: true, force: true });
    }
}
const base = rows.find((r) => r.config === 'memory');
console.log('\n| config | publishes/s | vs memory | p50 ms | p99 ms | lost | dup |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows)
    console.log(`| ${r.config} | ${r.publishes_per_s} | ${base ? (r.publishes_per_s / base.publishes_per_s).toFixed(2) + 'x' : '-'} | ${r.p50_ms} | ${r.p99_ms} | ${r.lost} | ${r.duplicated} |`);
clearTimeout(hard);
agent.destroy();

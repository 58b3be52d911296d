#!/usr/bin/env node
/*
 * idempotency.mjs: what an Idempotency-Key costs a publish. For each engine (memory, and Redis
 * on a private redis-server) it runs M publishes through POST /api/publish with C requests in
 * flight over keep-alive connections, alternating rounds without a key, with a fresh key per
 * publish (every publish records a key: the worst case), and with keys that repeat (every
 * publish after the first of its key is a replay: what a retry storm costs), and prints the
 * throughput of each and its ratio to the unkeyed rate. Only 200 answers count.
 *
 *   node tests/bench/idempotency.mjs --bin build-rel/edge/pushedge [--messages 3000]
 *        [--concurrency 16] [--rounds 9] [--threads 2] [--only memory,redis]
 *
 * Short rounds, alternated, and the median of each mode: on a shared machine the load moves
 * between rounds, and long rounds of one mode would measure the neighbours.
 *
 * Bounded: at most 200,000 messages per round and 25 rounds, every request has a deadline, and
 * the whole run ends after 10 minutes. Needs redis-server on PATH for the redis rows. The client
 * is one node process: at high rates it, not the server, may be the limit.
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
const M = Math.min(Number(args.messages || 3000), 200000);
const C = Math.min(Number(args.concurrency || 16), 256);
const rounds = Math.min(Number(args.rounds || 9), 25);
const threads = String(args.threads || 2);
const only = (args.only || 'memory,redis').split(',');

const hard = setTimeout(() => {
    console.error('idempotency.mjs: timed out');
    process.exit(1);
}, 600000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: C });
function post(port, p, body, headers) {
    return new Promise((resolve) => {
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: p, agent, headers, timeout: 10000 }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode));
        });
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve(0));
        req.end(body);
    });
}

async function waitReady(port) {
    for (let i = 0; i < 200; i++) {
        const ok = await new Promise((resolve) => {
            http.get({ host: '127.0.0.1', port, path: '/readyz', agent: false }, (res) => {
                res.resume();
                resolve(res.statusCode === 200);
            }).on('error', () => resolve(false));
        });
        if (ok)
            return;
        await sleep(50);
    }
    throw new Error(`port ${port}: not ready`);
}

/* M publishes, C in flight; key(i) gives the key of publish i (or null). Returns publishes/s. */
async function run(port, channel, key) {
    let next = 0, ok = 0;
    const body = JSON.stringify({ text: 'x'.repeat(100) });
    async function worker() {
        while (next < M) {
            const i = next++;
            const k = key(i);
            const headers = { 'content-type': 'application/json' };
            if (k !== null)
                headers['idempotency-key'] = k;
            if ((await post(port, `/api/publish?channel=${channel}`, body, headers)) === 200)
                ++ok;
        }
    }
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: C }, worker));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    return { rate: ok / s, ok };
}

async function bench(name, extra) {
    const port = await freePort();
    const srv = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--threads', threads, '--log-level', 'warn', ...extra], { stdio: 'ignore' });
    try {
        await waitReady(port);
        const rates = { none: [], fresh: [], repeat: [] };
        const run0 = Date.now();
        for (let r = 0; r < rounds; r++) {
            rates.none.push((await run(port, `b${run0}n${r}`, () => null)).rate);
            rates.fresh.push((await run(port, `b${run0}f${r}`, (i) => `k-${run0}-${r}-${i}`)).rate);
            /* 100 keys, each repeated M/100 times. */
            rates.repeat.push((await run(port, `b${run0}r${r}`, (i) => `rk-${i % 100}`)).rate);
        }
        const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
        const row = { engine: name, messages: M, concurrency: C, threads: Number(threads), rounds };
        for (const k of Object.keys(rates))
            row[k] = Math.round(med(rates[k]));
        row.fresh_ratio = +(row.fresh / row.none).toFixed(3);
        row.repeat_ratio = +(row.repeat / row.none).toFixed(3);
        console.log(JSON.stringify(row));
        return row;
    } finally {
        srv.kill('SIGTERM');
    }
}

const rows = [];
if (only.includes('memory'))
    rows.push(await bench('memory', []));
if (only.includes('redis')) {
    const rport = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-redis-'));
    const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        { stdio: 'ignore' });
    try {
        await sleep(300);
        rows.push(await bench('redis', ['--redis', `redis://127.0.0.1:${rport}`]));
    } finally {
        redis.kill('SIGTERM');
        fs.rmSync(dir, { recursive: true, force: true });
    }
}
console.log('\nengine   no key/s   fresh key/s (ratio)   repeated key/s (ratio)');
for (const r of rows)
    console.log(`${r.engine.padEnd(8)} ${String(r.none).padStart(8)}   ${String(r.fresh).padStart(8)} (${r.fresh_ratio})        ${String(r.repeat).padStart(8)} (${r.repeat_ratio})`);
agent.destroy();
clearTimeout(hard);

#!/usr/bin/env node
/*
 * redis-wait-cost.mjs: what --redis-wait-replicas 1 costs a publish, against no WAIT: the
 * latency of POST /api/publish one at a time (p50, p90, p99, mean) and the rate with
 * --concurrency publishes in flight, through one pushedge node on a Redis master with one
 * replica, both started here on free loopback ports (redis-server --replicaof; no Sentinel:
 * WAIT does not need it). The node runs twice on the same Redis, once per setting, alternately
 * --repeat times; the best run of each is kept (this machine is shared: noise only ever adds).
 *
 *   PUSHEDGE_BIN=build/edge/pushedge node tests/load/redis-wait-cost.mjs [--n 3000] [--concurrency 16] [--repeat 3] [--threads 2] [--json]
 *
 * Bounded: at most --n publishes per run (at most 100,000), every request bounded at 10 s, the
 * processes it started stopped (by PID) at exit. Loopback only.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : dflt;
};
const N = Math.min(Number(opt('n', 3000)), 100000);
const CONC = Number(opt('concurrency', 16));
const REPEAT = Number(opt('repeat', 3));
const THREADS = opt('threads', '2');
const JSON_OUT = args.includes('--json');
const BIN = process.env.PUSHEDGE_BIN;
if (!BIN) {
    console.error('redis-wait-cost: set PUSHEDGE_BIN to the pushedge executable');
    process.exit(2);
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

/* A signal ends the script through exit, so the handler above stops what it started. */
for (const sig of ['SIGINT', 'SIGTERM'])
    process.on(sig, () => process.exit(1));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

function start(cmd, argv) {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(p);
    let err = '';
    p.stderr.on('data', (c) => (err = (err + c).slice(-4000)));
    p.on('close', () => children.delete(p));
    p.errText = () => err;
    return p;
}

function stop(p) {
    return new Promise((resolve) => {
        if (p.exitCode !== null || p.signalCode !== null)
            return resolve();
        const timer = setTimeout(() => p.kill('SIGKILL'), 10000);
        p.once('close', () => {
            clearTimeout(timer);
            resolve();
        });
        p.kill('SIGTERM');
    });
}

/** One RESP command on a fresh connection: the raw reply text (enough for INFO and PING). */
function redisRaw(port, cmd) {
    return new Promise((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port });
        let buf = '';
        const timer = setTimeout(() => {
            s.destroy();
            reject(new Error('redis: no reply'));
        }, 2000);
        s.on('connect', () => s.write(`*${cmd.length}\r\n${cmd.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
        s.on('data', (c) => {
            buf += c;
            const m = /^\$(\d+)\r\n/.exec(buf);
            if ((m && buf.length >= m[0].length + Number(m[1]) + 2) || (!m && buf.endsWith('\r\n'))) {
                clearTimeout(timer);
                s.destroy();
                resolve(buf);
            }
        });
        s.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
    });
}

async function until(fn, ms, what) {
    const end = Date.now() + ms;
    for (;;) {
        try {
            if (await fn())
                return;
        } catch {
            /* not yet */
        }
        if (Date.now() > end)
            throw new Error(`timed out waiting for ${what}`);
        await sleep(50);
    }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function post(port, ch, body) {
    return new Promise((resolve, reject) => {
        const t0 = process.hrtime.bigint();
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: `/api/publish?channel=${ch}`, agent,
            headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode, us: Number(process.hrtime.bigint() - t0) / 1000 }));
        });
        req.setTimeout(10000, () => req.destroy(new Error('publish: no answer in 10 s')));
        req.on('error', reject);
        req.end(body);
    });
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** One run: N sequential publishes (latency), then N with CONC in flight (rate). */
async function run(port, label) {
    const ch = `waitcost-${label}-${Date.now()}`;
    const body = JSON.stringify({ text: 'x'.repeat(80) });
    for (let i = 0; i < 200; i++) /* warm-up: connections, the channel's stream */
        await post(port, ch, body);
    const lat = [];
    let refused = 0;
    for (let i = 0; i < N; i++) {
        const r = await post(port, ch, body);
        if (r.status !== 200)
            refused++;
        lat.push(r.us);
    }
    lat.sort((a, b) => a - b);
    let next = 0;
    const t0 = Date.now();
    await Promise.all(Array.from({ length: CONC }, async () => {
        while (next++ < N) {
            const r = await post(port, ch, body);
            if (r.status !== 200)
                refused++;
        }
    }));
    const secs = (Date.now() - t0) / 1000;
    return {
        label,
        p50us: Math.round(pct(lat, 50)),
        p90us: Math.round(pct(lat, 90)),
        p99us: Math.round(pct(lat, 99)),
        meanUs: Math.round(lat.reduce((a, b) => a + b, 0) / lat.length),
        ratePerS: Math.round(N / secs),
        refused,
    };
}

async function main() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-waitcost-'));
    const mp = await freePort(), rp = await freePort();
    const common = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'];
    fs.mkdirSync(path.join(dir, 'm'));
    fs.mkdirSync(path.join(dir, 'r'));
    const master = start('redis-server', ['--port', String(mp), '--dir', path.join(dir, 'm'), ...common]);
    await until(async () => (await redisRaw(mp, ['PING'])).startsWith('+PONG'), 5000, 'the master');
    const replica = start('redis-server', ['--port', String(rp), '--dir', path.join(dir, 'r'), '--replicaof', '127.0.0.1', String(mp), ...common]);
    await until(async () => /master_link_status:up/.test(await redisRaw(rp, ['INFO', 'replication'])), 10000, 'the replica in sync');

    const best = {};
    for (let rep = 0; rep < REPEAT; rep++) {
        for (const [label, extra] of [['none', []], ['wait1', ['--redis-wait-replicas', '1', '--redis-wait-timeout', '1000']]]) {
            const port = await freePort();
            const node = start(BIN, ['--listen', `127.0.0.1:${port}`, '--redis', `redis://127.0.0.1:${mp}`, '--threads', THREADS,
                '--log-level', 'warn', ...extra]);
            await until(async () => (await new Promise((resolve) => http.get({ host: '127.0.0.1', port, path: '/readyz' },
                (res) => (res.resume(), resolve(res.statusCode))).on('error', () => resolve(0)))) === 200, 10000, `${label}: /readyz`);
            const r = await run(port, label);
            agent.destroy();
            await stop(node);
            if (!best[label] || r.p50us < best[label].p50us)
                best[label] = { ...r, ratePerS: Math.max(r.ratePerS, best[label]?.ratePerS ?? 0) };
            else
                best[label].ratePerS = Math.max(best[label].ratePerS, r.ratePerS);
        }
    }
    await stop(replica);
    await stop(master);
    fs.rmSync(dir, { recursive: true, force: true });

    const rows = [best.none, best.wait1];
    if (JSON_OUT) {
        console.log(JSON.stringify({ n: N, concurrency: CONC, threads: THREADS, repeat: REPEAT, results: rows }));
        return;
    }
    console.log(`publish latency, one at a time (n=${N}, best of ${REPEAT}), and rate with ${CONC} in flight; pushedge --threads ${THREADS}, Redis master + 1 replica on loopback`);
    console.log('setting   p50 us   p90 us   p99 us  mean us   publishes/s  non-200');
    for (const r of rows)
        console.log(`${r.label.padEnd(8)} ${String(r.p50us).padStart(7)} ${String(r.p90us).padStart(8)} ${String(r.p99us).padStart(8)} ${String(r.meanUs).padStart(8)} ${String(r.ratePerS).padStart(13)} ${String(r.refused).padStart(8)}`);
    console.log(`WAIT 1 adds ${best.wait1.p50us - best.none.p50us} us at p50, ${best.wait1.p99us - best.none.p99us} us at p99; rate ${Math.round((100 * best.wait1.ratePerS) / best.none.ratePerS)} % of none`);
}

main().catch((e) => {
    console.error(`redis-wait-cost: ${e.stack || e.message}`);
    process.exit(1);
});

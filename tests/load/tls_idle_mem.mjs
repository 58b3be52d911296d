/*
 * tls_idle_mem.mjs: server memory per idle connection, clear text against TLS, for WebSocket and
 * HTTP/1.1 SSE (docs/benchmarks.md "TLS: memory per idle connection").
 *
 *   node tests/load/tls_idle_mem.mjs build-rel/edge/pushedge [N=3000] [THREADS=2]
 *
 * For each of ws, wss, sse (http), sse (https): starts pushedge (memory engine) with a clear and
 * a TLS listener (a throwaway CA and certificate made here with openssl in a temporary
 * directory), opens 500 idle subscribers to warm the per-thread caches, reads VmRSS, opens N
 * more, waits 3 s, reads VmRSS again: (after - before) / N is the figure, so the process's fixed
 * cost stays out. Clients are node's (ws npm package from tests/node_modules, node:https), on
 * loopback. Bounded: N at most 8000, every step has a deadline. Prints one JSON line per mode.
 * TRIM=1 (needs gdb): malloc_trim(0) in the server before each reading (see trim()); BATCH=n:
 * handshakes in flight at once (default 100).
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { createRequire } from 'node:module';

const require = createRequire(path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'package.json'));
const WebSocket = require('ws');

const bin = process.argv[2];
const N = Math.min(Number(process.argv[3] || 3000), 8000);
const THREADS = String(process.argv[4] || 2);
const WARM = 500;
const BATCH = Number(process.env.BATCH || 100);
if (!bin) {
    console.error('usage: node tests/load/tls_idle_mem.mjs PUSHEDGE_BIN [N] [THREADS]');
    process.exit(2);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-tlsmem-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const f = (n) => path.join(dir, n);
const ossl = (...a) => execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'),
    '-days', '1', '-subj', '/CN=mem CA');
ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('k.pem'), '-out', f('c.csr'), '-subj',
    '/CN=localhost');
fs.writeFileSync(f('ext'), 'subjectAltName=IP:127.0.0.1\n');
ossl('x509', '-req', '-in', f('c.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-set_serial', '1', '-days', '1', '-extfile', f('ext'),
    '-out', f('c.pem'));
const ca = fs.readFileSync(f('ca.pem'));

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
            const p = s.address().port;
            s.close(() => resolve(p));
        });
    });
}

/* TRIM=1: before each reading, glibc's malloc_trim(0) in the server (through gdb, which must
 * be allowed to attach), so that freed memory inside the heap (transient handshake and record
 * buffers) is given back and the reading counts what connections hold, not the allocator's
 * high-water mark. */
function trim(pid) {
    if (process.env.TRIM === '1')
        execFileSync('gdb', ['-batch', '-p', String(pid), '-ex', 'call (int)malloc_trim(0)'], { stdio: 'ignore', timeout: 30000 });
}

function rssKiB(pid) {
    trim(pid);
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m[1]);
}

async function start() {
    const port = await freePort(), tport = await freePort();
    const proc = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--listen-tls', `127.0.0.1:${tport}`, '--tls-cert', f('c.pem'),
        '--tls-key', f('k.pem'), '--threads', THREADS, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const deadline = Date.now() + 10000;
    for (;;) {
        const ok = await new Promise((resolve) => {
            http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (r) => {
                r.resume();
                resolve(r.statusCode === 200);
            }).on('error', () => resolve(false));
        });
        if (ok)
            return { proc, port, tport };
        if (Date.now() > deadline)
            throw new Error('pushedge did not start');
        await delay(50);
    }
}

function openWs(port, tls, i) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(`${tls ? 'wss' : 'ws'}://127.0.0.1:${port}/ws?channel=idle-${i % 100}`, {
            perMessageDeflate: false, ca, handshakeTimeout: 10000 });
        ws.on('message', () => resolve(ws)); /* the subscribed op */
        ws.on('error', reject);
    });
}

function openSse(port, tls, i) {
    return new Promise((resolve, reject) => {
        const req = (tls ? https : http).get({ host: '127.0.0.1', port, path: `/sse?channel=idle-${i % 100}`, agent: false, ca,
            headers: { accept: 'text/event-stream' } }, (res) => {
            res.once('data', () => resolve(req));
        });
        req.on('error', reject);
        req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    });
}

async function openMany(count, open, offset) {
    const out = [];
    for (let i = 0; i < count; i += BATCH) {
        const batch = [];
        for (let j = i; j < Math.min(count, i + BATCH); j++)
            batch.push(open(offset + j));
        out.push(...(await Promise.all(batch)));
    }
    return out;
}

for (const [mode, tls, open] of [['ws', false, openWs], ['wss', true, openWs], ['sse', false, openSse], ['sse-https', true, openSse]]) {
    const { proc, port, tport } = await start();
    const p = tls ? tport : port;
    const conns = await openMany(WARM, (i) => open(p, tls, i), 0);
    await delay(2000);
    const before = rssKiB(proc.pid);
    conns.push(...(await openMany(N, (i) => open(p, tls, i), WARM)));
    await delay(3000);
    const after = rssKiB(proc.pid);
    console.log(JSON.stringify({ mode, connections: N, threads: Number(THREADS), rss_before_kib: before, rss_after_kib: after,
        kib_per_connection: Math.round(((after - before) / N) * 100) / 100 }));
    for (const c of conns)
        (c.terminate || c.destroy).call(c);
    proc.kill('SIGKILL');
    await new Promise((r) => proc.on('close', r));
}
process.exit(0);

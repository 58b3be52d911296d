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
 * loopback. Bounded: N at most 10000, every step has a deadline. Prints one JSON line per mode.
 * TRIM=1: malloc_trim(0) in the server before each reading (see trim()), through
 * libmemprobe.so (tests/load/memprobe.c, built beside the binary: BUILD/tests/load/) when it is
 * there, else through gdb; with the probe, each line also gives heap_kib_per_connection, from
 * glibc's count of bytes malloc'd and not freed (mallinfo2), which no allocator placement moves.
 * BATCH=n: handshakes in flight at once (default 100). MODES=wss,sse-https: only those modes.
 * HEAPTRACK=DIR: runs the server under heaptrack (output in DIR) and ends it with SIGKILL after
 * the reading, so heaptrack's "leaked" list is what the idle connections held, by call site:
 *   heaptrack_print --print-leaks 1 --print-peaks 0 --print-allocators 0 DIR/heaptrack.*.zst
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
const N = Math.min(Number(process.argv[3] || 3000), 10000);
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

const probeLib = path.resolve(path.dirname(bin), '..', 'tests', 'load', 'libmemprobe.so');
const probe = process.env.TRIM === '1' && fs.existsSync(probeLib);
const probeDir = f('probe');
fs.mkdirSync(probeDir);

/* TRIM=1: before each reading, glibc's malloc_trim(0) in the server, so that freed memory
 * inside the heap (transient handshake and record buffers) is given back and the reading counts
 * what connections hold, not the allocator's high-water mark. Through libmemprobe.so when built
 * (it answers with mallinfo2's bytes in use too), else through gdb (which must be allowed to
 * attach, and to call). */
async function trim(pid) {
    if (process.env.TRIM !== '1')
        return null;
    if (!probe) {
        execFileSync('gdb', ['-batch', '-p', String(pid), '-ex', 'call (int)malloc_trim(0)'], { stdio: 'ignore', timeout: 30000 });
        return null;
    }
    const resp = path.join(probeDir, 'resp');
    fs.rmSync(resp, { force: true });
    fs.writeFileSync(path.join(probeDir, 'req'), '');
    const deadline = Date.now() + 10000;
    while (!fs.existsSync(resp)) {
        if (Date.now() > deadline)
            throw new Error('libmemprobe did not answer');
        await delay(20);
    }
    return JSON.parse(fs.readFileSync(resp, 'utf8'));
}

async function reading(pid) {
    const heap = await trim(pid);
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { rss: Number(m[1]), heap: heap ? heap.in_use / 1024 : null };
}

/* The server's pid: under heaptrack, the child of heaptrack's script that runs pushedge. */
async function serverPid(proc) {
    if (!process.env.HEAPTRACK)
        return proc.pid;
    const deadline = Date.now() + 10000;
    for (;;) {
        for (const d of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
            try {
                const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
                const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
                if (ppid === proc.pid && fs.readlinkSync(`/proc/${d}/exe`) === fs.realpathSync(bin))
                    return Number(d);
            } catch {
                /* gone meanwhile */
            }
        }
        if (Date.now() > deadline)
            throw new Error('no pushedge under heaptrack');
        await delay(50);
    }
}

async function start() {
    const port = await freePort(), tport = await freePort();
    const env = { ...process.env };
    if (probe) {
        env.LD_PRELOAD = probeLib;
        env.MEMPROBE_DIR = probeDir;
    }
    const args = ['--listen', `127.0.0.1:${port}`, '--listen-tls', `127.0.0.1:${tport}`, '--tls-cert', f('c.pem'),
        '--tls-key', f('k.pem'), '--threads', THREADS, '--log-level', 'warn'];
    const proc = process.env.HEAPTRACK
        ? spawn('heaptrack', ['-o', path.join(process.env.HEAPTRACK, `heaptrack.${Date.now()}`), bin, ...args],
            { stdio: ['ignore', 'ignore', 'inherit'], env })
        : spawn(bin, args, { stdio: ['ignore', 'ignore', 'inherit'], env });
    const deadline = Date.now() + 10000;
    for (;;) {
        const ok = await new Promise((resolve) => {
            http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (r) => {
                r.resume();
                resolve(r.statusCode === 200);
            }).on('error', () => resolve(false));
        });
        if (ok)
            return { proc, pid: await serverPid(proc), port, tport };
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
            res.once('data', () => {
                /* The timeout bounds the opening only: an idle stream must stay (it used to end
                 * after 10 s without data, so the readings counted fewer streams than N). */
                req.setTimeout(0);
                resolve(req);
            });
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

const modes = process.env.MODES ? process.env.MODES.split(',') : null;
for (const [mode, tls, open] of [['ws', false, openWs], ['wss', true, openWs], ['sse', false, openSse], ['sse-https', true, openSse]]) {
    if (modes && !modes.includes(mode))
        continue;
    const { proc, pid, port, tport } = await start();
    const p = tls ? tport : port;
    const conns = await openMany(WARM, (i) => open(p, tls, i), 0);
    await delay(2000);
    const before = await reading(pid);
    conns.push(...(await openMany(N, (i) => open(p, tls, i), WARM)));
    await delay(3000);
    const after = await reading(pid);
    const per = (a, b) => Math.round(((a - b) / N) * 100) / 100;
    const line = { mode, connections: N, threads: Number(THREADS), rss_before_kib: before.rss, rss_after_kib: after.rss,
        kib_per_connection: per(after.rss, before.rss) };
    if (after.heap !== null)
        line.heap_kib_per_connection = per(after.heap, before.heap);
    console.log(JSON.stringify(line));
    /* Killed before the clients go, so heaptrack's "leaked" list is the idle state. */
    process.kill(pid, 'SIGKILL');
    for (const c of conns)
        (c.terminate || c.destroy).call(c);
    const closed = new Promise((r) => proc.on('close', r));
    if (process.env.HEAPTRACK) /* heaptrack's script writes its file once the server is gone */
        await Promise.race([closed, delay(120000)]);
    proc.kill('SIGKILL');
    await closed;
}
process.exit(0);

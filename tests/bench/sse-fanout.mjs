#!/usr/bin/env node
/*
 * sse-fanout.mjs: a quick measurement of the SSE path, for the foundation issue's numbers.
 * (The real load generator, in C and compared against nchan, is tests/load/ of the performance
 * issue; this one is single-threaded node and saturates long before the server does.)
 *
 * Starts pushedge on a free loopback port, opens N SSE streams on one channel with raw sockets,
 * measures the server's RSS per idle stream, then publishes M messages at R per second with a
 * send timestamp in each and reports, as one JSON line: deliveries/s, publish->receive latency
 * percentiles, lost and duplicated messages.
 *
 *   node tests/bench/sse-fanout.mjs --bin build/edge/pushedge --streams 2000 --messages 200 --rate 20
 * Bounded: at most 20,000 streams, 100,000 messages, and --timeout seconds (default 120).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';

const args = Object.fromEntries(
    process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const bin = args.bin || 'build/edge/pushedge';
const streams = Math.min(Number(args.streams || 2000), 20000);
const messages = Math.min(Number(args.messages || 200), 100000);
const rate = Number(args.rate || 20);
const threads = Number(args.threads || 1);
const timeoutS = Number(args.timeout || 120);
const payloadSize = Number(args.size || 128);

const deadline = setTimeout(() => {
    console.error('sse-fanout: timed out');
    process.exit(1);
}, timeoutS * 1000);

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

function rssKiB(pid) {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
}

function request(port, method, path, body) {
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
            let data = '';
            res.on('data', (c) => (data += c));
            res.on('end', () => resolve({ status: res.statusCode, body: data }));
        });
        req.on('error', reject);
        req.end(body);
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const port = await freePort();
const server = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--threads', String(threads), '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'inherit'],
});
for (let i = 0; i < 100; i++) {
    try {
        if ((await request(port, 'GET', '/healthz')).status === 200) break;
    } catch (e) {
        /* not up yet */
    }
    await sleep(50);
}

const channel = 'bench';
const received = new Array(streams).fill(0);
const seen = Array.from({ length: streams }, () => new Set());
const latencies = [];
let dups = 0;
let live = 0;

const rss0 = rssKiB(server.pid);
const socks = [];
for (let i = 0; i < streams; i++) {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    let buf = '';
    let isLive = false;
    sock.on('data', (chunk) => {
        buf += chunk.toString('latin1');
        let idx;
        while ((idx = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, idx);
            buf = buf.slice(idx + 2);
            if (!isLive && /^id: /m.test(event) && !/^data: /m.test(event)) {
                isLive = true;
                live++;
            }
            const m = /^data: (.*)$/m.exec(event);
            if (!m) continue;
            const env = JSON.parse(m[1]);
            const now = Number(process.hrtime.bigint() / 1000n);
            if (seen[i].has(env.data.n)) dups++;
            seen[i].add(env.data.n);
            received[i]++;
            latencies.push(now - env.data.t);
        }
    });
    sock.write(`GET /sse?channel=${channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    socks.push(sock);
    if (i % 500 === 499) await sleep(10);
}
while (live < streams) await sleep(20);
await sleep(500);
const rss1 = rssKiB(server.pid);

const pad = 'x'.repeat(Math.max(0, payloadSize - 40));
const t0 = Date.now();
for (let n = 0; n < messages; n++) {
    const due = t0 + (n * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    const t = Number(process.hrtime.bigint() / 1000n);
    await request(port, 'POST', `/api/publish?channel=${channel}`, JSON.stringify({ n, t, pad }));
}
const expected = streams * messages;
const waitUntil = Date.now() + 10000;
while (received.reduce((a, b) => a + b, 0) < expected && Date.now() < waitUntil) await sleep(20);
const elapsed = (Date.now() - t0) / 1000;
const total = received.reduce((a, b) => a + b, 0);

latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] / 1000 : null);
const result = {
    streams,
    messages,
    rate,
    threads,
    payload_bytes: payloadSize,
    deliveries: total,
    lost: expected - total,
    duplicated: dups,
    deliveries_per_s: Math.round(total / elapsed),
    latency_ms: { p50: pct(50), p90: pct(90), p99: pct(99), max: pct(100) },
    rss_kib: { before: rss0, connected: rss1 },
    rss_bytes_per_stream: Math.round(((rss1 - rss0) * 1024) / streams),
};
console.log(JSON.stringify(result));
for (const s of socks) s.destroy();
server.kill('SIGTERM');
clearTimeout(deadline);

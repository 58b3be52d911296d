#!/usr/bin/env node
/*
 * sse-fanout.mjs: a quick measurement of the fan-out path over SSE or WebSocket (plain or
 * permessage-deflate), for the foundation and WebSocket issues' numbers.
 * (The real load generator, in C and compared against nchan, is tests/load/ of the performance
 * issue; this one is single-threaded node and saturates long before the server does.)
 *
 * Starts pushedge on a free loopback port, opens N SSE streams on one channel with raw sockets,
 * measures the server's RSS per idle stream, then publishes M messages at R per second with a
 * send timestamp in each and reports, as one JSON line: deliveries/s, publish->receive latency
 * percentiles, lost and duplicated messages.
 *
 *   node tests/bench/sse-fanout.mjs --bin build/edge/pushedge --streams 2000 --messages 200 --rate 20 [--transport sse|ws|ws-deflate]
 * Bounded: at most 20,000 streams, 100,000 messages, and --timeout seconds (default 120).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import zlib from 'node:zlib';

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
const transport = args.transport || 'sse';

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

/* The server's CPU time (user + system, all threads) in milliseconds, from /proc. */
function cpuMs(pid) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; /* utime, stime in clock ticks (USER_HZ 100) */
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
    const onEnvelope = (env) => {
        const now = Number(process.hrtime.bigint() / 1000n);
        if (seen[i].has(env.data.n)) dups++;
        seen[i].add(env.data.n);
        received[i]++;
        latencies.push(now - env.data.t);
    };
    if (transport === 'sse') {
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
                if (m) onEnvelope(JSON.parse(m[1]));
            }
        });
        sock.write(`GET /sse?channel=${channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    } else {
        /* A minimal WebSocket client: the 101, then unmasked server frames. */
        let buf = Buffer.alloc(0);
        let upgraded = false;
        sock.on('data', (chunk) => {
            buf = Buffer.concat([buf, chunk]);
            if (!upgraded) {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) return;
                upgraded = true;
                buf = buf.subarray(end + 4);
            }
            for (;;) {
                if (buf.length < 2) return;
                const rsv1 = (buf[0] & 0x40) !== 0, opcode = buf[0] & 0x0f;
                let len = buf[1] & 0x7f, off = 2;
                if (len === 126) {
                    if (buf.length < 4) return;
                    len = buf.readUInt16BE(2);
                    off = 4;
                } else if (len === 127) {
                    if (buf.length < 10) return;
                    len = Number(buf.readBigUInt64BE(2));
                    off = 10;
                }
                if (buf.length < off + len) return;
                let payload = buf.subarray(off, off + len);
                buf = buf.subarray(off + len);
                if (opcode !== 1) continue;
                if (rsv1)
                    payload = zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), {
                        finishFlush: zlib.constants.Z_SYNC_FLUSH,
                    });
                const op = JSON.parse(payload.toString('utf8'));
                if (op.op === 'subscribed') live++;
                else if (op.op === 'message') onEnvelope(op);
            }
        });
        const ext = transport === 'ws-deflate' ? 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n' : '';
        sock.write(
            `GET /ws?channel=${channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${ext}\r\n`,
        );
    }
    socks.push(sock);
    if (i % 500 === 499) await sleep(10);
}
while (live < streams) await sleep(20);
await sleep(500);
const rss1 = rssKiB(server.pid);

const pad = 'x'.repeat(Math.max(0, payloadSize - 40));
const cpu0 = cpuMs(server.pid);
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
const cpu1 = cpuMs(server.pid);
const total = received.reduce((a, b) => a + b, 0);

latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] / 1000 : null);
const metrics = (await request(port, 'GET', '/metrics')).body;
const built = (enc) => Number((new RegExp(`pushedge_ws_frames_built_total\\{encoding="${enc}"\\} (\\d+)`).exec(metrics) || [])[1] || 0);
const result = {
    transport,
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
    server_cpu_ms: cpu1 - cpu0,
    server_cpu_us_per_delivery: Number((((cpu1 - cpu0) * 1000) / Math.max(1, total)).toFixed(3)),
    rss_kib: { before: rss0, connected: rss1 },
    rss_bytes_per_stream: Math.round(((rss1 - rss0) * 1024) / streams),
    ws_frames_built: transport === 'sse' ? undefined : { plain: built('plain'), deflate: built('deflate') },
};
console.log(JSON.stringify(result));
for (const s of socks) s.destroy();
server.kill('SIGTERM');
clearTimeout(deadline);

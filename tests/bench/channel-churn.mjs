#!/usr/bin/env node
/*
 * channel-churn.mjs: what naming channels costs a node. Starts pushedge (memory engine), then
 * over one WebSocket subscribes to and unsubscribes from N new channel names, and reports the
 * server's RSS before, after, and the gauges pushedge_channels / pushedge_engine_channels.
 * A node that frees unused names ends where it began; one that keeps them grows with N.
 *
 *   node tests/bench/channel-churn.mjs --bin build-rel/edge/pushedge [--names 200000] [--batch 1000]
 * Bounded: at most 1,000,000 names, 120 s. Loopback only. Needs tests/node_modules (ws).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import { WebSocket } from 'ws';

const args = Object.fromEntries(
    process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const bin = args.bin || 'build-rel/edge/pushedge';
const names = Math.min(Number(args.names || 200000), 1000000);
const batch = Number(args.batch || 1000);
const deadline = Date.now() + 120000;

const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = s.address().port;
        s.close(() => resolve(p));
    });
});
const srv = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
const base = `http://127.0.0.1:${port}`;
const get = (path) => new Promise((resolve, reject) => {
    http.get(base + path, (res) => {
        let t = '';
        res.on('data', (c) => (t += c));
        res.on('end', () => resolve(t));
    }).on('error', reject);
});
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${srv.pid}/status`, 'utf8'))[1]);
const gauge = (text, name) => Number((new RegExp(`^${name} (\\d+)`, 'm').exec(text) || [])[1] ?? NaN);

for (;;) {
    try {
        await get('/healthz');
        break;
    } catch {
        if (Date.now() > deadline)
            throw new Error('server did not start');
        await new Promise((r) => setTimeout(r, 50));
    }
}
const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
let pongs = 0;
ws.on('message', (d) => {
    if (d.toString().includes('"pong"'))
        ++pongs;
});
const before = rss();
const t0 = Date.now();
for (let i = 0, sent = 0; i < names && Date.now() < deadline; i += batch) {
    for (let k = i; k < Math.min(i + batch, names); k++) {
        ws.send(`{"op":"subscribe","channel":"churn-${k}"}`);
        ws.send(`{"op":"unsubscribe","channel":"churn-${k}"}`);
    }
    ws.send('{"op":"ping"}');
    ++sent;
    while (pongs < sent && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 2));
}
const secs = (Date.now() - t0) / 1000;
const metrics = await get('/metrics');
const after = rss();
ws.close();
srv.kill('SIGTERM');
const result = {
    names, seconds: secs, rss_before_kib: before, rss_after_kib: after, growth_mib: +((after - before) / 1024).toFixed(1),
    pushedge_channels: gauge(metrics, 'pushedge_channels'), pushedge_engine_channels: gauge(metrics, 'pushedge_engine_channels'),
};
console.log(JSON.stringify(result));

/*
 * Measures the abuse cases of issue 11 against a pushedge binary (docs/operations.md
 * "Connection limits"):
 *   flood: one WebSocket connection sends masked 125-byte pings (or {"op":"ping"} ops with
 *          --ops) as fast as the server takes them, never reading, for --seconds; prints the
 *          server's RSS every half second (stops early past --max-growth-mib).
 *   fds:   the server runs under `prlimit --nofile=N:N` (--nofile, default 256) and receives
 *          --conns idle SSE connections (default N + 50); prints the server's CPU use over the
 *          next two seconds and how long a new client waits for an answer (and what it gets).
 * Prints one JSON line per case. Loopback only; every loop is bounded in bytes and time.
 *
 *   node tests/bench/limits.mjs --bin build-dev/edge/pushedge --case flood --seconds 5
 *   node tests/bench/limits.mjs --bin build-dev/edge/pushedge --case flood --ops
 *   node tests/bench/limits.mjs --bin build-dev/edge/pushedge --case fds --nofile 256
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

const args = process.argv.slice(2);
const opt = (name, def) => {
    const i = args.indexOf(`--${name}`);
    return i < 0 ? def : args[i + 1];
};
const flag = (name) => args.includes(`--${name}`);
const BIN = opt('bin', 'build-dev/edge/pushedge');
const HOST = '127.0.0.1';

function freePort() {
    return new Promise((resolve) => {
        const s = net.createServer();
        s.listen(0, HOST, () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

function rssMiB(pid) {
    const m = /^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m[1]) / 1024;
}

function cpuSeconds(pid) {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
}

async function start(extra, prefix = []) {
    const port = await freePort();
    const argv = [...prefix, BIN, '--listen', `${HOST}:${port}`, ...extra];
    const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (c) => (stderr += c));
    for (let i = 0; i < 200; i++) {
        const ok = await new Promise((resolve) => {
            const s = net.connect({ host: HOST, port }, () => {
                s.destroy();
                resolve(true);
            });
            s.on('error', () => resolve(false));
        });
        if (ok)
            return { proc, port, stderr: () => stderr };
        await delay(25);
    }
    proc.kill('SIGKILL');
    throw new Error(`server did not start: ${stderr}`);
}

function maskedFrame(opcode, payload) {
    const mask = crypto.randomBytes(4);
    const head = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++)
        body[i] ^= mask[i & 3];
    return Buffer.concat([head, mask, body]);
}

async function flood() {
    const seconds = Number(opt('seconds', '5'));
    const maxGrowth = Number(opt('max-growth-mib', '1500'));
    const srv = await start(['--threads', '1']);
    const sock = net.connect({ host: HOST, port: srv.port });
    sock.pause();
    sock.on('error', () => {});
    await new Promise((r) => sock.once('connect', r));
    sock.write(`GET /ws HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n\r\n`);
    const frame = flag('ops') ? maskedFrame(0x1, Buffer.from('{"op":"ping"}')) : maskedFrame(0x9, Buffer.alloc(125, 0x61));
    const chunk = Buffer.concat(Array(Math.floor(65536 / frame.length)).fill(frame));
    await delay(200);
    const base = rssMiB(srv.proc.pid);
    const samples = [];
    const t0 = Date.now();
    let sent = 0, next = t0 + 500, closed = false, rounds = 0;
    sock.on('close', () => (closed = true));
    while (Date.now() - t0 < seconds * 1000 && !closed) {
        if (!sock.write(chunk)) {
            await new Promise((r) => {
                const done = () => {
                    clearTimeout(t);
                    sock.off('drain', done);
                    r();
                };
                const t = setTimeout(done, 100);
                sock.on('drain', done);
            });
        } else {
            sent += chunk.length;
        }
        if (Date.now() >= next) {
            const g = rssMiB(srv.proc.pid) - base;
            samples.push(Math.round(g));
            next += 500;
            if (g > maxGrowth)
                break;
        }
        if (++rounds % 16 === 0)
            await new Promise((r) => setImmediate(r));
    }
    const growth = rssMiB(srv.proc.pid) - base;
    sock.destroy();
    srv.proc.kill('SIGKILL');
    console.log(JSON.stringify({ case: flag('ops') ? 'flood-ops' : 'flood-pings', seconds: (Date.now() - t0) / 1000,
        sentMiB: +(sent / 1048576).toFixed(1), rssGrowthMiB: +growth.toFixed(1), growthEveryHalfSecondMiB: samples, closedByServer: closed }));
}

async function fds() {
    const nofile = Number(opt('nofile', '256'));
    const conns = Number(opt('conns', String(nofile + 50)));
    const srv = await start(['--threads', '2', ...(opt('max-connections') ? ['--max-connections', opt('max-connections')] : [])],
        ['prlimit', `--nofile=${nofile}:${nofile}`, '--']);
    const socks = [];
    for (let i = 0; i < conns; i++) {
        const s = net.connect({ host: HOST, port: srv.port });
        s.on('error', () => {});
        s.pause();
        s.write(`GET /sse?channel=fds HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
        socks.push(s);
    }
    await delay(1000);
    const c0 = cpuSeconds(srv.proc.pid);
    await delay(2000);
    const cpu = (cpuSeconds(srv.proc.pid) - c0) / 2;
    const t0 = Date.now();
    const answer = await new Promise((resolve) => {
        const s = net.connect({ host: HOST, port: srv.port });
        let text = '';
        const done = (how) => {
            clearTimeout(timer);
            s.destroy();
            resolve({ how, ms: Date.now() - t0, status: (/^HTTP\/1\.1 (\d+)/.exec(text) || [])[1] ?? null });
        };
        const timer = setTimeout(() => done('timeout'), 5000);
        s.on('data', (c) => (text += c));
        s.on('end', () => done('answered'));
        s.on('error', (e) => done(e.code));
        s.write(`GET /healthz HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    });
    const logLines = srv.stderr().split('\n').filter((l) => /warn/.test(l)).length;
    socks.forEach((s) => s.destroy());
    srv.proc.kill('SIGKILL');
    console.log(JSON.stringify({ case: 'fds', nofile, conns, serverCpu: +cpu.toFixed(2), newClient: answer, warnLines: logLines }));
}

if (opt('case', 'flood') === 'fds')
    await fds();
else
    await flood();

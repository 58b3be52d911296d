#!/usr/bin/env node
/*
 * scaleout.mjs: scale-out measured (issue 16 item 7; docs/benchmarks.md "Scale-out"). K pushedge
 * nodes on one Redis hold N subscribers of ONE channel between them, and single publishes must
 * each reach all N. Every process here (node, subscriber process) is under the machine's
 * 20,000-descriptor cap, which is what sets K and the number of subscriber processes.
 *
 *   1. a private redis-server on a free loopback port; K nodes (--bin, --threads 1 each) on it,
 *      each on its own port, waited for until /readyz is 200; each node's RSS and Pss (from
 *      /proc/PID/smaps_rollup) with no client;
 *   2. Redis's INFO commandstats and INFO cpu over an idle window (--idle-window s): what the
 *      nodes cost Redis with nothing happening (thread 0's presence beat, once a second per node),
 *      the rate subtracted from the phases below;
 *   3. P subscriber processes (pushedge-bench --role sub, one transport each: WebSocket, and
 *      --sse-procs of them SSE), each with its share of the N connections spread round-robin
 *      over every node (--sub-url per node) from its own four loopback source addresses
 *      (127.0.0.2 + 4i ...: bind() with IP_BIND_ADDRESS_NO_PORT before connect), connecting at
 *      --connect-rate in total; each says when all its connections are subscribed (acked: the
 *      WebSocket "subscribed" op, SSE's live id line); Redis commands and CPU over the connect;
 *   4. every node's RSS, Pss and open connections with everything connected: memory per
 *      connection = the growth over the node's own connections (the clients are not counted);
 *   5. one publisher (pushedge-bench --role pub, one keep-alive connection to node 0) publishes
 *      --messages single messages at --rate per second, each carrying its CLOCK_MONOTONIC send
 *      time; each subscriber process is then told how many were acknowledged, and reports once
 *      every connection has every message (or --drain-wait later): first deliveries, lost,
 *      duplicated, and its latency histograms (overall and per message), merged here;
 *   6. Redis commands by command and Redis CPU over the publish series, per published message,
 *      raw and less the heartbeats (commands) or the idle rate (CPU); the nodes' CPU over the
 *      series. A table, per-message and per-node lines, and one JSON line (--json FILE appends
 *      it to FILE) are printed.
 * Several sizes in one run (--subscribers 200,1000): the nodes and Redis stay, each size gets
 * fresh subscriber processes, so the Redis cost per message can be compared across sizes.
 *
 * Usage (release build; the full run takes a few minutes on 2 cores):
 *   flock /tmp/pushedge-bench.lock node tests/load/scaleout.mjs [--subscribers 100000]
 *       [--nodes K] [--sub-procs P] [--sse-procs S] [--messages 20] [--rate 1] [--threads 1]
 *       [--bin build-rel/edge/pushedge] [--bench build-rel/tests/load/pushedge-bench]
 *       [--json FILE] [--check]
 * Defaults: K = ceil(N / (90% of one node's default --max-connections under this process's
 * RLIMIT_NOFILE)); P = ceil(N / 16000) (each bench process needs one descriptor per connection
 * plus a few); S = round(P / 7).
 * --check: exit 1 unless every subscriber connected, every publish was acknowledged, 0 lost,
 * 0 duplicated, Redis commands per message (the nodes' heartbeats subtracted) at most
 * --max-cmds-per-msg (default 8) and, with several sizes, no more at the largest size than at
 * the smallest (+1 for noise), one Redis pub/sub connection per node thread on the channel,
 * subscribing at most 10 Redis commands per node (+10), and every node ending with status 0
 * and no sanitizer report; tests/load/meson.build runs it that way small (load-scaleout).
 *
 * Bounded: every wait has a deadline (--timeout, default 600 s for the whole run); the script
 * stops every process it started by PID (SIGTERM, then SIGKILL after 10 s), also on failure and
 * on SIGINT/SIGTERM.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const argv = process.argv.slice(2);
function opt(name, def) {
    const i = argv.indexOf(`--${name}`);
    if (i < 0)
        return def;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--'))
        throw new Error(`--${name} needs a value`);
    return v;
}
const flag = (name) => argv.includes(`--${name}`);
function num(name, def, min, max) {
    const v = Number(opt(name, def));
    if (!Number.isFinite(v) || v < min || v > max)
        throw new Error(`--${name}: ${opt(name, def)} is not a number in [${min}, ${max}]`);
    return v;
}

const HOST = '127.0.0.1';
const BIN = opt('bin', 'build-rel/edge/pushedge');
const BENCH = opt('bench', 'build-rel/tests/load/pushedge-bench');
const SIZES = String(opt('subscribers', '100000')).split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1 || n > 1000000)
        throw new Error(`--subscribers: bad size ${s}`);
    return n;
});
const NMAX = Math.max(...SIZES);
const THREADS = num('threads', 1, 1, 64);
const MESSAGES = num('messages', 20, 1, 64);
const RATE = num('rate', 1, 0.01, 1000);
const CONNECT_RATE = num('connect-rate', 5000, 1, 1e6);
const IDLE_WINDOW = num('idle-window', 5, 1, 120);
const DRAIN_WAIT = num('drain-wait', 20, 1, 600);
const SETTLE = num('settle', 2, 0, 60);
const TIMEOUT = num('timeout', 600, 10, 7200);
const MAX_CMDS = num('max-cmds-per-msg', 8, 1, 1e6);
const PER_PROC = num('per-proc', 16000, 10, 19800);
const CHECK = flag('check');
const JSON_OUT = opt('json', null);
const NODE_ARGS = (opt('node-args', '') || '').split(/\s+/).filter(Boolean);
const RUN_ID = Math.floor(Math.random() * 999999999);
const CHANNEL_PREFIX = `so${RUN_ID}_`;
const CHANNEL = `${CHANNEL_PREFIX}0`;
const T0 = Date.now();
const DEADLINE = T0 + TIMEOUT * 1000;
const delay = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(`# scaleout ${((Date.now() - T0) / 1000).toFixed(1)}s:`, ...a);

/* A missing redis-server: meson's SKIP (77), a failure with CI=true (docs/testing.md). */
if (!process.env.PATH.split(':').some((d) => fs.existsSync(path.join(d, 'redis-server')))) {
    console.log(`1..0 # SKIP redis-server is not installed`);
    process.exit(process.env.CI === 'true' ? 1 : 77);
}
for (const f of [BIN, BENCH])
    if (!fs.existsSync(f))
        throw new Error(`${f} not found (build it: meson setup build-rel --buildtype=release && ninja -C build-rel)`);

/* What one node takes by default under this RLIMIT_NOFILE (edge/core/conn_limit.c: the reserve
 * is PE_FD_RESERVE + threads * (PE_FD_RESERVE_PER_THREAD + listeners), the slack 1/16 of the
 * rest in [4, 1024]); the node's own log line is checked against it below. */
function nofile() {
    const m = /Max open files\s+(\d+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : 1024;
}
const NOFILE = nofile();
const room = NOFILE - (64 + THREADS * (8 + 1));
const slack = Math.min(1024, Math.max(4, Math.floor(room / 16)));
const NODE_LIMIT = room - slack;
const K = num('nodes', Math.ceil(NMAX / Math.floor(NODE_LIMIT * 0.9)), 1, 64);
const P = num('sub-procs', Math.ceil(NMAX / PER_PROC), 1, 60);
const S = num('sse-procs', Math.round(P / 7), 0, P);
if (P * 4 + 2 > 254)
    throw new Error('too many subscriber processes for 127.0.0.0/24 source addresses');

/* ---- processes ------------------------------------------------------------------------------ */

const children = new Set();
function killAll() {
    for (const c of children)
        try {
            process.kill(c.pid, 'SIGKILL');
        } catch {
            /* gone */
        }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'])
    process.on(sig, () => {
        log(`${sig}: stopping`);
        killAll();
        process.exit(130);
    });

function startProc(cmd, args, label, { stdin = 'ignore', stdout = 'ignore' } = {}) {
    const p = spawn(cmd, args, { stdio: [stdin, stdout, 'pipe'] });
    let err = '';
    p.stderr.on('data', (c) => (err = (err + c).slice(-8000)));
    p.label = label;
    p.errText = () => err;
    children.add(p);
    p.exited = new Promise((r) => p.on('exit', (code, sig) => {
        children.delete(p);
        r({ code, sig });
    }));
    return p;
}

async function stopProc(p, sig = 'SIGTERM') {
    if (!children.has(p))
        return;
    p.kill(sig);
    const t = setTimeout(() => p.kill('SIGKILL'), 10000);
    await p.exited;
    clearTimeout(t);
}

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
    const end = Math.min(Date.now() + ms, DEADLINE);
    for (;;) {
        const v = await fn();
        if (v)
            return v;
        if (Date.now() > end)
            throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await delay(50);
    }
}

function get(port, p) {
    return new Promise((resolve) => {
        const req = http.get({ host: HOST, port, path: p, agent: false, timeout: 5000 }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode, body }));
        });
        req.on('error', () => resolve({ status: 0, body: '' }));
        req.on('timeout', () => req.destroy());
    });
}

/* One command to Redis over RESP, the reply's text (bulk string or status). */
function redisCmd(port, args) {
    return new Promise((resolve, reject) => {
        const s = net.connect(port, HOST);
        let buf = Buffer.alloc(0);
        const t = setTimeout(() => {
            s.destroy();
            reject(new Error(`redis ${args[0]}: no answer`));
        }, 5000);
        s.on('connect', () => s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`));
        s.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            const text = buf.toString('latin1');
            if (text[0] === '+' || text[0] === '-' || text[0] === ':') {
                if (text.includes('\r\n')) {
                    clearTimeout(t);
                    s.end();
                    resolve(text.slice(1, text.indexOf('\r\n')));
                }
            } else if (text[0] === '$') {
                const nl = text.indexOf('\r\n');
                const len = Number(text.slice(1, nl));
                if (buf.length >= nl + 2 + len) {
                    clearTimeout(t);
                    s.end();
                    resolve(buf.subarray(nl + 2, nl + 2 + len).toString());
                }
            }
        });
        s.on('error', (e) => {
            clearTimeout(t);
            reject(e);
        });
    });
}

/* PUBSUB NUMSUB's count (an array reply: name, count). */
async function redisCmdArray(port, args) {
    return new Promise((resolve, reject) => {
        const s = net.connect(port, HOST);
        let text = '';
        const t = setTimeout(() => {
            s.destroy();
            reject(new Error(`redis ${args[0]}: no answer`));
        }, 5000);
        s.on('connect', () => s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`));
        s.on('data', (d) => {
            text += d.toString('latin1');
            const m = /^\*2\r\n\$\d+\r\n[^\r]*\r\n:(\d+)\r\n/.exec(text);
            if (m) {
                clearTimeout(t);
                s.end();
                resolve(Number(m[1]));
            }
        });
        s.on('error', (e) => {
            clearTimeout(t);
            reject(e);
        });
    });
}

async function redisStats(port) {
    const info = {};
    const text = await redisCmd(port, ['INFO', 'all']);
    for (const line of text.split('\r\n')) {
        const m = /^([a-z_0-9]+):(.*)$/.exec(line);
        if (m)
            info[m[1]] = m[2];
    }
    const cmd = {};
    for (const [k, v] of Object.entries(info))
        if (k.startsWith('cmdstat_'))
            cmd[k.slice(8)] = Number(/calls=(\d+)/.exec(v)[1]);
    return { cmd, cpu: Number(info.used_cpu_sys) + Number(info.used_cpu_user), out: Number(info.total_net_output_bytes),
        clients: Number(info.connected_clients), infoBytes: Buffer.byteLength(text) + 16, t: Date.now() };
}

/* b - a by command, and the CPU seconds. */
function statsDelta(a, b) {
    const cmd = {};
    for (const k of new Set([...Object.keys(a.cmd), ...Object.keys(b.cmd)])) {
        const d = (b.cmd[k] || 0) - (a.cmd[k] || 0);
        if (d !== 0)
            cmd[k] = d;
    }
    return { cmd, cpu: b.cpu - a.cpu, out: b.out - a.out, seconds: (b.t - a.t) / 1000 };
}
const total = (cmd) => Object.values(cmd).reduce((x, y) => x + y, 0);

/* RSS and Pss (KiB) of a process, and its CPU seconds (utime + stime). */
function procMem(pid) {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return { rss: Number(/VmRSS:\s+(\d+)/.exec(status)[1]), pss: Number(/^Pss:\s+(\d+)/m.exec(rollup)[1]) };
}
const CLK_TCK = 100; /* sysconf(_SC_CLK_TCK) on Linux */
function cpuSeconds(pid) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function metric(port, name) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'gm');
    const body = (await get(port, '/metrics')).body;
    let sum = 0, found = false;
    for (const x of body.matchAll(m)) {
        sum += Number(x[1]);
        found = true;
    }
    return found ? sum : null;
}

/* ---- histograms (pushedge-bench --hist: [[bucket upper bound us, count], ...]) ---------------- */

function mergeHist(into, h) {
    for (const [v, c] of h)
        into.set(v, (into.get(v) || 0) + c);
}
function quantile(hist, q) {
    const entries = [...hist.entries()].sort((a, b) => a[0] - b[0]);
    const n = entries.reduce((s, [, c]) => s + c, 0);
    if (n === 0)
        return null;
    const rank = Math.max(1, Math.round(q * n));
    let seen = 0;
    for (const [v, c] of entries) {
        seen += c;
        if (seen >= rank)
            return v;
    }
    return entries[entries.length - 1][0];
}
const ms = (us) => (us === null || us === undefined ? '-' : (us / 1000).toFixed(1));

/* ---- one size ------------------------------------------------------------------------------- */

async function runSize(N, redisPort, nodes, idleRate) {
    const procs = Math.min(P, Math.ceil(N / 10));
    const sse = Math.min(S, procs - 1 >= 0 ? S : 0);
    log(`${N} subscribers over ${nodes.length} nodes from ${procs} processes (${sse} SSE)`);

    /* Baseline: every node's memory before this size's clients. */
    const base = nodes.map((n) => ({ ...procMem(n.proc.pid), open: null }));
    for (let i = 0; i < nodes.length; ++i)
        base[i].open = await metric(nodes[i].port, 'pushedge_open_connections');

    const r0 = await redisStats(redisPort);
    const subs = [];
    const connectStart = Date.now();
    for (let i = 0; i < procs; ++i) {
        const n = Math.floor(N / procs) + (i < N % procs ? 1 : 0);
        const transport = i < sse ? 'sse' : 'ws';
        const urls = [];
        for (let j = 0; j < nodes.length; ++j)
            urls.push('--sub-url', `http://${HOST}:${nodes[(i + j) % nodes.length].port}`);
        const src = `127.0.0.${2 + 4 * i}-127.0.0.${5 + 4 * i}`;
        const args = ['--role', 'sub', '--run-id', String(RUN_ID), '--channel-prefix', CHANNEL_PREFIX, '--channels', '1',
            '--url', `http://${HOST}:${nodes[0].port}`, ...urls.slice(0, 16), '--transport', transport,
            '--connections', String(n), '--threads', '1', '--source-addrs', src,
            '--connect-rate', String(Math.max(1, CONNECT_RATE / procs)), '--connect-timeout', '240', '--settle', '0',
            '--messages', String(MESSAGES), '--drain-wait', String(DRAIN_WAIT), '--hist',
            '--timeout', String(Math.max(30, Math.floor((DEADLINE - Date.now()) / 1000)))];
        if (nodes.length > 8)
            throw new Error('pushedge-bench takes at most 8 --sub-url: use --nodes 8 or fewer');
        const p = startProc(BENCH, args, `sub ${i} (${transport}, ${n})`, { stdin: 'pipe', stdout: 'pipe' });
        p.want = n;
        p.transport = transport;
        p.lines = [];
        const rl = readline.createInterface({ input: p.stdout });
        rl.on('line', (l) => {
            try {
                p.lines.push(JSON.parse(l));
            } catch {
                log(`${p.label}: unexpected output: ${l.slice(0, 200)}`);
            }
        });
        subs.push(p);
    }
    const readyOf = (p) => p.lines.find((l) => l.event === 'ready');
    await until(() => subs.every((p) => readyOf(p) || !children.has(p)), 300000, 'every subscriber process ready');
    const connectSeconds = (Date.now() - connectStart) / 1000;
    const ready = subs.map(readyOf);
    if (ready.some((r) => !r))
        throw new Error(`a subscriber process ended before it was ready: ${subs.filter((p) => !readyOf(p)).map((p) => `${p.label}: ${p.errText().slice(-500)}`).join('; ')}`);
    const opened = ready.reduce((s, r) => s + r.opened, 0), failed = ready.reduce((s, r) => s + r.failed, 0);
    log(`connected: ${opened} subscribed, ${failed} failed in ${connectSeconds.toFixed(1)} s (slowest process ${Math.max(...ready.map((r) => r.connect_seconds)).toFixed(1)} s)`);

    /* Settle, then the memory with everything connected (the subscribers hold still: no message
     * has been published since they connected). */
    await delay(SETTLE * 1000);
    const r1 = await redisStats(redisPort);
    /* Who listens on the channel's pub/sub channel (the stream's key): one connection per node
     * thread, however many subscribers each node holds. */
    const numsub = await redisCmdArray(redisPort, ['PUBSUB', 'NUMSUB', `pe:{${CHANNEL}}`]);
    const after = nodes.map((n) => procMem(n.proc.pid));
    const perNode = [];
    for (let i = 0; i < nodes.length; ++i) {
        const open = await metric(nodes[i].port, 'pushedge_open_connections');
        const subsOn = await metric(nodes[i].port, 'pushedge_subscribers');
        const conns = open - (base[i].open || 0);
        perNode.push({
            port: nodes[i].port, connections: conns, subscribers: subsOn,
            rss_before_kb: base[i].rss, rss_after_kb: after[i].rss, pss_before_kb: base[i].pss, pss_after_kb: after[i].pss,
            rss_per_conn_bytes: conns > 0 ? Math.round((after[i].rss - base[i].rss) * 1024 / conns) : null,
            pss_per_conn_bytes: conns > 0 ? Math.round((after[i].pss - base[i].pss) * 1024 / conns) : null,
        });
    }

    /* The publish series. */
    const cpu0 = nodes.map((n) => cpuSeconds(n.proc.pid));
    const pubArgs = ['--role', 'pub', '--run-id', String(RUN_ID), '--channel-prefix', CHANNEL_PREFIX, '--channels', '1',
        '--url', `http://${HOST}:${nodes[0].port}`, '--messages', String(MESSAGES), '--rate', String(RATE), '--publishers', '1',
        '--threads', '1', '--settle', '0', '--drain-wait', '0', '--timeout', String(Math.ceil(MESSAGES / RATE) + 60)];
    const pub = startProc(BENCH, pubArgs, 'publisher', { stdout: 'pipe' });
    let pubOut = '';
    pub.stdout.on('data', (c) => (pubOut += c));
    await pub.exited;
    const pubRes = JSON.parse(pubOut.trim().split('\n').pop() || '{}');
    log(`published ${pubRes.messages_published} of ${MESSAGES} (${pubRes.publish_errors} errors) in ${pubRes.publish_seconds} s`);
    for (const p of subs)
        if (children.has(p))
            p.stdin.write(`published ${pubRes.messages_published}\n`);
    const resultOf = (p) => p.lines.find((l) => l.tool === 'pushedge-bench');
    await until(() => subs.every((p) => resultOf(p) || !children.has(p)), (DRAIN_WAIT + 30) * 1000, 'every subscriber process result');
    const r2 = await redisStats(redisPort);
    const cpu1 = nodes.map((n) => cpuSeconds(n.proc.pid));
    for (const p of subs)
        await stopProc(p);
    const results = subs.map(resultOf);
    if (results.some((r) => !r))
        throw new Error('a subscriber process ended without a result');

    /* Merge. */
    const all = new Map();
    const perMsg = [];
    let lost = 0, dup = 0, deliveries = 0, closed = 0, genCpu = 0;
    for (const r of results) {
        mergeHist(all, r.hist);
        lost += r.lost;
        dup += r.duplicated;
        deliveries += r.deliveries;
        closed += r.connections_closed;
        genCpu += r.generator_cpu_seconds;
        for (const m of r.per_message) {
            perMsg[m.seq] ||= { seq: m.seq, n: 0, max: 0, hist: new Map() };
            perMsg[m.seq].n += m.n;
            perMsg[m.seq].max = Math.max(perMsg[m.seq].max, m.max);
            mergeHist(perMsg[m.seq].hist, m.hist);
        }
    }
    const maxAll = Math.max(...results.map((r) => r.latency_us.max));
    const published = pubRes.messages_published || 0;

    /* Redis: the connect phase and the publish series, less what the idle nodes cost meanwhile. */
    const dConnect = statsDelta(r0, r1), dSeries = statsDelta(r1, r2);
    const idleCmds = idleRate.cmdsPerSecond * dSeries.seconds, idleCpu = idleRate.cpuPerSecond * dSeries.seconds;
    const series = {
        seconds: dSeries.seconds,
        commands: dSeries.cmd,
        commands_total: total(dSeries.cmd),
        commands_per_message: published ? total(dSeries.cmd) / published : null,
        commands_per_message_less_idle: published ? (total(dSeries.cmd) - idleCmds) / published : null,
        /* Exact where the idle rate is an estimate: each node's beat (thread 0, once a second,
         * pushedge_beat) is one FCALL running TIME, ZADD and ZRANGEBYSCORE, and nothing else
         * issues ZADD here; INFO is this script's own. */
        beats: dSeries.cmd.zadd || 0,
        commands_per_message_less_beats: published ? (total(dSeries.cmd) - 4 * (dSeries.cmd.zadd || 0) - (dSeries.cmd.info || 0)) / published : null,
        by_command_per_message: Object.fromEntries(Object.entries(dSeries.cmd).map(([k, v]) => [k, +(v / published).toFixed(2)])),
        redis_cpu_seconds: dSeries.cpu,
        /* What Redis wrote to its clients over the series, less the INFO reply that opened it
         * (counted once sent): the publishes' replies, the PUBLISH pushed to each listening
         * node, and the beats' replies. */
        redis_out_bytes_per_message: published ? (dSeries.out - r1.infoBytes) / published : null,
        channel_listeners: numsub, redis_clients: r1.clients,
        redis_cpu_ms_per_message: published ? (dSeries.cpu * 1000) / published : null,
        redis_cpu_ms_per_message_less_idle: published ? ((dSeries.cpu - idleCpu) * 1000) / published : null,
    };
    const connect = {
        seconds: dConnect.seconds,
        commands: dConnect.cmd,
        commands_total: total(dConnect.cmd),
        commands_less_idle: total(dConnect.cmd) - idleRate.cmdsPerSecond * dConnect.seconds,
        commands_less_beats: total(dConnect.cmd) - 4 * (dConnect.cmd.zadd || 0) - (dConnect.cmd.info || 0),
        redis_cpu_seconds: dConnect.cpu,
    };
    const nodeCpu = cpu1.reduce((s, c, i) => s + c - cpu0[i], 0);
    return {
        subscribers: N, nodes: nodes.length, sub_processes: procs, sse_processes: sse,
        mix: { ws: results.filter((r) => r.transport === 'ws').reduce((s, r) => s + r.connections_opened, 0),
            sse: results.filter((r) => r.transport === 'sse').reduce((s, r) => s + r.connections_opened, 0) },
        opened, failed, closed_after_ready: closed, connect_seconds: connectSeconds,
        messages: MESSAGES, published, publish_errors: pubRes.publish_errors, rate: RATE,
        expected_deliveries: published * opened, deliveries, lost, duplicated: dup,
        latency_us: { p50: quantile(all, 0.5), p90: quantile(all, 0.9), p99: quantile(all, 0.99), p999: quantile(all, 0.999), max: maxAll },
        per_message: perMsg.filter(Boolean).map((m) => ({ seq: m.seq, n: m.n, p50: quantile(m.hist, 0.5), p99: quantile(m.hist, 0.99), max: m.max })),
        redis_connect: connect, redis_series: series,
        nodes_cpu_seconds_series: nodeCpu, node_cpu_us_per_delivery: deliveries ? (nodeCpu * 1e6) / deliveries : null,
        generator_cpu_seconds: genCpu,
        per_node: perNode,
        rss_per_conn_bytes: Math.round(perNode.reduce((s, n) => s + (n.rss_after_kb - n.rss_before_kb) * 1024, 0) / Math.max(1, perNode.reduce((s, n) => s + n.connections, 0))),
        pss_per_conn_bytes: Math.round(perNode.reduce((s, n) => s + (n.pss_after_kb - n.pss_before_kb) * 1024, 0) / Math.max(1, perNode.reduce((s, n) => s + n.connections, 0))),
    };
}

/* ---- main ----------------------------------------------------------------------------------- */

async function main() {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-scaleout-'));
    const redisPort = await freePort();
    const redis = startProc('redis-server', ['--port', String(redisPort), '--bind', HOST, '--save', '', '--appendonly', 'no',
        '--dir', tmp, '--daemonize', 'no'], 'redis-server');
    await until(async () => {
        try {
            return (await redisCmd(redisPort, ['PING'])) === 'PONG';
        } catch {
            return false;
        }
    }, 10000, 'redis-server');
    const redisUrl = `redis://${HOST}:${redisPort}`;
    log(`K=${K} nodes (default limit ${NODE_LIMIT} connections each under RLIMIT_NOFILE ${NOFILE}), P=${P} subscriber processes, S=${S} SSE, sizes ${SIZES.join(',')}`);

    const nodes = [];
    for (let i = 0; i < K; ++i) {
        const port = await freePort();
        const proc = startProc(BIN, ['--listen', `${HOST}:${port}`, '--redis', redisUrl, '--threads', String(THREADS), ...NODE_ARGS],
            `node ${i}`);
        nodes.push({ port, proc });
    }
    for (const n of nodes)
        await until(async () => (await get(n.port, '/readyz')).status === 200, 20000, `node on ${n.port} ready`);
    const limits = nodes.map((n) => {
        const m = /limits: (\d+) connections \(descriptor limit (\d+)\)/.exec(n.proc.errText());
        return m ? { max_connections: Number(m[1]), nofile: Number(m[2]) } : null;
    });
    if (limits[0] && limits[0].max_connections !== NODE_LIMIT && !NODE_ARGS.includes('--max-connections'))
        log(`note: the node says ${limits[0].max_connections} connections, this script computed ${NODE_LIMIT}`);

    /* The idle rate: what K idle nodes cost Redis per second. */
    const i0 = await redisStats(redisPort);
    await delay(IDLE_WINDOW * 1000);
    const i1 = await redisStats(redisPort);
    const idle = statsDelta(i0, i1);
    const idleRate = { commands: idle.cmd, cmdsPerSecond: total(idle.cmd) / idle.seconds, cpuPerSecond: idle.cpu / idle.seconds };
    log(`idle: ${idleRate.cmdsPerSecond.toFixed(2)} Redis commands/s (${JSON.stringify(idle.cmd)}), ${(idleRate.cpuPerSecond * 1000).toFixed(2)} ms CPU/s`);

    const runs = [];
    for (const N of SIZES) {
        runs.push(await runSize(N, redisPort, nodes, idleRate));
        /* The next size starts from nodes without this size's clients, as far as the nodes know:
         * an SSE stream whose client left is noticed at its next write (h2o 2.2 does not read an
         * HTTP/1 request's socket while the response streams; docs/architecture.md), i.e. the
         * next heartbeat, --ping-interval (25 s) at most. The next size's baseline is taken
         * after this wait, and counts only the connections it adds. */
        const waitEnd = Date.now() + num('gone-wait', 30, 0, 300) * 1000;
        let open = null;
        while (Date.now() < waitEnd && Date.now() < DEADLINE) {
            open = 0;
            for (const n of nodes)
                open += (await metric(n.port, 'pushedge_open_connections')) || 0;
            if (open <= nodes.length) /* each /metrics request counts its own connection */
                break;
            await delay(250);
        }
        if (open > nodes.length)
            log(`${open - nodes.length} connections still open at the nodes after the subscribers left`);
    }

    /* The nodes must end cleanly (under a sanitizer build, without a report). */
    const nodeEnds = [];
    for (const n of nodes) {
        await stopProc(n.proc);
        const { code, sig } = await n.proc.exited;
        const m = /ERROR: (?:AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: \w+Sanitizer/.exec(n.proc.errText());
        nodeEnds.push({ label: n.proc.label, code, sig, report: m ? m[0] : null });
    }
    await stopProc(redis);
    fs.rmSync(tmp, { recursive: true, force: true });

    const out = { tool: 'scaleout', run_id: RUN_ID, channel: CHANNEL, nodes: K, node_threads: THREADS, node_limits: limits,
        nofile: NOFILE, machine: `${os.cpus().length} cores, ${os.cpus()[0].model}, Linux ${os.release()}`,
        node_ends: nodeEnds,
        idle_redis: { commands_per_second: idleRate.cmdsPerSecond, by_command: idleRate.commands, cpu_ms_per_second: idleRate.cpuPerSecond * 1000 },
        runs };
    console.log(JSON.stringify(out));
    if (JSON_OUT)
        fs.appendFileSync(JSON_OUT, JSON.stringify(out) + '\n');
    printTable(out);
    return out;
}

function printTable(out) {
    const L = [];
    L.push(`| subscribers (ws / sse) | nodes | subscribed in | published | lost / dup | latency p50 / p99 / max (ms) | Redis cmds per message (less beats) | Redis CPU per message (less idle) | node RSS / Pss per connection |`);
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const r of out.runs)
        L.push(`| ${r.opened} (${r.mix.ws} / ${r.mix.sse}) | ${r.nodes} | ${r.connect_seconds.toFixed(1)} s | ${r.published}/${r.messages} | ${r.lost} / ${r.duplicated} | ${ms(r.latency_us.p50)} / ${ms(r.latency_us.p99)} / ${ms(r.latency_us.max)} | ${r.redis_series.commands_per_message.toFixed(2)} (${r.redis_series.commands_per_message_less_beats.toFixed(2)}) | ${r.redis_series.redis_cpu_ms_per_message.toFixed(3)} ms (${r.redis_series.redis_cpu_ms_per_message_less_idle.toFixed(3)} ms) | ${r.rss_per_conn_bytes} / ${r.pss_per_conn_bytes} B |`);
    for (const r of out.runs) {
        L.push('');
        L.push(`${r.opened} subscribers: Redis commands over the series by command (${r.published} messages, ${r.redis_series.seconds.toFixed(1)} s): ${JSON.stringify(r.redis_series.commands)}; idle rate ${out.idle_redis.commands_per_second.toFixed(2)}/s ${JSON.stringify(out.idle_redis.by_command)}`);
        L.push(`  Redis: ${r.redis_series.channel_listeners} pub/sub connections on the channel, ${r.redis_series.redis_clients} clients; ${r.redis_series.redis_out_bytes_per_message?.toFixed(0)} bytes sent by Redis per message (its beats' replies included); ${r.redis_series.beats} beats over the series`);
        L.push(`  connect phase: ${r.redis_connect.commands_total} Redis commands (${r.redis_connect.commands_less_beats} less beats) for ${r.opened} subscriptions: ${JSON.stringify(r.redis_connect.commands)}`);
        L.push(`  nodes' CPU over the series: ${r.nodes_cpu_seconds_series.toFixed(2)} s (${r.node_cpu_us_per_delivery?.toFixed(2)} us per delivery); subscriber processes' CPU ${r.generator_cpu_seconds.toFixed(2)} s`);
        L.push('  per message (seq: p50 / p99 / max ms, receivers): ' + r.per_message.map((m) => `${m.seq}: ${ms(m.p50)}/${ms(m.p99)}/${ms(m.max)} (${m.n})`).join(', '));
        L.push('  per node (connections, RSS KiB before -> after, Pss KiB before -> after, B/conn RSS, Pss): ' + r.per_node.map((n) => `${n.connections}, ${n.rss_before_kb}->${n.rss_after_kb}, ${n.pss_before_kb}->${n.pss_after_kb}, ${n.rss_per_conn_bytes}, ${n.pss_per_conn_bytes}`).join(' | '));
    }
    console.log(L.join('\n'));
}

function check(out) {
    const bad = [];
    for (const r of out.runs) {
        if (r.opened !== r.subscribers || r.failed !== 0)
            bad.push(`${r.subscribers}: ${r.opened} subscribed, ${r.failed} failed`);
        if (r.published !== r.messages || r.publish_errors !== 0)
            bad.push(`${r.subscribers}: ${r.published} of ${r.messages} published, ${r.publish_errors} errors`);
        if (r.lost !== 0 || r.duplicated !== 0 || r.deliveries !== r.expected_deliveries)
            bad.push(`${r.subscribers}: ${r.deliveries} of ${r.expected_deliveries} delivered, ${r.lost} lost, ${r.duplicated} duplicated`);
        if (!(r.redis_series.commands_per_message_less_beats <= MAX_CMDS))
            bad.push(`${r.subscribers}: ${r.redis_series.commands_per_message_less_beats} Redis commands per message (at most ${MAX_CMDS})`);
        if (r.redis_series.channel_listeners > r.nodes * THREADS)
            bad.push(`${r.subscribers}: ${r.redis_series.channel_listeners} Redis pub/sub connections on the channel (one per node thread: ${r.nodes * THREADS})`);
        /* Subscribing: a few commands per node and channel, none per subscriber. */
        if (r.redis_connect.commands_less_beats > 10 * r.nodes + 10)
            bad.push(`${r.subscribers}: subscribing cost ${r.redis_connect.commands_less_beats} Redis commands (at most ${10 * r.nodes + 10})`);
    }
    for (const e of out.node_ends)
        if (e.code !== 0 || e.report)
            bad.push(`${e.label}: exit ${e.code ?? e.sig}${e.report ? `, ${e.report}` : ''}`);
    if (out.runs.length > 1) {
        const first = out.runs[0].redis_series.commands_per_message_less_beats, last = out.runs[out.runs.length - 1].redis_series.commands_per_message_less_beats;
        if (last > first + 1)
            bad.push(`Redis commands per message grew with subscribers: ${first.toFixed(2)} at ${out.runs[0].subscribers}, ${last.toFixed(2)} at ${out.runs[out.runs.length - 1].subscribers}`);
    }
    return bad;
}

const timer = setTimeout(() => {
    log(`--timeout ${TIMEOUT} s reached`);
    killAll();
    process.exit(1);
}, TIMEOUT * 1000 + 30000);
try {
    const out = await main();
    clearTimeout(timer);
    if (CHECK) {
        const bad = check(out);
        for (const b of bad)
            console.log(`not ok - ${b}`);
        if (bad.length) {
            process.exitCode = 1;
        } else {
            console.log('ok - every subscriber got every message once; Redis commands per message bounded and flat');
        }
    }
} catch (e) {
    clearTimeout(timer);
    log(`failed: ${e.stack || e}`);
    for (const c of children)
        log(`${c.label} stderr tail: ${c.errText().slice(-1500)}`);
    killAll();
    process.exitCode = 1;
}

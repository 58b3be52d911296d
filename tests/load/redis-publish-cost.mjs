#!/usr/bin/env node
/*
 * redis-publish-cost.mjs: what one publish costs Redis, in CPU microseconds, as Redis itself counts
 * it (INFO commandstats: usec_per_call of FCALL, which includes every command the function runs,
 * and of each of those commands). No pushedge process is involved: the script starts its own
 * redis-server on a free loopback port, loads pubsub/redis_lib.lua (or --lib FILE) with FUNCTION
 * LOAD REPLACE, and calls pushedge_publish as a node does (count and age passed every time).
 *
 *   node tests/load/redis-publish-cost.mjs [--n 20000] [--repeat 3] [--lib FILE] [--before FILE] [--probes] [--json] [--nice N]
 *
 * Scenarios, each on a fresh channel first filled past --retained (1,000) messages, so every
 * publish trims one (steady state); 100-byte JSON bodies; pipelined 500 at a time:
 *   plain    FCALL pushedge_publish 1 pe:{C} <json> 1000 86400000 (history TTL on, 24 h)
 *   keyed    the keyed form, a new key each time (check, append, record)
 *   replay   the keyed form with a key already recorded (answered from the record)
 *   spaced   plain, one publish every 2 ms (each in its own millisecond: nothing shared between
 *            calls), --n / 40 of them
 *   aged     plain with a 5 ms TTL: the age limit trims, not the count
 *   manyK    pushedge_publish_many with K messages per call (8, 32, 100; many32keyed: each with a
 *            new key), as a node sends what one loop iteration gathered for one channel; --n
 *            messages in all, every number per message (FCALL's time divided by K)
 *   batchK   the same through pushedge_publish_batch (a PUBLISH per 4 KiB or so: what a node sends
 *            with --redis-batch-announce on)
 * --subscribers N (at most 16): N connections subscribed to each scenario's channel while it is
 * measured (N nodes listening; none by default).
 * --only NAME,NAME... runs only those scenarios ("none": none); --probe-only P,P... only those
 * probes (implies --probes).
 * --probes also measures single alternatives in isolation, each a tiny function of its own on a
 * 1,000-entry stream (see PROBES below): what each candidate command costs inside a function.
 *
 * --before FILE also measures another library (an older redis_lib.lua, e.g. from git show) in the
 * same run: each repeat of each scenario runs both, one after the other, on the same Redis.
 *
 * Each scenario runs --repeat times on a fresh channel; the lowest FCALL usec_per_call and the
 * lowest Redis CPU per call are kept (this machine is shared: noise only ever adds). Bounded: at most --n calls per run (at most
 * 200,000), every Redis reply waited for at most 10 s, the redis-server stopped at exit.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/*
 * A private redis-server and a pipelining RESP client of its own: tests/e2e/redislib.mjs has both,
 * but importing it pulls in node:test (through lib.mjs), which prints a TAP report at exit.
 */
function encode(args) {
    const parts = [Buffer.from(`*${args.length}\r\n`)];
    for (const a of args) {
        const b = Buffer.from(String(a), 'utf8');
        parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
    }
    return Buffer.concat(parts);
}

/* One RESP2 reply at buf[pos]: {value, end}, or null when incomplete; errors are Error values. */
function parse(buf, pos) {
    const le = buf.indexOf('\r\n', pos);
    if (le < 0)
        return null;
    const line = buf.toString('utf8', pos + 1, le);
    switch (String.fromCharCode(buf[pos])) {
    case '+':
        return { value: line, end: le + 2 };
    case '-':
        return { value: new Error(line), end: le + 2 };
    case ':':
        return { value: Number(line), end: le + 2 };
    case '$': {
        const n = Number(line);
        if (n < 0)
            return { value: null, end: le + 2 };
        return buf.length < le + 4 + n ? null : { value: buf.toString('utf8', le + 2, le + 2 + n), end: le + 4 + n };
    }
    case '*': {
        const arr = [];
        let p = le + 2;
        for (let i = 0; i < Number(line); i++) {
            const r = parse(buf, p);
            if (!r)
                return null;
            arr.push(r.value);
            p = r.end;
        }
        return { value: arr, end: p };
    }
    default:
        throw new Error(`unexpected RESP type at ${pos}`);
    }
}

/*
 * Sends the commands, pipelined, on the one connection kept per port (opened at the first call:
 * no connection setup in what is measured); resolves to their replies, in order, within
 * timeoutMs. One batch at a time (every caller awaits it).
 */
const conns = new Map();
function connection(port) {
    let c = conns.get(port);
    if (c)
        return c;
    const sock = net.connect({ host: '127.0.0.1', port });
    c = { sock, buf: Buffer.alloc(0), pending: null };
    sock.setNoDelay(true);
    sock.on('data', (chunk) => {
        c.buf = Buffer.concat([c.buf, chunk]);
        const q = c.pending;
        let r;
        while (q && q.replies.length < q.n && (r = parse(c.buf, 0))) {
            q.replies.push(r.value);
            c.buf = c.buf.subarray(r.end);
        }
        if (q && q.replies.length === q.n) {
            c.pending = null;
            q.resolve(q.replies);
        }
    });
    const fail = (e) => {
        if (conns.get(port) === c)
            conns.delete(port);
        const q = c.pending;
        c.pending = null;
        q?.reject(e);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('redis: connection closed')));
    conns.set(port, c);
    return c;
}
function redisPipeline(port, commands, { timeoutMs }) {
    const c = connection(port);
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            c.sock.destroy();
            reject(new Error(`redis: no reply within ${timeoutMs} ms`));
        }, timeoutMs);
        c.pending = {
            n: commands.length,
            replies: [],
            resolve: (v) => {
                clearTimeout(timer);
                resolve(v);
            },
            reject: (e) => {
                clearTimeout(timer);
                reject(e);
            },
        };
        c.sock.write(Buffer.concat(commands.map(encode)));
    });
}
function closeConnections() {
    for (const c of conns.values())
        c.sock.destroy();
    conns.clear();
    for (const c of subscribers)
        c.destroy();
    subscribers.length = 0;
}

/*
 * --subscribers N: N more connections subscribed to the channel under test while it is measured,
 * as N nodes listening to it; they read what Redis sends and drop it. Each PUBLISH then also
 * writes into their output buffers (inside the call) and onto their sockets (after it, in Redis's
 * process CPU).
 */
const subscribers = [];
function openSubscribers(port, n) {
    for (let i = 0; i < n; i++) {
        const sock = net.connect({ host: '127.0.0.1', port });
        sock.on('data', () => {});
        sock.on('error', () => {});
        subscribers.push(sock);
    }
}
async function subscribeAll(port, key, on) {
    for (const s of subscribers)
        s.write(encode([on ? 'SUBSCRIBE' : 'UNSUBSCRIBE', key]));
    const want = on ? subscribers.length : 0;
    for (let i = 0; i < 200; i++) {
        const [r] = await redisPipeline(port, [['PUBSUB', 'NUMSUB', key]], { timeoutMs: TIMEOUT_MS });
        if (Number(r[1]) === want)
            return;
        await new Promise((res) => setTimeout(res, 10));
    }
    throw new Error(`${key}: ${want} subscribers expected, not reached in 2 s`);
}

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

/* redis-server on a free loopback port, no persistence, in a temporary directory; killed at exit. */
async function startRedis(nice) {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-cost-'));
    const argv = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
    /* --nice N (negative needs root): a higher priority, so that work of others on a shared
     * machine preempts Redis less in the middle of a call (commandstats times wall clock). */
    const proc = nice === 0 ? spawn('redis-server', argv, { stdio: 'ignore' })
        : spawn('nice', ['-n', String(nice), 'redis-server', ...argv], { stdio: 'ignore' });
    const kill = () => proc.exitCode === null && proc.kill('SIGKILL');
    process.on('exit', kill);
    const failed = new Promise((_, reject) => proc.on('error', (e) => reject(new Error(`redis-server: ${e.message}`))));
    for (let i = 0; ; i++) {
        try {
            await Promise.race([redisPipeline(port, [['PING']], { timeoutMs: 1000 }), failed]);
            break;
        } catch (e) {
            if (i >= 50 || e.message.startsWith('redis-server'))
                throw e;
            await new Promise((r) => setTimeout(r, 100));
        }
    }
    return {
        port,
        stop() {
            kill();
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function parseArgs(argv) {
    const o = { n: 20000, repeat: 3, retained: 1000, lib: path.join(ROOT, 'pubsub', 'redis_lib.lua'), before: null, probes: false, json: false, nice: 0, only: null, probeOnly: null, subscribers: 0 };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const val = () => {
            if (i + 1 >= argv.length)
                throw new Error(`${a} needs a value`);
            return argv[++i];
        };
        if (a === '--n')
            o.n = Math.min(200000, Math.max(100, Number(val()) | 0));
        else if (a === '--repeat')
            o.repeat = Math.min(10, Math.max(1, Number(val()) | 0));
        else if (a === '--retained')
            o.retained = Math.min(100000, Math.max(1, Number(val()) | 0));
        else if (a === '--lib')
            o.lib = val();
        else if (a === '--before')
            o.before = val();
        else if (a === '--nice')
            o.nice = Math.min(19, Math.max(-20, Number(val()) | 0));
        else if (a === '--probes')
            o.probes = true;
        else if (a === '--subscribers')
            o.subscribers = Math.min(16, Math.max(0, Number(val()) | 0));
        else if (a === '--only')
            o.only = val().split(',');
        else if (a === '--probe-only')
            o.probes = true, o.probeOnly = val().split(',');
        else if (a === '--json')
            o.json = true;
        else
            throw new Error(`unknown argument ${a} (see the header of ${path.basename(fileURLToPath(import.meta.url))})`);
    }
    return o;
}

const BATCH = 500;
const TIMEOUT_MS = 10000;
/* A 100-byte JSON object. */
const body = (i) => JSON.stringify({ n: i, pad: 'x'.repeat(100 - JSON.stringify({ n: i, pad: '' }).length) });

/* Runs the commands in pipelined batches; throws on the first Redis error. */
async function run(port, commands) {
    for (let i = 0; i < commands.length; i += BATCH) {
        const replies = await redisPipeline(port, commands.slice(i, i + BATCH), { timeoutMs: TIMEOUT_MS });
        const bad = replies.find((r) => r instanceof Error);
        if (bad)
            throw new Error(`redis: ${bad.message} (for ${JSON.stringify(commands[i]).slice(0, 200)})`);
    }
}

/* INFO commandstats -> {name: {calls, usec, per}} */
async function commandstats(port) {
    const [text] = await redisPipeline(port, [['INFO', 'commandstats']], { timeoutMs: TIMEOUT_MS });
    const out = {};
    for (const line of text.split('\r\n')) {
        const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/.exec(line);
        if (m)
            out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]), per: Number(m[4]) };
    }
    return out;
}

/* Redis's own CPU time so far (user + system, all its threads), in microseconds. */
async function cpuUsec(port) {
    const [text] = await redisPipeline(port, [['INFO', 'cpu']], { timeoutMs: TIMEOUT_MS });
    const get = (name) => Number(new RegExp(`${name}:([\\d.]+)`).exec(text)[1]);
    return (get('used_cpu_user') + get('used_cpu_sys')) * 1e6;
}

/*
 * Calls `commands` with stats reset just before; returns the FCALL usec per call and the inner
 * commands per publish (commandstats: wall time around each call, so a core shared with other
 * work inflates it), and Redis's process CPU per publish (getrusage: not inflated by waiting for
 * the core, but including reading, parsing and answering each command: the whole cost).
 */
async function measure(port, commands, { spacedMs = 0, perCall = 1 } = {}) {
    await redisPipeline(port, [['CONFIG', 'RESETSTAT']], { timeoutMs: TIMEOUT_MS });
    const cpu0 = await cpuUsec(port);
    if (spacedMs > 0) {
        for (const c of commands) {
            await run(port, [c]);
            await new Promise((r) => setTimeout(r, spacedMs));
        }
    } else {
        await run(port, commands);
    }
    const cpu = (await cpuUsec(port)) - cpu0;
    const st = await commandstats(port);
    const f = st.fcall ?? { calls: 0, usec: 0 };
    if (f.calls !== commands.length)
        throw new Error(`expected ${commands.length} FCALLs in commandstats, found ${f.calls}`);
    /* Per publish: a pushedge_publish_many call carries perCall of them. */
    const calls = commands.length * perCall;
    const inner = {};
    for (const [name, s] of Object.entries(st))
        if (name !== 'fcall' && name !== 'config|resetstat' && name !== 'info')
            inner[name] = { perPublish: +(s.calls / calls).toFixed(3), usecPerCall: s.per };
    return { usecPerCall: +(f.usec / calls).toFixed(2), cpuPerCall: +(cpu / calls).toFixed(2), inner };
}

let seq = 0;
const channel = (what) => `pe:{cost-${what}-${process.pid}-${++seq}}`;

/* The publish scenarios against the library under test. */
function scenarios(o) {
    const plain = (key, i, ttl = 86400000) => ['FCALL', 'pushedge_publish', '1', key, body(i), String(o.retained), String(ttl)];
    const keyed = (key, k, i) => ['FCALL', 'pushedge_publish', '2', key, `${key}:idem:${k}`, body(i), String(o.retained), '86400000', '300000'];
    const fill = (key, mk = (i) => plain(key, i)) => Array.from({ length: o.retained + 100 }, (_, i) => mk(i));
    /* pushedge_publish_many: k messages per call (keyed: each with a new key). */
    const many = (key, k, i, withKeys, fn) => {
        const recs = withKeys ? Array.from({ length: k }, (_, j) => `${key}:idem:m${i}-${j}`) : [];
        const msgs = Array.from({ length: k }, (_, j) => [withKeys ? '1' : '0', body(i * k + j)]).flat();
        return ['FCALL', fn, String(1 + recs.length), key, ...recs, String(o.retained), '86400000', '300000', ...msgs];
    };
    /* pushedge_publish_many (one PUBLISH per message) or pushedge_publish_batch (one per 4 KiB or so). */
    const manyScenario = (k, withKeys, fn = 'pushedge_publish_many') => ({
        name: `${fn === 'pushedge_publish_many' ? 'many' : 'batch'}${k}${withKeys ? 'keyed' : ''}`,
        what: `${fn}, ${k} ${withKeys ? 'keyed ' : ''}messages per call (numbers per message)`,
        prepare: (key) => fill(key),
        calls: (key) => Array.from({ length: Math.max(10, Math.floor(o.n / k)) }, (_, i) => many(key, k, i, withKeys, fn)),
        perCall: k,
        needs: fn,
    });
    return [
        {
            name: 'plain',
            what: 'unkeyed, count trims one per publish, TTL 24 h',
            prepare: (key) => fill(key),
            calls: (key) => Array.from({ length: o.n }, (_, i) => plain(key, i)),
        },
        {
            name: 'keyed',
            what: 'a new Idempotency-Key per publish',
            prepare: (key) => fill(key),
            calls: (key) => Array.from({ length: o.n }, (_, i) => keyed(key, `k${i}`, i)),
        },
        {
            name: 'replay',
            what: 'a key already recorded: answered from its record',
            prepare: (key) => [...fill(key), keyed(key, 'once', 0)],
            calls: (key) => Array.from({ length: o.n }, (_, i) => keyed(key, 'once', i)),
        },
        {
            name: 'spaced',
            what: 'unkeyed, one publish every 2 ms (each in its own millisecond)',
            prepare: (key) => fill(key),
            calls: (key) => Array.from({ length: Math.max(50, Math.floor(o.n / 40)) }, (_, i) => plain(key, i)),
            spacedMs: 2,
        },
        {
            name: 'aged',
            what: 'unkeyed, TTL 5 ms: the age limit trims, not the count',
            prepare: (key) => fill(key, (i) => plain(key, i, 5)),
            calls: (key) => Array.from({ length: o.n }, (_, i) => plain(key, i, 5)),
        },
        manyScenario(8, false),
        manyScenario(32, false),
        manyScenario(100, false),
        manyScenario(32, true),
        manyScenario(8, false, 'pushedge_publish_batch'),
        manyScenario(32, false, 'pushedge_publish_batch'),
        manyScenario(100, false, 'pushedge_publish_batch'),
        manyScenario(32, true, 'pushedge_publish_batch'),
    ];
}

/*
 * Probes: one alternative each, as a function of its own (so FCALL's fixed cost is in every
 * number: compare with p_empty). Each runs on a stream holding 1,000 100-byte entries (and the list
 * of their IDs, the index), and those that append also trim back to 1,000, so the stream stays
 * the same size.
 */
const PROBES = `#!lua name=pushedge_probes
local function head(k) return redis.call('XRANGE', k, '-', '+', 'COUNT', 1)[1][1] end
redis.register_function('p_empty', function(k, a) return 1 end)
redis.register_function('p_xlen', function(k, a) return redis.call('XLEN', k[1]) end)
redis.register_function('p_exists', function(k, a) return redis.call('EXISTS', k[1]) end)
redis.register_function('p_time', function(k, a) return redis.call('TIME')[1] end)
redis.register_function('p_head', function(k, a) return head(k[1]) end)
redis.register_function('p_head2', function(k, a) return #redis.call('XRANGE', k[1], '-', '+', 'COUNT', 2) end)
redis.register_function('p_xinfo', function(k, a) return #redis.call('XINFO', 'STREAM', k[1]) end)
redis.register_function('p_ttl_scan', function(k, a)
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 - 86400000
  return #redis.call('XREVRANGE', k[1], '(' .. string.format('%.0f', cutoff) .. '-0', '-', 'COUNT', 1) end)
redis.register_function('p_xadd_approx', function(k, a) return redis.call('XADD', k[1], 'MAXLEN', '~', 1000, '*', 'd', a[1]) end)
redis.register_function('p_xadd_exact', function(k, a) return redis.call('XADD', k[1], 'MAXLEN', '=', 1000, '*', 'd', a[1]) end)
redis.register_function('p_xadd_xtrim', function(k, a)
  local id = redis.call('XADD', k[1], '*', 'd', a[1])
  redis.call('XTRIM', k[1], 'MAXLEN', 1000)
  return id end)
redis.register_function('p_head_xadd_exact_xsetid', function(k, a)
  local f = head(k[1])
  local id = redis.call('XADD', k[1], 'MAXLEN', '=', 1000, '*', 'd', a[1])
  redis.call('XSETID', k[1], id, 'MAXDELETEDID', f)
  return id end)
redis.register_function('p_head_xadd_xdel', function(k, a)
  local f = head(k[1])
  local id = redis.call('XADD', k[1], '*', 'd', a[1])
  redis.call('XDEL', k[1], f)
  return id end)
redis.register_function('p_xsetid', function(k, a)
  local id = redis.call('XADD', k[1], 'MAXLEN', '~', 1000, '*', 'd', a[1])
  redis.call('XSETID', k[1], id, 'MAXDELETEDID', '1-1')
  return id end)
redis.register_function('p_index', function(k, a)
  local id = redis.call('XADD', k[1], 'MAXLEN', '~', 1000, '*', 'd', a[1])
  redis.call('RPUSH', k[1] .. ':ids', id)
  redis.call('LPOP', k[1] .. ':ids')
  return id end)
redis.register_function('p_index_xdel', function(k, a)
  local id = redis.call('XADD', k[1], '*', 'd', a[1])
  redis.call('RPUSH', k[1] .. ':ids', id)
  redis.call('XDEL', k[1], redis.call('LPOP', k[1] .. ':ids'))
  return id end)
redis.register_function('p_index_xtrim_approx_xsetid', function(k, a)
  local id = redis.call('XADD', k[1], '*', 'd', a[1])
  redis.call('RPUSH', k[1] .. ':ids', id)
  local b = redis.call('LPOP', k[1] .. ':ids')
  redis.call('XTRIM', k[1], 'MINID', '~', b)
  redis.call('XSETID', k[1], id, 'MAXDELETEDID', b)
  return id end)
redis.register_function('p_prep_index', function(k, a)
  local r = redis.call('XRANGE', k[1], '-', '+')
  for i = 1, #r do redis.call('RPUSH', k[1] .. ':ids', r[i][1]) end
  return #r end)
redis.register_function('p_publish', function(k, a) return redis.call('PUBLISH', k[1], a[1]) end)
redis.register_function('p_get', function(k, a) return redis.call('GET', k[1] .. ':idem:none') end)
redis.register_function('p_set_px', function(k, a) return redis.call('SET', k[1] .. ':idem:one', '1-1', 'PX', 300000) end)
redis.register_function('p_straight6', function(k, a)
  local ids = k[1] .. ':ids'
  local id = redis.call('XADD', k[1], '*', 'd', a[1])
  redis.call('RPUSH', ids, id)
  redis.call('XLEN', k[1])
  redis.call('XDEL', k[1], redis.call('LPOP', ids))
  redis.call('PUBLISH', k[1], id .. ' ' .. a[1])
  return id end)
redis.register_function('p_straight5', function(k, a)
  local ids = k[1] .. ':ids'
  local id = redis.call('XADD', k[1], '*', 'd', a[1])
  redis.call('RPUSH', ids, id)
  redis.call('XDEL', k[1], redis.call('LPOP', ids))
  redis.call('PUBLISH', k[1], id .. ' ' .. a[1])
  return id end)
redis.register_function('p_x32_pub32', function(k, a)
  local key, d, id = k[1], a[1], nil
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    redis.call('PUBLISH', key, id .. ' ' .. d)
  end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_pub1', function(k, a)
  local key, d, id, parts = k[1], a[1], nil, {'\\29'}
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    parts[#parts + 1] = id
    parts[#parts + 1] = ' '
    parts[#parts + 1] = #d
    parts[#parts + 1] = ' '
    parts[#parts + 1] = d
  end
  redis.call('PUBLISH', key, table.concat(parts))
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_pub1_sep', function(k, a)
  local key, d, id, parts, np = k[1], a[1], nil, {}, 0
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    parts[np + 1] = id
    parts[np + 2] = ' '
    parts[np + 3] = d
    parts[np + 4] = '\\29'
    np = np + 4
  end
  redis.call('PUBLISH', key, table.concat(parts))
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_pub1_len', function(k, a)
  local key, d, id, parts, np = k[1], a[1], nil, {'\\29'}, 1
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    parts[np + 1] = id
    parts[np + 2] = ' '
    parts[np + 3] = #d
    parts[np + 4] = ' '
    parts[np + 5] = d
    np = np + 5
  end
  redis.call('PUBLISH', key, table.concat(parts))
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_lenstr', function(k, a)
  local key, d, id, parts, np = k[1], a[1], nil, {}, 0
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    parts[np + 1] = tostring(#d)
    np = np + 1
  end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_out', function(k, a)
  local key, d, id, out = k[1], a[1], nil, {}
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    out[2 * i - 1] = id
    out[2 * i] = 0
  end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return out end)
redis.register_function('p_k32_set', function(k, a)
  local key, d, id, recs = k[1], a[1], nil, {}
  local base = redis.call('INCR', key .. ':n')
  for i = 1, 32 do recs[i] = key .. ':idem:' .. base .. '-' .. i end
  local prev = redis.call('MGET', unpack(recs))
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    redis.call('SET', recs[i], id, 'PX', 300000)
  end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_k32_hash', function(k, a)
  local key, d, id, names, kv, zs = k[1], a[1], nil, {}, {}, {}
  local base = redis.call('INCR', key .. ':n')
  for i = 1, 32 do names[i] = base .. '-' .. i end
  local prev = redis.call('HMGET', key .. ':idemh', unpack(names))
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    kv[2 * i - 1] = names[i]
    kv[2 * i] = id
    zs[2 * i - 1] = 0
    zs[2 * i] = names[i]
  end
  redis.call('HSET', key .. ':idemh', unpack(kv))
  redis.call('ZADD', key .. ':idemz', unpack(zs))
  local old = redis.call('ZRANGEBYSCORE', key .. ':idemz', '-inf', '(-1', 'LIMIT', 0, 64)
  if #old > 0 then redis.call('HDEL', key .. ':idemh', unpack(old)) redis.call('ZREM', key .. ':idemz', unpack(old)) end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_only', function(k, a)
  local key, d, id = k[1], a[1], nil
  for i = 1, 32 do id = redis.call('XADD', key, '*', 'd', d) end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
redis.register_function('p_x32_set32', function(k, a)
  local key, d, id = k[1], a[1], nil
  for i = 1, 32 do
    id = redis.call('XADD', key, '*', 'd', d)
    redis.call('SET', key .. ':idem:' .. i, id, 'PX', 300000)
  end
  redis.call('XTRIM', key, 'MAXLEN', '~', 1000)
  return id end)
`;
const PROBE_NAMES = [...PROBES.matchAll(/register_function\('(p_[a-z0-9_]+)'/g)].map((m) => m[1]).filter((p) => p !== 'p_prep_index');

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const libs = [{ label: '', text: fs.readFileSync(o.lib, 'utf8') }];
    if (o.before !== null)
        libs.unshift({ label: 'before ', text: fs.readFileSync(o.before, 'utf8') });
    const redis = await startRedis(o.nice);
    const results = { redis: null, lib: path.relative(ROOT, path.resolve(o.lib)), before: o.before && path.relative(ROOT, path.resolve(o.before)), n: o.n, retained: o.retained, scenarios: {}, probes: {} };
    try {
        const [info] = await redisPipeline(redis.port, [['INFO', 'server']], { timeoutMs: TIMEOUT_MS });
        results.redis = /redis_version:(\S+)/.exec(info)?.[1];
        openSubscribers(redis.port, o.subscribers);
        /* Repeats outermost: a busy spell on the shared machine then spoils one sample of each
         * scenario, not every sample of one. */
        const all = scenarios(o).filter((s) => o.only === null || o.only.includes(s.name));
        const best = all.map(() => libs.map(() => null));
        for (let r = 0; r < o.repeat; r++) {
            for (const [j, s] of all.entries()) {
                for (const [i, lib] of libs.entries()) {
                    if (s.needs !== undefined && !lib.text.includes(`'${s.needs}'`))
                        continue; /* a library from before that function */
                    await run(redis.port, [['FUNCTION', 'LOAD', 'REPLACE', lib.text]]);
                    const key = channel(s.name);
                    await run(redis.port, s.prepare(key));
                    if (o.subscribers > 0)
                        await subscribeAll(redis.port, key, true);
                    const m = await measure(redis.port, s.calls(key), { spacedMs: s.spacedMs, perCall: s.perCall });
                    if (o.subscribers > 0)
                        await subscribeAll(redis.port, key, false);
                    const b = best[j][i];
                    const cpu = Math.min(m.cpuPerCall, b?.cpuPerCall ?? Infinity);
                    if (b === null || m.usecPerCall < b.usecPerCall)
                        best[j][i] = m;
                    best[j][i].cpuPerCall = cpu;
                    await run(redis.port, [['DEL', key, `${key}:ids`]]);
                }
            }
        }
        for (const [j, s] of all.entries())
            for (const [i, lib] of libs.entries())
                if (best[j][i] !== null)
                    results.scenarios[lib.label + s.name] = { what: s.what, ...best[j][i] };
        if (o.probes) {
            await run(redis.port, [['FUNCTION', 'LOAD', 'REPLACE', PROBES]]);
            for (let r = 0; r < o.repeat; r++) {
                for (const p of PROBE_NAMES.filter((q) => o.probeOnly === null || o.probeOnly.includes(q))) {
                    const key = channel(p);
                    await run(redis.port, Array.from({ length: 1000 }, (_, i) => ['XADD', key, '*', 'd', body(i)]));
                    await run(redis.port, [['FCALL', 'p_prep_index', '1', key]]);
                    const m = await measure(redis.port, Array.from({ length: o.n }, (_, i) => ['FCALL', p, '1', key, body(i)]));
                    const best = results.probes[p];
                    const cpu = Math.min(m.cpuPerCall, best?.cpuPerCall ?? Infinity);
                    if (best === undefined || m.usecPerCall < best.usecPerCall)
                        results.probes[p] = m;
                    results.probes[p].cpuPerCall = cpu;
                    await run(redis.port, [['DEL', key, `${key}:ids`]]);
                }
            }
        }
    } finally {
        closeConnections();
        redis.stop();
    }
    if (o.json) {
        console.log(JSON.stringify(results, null, 1));
        return;
    }
    console.log(`redis ${results.redis}, library ${results.lib}${results.before ? ` (before: ${results.before})` : ''}, ${o.subscribers} subscribers, ${o.retained} retained, lowest of ${o.repeat} runs of ${o.n} calls, loadavg ${os.loadavg()[0].toFixed(2)}`);
    console.log('\nscenario       FCALL us/publish  Redis CPU us/publish  inner commands per publish (us/call)');
    for (const [name, s] of Object.entries(results.scenarios)) {
        const inner = Object.entries(s.inner).map(([c, v]) => `${c} ${v.perPublish}x(${v.usecPerCall})`).join(' ');
        console.log(`${name.padEnd(16)} ${String(s.usecPerCall).padStart(13)}  ${String(s.cpuPerCall).padStart(16)}  ${inner}`);
        console.log(`${''.padEnd(32)}${s.what}`);
    }
    if (o.probes) {
        console.log('\nprobe (a function of its own)   FCALL us/call  Redis CPU us/call  inner (us/call)');
        for (const [name, s] of Object.entries(results.probes)) {
            const inner = Object.entries(s.inner).map(([c, v]) => `${c} ${v.usecPerCall}`).join(' ');
            console.log(`${name.padEnd(31)} ${String(s.usecPerCall).padStart(13)}  ${String(s.cpuPerCall).padStart(16)}  ${inner}`);
        }
    }
}

main().catch((e) => {
    console.error(`redis-publish-cost: ${e.message}`);
    process.exit(1);
});

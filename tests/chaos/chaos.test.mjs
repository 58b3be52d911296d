/*
 * The chaos suite (docs/failure-scenarios.md "The chaos suite"; meson suite `chaos`).
 *
 * Three pushedge nodes (ASan build, one loop each) on one Redis (AOF, appendfsync always)
 * behind HAProxy with deploy/haproxy/pushedge.cfg (addresses, admin socket, maxconn and the check
 * interval rewritten by tests/e2e/proxies.mjs deployHaproxy, as for lb.test.mjs). Each node reaches Redis through its own
 * small TCP proxy under the test's control (blackhole(): stops forwarding in both directions
 * without closing anything; restore(): forwarding resumes, as when a partition heals). Clients
 * through HAProxy, spread evenly over four channels: the JS client (web/src/pushedge.js) forced
 * onto each transport, and raw clients of this file (WebSocket with ?since=<last id>, SSE with
 * Last-Event-ID honouring retry:, a long-poll loop on the cursor). A steady publisher (one POST
 * every 40 ms through HAProxy, each with its own Idempotency-Key, retried with the same key
 * until it is acknowledged, so the stored set is exactly the acknowledged set) records every
 * acknowledged ID.
 *
 * One event at a time, each followed by a check with the publisher paused: every client holds
 * every acknowledged message of its channel exactly once and in order, or received a gap (then:
 * no repeat, in order, nothing unacknowledged). Printed per event: what the clients saw
 * (disconnect reasons), the reconnect time distribution (from each client's disconnect to its
 * reconnect), the time until every client had every message acknowledged before the fault
 * ended plus a newer one, and the publisher's longest wait for an acknowledgement.
 *
 *   1. a node killed with SIGKILL (then started again);
 *   2. a rolling restart: each node in turn SIGTERM (--drain-delay 1, paced drain), started again;
 *   3. the link between a node and Redis black-holed for ten seconds;
 *   4. Redis restarted (SIGTERM, down 2 s, started again on its AOF).
 *
 *   5. (its own topology: a master, two replicas, three redis-sentinel; nodes on
 *      redis+sentinel:// with --redis-wait-replicas 1) the Redis master killed with SIGKILL,
 *      Sentinel promoting a replica. The administrative failover and the WAIT settings are
 *      tests/e2e/sentinel.test.mjs's (docs/failure-scenarios.md).
 *
 * CHAOS_CLIENTS (default 1000) sets the number of clients: 1000 run the whole file in about a
 * minute on two shared cores (docs/failure-scenarios.md "The chaos suite").
 * Skips (77) without redis-server or haproxy; fails then with CI=true.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { PushEdge } from '../../web/src/pushedge.js';
import { CI, delay, freePort, httpRequest, skipFileUnless, startServer, waitUntil } from '../e2e/lib.mjs';
import { deployHaproxy, linkProxy } from '../e2e/proxies.mjs';
import { HAVE_REDIS, redisCmd, startRedis } from '../e2e/redislib.mjs';

const HAPROXY = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => fs.existsSync(p));
skipFileUnless((!HAVE_REDIS && 'redis-server is not on PATH') || (!HAPROXY && 'haproxy is not installed'));

const NUM_CLIENTS = Number(process.env.CHAOS_CLIENTS || 1000);
const HAVE_SENTINEL = (() => {
    const r = spawnSync('redis-sentinel', ['--version'], { stdio: 'ignore' });
    return !r.error && r.status === 0;
})();
const CHANNELS = 4;
const KEY = 'chaos-key';
const AUTH = { Authorization: `Bearer ${KEY}` };
const RUN = `${process.pid}-${Date.now()}`;
const channelName = (i) => `chaos-${RUN}-${i}`;

const procs = new Set();
process.on('exit', () => {
    for (const p of procs)
        p.kill('SIGKILL');
});

/* ---- the Redis link under the test's control -------------------------------------------- */


/* ---- HAProxy with deploy/haproxy/pushedge.cfg -------------------------------------------- */

async function startHaproxy(nodePorts) {
    const lb = await deployHaproxy(nodePorts, {
        maxconn: 8000,
        more: [
            /* A node failing /readyz is out within 0.6 s (the drain's --drain-delay 1 covers it);
             * `slowstart 30s` would keep a restarted node nearly empty for the whole suite. */
            ['slowstart 30s', ''],
            /* One log line per request would be thousands: none. */
            ['log stdout format raw local0', ''],
        ],
    });
    await waitUntil(async () => (await httpRequest(lb.url, '/healthz').catch(() => ({ status: 0 }))).status === 200,
        { timeoutMs: 10000, intervalMs: 100, what: `haproxy serving /healthz (log:\n${lb.output()})` });
    return lb;
}

/* ---- clients ------------------------------------------------------------------------------- */

/*
 * What every client records: got (message IDs in arrival order), gaps, the disconnect reasons,
 * and its downtimes (ms from a disconnect to the next connect).
 */
function track(c, channel, kind) {
    c.kind = kind;
    c.channel = channel;
    c.got = [];
    c.gotAt = [];
    c.gaps = 0;
    c.reasons = [];
    c.downAt = null;
    c.downtimes = [];
    c.down = (reason) => {
        c.reasons.push(reason);
        if (c.downAt === null)
            c.downAt = Date.now();
    };
    c.take = (id) => {
        c.got.push(id);
        c.gotAt.push(Date.now());
    };
    c.up = () => {
        if (c.downAt !== null)
            c.downtimes.push(Date.now() - c.downAt);
        c.downAt = null;
        c.connected = true;
    };
    return c;
}

function jsClient(url, transport, channel) {
    const c = new PushEdge(url, {
        WebSocket, transports: [transport], probeTimeout: 4000, connectTimeout: 8000, backoffBase: 200, backoffCap: 2000,
        reprobeInterval: 600000, pollTimeout: 5,
    });
    track(c, channel, `js-${transport}`);
    c.on('gap', () => c.gaps++);
    c.on('disconnected', (d) => c.down(d.reason));
    c.on('connected', () => c.up());
    c.subscribe(channel, (m) => c.take(m.id), { since: '0' });
    c.stop = () => c.close();
    return c;
}

/* Backoff of the raw clients: 200 ms doubling to 2 s, full jitter. */
const rawBackoff = (n) => Math.random() * Math.min(2000, 200 * 2 ** n);

/* Raw WebSocket: ?channel&since=<last id>; a close 1012 with {"reconnect_ms":N} waits N. */
function rawWs(base, channel) {
    const c = track({}, channel, 'raw-ws');
    let stopped = false, fails = 0, ws = null;
    const connect = () => {
        if (stopped)
            return;
        const since = c.got.length ? c.got[c.got.length - 1] : '0';
        ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ws?channel=${channel}&since=${since}`, { perMessageDeflate: false });
        ws.on('error', () => {});
        ws.on('message', (data) => {
            let m;
            try {
                m = JSON.parse(data.toString());
            } catch {
                return;
            }
            if (m.op === 'subscribed') {
                fails = 0;
                c.up();
            } else if (m.op === 'message')
                c.take(m.id);
            else if (m.op === 'gap')
                c.gaps++;
        });
        ws.on('close', (code, reason) => {
            if (stopped)
                return;
            c.down(`close ${code}`);
            let wait = rawBackoff(fails++);
            try {
                const h = JSON.parse(reason.toString()).reconnect_ms;
                if (Number.isInteger(h))
                    wait = h;
            } catch {
                /* no hint */
            }
            setTimeout(connect, wait);
        });
    };
    connect();
    c.stop = () => {
        stopped = true;
        ws?.terminate();
    };
    return c;
}

/* Raw SSE over node:http: Last-Event-ID from the last id: line; retry: honoured at the end. */
function rawSse(base, channel) {
    const c = track({}, channel, 'raw-sse');
    const u = new URL(base);
    let stopped = false, fails = 0, req = null, lastId = '0', retry = null;
    const again = (why) => {
        if (stopped)
            return;
        c.down(why);
        const wait = retry ?? rawBackoff(fails++);
        retry = null;
        setTimeout(connect, wait);
    };
    const connect = () => {
        if (stopped)
            return;
        let first = true, ended = false;
        const end = (why) => {
            if (!ended) {
                ended = true;
                again(why);
            }
        };
        req = http.get({ host: u.hostname, port: u.port, path: `/sse?channel=${channel}`, headers: { 'Last-Event-ID': lastId }, agent: false }, (res) => {
            if (res.statusCode !== 200) {
                res.resume();
                end(`status ${res.statusCode}`);
                return;
            }
            fails = 0;
            c.up();
            res.setEncoding('utf8');
            let buf = '', ev = { type: 'message', data: '', id: null };
            res.on('data', (chunk) => {
                buf += chunk;
                let i;
                while ((i = buf.indexOf('\n')) >= 0) {
                    const line = buf.slice(0, i);
                    buf = buf.slice(i + 1);
                    if (line === '') {
                        if (ev.id !== null)
                            lastId = ev.id;
                        if (ev.type === 'gap')
                            c.gaps++;
                        else if (ev.type === 'message' && ev.data)
                            c.take(JSON.parse(ev.data).id);
                        ev = { type: 'message', data: '', id: null };
                    } else if (line.startsWith('data: '))
                        ev.data += line.slice(6);
                    else if (line.startsWith('event: '))
                        ev.type = line.slice(7);
                    else if (line.startsWith('id: '))
                        ev.id = line.slice(4);
                    else if (line.startsWith('retry: ')) {
                        /* The first retry: is the stream's default; a later one the drain's hint. */
                        if (!first)
                            retry = Number(line.slice(7));
                        first = false;
                    }
                }
            });
            res.on('end', () => end('sse end'));
            res.on('error', () => end('sse error'));
            res.on('close', () => end('sse closed'));
        });
        req.on('error', () => end('sse refused'));
    };
    connect();
    c.stop = () => {
        stopped = true;
        req?.destroy();
    };
    return c;
}

/* A raw long-poll loop: each request from the last cursor; reconnect_ms and 503 Retry-After waited. */
function rawPoll(base, channel) {
    const c = track({}, channel, 'raw-poll');
    let stopped = false, fails = 0, cursor = '0', timer = null;
    const loop = async () => {
        if (stopped)
            return;
        let wait = 0;
        try {
            const r = await httpRequest(base, `/poll?channel=${channel}&since=${encodeURIComponent(cursor)}&timeout=5`, { timeoutMs: 12000 });
            if (r.status === 200) {
                if (c.downAt !== null || !c.connected)
                    c.up();
                fails = 0;
                c.gaps += (r.json.gaps || []).length;
                for (const m of r.json.messages)
                    c.take(m.id);
                cursor = r.json.cursor;
                wait = r.json.reconnect_ms ?? 0;
            } else {
                c.down(`poll ${r.status}`);
                wait = r.headers['retry-after'] ? Number(r.headers['retry-after']) * 1000 * (0.5 + Math.random() / 2) : rawBackoff(fails++);
            }
        } catch (e) {
            c.down('poll error');
            wait = rawBackoff(fails++);
        }
        if (!stopped)
            timer = setTimeout(loop, wait);
    };
    loop();
    c.stop = () => {
        stopped = true;
        clearTimeout(timer);
    };
    return c;
}

/* ---- the publisher ------------------------------------------------------------------------- */

function startPublisher(url) {
    const p = { acked: Array.from({ length: CHANNELS }, () => []), ackAt: [], running: false, attempts: 0, refused: {}, longestWait: 0, n: 0 };
    let loopDone = Promise.resolve();
    p.resume = () => {
        if (p.running)
            return;
        p.running = true;
        loopDone = (async () => {
            while (p.running) {
                const n = p.n++;
                const ch = n % CHANNELS;
                const t0 = Date.now();
                /* Retried with the same key until acknowledged: stored at most once. */
                for (let tries = 0; ; tries++) {
                    p.attempts++;
                    try {
                        const r = await httpRequest(url, `/api/publish?channel=${channelName(ch)}`, {
                            method: 'POST', headers: { ...AUTH, 'Content-Type': 'application/json', 'Idempotency-Key': `chaos-${RUN}-${n}` },
                            body: JSON.stringify({ n }), timeoutMs: 8000,
                        });
                        if (r.status === 200) {
                            p.acked[ch].push(r.json.id);
                            p.ackAt.push(Date.now());
                            break;
                        }
                        const code = r.json?.error?.code ?? `http_${r.status}`;
                        p.refused[code] = (p.refused[code] ?? 0) + 1;
                    } catch (e) {
                        p.refused[e.code || 'error'] = (p.refused[e.code || 'error'] ?? 0) + 1;
                    }
                    if (Date.now() - t0 > 60000)
                        throw new Error(`publish ${n} not acknowledged within 60 s: ${JSON.stringify(p.refused)}`);
                    await delay(100);
                }
                p.longestWait = Math.max(p.longestWait, Date.now() - t0);
                await delay(40);
            }
        })();
    };
    p.pause = async () => {
        p.running = false;
        await loopDone;
    };
    p.total = () => p.acked.reduce((s, a) => s + a.length, 0);
    return p;
}

/* ---- checks and report --------------------------------------------------------------------- */

const quantile = (xs, f) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(f * xs.length))] : null);

/* Every client holds every acknowledged message of its channel once, in order, or had a gap. */
async function checkExactlyOnce(clients, pub, what) {
    await waitUntil(() => clients.every((c) => c.got.length >= pub.acked[c.chIndex].length), {
        timeoutMs: 60000, intervalMs: 100,
        what: `${what}: every client caught up (${clients.filter((c) => c.got.length < pub.acked[c.chIndex].length).slice(0, 5)
            .map((c) => `${c.kind} ${c.got.length}/${pub.acked[c.chIndex].length}`).join(', ')})`,
    });
    await delay(500); /* anything sent twice would be behind the expected ones */
    let withGap = 0;
    for (const c of clients) {
        const want = pub.acked[c.chIndex];
        if (c.gaps === 0) {
            assert.deepEqual(c.got, want, `${what}: ${c.kind} on ${c.channel}: every acknowledged message exactly once, in order`);
            continue;
        }
        withGap++;
        const ack = new Set(want);
        assert.equal(new Set(c.got).size, c.got.length, `${what}: ${c.kind}: a repeat after a gap`);
        assert.ok(c.got.every((id) => ack.has(id)), `${what}: ${c.kind}: an unacknowledged message`);
    }
    return withGap;
}

function snapshot(clients) {
    for (const c of clients) {
        c.mark = { reasons: c.reasons.length, downtimes: c.downtimes.length, got: c.got.length };
    }
}

/* What happened since snapshot(): disconnect reasons, reconnect times, clients affected. */
function summarize(clients) {
    const reasons = {};
    const downs = [];
    let affected = 0, silence = 0;
    for (const c of clients) {
        /* The longest wait between two messages (the publisher sends one per channel every
         * ~160 ms), from the first message of the scenario. */
        for (let i = c.mark.got + 1; i < c.gotAt.length; i++)
            silence = Math.max(silence, c.gotAt[i] - c.gotAt[i - 1]);
        const rs = c.reasons.slice(c.mark.reasons);
        const ds = c.downtimes.slice(c.mark.downtimes);
        if (rs.length)
            affected++;
        for (const r of rs)
            reasons[`${c.kind}: ${r}`] = (reasons[`${c.kind}: ${r}`] ?? 0) + 1;
        downs.push(...ds);
    }
    return { affected, reasons, downs, silence };
}

/* From `since` until every client holds every message acknowledged before it and a newer one. */
async function timeToRecover(clients, pub, since) {
    const need = pub.acked.map((a) => a.length + 1);
    await waitUntil(() => clients.every((c) => c.got.length >= need[c.chIndex]), {
        timeoutMs: 60000, intervalMs: 50,
        what: `every client live again (${clients.filter((c) => c.got.length < need[c.chIndex]).length} behind)`,
    });
    return Date.now() - since;
}

const results = [];
function report(event, seen, extra) {
    const d = seen.downs;
    const line = {
        event,
        clients_disconnected: seen.affected,
        longest_silence_ms: seen.silence,
        reconnect_ms: d.length ? { n: d.length, p50: quantile(d, 0.5), p90: quantile(d, 0.9), p99: quantile(d, 0.99), max: Math.max(...d) } : null,
        ...extra,
        reasons: seen.reasons,
    };
    results.push(line);
    console.log(`# chaos ${JSON.stringify(line)}`);
}

/* ---- the suite ----------------------------------------------------------------------------- */

/* Opens NUM_CLIENTS clients through url and waits until every one is connected. */
async function openClients(url, clients) {
    /* Two thirds JS clients, one third raw ones, each third spread over the transports. */
    const makers = [
        (ch) => jsClient(url, 'websocket', ch), (ch) => jsClient(url, 'sse', ch), (ch) => jsClient(url, 'poll', ch),
        (ch) => jsClient(url, 'websocket', ch), (ch) => jsClient(url, 'sse', ch), (ch) => jsClient(url, 'poll', ch),
        (ch) => rawWs(url, ch), (ch) => rawSse(url, ch), (ch) => rawPoll(url, ch),
    ];
    for (let i = 0; i < NUM_CLIENTS; i += 50) {
        for (let j = i; j < Math.min(NUM_CLIENTS, i + 50); j++) {
            const chIndex = j % CHANNELS;
            const c = makers[Math.floor(j / CHANNELS) % makers.length](channelName(chIndex));
            c.chIndex = chIndex;
            clients.push(c);
        }
        await delay(100);
    }
    await waitUntil(() => clients.every((c) => c.connected), {
        timeoutMs: 60000, intervalMs: 200, what: `every client connected (${clients.filter((c) => !c.connected).length} not yet)`,
    });
    const kinds = {};
    for (const c of clients)
        kinds[c.kind] = (kinds[c.kind] ?? 0) + 1;
    console.log(`# chaos clients ${JSON.stringify(kinds)}`);
}

/* Runs fault() (which returns when the fault ended) with the publisher going, then checks and reports. */
async function scenario(clients, pub, name, fault) {
    snapshot(clients);
    pub.longestWait = 0;
    pub.refused = {};
    pub.resume();
    await delay(1000);
    const t0 = Date.now();
    const faultEnd = await fault();
    const recover = await timeToRecover(clients, pub, faultEnd);
    await delay(1000);
    await pub.pause();
    const gaps = await checkExactlyOnce(clients, pub, name);
    report(name, summarize(clients), {
        fault_ms: faultEnd - t0, recover_ms: recover, publish_longest_wait_ms: pub.longestWait, publish_refused: pub.refused,
        clients_with_gap: gaps, acknowledged_total: pub.total(),
    });
}

after(() => printSummary());

function printSummary() {
    console.log('# chaos summary');
    for (const r of results)
        console.log(`#   ${r.event}: ${r.clients_disconnected} clients disconnected; reconnect ${r.reconnect_ms ? `p50 ${r.reconnect_ms.p50} ms, p90 ${r.reconnect_ms.p90}, p99 ${r.reconnect_ms.p99}, max ${r.reconnect_ms.max} (${r.reconnect_ms.n})` : '-'}; every client live again ${r.recover_ms} ms; longest silence ${r.longest_silence_ms} ms; publisher's longest wait ${r.publish_longest_wait_ms} ms; gaps ${r.clients_with_gap}`);
}

describe(`chaos: three nodes on Redis behind HAProxy, ${NUM_CLIENTS} clients`, () => {
    let redis, links, nodePorts, nodes, lb, pub;
    const clients = [];
    const nodeArgs = (i) => ['--listen', `127.0.0.1:${nodePorts[i]}`, '--redis', `redis://127.0.0.1:${links[i].port}`, '--threads', '1',
        '--ping-interval', '3', '--poll-timeout', '5', '--drain-delay', '1', '--drain-timeout', '5', '--trusted-proxy', '127.0.0.1/32',
        '--api-key', KEY];
    const startNode = async (i) => {
        nodes[i] = await startServer(nodeArgs(i), {}, { listen: false, port: nodePorts[i] });
        await waitUntil(async () => (await httpRequest(nodes[i].url, '/readyz').catch(() => ({ status: 0 }))).status === 200,
            { timeoutMs: 15000, what: `node ${i} ready` });
    };

    before(async () => {
        redis = await startRedis({ aof: true });
        links = await Promise.all([0, 1, 2].map(() => linkProxy(redis.port)));
        nodePorts = await Promise.all([0, 1, 2].map(() => freePort()));
        nodes = [];
        await Promise.all([0, 1, 2].map((i) => startNode(i)));
        lb = await startHaproxy(nodePorts);
    });
    after(async () => {
        for (const c of clients)
            c.stop();
        await pub?.pause().catch(() => {});
        await lb?.stop();
        for (const n of nodes ?? [])
            await n?.stop('SIGKILL');
        for (const l of links ?? [])
            l.close();
        await redis?.stop();
    });

    it('clients connect across the transports and receive every message', { timeout: 120000 }, async () => {
        await openClients(lb.url, clients);
        pub = startPublisher(lb.url);
        pub.resume();
        await waitUntil(() => pub.total() >= 40, { timeoutMs: 20000, what: 'the first publishes' });
        await pub.pause();
        await checkExactlyOnce(clients, pub, 'before any fault');
    });

    it('a node killed with SIGKILL', { timeout: 180000 }, async () => {
        await scenario(clients, pub, 'SIGKILL node 0', async () => {
            await nodes[0].stop('SIGKILL');
            const end = Date.now();
            await startNode(0);
            return end;
        });
    });

    it('a rolling restart with SIGTERM (paced drain)', { timeout: 300000 }, async () => {
        await scenario(clients, pub, 'rolling restart (SIGTERM each node in turn)', async () => {
            for (let i = 0; i < 3; i++) {
                const r = await nodes[i].stop('SIGTERM');
                assert.equal(r.code, 0, `node ${i} drained and exited 0:\n${r.stderr?.slice(-2000)}`);
                await startNode(i);
                /* HAProxy's rise 2 x 300 ms before the next node goes. */
                await delay(1000);
            }
            return Date.now();
        });
    });

    it('the link between a node and Redis black-holed for ten seconds', { timeout: 180000 }, async () => {
        await scenario(clients, pub, 'node 1 <-> Redis black-holed 10 s', async () => {
            links[1].blackhole();
            await delay(10000);
            links[1].restore();
            return Date.now();
        });
    });

    it('Redis restarted', { timeout: 180000 }, async () => {
        await scenario(clients, pub, 'Redis restarted (down 2 s, AOF)', async () => {
            await redis.stop('SIGTERM');
            await delay(2000);
            redis = await redis.restart();
            return Date.now();
        });
    });
});

/* ---- Sentinel: the master killed ----------------------------------------------------------- */

const MASTER = 'pe';

/** A redis-sentinel on a free port monitoring MASTER at masterPort (quorum 2, down after 1 s). */
async function startSentinel(dir, masterPort) {
    const port = await freePort();
    const conf = path.join(dir, `sentinel-${port}.conf`);
    fs.writeFileSync(conf, [`port ${port}`, 'bind 127.0.0.1', 'daemonize no', `dir ${dir}`,
        `sentinel monitor ${MASTER} 127.0.0.1 ${masterPort} 2`, `sentinel down-after-milliseconds ${MASTER} 1000`,
        `sentinel failover-timeout ${MASTER} 3000`, `sentinel parallel-syncs ${MASTER} 1`, ''].join('\n'));
    const proc = spawn('redis-sentinel', [conf], { stdio: ['ignore', 'ignore', 'ignore'] });
    procs.add(proc);
    const exited = new Promise((r) => proc.on('close', r));
    await waitUntil(async () => (await redisCmd(port, ['PING'], { timeoutMs: 500 }).catch(() => null)) === 'PONG',
        { timeoutMs: 5000, what: `sentinel :${port}` });
    return {
        port,
        async stop() {
            proc.kill('SIGTERM');
            await Promise.race([exited, delay(5000)]);
            proc.kill('SIGKILL');
            procs.delete(proc);
        },
    };
}

const masterOf = async (s) => {
    const a = await redisCmd(s.port, ['SENTINEL', 'get-master-addr-by-name', MASTER], { timeoutMs: 2000 }).catch(() => null);
    return a ? Number(a[1]) : null;
};

describe(`chaos: the Redis master killed under Sentinel, ${NUM_CLIENTS} clients`, { skip: !HAVE_SENTINEL && !CI && 'redis-sentinel is not installed' }, () => {
    let dir, servers, sentinels, nodes, lb, pub;
    const clients = [];
    before(async () => {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pushedge-chaos-sentinel-'));
        const sub = (n) => {
            const d = path.join(dir, n);
            fs.mkdirSync(d);
            return d;
        };
        const master = await startRedis({ dir: sub('m') });
        servers = [master];
        for (let i = 0; i < 2; i++) {
            const r = await startRedis({ dir: sub(`r${i}`), extra: ['--replicaof', '127.0.0.1', String(master.port)] });
            servers.push(r);
        }
        sentinels = [];
        for (let i = 0; i < 3; i++)
            sentinels.push(await startSentinel(sub(`s${i}`), master.port));
        /* A failover needs the sentinels to know each other and the replicas in sync. */
        await waitUntil(async () => {
            for (const s of sentinels) {
                const others = await redisCmd(s.port, ['SENTINEL', 'sentinels', MASTER], { timeoutMs: 2000 });
                const replicas = await redisCmd(s.port, ['SENTINEL', 'replicas', MASTER], { timeoutMs: 2000 });
                if (others.length !== 2 || replicas.filter((r) => !/s_down|disconnected/.test(r[r.indexOf('flags') + 1])).length < 2)
                    return false;
            }
            return true;
        }, { timeoutMs: 30000, intervalMs: 200, what: 'the sentinels settled' });
        const url = `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${MASTER}`;
        const ports = await Promise.all([0, 1, 2].map(() => freePort()));
        /* WAIT 1: a crash of the master loses nothing acknowledged (docs/failure-scenarios.md). */
        nodes = await Promise.all(ports.map((port) => startServer(['--listen', `127.0.0.1:${port}`, '--redis', url, '--redis-wait-replicas', '1',
            '--threads', '1', '--ping-interval', '3', '--poll-timeout', '5', '--trusted-proxy', '127.0.0.1/32', '--api-key', KEY],
        {}, { listen: false, port })));
        for (const n of nodes)
            await waitUntil(async () => (await httpRequest(n.url, '/readyz').catch(() => ({ status: 0 }))).status === 200,
                { timeoutMs: 15000, what: 'node ready' });
        lb = await startHaproxy(ports);
    });
    after(async () => {
        for (const c of clients)
            c.stop();
        await pub?.pause().catch(() => {});
        await lb?.stop();
        for (const n of nodes ?? [])
            await n?.stop('SIGKILL');
        for (const s of sentinels ?? [])
            await s.stop();
        for (const r of servers ?? [])
            await r.stop('SIGKILL');
        if (dir)
            fs.rmSync(dir, { recursive: true, force: true });
    });

    it('the master killed with SIGKILL: Sentinel promotes a replica', { timeout: 240000 }, async () => {
        await openClients(lb.url, clients);
        pub = startPublisher(lb.url);
        await scenario(clients, pub, 'Redis master SIGKILL, Sentinel failover (WAIT 1)', async () => {
            const old = servers[0].port;
            await servers[0].stop('SIGKILL');
            await waitUntil(async () => {
                const m = await Promise.all(sentinels.map(masterOf));
                return m.every((p) => p !== null && p !== old && p === m[0]);
            }, { timeoutMs: 30000, intervalMs: 100, what: 'the sentinels agree on a new master' });
            return Date.now();
        });
    });
});

/*
 * The Redis engine behind Redis Sentinel (--redis redis+sentinel://...; docs/operations.md
 * "Redis Sentinel", docs/failure-scenarios.md, pubsub/redis_link.c), against real processes this
 * file starts itself on free loopback ports: a redis-server master, one replica, and three
 * redis-sentinel processes (quorum 2, down-after-milliseconds 1000, failover-timeout 3000),
 * stopped by PID at the end.
 *
 * Covered:
 *  1. discovery: a node whose sentinel list starts with a dead port finds the master through
 *     the next sentinel; publish and subscribe (ws, sse) through it;
 *  2. a master name the sentinels do not monitor: /readyz 503, publish 503 engine_unavailable,
 *     the log names the reason, the process keeps serving;
 *  3. --redis-wait-replicas above the replicas there are: publish 503 not_replicated with the
 *     JSON error and Retry-After, the message stored all the same, a keyed retry answers the
 *     same way and stores nothing new; a batch item and the WebSocket publish op say the same;
 *  4. SENTINEL FAILOVER, then 5. kill -9 of the (new) master, each with WebSocket, SSE and
 *     long-poll subscribers and a publisher running on several nodes, one per WAIT setting:
 *     the subscribers stay connected and continue; on the asserted node (4: WAIT on both
 *     replicas, 5: WAIT 1) every acknowledged (200) message is delivered to each subscriber,
 *     once and in order (again only after a gap, which must follow a message the failover lost),
 *     and every other message delivered is one whose publish was answered 503 "may have been
 *     stored"; on the other nodes (4: WAIT 1 and none, 5: none) the acknowledged messages the
 *     new master lost are counted and printed, not asserted (an administrative failover loses
 *     them below WAIT on every replica: docs/failure-scenarios.md). Each run prints the
 *     failover time as the publisher saw it (publishes unavailable from/to).
 *
 * Not covered: sentinels with requirepass, a sentinel partitioned from the others (needs a
 * network namespace), more than one replica (the test's replica set is one; the docs say what a
 * second replica changes for WAIT).
 *
 * Skipped (exit 77) when redis-server or redis-sentinel is missing, unless CI=true (then it
 * fails naming what is missing). Every wait is bounded.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
    checkJsonError,
    cmpId,
    delay,
    freePort,
    httpRequest,
    openSSE,
    pollRequest,
    publish,
    publishOk,
    skipFileUnless,
    startServer,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { openWs } from './wslib.mjs';
import { HAVE_REDIS, redisCmd, rmDir, startRedis } from './redislib.mjs';

const HAVE_SENTINEL = (() => {
    const r = spawnSync('redis-sentinel', ['--version'], { stdio: 'ignore' });
    return !r.error && r.status === 0;
})();
skipFileUnless((!HAVE_REDIS || !HAVE_SENTINEL) &&
    `${!HAVE_REDIS ? 'redis-server' : 'redis-sentinel'} is not on PATH (deploy/install-deps.sh --test installs it)`);

const MASTER = 'pe';
/* Replicas of the master: with two, the master's death leaves the new master one to WAIT for. */
const REPLICAS = 2;
const POLL_TIMEOUT_S = 3;
/* The nodes of the SENTINEL FAILOVER case (failoverRun). */
const MANUAL_SPECS = [{ name: 'w2', wait: REPLICAS, exact: true }, { name: 'w1', wait: 1, exact: false }, { name: 'none', wait: 0, exact: false }];

/* ------------------------------------------------------------------------------------------ */
/* the Redis side: master, replica, sentinels                                                  */

const sentinelChildren = new Set();
process.on('exit', () => {
    for (const p of sentinelChildren)
        try {
            p.kill('SIGKILL');
        } catch {
            /* gone */
        }
});

/** A redis-sentinel on a free port, monitoring MASTER at masterPort. */
async function startSentinel(dir, masterPort) {
    const port = await freePort();
    const conf = path.join(dir, `sentinel-${port}.conf`);
    fs.writeFileSync(conf, [
        `port ${port}`,
        'bind 127.0.0.1',
        'daemonize no',
        `dir ${dir}`,
        `sentinel monitor ${MASTER} 127.0.0.1 ${masterPort} 2`,
        `sentinel down-after-milliseconds ${MASTER} 1000`,
        `sentinel failover-timeout ${MASTER} 3000`,
        `sentinel parallel-syncs ${MASTER} 1`,
        '',
    ].join('\n'));
    const proc = spawn('redis-sentinel', [conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    sentinelChildren.add(proc);
    let out = '';
    proc.stdout.on('data', (c) => (out = (out + c).slice(-65536)));
    proc.stderr.on('data', (c) => (out = (out + c).slice(-65536)));
    const exited = new Promise((r) => proc.on('close', () => {
        sentinelChildren.delete(proc);
        r();
    }));
    await waitUntil(async () => (await redisCmd(port, ['PING'], { timeoutMs: 500 })) === 'PONG',
        { timeoutMs: 5000, what: `sentinel :${port} answering PING (output: ${out.slice(-500)})` });
    return {
        port,
        output: () => out,
        async stop() {
            proc.kill('SIGTERM');
            if (!(await Promise.race([exited.then(() => true), delay(5000, false)]))) {
                proc.kill('SIGKILL');
                await exited;
            }
        },
    };
}

/** A flat [k1, v1, k2, v2...] reply as an object. */
function kv(arr) {
    const o = {};
    for (let i = 0; i + 1 < arr.length; i += 2)
        o[arr[i]] = arr[i + 1];
    return o;
}

async function infoReplication(port) {
    const text = await redisCmd(port, ['INFO', 'replication'], { timeoutMs: 2000 });
    return Object.fromEntries(text.split('\r\n').filter((l) => l.includes(':')).map((l) => l.split(/:(.*)/s).slice(0, 2)));
}

/** The master's port as sentinel s sees it. */
async function masterOf(s) {
    const a = await redisCmd(s.port, ['SENTINEL', 'get-master-addr-by-name', MASTER], { timeoutMs: 2000 });
    return a ? Number(a[1]) : null;
}

/**
 * The master, its replica and three sentinels, waited until the sentinels know each other and
 * the replica (what a failover needs). `servers` maps a port to its startRedis handle.
 */
async function startTopology() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-sentinel-'));
    const sub = (n) => {
        const d = path.join(dir, n);
        fs.mkdirSync(d);
        return d;
    };
    const master = await startRedis({ dir: sub('m') });
    const servers = new Map([[master.port, master]]);
    for (let i = 0; i < REPLICAS; i++) {
        const replica = await startRedis({ dir: sub(`r${i}`), extra: ['--replicaof', '127.0.0.1', String(master.port)] });
        servers.set(replica.port, replica);
        await waitUntil(async () => (await infoReplication(replica.port)).master_link_status === 'up',
            { timeoutMs: 10000, what: `replica ${i} in sync` });
    }
    const sentinels = [];
    for (let i = 0; i < 3; i++)
        sentinels.push(await startSentinel(sub(`s${i}`), master.port));
    const topo = { dir, servers, sentinels };
    await waitSettled(topo, master.port);
    return topo;
}

/**
 * Every sentinel names `masterPort` master, knows the two other sentinels and REPLICAS replicas
 * up and in sync: a failover can start. Bounded.
 */
async function waitSettled(topo, masterPort, timeoutMs = 30000) {
    await waitUntil(async () => {
        for (const s of topo.sentinels) {
            if ((await masterOf(s)) !== masterPort)
                return false;
            const others = await redisCmd(s.port, ['SENTINEL', 'sentinels', MASTER], { timeoutMs: 2000 });
            const replicas = (await redisCmd(s.port, ['SENTINEL', 'replicas', MASTER], { timeoutMs: 2000 })).map(kv);
            const good = replicas.filter((r) => !/s_down|o_down|disconnected/.test(r.flags) && r['master-link-status'] === 'ok');
            if (others.length !== 2 || good.length < REPLICAS)
                return false;
        }
        return true;
    }, { timeoutMs, intervalMs: 200, what: `the sentinels settled on master :${masterPort} with a replica in sync` });
}

async function stopTopology(topo) {
    if (!topo)
        return;
    for (const s of topo.sentinels)
        await s.stop();
    for (const r of topo.servers.values())
        await r.stop('SIGKILL');
    rmDir(topo.dir);
}

function sentinelUrl(topo, { dead = null, master = MASTER } = {}) {
    const hosts = [...(dead ? [dead] : []), ...topo.sentinels.map((s) => s.port)].map((p) => `127.0.0.1:${p}`);
    return `redis+sentinel://${hosts.join(',')}/${master}`;
}

/* ------------------------------------------------------------------------------------------ */
/* pushedge nodes and clients                                                                  */

async function readyz(srv) {
    return (await httpRequest(srv.url, '/readyz', { timeoutMs: 3000 })).status;
}

async function startNode(url, extra = [], { ready = true } = {}) {
    /* History large enough that nothing a run publishes is trimmed: a missing ID is a lost one. */
    const srv = await startServer(['--redis', url, '--threads', '2', '--poll-timeout', String(POLL_TIMEOUT_S), '--history-size', '100000', ...extra]);
    if (ready)
        await waitUntil(async () => (await readyz(srv)) === 200,
            { timeoutMs: 10000, what: `/readyz 200 (log:\n${srv.output().stderr.slice(-2000)})` });
    return srv;
}

/** A long-poll loop from `since` that waits out 503s (the engine down) and resumes with its cursor. */
function pollLoop(url, ch, since) {
    const col = { envelopes: [], seq: [], gaps: [], refused: 0, cursor: since, stopped: false, trace: [] };
    col.finished = (async () => {
        for (let i = 0; i < 100000 && !col.stopped; i++) {
            let r;
            try {
                r = await pollRequest(url, `channel=${ch}&since=${encodeURIComponent(col.cursor)}`, { timeoutMs: (POLL_TIMEOUT_S + 5) * 1000 });
            } catch {
                r = null;
            }
            if (!r || r.status !== 200) {
                col.refused++;
                col.trace.push(`${col.cursor} -> ${r ? r.status : 'no answer'}`);
                await delay(100);
                continue;
            }
            col.gaps.push(...r.json.gaps);
            if (r.json.gaps.length)
                col.seq.push({ gap: true });
            col.seq.push(...r.json.messages);
            col.envelopes.push(...r.json.messages);
            col.trace.push(`${col.cursor} -> ${r.json.gaps.length ? 'GAP ' : ''}[${r.json.messages.map((m) => m.id).join(' ')}] -> ${r.json.cursor}`);
            col.cursor = r.json.cursor;
        }
    })();
    return col;
}

/**
 * Publishes {seq} on ch through url one after the other (each with its own Idempotency-Key,
 * never retried) until stop(); records every attempt: {seq, t0, t1, status, code, message, id}.
 */
function publisher(url, ch) {
    const p = { attempts: [], stopped: false };
    p.stop = async () => {
        p.stopped = true;
        await p.done;
    };
    p.done = (async () => {
        for (let seq = 1; seq <= 20000 && !p.stopped; seq++) {
            const t0 = Date.now();
            let r;
            try {
                r = await publish(url, ch, { seq }, { 'idempotency-key': `k-${seq}` }, { timeoutMs: 10000 });
            } catch (e) {
                r = { status: 0, json: null, text: e.message };
            }
            p.attempts.push({ seq, t0, t1: Date.now(), status: r.status, code: r.json?.error?.code, message: r.json?.error?.message ?? r.text, id: r.json?.id });
            if (r.status !== 200)
                await delay(20);
        }
    })();
    p.acked = () => p.attempts.filter((a) => a.status === 200);
    return p;
}

/** The publish-unavailability window around `from` (ms): first refusal to the first 200 after the last one. */
function outage(p, from) {
    const after = p.attempts.filter((a) => a.t0 >= from - 50);
    const refused = after.filter((a) => a.status !== 200);
    if (refused.length === 0)
        return { refused: 0, firstRefusedMs: null, backMs: null, outageMs: 0, codes: {} };
    const first = refused[0];
    const last = refused[refused.length - 1];
    const back = after.find((a) => a.status === 200 && a.t0 > last.t0);
    const codes = {};
    for (const a of refused)
        codes[a.code ?? `status ${a.status}`] = (codes[a.code ?? `status ${a.status}`] || 0) + 1;
    return {
        refused: refused.length,
        firstRefusedMs: first.t0 - from,
        backMs: back ? back.t1 - from : null,
        outageMs: back ? back.t1 - first.t0 : null,
        codes,
    };
}

/** Subscribers on every transport for ch on node srv. */
async function subscribers(srv, ch, t) {
    const sse = await openSSE(srv.url, `/sse?channel=${ch}`, { t, timeoutMs: 5000 });
    assert.equal(sse.status, 200);
    await sse.waitLive(5000);
    const ws = await openWs(srv.url, `/ws?channel=${ch}`, { t });
    await ws.waitFor(() => ws.ops().some((o) => o.op === 'subscribed'), 5000, 'subscribed');
    /* The channel is new and empty: from its oldest message is from its first. */
    const poll = pollLoop(srv.url, ch, '0');
    t.after(async () => {
        poll.stopped = true;
        await poll.finished;
    });
    return {
        sse,
        ws,
        poll,
        got: {
            sse: () => sse.envelopes().filter((e) => e.channel === ch),
            ws: () => ws.ops().filter((o) => o.op === 'message' && o.channel === ch),
            poll: () => poll.envelopes,
        },
        /* What each received, in order, gaps included ({gap: true}). */
        seq: {
            sse: () => sse.events.filter((e) => e.type === 'message' || e.type === 'gap').map((e) => (e.type === 'gap' ? { gap: true } : JSON.parse(e.data))),
            ws: () => ws.ops().filter((o) => (o.op === 'message' && o.channel === ch) || o.op === 'gap').map((o) => (o.op === 'gap' ? { gap: true } : o)),
            poll: () => poll.seq,
        },
    };
}

/**
 * Checks one channel's subscribers against its publisher. Between two gaps, no ID twice and IDs
 * increasing (after a gap the retained messages come again: the contract for an engine that lost
 * data, docs/protocol.md). Nothing refused ("nothing stored") is ever delivered. With `exact`:
 * every acknowledged ID delivered, in order, and again only after a gap; a gap only after a
 * message the new master (hist: its IDs) lost; anything else delivered one whose publish
 * answered "may have been stored". Returns per transport the acknowledged messages it
 * lacks and the gaps it got.
 */
function verify(p, subs, { exact, what, hist }) {
    const ackedIds = p.acked().map((a) => a.id);
    const acked = new Set(ackedIds);
    const refused = (a) => a.code === 'engine_unavailable' && /unavailable$/.test(a.message);
    const maybeSeqs = new Set(p.attempts.filter((a) => a.status !== 200 && !refused(a)).map((a) => a.seq));
    const refusedSeqs = new Set(p.attempts.filter(refused).map((a) => a.seq));
    const out = {};
    for (const [tr, seqOf] of Object.entries(subs.seq)) {
        const items = seqOf().filter((e) => e.gap || !e.data.end);
        const gaps = items.filter((e) => e.gap).length;
        /* On failure, what this subscriber got around the failing spot, and for the long-poll
         * every request it made (cursor -> IDs -> cursor): enough to tell which path
         * delivered what. */
        const diag = (id) => {
            const at = items.findIndex((e) => !e.gap && e.id === id);
            const near = items.slice(Math.max(0, at - 8), at + 8).map((e) => (e.gap ? 'GAP' : e.id)).join(' ');
            let trace = '';
            if (tr === 'poll') {
                const ti = subs.poll.trace.findIndex((l) => l.includes(` ${id}`) || l.includes(`[${id}`));
                const from = Math.max(0, (ti < 0 ? subs.poll.trace.length : ti) - 20);
                trace = `\npoll trace (requests ${from}.. of ${subs.poll.trace.length}):\n  ${subs.poll.trace.slice(from, from + 30).join('\n  ')}`;
            }
            return `\n${tr} around ${id}: ${near}${trace}`;
        };
        let run = [];
        const runs = [run];
        for (const e of items)
            if (e.gap)
                runs.push((run = []));
            else
                run.push(e);
        for (const r of runs) {
            const ids = r.map((e) => e.id);
            const dup = ids.find((id, i) => ids.indexOf(id) !== i);
            assert.equal(dup, undefined, `${what} ${tr}: ID ${dup} delivered twice without a gap between${dup === undefined ? '' : diag(dup)}`);
            for (let i = 1; i < ids.length; i++)
                assert.ok(cmpId(ids[i - 1], ids[i]) < 0, `${what} ${tr}: IDs out of order at ${i}: ${ids[i - 1]} then ${ids[i]}${cmpId(ids[i - 1], ids[i]) < 0 ? '' : diag(ids[i])}`);
        }
        const envs = items.filter((e) => !e.gap);
        for (const e of envs)
            assert.ok(!refusedSeqs.has(e.data.seq), `${what} ${tr}: seq ${e.data.seq} was refused ("nothing stored") yet delivered`);
        const seen = new Set(envs.map((e) => e.id));
        out[tr] = { missingAcked: ackedIds.filter((id) => !seen.has(id)).length, gaps };
        if (exact) {
            /* A gap is right only after a message the new master lost: one answered 503 "may
             * have been stored" but delivered live from the old master. */
            if (gaps)
                assert.ok(envs.some((e) => !acked.has(e.id) && !hist.has(e.id)),
                    `${what} ${tr}: a gap, though the subscriber received nothing the new master lost`);
            const first = [...new Set(envs.map((e) => e.id))];
            assert.deepEqual(first.filter((id) => acked.has(id)), ackedIds, `${what} ${tr}: every acknowledged message once, in order`);
            for (const e of envs.filter((e) => !acked.has(e.id)))
                assert.ok(maybeSeqs.has(e.data.seq), `${what} ${tr}: seq ${e.data.seq} (${e.id}) delivered but neither acknowledged nor "may have been stored"`);
        }
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */

describe('Redis Sentinel', () => {
    let topo = null;

    before(async () => {
        topo = await startTopology();
    });

    after(async () => {
        await stopTopology(topo);
    });

    it('1. finds the master through the sentinels (the first one listed is down); publish and subscribe work', { timeout: 30000 }, async (t) => {
        const dead = await freePort();
        const node = await startNode(sentinelUrl(topo, { dead }));
        t.after(() => node.stop());
        assert.match(node.output().stderr, /through the sentinels/, 'the log says how the master was found');
        const ch = uniqueChannel('sdisc');
        const ws = await openWs(node.url, `/ws?channel=${ch}`, { t });
        await ws.waitFor(() => ws.ops().some((o) => o.op === 'subscribed'), 5000, 'subscribed');
        const sse = await openSSE(node.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive(5000);
        const ids = [];
        for (let i = 1; i <= 5; i++)
            ids.push(await publishOk(node.url, ch, { i }));
        await ws.waitFor(() => ws.ops().filter((o) => o.op === 'message').length === 5, 5000, '5 on ws');
        await sse.waitFor(() => sse.envelopes().length === 5, 5000, '5 on sse');
        assert.deepEqual(ws.ops().filter((o) => o.op === 'message').map((o) => o.id), ids);
        assert.deepEqual(sse.envelopes().map((e) => e.id), ids);
        /* Stored on the master the sentinels name. */
        const m = await masterOf(topo.sentinels[0]);
        assert.equal(await redisCmd(m, ['XLEN', `pe:{${ch}}`]), 5);
    });

    it('2. a master name no sentinel monitors: /readyz 503, publish 503, the reason logged', { timeout: 30000 }, async () => {
        const node = await startNode(sentinelUrl(topo, { master: 'nosuch' }), [], { ready: false });
        try {
            await waitUntil(() => /does not monitor a master of that name/.test(node.output().stderr),
                { timeoutMs: 10000, what: 'the log naming the reason' });
            assert.equal(await readyz(node), 503);
            const r = await publish(node.url, uniqueChannel('snone'), { x: 1 });
            checkJsonError(r, 503, 'publish without a master');
            assert.equal(r.json.error.code, 'engine_unavailable');
        } finally {
            await node.stop();
        }
    });

    it('3. --redis-wait-replicas above the replicas there are: 503 not_replicated, stored all the same; a keyed retry adds nothing', { timeout: 30000 }, async () => {
        const node = await startNode(sentinelUrl(topo), ['--redis-wait-replicas', String(REPLICAS + 1), '--redis-wait-timeout', '200']);
        try {
            const ch = uniqueChannel('swait');
            const t0 = Date.now();
            const r = await publish(node.url, ch, { n: 1 }, { 'idempotency-key': 'once' });
            const took = Date.now() - t0;
            checkJsonError(r, 503, 'a publish one replica short');
            assert.equal(r.json.error.code, 'not_replicated');
            assert.match(r.json.error.message, /stored on the Redis master/);
            assert.ok(r.headers['retry-after'], 'Retry-After');
            assert.ok(took >= 180, `the answer waited for the WAIT timeout (${took} ms)`);
            const m = await masterOf(topo.sentinels[0]);
            assert.equal(await redisCmd(m, ['XLEN', `pe:{${ch}}`]), 1, 'stored on the master');
            const again = await publish(node.url, ch, { n: 1 }, { 'idempotency-key': 'once' });
            checkJsonError(again, 503, 'the keyed retry');
            assert.equal(again.json.error.code, 'not_replicated');
            assert.equal(await redisCmd(m, ['XLEN', `pe:{${ch}}`]), 1, 'the retry stored nothing new');
            /* The batch item and the WebSocket op say the same. */
            const b = await httpRequest(node.url, '/api/batch', {
                method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify([{ channel: ch, data: 2 }]),
            });
            assert.equal(b.status, 200, b.text);
            assert.equal(JSON.parse(b.text).results[0].error.code, 'not_replicated');
            const ws = await openWs(node.url, '/ws');
            try {
                const op = await ws.request({ op: 'publish', channel: ch, data: 3 });
                assert.equal(op.op, 'error', JSON.stringify(op));
                assert.equal(op.code, 'not_replicated');
            } finally {
                ws.ws.terminate();
            }
        } finally {
            await node.stop();
        }
    });

    /*
     * One failover under load. Each spec is a node with its own channel, subscribers on every
     * transport and a publisher: {name, wait (--redis-wait-replicas, 0: none), exact (assert
     * every acknowledged message once, in order)}. `trigger` fails the master over; the run ends
     * once the sentinels agree on the new master and each publisher has 20 acknowledgements
     * after that. Prints one "# failover {...}" line.
     */
    async function failoverRun(t, label, trigger, specs) {
        const oldMaster = await masterOf(topo.sentinels[0]);
        const runs = [];
        for (const spec of specs) {
            const extra = spec.wait ? ['--redis-wait-replicas', String(spec.wait), '--redis-wait-timeout', '500'] : [];
            const node = await startNode(sentinelUrl(topo), extra);
            t.after(() => node.stop());
            const ch = uniqueChannel(`${label}${spec.name}`);
            runs.push({ ...spec, node, ch, subs: await subscribers(node, ch, t) });
        }
        for (const r of runs)
            r.pub = publisher(r.node.url, r.ch);
        await waitUntil(() => runs.every((r) => r.pub.acked().length >= 20), { timeoutMs: 10000, what: '20 acknowledged on each node' });

        const at = Date.now();
        await trigger(oldMaster);
        const newMaster = await waitUntil(async () => {
            const ms = await Promise.all(topo.sentinels.map(masterOf));
            return ms.every((m) => m === ms[0] && m !== oldMaster) && ms[0];
        }, { timeoutMs: 30000, intervalMs: 50, what: 'every sentinel naming a new master' });
        const switchedMs = Date.now() - at;
        const ackedAfter = (p) => p.acked().filter((a) => a.t0 > at + switchedMs).length;
        await waitUntil(() => runs.every((r) => ackedAfter(r.pub) >= 20), {
            timeoutMs: 45000,
            what: `20 acknowledged on each node after the failover (${runs.map((r) => `${r.name}: ${ackedAfter(r.pub)}`).join(', ')})`,
        });
        for (const r of runs)
            await r.pub.stop();

        /* The end markers, through the new master: every subscriber has seen all before them. */
        for (const r of runs) {
            const end = await publishOk(r.node.url, r.ch, { end: true });
            for (const [tr, got] of Object.entries(r.subs.got))
                await waitUntil(() => got().some((e) => e.id === end), { timeoutMs: 15000, what: `${r.name} ${tr}: the end marker` });
            assert.equal(r.subs.sse.ended, false, 'the SSE stream stayed open');
            assert.equal(r.subs.ws.closed, null, 'the WebSocket stayed open');
        }

        const report = { event: label, sentinelsSwitchedMs: switchedMs, nodes: {} };
        for (const r of runs) {
            const hist = new Set((await redisCmd(newMaster, ['XRANGE', `pe:{${r.ch}}`, '-', '+'])).map((e) => e[0]));
            const subscribers = verify(r.pub, r.subs, { exact: r.exact, what: `${label} ${r.name} (WAIT ${r.wait})`, hist });
            const lost = r.pub.acked().filter((a) => !hist.has(a.id)).length;
            if (r.exact)
                assert.equal(lost, 0, `${r.name} (WAIT ${r.wait}): the new master holds every acknowledged message`);
            report.nodes[r.name] = { wait: r.wait, acked: r.pub.acked().length, ...outage(r.pub, at), ackedLostByNewMaster: lost, subscribers };
        }
        console.log(`# failover ${JSON.stringify(report)}`);
        for (const r of runs) {
            r.subs.sse.close();
            r.subs.ws.ws.terminate();
            r.subs.poll.stopped = true;
        }
        return { oldMaster, newMaster, report };
    }

    it('4. SENTINEL FAILOVER under load: subscribers continue; with WAIT on every replica every acknowledged message once, in order', { timeout: 90000 }, async (t) => {
        const { oldMaster, newMaster } = await failoverRun(t, 'manual', async () => {
            assert.equal(await redisCmd(topo.sentinels[0].port, ['SENTINEL', 'FAILOVER', MASTER]), 'OK');
        }, MANUAL_SPECS);
        /* The old master comes back as the new one's replica: the next case fails over to it. */
        await waitUntil(async () => {
            const i = await infoReplication(oldMaster);
            return i.role === 'slave' && Number(i.master_port) === newMaster && i.master_link_status === 'up';
        }, { timeoutMs: 30000, intervalMs: 200, what: 'the old master replicating the new one' });
        await waitSettled(topo, newMaster);
    });

    it('5. kill -9 of the master under load: subscribers continue; with WAIT 1 every acknowledged message once, in order', { timeout: 90000 }, async (t) => {
        await failoverRun(t, 'kill9', async (master) => {
            const ex = await topo.servers.get(master).stop('SIGKILL');
            assert.equal(ex.signal, 'SIGKILL');
        }, [{ name: 'w1', wait: 1, exact: true }, { name: 'none', wait: 0, exact: false }]);
    });
});

/*
 * The Redis Streams engine (--redis URL; docs/operations.md "Several nodes with Redis",
 * docs/protocol.md "Names and IDs", pubsub/engine_redis.c, pubsub/redis_link.c,
 * pubsub/redis_lib.lua), end to end against real redis-server processes that this file starts
 * itself (loopback, free ports, temporary directories, stopped by PID).
 *
 * Covered:
 *  1. two pushedge nodes on one Redis: an HTTP publish on node 1 reaches WebSocket, SSE and
 *     long-poll subscribers on node 2; a WebSocket publish op on node 2 reaches node 1;
 *  2. the resume matrix across nodes: part of a channel read on node 1 with transport A, resumed
 *     on node 2 with transport B and A's cursor, for A, B in {ws, sse, poll}: exactly the
 *     remaining messages (history and live, published while B connects), once, in order;
 *  3. a backend publishing straight into Redis (FCALL pushedge_publish) is delivered to ws and
 *     sse subscribers with the ID the function returned;
 *  4. plain XADD producers with notify-keyspace-events Kt (set before pushedge starts): a JSON
 *     value and a non-JSON value (delivered as a JSON string), no duplicate for entries that
 *     were also PUBLISHed;
 *  5. Redis stopped under live SSE and WS subscribers: /readyz 503, publish 503 (HTTP and the
 *     ws op), /poll 503 with Retry-After, one "unavailable" notice, connections kept; Redis
 *     restarted from its AOF: /readyz 200, one "available" notice, and every acknowledged
 *     message (including one stored before the outage but never announced) exactly once in
 *     order; none of the 20 refused publishes ever delivered or stored;
 *     5b. once /readyz is 200 again, publishes succeed on every thread (readiness needs every
 *     thread's link);
 *  6. Redis restarted without persistence (data lost): resuming with an old cursor (SSE
 *     Last-Event-ID, poll since=) gives a gap, then the new messages; a WS subscriber that
 *     stayed connected through the restart gets a gap too;
 *  7. retention through Redis with --history-size 5: since=0 gives the last 5, an older cursor
 *     a gap and then the same 5 (poll, sse, ws);
 *     7b. the gap boundary (max-deleted-entry-id) is the newest removed entry whichever way
 *     pushedge_publish removed it (XDEL one by one, a cut of several by a node with a smaller
 *     --history-size, the age limit): resuming from it is no gap, from the one before it is;
 *     7c. pushedge_publish called directly with random counts, ages and keys: after each call the
 *     stream holds exactly what a model keeps, and its boundary is the newest ID ever removed;
 *     7d. the index of a channel (pe:{NAME}:ids) follows its stream: a stream written before it
 *     existed, entries appended by plain XADD, entries removed by an earlier version, a stream
 *     deleted under it;
 *  8. a password-protected Redis: the right password works; a wrong one gives /readyz 503 and
 *     publish 503 while the process keeps serving;
 *  9. a database number in the URL: the stream key lives in that database only;
 * 10. publishes that land between an SSE response head and its first read (a proxy delays
 *     Redis's replies): since=0 starts at the oldest retained when the read runs, with no gap;
 *     a Last-Event-ID cursor trimmed meanwhile gets a gap (docs/protocol.md "When now and
 *     oldest are fixed").
 *
 * Redis is spoken to over a raw RESP socket (no redis-cli needed). The whole file is skipped
 * when redis-server is not on PATH. Every wait is bounded; nothing sleeps for a fixed time
 * (except the 1.5 s outage of 5b and the 1.1 s wait for --history-ttl 1 in 7b, inputs under
 * test, not settling waits).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
    ID_RE,
    assertAlive,
    checkJsonError,
    cmpId,
    delay,
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
import { HAVE_REDIS, redisCmd, rmDir, startRedis, stopRedis } from './redislib.mjs';

skipFileUnless(!HAVE_REDIS && 'redis-server is not on PATH');

const POLL_TIMEOUT_S = 3;

/* ------------------------------------------------------------------------------------------ */
/* pushedge nodes                                                                              */

/** A pushedge node on the Redis engine (2 threads: two sets of Redis connections), by default waited ready. */
async function startNode(redisUrl, extra = [], { ready = true } = {}) {
    return startServer(['--redis', redisUrl, '--threads', '2', '--poll-timeout', String(POLL_TIMEOUT_S), ...extra], {}, { ready });
}

/** Stops a node with SIGTERM; rejects unless it exited 0 with no sanitizer report (lib.mjs). */
async function stopNode(srv) {
    if (srv)
        await srv.stop();
}

async function readyz(srv) {
    return (await httpRequest(srv.url, '/readyz', { timeoutMs: 3000 })).status;
}

function tail(srv, n = 3000) {
    return srv.output().stderr.slice(-n);
}

/* ------------------------------------------------------------------------------------------ */
/* subscribers                                                                                 */

/** The message envelopes a ws client received on ch. */
function wsEnvelopes(c, ch) {
    return c.ops().filter((o) => o.op === 'message' && o.channel === ch).map((o) => ({ channel: o.channel, id: o.id, data: o.data }));
}

function sseEnvelopes(s) {
    return s.envelopes();
}

async function wsSubscribed(url, ch, since, t) {
    const q = `channel=${encodeURIComponent(ch)}` + (since !== undefined ? `&since=${encodeURIComponent(since)}` : '');
    const c = await openWs(url, `/ws?${q}`, { t });
    await c.waitFor(() => c.ops().some((o) => o.op === 'subscribed' && o.channel === ch), 5000, `subscribed to ${ch}`);
    return c;
}

async function sseLive(url, ch, since, t, headers = {}) {
    const q = `channel=${encodeURIComponent(ch)}` + (since !== undefined ? `&since=${encodeURIComponent(since)}` : '');
    const s = await openSSE(url, `/sse?${q}`, { t, headers });
    assert.equal(s.status, 200, `GET /sse?${q}: ${s.status}`);
    await s.waitLive(5000);
    return s;
}

/**
 * A long-poll consumer loop from `since` on one channel: collects envelopes and gaps until
 * stop() or until a message satisfying untilFn has been received (then it issues no more polls).
 */
function pollCollector(url, ch, since, untilFn) {
    const col = { envelopes: [], gaps: [], answers: 0, error: null, cursor: since, done: false };
    let stopped = false;
    col.stop = () => (stopped = true);
    col.finished = (async () => {
        try {
            while (!stopped) {
                const r = await pollRequest(url, `channel=${encodeURIComponent(ch)}&since=${encodeURIComponent(col.cursor)}`);
                if (r.status !== 200)
                    throw new Error(`poll since=${col.cursor}: ${r.status} ${r.text}`);
                col.answers++;
                col.gaps.push(...r.json.gaps);
                col.envelopes.push(...r.json.messages);
                col.cursor = r.json.cursor;
                if (untilFn && r.json.messages.some(untilFn))
                    break;
            }
        } catch (e) {
            col.error = e;
        }
        col.done = true;
    })();
    return col;
}

/** Asserts envelopes are exactly `expected` ({id, data}) on ch, in order. */
function assertEnvelopes(got, ch, expected, what) {
    const g = got.map((e) => ({ channel: e.channel, id: e.id, data: e.data }));
    const x = expected.map((e) => ({ channel: ch, id: e.id, data: e.data }));
    assert.deepEqual(g, x, `${what}: got ${JSON.stringify(g.map((e) => e.data))}, expected ${JSON.stringify(x.map((e) => e.data))}`);
}

function assertIncreasing(ids, what) {
    for (let i = 1; i < ids.length; i++)
        assert.ok(cmpId(ids[i - 1], ids[i]) < 0, `${what}: ids not strictly increasing at ${i}: ${ids[i - 1]} then ${ids[i]}`);
}

/** Publishes data items in order on node `url`; returns [{id, data}]. */
async function publishSeq(url, ch, datas) {
    const out = [];
    for (const d of datas)
        out.push({ id: await publishOk(url, ch, d), data: d });
    return out;
}

/**
 * Publishes after an engine recovery, once /readyz said 200: every publish must be accepted at
 * once (the outage test pins that a ready node never answers 503), so nothing is retried and a
 * refusal fails the test with its answer. Returns [{id, data}].
 */
async function publishSeqAfterRecovery(url, ch, datas) {
    const out = [];
    for (const d of datas) {
        const r = await publish(url, ch, d);
        assert.equal(r.status, 200, `a publish of ${JSON.stringify(d)} after /readyz said 200: ${r.status} ${r.text}`);
        assert.match(r.json.id, ID_RE);
        out.push({ id: r.json.id, data: d });
    }
    return out;
}

function range(a, b) {
    const r = [];
    for (let i = a; i <= b; i++)
        r.push(i);
    return r;
}

/* ------------------------------------------------------------------------------------------ */

describe('Redis engine', () => {
    /* One Redis (no persistence, no keyspace events) shared by cases 1-3, 7 and 9, and two nodes on it. */
    let redis = null, n1 = null, n2 = null;

    before(async () => {
        redis = await startRedis();
        n1 = await startNode(redis.url);
        n2 = await startNode(redis.url);
    });

    after(async () => {
        try {
            await stopNode(n1);
            await stopNode(n2);
        } finally {
            await stopRedis(redis);
        }
    });

    describe('1. two nodes on one Redis', () => {
        it('both nodes are ready on the redis engine', async () => {
            assert.equal(await readyz(n1), 200);
            assert.equal(await readyz(n2), 200);
            assert.match(n1.output().stderr, /redis engine/, 'the start line names the redis engine');
        });

        it('an HTTP publish on node 1 reaches ws, sse and poll subscribers on node 2', { timeout: 20000 }, async (t) => {
            const ch = uniqueChannel('two');
            /* A message before the subscribers: "no cursor" must not replay it; it is also the poll's start. */
            const before = await publishOk(n1.url, ch, { before: true });
            const ws = await wsSubscribed(n2.url, ch, undefined, t);
            const sse = await sseLive(n2.url, ch, undefined, t);
            const poll = pollRequest(n2.url, `channel=${ch}&since=${before}`);
            const data = { n: 1, text: 'h\u00e9llo \u2603', nested: [1, 2.5, null, true] };
            const id = await publishOk(n1.url, ch, data);
            assert.match(id, ID_RE);
            const want = [{ id, data }];
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= 1, 5000, 'the message on ws (node 2)');
            await sse.waitFor(() => sseEnvelopes(sse).length >= 1, 5000, 'the message on sse (node 2)');
            const pr = await poll;
            assert.equal(pr.status, 200, pr.text);
            assertEnvelopes(pr.json.messages, ch, want, 'poll on node 2');
            assert.deepEqual(pr.json.gaps, []);
            assert.ok(pr.ms < POLL_TIMEOUT_S * 1000, `the held poll answered as soon as the message came (${pr.ms} ms)`);
            /* A second message published on node 2 itself bounds "nothing else arrived". */
            const id2 = await publishOk(n2.url, ch, { n: 2 });
            want.push({ id: id2, data: { n: 2 } });
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= 2, 5000, 'n=2 on ws');
            await sse.waitFor(() => sseEnvelopes(sse).length >= 2, 5000, 'n=2 on sse');
            assertEnvelopes(wsEnvelopes(ws, ch), ch, want, 'ws on node 2');
            assertEnvelopes(sseEnvelopes(sse), ch, want, 'sse on node 2');
            assert.equal(sse.events.at(-1).lastEventId, id2, 'the SSE id of a one-channel stream is the message id');
        });

        it('a WebSocket publish op on node 2 reaches ws and sse subscribers on node 1', { timeout: 20000 }, async (t) => {
            const ch = uniqueChannel('wspub');
            const ws1 = await wsSubscribed(n1.url, ch, undefined, t);
            const sse1 = await sseLive(n1.url, ch, undefined, t);
            const pub = await openWs(n2.url, '/ws', { t });
            const want = [];
            for (let i = 1; i <= 3; i++) {
                const data = { n: i, via: 'ws' };
                const r = await pub.request({ op: 'publish', channel: ch, data });
                assert.equal(r.op, 'published', JSON.stringify(r));
                assert.equal(r.channel, ch);
                assert.match(r.id, ID_RE);
                want.push({ id: r.id, data });
            }
            await ws1.waitFor(() => wsEnvelopes(ws1, ch).length >= 3, 5000, '3 messages on ws (node 1)');
            await sse1.waitFor(() => sseEnvelopes(sse1).length >= 3, 5000, '3 messages on sse (node 1)');
            assertEnvelopes(wsEnvelopes(ws1, ch), ch, want, 'ws on node 1');
            assertEnvelopes(sseEnvelopes(sse1), ch, want, 'sse on node 1');
            /* History on the other node has them too. */
            const pr = await pollRequest(n1.url, `channel=${ch}&since=0`);
            assertEnvelopes(pr.json.messages, ch, want, 'poll since=0 on node 1');
        });
    });

    describe('2. resume across nodes: read on node 1 with A, resume on node 2 with B', () => {
        /* Reads everything currently in ch (4 messages) on node 1 with transport A; returns the cursor. */
        const readers = {
            async ws(url, ch, n, t) {
                const c = await openWs(url, `/ws?channel=${ch}&since=0`, { t });
                await c.waitFor(() => wsEnvelopes(c, ch).length >= n, 5000, `${n} messages on ws`);
                const env = wsEnvelopes(c, ch);
                c.close();
                return { env, cursor: env.at(-1).id };
            },
            async sse(url, ch, n, t) {
                const s = await openSSE(url, `/sse?channel=${ch}&since=0`, { t });
                await s.waitFor(() => sseEnvelopes(s).length >= n, 5000, `${n} messages on sse`);
                const env = sseEnvelopes(s);
                const cursor = s.events.filter((e) => e.type === 'message').at(-1).lastEventId;
                s.close();
                return { env, cursor };
            },
            async poll(url, ch, n) {
                const r = await pollRequest(url, `channel=${ch}&since=0`);
                assert.equal(r.status, 200, r.text);
                return { env: r.json.messages, cursor: r.json.cursor };
            },
        };
        /* Resumes on node 2 with B from cursor; returns {got(), gaps(), wait(n), close()} once connected. */
        const resumers = {
            async ws(url, ch, cursor, t) {
                const c = await openWs(url, '/ws', { t });
                const r = await c.request({ op: 'subscribe', channel: ch, since: cursor });
                assert.equal(r.op, 'subscribed', JSON.stringify(r));
                return {
                    got: () => wsEnvelopes(c, ch),
                    gaps: () => c.ops().filter((o) => o.op === 'gap').map((o) => o.channel),
                    wait: (n) => c.waitFor(() => wsEnvelopes(c, ch).length >= n, 8000, `${n} messages on ws`),
                    close: () => c.close(),
                };
            },
            async sse(url, ch, cursor, t) {
                /* EventSource's reconnect: Last-Event-ID (it takes precedence over since). */
                const s = await openSSE(url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': cursor } });
                assert.equal(s.status, 200);
                return {
                    got: () => sseEnvelopes(s),
                    gaps: () => s.events.filter((e) => e.type === 'gap').map((e) => JSON.parse(e.data).channel),
                    wait: (n) => s.waitFor(() => sseEnvelopes(s).length >= n, 8000, `${n} messages on sse`),
                    close: () => s.close(),
                };
            },
            async poll(url, ch, cursor) {
                const col = pollCollector(url, ch, cursor, (e) => e.data && e.data.n === 10);
                return {
                    got: () => col.envelopes,
                    gaps: () => col.gaps,
                    wait: async (n) => {
                        await waitUntil(() => col.error || col.done || col.envelopes.length >= n,
                            { timeoutMs: 8000, what: `${n} messages by poll` });
                        if (col.error)
                            throw col.error;
                        assert.ok(col.envelopes.length >= n, `poll: ${n} messages expected, got ${JSON.stringify(col.envelopes.map((e) => e.data))}`);
                    },
                    close: () => col.stop(),
                };
            },
        };

        for (const a of ['ws', 'sse', 'poll'])
            for (const b of ['ws', 'sse', 'poll'])
                it(`${a} on node 1, then ${b} on node 2`, { timeout: 20000 }, async (t) => {
                    const ch = uniqueChannel(`m-${a}-${b}`);
                    const all = await publishSeq(n1.url, ch, range(1, 4).map((n) => ({ n })));
                    const first = await readers[a](n1.url, ch, 4, t);
                    assertEnvelopes(first.env, ch, all, `${a} on node 1 (since=0)`);
                    assert.equal(first.cursor, all[3].id, `${a}'s cursor of a one-channel subscription is the last id`);
                    /* Published while the client is away: history for B. */
                    all.push(...(await publishSeq(n1.url, ch, range(5, 7).map((n) => ({ n })))));
                    const r = await resumers[b](n2.url, ch, first.cursor, t);
                    /* Published while B catches up, on node 1: the history/live seam across nodes. */
                    all.push(...(await publishSeq(n1.url, ch, range(8, 10).map((n) => ({ n })))));
                    await r.wait(6);
                    const rest = all.slice(4);
                    assertEnvelopes(r.got(), ch, rest, `${b} on node 2 from ${a}'s cursor`);
                    assert.deepEqual(r.gaps(), [], 'no gap');
                    r.close();
                });
    });

    describe('3. a backend publishing straight into Redis (FCALL pushedge_publish)', () => {
        it('is delivered to ws and sse subscribers on both nodes with the ID the function returned', { timeout: 20000 }, async (t) => {
            const ch = uniqueChannel('fcall');
            const ws = await wsSubscribed(n2.url, ch, undefined, t);
            const sse = await sseLive(n1.url, ch, undefined, t);
            const want = [];
            const bodies = ['{"from":"backend","n":1}', '[1,"two",{"3":null}]', '"plain string"', '12345678901234567890'];
            for (const body of bodies) {
                const id = await redisCmd(redis.port, ['FCALL', 'pushedge_publish', '1', `pe:{${ch}}`, body]);
                assert.match(id, ID_RE, `FCALL returned ${JSON.stringify(id)}`);
                want.push({ id, data: JSON.parse(body), raw: body });
            }
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= bodies.length, 5000, 'the FCALL messages on ws');
            await sse.waitFor(() => sseEnvelopes(sse).length >= bodies.length, 5000, 'the FCALL messages on sse');
            /* A publish through pushedge after them: nothing else (no duplicate) came in between. */
            const endId = await publishOk(n1.url, ch, { end: true });
            want.push({ id: endId, data: { end: true } });
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= want.length, 5000, 'the end marker on ws');
            await sse.waitFor(() => sseEnvelopes(sse).length >= want.length, 5000, 'the end marker on sse');
            assertEnvelopes(wsEnvelopes(ws, ch), ch, want, 'ws (node 2)');
            assertEnvelopes(sseEnvelopes(sse), ch, want, 'sse (node 1)');
            /* The big integer is delivered digit for digit on the wire. */
            const raw = sse.events.filter((e) => e.type === 'message')[3].data;
            assert.ok(raw.includes('"data":12345678901234567890'), raw);
            /* And history (poll since=0) returns the same IDs. */
            const pr = await pollRequest(n2.url, `channel=${ch}&since=0`);
            assertEnvelopes(pr.json.messages, ch, want, 'poll since=0');
        });
    });

    describe('4. plain XADD producers (notify-keyspace-events Kt)', () => {
    /* A private Redis with keyspace events for streams, a node on it, and a live SSE and WS
     * subscriber of a fresh channel. */
    async function keyspaceNode(t, prefix) {
        const r4 = await startRedis();
        t.after(() => stopRedis(r4));
        await redisCmd(r4.port, ['CONFIG', 'SET', 'notify-keyspace-events', 'Kt']);
        const node = await startNode(r4.url);
        t.after(() => stopNode(node));
        const ch = uniqueChannel(prefix);
        const sse = await sseLive(node.url, ch, undefined, t);
        const ws = await wsSubscribed(node.url, ch, undefined, t);
        return { r4, node, ch, sse, ws, key: `pe:{${ch}}` };
    }

        it('XADD entries reach a live SSE and WS subscriber; a non-JSON value arrives as a JSON string; no duplicates', { timeout: 25000 }, async (t) => {
            const { r4, node, ch, sse, ws, key } = await keyspaceNode(t, 'xadd');
            const want = [];
            const id1 = await redisCmd(r4.port, ['XADD', key, '*', 'd', '{"n":1}']);
            want.push({ id: id1, data: { n: 1 } });
            await sse.waitFor(() => sseEnvelopes(sse).length >= 1, 5000, 'the XADDed {"n":1} on sse');
            assertEnvelopes(sseEnvelopes(sse), ch, want, 'sse after XADD {"n":1}');
            const id2 = await redisCmd(r4.port, ['XADD', key, '*', 'd', 'hello']);
            want.push({ id: id2, data: 'hello' });
            await sse.waitFor(() => sseEnvelopes(sse).length >= 2, 5000, 'the XADDed hello on sse');
            assert.equal(sse.events.filter((e) => e.type === 'message')[1].data, `{"channel":"${ch}","id":"${id2}","data":"hello"}`);
            /* Entries from pushedge (and from FCALL) are both PUBLISHed and keyspace-notified: once only. */
            const id3 = await publishOk(node.url, ch, { n: 3 });
            want.push({ id: id3, data: { n: 3 } });
            const id4 = await redisCmd(r4.port, ['FCALL', 'pushedge_publish', '1', key, '{"n":4}']);
            want.push({ id: id4, data: { n: 4 } });
            const id5 = await redisCmd(r4.port, ['XADD', key, '*', 'd', '{"n":5}']);
            want.push({ id: id5, data: { n: 5 } });
            const id6 = await publishOk(node.url, ch, { n: 6 });
            want.push({ id: id6, data: { n: 6 } });
            await sse.waitFor(() => sseEnvelopes(sse).some((e) => e.id === id6), 5000, 'n=6 on sse');
            await ws.waitFor(() => wsEnvelopes(ws, ch).some((e) => e.id === id6), 5000, 'n=6 on ws');
            assertEnvelopes(sseEnvelopes(sse), ch, want, 'sse');
            assertEnvelopes(wsEnvelopes(ws, ch), ch, want, 'ws');
            /* History through pushedge_read sees the plain entries the same way. */
            const pr = await pollRequest(node.url, `channel=${ch}&since=0`);
            assertEnvelopes(pr.json.messages, ch, want, 'poll since=0');
        });
        it('a plain XADD right before an announced entry, in one batch: both arrive, in order', { timeout: 25000 }, async (t) => {
            const { r4, ch, sse, ws, key } = await keyspaceNode(t, 'xaddrace');
            /* One script: a plain XADD, then an entry announced as pushedge_publish does. The node
             * reads both keyspace events and the announcement at once, before any fetch of the
             * plain entry can answer: posting the announced one first used to lose the plain one. */
            const script = "local a = redis.call('XADD', KEYS[1], '*', 'd', ARGV[1]); " +
                "local b = redis.call('XADD', KEYS[1], '*', 'd', ARGV[2]); " +
                "redis.call('PUBLISH', KEYS[1], b .. ' ' .. ARGV[2]); return {a, b}";
            const want = [];
            for (let round = 0; round < 5; round++) {
                const [a, b] = await redisCmd(r4.port, ['EVAL', script, '1', key, `{"n":${2 * round + 1}}`, `{"n":${2 * round + 2}}`]);
                want.push({ id: a, data: { n: 2 * round + 1 } }, { id: b, data: { n: 2 * round + 2 } });
            }
            const last = want[want.length - 1].id;
            await sse.waitFor(() => sseEnvelopes(sse).some((e) => e.id === last), 5000, 'the last entry on sse');
            await ws.waitFor(() => wsEnvelopes(ws, ch).some((e) => e.id === last), 5000, 'the last entry on ws');
            assertEnvelopes(sseEnvelopes(sse), ch, want, 'sse');
            assertEnvelopes(wsEnvelopes(ws, ch), ch, want, 'ws');
        });
    });

    describe('5. Redis outage and recovery (AOF)', () => {
        it('503s while down, one notice each way, then every acknowledged message exactly once in order', { timeout: 45000 }, async (t) => {
            let r5 = await startRedis({ aof: true });
            t.after(() => stopRedis(r5));
            const node = await startNode(r5.url);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('outage');
            const key = `pe:{${ch}}`;
            const sse = await sseLive(node.url, ch, undefined, t);
            const ws = await wsSubscribed(node.url, ch, undefined, t);
            const want = await publishSeq(node.url, ch, range(1, 3).map((n) => ({ n })));
            await sse.waitFor(() => sseEnvelopes(sse).length >= 3, 5000, 'n=1..3 on sse');
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= 3, 5000, 'n=1..3 on ws');
            /* Stored before the outage but never announced (a plain XADD, no keyspace events on this
             * Redis): the subscribers have not received it; only the catch-up after the outage can
             * deliver it. */
            const id4 = await redisCmd(r5.port, ['XADD', key, '*', 'd', '{"n":4}']);
            want.push({ id: id4, data: { n: 4 } });

            const stoppedAt = Date.now();
            const ex = await r5.stop('SIGTERM');
            assert.equal(ex.code, 0, `redis-server exit: ${JSON.stringify(ex)}`);
            await waitUntil(async () => (await readyz(node)) === 503, { timeoutMs: 5000, what: '/readyz 503 after Redis stopped' });
            const readyzMs = Date.now() - stoppedAt;
            assert.ok(readyzMs < 5000, `readyz 503 after ${readyzMs} ms`);

            /* 20 publishes, every one refused; none may ever appear. */
            for (let i = 1; i <= 20; i++) {
                const r = await publish(node.url, ch, { refused: i });
                checkJsonError(r, 503, `publish ${i} while Redis is down`);
                assert.equal(r.json.error.code, 'engine_unavailable');
            }
            const wsPub = await ws.request({ op: 'publish', channel: ch, data: { refused: 'ws' } });
            assert.equal(wsPub.op, 'error', JSON.stringify(wsPub));
            assert.equal(wsPub.code, 'engine_unavailable');
            const pr = await pollRequest(node.url, `channel=${ch}&since=0`);
            checkJsonError(pr, 503, 'a new /poll while Redis is down');
            assert.ok(pr.headers['retry-after'], `/poll 503 carries Retry-After: ${JSON.stringify(pr.headers)}`);
            assert.equal(pr.json.error.code, 'engine_unavailable');

            const isEngine = (state) => (e) => e.type === 'engine' && JSON.parse(e.data).state === state;
            const wsEngine = (state) => ws.ops().filter((o) => o.op === 'engine' && o.state === state);
            await sse.waitFor(() => sse.events.some(isEngine('unavailable')), 5000, 'event: engine unavailable on sse');
            await ws.waitFor(() => wsEngine('unavailable').length > 0, 5000, 'op engine unavailable on ws');
            assert.equal(sse.ended, false, 'the SSE stream stays open');
            assert.equal(ws.closed, null, 'the WebSocket stays open');

            r5 = await r5.restart();
            await waitUntil(async () => (await readyz(node)) === 200, { timeoutMs: 12000, what: '/readyz 200 after Redis came back' });
            await sse.waitFor(() => sse.events.some(isEngine('available')), 5000, 'event: engine available on sse');
            await ws.waitFor(() => wsEngine('available').length > 0, 5000, 'op engine available on ws');
            assert.equal(await redisCmd(r5.port, ['XLEN', key]), 4, 'the AOF kept the 4 stored entries and nothing refused');

            want.push(...(await publishSeqAfterRecovery(node.url, ch, range(5, 8).map((n) => ({ n })))));
            const r = await ws.request({ op: 'publish', channel: ch, data: { n: 9 } });
            assert.equal(r.op, 'published', JSON.stringify(r));
            want.push({ id: r.id, data: { n: 9 } });
            await sse.waitFor(() => sseEnvelopes(sse).some((e) => e.id === r.id), 8000, 'n=9 on sse');
            await ws.waitFor(() => wsEnvelopes(ws, ch).some((e) => e.id === r.id), 8000, 'n=9 on ws');
            assertEnvelopes(sseEnvelopes(sse), ch, want, 'sse across the outage');
            assertEnvelopes(wsEnvelopes(ws, ch), ch, want, 'ws across the outage');
            /* n=4 was never announced: only the catch-up after the outage can have delivered it. */
            const sseIdx = (pred) => sse.events.findIndex(pred);
            assert.ok(sseIdx((e) => e.type === 'message' && JSON.parse(e.data).id === id4) > sseIdx(isEngine('unavailable')),
                `sse: n=4 arrives after the unavailable notice; ${sse.summary(20)}`);
            const wsIdx = (pred) => ws.messages.findIndex((m) => m.json && pred(m.json));
            assert.ok(wsIdx((o) => o.op === 'message' && o.id === id4) > wsIdx((o) => o.op === 'engine' && o.state === 'unavailable'),
                `ws: n=4 arrives after the unavailable notice; ${ws.summary()}`);
            assert.equal(sse.events.filter((e) => e.type === 'gap').length, 0, 'no gap on sse');
            assert.equal(ws.ops().filter((o) => o.op === 'gap').length, 0, 'no gap on ws');

            /* Exactly one notice each way, unavailable first. */
            const sseNotices = sse.events.filter((e) => e.type === 'engine').map((e) => JSON.parse(e.data).state);
            const wsNotices = ws.ops().filter((o) => o.op === 'engine').map((o) => o.state);
            assert.deepEqual(sseNotices, ['unavailable', 'available'], 'sse engine notices');
            assert.deepEqual(wsNotices, ['unavailable', 'available'], 'ws engine notices');
            assert.equal(sse.ended, false);
            assert.equal(ws.closed, null);

            /* Nothing refused is in history either. */
            const hist = await pollRequest(node.url, `channel=${ch}&since=0`);
            assert.equal(hist.status, 200, hist.text);
            assertEnvelopes(hist.json.messages, ch, want, 'history after the outage');
            await assertAlive(node, 'the outage');
        });
    });

    describe('5b. readiness after an outage, per thread', () => {
        /* A publish goes through the link of the thread that took the request, and each thread
         * reconnects after its own jittered backoff: /readyz must wait for all of them. */
        it('once /readyz is 200 again, every publish succeeds (4 threads, a 1.5 s outage)', {
            timeout: 30000,
        }, async (t) => {
            let r = await startRedis();
            t.after(() => stopRedis(r));
            const node = await startNode(r.url, ['--threads', '4']);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('ready');
            await publishOk(node.url, ch, { n: 0 });
            await r.stop();
            await waitUntil(async () => (await readyz(node)) === 503, { timeoutMs: 5000, what: '/readyz 503' });
            /* The outage under test: long enough for the reconnect backoff to grow past a few hundred ms. */
            await delay(1500);
            r = await r.restart();
            await waitUntil(async () => (await readyz(node)) === 200, { timeoutMs: 12000, what: '/readyz 200 after the restart' });
            const refused = [];
            for (let i = 1; i <= 40; i++) {
                const res = await publish(node.url, ch, { n: i });
                if (res.status !== 200)
                    refused.push(`#${i}: ${res.status}`);
            }
            assert.equal(refused.length, 0, `${refused.length} of 40 publishes answered 503 after /readyz said 200 ` +
                `(${refused.slice(0, 5).join(', ')}...); log:\n${tail(node, 1500)}`);
        });
    });

    describe('5c. a Redis that hangs (SIGSTOP)', () => {
        /* docs/operations.md: "Redis hangs (no answer): after 3 s the node drops its connections
         * and behaves as if Redis were down" (Limits: Redis command wait 3 s). */
        it('a publish is answered 503 within the 3 s command wait, /readyz turns 503, and both recover on SIGCONT', {
            timeout: 40000,
        }, async (t) => {
            const r = await startRedis();
            let stopped = false;
            t.after(async () => {
                if (stopped)
                    process.kill(r.pid, 'SIGCONT');
                await stopRedis(r);
            });
            const node = await startNode(r.url);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('hung');
            const want = await publishSeq(node.url, ch, [{ n: 1 }]);

            process.kill(r.pid, 'SIGSTOP');
            stopped = true;
            const t0 = Date.now();
            const hungPub = await publish(node.url, ch, { hung: 1 }, {}, { timeoutMs: 10000 });
            const pubMs = Date.now() - t0;
            checkJsonError(hungPub, 503, 'a publish while Redis hangs');
            assert.equal(hungPub.json.error.code, 'engine_unavailable');
            assert.ok(pubMs <= 3000 + 1500, `the publish was answered ${pubMs} ms after Redis stopped answering (bound: 3 s)`);
            await waitUntil(async () => (await readyz(node)) === 503, { timeoutMs: 3000 + 1500 - (Date.now() - t0), what: '/readyz 503 while Redis hangs' });
            const readyMs = Date.now() - t0;
            t.diagnostic(`hung Redis: publish 503 after ${pubMs} ms, /readyz 503 after ${readyMs} ms`);
            const again = await publish(node.url, ch, { hung: 2 });
            checkJsonError(again, 503, 'a publish once the node treats Redis as down');
            assert.equal(again.json.error.code, 'engine_unavailable');

            process.kill(r.pid, 'SIGCONT');
            stopped = false;
            await waitUntil(async () => (await readyz(node)) === 200, { timeoutMs: 12000, what: '/readyz 200 after SIGCONT' });
            want.push(...(await publishSeqAfterRecovery(node.url, ch, [{ n: 2 }])));
            const hist = await pollRequest(node.url, `channel=${ch}&since=0`);
            assert.equal(hist.status, 200, hist.text);
            t.diagnostic(`history after the hang: ${JSON.stringify(hist.json.messages.map((m) => m.data))}`);
            /* The refused publish that was already sent to Redis may have been stored when Redis
             * resumed (a timeout cannot know); the one refused while Redis counted as down never. */
            const extra = hist.json.messages.filter((m) => !want.some((w) => w.id === m.id));
            assert.ok(extra.every((m) => m.data.hung === 1), `only the timed-out publish may appear: ${JSON.stringify(extra)}`);
            await assertAlive(node, 'the hang');
        });
    });

    describe('6. Redis restarted without persistence (data lost)', () => {
        it('an old cursor resumes with a gap, then the new messages (sse Last-Event-ID, poll since, a connected ws)', { timeout: 40000 }, async (t) => {
            let r6 = await startRedis();
            const dirs = [r6.dir];
            t.after(async () => {
                await r6.stop();
                for (const d of dirs)
                    rmDir(d);
            });
            const node = await startNode(r6.url);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('lost');
            const old = await publishSeq(node.url, ch, range(1, 3).map((n) => ({ n })));
            /* A client that reads and goes away, over SSE and over poll. */
            const s1 = await openSSE(node.url, `/sse?channel=${ch}&since=0`, { t });
            await s1.waitFor(() => sseEnvelopes(s1).length >= 3, 5000, '3 messages on sse');
            const sseCursor = s1.events.filter((e) => e.type === 'message').at(-1).lastEventId;
            s1.close();
            const p1 = await pollRequest(node.url, `channel=${ch}&since=0`);
            assertEnvelopes(p1.json.messages, ch, old, 'poll before the loss');
            const pollCursor = p1.json.cursor;
            /* A WebSocket subscriber that stays connected through the loss. */
            const ws = await wsSubscribed(node.url, ch, '0', t);
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= 3, 5000, '3 messages on ws');

            await r6.stop('SIGTERM');
            await waitUntil(async () => (await readyz(node)) === 503, { timeoutMs: 5000, what: '/readyz 503' });
            /* A fresh directory too, so nothing at all can be reloaded. */
            const freshDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-redis-'));
            dirs.push(freshDir);
            r6 = await r6.restart({ dir: freshDir });
            assert.equal(await redisCmd(r6.port, ['EXISTS', `pe:{${ch}}`]), 0, 'the stream is gone');
            await waitUntil(async () => (await readyz(node)) === 200, { timeoutMs: 12000, what: '/readyz 200 after the restart' });

            let fresh;
            try {
                fresh = await publishSeqAfterRecovery(node.url, ch, [{ n: 10 }, { n: 11 }]);
            } catch (e) {
                throw new Error(`${e.message}\nserver log:\n${tail(node)}`);
            }
            for (const m of fresh)
                assert.ok(cmpId(m.id, old[2].id) > 0, `new id ${m.id} after the old ${old[2].id}`);

            /* SSE with Last-Event-ID: gap first, then exactly the new messages. */
            const s2 = await openSSE(node.url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': sseCursor } });
            await s2.waitFor(() => sseEnvelopes(s2).length >= 2, 5000, 'the new messages on sse');
            await s2.waitLive(5000);
            const kinds = s2.events.map((e) => (e.type === 'gap' ? `gap:${JSON.parse(e.data).channel}` : e.type));
            assert.deepEqual(kinds, [`gap:${ch}`, 'message', 'message'], `sse events: ${s2.summary()}`);
            assertEnvelopes(sseEnvelopes(s2), ch, fresh, 'sse after the loss');

            /* Poll with since=: the gap is reported with the new messages. */
            const col = pollCollector(node.url, ch, pollCursor, (e) => e.data && e.data.n === 11);
            await waitUntil(() => col.done, { timeoutMs: 8000, what: 'the poll loop to reach n=11' });
            if (col.error)
                throw col.error;
            assert.deepEqual(col.gaps, [ch], 'poll gaps');
            assertEnvelopes(col.envelopes, ch, fresh, 'poll after the loss');

            /* The connected subscriber: gap, then the new messages, nothing old again. */
            await ws.waitFor(() => wsEnvelopes(ws, ch).some((e) => e.id === fresh[1].id), 8000, 'n=11 on the connected ws');
            const wsKinds = ws.ops().filter((o) => o.op === 'message' || o.op === 'gap').map((o) => (o.op === 'gap' ? 'gap' : o.data.n));
            assert.deepEqual(wsKinds, [1, 2, 3, 'gap', 10, 11], `the connected ws: ${ws.summary()}`);
        });
    });

    describe('7. history retention through Redis (--history-size 5)', () => {
        it('since=0 gives the last 5; the first id gives a gap, then those 5 (poll, sse, ws)', { timeout: 20000 }, async (t) => {
            const node = await startNode(redis.url, ['--history-size', '5']);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('hist');
            const all = await publishSeq(node.url, ch, range(1, 20).map((n) => ({ n })));
            const last5 = all.slice(15);
            assert.equal(await redisCmd(redis.port, ['XLEN', `pe:{${ch}}`]), 5, 'the stream is trimmed to 5');

            const p0 = await pollRequest(node.url, `channel=${ch}&since=0`);
            assert.equal(p0.status, 200, p0.text);
            assertEnvelopes(p0.json.messages, ch, last5, 'poll since=0');
            assert.deepEqual(p0.json.gaps, [], 'since=0 never signals a gap');

            const p1 = await pollRequest(node.url, `channel=${ch}&since=${all[0].id}`);
            assert.equal(p1.status, 200, p1.text);
            assert.deepEqual(p1.json.gaps, [ch], 'poll since=<first id>: a gap');
            assertEnvelopes(p1.json.messages, ch, last5, 'poll since=<first id>');

            /* Another node (default --history-size) reads the same trimmed history. */
            const p2 = await pollRequest(n2.url, `channel=${ch}&since=${all[0].id}`);
            assert.deepEqual(p2.json.gaps, [ch], 'node 2: a gap');
            assertEnvelopes(p2.json.messages, ch, last5, 'node 2 since=<first id>');

            const s = await openSSE(node.url, `/sse?channel=${ch}&since=${all[0].id}`, { t });
            await s.waitLive(5000);
            const kinds = s.events.map((e) => (e.type === 'gap' ? `gap:${JSON.parse(e.data).channel}` : e.type));
            assert.deepEqual(kinds, [`gap:${ch}`, 'message', 'message', 'message', 'message', 'message'], s.summary());
            assertEnvelopes(sseEnvelopes(s), ch, last5, 'sse since=<first id>');
            const s0 = await openSSE(node.url, `/sse?channel=${ch}&since=0`, { t });
            await s0.waitLive(5000);
            assert.equal(s0.events.filter((e) => e.type === 'gap').length, 0, 'sse since=0: no gap');
            assertEnvelopes(sseEnvelopes(s0), ch, last5, 'sse since=0');

            const ws = await openWs(node.url, '/ws', { t });
            await ws.request({ op: 'subscribe', channel: ch, since: all[0].id });
            await ws.waitFor(() => wsEnvelopes(ws, ch).length >= 5, 5000, '5 messages on ws');
            const wsKinds = ws.ops().filter((o) => o.op === 'message' || o.op === 'gap').map((o) => (o.op === 'gap' ? 'gap' : o.data.n));
            assert.deepEqual(wsKinds, ['gap', 16, 17, 18, 19, 20], ws.summary());
        });
    });

    describe('7b. the gap boundary is the newest removed entry, whatever removed it', () => {
        /* Resuming from the newest removed ID is no gap (nothing after it is lost); from the one
         * before it is. pushedge_publish removes one entry by XDEL, several (a large count cut, or
         * the age limit) by XTRIM MINID and XDEL of the newest, and must record each boundary
         * exactly. */
        async function assertBoundary(url, ch, removed, before, kept, what) {
            const at = await pollRequest(url, `channel=${ch}&since=${removed.id}`);
            assert.equal(at.status, 200, at.text);
            assert.deepEqual(at.json.gaps, [], `${what}: since=<newest removed> is no gap`);
            assertEnvelopes(at.json.messages, ch, kept, `${what}: since=<newest removed>`);
            const below = await pollRequest(url, `channel=${ch}&since=${before.id}`);
            assert.deepEqual(below.json.gaps, [ch], `${what}: since=<the one before> is a gap`);
            assertEnvelopes(below.json.messages, ch, kept, `${what}: since=<the one before>`);
            const st = await redisCmd(redis.port, ['XINFO', 'STREAM', `pe:{${ch}}`]);
            assert.equal(st[st.indexOf('length') + 1], kept.length, `${what}: the stream holds exactly what is kept`);
            assert.equal(st[st.indexOf('max-deleted-entry-id') + 1], removed.id, `${what}: max-deleted-entry-id`);
        }

        it('by count: one at a time (XDEL), several at once (a node with a smaller --history-size)', { timeout: 20000 }, async (t) => {
            const small = await startNode(redis.url, ['--history-size', '3']);
            t.after(() => stopNode(small));
            const ch = uniqueChannel('cut');
            const all = await publishSeq(n1.url, ch, range(1, 7).map((n) => ({ n })));
            /* Node 1 (1,000) keeps all 7; the small node's publish cuts 5 at once. */
            all.push(...(await publishSeq(small.url, ch, [{ n: 8 }])));
            await assertBoundary(small.url, ch, all[4], all[3], all.slice(5), 'a cut of 5 (XTRIM MINID, XDEL)');
            all.push(...(await publishSeq(small.url, ch, [{ n: 9 }, { n: 10 }])));
            await assertBoundary(small.url, ch, all[6], all[5], all.slice(7), 'one per publish (XDEL)');
        });

        it('by age (--history-ttl 1)', { timeout: 20000 }, async (t) => {
            const node = await startNode(redis.url, ['--history-ttl', '1']);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('age');
            const all = await publishSeq(node.url, ch, range(1, 3).map((n) => ({ n })));
            await delay(1100);
            all.push(...(await publishSeq(node.url, ch, [{ n: 4 }])));
            await assertBoundary(node.url, ch, all[2], all[1], all.slice(3), 'aged out (XTRIM MINID, XDEL)');
        });
    });

    describe('7c. pushedge_publish against a model of what it must keep', () => {
        /* Random counts, ages and keys, called as a backend would (FCALL, the library a node
         * loaded): after each call the stream holds exactly what the model keeps (the newest
         * `count`, none older than the age limit), and max-deleted-entry-id is the newest ID ever
         * removed. */
        it('400 random publishes on 4 channels', { timeout: 60000 }, async () => {
            const ms = (id) => Number(id.split('-')[0]);
            const cmp = (a, b) => cmpId(a, b);
            let seed = 17;
            const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
            const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
            for (let c = 0; c < 4; c++) {
                const key = `pe:{${uniqueChannel('model')}}`;
                let model = [], published = [];
                for (let step = 0; step < 100; step++) {
                    const count = rnd() < 0.15 ? pick([1, 2, 3, 40, 1000]) : (c % 2 ? 5 : 20);
                    const ttl = pick([3, 10, 30, 100000]);
                    if (rnd() < 0.3)
                        await delay(Math.floor(rnd() * 20));
                    let id;
                    if (rnd() < 0.2) {
                        const [got, replayed] = await redisCmd(redis.port, ['FCALL', 'pushedge_publish', '2', key, `${key}:idem:${Math.floor(rnd() * 5)}`, '1', count, ttl, 100]);
                        if (replayed === 1)
                            continue;
                        id = got;
                    } else {
                        id = await redisCmd(redis.port, ['FCALL', 'pushedge_publish', '1', key, '1', count, ttl]);
                    }
                    published.push(id);
                    const drop = model.length + 1 - count;
                    const aged = model.length > 0 && ms(id) - ttl > 0;
                    model = [...model, id].slice(Math.max(0, drop));
                    if (aged)
                        model = model.filter((x) => ms(x) >= ms(id) - ttl);
                    const kept = (await redisCmd(redis.port, ['XRANGE', key, '-', '+'])).map((e) => e[0]);
                    assert.deepEqual(kept, model, `channel ${c} step ${step} (count ${count}, age ${ttl} ms)`);
                    const removed = published.filter((x) => !model.includes(x)).sort(cmp);
                    if (removed.length > 0) {
                        const st = await redisCmd(redis.port, ['XINFO', 'STREAM', key]);
                        assert.equal(st[st.indexOf('max-deleted-entry-id') + 1], removed[removed.length - 1], `channel ${c} step ${step}: the boundary`);
                    }
                }
            }
        });
    });

    describe('7d. the index (pe:{NAME}:ids) follows the stream', () => {
        /* pushedge_publish learns what to remove from the list of the stream's IDs; these are the
         * cases where the list is not the stream's until the function brings it back. */
        const publish = (key, count) => redisCmd(redis.port, ['FCALL', 'pushedge_publish', '1', key, '1', count, 86400000]);
        const ids = async (key) => (await redisCmd(redis.port, ['XRANGE', key, '-', '+'])).map((e) => e[0]);
        const boundary = async (key) => {
            const st = await redisCmd(redis.port, ['XINFO', 'STREAM', key]);
            return st[st.indexOf('max-deleted-entry-id') + 1];
        };
        it('a stream written without the index (an earlier version, plain XADD) is indexed at the next publish', { timeout: 10000 }, async () => {
            const key = `pe:{${uniqueChannel('idx-old')}}`;
            const old = [];
            for (let i = 0; i < 8; i++)
                old.push(await redisCmd(redis.port, ['XADD', key, '*', 'd', String(i)]));
            const id = await publish(key, 5);
            assert.deepEqual(await ids(key), [...old.slice(4), id]);
            assert.equal(await boundary(key), old[3]);
            assert.deepEqual(await redisCmd(redis.port, ['LRANGE', `${key}:ids`, 0, -1]), [...old.slice(4), id]);
            const next = await publish(key, 5);
            assert.deepEqual(await ids(key), [...old.slice(5), id, next]);
            assert.equal(await boundary(key), old[4]);
        });
        it('entries appended by plain XADD between publishes count towards --history-size', { timeout: 10000 }, async () => {
            const key = `pe:{${uniqueChannel('idx-mixed')}}`;
            const all = [await publish(key, 3), await publish(key, 3)];
            all.push(await redisCmd(redis.port, ['XADD', key, '*', 'd', '"plain"']));
            all.push(await redisCmd(redis.port, ['XADD', key, '*', 'd', '"plain"']));
            all.push(await publish(key, 3));
            assert.deepEqual(await ids(key), all.slice(2));
            assert.equal(await boundary(key), all[1]);
            all.push(await publish(key, 3));
            assert.deepEqual(await ids(key), all.slice(3));
            assert.equal(await boundary(key), all[2]);
        });
        it('more plain XADD entries than the count between two publishes: the index is rebuilt from the newest', { timeout: 10000 }, async () => {
            const key = `pe:{${uniqueChannel('idx-many')}}`;
            await publish(key, 3);
            await publish(key, 3);
            const x = [];
            for (let i = 0; i < 6; i++)
                x.push(await redisCmd(redis.port, ['XADD', key, '*', 'd', String(i)]));
            const q = await publish(key, 3);
            assert.deepEqual(await ids(key), [x[4], x[5], q]);
            assert.equal(await boundary(key), x[3]);
            assert.deepEqual(await redisCmd(redis.port, ['LRANGE', `${key}:ids`, 0, -1]), [x[4], x[5], q]);
        });
        it('an index left stale by an earlier version publishing in between is rebuilt, the boundary kept', { timeout: 10000 }, async () => {
            const key = `pe:{${uniqueChannel('idx-stale')}}`;
            const p = [];
            for (let i = 0; i < 4; i++)
                p.push(await publish(key, 3));
            /* What the earlier function did at steady state: XADD, then XDEL of the head. */
            const o = [];
            for (let i = 0; i < 2; i++) {
                o.push(await redisCmd(redis.port, ['XADD', key, '*', 'd', String(i)]));
                await redisCmd(redis.port, ['XDEL', key, p[1 + i]]);
            }
            const q = await publish(key, 3);
            assert.deepEqual(await ids(key), [...o, q]);
            assert.equal(await boundary(key), p[3]);
            assert.deepEqual(await redisCmd(redis.port, ['LRANGE', `${key}:ids`, 0, -1]), [...o, q]);
        });
        it('a stream deleted under its index starts again with the epoch mark (a cursor into it reads as a gap)', { timeout: 10000 }, async () => {
            const key = `pe:{${uniqueChannel('idx-lost')}}`;
            for (let i = 0; i < 4; i++)
                await publish(key, 3);
            await redisCmd(redis.port, ['DEL', key]);
            const id = await publish(key, 3);
            assert.deepEqual(await ids(key), [id]);
            assert.match(await boundary(key), /-18446744073709551615$/);
            assert.deepEqual(await redisCmd(redis.port, ['LRANGE', `${key}:ids`, 0, -1]), [id]);
        });
    });

    describe('8. a password-protected Redis', () => {
        it('the right password works; a wrong one gives /readyz 503 and publish 503, and the process stays up', { timeout: 30000 }, async (t) => {
            const r8 = await startRedis({ extra: ['--requirepass', 'secret'] });
            t.after(() => stopRedis(r8));
            const good = await startNode(`redis://:secret@127.0.0.1:${r8.port}`);
            t.after(() => stopNode(good));
            const bad = await startNode(`redis://:wrong@127.0.0.1:${r8.port}`, [], { ready: false });
            t.after(() => stopNode(bad));

            await waitUntil(async () => (await readyz(good)) === 200, { timeoutMs: 5000, what: 'the good node ready' });
            const ch = uniqueChannel('auth');
            const sse = await sseLive(good.url, ch, undefined, t);
            const id = await publishOk(good.url, ch, { n: 1 });
            await sse.waitFor(() => sseEnvelopes(sse).length >= 1, 5000, 'the message on sse');
            assertEnvelopes(sseEnvelopes(sse), ch, [{ id, data: { n: 1 } }], 'sse on the authenticated node');
            assert.equal(await redisCmd(r8.port, ['XLEN', `pe:{${ch}}`], { password: 'secret' }), 1);

            /* The wrong password: refused, retried, never ready, still serving. */
            await waitUntil(() => /refused|auth|WRONGPASS|invalid/i.test(bad.output().stderr), { timeoutMs: 5000, what: 'the bad node to log the refusal' });
            assert.equal(await readyz(bad), 503);
            const r = await publish(bad.url, ch, { n: 2 });
            checkJsonError(r, 503, 'publish with the wrong Redis password');
            assert.equal(r.json.error.code, 'engine_unavailable');
            const p = await pollRequest(bad.url, `channel=${ch}&since=0`);
            checkJsonError(p, 503, 'poll with the wrong Redis password');
            /* It keeps trying (at least one more attempt logged) and keeps serving. */
            const lines = () => bad.output().stderr.split('\n').filter((l) => /redis/i.test(l) && /refused|auth|WRONGPASS|invalid|retry/i.test(l)).length;
            const n0 = lines();
            await waitUntil(() => lines() > n0, { timeoutMs: 8000, what: `another connection attempt logged (log:\n${tail(bad, 1500)})` });
            await assertAlive(bad, 'the refused connections');
            assert.equal(await readyz(bad), 503);
            assert.equal(await redisCmd(r8.port, ['XLEN', `pe:{${ch}}`], { password: 'secret' }), 1, 'nothing stored by the bad node');
        });
    });

    describe('9. a database number in the URL', () => {
        it('redis://127.0.0.1:PORT/3 keeps the channel in database 3', { timeout: 15000 }, async (t) => {
            const node = await startNode(`${redis.url}/3`);
            t.after(() => stopNode(node));
            const ch = uniqueChannel('db3');
            const sse = await sseLive(node.url, ch, undefined, t);
            const id = await publishOk(node.url, ch, { db: 3 });
            await sse.waitFor(() => sseEnvelopes(sse).length >= 1, 5000, 'the message on sse');
            assertEnvelopes(sseEnvelopes(sse), ch, [{ id, data: { db: 3 } }], 'sse on the db 3 node');
            assert.equal(await redisCmd(redis.port, ['EXISTS', `pe:{${ch}}`], { db: 3 }), 1, 'the stream key is in db 3');
            assert.equal(await redisCmd(redis.port, ['EXISTS', `pe:{${ch}}`], { db: 0 }), 0, 'and not in db 0');
            /* A node on db 0 does not see its history. */
            const s0 = await sseLive(n1.url, ch, '0', t);
            assert.deepEqual(s0.events, [], 'db 0 has no history for the channel');
        });
    });

    describe('10. publishes racing a new subscription\'s first read', () => {
        /* A proxy that holds every Redis -> pushedge byte for `ms`: the node's SUBSCRIBE
         * confirmation and history read come back late, so publishes straight into Redis land
         * between the SSE response head and the read, deterministically. */
        function slowRepliesProxy(upPort, ms) {
            const socks = new Set();
            const server = net.createServer((c) => {
                const u = net.connect({ host: '127.0.0.1', port: upPort });
                socks.add(c).add(u);
                const end = () => {
                    c.destroy();
                    u.destroy();
                };
                c.on('data', (d) => u.write(d));
                u.on('data', (d) => setTimeout(() => c.destroyed || c.write(d), ms));
                for (const s of [c, u]) {
                    s.on('close', end);
                    s.on('error', end);
                }
            });
            return new Promise((resolve) =>
                server.listen(0, '127.0.0.1', () =>
                    resolve({ port: server.address().port, close: () => (socks.forEach((s) => s.destroy()), server.close()) })),
            );
        }

        it('since=0 starts at the oldest retained when the read runs (no gap); a cursor trimmed meanwhile gets a gap', { timeout: 20000 }, async (t) => {
            const proxy = await slowRepliesProxy(redis.port, 300);
            t.after(() => proxy.close());
            const node = await startNode(`redis://127.0.0.1:${proxy.port}`, [], {});
            t.after(() => stopNode(node));
            const ch = uniqueChannel('race');
            /* Retention 5, passed with each publish as pushedge does. */
            const pub = (i) => redisCmd(redis.port, ['FCALL', 'pushedge_publish', '1', `pe:{${ch}}`, JSON.stringify({ i }), '5', '86400000']);
            const ids = [];
            for (let i = 0; i < 5; i++)
                ids.push(await pub(i));
            const zero = await openSSE(node.url, `/sse?channel=${ch}&since=0`, { t });
            const resumed = await openSSE(node.url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': ids[0] } });
            /* Both heads are here, neither read has answered (300 ms): trim the first three. */
            for (let i = 5; i < 8; i++)
                ids.push(await pub(i));
            for (const s of [zero, resumed])
                await s.waitFor(() => sseEnvelopes(s).some((e) => e.id === ids[7]) || null, 8000, 'the last message');
            const got = (s) => s.events.map((e) => (e.type === 'gap' ? 'gap' : ids.indexOf(JSON.parse(e.data).id)));
            assert.deepEqual(got(zero), [3, 4, 5, 6, 7], 'since=0: the oldest retained when the read ran, no gap');
            assert.deepEqual(got(resumed), ['gap', 3, 4, 5, 6, 7], 'a cursor is a fixed position: trimmed past it, a gap');
        });
    });
});

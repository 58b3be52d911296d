/*
 * Reconnect storms on the Redis engine (issue 17 item 3; pubsub/recent.c, the read routing of
 * pubsub/engine_redis.c; docs/architecture.md "Catch-up cache"), against a redis-server this
 * file starts itself.
 *
 * Covered:
 *  1. a storm: 300 SSE subscribers of two channels connect at once with cursors 1-50 messages
 *     behind while both channels keep publishing; every one receives exactly the messages
 *     after its cursor, once, in order, and goes live; the node's history reads
 *     (pushedge_catchup_reads_total{source="engine"}) and Redis's FCALL_RO calls (INFO
 *     commandstats) stay a handful, the rest answered from the cache or shared; the same storm
 *     on a node with --catchup-cache 0 (the previous behaviour) costs a read per subscriber and
 *     is loss- and duplicate-free too;
 *  2. the cache never hides a gap nor invents one: with --history-size 5, every cursor from
 *     below the gap boundary to past the newest (strict, so a gap), and a bare time shared by
 *     two channels, gets byte-for-byte the same SSE answer from a node whose cache holds the
 *     channel (one loop, a subscriber keeping it watched) as from a node without a cache; and
 *     the cache answered some of them;
 *  3. the same comparison after --history-ttl (2 s) has aged every entry: the cache must give
 *     the engine's gaps, not its old messages;
 *  4. long-poll and WebSocket catch-ups through the cache: the same messages as the SSE ones.
 *
 * Not covered: Redis failover under a storm (sentinel.test.mjs covers resync after failover;
 * the cache starts over at every link down, recent.c), and 10,000 clients
 * (tests/load/storm.mjs, docs/benchmarks.md).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    delay,
    getMetrics,
    metricValue,
    openSSE,
    pollRequest,
    publishOk,
    skipFileUnless,
    startServer,
    uniqueChannel,
} from './lib.mjs';
import { openWs } from './wslib.mjs';
import { HAVE_REDIS, commandCalls, startRedis, stopRedis } from './redislib.mjs';

skipFileUnless(!HAVE_REDIS && 'redis-server is not on PATH');

/*
 * A describe's servers: a private Redis, a node with the catch-up cache and one without
 * (--catchup-cache 0), both with args and waited until ready; the returned object's fields are
 * set in before() and stopped in after().
 */
function cachedAndPlain(args = []) {
    const ref = { redis: null, cached: null, plain: null };
    before(async () => {
        ref.redis = await startRedis();
        ref.cached = await startServer(['--redis', ref.redis.url, ...args], {}, { ready: true });
        ref.plain = await startServer(['--redis', ref.redis.url, ...args, '--catchup-cache', '0'], {}, { ready: true });
    });
    after(async () => {
        await ref.cached?.stop();
        await ref.plain?.stop();
        await stopRedis(ref.redis);
    });
    return ref;
}

async function reads(srv) {
    const m = await getMetrics(srv.url);
    const v = (source) => metricValue(m, 'pushedge_catchup_reads_total', { source }) ?? 0;
    return { engine: v('engine'), cache: v('cache'), shared: v('shared') };
}

/* The messages' IDs an SSE client received, and its gap events. */
function received(c) {
    return {
        ids: c.events.filter((e) => e.type === 'message').map((e) => JSON.parse(e.data).id),
        gaps: c.events.filter((e) => e.type === 'gap').length,
    };
}

/* One storm against srv: returns what it cost. */
async function storm(srv, redis, { clients = 300, behind = 50 } = {}) {
    const chans = [uniqueChannel('storm'), uniqueChannel('storm')];
    const ids = {};
    for (const ch of chans) {
        ids[ch] = [];
        for (let i = 0; i < 60; i++)
            ids[ch].push(await publishOk(srv.url, ch, { n: i }));
    }
    const r0 = await reads(srv);
    const f0 = await commandCalls(redis.port, 'fcall_ro');
    /* Publishing goes on through the storm. */
    let publishing = true;
    const publisher = (async () => {
        for (let i = 0; i < 40 && publishing; i++)
            for (const ch of chans)
                ids[ch].push(await publishOk(srv.url, ch, { n: 60 + i }));
    })();
    const t0 = Date.now();
    const subs = await Promise.all(
        Array.from({ length: clients }, (_, i) => {
            const ch = chans[i % 2];
            const k = 1 + (i % behind); /* 1..50 messages behind the newest at the storm's start */
            const cursor = ids[ch][59 - k + 1 - 1];
            return openSSE(srv.url, `/sse?channel=${ch}&since=${cursor}`, { timeoutMs: 20000 }).then((c) => ({ c, ch, cursor }));
        }),
    );
    await publisher;
    publishing = false;
    try {
        for (const s of subs) {
            const last = ids[s.ch][ids[s.ch].length - 1];
            await s.c.waitFor(() => (received(s.c).ids.includes(last) ? true : null), 20000, `message ${last}`);
        }
        const ms = Date.now() - t0;
        for (const s of subs) {
            const want = ids[s.ch].slice(ids[s.ch].indexOf(s.cursor) + 1);
            const got = received(s.c);
            assert.equal(got.gaps, 0, 'no gap');
            assert.deepEqual(got.ids, want, `every message after ${s.cursor}, once, in order`);
        }
        const r1 = await reads(srv);
        return {
            ms,
            engine: r1.engine - r0.engine,
            cache: r1.cache - r0.cache,
            shared: r1.shared - r0.shared,
            fcall: (await commandCalls(redis.port, 'fcall_ro')) - f0,
        };
    } finally {
        for (const s of subs)
            s.c.close();
    }
}

describe('reconnect storm on Redis', () => {
    const ref = cachedAndPlain();

    it('300 subscribers 1-50 behind: all live, nothing lost or repeated, a handful of Redis reads', async () => {
        const c = await storm(ref.cached, ref.redis);
        console.log(`# with the cache: ${JSON.stringify(c)}`);
        const p = await storm(ref.plain, ref.redis);
        console.log(`# --catchup-cache 0: ${JSON.stringify(p)}`);
        assert.ok(p.engine >= 300, `without the cache each catch-up is an engine read (${p.engine})`);
        assert.equal(p.cache + p.shared, 0, 'and nothing else');
        /* Two loops x two channels, each a leader read or two before its cache is anchored, and
         * the reads of entries whose live message had not arrived yet. */
        assert.ok(c.engine <= 30, `with the cache a handful of engine reads (${c.engine})`);
        assert.ok(c.fcall <= c.engine + 4, `Redis saw as few FCALL_RO (${c.fcall})`);
        assert.ok(c.cache + c.shared >= 300 - c.engine, `the others from the cache or shared (${c.cache} + ${c.shared})`);
    });
});

/* The SSE answer to a cursor, up to live: the events' type, id and data. */
async function answer(srv, query) {
    const c = await openSSE(srv.url, `/sse?${query}`, { timeoutMs: 5000 });
    try {
        await c.waitLive(5000);
        return c.events.map((e) => `${e.type} ${e.lastEventId} ${e.data}`);
    } finally {
        c.close();
    }
}

describe('gaps through the cache path', () => {
    let keeper, keeperCh;
    after(() => keeper?.close());
    const ref = cachedAndPlain(['--history-size', '5', '--threads', '1']);

    async function compare(ch, cursors, extra = '') {
        const r0 = await reads(ref.cached);
        for (const cursor of cursors) {
            const q = `channel=${ch}${cursor === null ? '' : `&since=${cursor}`}${extra}`;
            const want = await answer(ref.plain, q);
            const got = await answer(ref.cached, q);
            assert.deepEqual(got, want, `the same answer to ${q}`);
        }
        const r1 = await reads(ref.cached);
        return { cache: r1.cache - r0.cache, engine: r1.engine - r0.engine };
    }

    it('every cursor from below the boundary to past the newest', async () => {
        keeperCh = uniqueChannel('gap');
        keeper = await openSSE(ref.cached.url, `/sse?channel=${keeperCh}`, { timeoutMs: 5000 });
        await keeper.waitLive(5000);
        const ids = [];
        for (let i = 0; i < 10; i++)
            ids.push(await publishOk(ref.cached.url, keeperCh, { n: i }));
        await keeper.waitFor(() => (received(keeper).ids.length === 10 ? true : null), 5000, '10 live messages');
        const [ms, seq] = ids[9].split('-').map(Number);
        const future = `${ms}-${seq + 5}`;
        /* 4 and 5 first (the engine's answers anchor the cache), then the cache's range, then
         * past the newest, then the oldest and a fresh subscriber. */
        const cursors = [ids[3], ids[4], ids[5], ids[6], ids[8], ids[9], future, '0', null, ids[0]];
        const r = await compare(keeperCh, cursors);
        assert.ok(r.cache >= 4, `the cache answered the cursors inside it (${JSON.stringify(r)})`);
        /* A bare ID with two channels is a time, not a position (non-strict). */
        const other = uniqueChannel('gap');
        await publishOk(ref.cached.url, other, { n: 0 });
        for (const cursor of [ids[2], ids[7], future])
            await compare(keeperCh, [cursor], `&channel=${other}`);
    });

    it('catch-ups over long-poll and WebSocket from the cache', async () => {
        const ids = received(keeper).ids;
        const r0 = await reads(ref.cached);
        const poll = await pollRequest(ref.cached.url, `channel=${keeperCh}&since=${ids[6]}`);
        assert.equal(poll.status, 200);
        assert.deepEqual(poll.json.messages.map((m) => m.id), ids.slice(7));
        assert.deepEqual(poll.json.gaps ?? [], []);
        const ws = await openWs(ref.cached.url, `/ws?channel=${keeperCh}&since=${ids[7]}`);
        try {
            const m1 = await ws.next((o) => o.op === 'message', 5000, 'a message op');
            const m2 = await ws.next((o) => o.op === 'message', 5000, 'a message op');
            assert.deepEqual([m1.id, m2.id], ids.slice(8));
        } finally {
            ws.ws.terminate();
        }
        const r1 = await reads(ref.cached);
        assert.ok(r1.cache - r0.cache >= 2, `both from the cache (${r1.cache - r0.cache})`);
    });
});

describe('gaps through the cache path after the age limit', () => {
    let keeper;
    after(() => keeper?.close());
    const ref = cachedAndPlain(['--history-size', '50', '--history-ttl', '2', '--threads', '1']);

    it('aged entries are gaps, from the cache as from Redis', async () => {
        const ch = uniqueChannel('ttl');
        keeper = await openSSE(ref.cached.url, `/sse?channel=${ch}`, { timeoutMs: 5000 });
        await keeper.waitLive(5000);
        const ids = [];
        for (let i = 0; i < 5; i++)
            ids.push(await publishOk(ref.cached.url, ch, { n: i }));
        await keeper.waitFor(() => (received(keeper).ids.length === 5 ? true : null), 5000, '5 live messages');
        /* Anchor the cache, and check it answers while the entries are young. */
        const young = await answer(ref.cached, `channel=${ch}&since=${ids[0]}`);
        assert.equal(young.length, 4);
        const r0 = await reads(ref.cached);
        assert.equal((await answer(ref.cached, `channel=${ch}&since=${ids[2]}`)).length, 2);
        assert.equal((await reads(ref.cached)).cache - r0.cache, 1, 'answered from the cache');
        await delay(2300); /* the input under test: every entry past --history-ttl 2 */
        for (const cursor of [ids[0], ids[2], ids[3], ids[4]]) {
            const q = `channel=${ch}&since=${cursor}`;
            assert.deepEqual(await answer(ref.cached, q), await answer(ref.plain, q), `the same answer to ${q}`);
        }
        const gap = await answer(ref.cached, `channel=${ch}&since=${ids[2]}`);
        assert.equal(gap.length, 1, 'a gap and nothing else');
        assert.match(gap[0], /^gap /);
    });
});

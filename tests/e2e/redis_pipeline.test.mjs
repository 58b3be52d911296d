/*
 * redis_pipeline.test.mjs: the Redis engine's publish pipeline (issue 17; docs/architecture.md
 * "Publishing through Redis"). A node gathers the publishes of one loop iteration per channel
 * and sends each channel's as one pushedge_publish_batch call (announced to the subscribing
 * nodes a few KiB per PUBLISH), many calls in flight on one connection. Against a redis-server this file starts (appendonly, fsync always, so that a
 * restart keeps every acknowledged message):
 *  1. a flood of concurrent publishes (HTTP/2 sessions with many streams each, HTTP/1.1
 *     keep-alive connections, keyed ones with repeated keys among them) on a one-thread node:
 *     every request is answered 200 with its own ID (the stream's entry under that ID holds
 *     that request's message), the IDs of each HTTP/2 session follow its send order per
 *     channel, each channel's stream holds each message once and in ID order, and a repeated
 *     key answers the first one's ID;
 *  2. the same flood with Redis stopped and started again in the middle: every request is
 *     answered (none hangs), 200 or a JSON 503; every 200 is stored under its ID with its
 *     message; the 200s of each session are in send order; the node serves again afterwards;
 *  3. a library without pushedge_publish_batch in Redis (what an older node loads when it
 *     connects: with or without pushedge_publish_many): the batch is refused before it runs,
 *     the node loads its library again and answers the batch's publishes 503 unavailable
 *     (resending them singly would store them behind later publishes already in the
 *     pipeline); every 200 stored once, in send order, every 503 stored nothing;
 *  4. batch announcements across nodes: an /api/batch on node A, with a key repeated inside it,
 *     reaches the SSE subscribers of node B (and A) once each, in order, with the IDs A
 *     answered, through one PUBLISH; with --history-size 5 the batch trims inside itself: a
 *     cursor below the boundary gets a gap and the retained five, the boundary itself and a
 *     cursor inside the batch none (answered by Redis and by the catch-up cache);
 *     4b: a batch of 12 KiB is announced a few KiB per PUBLISH (three), delivered the same,
 *     with keyspace events off and on;
 *  5. --redis-batch-announce 0: batches go as pushedge_publish_many, one PUBLISH per message
 *     (the format older nodes read), delivered the same;
 *  6. with keyspace events on (notify-keyspace-events Kt: the plain-XADD path counts every
 *     XADD's event against the announced entries), batches, a plain XADD between them and
 *     single publishes reach a subscriber of another node once each, in stream order; 6b: a
 *     plain XADD followed by an entry announced twice in one call (the counts of events and
 *     announcements even out while the first entry waits for its fetch): both once, in order;
 *     6c: an entry announced again after it was posted, then a plain XADD: the XADD delivered;
 *     6d: an announcement whose event the node missed, then a plain XADD in the same read: the
 *     XADD delivered;
 *     6e: a plain XADD, then a presence event in the same read (the event left to the fetch):
 *     the event delivered as a join to presence subscribers, not as a message to all;
 *     6f: plain XADDs trimmed before the node's fetch reads them: the subscriber is told of the
 *     gap, then gets what is retained;
 *  7. direct calls with fewer key records than keyed messages, or a count, age or window that
 *     is not a whole number from 1 to 10^15, are refused before they store or announce anything
 *     (the first message already past one announcement's size); "1e3" is taken as 1000.
 * Not covered here: a node of an older version receiving a batch announcement (it drops it:
 * docs/operations.md, rolling upgrades); the parser itself is in tests/unit/test_redis_reply.c
 * and tests/fuzz/fuzz_redis_reply.c.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import {
    checkJsonError,
    cmpId,
    delay,
    h2connect,
    httpRequest,
    openSSE,
    publish,
    skipFileUnless,
    startServer,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { HAVE_REDIS, commandCalls, redisCmd, startRedis, stopRedis } from './redislib.mjs';

skipFileUnless(!HAVE_REDIS && 'redis-server is not on PATH');

async function readyz(srv) {
    return (await httpRequest(srv.url, '/readyz', { timeoutMs: 3000 })).status;
}

/** Every entry of the channel's stream: [{id, data}] in stream order. */
async function streamEntries(port, ch) {
    const r = await redisCmd(port, ['XRANGE', `pe:{${ch}}`, '-', '+'], { timeoutMs: 10000 });
    return r.map(([id, fields]) => {
        const i = fields.indexOf('d');
        return { id, data: JSON.parse(fields[i + 1]) };
    });
}

/*
 * One publisher: an HTTP/2 session (or, h1, one keep-alive connection at a time) sending
 * `count` messages to ch, `inFlight` at a time, in order. Records each request's outcome in
 * order of sending: {seq, status, id, code}. A request that is not answered within 10 s rejects
 * (a hang fails the test).
 */
async function publisher(base, ch, name, count, { inFlight = 32, h2 = true, keyEvery = 0 } = {}) {
    const session = h2 ? await h2connect(base) : null;
    const out = [];
    let next = 0;
    async function lane() {
        while (next < count) {
            const seq = next++;
            const headers = {};
            /* Every keyEvery-th message carries a key that the next one repeats. */
            if (keyEvery > 0 && (seq % keyEvery === 0 || seq % keyEvery === 1))
                headers['idempotency-key'] = `${name}-k${Math.floor(seq / keyEvery)}`;
            const r = await publish(base, ch, { p: name, seq }, headers, { session, timeoutMs: 10000 });
            out[seq] = { seq, status: r.status, id: r.json?.id, code: r.json?.error?.code, json: r.json, text: r.text, keyed: headers['idempotency-key'] };
        }
    }
    try {
        await Promise.all(Array.from({ length: inFlight }, lane));
    } finally {
        if (session)
            session.close();
    }
    return out;
}

/* Loads our library without the functions named in drop, as an older node's would be. */
async function loadOlderLibrary(port, drop) {
    const lib = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../pubsub/redis_lib.lua'), 'utf8');
    const older = lib.split('\n').filter((l) => !drop.some((f) => l.includes(`register_function('${f}'`))).join('\n');
    assert.equal(older.split('\n').length, lib.split('\n').length - drop.length, `the library registers ${drop.join(' and ')}`);
    await redisCmd(port, ['FUNCTION', 'LOAD', 'REPLACE', older]);
}

/* Checks that every 200 is stored under its ID with its own message, and that a publisher's
 * 200s (on one HTTP/2 session, sent in order) carry increasing IDs. */
function checkAnswers(results, byId, what) {
    for (const { name, out, h2 } of results) {
        let prev = null;
        for (const r of out) {
            if (r.status !== 200)
                continue;
            const data = byId.get(r.id);
            assert.ok(data, `${what}: ${name} #${r.seq} answered ${r.id}, which is not in the stream`);
            if (r.keyed && r.seq % 2 === 1) {
                /* The repeat of a key: the first one's ID (its message, seq - 1, or this one's
                 * when the first was refused). */
                assert.ok(data.p === name && (data.seq === r.seq || data.seq === r.seq - 1),
                    `${what}: ${name} #${r.seq} (a repeated key) answered ${r.id}, which holds ${JSON.stringify(data)}`);
                continue;
            }
            assert.deepEqual(data, { p: name, seq: r.seq }, `${what}: ${name} #${r.seq} answered ${r.id}, which holds another message`);
            if (h2 && prev !== null)
                assert.ok(cmpId(r.id, prev.id) > 0, `${what}: ${name} #${r.seq} got ${r.id}, not after #${prev.seq}'s ${prev.id} (sent before it on the same session)`);
            prev = r;
        }
    }
}

describe('the Redis publish pipeline', () => {
    it('1. a flood of concurrent publishes: each answered with its own ID, in order per channel and session, stored once', {
        timeout: 90000,
    }, async (t) => {
        const r = await startRedis({ aof: true });
        t.after(() => stopRedis(r));
        const node = await startServer(['--redis', r.url, '--threads', '1', '--history-size', '100000'], {}, { ready: true });
        t.after(() => node.stop());
        const chans = [uniqueChannel('pipe-a'), uniqueChannel('pipe-b'), uniqueChannel('pipe-c')];
        const plan = [];
        for (const [i, ch] of chans.entries()) {
            plan.push({ name: `h2-${i}-x`, ch, h2: true, count: 400, keyEvery: 0 });
            plan.push({ name: `h2-${i}-y`, ch, h2: true, count: 400, keyEvery: 10 });
            plan.push({ name: `h1-${i}`, ch, h2: false, count: 150, inFlight: 8, keyEvery: 0 });
        }
        const t0 = Date.now();
        const results = await Promise.all(plan.map(async (p) => ({
            ...p,
            out: await publisher(node.url, p.ch, p.name, p.count, { h2: p.h2, inFlight: p.inFlight ?? 32, keyEvery: p.keyEvery }),
        })));
        const total = results.reduce((n, p) => n + p.out.length, 0);
        t.diagnostic(`${total} publishes in ${Date.now() - t0} ms`);
        for (const p of results) {
            const bad = p.out.filter((o) => o.status !== 200);
            assert.equal(bad.length, 0, `${p.name}: ${bad.length} publishes not 200: ${bad.slice(0, 3).map((o) => `#${o.seq} ${o.status} ${o.text}`).join('; ')}`);
        }
        for (const ch of chans) {
            const entries = await streamEntries(r.port, ch);
            for (let i = 1; i < entries.length; i++)
                assert.ok(cmpId(entries[i].id, entries[i - 1].id) > 0, `${ch}: the stream's IDs are not increasing at ${i}`);
            const byId = new Map(entries.map((e) => [e.id, e.data]));
            const mine = results.filter((p) => p.ch === ch);
            /* Each message once: the keyed repeats store nothing. */
            const expect = mine.reduce((n, p) => n + p.out.filter((o) => !(o.keyed && o.seq % 2 === 1)).length, 0);
            assert.equal(entries.length, expect, `${ch}: ${entries.length} entries for ${expect} distinct messages`);
            const seen = new Set(entries.map((e) => `${e.data.p}/${e.data.seq}`));
            assert.equal(seen.size, entries.length, `${ch}: a message is stored twice`);
            checkAnswers(mine, byId, ch);
            /* A repeated key answers exactly the first one's ID. */
            for (const p of mine) {
                for (const o of p.out) {
                    if (o.keyed && o.seq % 2 === 1)
                        assert.equal(o.id, p.out[o.seq - 1].id, `${p.name} #${o.seq}: a repeated key answered ${o.id}, the first ${p.out[o.seq - 1].id}`);
                }
            }
        }
        const fcalls = await commandCalls(r.port, 'fcall');
        t.diagnostic(`FCALLs for ${total} publishes: ${fcalls} (batched per channel and loop iteration)`);
        assert.ok(fcalls < total, `every publish was its own FCALL (${fcalls} for ${total}): nothing was batched`);
    });

    it('2. Redis stopped and started again mid-flood: every request answered (200 or a JSON 503), every 200 stored under its ID, in order', {
        timeout: 120000,
    }, async (t) => {
        let r = await startRedis({ aof: true });
        t.after(() => stopRedis(r));
        const node = await startServer(['--redis', r.url, '--threads', '2', '--history-size', '100000'], {}, { ready: true });
        t.after(() => node.stop());
        const chans = [uniqueChannel('outage-a'), uniqueChannel('outage-b')];
        /* Paced publishers (so that the flood spans the outage): each sends, in order, with 16
         * in flight, for about 4 s. */
        const plan = [];
        for (const [i, ch] of chans.entries())
            for (const k of ['x', 'y'])
                plan.push({ name: `h2-${i}-${k}`, ch, h2: true });
        let stopFlood = false;
        const results = plan.map((p) => ({ ...p, out: [] }));
        async function paced(p) {
            const session = await h2connect(node.url);
            let seq = 0;
            async function lane() {
                while (!stopFlood && seq < 20000) {
                    const s = seq++;
                    const res = await publish(node.url, p.ch, { p: p.name, seq: s }, {}, { session, timeoutMs: 10000 });
                    p.out[s] = { seq: s, status: res.status, id: res.json?.id, json: res.json, text: res.text, headers: res.headers };
                    await delay(2);
                }
            }
            try {
                await Promise.all(Array.from({ length: 16 }, lane));
            } finally {
                session.close();
            }
        }
        const flood = Promise.all(results.map(paced));
        await delay(1000);
        await r.stop('SIGTERM');
        await delay(700);
        r = await r.restart();
        await waitUntil(async () => (await readyz(node)) === 200, { timeoutMs: 15000, what: '/readyz 200 after the restart' });
        await delay(1000);
        stopFlood = true;
        await flood;
        let ok = 0, refused = 0;
        for (const p of results) {
            for (const o of p.out) {
                assert.ok(o, `${p.name}: a request has no outcome`);
                if (o.status === 200) {
                    ++ok;
                    continue;
                }
                ++refused;
                checkJsonError({ status: o.status, json: o.json, text: o.text, headers: o.headers }, 503, `${p.name} #${o.seq} during the outage`);
            }
        }
        t.diagnostic(`${ok} publishes answered 200, ${refused} answered 503 around the restart`);
        assert.ok(refused > 0, 'no publish was refused: the outage did not fall in the flood');
        assert.ok(ok > 0, 'no publish succeeded');
        /* After the restart every 200 holds: stored under its ID, with its message, in order. */
        for (const ch of chans) {
            const entries = await streamEntries(r.port, ch);
            const byId = new Map(entries.map((e) => [e.id, e.data]));
            checkAnswers(results.filter((p) => p.ch === ch), byId, `${ch} after the restart`);
        }
        const after = await publish(node.url, chans[0], { after: 1 });
        assert.equal(after.status, 200, `a publish after the restart: ${after.status} ${after.text}`);
    });

    for (const [variant, drop] of [['without either batch function', ['pushedge_publish_many', 'pushedge_publish_batch']],
        ['with pushedge_publish_many only', ['pushedge_publish_batch']]]) {
    it(`3. a library ${variant} (an older node loaded it): reloaded; the refused batch answered 503 unavailable (nothing stored), every 200 stored once, in send order`, {
        timeout: 60000,
    }, async (t) => {
        const r = await startRedis();
        t.after(() => stopRedis(r));
        const node = await startServer(['--redis', r.url, '--threads', '1'], {}, { ready: true });
        t.after(() => node.stop());
        await loadOlderLibrary(r.port, drop);
        const ch = uniqueChannel('upgrade');
        const out = await publisher(node.url, ch, 'up', 200, { inFlight: 32 });
        const bad = out.filter((o) => o.status !== 200 && !(o.status === 503 && o.code === 'engine_unavailable'));
        assert.equal(bad.length, 0, `${bad.length} publishes neither 200 nor 503 unavailable: ${bad.slice(0, 3).map((o) => `#${o.seq} ${o.status} ${o.text}`).join('; ')}`);
        const ok = out.filter((o) => o.status === 200).length;
        assert.ok(ok > 0, 'no publish stored after the reload');
        const entries = await streamEntries(r.port, ch);
        assert.equal(entries.length, ok, `${entries.length} entries for ${ok} publishes answered 200 (a 503 stored something?)`);
        const again = await publish(node.url, ch, { p: 'up', again: 1 });
        assert.equal(again.status, 200, `a publish after the reload: ${again.status} ${again.text}`);
        checkAnswers([{ name: 'up', out, h2: true }], new Map(entries.map((e) => [e.id, e.data])), ch);
        const list = await redisCmd(r.port, ['FUNCTION', 'LIST', 'LIBRARYNAME', 'pushedge']);
        assert.ok(JSON.stringify(list).includes('pushedge_publish_batch'), 'the node did not load its library again');
        assert.match(node.output().stderr, /no pushedge_publish_batch/, 'the reload is logged');
    });
    }

    it('3b. a batch refused for an older library, a single of the channel sent after it: the 200s keep send order', {
        timeout: 60000,
    }, async (t) => {
        const r = await startRedis();
        t.after(() => stopRedis(r));
        const node = await startServer(['--redis', r.url, '--threads', '1'], {}, { ready: true });
        t.after(() => node.stop());
        await loadOlderLibrary(r.port, ['pushedge_publish_many', 'pushedge_publish_batch']);
        const ch = uniqueChannel('reorder');
        const session = await h2connect(node.url);
        t.after(() => session.close());
        /* With Redis stopped, the first two publishes leave as one batch call and the third, a
         * loop iteration later, as a single call behind it: the refusal of the first comes back
         * after the second is already in the pipeline. */
        r.pause();
        const send = (n) => publish(node.url, ch, { n }, {}, { session, timeoutMs: 10000 });
        const p1 = send(1), p2 = send(2);
        await delay(100);
        const p3 = send(3);
        await delay(100);
        r.resume();
        const res = await Promise.all([p1, p2, p3]);
        for (const x of res)
            assert.ok(x.status === 200 || (x.status === 503 && x.json?.error?.code === 'engine_unavailable'), `${x.status} ${x.text}`);
        const ids = res.filter((x) => x.status === 200).map((x) => x.json.id);
        for (let i = 1; i < ids.length; i++)
            assert.ok(cmpId(ids[i], ids[i - 1]) > 0, `answered IDs out of send order: ${ids.join(' ')}`);
        const entries = await streamEntries(r.port, ch);
        assert.deepEqual(entries.map((e) => e.id), ids, 'the stream holds exactly the 200s, in send order');
    });

    /* Waits until n nodes listen on the channel's pub/sub channel in Redis (the SSE stream is
     * live a round trip before Redis confirms the SUBSCRIBE). */
    async function waitSubscribed(port, ch, n) {
        await waitUntil(async () => {
            const r = await redisCmd(port, ['PUBSUB', 'NUMSUB', `pe:{${ch}}`]);
            return Number(r[1]) >= n;
        }, { timeoutMs: 5000, what: `${n} nodes subscribed to pe:{${ch}}` });
    }

    /*
     * A redis-server of the test's own (keyspace events for streams on, if asked) and `count`
     * one-thread nodes on it, with `args` besides, each ready (/readyz); all stopped after t.
     */
    async function redisAndNodes(t, count, { keyspace = false, args = [] } = {}) {
        const r = await startRedis();
        t.after(() => stopRedis(r));
        if (keyspace)
            await redisCmd(r.port, ['CONFIG', 'SET', 'notify-keyspace-events', 'Kt']);
        const nodes = [];
        for (let i = 0; i < count; i++) {
            const n = await startServer(['--redis', r.url, '--threads', '1', ...args], {}, { ready: true });
            t.after(() => n.stop());
            nodes.push(n);
        }
        return { r, nodes };
    }

    /* An SSE subscriber of ch on node, live, once Redis counts `listeners` subscriptions to ch. */
    async function liveSub(t, r, node, ch, listeners = 1, query = '') {
        const sub = await openSSE(node.url, `/sse?channel=${ch}${query}`, { t });
        await sub.waitLive();
        await waitSubscribed(r.port, ch, listeners);
        return sub;
    }

    /* POST /api/batch of items to url, answered 200: its results. */
    async function postBatch(url, items) {
        const r = await httpRequest(url, '/api/batch', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(items),
            timeoutMs: 10000,
        });
        assert.equal(r.status, 200, `POST /api/batch: ${r.status} ${r.text}`);
        assert.equal(r.json.results.length, items.length);
        return r.json.results;
    }

    async function batchOf8(url, ch) {
        const items = Array.from({ length: 8 }, (_, i) => ({ channel: ch, data: { i } }));
        items[2].key = 'dup';
        items[5].key = 'dup';
        items[6].key = 'solo';
        const res = await postBatch(url, items);
        for (const x of res)
            assert.ok(x.id, `an item was refused: ${JSON.stringify(x)}`);
        assert.equal(res[5].id, res[2].id, 'a key repeated inside the batch answered another ID than its first');
        return res;
    }

    /* The 7 messages stored by batchOf8, in order: [{id, i}]. */
    function stored(res) {
        return res.filter((_, k) => k !== 5).map((x, k) => ({ id: x.id, i: [0, 1, 2, 3, 4, 6, 7][k] }));
    }

    it('4. a batch announced in one PUBLISH: in order, once, with the answered IDs, on another node; a gap across the batch', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a, b] } = await redisAndNodes(t, 2, { args: ['--history-size', '5'] });
        const ch = uniqueChannel('announce');
        /* The channel exists before the batch (so that the batch trims old entries as well). */
        const first = await publish(a.url, ch, { i: -1 });
        assert.equal(first.status, 200);
        const onB = await openSSE(b.url, `/sse?channel=${ch}`, { t });
        const onA = await openSSE(a.url, `/sse?channel=${ch}`, { t });
        await onB.waitLive();
        await onA.waitLive();
        await waitSubscribed(r.port, ch, 2);
        await redisCmd(r.port, ['CONFIG', 'RESETSTAT']);
        const res = await batchOf8(a.url, ch);
        const want = stored(res);
        for (let k = 1; k < want.length; k++)
            assert.ok(cmpId(want[k].id, want[k - 1].id) > 0, 'the batch\'s IDs are not increasing in item order');
        for (const [name, sub] of [['node B', onB], ['node A', onA]]) {
            await sub.waitFor(() => sub.envelopes().length >= 7 || null, 5000, `${name}: 7 messages`);
            await delay(100);
            const got = sub.envelopes().map((e) => ({ id: e.id, i: e.data.i }));
            assert.deepEqual(got, want, `${name}: the batch's messages, in order, once, with the answered IDs`);
        }
        const pubs = await commandCalls(r.port, 'publish');
        t.diagnostic(`PUBLISH calls for the batch of 7 stored messages: ${pubs}`);
        assert.equal(pubs, 1, 'the batch was not announced in one PUBLISH');
        /* --history-size 5: the stream holds the batch's last five; the newest removed (the
         * batch's second message) is the gap boundary. */
        const entries = await streamEntries(r.port, ch);
        assert.deepEqual(entries.map((e) => e.id), want.slice(2).map((w) => w.id), 'the stream holds the last five');
        const resume = async (since) => {
            const s = await openSSE(b.url, `/sse?channel=${ch}&since=${since}`, { t });
            await s.waitLive();
            await delay(100);
            s.close();
            return { gaps: s.events.filter((e) => e.type === 'gap').length, ids: s.envelopes().map((e) => e.id) };
        };
        assert.deepEqual(await resume(want[0].id), { gaps: 1, ids: want.slice(2).map((w) => w.id) }, 'a cursor below the boundary');
        assert.deepEqual(await resume(want[1].id), { gaps: 0, ids: want.slice(2).map((w) => w.id) }, 'the boundary as cursor');
        assert.deepEqual(await resume(want[3].id), { gaps: 0, ids: want.slice(4).map((w) => w.id) }, 'a cursor inside the batch');
    });

    for (const keyspace of [false, true])
    it(`4b. a batch of 12 KiB announced a few KiB per PUBLISH${keyspace ? ' (keyspace events on)' : ''}: in order, once, with the answered IDs, on another node`, {
        timeout: 60000,
    }, async (t) => {
        /* With keyspace events, each XADD's event reaches the nodes before the PUBLISH that
         * announces it, a chunk at a time: none may pass for a plain XADD's. */
        const { r, nodes: [a, b] } = await redisAndNodes(t, 2, { keyspace });
        const ch = uniqueChannel('chunks');
        const onB = await liveSub(t, r, b, ch);
        await redisCmd(r.port, ['CONFIG', 'RESETSTAT']);
        /* 12 messages of about 1 KiB: redis_lib.lua cuts the announcement before the message
         * that follows 4 KiB, so 3 PUBLISHes carry them (5 + 5 + 2). */
        const items = Array.from({ length: 12 }, (_, i) => ({ channel: ch, data: { i, pad: 'p'.repeat(1000) } }));
        const want = (await postBatch(a.url, items)).map((x, i) => ({ id: x.id, i }));
        await onB.waitFor(() => onB.envelopes().length >= 12 || null, 5000, '12 messages');
        await delay(100);
        assert.deepEqual(onB.envelopes().map((e) => ({ id: e.id, i: e.data.i })), want, 'the batch, in order, once, with the answered IDs');
        assert.equal(await commandCalls(r.port, 'publish'), 3, 'announced in three PUBLISHes');
        assert.equal(await commandCalls(r.port, 'fcall'), 1, 'stored by one call');
        if (keyspace)
            assert.equal(await commandCalls(r.port, 'xrange'), 0, 'no entry taken for a plain XADD\'s (fetched)');
    });

    it('5. --redis-batch-announce 0: a batch announced one PUBLISH per message, delivered the same', { timeout: 60000 }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1, { args: ['--redis-batch-announce', '0'] });
        const ch = uniqueChannel('singly');
        const sub = await liveSub(t, r, a, ch);
        await redisCmd(r.port, ['CONFIG', 'RESETSTAT']);
        const want = stored(await batchOf8(a.url, ch));
        await sub.waitFor(() => sub.envelopes().length >= 7 || null, 5000, '7 messages');
        await delay(100);
        assert.deepEqual(sub.envelopes().map((e) => ({ id: e.id, i: e.data.i })), want);
        assert.equal(await commandCalls(r.port, 'publish'), 7, 'one PUBLISH per stored message');
    });

    it('6. keyspace events on: batches, a plain XADD between them and singles, once each and in stream order on another node', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a, b] } = await redisAndNodes(t, 2, { keyspace: true });
        const ch = uniqueChannel('keyspace');
        const sub = await liveSub(t, r, b, ch);
        const sent = [];
        for (let round = 0; round < 3; round++) {
            const items = Array.from({ length: 20 }, (_, i) => ({ channel: ch, data: { round, i } }));
            sent.push(...(await postBatch(a.url, items)).map((x) => x.id));
            sent.push(await redisCmd(r.port, ['XADD', `pe:{${ch}}`, '*', 'd', JSON.stringify({ round, plain: true })]));
            const one = await publish(a.url, ch, { round, single: true });
            assert.equal(one.status, 200);
            sent.push(one.json.id);
        }
        const want = (await streamEntries(r.port, ch)).map((e) => e.id);
        assert.equal(want.length, sent.length, 'the stream holds every message');
        await sub.waitFor(() => sub.envelopes().length >= want.length || null, 10000, `${want.length} messages on node B`);
        await delay(200);
        assert.deepEqual(sub.envelopes().map((e) => e.id), want, 'node B: every entry once, in stream order (batches, plain XADDs, singles)');
    });

    it('6b. keyspace events on: a plain XADD, then an entry announced twice in one call: both once, in stream order', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1, { keyspace: true });
        const ch = uniqueChannel('twice');
        const sub = await liveSub(t, r, a, ch);
        /* The node sees: two xadd events, then the second entry's announcement (one event not
         * accounted for: the first entry is left to a fetch), then the same announcement again
         * (the counts even out). Posting the second copy at once would move the channel past
         * the first entry before the fetch posts it. */
        const ids = await redisCmd(r.port, ['EVAL', `
            local a = redis.call('XADD', KEYS[1], '*', 'd', '{"n":1}')
            local b = redis.call('XADD', KEYS[1], '*', 'd', '{"n":2}')
            redis.call('PUBLISH', KEYS[1], b .. ' {"n":2}')
            redis.call('PUBLISH', KEYS[1], b .. ' {"n":2}')
            return {a, b}`, '1', `pe:{${ch}}`]);
        await sub.waitFor(() => sub.envelopes().length >= 2 || null, 5000, '2 messages');
        await delay(200);
        assert.deepEqual(sub.envelopes().map((e) => ({ id: e.id, n: e.data.n })), [{ id: ids[0], n: 1 }, { id: ids[1], n: 2 }]);
    });

    it('6c. keyspace events on: an entry announced again after it was posted, then a plain XADD: the XADD still delivered, in order', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1, { keyspace: true });
        const ch = uniqueChannel('again');
        const sub = await liveSub(t, r, a, ch);
        const m1 = await publish(a.url, ch, { n: 1 });
        assert.equal(m1.status, 200);
        await sub.waitFor(() => sub.envelopes().length >= 1 || null, 5000, 'the first message');
        /* The repeat has no xadd event of its own: counted, it would stand for the plain
         * XADD's event that follows, and that entry would never be fetched. */
        await redisCmd(r.port, ['PUBLISH', `pe:{${ch}}`, `${m1.json.id} {"n":1}`]);
        await delay(100);
        const x = await redisCmd(r.port, ['XADD', `pe:{${ch}}`, '*', 'd', '{"n":2}']);
        await delay(100);
        const m3 = await publish(a.url, ch, { n: 3 });
        assert.equal(m3.status, 200);
        await sub.waitFor(() => sub.envelopes().length >= 3 || null, 5000, '3 messages');
        await delay(200);
        assert.deepEqual(sub.envelopes().map((e) => ({ id: e.id, n: e.data.n })),
            [{ id: m1.json.id, n: 1 }, { id: x, n: 2 }, { id: m3.json.id, n: 3 }]);
    });

    it('6d. keyspace events on: an announcement whose event the node missed, then a plain XADD in the same read: the XADD delivered', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1, { keyspace: true });
        const ch = uniqueChannel('missed');
        const sub = await liveSub(t, r, a, ch);
        /* An announcement with no xadd event before it stands for one whose event came while the
         * channel was priming. Counted, it would cancel out the plain XADD's event that follows
         * in the same read, and the next publish would move the channel past that entry. Its
         * entry is not in the stream: the fetch, which reads the stream, delivers only P. */
        const p = await redisCmd(r.port, ['EVAL', `
            local ms = tonumber(redis.call('TIME')[1]) * 1000 + 1000
            redis.call('PUBLISH', KEYS[1], string.format('%.0f', ms) .. '-1 {"n":1}')
            return redis.call('XADD', KEYS[1], string.format('%.0f', ms) .. '-2', 'd', '{"n":2}')`, '1', `pe:{${ch}}`]);
        await delay(100);
        const m3 = await publish(a.url, ch, { n: 3 });
        assert.equal(m3.status, 200);
        await sub.waitFor(() => sub.envelopes().length >= 2 || null, 5000, '2 messages');
        await delay(200);
        assert.deepEqual(sub.envelopes().map((e) => ({ id: e.id, n: e.data.n })), [{ id: p, n: 2 }, { id: m3.json.id, n: 3 }]);
    });

    it('6e. keyspace events on: a plain XADD, then a presence event in the same read: the fetch delivers a join, not a message', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1, { keyspace: true });
        const ch = uniqueChannel('fetchjoin');
        const plain = await liveSub(t, r, a, ch);
        const pres = await liveSub(t, r, a, ch, 1, '&presence=1');
        await delay(200); /* its own join, if it sees it, comes first */
        const joined = pres.events.length;
        /* What pushedge_presence appends and announces, after a plain XADD: the event's
         * announcement finds an xadd event unaccounted for, so both go to the fetch. */
        const ev = JSON.stringify({ channel: ch, client: 'x.1', user: null, node: 'elsewhere' });
        const [x, j] = await redisCmd(r.port, ['EVAL', `
            local x = redis.call('XADD', KEYS[1], '*', 'd', '{"n":1}')
            local j = redis.call('XADD', KEYS[1], '*', 'j', ARGV[1])
            redis.call('PUBLISH', KEYS[1], j .. ' \\30j' .. ARGV[1])
            return {x, j}`, '1', `pe:{${ch}}`, ev]);
        await delay(100);
        const m3 = await publish(a.url, ch, { n: 3 });
        assert.equal(m3.status, 200);
        await plain.waitFor(() => plain.envelopes().length >= 2 || null, 5000, '2 messages');
        await pres.waitFor(() => pres.envelopes().length >= 2 || null, 5000, '2 messages');
        await delay(200);
        const want = [{ id: x, n: 1 }, { id: m3.json.id, n: 3 }];
        assert.deepEqual(plain.envelopes().map((e) => ({ id: e.id, n: e.data.n })), want, 'no presence event as a message');
        assert.deepEqual(pres.envelopes().map((e) => ({ id: e.id, n: e.data.n })), want);
        const after = pres.events.slice(joined).map((e) => ({ type: e.type, id: e.lastEventId, data: e.type === 'join' ? JSON.parse(e.data) : undefined }));
        assert.deepEqual(after.filter((e) => e.type !== 'message'), [{ type: 'join', id: j, data: JSON.parse(ev) }], 'the join, once');
        assert.deepEqual(after.map((e) => e.id), [x, j, m3.json.id], 'in stream order');
    });

    it('6f. keyspace events on: plain XADDs trimmed before the fetch reads them: a gap, then what is retained', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1, { keyspace: true, args: ['--history-size', '3'] });
        const ch = uniqueChannel('trimmedfetch');
        const sub = await liveSub(t, r, a, ch);
        const m0 = await publish(a.url, ch, { n: 0 });
        assert.equal(m0.status, 200);
        await sub.waitFor(() => sub.envelopes().length >= 1 || null, 5000, 'the first message');
        /* Six plain XADDs, then a cut to 3 (as the next publish's exact cut would make) before
         * the node's XRANGE runs: it finds n 4-6 only. */
        const ids = await redisCmd(r.port, ['EVAL', `
            local ids = {}
            for i = 1, 6 do ids[i] = redis.call('XADD', KEYS[1], '*', 'd', '{"n":' .. i .. '}') end
            redis.call('XTRIM', KEYS[1], 'MAXLEN', 3)
            return ids`, '1', `pe:{${ch}}`]);
        await sub.waitFor(() => sub.envelopes().length >= 4 || null, 5000, '4 messages');
        await delay(200);
        assert.deepEqual(sub.envelopes().map((e) => e.data.n), [0, 4, 5, 6]);
        const seq = sub.events.map((e) => e.type).filter((x) => x === 'gap' || x === 'message');
        assert.deepEqual(seq, ['message', 'gap', 'message', 'message', 'message'], 'told of the gap before n 4');
        assert.equal(sub.envelopes()[1].id, ids[3]);
    });

    it('7. calls refused for their arguments (fewer key records than keyed messages, a bad window, count or age): before anything is stored or announced; the forms Redis would refuse later are taken as numbers', {
        timeout: 60000,
    }, async (t) => {
        const { r, nodes: [a] } = await redisAndNodes(t, 1);
        const ch = uniqueChannel('malformed');
        const sub = await liveSub(t, r, a, ch);
        await redisCmd(r.port, ['CONFIG', 'RESETSTAT']);
        /* 5 KiB first: past ANNOUNCE_BYTES, so a check made inside the loop would come after
         * the first chunk's PUBLISH. */
        const big = JSON.stringify({ pad: 'x'.repeat(5000) });
        const key = `pe:{${ch}}`, rec = `pe:{${ch}}:idem:k1`;
        const calls = [];
        for (const fn of ['pushedge_publish_batch', 'pushedge_publish_many']) {
            calls.push([/fewer key records than keyed messages/, ['FCALL', fn, '2', key, rec,
                '1000', '86400000', '60000', '0', big, '1', '{"n":2}', '1', '{"n":3}']]);
            for (const window of ['soon', '0', '1.5', 'nan', '1e17'])
                calls.push([/ERR usage/, ['FCALL', fn, '2', key, rec, '1000', '86400000', window, '0', big, '1', '{"n":2}']]);
            /* A count or age Redis takes in XREVRANGE ... COUNT, LPOP or the age cut only once
             * the entries are in; or one that trims the new entry itself. */
            for (const [count, age] of [['2.5', '86400000'], ['nan', '86400000'], ['1e20', '86400000'], ['0', '86400000'],
                ['-3', '86400000'], ['1000', '0'], ['1000', '-1'], ['1000', 'inf']])
                calls.push([/ERR usage/, ['FCALL', fn, '1', key, count, age, '60000', '0', big, '0', '{"n":2}']]);
        }
        calls.push([/ERR usage/, ['FCALL', 'pushedge_publish', '2', key, rec, '{"n":1}', '1000', '86400000', 'soon']]);
        calls.push([/ERR usage/, ['FCALL', 'pushedge_publish', '1', key, '{"n":1}', 'many']]);
        calls.push([/ERR usage/, ['FCALL', 'pushedge_publish', '1', key, '{"n":1}', '2.5', '86400000']]);
        calls.push([/ERR usage/, ['FCALL', 'pushedge_publish', '1', key, '{"n":1}', '1000', '0']]);
        const member = '{"client":"c1","user":"u","transport":"ws","since":1}';
        calls.push([/ERR usage/, ['FCALL', 'pushedge_presence', '2', key, `pe:{${ch}}:members`, 'join', 'c1', member, '100', '2.5', '86400000']]);
        for (const [error, cmd] of calls)
            await assert.rejects(redisCmd(r.port, cmd), error, cmd.slice(1, 3).join(' ') + ' ' + cmd.slice(-5).join(' ').slice(0, 60));
        assert.deepEqual(await streamEntries(r.port, ch), [], 'nothing stored');
        assert.equal(await redisCmd(r.port, ['HLEN', `pe:{${ch}}:members`]), 0, 'no member registered');
        assert.equal(await commandCalls(r.port, 'publish'), 0, 'nothing announced');
        await delay(200);
        assert.equal(sub.envelopes().length, 0, 'nothing delivered');

        /* Forms that are whole numbers are taken as such: "1e3" reaches SET ... PX as 1000 (the
         * raw text made SET fail after the XADDs), and an unkeyed call's unused fourth argument
         * is not looked at. */
        await redisCmd(r.port, ['FCALL', 'pushedge_publish_many', '2', key, rec, '1000', '86400000', '1e3', '0', '{"n":1}', '1', '{"n":2}']);
        const pttl = await redisCmd(r.port, ['PTTL', rec]);
        assert.ok(pttl > 0 && pttl <= 1000, `key recorded for 1 s (PTTL ${pttl})`);
        await redisCmd(r.port, ['FCALL', 'pushedge_publish', '1', key, '{"n":3}', '1000', '86400000', '0']);
        await sub.waitFor(() => sub.envelopes().length >= 3 || null, 5000, '3 messages');
        await delay(200);
        assert.deepEqual(sub.envelopes().map((e) => e.data.n), [1, 2, 3], 'each once, in order');
        assert.equal((await streamEntries(r.port, ch)).length, 3);
    });
});

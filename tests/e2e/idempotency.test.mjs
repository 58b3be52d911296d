/*
 * Retry-safe publishing (docs/protocol.md "Publish", docs/operations.md "Retry-safe publishing", issue 11 finding 6): the
 * Idempotency-Key header of POST /api/publish, the "key" of the WebSocket publish op, and
 * POST /api/batch.
 *
 * Covered on the engine under test (memory, or Redis with E2E_ENGINE=redis):
 *  1. the same key on the same channel answers the same ID (Idempotent-Replayed: true) and
 *     stores nothing new; another channel, or no key, stores anew; the key rule's edges (64
 *     characters, 65, empty, outside the alphabet, two headers) with a JSON 400;
 *  2. twenty concurrent publishes with one key over separate connections (every thread) store
 *     one message and all answer its ID;
 *  3. the window: with --idempotency-window 1 the repeat is a replay until the window ends,
 *     then the key stores anew (the channel then holds two messages);
 *  4. the WebSocket op: "key" twice answers the same "published" ID ("replayed": true), an
 *     HTTP publish and a WebSocket publish share the key space, a bad key is an error op; the
 *     JS client's publish(..., {key});
 *  5. /api/batch: results in request order; per-channel order of the stored items; mixed
 *     successes and errors (each item on its own); keys inside a batch (repeated in the same
 *     batch, repeated batch, shared with /api/publish); the limits (1000 items, the body
 *     size) and the whole-body errors (not JSON, not an array, empty array, GET); the API key
 *     and CORS rules of /api/publish; metrics.
 * Covered with private redis-server processes this file starts (plain e2e run only, skipped
 * when redis-server is missing):
 *  6. the fix: Redis stopped (SIGSTOP) under a keyed publish: 503 after the engine timeout
 *     saying the message may have been stored; SIGCONT; the retry with the same key answers
 *     200 with the ID of the entry that was in fact stored, and the channel holds it exactly
 *     once (an unkeyed publish in the same outage is stored too: why the key is needed); the
 *     same for a batch of keyed items;
 *  7. two nodes sharing Redis: one key, one message, one ID from either node; the key record
 *     lives next to the stream (pe:{NAME}:idem:KEY, same hash tag) and expires with the window;
 *  8. a function library without keys (what an older node loads when it connects) is replaced
 *     by the node at its first keyed publish, and keys are honoured again.
 *
 * Not covered: Redis Cluster (tests/e2e/cluster.test.mjs publishes keyed there), the memory
 * engine's table bound (tests/unit/test_idem.c: 250,000 keys are too many for an e2e run).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    ID_RE,
    checkJsonError,
    cmpId,
    getMetrics,
    httpRequest,
    metricValue,
    pollRequest,
    publish,
    sharedServer,
    startServer,
    unavailable,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { openWs } from './wslib.mjs';
import { HAVE_REDIS, redisCmd, rmDir, startRedis } from './redislib.mjs';
import { PushEdge } from '../../web/src/pushedge.js';

const ON_REDIS = process.env.E2E_ENGINE === 'redis';

/** POST /api/publish with an Idempotency-Key (or none when key is null). */
function publishKeyed(url, ch, data, key, headers = {}) {
    return publish(url, ch, data, key === null ? headers : { 'idempotency-key': key, ...headers });
}

/** POST /api/batch with body (an array, or raw text). */
function batch(url, body, headers = {}) {
    return httpRequest(url, '/api/batch', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
        timeoutMs: 10000,
    });
}

/** The messages a channel holds (poll from the oldest; the channel must hold at least one). */
async function history(url, ch) {
    const r = await pollRequest(url, `channel=${encodeURIComponent(ch)}&since=0`);
    assert.equal(r.status, 200, `poll ${ch}: ${r.text}`);
    return r.json.messages;
}

/* ------------------------------------------------------------------------------------------ */

describe(`Idempotency-Key on /api/publish (${ON_REDIS ? 'redis' : 'memory'} engine)`, () => {
    const main = sharedServer(before, after);

    it('the same key on the same channel answers the same ID and stores nothing new', async () => {
        const ch = uniqueChannel('idem');
        const r1 = await publishKeyed(main.srv.url, ch, { n: 1 }, 'order-17');
        assert.equal(r1.status, 200, r1.text);
        assert.match(r1.json.id, ID_RE);
        assert.equal(r1.headers['idempotent-replayed'], undefined, 'the first publish is not a replay');
        const r2 = await publishKeyed(main.srv.url, ch, { n: 2 }, 'order-17');
        assert.equal(r2.status, 200, r2.text);
        assert.deepEqual(r2.json, r1.json, 'same channel and id');
        assert.equal(r2.headers['idempotent-replayed'], 'true');
        const other = await publishKeyed(main.srv.url, uniqueChannel('idem-other'), { n: 3 }, 'order-17');
        assert.equal(other.status, 200);
        assert.equal(other.headers['idempotent-replayed'], undefined, 'same key, another channel: independent');
        const plain = await publishKeyed(main.srv.url, ch, { n: 4 }, null);
        assert.ok(cmpId(plain.json.id, r1.json.id) > 0, 'no key: a new message');
        const msgs = await history(main.srv.url, ch);
        assert.deepEqual(msgs.map((m) => [m.id, m.data]), [[r1.json.id, { n: 1 }], [plain.json.id, { n: 4 }]],
            'the channel holds the first keyed message once, then the unkeyed one');
    });

    it('the key rule: 1-64 characters of A-Z a-z 0-9 _ - . :', async () => {
        const ch = uniqueChannel('idem-rule');
        const ok = await publishKeyed(main.srv.url, ch, 1, 'Aa0_-.:' + 'x'.repeat(57));
        assert.equal(ok.status, 200, `64 characters: ${ok.text}`);
        for (const bad of ['', 'x'.repeat(65), 'a b', 'a/b', 'a{b}', 'a,b', 'a@b']) {
            const r = await publishKeyed(main.srv.url, ch, 1, bad);
            checkJsonError(r, 400, `key ${JSON.stringify(bad)}`);
            assert.equal(r.json.error.code, 'bad_key');
        }
        /* Two Idempotency-Key headers: which one would a retry repeat? */
        const r = await httpRequest(main.srv.url, `/api/publish?channel=${ch}`, {
            method: 'POST', headers: { 'idempotency-key': ['k1', 'k2'] }, body: '1' });
        checkJsonError(r, 400, 'two keys');
        assert.equal(r.json.error.code, 'bad_key');
        assert.equal((await history(main.srv.url, ch)).length, 1, 'nothing stored by the refused publishes');
    });

    it('concurrent publishes with one key store one message (every thread)', async () => {
        const ch = uniqueChannel('idem-race');
        const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => publishKeyed(main.srv.url, ch, { i }, 'race-key')));
        for (const r of rs)
            assert.equal(r.status, 200, r.text);
        const ids = new Set(rs.map((r) => r.json.id));
        assert.equal(ids.size, 1, `one ID for all: ${[...ids]}`);
        assert.equal(rs.filter((r) => r.headers['idempotent-replayed'] === 'true').length, 19, 'nineteen replays');
        const msgs = await history(main.srv.url, ch);
        assert.equal(msgs.length, 1, JSON.stringify(msgs));
        assert.equal(msgs[0].id, [...ids][0]);
    });

    it('the WebSocket publish op takes the same key as "key"', async (t) => {
        const ch = uniqueChannel('idem-ws');
        const ws = await openWs(main.srv.url, '/ws', { t });
        const a = await ws.request({ op: 'publish', channel: ch, data: { n: 1 }, key: 'ws-1' });
        assert.equal(a.op, 'published', JSON.stringify(a));
        assert.equal(a.replayed, undefined);
        const b = await ws.request({ op: 'publish', channel: ch, data: { n: 2 }, key: 'ws-1' });
        assert.equal(b.op, 'published', JSON.stringify(b));
        assert.equal(b.id, a.id, 'the repeat answers the first ID');
        assert.equal(b.replayed, true);
        /* One key space per channel, whatever the transport. */
        const h = await publishKeyed(main.srv.url, ch, { n: 3 }, 'ws-1');
        assert.equal(h.json.id, a.id, 'HTTP with the same key');
        const c = await ws.request({ op: 'publish', channel: ch, data: 4, key: 'http-1' });
        const h2 = await publishKeyed(main.srv.url, ch, 5, 'http-1');
        assert.equal(h2.json.id, c.id, 'a WebSocket key seen by HTTP');
        for (const key of ['', 'a b', 7, null, 'x'.repeat(65)]) {
            const e = await ws.request({ op: 'publish', channel: ch, data: 6, key });
            assert.equal(e.op, 'error', JSON.stringify(e));
            assert.equal(e.code, 'bad_key', JSON.stringify(e));
        }
        assert.deepEqual((await history(main.srv.url, ch)).map((m) => m.data), [{ n: 1 }, 4]);
    });

    it('the JS client sends its publish key as Idempotency-Key', async () => {
        const ch = uniqueChannel('idem-js');
        const c = new PushEdge(main.srv.url, {});
        try {
            const a = await c.publish(ch, { n: 1 }, { key: 'js-1' });
            const b = await c.publish(ch, { n: 2 }, { key: 'js-1' });
            assert.equal(b, a);
            await assert.rejects(c.publish(ch, 3, { key: 'bad key' }), (e) => e.status === 400 && e.code === 'bad_key');
        } finally {
            c.close();
        }
        assert.deepEqual((await history(main.srv.url, ch)).map((m) => m.data), [{ n: 1 }]);
    });

    it('counts replays in /metrics', async () => {
        const before = metricValue(await getMetrics(main.srv.url), 'pushedge_publish_replays_total');
        const ch = uniqueChannel('idem-metrics');
        await publishKeyed(main.srv.url, ch, 1, 'm');
        await publishKeyed(main.srv.url, ch, 1, 'm');
        const samples = await getMetrics(main.srv.url);
        assert.equal(metricValue(samples, 'pushedge_publish_replays_total'), before + 1);
        if (!ON_REDIS)
            assert.ok(metricValue(samples, 'pushedge_idempotency_keys') >= 1, 'the memory engine shows its table');
    });
});

describe('--idempotency-window', () => {
    const short = sharedServer(before, after, ['--idempotency-window', '1']);

    it('a key is a replay until the window ends, then stores anew', async () => {
        const ch = uniqueChannel('idem-window');
        const first = await publishKeyed(short.srv.url, ch, { n: 1 }, 'w');
        assert.equal(first.status, 200);
        const t0 = Date.now();
        /* Each repeat inside the window is a replay (stores nothing); the first one after it is
         * a new message. Bounded: the window is 1 s. */
        const fresh = await waitUntil(async () => {
            const r = await publishKeyed(short.srv.url, ch, { n: 2 }, 'w');
            assert.equal(r.status, 200, r.text);
            return r.json.id !== first.json.id ? r : null;
        }, { timeoutMs: 5000, intervalMs: 100, what: 'the key to expire' });
        assert.ok(Date.now() - t0 >= 800, `not before the window (${Date.now() - t0} ms)`);
        assert.equal(fresh.headers['idempotent-replayed'], undefined);
        assert.deepEqual((await history(short.srv.url, ch)).map((m) => m.data), [{ n: 1 }, { n: 2 }],
            'exactly two messages: the first and the one after the window');
        const again = await publishKeyed(short.srv.url, ch, { n: 3 }, 'w');
        assert.equal(again.json.id, fresh.json.id, 'the new message has its own window');
    });
});

describe(`POST /api/batch (${ON_REDIS ? 'redis' : 'memory'} engine)`, () => {
    const main = sharedServer(before, after);
    const keyed = sharedServer(before, after, ['--api-key', 'bk', '--allowed-origin', 'https://app.example']);

    it('answers one result per item, in request order, and keeps each channel\'s order', async () => {
        const a = uniqueChannel('batch-a'), b = uniqueChannel('batch-b');
        const items = Array.from({ length: 60 }, (_, i) => ({ channel: i % 3 === 0 ? b : a, data: { i } }));
        const r = await batch(main.srv.url, items);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.results.length, 60);
        r.json.results.forEach((res, i) => {
            assert.equal(res.channel, items[i].channel, `result ${i} is item ${i}`);
            assert.match(res.id, ID_RE, JSON.stringify(res));
        });
        for (const ch of [a, b]) {
            const want = items.map((it, i) => [it, r.json.results[i]]).filter(([it]) => it.channel === ch);
            for (let k = 1; k < want.length; k++)
                assert.ok(cmpId(want[k][1].id, want[k - 1][1].id) > 0, `${ch}: IDs increase in request order`);
            const msgs = await history(main.srv.url, ch);
            assert.deepEqual(msgs.map((m) => [m.id, m.data]), want.map(([it, res]) => [res.id, it.data]), `${ch}: stored in order`);
        }
    });

    it('stores or refuses each item on its own', async () => {
        const ch = uniqueChannel('batch-mixed');
        const big = 'x'.repeat(70000);
        const body = '[' + [
            JSON.stringify({ channel: ch, data: 1 }),
            JSON.stringify({ channel: 'bad/name', data: 2 }),
            JSON.stringify({ data: 3 }),
            JSON.stringify({ channel: ch }),
            '7',
            JSON.stringify({ channel: ch, data: 4, key: 'a b' }),
            JSON.stringify({ channel: ch, data: big }),
            '{"channel":"' + ch + '","data":5,"data":6}',
            JSON.stringify({ channel: 12, data: 7 }),
            '{"channel":"' + ch + '","data":{"ok":[true, null, 1.50]}}',
        ].join(',') + ']';
        const r = await batch(main.srv.url, body);
        assert.equal(r.status, 200, r.text);
        const codes = r.json.results.map((x) => (x.error ? x.error.code : 'ok'));
        assert.deepEqual(codes, ['ok', 'bad_channel', 'missing_channel', 'bad_request', 'bad_request', 'bad_key', 'too_large',
            'bad_request', 'bad_channel', 'ok']);
        for (const x of r.json.results.filter((x) => x.error))
            assert.ok(typeof x.error.message === 'string' && x.error.message.length > 0, JSON.stringify(x));
        assert.deepEqual(r.json.results.map((x) => x.channel), [ch, 'bad/name', null, ch, null, ch, ch, ch, null, ch]);
        const raw = await pollRequest(main.srv.url, `channel=${ch}&since=0`);
        assert.ok(raw.text.includes('{"ok":[true,null,1.50]}'), `data stored as written (minified): ${raw.text}`);
        const msgs = await history(main.srv.url, ch);
        assert.deepEqual(msgs.map((m) => m.data), [1, { ok: [true, null, 1.5] }], 'only the two good items are stored');
        assert.deepEqual(msgs.map((m) => m.id), [r.json.results[0].id, r.json.results[9].id]);
    });

    it('honours keys inside a batch', async () => {
        const ch = uniqueChannel('batch-keys'), ch2 = uniqueChannel('batch-keys2');
        const items = [
            { channel: ch, data: 1, key: 'k1' },
            { channel: ch, data: 2, key: 'k2' },
            { channel: ch, data: 3, key: 'k1' }, /* the same key later in the same batch */
            { channel: ch2, data: 4, key: 'k1' }, /* another channel: independent */
            { channel: ch, data: 5 },
        ];
        const r1 = await batch(main.srv.url, items);
        assert.equal(r1.status, 200, r1.text);
        const [x1, x2, x3, x4] = r1.json.results;
        assert.equal(x3.id, x1.id, 'a key repeated inside the batch answers the first ID');
        assert.equal(x3.replayed, true);
        assert.equal(x1.replayed, undefined);
        assert.notEqual(x4.replayed, true);
        /* The whole batch retried: every keyed item answers its first ID; the unkeyed one is new. */
        const r2 = await batch(main.srv.url, items);
        assert.deepEqual(r2.json.results.slice(0, 4).map((x) => x.id), [x1.id, x2.id, x1.id, x4.id]);
        assert.ok(r2.json.results.slice(0, 4).every((x) => x.replayed === true), JSON.stringify(r2.json));
        assert.ok(cmpId(r2.json.results[4].id, r1.json.results[4].id) > 0);
        /* One key space with /api/publish. */
        const p = await publishKeyed(main.srv.url, ch, 9, 'k2');
        assert.equal(p.json.id, x2.id);
        assert.deepEqual((await history(main.srv.url, ch)).map((m) => m.data), [1, 2, 5, 5]);
        assert.deepEqual((await history(main.srv.url, ch2)).map((m) => m.data), [4]);
    });

    it('limits: 1000 items, the body size, and whole-body errors', async () => {
        const ch = uniqueChannel('batch-limits');
        const full = await batch(main.srv.url, Array.from({ length: 1000 }, (_, i) => ({ channel: ch, data: i })));
        assert.equal(full.status, 200, full.text.slice(0, 300));
        assert.ok(full.json.results.every((x) => x.id), 'a batch of 1000 is stored');
        const refused = uniqueChannel('batch-refused');
        const over = await batch(main.srv.url, Array.from({ length: 1001 }, (_, i) => ({ channel: refused, data: i })));
        checkJsonError(over, 413, '1001 items');
        assert.equal(over.json.error.code, 'too_many_items');
        const huge = await batch(main.srv.url, Array.from({ length: 18 }, () => ({ channel: refused, data: 'y'.repeat(60000) })));
        checkJsonError(huge, 413, 'a body over 1 MiB');
        assert.equal(huge.json.error.code, 'too_large');
        const sentinel = await publishKeyed(main.srv.url, refused, 'sentinel', null);
        assert.deepEqual((await history(main.srv.url, refused)).map((m) => m.id), [sentinel.json.id],
            'nothing of the refused batches was stored');
        for (const [body, code] of [['not json', 'invalid_json'], ['{"channel":"x","data":1}', 'bad_request'], ['', 'invalid_json']]) {
            const r = await batch(main.srv.url, body);
            checkJsonError(r, 400, JSON.stringify(body));
            assert.equal(r.json.error.code, code);
        }
        const empty = await batch(main.srv.url, []);
        assert.equal(empty.status, 200);
        assert.deepEqual(empty.json, { results: [] });
        const get = await httpRequest(main.srv.url, '/api/batch');
        checkJsonError(get, 405, 'GET');
        assert.match(String(get.headers.allow), /POST/);
    });

    it('follows the API key and CORS rules of /api/publish', async () => {
        const ch = uniqueChannel('batch-auth');
        const body = [{ channel: ch, data: 1 }];
        checkJsonError(await batch(keyed.srv.url, body), 401, 'no key');
        checkJsonError(await batch(keyed.srv.url, body, { authorization: 'Bearer nope' }), 403, 'wrong key');
        const ok = await batch(keyed.srv.url, body, { authorization: 'Bearer bk', origin: 'https://app.example' });
        assert.equal(ok.status, 200, ok.text);
        assert.equal(ok.headers['access-control-allow-origin'], 'https://app.example');
        const pre = await httpRequest(keyed.srv.url, '/api/batch', {
            method: 'OPTIONS',
            headers: { origin: 'https://app.example', 'access-control-request-method': 'POST',
                'access-control-request-headers': 'authorization, content-type, idempotency-key' },
        });
        assert.equal(pre.status, 204, pre.text);
        assert.match(String(pre.headers['access-control-allow-methods']), /POST/);
        assert.match(String(pre.headers['access-control-allow-headers']), /Idempotency-Key/i);
    });
});

/* ------------------------------------------------------------------------------------------ */
/* With private redis-server processes (the plain run only: E2E_ENGINE=redis would repeat it). */

const redisSkip = ON_REDIS ? 'runs in the plain e2e run' : unavailable(!HAVE_REDIS && 'redis-server is not on PATH');

describe('retry-safe publishing through a hung Redis', { skip: redisSkip }, () => {
    let redis;
    const nodes = [];

    async function startNode(extra = []) {
        const srv = await startServer(['--redis', redis.url, '--threads', '2', ...extra]);
        nodes.push(srv);
        await waitUntil(async () => (await httpRequest(srv.url, '/readyz', { timeoutMs: 3000 })).status === 200,
            { timeoutMs: 8000, what: '/readyz 200' });
        return srv;
    }

    before(async () => {
        redis = await startRedis();
    });
    after(async () => {
        const bad = [];
        for (const srv of nodes) {
            const r = await srv.stop();
            if (r.killed || r.code !== 0)
                bad.push(`pushedge exited ${r.code}/${r.signal}\n${r.stderr.slice(-3000)}`);
        }
        if (redis) {
            redis.resume();
            await redis.stop();
            rmDir(redis.dir);
        }
        if (bad.length)
            throw new Error(bad.join('\n\n'));
    });

    it('a keyed publish that timed out while Redis hung is stored once, and its retry answers its ID', async () => {
        const node = await startNode();
        const ch = uniqueChannel('hung'), ch2 = uniqueChannel('hung-plain');
        redis.pause();
        let keyed, plain;
        try {
            const t0 = Date.now();
            [keyed, plain] = await Promise.all([
                publishKeyed(node.url, ch, { order: 1 }, 'order-1'),
                publishKeyed(node.url, ch2, { order: 2 }, null),
            ]);
            const ms = Date.now() - t0;
            checkJsonError(keyed, 503, 'keyed publish while Redis hangs');
            assert.equal(keyed.json.error.code, 'engine_unavailable');
            assert.match(keyed.json.error.message, /may have been stored/);
            assert.ok(keyed.headers['retry-after'], 'Retry-After');
            checkJsonError(plain, 503, 'unkeyed publish while Redis hangs');
            assert.ok(ms >= 2500 && ms < 10000, `503 after the 3 s engine timeout (${ms} ms)`);
        } finally {
            redis.resume();
        }
        await waitUntil(async () => (await httpRequest(node.url, '/readyz', { timeoutMs: 3000 })).status === 200,
            { timeoutMs: 15000, what: '/readyz 200 after SIGCONT' });
        /* The finding: Redis ran the publish it had read before it stopped. Without a key, a
         * retry would store it twice. */
        await waitUntil(async () => (await redisCmd(redis.port, ['XLEN', `pe:{${ch2}}`])) === 1,
            { timeoutMs: 5000, what: 'the unkeyed publish stored after all' });
        const retry = await waitUntil(async () => {
            const r = await publishKeyed(node.url, ch, { order: 1 }, 'order-1');
            return r.status === 200 ? r : null;
        }, { timeoutMs: 10000, what: 'the retry to succeed' });
        assert.equal(retry.headers['idempotent-replayed'], 'true', 'the retry found the stored entry');
        const msgs = await history(node.url, ch);
        assert.deepEqual(msgs.map((m) => [m.id, m.data]), [[retry.json.id, { order: 1 }]],
            'the channel holds the entry exactly once, with the ID the retry answered');
        assert.equal(await redisCmd(redis.port, ['XLEN', `pe:{${ch}}`]), 1);
        const again = await publishKeyed(node.url, ch, { order: 1 }, 'order-1');
        assert.equal(again.json.id, retry.json.id, 'and every later retry too');
    });

    it('a keyed batch that timed out is stored once when retried', async () => {
        const node = nodes[0];
        const chs = [uniqueChannel('hung-b1'), uniqueChannel('hung-b2')];
        const items = [0, 1, 2, 3].map((i) => ({ channel: chs[i % 2], data: { i }, key: `item-${i}` }));
        redis.pause();
        let r;
        try {
            r = await batch(node.url, items);
        } finally {
            redis.resume();
        }
        assert.equal(r.status, 200, r.text);
        assert.ok(r.json.results.every((x) => x.error && x.error.code === 'engine_unavailable'), r.text);
        await waitUntil(async () => (await httpRequest(node.url, '/readyz', { timeoutMs: 3000 })).status === 200,
            { timeoutMs: 15000, what: '/readyz 200 after SIGCONT' });
        const retry = await waitUntil(async () => {
            const x = await batch(node.url, items);
            return x.json.results.every((y) => y.id) ? x : null;
        }, { timeoutMs: 10000, what: 'the batch retry to succeed' });
        for (const [k, ch] of chs.entries()) {
            const want = retry.json.results.filter((_, i) => i % 2 === k);
            const msgs = await history(node.url, ch);
            assert.deepEqual(msgs.map((m) => [m.id, m.data]), want.map((x, j) => [x.id, { i: 2 * j + k }]), `${ch}: each item once, in order`);
        }
    });

    it('a library without keys, loaded by an older node, is replaced at the first keyed publish', async () => {
        const node = nodes[0];
        /* What a pushedge without keys loads on connect: pushedge_publish ignores a second key. */
        const oldLib = "#!lua name=pushedge\n" +
            "redis.register_function('pushedge_publish', function(keys, args) return redis.call('XADD', keys[1], '*', 'd', args[1]) end)\n" +
            "redis.register_function{function_name = 'pushedge_read', callback = function(keys, args) return {0, '0-0', 1} end, flags = {'no-writes'}}\n";
        await redisCmd(redis.port, ['FUNCTION', 'LOAD', 'REPLACE', oldLib]);
        const ch = uniqueChannel('oldlib');
        const first = await publishKeyed(node.url, ch, { n: 1 }, 'old-1');
        assert.equal(first.status, 200, 'stored (the key could not be recorded)');
        /* Bounded: the node reloads its library after that answer; each probe uses a fresh key. */
        let probe = 0;
        await waitUntil(async () => {
            const key = `probe-${++probe}`;
            await publishKeyed(node.url, ch, { probe }, key);
            const again = await publishKeyed(node.url, ch, { probe }, key);
            return again.headers['idempotent-replayed'] === 'true';
        }, { timeoutMs: 10000, intervalMs: 50, what: 'keys honoured again' });
        assert.ok(probe <= 3, `honoured again within a few publishes (${probe})`);
        const code = (await redisCmd(redis.port, ['FUNCTION', 'LIST', 'LIBRARYNAME', 'pushedge', 'WITHCODE']))[0];
        assert.match(JSON.stringify(code), /idem|ikey/, 'our library is back');
    });

    it('one key, one message and one ID on every node sharing Redis; the record expires with the window', async () => {
        const a = nodes[0], b = await startNode(['--idempotency-window', '7']);
        const ch = uniqueChannel('shared');
        const ra = await publishKeyed(a.url, ch, { from: 'a' }, 'shared-key');
        const rb = await publishKeyed(b.url, ch, { from: 'b' }, 'shared-key');
        assert.equal(rb.status, 200, rb.text);
        assert.equal(rb.json.id, ra.json.id, 'node B answers node A\'s ID');
        assert.equal(rb.headers['idempotent-replayed'], 'true');
        const ws = await openWs(b.url, '/ws');
        try {
            const w = await ws.request({ op: 'publish', channel: ch, data: { from: 'ws' }, key: 'shared-key' });
            assert.equal(w.id, ra.json.id, 'and so does a WebSocket publish on node B');
        } finally {
            ws.close();
        }
        assert.deepEqual((await history(b.url, ch)).map((m) => m.data), [{ from: 'a' }]);
        /* The record: next to the stream (same hash tag), expiring with the publishing node's window. */
        const rec = `pe:{${ch}}:idem:shared-key`;
        assert.equal(await redisCmd(redis.port, ['GET', rec]), ra.json.id);
        const pttl = await redisCmd(redis.port, ['PTTL', rec]);
        assert.ok(pttl > 0 && pttl <= 300000, `PTTL ${pttl} within node A's default 300 s window`);
        const rc = await publishKeyed(b.url, ch, { from: 'b2' }, 'short-key');
        const pttl2 = await redisCmd(redis.port, ['PTTL', `pe:{${ch}}:idem:short-key`]);
        assert.ok(pttl2 > 0 && pttl2 <= 7000, `PTTL ${pttl2} within node B's 7 s window`);
        assert.equal(rc.status, 200);
    });
});

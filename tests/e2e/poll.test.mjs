/*
 * HTTP long-polling, GET /poll (docs/protocol.md "Long-polling"), and the cross-origin policy of
 * --allowed-origin (CORS on /sse, /poll and /api/publish, preflights, the WebSocket Origin
 * check).
 *
 * Covered, /poll: retained messages after `since` answered at once (since=0 from the oldest,
 * since=<id>), envelopes in order; batches bounded at 100 messages and ~256 KiB whose returned
 * cursor continues them (every message exactly once, in order, one channel and two); holding
 * with nothing new and answering as soon as a message is published, well before the timeout;
 * the timeout answer (empty list) whose cursor misses nothing published afterwards (with and
 * without since, one and two channels); no since = only new messages; 50 concurrent polls on
 * one channel and cursor answered by one publish; two-channel polls with the multi-channel
 * cursor; paging while messages are being published (no loss or duplicate at the seam); gaps
 * (trimmed by --history-size, a cursor from the future, a gap in a full batch, a gap on one of
 * two channels when the other fills the first batch) followed by the retained messages;
 * held HTTP/2 polls cancelled by RST_STREAM or a dropped session; response headers (JSON,
 * no-store, Content-Length, no chunking), HTTP/1.0 and HTTP/1.1 keep-alive; 400 JSON errors
 * for bad channel names, malformed cursors and a missing channel, 405 for other methods;
 * 200 clients vanishing mid-hold (server alive, the poll gauge back to 0 within
 * --poll-timeout + 2 s, modest memory, clean exit under LSan); SIGTERM while polls are held
 * (each answered 200 at once, exit 0); HTTP/2 (h2c prior knowledge).
 * Covered, CORS: Access-Control-Allow-Origin and Vary on /poll, /sse and /api/publish for a
 * listed origin, none for another, "*"; preflights (204 with methods and headers, 403 JSON
 * for a foreign origin, 405 without a policy); error answers carrying the CORS headers; the
 * WebSocket handshake Origin check (foreign 403; listed, same-origin and absent 101; no policy:
 * anything 101); invalid --allowed-origin values exiting 2.
 *
 * Not covered here: resuming across transports (matrix.test.mjs), the Redis engine and
 * several nodes, real browsers (the browser suite runs the JS client's poll fallback), TLS.
 * Deliberately not asserted: how a burst published during a hold is split into answers (one
 * answer or several are both correct), and whether a 100-message batch is exactly 100.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    CURSOR_SAFE_RE,
    ID_RE,
    assertAlive,
    checkJsonError,
    cmpId,
    connectionsGauge,
    h2connect,
    httpRequest,
    openSSE,
    pollRequest,
    publishMany,
    publishOk,
    rawConnect,
    rawExchange,
    rssKiB,
    runOnce,
    freePort,
    sharedServers,
    startServer,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';
import { RawWS } from './wslib.mjs';
import { redisCmd } from './redislib.mjs';

const POLL_TIMEOUT_S = 2;
const POLL_TIMEOUT_MS = POLL_TIMEOUT_S * 1000;
const MAX_BATCH_MESSAGES = 100;
const MAX_BATCH_BYTES = 256 * 1024;

const APP = 'http://app.example';
const EVIL = 'http://evil.example';
const PT = ['--poll-timeout', String(POLL_TIMEOUT_S)];
const [main, small, mid, app, star] = sharedServers(before, after, [
    [PT],
    [[...PT, '--history-size', '5']],
    [[...PT, '--history-size', '150']],
    [[...PT, '--allowed-origin', APP]],
    [[...PT, '--allowed-origin', '*']],
]);

/** channel=...&channel=...[&since=...] */
function pq(channels, since) {
    const parts = (Array.isArray(channels) ? channels : [channels]).map((c) => `channel=${encodeURIComponent(c)}`);
    if (since !== undefined)
        parts.push(`since=${encodeURIComponent(since)}`);
    return parts.join('&');
}

/** Asserts the 200 answer's shape ({cursor, messages, gaps}, JSON, no-store, Content-Length) and returns it. */
function checkPollAnswer(r, what, { draining = false } = {}) {
    assert.equal(r.status, 200, `${what}: status ${r.status}, body ${r.text.slice(0, 300)}`);
    assert.match(String(r.headers['content-type']), /^application\/json\s*(;|$)/i, `${what}: Content-Type`);
    assert.match(String(r.headers['cache-control']), /no-store/i, `${what}: Cache-Control`);
    const j = r.json;
    assert.ok(j && typeof j === 'object', `${what}: the body must be a JSON object: ${r.text.slice(0, 300)}`);
    /* A draining node's answers carry the reconnect hint (docs/protocol.md "Long-polling"). */
    const keys = draining ? ['cursor', 'gaps', 'messages', 'reconnect_ms'] : ['cursor', 'gaps', 'messages'];
    assert.deepEqual(Object.keys(j).sort(), keys, `${what}: keys of ${r.text.slice(0, 200)}`);
    if (draining) {
        assert.ok(Number.isInteger(j.reconnect_ms) && j.reconnect_ms >= 0, `${what}: reconnect_ms ${j.reconnect_ms}`);
        assert.equal(String(r.headers['retry-after']), String(Math.ceil(j.reconnect_ms / 1000)), `${what}: Retry-After`);
    }
    assert.equal(typeof j.cursor, 'string', `${what}: cursor`);
    assert.match(j.cursor, CURSOR_SAFE_RE, `${what}: cursor ${JSON.stringify(j.cursor)} must be URL-safe`);
    assert.ok(Array.isArray(j.messages), `${what}: messages must be an array`);
    assert.ok(Array.isArray(j.gaps), `${what}: gaps must be an array`);
    for (const m of j.messages) {
        assert.deepEqual(Object.keys(m).sort(), ['channel', 'data', 'id'], `${what}: envelope ${JSON.stringify(m).slice(0, 200)}`);
        assert.match(m.id, ID_RE);
    }
    return r;
}

async function pollOk(base, query, opts = {}) {
    const r = await pollRequest(base, query, opts);
    return checkPollAnswer(r, `GET /poll?${query.slice(0, 120)}`);
}

/**
 * Pages through a channel set from `since` until `want` messages were collected (each poll
 * must answer with messages, at once); returns {batches, messages, cursor}.
 */
async function pollPages(base, channels, since, want, { maxPolls = 20 } = {}) {
    const batches = [];
    const messages = [];
    let cursor = since;
    while (messages.length < want) {
        assert.ok(batches.length < maxPolls, `more than ${maxPolls} polls for ${want} messages (got ${messages.length})`);
        const r = await pollOk(base, pq(channels, cursor));
        assert.ok(r.json.messages.length > 0,
            `poll ${batches.length + 1} from cursor ${cursor} answered after ${r.ms} ms without a message, ${want - messages.length} still to come`);
        assert.ok(r.ms < POLL_TIMEOUT_MS / 2, `poll ${batches.length + 1}: messages were waiting, yet the answer took ${r.ms} ms`);
        batches.push(r);
        messages.push(...r.json.messages);
        cursor = r.json.cursor;
    }
    return { batches, messages, cursor };
}

/** Waits until the server counts at least n polls (the holds have begun). */
function waitPolls(base, n, what = `${n} held polls`, timeoutMs = 5000) {
    return waitUntil(async () => (await connectionsGauge(base, 'poll')) >= n, { timeoutMs, what });
}

/**
 * The poll gauge to count from: waits (up to a hold and a bit) until polls of earlier tests have
 * ended, since one ending after the count is read would offset waitPolls' target by one.
 */
async function quietPolls(base) {
    try {
        await waitUntil(async () => (await connectionsGauge(base, 'poll')) === 0, { timeoutMs: POLL_TIMEOUT_MS + 3000, what: 'no held polls' });
    } catch {
        /* a test that holds its own polls: count from what is there */
    }
    return connectionsGauge(base, 'poll');
}

/**
 * On the Redis engine, waits until the node's subscription to the channel is in effect in Redis:
 * a poll without `since` takes only what is published from then on (the seam, docs/protocol.md),
 * and being counted as held comes a round trip earlier. No-op on the memory engine.
 */
async function waitEngineSubscribed(ch) {
    if (process.env.E2E_ENGINE !== 'redis' || !process.env.PUSHEDGE_TEST_REDIS_URL)
        return;
    const u = new URL(process.env.PUSHEDGE_TEST_REDIS_URL);
    const opts = { password: u.password ? decodeURIComponent(u.password) : undefined, db: u.pathname.length > 1 ? u.pathname.slice(1) : undefined };
    await waitUntil(async () => {
        const r = await redisCmd(Number(u.port || 6379), ['PUBSUB', 'NUMSUB', `pe:{${ch}}`], opts);
        return Number(r[1]) >= 1;
    }, { timeoutMs: 5000, what: `the node's SUBSCRIBE to pe:{${ch}}` });
}

/** Splits one HTTP/1.x response off the front of buf: {head, status, headers, body, rest} or null if incomplete. */
function parseHttpResponse(buf) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0)
        return null;
    const head = buf.subarray(0, end).toString('latin1');
    const lines = head.split('\r\n');
    const headers = {};
    for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
    }
    const m = /^HTTP\/(1\.[01]) (\d{3})/.exec(lines[0]);
    const cl = headers['content-length'];
    if (cl === undefined)
        return { head, version: m && m[1], status: m ? Number(m[2]) : null, headers, body: buf.subarray(end + 4), rest: null };
    if (buf.length < end + 4 + Number(cl))
        return null;
    return {
        head,
        version: m && m[1],
        status: m ? Number(m[2]) : null,
        headers,
        body: buf.subarray(end + 4, end + 4 + Number(cl)),
        rest: buf.subarray(end + 4 + Number(cl)),
    };
}

/* ------------------------------------------------------------------------------------------ */

describe('poll: retained messages and batches', () => {
    it('since=0 answers at once with every retained message, in order, as envelopes; cursor = the last ID', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('zero');
        const data = [{ n: 1 }, 'two', 3, [4, { four: true }], null, { text: 'six\nlines "quoted"' }];
        const ids = [];
        for (const d of data)
            ids.push(await publishOk(main.srv.url, ch, d));
        const r = await pollOk(main.srv.url, pq(ch, '0'));
        assert.ok(r.ms < 1000, `messages were retained, yet the answer took ${r.ms} ms`);
        assert.deepEqual(r.json.messages, data.map((d, i) => ({ channel: ch, id: ids[i], data: d })));
        assert.deepEqual(r.json.gaps, []);
        assert.equal(r.json.cursor, ids[ids.length - 1], 'with one channel the cursor is the last message ID');
    });

    it('since=<id of message k> answers k+1.. at once', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('sinceid');
        const ids = await publishMany(main.srv.url, ch, 10);
        for (const k of [1, 5, 9]) {
            const r = await pollOk(main.srv.url, pq(ch, ids[k - 1]));
            assert.deepEqual(r.json.messages.map((m) => m.data.n), Array.from({ length: 10 - k }, (_, i) => k + 1 + i), `since message ${k}`);
            assert.equal(r.json.cursor, ids[9]);
            assert.deepEqual(r.json.gaps, []);
        }
    });

    it('headers: 200, application/json, Cache-Control: no-store, Content-Length equal to the body, no chunking', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('hdr');
        await publishOk(main.srv.url, ch, { n: 1 });
        const r = await pollOk(main.srv.url, pq(ch, '0'), { headers: { 'accept-encoding': 'gzip, br' } });
        assert.equal(r.headers['transfer-encoding'], undefined, 'a poll answer is not chunked');
        assert.ok(r.headers['content-length'] !== undefined, 'a poll answer carries Content-Length');
        assert.equal(Number(r.headers['content-length']), r.body.length);
        assert.equal(r.headers['content-encoding'], undefined);
    });

    it('250 messages: paged in batches of at most 100, each message exactly once and in order', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('page');
        const ids = await publishMany(main.srv.url, ch, 250);
        const { batches, messages, cursor } = await pollPages(main.srv.url, ch, '0', 250);
        t.diagnostic(`batch sizes: ${batches.map((b) => b.json.messages.length).join(', ')}`);
        for (const b of batches)
            assert.ok(b.json.messages.length <= MAX_BATCH_MESSAGES, `a batch of ${b.json.messages.length} messages`);
        assert.ok(batches.length >= 3, `250 messages in ${batches.length} batches`);
        assert.deepEqual(messages.map((m) => m.id), ids, 'every message once, in order');
        assert.deepEqual(messages.map((m) => m.data.n), Array.from({ length: 250 }, (_, i) => i + 1));
        for (const b of batches)
            assert.equal(b.json.cursor, b.json.messages[b.json.messages.length - 1].id, 'a batch cursor is its last message');
        assert.equal(cursor, ids[249]);
        /* Nothing is left over: the next message is the only one after the final cursor. */
        const next = await publishOk(main.srv.url, ch, { n: 251 });
        const r = await pollOk(main.srv.url, pq(ch, cursor));
        assert.deepEqual(r.json.messages.map((m) => m.id), [next]);
    });

    it('large messages: a batch stops at about 256 KiB; paging still gets each message once', { timeout: 20000 }, async (t) => {
        const ch = uniqueChannel('bytes');
        const pad = 'x'.repeat(40000);
        const ids = await publishMany(main.srv.url, ch, 14, (i) => ({ n: i, pad }));
        const { batches, messages } = await pollPages(main.srv.url, ch, '0', 14);
        t.diagnostic(`batches: ${batches.map((b) => `${b.json.messages.length} msgs/${b.body.length} B`).join(', ')}`);
        assert.ok(batches.length >= 2, `560 KB of messages came in ${batches.length} batch(es)`);
        for (const b of batches)
            assert.ok(b.body.length <= MAX_BATCH_BYTES + 65536 + 4096, `a batch of ${b.body.length} bytes`);
        assert.deepEqual(messages.map((m) => m.id), ids);
    });

    it('two channels, 80 messages each: paging from since=0 gets each message once, in order per channel', { timeout: 20000 }, async (t) => {
        const A = uniqueChannel('pA'), B = uniqueChannel('pB');
        const [idsA, idsB] = await Promise.all([publishMany(main.srv.url, A, 80), publishMany(main.srv.url, B, 80)]);
        const { batches, messages, cursor } = await pollPages(main.srv.url, [A, B], '0', 160);
        t.diagnostic(`batch sizes: ${batches.map((b) => b.json.messages.length).join(', ')}`);
        for (const b of batches)
            assert.ok(b.json.messages.length <= MAX_BATCH_MESSAGES);
        assert.deepEqual(messages.filter((m) => m.channel === A).map((m) => m.id), idsA, `channel ${A}`);
        assert.deepEqual(messages.filter((m) => m.channel === B).map((m) => m.id), idsB, `channel ${B}`);
        assert.equal(messages.length, 160);
        assert.doesNotMatch(cursor, ID_RE, 'a two-channel cursor is the multi-channel form');
        const a81 = await publishOk(main.srv.url, A, { n: 81 });
        const r = await pollOk(main.srv.url, pq([A, B], cursor));
        assert.deepEqual(r.json.messages.map((m) => m.id), [a81], 'nothing repeated after the last batch');
    });
});

describe('poll: holding', () => {
    it('with nothing new it holds, then answers as soon as a message is published (well before the timeout)', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('hold');
        const last = await publishOk(main.srv.url, ch, { n: 0 });
        const before = await quietPolls(main.srv.url);
        const p = pollRequest(main.srv.url, pq(ch, last));
        await waitPolls(main.srv.url, before + 1, 'the poll to be held');
        const tPub = Date.now();
        const id = await publishOk(main.srv.url, ch, { n: 1 });
        const r = checkPollAnswer(await p, 'the held poll');
        const latency = Date.now() - tPub;
        assert.ok(latency < 500, `answered ${latency} ms after the publish`);
        assert.ok(r.ms < POLL_TIMEOUT_MS - 500, `answered after ${r.ms} ms (timeout ${POLL_TIMEOUT_MS} ms)`);
        assert.deepEqual(r.json.messages, [{ channel: ch, id, data: { n: 1 } }]);
        assert.equal(r.json.cursor, id);
        assert.deepEqual(r.json.gaps, []);
    });

    it('no since: only new messages (a held poll gets the next one, nothing retained)', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('new');
        await publishMany(main.srv.url, ch, 3);
        const before = await quietPolls(main.srv.url);
        const p = pollRequest(main.srv.url, pq(ch));
        await waitPolls(main.srv.url, before + 1, 'the poll to be held');
        await waitEngineSubscribed(ch);
        const id = await publishOk(main.srv.url, ch, { n: 4 });
        const r = checkPollAnswer(await p, 'the poll without since');
        assert.ok(r.ms < POLL_TIMEOUT_MS - 500, `answered after ${r.ms} ms`);
        assert.deepEqual(r.json.messages, [{ channel: ch, id, data: { n: 4 } }]);
    });

    it('on timeout: an empty list and a cursor from which the next poll misses nothing', { timeout: 15000 }, async () => {
        const seen = uniqueChannel('toSeen'), fresh = uniqueChannel('toFresh'), zero = uniqueChannel('toZero');
        const mA = uniqueChannel('toMA'), mB = uniqueChannel('toMB');
        const last = await publishOk(main.srv.url, seen, { n: 0 });
        await publishOk(main.srv.url, mA, { n: 0 });
        const cases = [
            { what: 'since=<last id>', channels: [seen], since: last, pub: seen },
            { what: 'no since, channel never published to', channels: [fresh], since: undefined, pub: fresh },
            { what: 'since=0, channel never published to', channels: [zero], since: '0', pub: zero },
            { what: 'two channels, no since', channels: [mA, mB], since: undefined, pub: mB },
        ];
        /* All held at once: the file's time budget pays one timeout. */
        const answers = await Promise.all(cases.map((c) => pollRequest(main.srv.url, pq(c.channels, c.since))));
        for (const [i, c] of cases.entries()) {
            const r = checkPollAnswer(answers[i], c.what);
            assert.deepEqual(r.json.messages, [], `${c.what}: no message`);
            assert.deepEqual(r.json.gaps, [], `${c.what}: no gap`);
            assert.ok(r.ms >= POLL_TIMEOUT_MS - 250, `${c.what}: answered after ${r.ms} ms, before the ${POLL_TIMEOUT_MS} ms timeout`);
            assert.ok(r.ms <= POLL_TIMEOUT_MS + 1500, `${c.what}: answered after ${r.ms} ms (timeout ${POLL_TIMEOUT_MS} ms)`);
            if (c.since === last)
                assert.equal(r.json.cursor, last, `${c.what}: the cursor stays at the last message`);
        }
        /* Published after the timeout answer: the next poll from its cursor gets exactly that. */
        for (const [i, c] of cases.entries()) {
            const id = await publishOk(main.srv.url, c.pub, { after: 'timeout' });
            const r = await pollOk(main.srv.url, pq(c.channels, answers[i].json.cursor));
            assert.deepEqual(r.json.messages, [{ channel: c.pub, id, data: { after: 'timeout' } }],
                `${c.what}: poll from the timeout cursor ${answers[i].json.cursor}`);
            assert.ok(r.ms < 1000, `${c.what}: the message was waiting, yet the answer took ${r.ms} ms`);
        }
    });

    it('?timeout=N holds at most N s (steps 1, 2, 3, 5, 10, 15, capped by --poll-timeout), and the cursor still misses nothing', { timeout: 20000 }, async (t) => {
        const srv = await startServer(['--poll-timeout', '20']);
        t.after(() => srv.stop());
        const ch = uniqueChannel('short');
        const cases = [[1, 1000], [2, 2000], [4, 3000]];
        const answers = await Promise.all(cases.map(([n]) => pollRequest(srv.url, `${pq(ch)}&timeout=${n}`)));
        for (const [i, [n, ms]] of cases.entries()) {
            const r = checkPollAnswer(answers[i], `timeout=${n}`);
            assert.deepEqual(r.json.messages, []);
            assert.ok(r.ms >= ms - 250 && r.ms <= ms + 1500, `timeout=${n}: answered after ${r.ms} ms, expected ~${ms}`);
        }
        const id = await publishOk(srv.url, ch, { n: 1 });
        const r = await pollOk(srv.url, `${pq(ch, answers[0].json.cursor)}&timeout=1`);
        assert.deepEqual(r.json.messages, [{ channel: ch, id, data: { n: 1 } }]);
        /* Above --poll-timeout: the server's own timeout (here 2 s on the shared server). */
        const capped = checkPollAnswer(await pollRequest(main.srv.url, `${pq(ch)}&timeout=60`), 'timeout=60');
        assert.ok(capped.ms < POLL_TIMEOUT_MS + 1500, `capped at --poll-timeout: ${capped.ms} ms`);
    });

    it('50 concurrent polls on one channel and cursor are all answered by one publish', { timeout: 15000 }, async () => {
        const ch = uniqueChannel('fifty');
        const last = await publishOk(main.srv.url, ch, { n: 0 });
        const before = await quietPolls(main.srv.url);
        const polls = Array.from({ length: 50 }, () => pollRequest(main.srv.url, pq(ch, last)));
        await waitPolls(main.srv.url, before + 50, '50 held polls');
        const tPub = Date.now();
        const id = await publishOk(main.srv.url, ch, { n: 1 });
        const answers = await Promise.all(polls);
        const latency = Date.now() - tPub;
        for (const [i, r0] of answers.entries()) {
            const r = checkPollAnswer(r0, `poll ${i}`);
            assert.deepEqual(r.json.messages, [{ channel: ch, id, data: { n: 1 } }], `poll ${i}`);
            assert.equal(r.json.cursor, id);
        }
        assert.ok(latency < 1500, `the last of 50 polls answered ${latency} ms after the publish`);
        await waitUntil(async () => (await connectionsGauge(main.srv.url, 'poll')) <= before, { timeoutMs: 3000, what: 'the poll gauge to come back' });
    });

    it('a burst published during a hold: every message reaches the client once, across as many polls as it takes', { timeout: 15000 }, async (t) => {
        const ch = uniqueChannel('burst');
        const last = await publishOk(main.srv.url, ch, { n: 0 });
        const before = await quietPolls(main.srv.url);
        const p = pollRequest(main.srv.url, pq(ch, last));
        await waitPolls(main.srv.url, before + 1, 'the poll to be held');
        const ids = await publishMany(main.srv.url, ch, 30, (i) => ({ n: i }), 4);
        const first = checkPollAnswer(await p, 'the held poll');
        const got = [...first.json.messages];
        let cursor = first.json.cursor;
        for (let i = 0; got.length < 30 && i < 30; i++) {
            const r = await pollOk(main.srv.url, pq(ch, cursor));
            got.push(...r.json.messages);
            cursor = r.json.cursor;
        }
        t.diagnostic(`the held poll answered with ${first.json.messages.length} of the 30`);
        assert.deepEqual(got.map((m) => m.id), [...ids].sort(cmpId), 'each message once, in ID order');
    });
});

describe('poll: paging while publishing', () => {
    it('a client paging from since=<id> while 300 messages are published gets each once, in order', { timeout: 20000 }, async () => {
        const ch = uniqueChannel('seam');
        const early = await publishMany(main.srv.url, ch, 10);
        const burst = publishMany(main.srv.url, ch, 300, (i) => ({ n: 10 + i }));
        const got = [];
        let cursor = early[4];
        for (let i = 0; got.length < 305; i++) {
            assert.ok(i < 400, `more than 400 polls; ${got.length} of 305 messages so far`);
            const r = await pollOk(main.srv.url, pq(ch, cursor));
            assert.deepEqual(r.json.gaps, []);
            got.push(...r.json.messages);
            cursor = r.json.cursor;
        }
        await burst;
        assert.deepEqual(got.map((m) => m.data.n), Array.from({ length: 305 }, (_, i) => i + 6), 'messages 6..310, each once');
    });
});

describe('poll: several channels', () => {
    it('channel=a&channel=b: messages of both, order per channel, and a multi-channel cursor that resumes exactly', { timeout: 15000 }, async () => {
        const A = uniqueChannel('mA'), B = uniqueChannel('mB');
        const a1 = await publishOk(main.srv.url, A, { n: 1 });
        const b1 = await publishOk(main.srv.url, B, { n: 1 });
        const a2 = await publishOk(main.srv.url, A, { n: 2 });
        const b2 = await publishOk(main.srv.url, B, { n: 2 });
        const a3 = await publishOk(main.srv.url, A, { n: 3 });
        const r1 = await pollOk(main.srv.url, pq([A, B], '0'));
        assert.deepEqual(r1.json.messages.filter((m) => m.channel === A).map((m) => m.id), [a1, a2, a3]);
        assert.deepEqual(r1.json.messages.filter((m) => m.channel === B).map((m) => m.id), [b1, b2]);
        assert.equal(r1.json.messages.length, 5);
        const c1 = r1.json.cursor;
        assert.doesNotMatch(c1, ID_RE, `a two-channel cursor (${c1}) is the multi-channel form`);
        assert.ok(c1.length <= 200, `${c1.length} characters for two channels`);

        const a4 = await publishOk(main.srv.url, A, { n: 4 });
        const b3 = await publishOk(main.srv.url, B, { n: 3 });
        const r2 = await pollOk(main.srv.url, pq([A, B], c1));
        assert.deepEqual(r2.json.messages.map((m) => m.id).sort(cmpId), [a4, b3].sort(cmpId), 'exactly the two new messages');
        /* The parameter order does not matter for the cursor. */
        const b4 = await publishOk(main.srv.url, B, { n: 4 });
        const r3 = await pollOk(main.srv.url, pq([B, A], r2.json.cursor));
        assert.deepEqual(r3.json.messages.map((m) => m.id), [b4]);

        /* Held on both: a message on either answers. */
        const before = await quietPolls(main.srv.url);
        const p = pollRequest(main.srv.url, pq([A, B], r3.json.cursor));
        await waitPolls(main.srv.url, before + 1, 'the two-channel poll to be held');
        const a5 = await publishOk(main.srv.url, A, { n: 5 });
        const r4 = checkPollAnswer(await p, 'the held two-channel poll');
        assert.ok(r4.ms < POLL_TIMEOUT_MS - 500, `answered after ${r4.ms} ms`);
        assert.deepEqual(r4.json.messages, [{ channel: A, id: a5, data: { n: 5 } }]);
        /* One channel resumed from the two-channel cursor takes its own position. */
        const a6 = await publishOk(main.srv.url, A, { n: 6 });
        const r5 = await pollOk(main.srv.url, pq(A, r4.json.cursor));
        assert.deepEqual(r5.json.messages.map((m) => m.id), [a6]);
    });

    it('a duplicate channel parameter is an error or the same subscription, never a duplicate delivery', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('dup');
        const id = await publishOk(main.srv.url, ch, { n: 1 });
        const r = await pollRequest(main.srv.url, pq([ch, ch], '0'));
        if (r.status === 400) {
            checkJsonError(r, 400, 'a duplicated channel');
        } else {
            checkPollAnswer(r, 'a duplicated channel');
            assert.deepEqual(r.json.messages.map((m) => m.id), [id]);
        }
    });
});

describe('poll: gaps (--history-size 5)', () => {
    it('publish 20, poll since the first ID: "gaps":["<channel>"] and the 5 retained messages', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('gap');
        const ids = await publishMany(small.srv.url, ch, 20);
        const r = await pollOk(small.srv.url, pq(ch, ids[0]));
        assert.deepEqual(r.json.gaps, [ch]);
        assert.deepEqual(r.json.messages.map((m) => m.data.n), [16, 17, 18, 19, 20]);
        assert.deepEqual(r.json.messages.map((m) => m.id), ids.slice(15));
        assert.equal(r.json.cursor, ids[19]);
        /* The returned cursor is past the gap: no second gap. */
        const id21 = await publishOk(small.srv.url, ch, { n: 21 });
        const r2 = await pollOk(small.srv.url, pq(ch, r.json.cursor));
        assert.deepEqual(r2.json.gaps, []);
        assert.deepEqual(r2.json.messages.map((m) => m.id), [id21]);
    });

    it('no gap at the boundary (the cursor is the message just before the oldest retained) nor for since=0', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('nogap');
        const ids = await publishMany(small.srv.url, ch, 20);
        const r = await pollOk(small.srv.url, pq(ch, ids[14]));
        assert.deepEqual(r.json.gaps, []);
        assert.deepEqual(r.json.messages.map((m) => m.id), ids.slice(15));
        const z = await pollOk(small.srv.url, pq(ch, '0'));
        assert.deepEqual(z.json.gaps, [], 'since=0 means from the oldest retained, without a gap');
        assert.deepEqual(z.json.messages.map((m) => m.id), ids.slice(15));
    });

    it('two channels: only the trimmed one is in "gaps"', { timeout: 10000 }, async () => {
        const T = uniqueChannel('gT'), U = uniqueChannel('gU');
        const ids = await publishMany(small.srv.url, T, 20);
        const u = await publishMany(small.srv.url, U, 2);
        const r = await pollOk(small.srv.url, pq([T, U], ids[0]));
        assert.deepEqual(r.json.gaps, [T]);
        assert.deepEqual(r.json.messages.filter((m) => m.channel === T).map((m) => m.id), ids.slice(15));
        assert.deepEqual(r.json.messages.filter((m) => m.channel === U).map((m) => m.id), u);
    });

    it('--history-size 150, 200 published: the gap and a full batch of 100, then the other 50, each once', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('gapfull');
        const ids = await publishMany(mid.srv.url, ch, 200);
        const r1 = await pollOk(mid.srv.url, pq(ch, ids[0]));
        assert.deepEqual(r1.json.gaps, [ch]);
        assert.ok(r1.json.messages.length > 0 && r1.json.messages.length <= MAX_BATCH_MESSAGES, `${r1.json.messages.length} messages`);
        const { messages } = await pollPages(mid.srv.url, ch, r1.json.cursor, 150 - r1.json.messages.length);
        assert.deepEqual([...r1.json.messages, ...messages].map((m) => m.id), ids.slice(50), 'the 150 retained, each once, in order');
    });

    it('two channels, one trimmed, more than a batch in all: the gap is reported once, every message once', { timeout: 10000 }, async (t) => {
        const A = uniqueChannel('gfA'), B = uniqueChannel('gfB');
        const b0 = await publishOk(mid.srv.url, B, { n: 0 });
        /* IDs are per channel: A's first message must be at a later millisecond than b0 to
         * count as "after" the single-ID cursor b0 on channel A. */
        const b0ms = Number(b0.split('-')[0]);
        await waitUntil(() => Date.now() > b0ms + 1, { timeoutMs: 1000, intervalMs: 1, what: 'the next millisecond' });
        const idsA = await publishMany(mid.srv.url, A, 120);
        const idsB = await publishMany(mid.srv.url, B, 199, (i) => ({ n: i }));
        /* A single ID applies to both channels as a point in time: B is trimmed past it, A not. */
        const items = [];
        const log = [];
        let cursor = b0;
        for (let i = 0; items.filter((x) => !x.gap).length < 270; i++) {
            assert.ok(i < 10, `more than 10 polls; ${log.join('; ')}`);
            const r = await pollOk(mid.srv.url, pq([A, B], cursor));
            const ns = (ch) => r.json.messages.filter((m) => m.channel === ch).map((m) => m.data.n);
            const range = (a) => (a.length ? `${a[0]}..${a[a.length - 1]} (${a.length})` : '-');
            log.push(`poll ${i + 1}: A ${range(ns(A))}, B ${range(ns(B))}, gaps ${JSON.stringify(r.json.gaps)}, ${r.ms} ms`);
            assert.ok(r.json.messages.length + r.json.gaps.length > 0, `poll ${i + 1} from ${cursor}: nothing; ${log.join('; ')}`);
            items.push(...r.json.gaps.map((g) => ({ gap: g })), ...r.json.messages);
            cursor = r.json.cursor;
        }
        t.diagnostic(log.join('; '));
        assert.deepEqual(items.filter((x) => x.gap), [{ gap: B }], 'one gap, for the trimmed channel');
        assert.deepEqual(items.filter((x) => x.channel === A).map((m) => m.id), idsA);
        assert.deepEqual(items.filter((x) => x.channel === B).map((m) => m.id), idsB.slice(-150));
        const gapAt = items.findIndex((x) => x.gap);
        const firstB = items.findIndex((x) => x.channel === B);
        assert.ok(gapAt < firstB, 'the gap comes before the channel\'s retained messages');
    });

    it('a cursor from the future on an empty channel: a gap at once; the returned cursor then misses nothing', { timeout: 10000 }, async () => {
        const ch = uniqueChannel('future');
        const r = await pollOk(main.srv.url, pq(ch, `${Date.now() + 3600e3}-0`));
        assert.ok(r.ms < 1000, `a gap is news: answered after ${r.ms} ms`);
        assert.deepEqual(r.json.gaps, [ch]);
        assert.deepEqual(r.json.messages, []);
        const id = await publishOk(main.srv.url, ch, { n: 1 });
        const r2 = await pollOk(main.srv.url, pq(ch, r.json.cursor));
        assert.deepEqual(r2.json.messages.map((m) => m.id), [id], `poll from the cursor after the gap (${r.json.cursor})`);
        assert.deepEqual(r2.json.gaps, [], 'the gap is reported once');
    });
});

describe('poll: HTTP versions', () => {
    it('HTTP/1.0: a complete Content-Length answer, no chunking (retained and held)', { timeout: 15000 }, async () => {
        const ch = uniqueChannel('h10');
        const id1 = await publishOk(main.srv.url, ch, { n: 1 });
        const done = (text) => {
            const p = parseHttpResponse(Buffer.from(text, 'latin1'));
            return p !== null && p.rest !== null;
        };
        const r = await rawExchange(main.srv.port, `GET /poll?${pq(ch, '0')} HTTP/1.0\r\n\r\n`, { timeoutMs: 5000, until: done });
        const p = parseHttpResponse(r.data);
        assert.ok(p, `no complete response: ${JSON.stringify(r.text.slice(0, 300))}`);
        assert.equal(p.status, 200, p.head);
        assert.doesNotMatch(p.head, /transfer-encoding/i, 'HTTP/1.0 has no chunked encoding');
        assert.ok(p.headers['content-length'] !== undefined, `an HTTP/1.0 answer needs Content-Length: ${p.head}`);
        assert.deepEqual(JSON.parse(p.body.toString('utf8')).messages.map((m) => m.id), [id1]);

        /* Held, then answered by a publish. */
        const before = await quietPolls(main.srv.url);
        const held = rawExchange(main.srv.port, `GET /poll?${pq(ch, id1)} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`, { timeoutMs: 5000, until: done });
        await waitPolls(main.srv.url, before + 1, 'the HTTP/1.0 poll to be held');
        const id2 = await publishOk(main.srv.url, ch, { n: 2 });
        const h = await held;
        const hp = parseHttpResponse(h.data);
        assert.ok(hp && hp.rest !== null, `no complete held response: ${JSON.stringify(h.text.slice(0, 300))}`);
        assert.equal(hp.status, 200);
        assert.doesNotMatch(hp.head, /transfer-encoding/i);
        assert.deepEqual(JSON.parse(hp.body.toString('utf8')).messages.map((m) => m.id), [id2]);
    });

    it('HTTP/1.1 keep-alive: consecutive polls on one connection, each a complete Content-Length answer', { timeout: 15000 }, async (t) => {
        const ch = uniqueChannel('keep');
        const ids = await publishMany(main.srv.url, ch, 3);
        const sock = await rawConnect(main.srv.port);
        t.after(() => sock.destroy());
        let buf = Buffer.alloc(0);
        sock.on('data', (c) => (buf = Buffer.concat([buf, c])));
        sock.resume();
        const ask = async (query) => {
            sock.write(`GET /poll?${query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
            const p = await waitUntil(() => {
                const x = parseHttpResponse(buf);
                return x && x.rest !== null ? x : null;
            }, { timeoutMs: 5000, intervalMs: 10, what: `the answer to ${query}` });
            buf = p.rest;
            return p;
        };
        const p1 = await ask(pq(ch, '0'));
        assert.equal(p1.status, 200);
        const j1 = JSON.parse(p1.body.toString('utf8'));
        assert.deepEqual(j1.messages.map((m) => m.id), ids);
        const id4 = await publishOk(main.srv.url, ch, { n: 4 });
        const p2 = await ask(pq(ch, j1.cursor));
        assert.equal(p2.status, 200);
        assert.deepEqual(JSON.parse(p2.body.toString('utf8')).messages.map((m) => m.id), [id4]);
        assert.equal(sock.closedByPeer, false, 'the connection stays open between polls');
    });

    it('HTTP/2 (h2c prior knowledge): retained, held and concurrent polls on one connection; errors', { timeout: 15000 }, async (t) => {
        const session = await h2connect(main.srv.url);
        t.after(() => session.destroy());
        const ch = uniqueChannel('h2');
        const id1 = await publishOk(main.srv.url, ch, { n: 1 });
        const r = await pollOk(main.srv.url, pq(ch, '0'), { session });
        assert.deepEqual(r.json.messages, [{ channel: ch, id: id1, data: { n: 1 } }]);
        assert.equal(r.json.cursor, id1);

        const before = await quietPolls(main.srv.url);
        const polls = Array.from({ length: 5 }, () => pollRequest(main.srv.url, pq(ch, id1), { session }));
        await waitPolls(main.srv.url, before + 5, '5 held h2 polls');
        const pub = await httpRequest(main.srv.url, `/api/publish?channel=${ch}`, {
            session,
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ n: 2 }),
        });
        assert.equal(pub.status, 200, pub.text);
        for (const a of await Promise.all(polls)) {
            checkPollAnswer(a, 'a held h2 poll');
            assert.deepEqual(a.json.messages, [{ channel: ch, id: pub.json.id, data: { n: 2 } }]);
            assert.ok(a.ms < POLL_TIMEOUT_MS - 300, `answered after ${a.ms} ms`);
        }
        checkJsonError(await pollRequest(main.srv.url, 'channel=a%20b', { session }), 400, 'a bad channel over h2');
        assert.deepEqual(session.errors, []);
    });
});

describe('poll: HTTP/2 streams that leave', () => {
    it('held h2 polls cancelled (RST_STREAM) or whose session is destroyed: gauge back to 0, later publishes are harmless', { timeout: 15000 }, async () => {
        const ch = uniqueChannel('h2rst');
        const before = await quietPolls(main.srv.url);
        const s1 = await h2connect(main.srv.url);
        const s2 = await h2connect(main.srv.url);
        const streams = [];
        for (const s of [s1, s2]) {
            for (let i = 0; i < 10; i++) {
                const st = s.request({ ':method': 'GET', ':path': `/poll?${pq(i % 2 ? ch : [ch, `${ch}-b`])}` });
                st.on('error', () => {});
                st.resume();
                st.end();
                streams.push(st);
            }
        }
        await waitPolls(main.srv.url, before + 20, '20 held h2 polls');
        for (const st of streams.slice(0, 10))
            st.close(0x8 /* CANCEL */);
        s2.destroy();
        await waitUntil(async () => (await connectionsGauge(main.srv.url, 'poll')) <= before, {
            timeoutMs: POLL_TIMEOUT_MS + 2000,
            what: 'the poll gauge back after the h2 cancellations',
        });
        await publishOk(main.srv.url, ch, { n: 1 });
        await publishOk(main.srv.url, `${ch}-b`, { n: 1 });
        await assertAlive(main.srv, 'cancelled h2 polls');
        /* The session itself still works. */
        const r = await pollOk(main.srv.url, pq(ch, '0'), { session: s1 });
        assert.equal(r.json.messages.length, 1);
        s1.destroy();
    });
});

describe('poll: bad input', () => {
    const cases = [
        ['channel=a%20b', 'bad_channel'],
        [`channel=${'x'.repeat(201)}`, 'bad_channel'],
        ['channel=', 'bad_channel'],
        ['channel=ok&channel=b%2Fad', 'bad_channel'],
        ['channel=ok&since=not-a-cursor!', 'bad_cursor'],
        ['channel=ok&since=12-x', 'bad_cursor'],
        ['channel=ok&since=-1', 'bad_cursor'],
        ['channel=ok&timeout=0', 'bad_timeout'],
        ['channel=ok&timeout=abc', 'bad_timeout'],
        ['channel=ok&timeout=-1', 'bad_timeout'],
        ['channel=ok&timeout=1234567', 'bad_timeout'],
        ['', null],
        ['since=0', null],
    ];
    for (const [query, code] of cases) {
        it(`GET /poll?${query.slice(0, 40)}: 400 JSON error${code ? ' ' + code : ''}`, { timeout: 10000 }, async () => {
            const r = await pollRequest(main.srv.url, query, { timeoutMs: 3000 });
            checkJsonError(r, 400, `?${query.slice(0, 60)}`);
            if (code)
                assert.equal(r.json.error.code, code);
        });
    }

    it('GET /poll without any query: 400 JSON error', { timeout: 10000 }, async () => {
        checkJsonError(await httpRequest(main.srv.url, '/poll', { timeoutMs: 3000 }), 400, 'GET /poll');
    });

    it('POST, PUT, DELETE /poll: 405 with Allow: GET and a JSON error', { timeout: 10000 }, async () => {
        for (const method of ['POST', 'PUT', 'DELETE']) {
            const r = await httpRequest(main.srv.url, `/poll?${pq('ok', '0')}`, { method, headers: { 'content-type': 'application/json' }, body: '{}', timeoutMs: 3000 });
            checkJsonError(r, 405, `${method} /poll`);
            assert.match(String(r.headers.allow), /\bGET\b/, `${method}: Allow`);
        }
        await assertAlive(main.srv);
    });
});

describe('poll: clients that leave, and draining', () => {
    it('200 polls whose clients vanish mid-hold: server alive, gauge back to 0 within poll-timeout + 2 s, bounded memory', { timeout: 45000 }, async (t) => {
        /* A small ASan quarantine, so that freed memory is reused and RSS means something. */
        const asan = (process.env.ASAN_OPTIONS ? process.env.ASAN_OPTIONS + ':' : '') + 'quarantine_size_mb=1';
        const srv = await startServer(['--poll-timeout', String(POLL_TIMEOUT_S)], { ASAN_OPTIONS: asan });
        let stopped = null;
        t.after(() => stopped ?? srv.stop('SIGKILL'));
        const round = async (publishAfter) => {
            const ch = uniqueChannel('vanish');
            const socks = [];
            try {
                for (let i = 0; i < 200; i += 50)
                    socks.push(...(await Promise.all(Array.from({ length: 50 }, (_, j) =>
                        rawConnect(srv.port, `GET /poll?${pq(i + j < 100 ? ch : [ch, `${ch}-b`])} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)))));
                await waitPolls(srv.url, 200, '200 held polls', 15000);
            } finally {
                for (const s of socks)
                    s.destroy();
            }
            const t0 = Date.now();
            /* Either the answer is written into vanished connections now, or at the timeout. */
            if (publishAfter)
                await publishOk(srv.url, ch, { to: 'nobody' });
            await assertAlive(srv, '200 vanished polls');
            await waitUntil(async () => (await connectionsGauge(srv.url, 'poll')) === 0, {
                timeoutMs: POLL_TIMEOUT_MS + 2000 - (Date.now() - t0),
                intervalMs: 100,
                what: 'pushedge_connections{transport="poll"} back to 0',
            });
            return Date.now() - t0;
        };
        const warm = await round(false);
        const rss0 = rssKiB(srv.pid);
        const ms1 = await round(true);
        const ms2 = await round(false);
        const ms3 = await round(true);
        const rss1 = rssKiB(srv.pid);
        t.diagnostic(`gauge back to 0 after ${warm}, ${ms1}, ${ms2}, ${ms3} ms; VmRSS ${rss0} -> ${rss1} KiB over 600 vanished polls`);
        assert.ok((rss1 - rss0) / 1024 < 8, `VmRSS grew by ${((rss1 - rss0) / 1024).toFixed(1)} MiB`);
        /* Still fully working. */
        const ch = uniqueChannel('after');
        const id = await publishOk(srv.url, ch, { n: 1 });
        assert.deepEqual((await pollOk(srv.url, pq(ch, '0'))).json.messages.map((m) => m.id), [id]);
        stopped = srv.stop();
        const r = await stopped;
        assert.equal(r.killed, false);
        assert.equal(r.code, 0, `exit ${r.code} (signal ${r.signal}); a non-zero code under ASan may be a leak report:\n${r.stderr.slice(-4000)}`);
    });

    it('SIGTERM while polls are held (--drain-spread 0): each is answered 200 at once with its hint, then the process exits 0', { timeout: 30000 }, async (t) => {
        /* Told all at once; the paced drain (the default) is drain.test.mjs's. */
        const srv = await startServer(['--poll-timeout', '20', '--drain-timeout', '10', '--drain-spread', '0']);
        t.after(() => srv.stop('SIGKILL'));
        const ch = uniqueChannel('drain'), ch2 = uniqueChannel('drain2');
        const last = await publishOk(srv.url, ch, { n: 0 });
        const session = await h2connect(srv.url);
        t.after(() => session.destroy());
        const polls = [
            ...Array.from({ length: 8 }, () => pollRequest(srv.url, pq(ch, last), { timeoutMs: 25000 })),
            ...Array.from({ length: 4 }, () => pollRequest(srv.url, pq([ch, ch2]), { timeoutMs: 25000 })),
            ...Array.from({ length: 2 }, () => pollRequest(srv.url, pq(ch, last), { session, timeoutMs: 25000 })),
        ];
        const settled = polls.map((p) => p.then((r) => ({ r, at: Date.now() }), (e) => ({ e, at: Date.now() })));
        await waitPolls(srv.url, polls.length, `${polls.length} held polls`);
        const t0 = Date.now();
        srv.proc.kill('SIGTERM');
        const answers = await Promise.all(settled);
        for (const [i, a] of answers.entries()) {
            assert.ok(!a.e, `poll ${i}: ${a.e && a.e.message}`);
            checkPollAnswer(a.r, `poll ${i} during the drain`, { draining: true });
            assert.ok(a.r.json.reconnect_ms >= 1000 && a.r.json.reconnect_ms < 5000, `unpaced: 1-5 s (${a.r.json.reconnect_ms})`);
            assert.deepEqual(a.r.json.messages, []);
            assert.ok(a.at - t0 < 2000, `poll ${i} answered ${a.at - t0} ms after SIGTERM`);
        }
        assert.equal(answers[0].r.json.cursor, last, 'the drain answer carries a usable cursor');
        const r = await srv.stop(null);
        assert.equal(r.killed, false, r.stderr);
        assert.equal(r.code, 0, `exit ${r.code} (signal ${r.signal})\n${r.stderr.slice(-4000)}`);
        assert.ok(Date.now() - t0 < 4000, `exited ${Date.now() - t0} ms after SIGTERM with every poll answered`);
    });
});

/* ------------------------------------------------------------------------------------------ */
/* Cross-origin: --allowed-origin                                                              */


function varyHasOrigin(headers) {
    return String(headers.vary || '').split(',').some((v) => v.trim().toLowerCase() === 'origin');
}

/** A poll that answers at once (a retained message), with request headers. */
async function quickPoll(srv, headers) {
    const ch = uniqueChannel('cors');
    await publishOk(srv.url, ch, { n: 1 });
    const r = await pollRequest(srv.url, pq(ch, '0'), { headers, timeoutMs: 3000 });
    assert.equal(r.status, 200, r.text);
    return r;
}

async function sseHeaders(t, srv, headers) {
    const sse = await openSSE(srv.url, `/sse?channel=${uniqueChannel('cors')}`, { t, headers });
    sse.close();
    assert.equal(sse.status, 200);
    return sse.headers;
}

async function wsStatus(t, srv, headers) {
    const ws = await RawWS.open(srv.port, `/ws?channel=${uniqueChannel('wso')}`, { t, headers });
    ws.destroy();
    return ws;
}

describe('CORS (--allowed-origin)', () => {
    it('a listed origin: Access-Control-Allow-Origin echoes it and Vary: Origin, on /poll, /sse and /api/publish', { timeout: 10000 }, async (t) => {
        const p = await quickPoll(app.srv, { origin: APP });
        assert.equal(p.headers['access-control-allow-origin'], APP, '/poll');
        assert.ok(varyHasOrigin(p.headers), `/poll Vary: ${p.headers.vary}`);
        const s = await sseHeaders(t, app.srv, { origin: APP });
        assert.equal(s['access-control-allow-origin'], APP, '/sse');
        assert.ok(varyHasOrigin(s), `/sse Vary: ${s.vary}`);
        const pub = await httpRequest(app.srv.url, `/api/publish?channel=${uniqueChannel('corspub')}`, {
            method: 'POST', headers: { 'content-type': 'application/json', origin: APP }, body: '{"n":1}',
        });
        assert.equal(pub.status, 200);
        assert.equal(pub.headers['access-control-allow-origin'], APP, '/api/publish');
    });

    it('another origin: 403 origin_not_allowed, readable by that page (its own origin in ACAO); no Origin: served, no ACAO', { timeout: 10000 }, async (t) => {
        for (const origin of [EVIL, 'http://app.example:8080', 'https://app.example', 'null']) {
            for (const path of [pq(uniqueChannel('cors'), '0'), `/sse?channel=${uniqueChannel('cors')}`]) {
                const r = await httpRequest(app.srv.url, path.startsWith('/') ? path : `/poll?${path}`, { headers: { origin }, timeoutMs: 3000 });
                checkJsonError(r, 403, `${path} from ${origin}`);
                assert.equal(r.json.error.code, 'origin_not_allowed');
                assert.equal(r.headers['access-control-allow-origin'], origin, `${path} from ${origin}: the refusal is readable`);
                assert.ok(varyHasOrigin(r.headers), `${path} from ${origin}: Vary: Origin (caches)`);
            }
        }
        const p = await quickPoll(app.srv, {});
        assert.equal(p.headers['access-control-allow-origin'], undefined, '/poll without Origin');
        const s = await sseHeaders(t, app.srv, {});
        assert.equal(s['access-control-allow-origin'], undefined, '/sse without Origin');
    });

    it("'*': Access-Control-Allow-Origin: * for any origin", { timeout: 10000 }, async (t) => {
        for (const origin of [APP, EVIL]) {
            const p = await quickPoll(star.srv, { origin });
            assert.equal(p.headers['access-control-allow-origin'], '*', `/poll from ${origin}`);
            const s = await sseHeaders(t, star.srv, { origin });
            assert.equal(s['access-control-allow-origin'], '*', `/sse from ${origin}`);
        }
    });

    it('preflight from a listed origin: 204 with the allowed methods and headers (Last-Event-ID)', { timeout: 10000 }, async () => {
        for (const [srv, acao] of [[app.srv, APP], [star.srv, '*']]) {
            for (const [path, method] of [[`/poll?channel=x`, 'GET'], ['/sse?channel=x', 'GET'], ['/api/publish?channel=x', 'POST']]) {
                const what = `OPTIONS ${path} (${acao})`;
                const r = await httpRequest(srv.url, path, {
                    method: 'OPTIONS',
                    headers: { origin: APP, 'access-control-request-method': method, 'access-control-request-headers': method === 'GET' ? 'last-event-id' : 'content-type' },
                    timeoutMs: 3000,
                });
                assert.equal(r.status, 204, `${what}: ${r.status} ${r.text}`);
                assert.equal(r.body.length, 0, `${what}: a 204 has no body`);
                assert.equal(r.headers['access-control-allow-origin'], acao, what);
                const methods = String(r.headers['access-control-allow-methods'] || '').split(',').map((s) => s.trim().toUpperCase());
                assert.ok(methods.includes(method), `${what}: Access-Control-Allow-Methods ${r.headers['access-control-allow-methods']}`);
                const allowed = String(r.headers['access-control-allow-headers'] || '').split(',').map((s) => s.trim().toLowerCase());
                assert.ok(allowed.includes('last-event-id'), `${what}: Access-Control-Allow-Headers ${r.headers['access-control-allow-headers']}`);
                if (method === 'POST')
                    assert.ok(allowed.includes('content-type'), `${what}: Content-Type must be allowed for publishing`);
            }
        }
    });

    it('preflight from another origin: 403 with a JSON error, no Access-Control-Allow-Origin', { timeout: 10000 }, async () => {
        for (const path of ['/poll?channel=x', '/sse?channel=x', '/api/publish?channel=x']) {
            const r = await httpRequest(app.srv.url, path, {
                method: 'OPTIONS', headers: { origin: EVIL, 'access-control-request-method': 'GET' }, timeoutMs: 3000,
            });
            checkJsonError(r, 403, `OPTIONS ${path} from ${EVIL}`);
            assert.equal(r.headers['access-control-allow-origin'], undefined);
        }
    });

    it('without --allowed-origin: no Access-Control-Allow-Origin, and OPTIONS is 405', { timeout: 10000 }, async (t) => {
        const p = await quickPoll(main.srv, { origin: APP });
        assert.equal(p.headers['access-control-allow-origin'], undefined);
        const s = await sseHeaders(t, main.srv, { origin: APP });
        assert.equal(s['access-control-allow-origin'], undefined);
        for (const path of ['/poll?channel=x', '/sse?channel=x']) {
            const r = await httpRequest(main.srv.url, path, {
                method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'GET' }, timeoutMs: 3000,
            });
            checkJsonError(r, 405, `OPTIONS ${path} without a policy`);
            assert.equal(r.headers['access-control-allow-origin'], undefined);
        }
    });

    it('error answers carry the CORS headers for a listed origin (a page can read the error)', { timeout: 10000 }, async () => {
        const answers = [
            ['GET /poll bad channel', await pollRequest(app.srv.url, 'channel=a%20b', { headers: { origin: APP }, timeoutMs: 3000 }), 400],
            ['GET /poll no channel', await pollRequest(app.srv.url, 'since=0', { headers: { origin: APP }, timeoutMs: 3000 }), 400],
            ['GET /sse bad channel', await httpRequest(app.srv.url, '/sse?channel=a%20b', { headers: { origin: APP }, timeoutMs: 3000 }), 400],
            ['POST /poll', await httpRequest(app.srv.url, '/poll?channel=x', { method: 'POST', headers: { origin: APP }, body: '{}', timeoutMs: 3000 }), 405],
            ['POST /api/publish bad JSON', await httpRequest(app.srv.url, '/api/publish?channel=x', {
                method: 'POST', headers: { origin: APP, 'content-type': 'application/json' }, body: '{nope', timeoutMs: 3000,
            }), 400],
        ];
        for (const [what, r, status] of answers) {
            checkJsonError(r, status, what);
            assert.equal(r.headers['access-control-allow-origin'], APP, `${what}: ACAO`);
            assert.ok(varyHasOrigin(r.headers), `${what}: Vary`);
        }
    });

    it('WebSocket: a foreign Origin is refused with 403; listed, same-origin and absent Origins upgrade', { timeout: 10000 }, async (t) => {
        const port = app.srv.port;
        const refused = await wsStatus(t, app.srv, { Origin: EVIL });
        assert.equal(refused.status, 403, `Origin ${EVIL}: ${refused.statusLine}`);
        checkJsonError({ status: refused.status, headers: refused.headers, text: refused.body.toString('utf8'), json: JSON.parse(refused.body.toString('utf8') || 'null') }, 403, 'the 403 refusal');
        const otherPort = await wsStatus(t, app.srv, { Origin: `http://127.0.0.1:${port + 1}` });
        assert.equal(otherPort.status, 403, `an Origin on another port is another origin: ${otherPort.statusLine}`);
        for (const headers of [
            { Origin: APP },
            { Origin: `http://127.0.0.1:${port}` },
            { Host: 'edge.example:8443', Origin: 'https://edge.example:8443' },
            { Origin: null },
        ]) {
            const ws = await wsStatus(t, app.srv, headers);
            assert.equal(ws.status, 101, `${JSON.stringify(headers)}: ${ws.statusLine}`);
        }
    });

    it('WebSocket without --allowed-origin (or with *): any Origin upgrades', { timeout: 10000 }, async (t) => {
        for (const srv of [main.srv, star.srv]) {
            for (const origin of [EVIL, APP, 'null']) {
                const ws = await wsStatus(t, srv, { Origin: origin });
                assert.equal(ws.status, 101, `${srv.args.join(' ')}: Origin ${origin}: ${ws.statusLine}`);
            }
        }
    });

    it("an invalid --allowed-origin value ('http://x/path', no scheme, empty host, a comma list) exits 2 with one line naming it", { timeout: 20000 }, async () => {
        for (const value of ['http://x/path', 'app.example', 'http://', 'http://a.example,http://b.example']) {
            const port = await freePort();
            const r = await runOnce(['--listen', `127.0.0.1:${port}`, '--allowed-origin', value]);
            assert.equal(r.timedOut, false, `${value}: the process must refuse to start`);
            assert.equal(r.code, 2, `${value}: exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`);
            const lines = r.stderr.replace(/\n$/, '').split('\n');
            assert.equal(lines.length, 1, `${value}: one stderr line, got ${JSON.stringify(r.stderr)}`);
            assert.match(lines[0], /allowed-origin/i, `${value}: the line names the option`);
        }
        const port = await freePort();
        const env = await runOnce(['--listen', `127.0.0.1:${port}`], { PUSHEDGE_ALLOWED_ORIGIN: 'http://x/path' });
        assert.equal(env.code, 2, `PUSHEDGE_ALLOWED_ORIGIN=http://x/path: exit ${env.code}, stderr ${JSON.stringify(env.stderr)}`);
        assert.match(env.stderr, /allowed.origin/i);
    });
});

/*
 * Server-Sent Events over HTTP/1.1 (docs/protocol.md "Server-Sent Events", docs/conformance.md).
 *
 * Covered: response headers; the stream opening with retry: and, once live, a bare id: that
 * lets a client resume without loss; message events (default type, id = cursor after the
 * message, envelope data); LF-only framing; no since / since=0 / since=<id> / Last-Event-ID
 * (and its precedence) with no loss or duplicate at the replay/live seam; several channels
 * in one stream with opaque URL-safe cursors, resumed through since and Last-Event-ID, also
 * in a chain of reconnects under load; a single-channel subscription resumed from a
 * several-channel cursor; gaps (trimmed by size, by age, a cursor from the future; one per
 * trimmed channel, none at the exact boundary); heartbeat comments; padding; fan-out to
 * several subscribers; a slow consumer that never reads (dropped, counted, bounded memory,
 * resumable, other subscribers unaffected).
 *
 * Not covered here: HTTP/2 (h2.test.mjs), draining (drain.test.mjs), malformed requests
 * (badinput.test.mjs), real EventSource implementations (browser suite).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    CURSOR_SAFE_RE,
    ID_RE,
    SSEClient,
    assertAlive,
    cmpId,
    delay,
    getMetrics,
    metricValue,
    openSSE,
    publishMany,
    publishOk,
    rawConnect,
    rawExchange,
    rssKiB,
    sharedServer,
    startServer,
    uniqueChannel,
    waitUntil,
} from './lib.mjs';

const main = sharedServer(before, after);
/* docs/operations.md, Limits: SSE bytes queued per stream before it is a slow consumer. */
const SSE_MAX_QUEUE = 4 << 20;

const msgs = (sse) => sse.events.filter((e) => e.type === 'message');
const gaps = (sse) => sse.events.filter((e) => e.type === 'gap');

/**
 * Publishes a sentinel to each channel and waits until all sentinels arrived; returns
 * {channel: [data of each non-sentinel message, in arrival order]} for everything received
 * on this stream. Checking "exactly these messages" this way needs no fixed wait.
 */
async function drainWithSentinels(sse, url, channels, timeoutMs = 5000) {
    for (const ch of channels)
        await publishOk(url, ch, { sentinel: true });
    await sse.waitFor(
        () => channels.every((ch) => sse.envelopes().some((e) => e.channel === ch && e.data && e.data.sentinel)),
        timeoutMs,
        `the sentinels on ${channels.join(', ')}`,
    );
    const out = {};
    for (const ch of channels)
        out[ch] = [];
    for (const env of sse.envelopes()) {
        if (env.data && env.data.sentinel)
            continue;
        out[env.channel].push(env.data);
    }
    return out;
}

/** Waits for the message whose data.n === n on channel ch (or any channel). */
function waitN(sse, n, ch = null, timeoutMs = 5000) {
    return sse.waitFor(
        () => sse.envelopes().find((e) => (ch === null || e.channel === ch) && e.data && e.data.n === n),
        timeoutMs,
        `message n=${n}${ch ? ' on ' + ch : ''}`,
    );
}

describe('SSE: response and framing', () => {
    it('headers: 200, text/event-stream, no-cache, X-Accel-Buffering: no, no length, no compression', { timeout: 10000 }, async (t) => {
        const sse = await openSSE(main.srv.url, `/sse?channel=${uniqueChannel('hdr')}`, {
            t,
            headers: { 'accept-encoding': 'gzip, deflate, br' },
        });
        assert.equal(sse.status, 200);
        assert.match(String(sse.headers['content-type']), /^text\/event-stream\s*(;|$)/i);
        assert.match(String(sse.headers['cache-control']), /no-cache/i);
        assert.equal(String(sse.headers['x-accel-buffering']).toLowerCase(), 'no');
        assert.equal(sse.headers['content-length'], undefined, 'an event stream has no Content-Length');
        assert.equal(sse.headers['content-encoding'], undefined, 'an event stream must not be compressed');
    });

    it('starts with a retry: field, then (once live) a bare id: without data', { timeout: 10000 }, async (t) => {
        const sse = await openSSE(main.srv.url, `/sse?channel=${uniqueChannel('start')}`, { t });
        const cursor = await sse.waitLive(5000);
        const text = sse.text.replace(/^\uFEFF/, '');
        assert.match(text, /^retry: ?\d+\n/, `the stream must start with retry: <digits>: ${JSON.stringify(text.slice(0, 80))}`);
        assert.equal(sse.items[0].kind, 'retry');
        assert.equal(sse.events.length, 0, 'no event may be dispatched before anything was published');
        assert.ok(cursor !== '(empty)', 'the bare id must carry a cursor');
        assert.match(cursor, CURSOR_SAFE_RE);
    });

    it('a message: default event type, id = the message id, data = the envelope; LF line endings', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('msg');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        const value = { text: 'two\nlines', list: [1, 2.5, 'x'] };
        const id = await publishOk(main.srv.url, ch, value);
        const ev = await sse.next((e) => true, 5000, 'the published message');
        assert.equal(ev.type, 'message');
        assert.equal(ev.hasEventField, false, 'messages use the default event type: no event: field');
        assert.equal(ev.hadId, true, 'each message event carries an id: field');
        assert.match(id, ID_RE);
        assert.equal(ev.lastEventId, id, 'with one channel the cursor is the message id');
        assert.deepEqual(JSON.parse(ev.data), { channel: ch, id, data: value });
        assert.equal(ev.data.includes('\n'), false, 'the envelope fits one data: line');
        assert.equal(sse.raw.includes(0x0d), false, 'the server emits LF line endings only');
        assert.equal(sse.headers['content-length'], undefined);
    });

    it('unknown query parameters (cache busters) are ignored; channel names are percent-decoded', { timeout: 10000 }, async (t) => {
        const ch = `${uniqueChannel('enc')}:room@x`;
        const sse = await openSSE(main.srv.url, `/sse?_=1732520000000&channel=${encodeURIComponent(ch)}&foo=bar`, { t });
        assert.equal(sse.status, 200);
        await sse.waitLive();
        await publishOk(main.srv.url, ch, { n: 1 });
        const ev = await sse.next(() => true, 5000, 'the message');
        assert.equal(JSON.parse(ev.data).channel, ch);
    });

    it('an HTTP/1.0 client gets a close-delimited stream (no chunked encoding)', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('http10');
        const r = await rawExchange(main.srv.port, `GET /sse?channel=${ch} HTTP/1.0\r\n\r\n`, {
            timeoutMs: 5000,
            until: (text) => /\r\n\r\n[^]*\nid: [^\n]*\n\n/.test(text),
        });
        assert.match(r.text, /^HTTP\/1\.[01] 200/);
        const head = r.text.slice(0, r.text.indexOf('\r\n\r\n'));
        assert.doesNotMatch(head, /transfer-encoding/i, 'HTTP/1.0 has no chunked encoding');
        assert.match(r.text.slice(head.length + 4), /^retry: \d+\n/);
    });

    it('fans out: three subscribers see the same 50 messages in the same order', { timeout: 15000 }, async (t) => {
        const ch = uniqueChannel('fan');
        const subs = [];
        for (let i = 0; i < 3; i++) {
            const s = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
            await s.waitLive();
            subs.push(s);
        }
        const ids = await publishMany(main.srv.url, ch, 50);
        for (const s of subs) {
            await waitN(s, 50);
            assert.deepEqual(s.envelopes().map((e) => e.id), ids);
        }
    });
});

describe('SSE: positions and resume (one channel)', () => {
    it('no since: only new messages', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('new');
        await publishOk(main.srv.url, ch, { n: 1 });
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await sse.waitLive();
        await publishOk(main.srv.url, ch, { n: 2 });
        const got = await drainWithSentinels(sse, main.srv.url, [ch]);
        assert.deepEqual(got[ch], [{ n: 2 }]);
    });

    it('since=0 replays every retained message from the oldest, then live ones', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('zero');
        const ids = await publishMany(main.srv.url, ch, 10);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        await waitN(sse, 10);
        await publishOk(main.srv.url, ch, { n: 11 });
        await waitN(sse, 11);
        const env = sse.envelopes();
        assert.deepEqual(env.map((e) => e.data.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert.deepEqual(env.slice(0, 10).map((e) => e.id), ids);
        assert.equal(gaps(sse).length, 0, 'since=0 on an untrimmed channel is no gap');
    });

    it('the default --history-size keeps the last 1000 messages', { timeout: 30000 }, async (t) => {
        const ch = uniqueChannel('hist1000');
        const ids = (await publishMany(main.srv.url, ch, 1001, (i) => ({ n: i }), 4)).sort(cmpId);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        await sse.waitFor(() => msgs(sse).length >= 1000, 10000, '1000 replayed messages');
        assert.deepEqual(sse.envelopes().map((e) => e.id), ids.slice(1), 'the newest 1000, oldest first');
    });

    it('since=0 on a channel never published to: no gap, live messages', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('zeroempty');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        await sse.waitLive();
        await publishOk(main.srv.url, ch, { n: 1 });
        const got = await drainWithSentinels(sse, main.srv.url, [ch]);
        assert.deepEqual(got[ch], [{ n: 1 }]);
        assert.equal(gaps(sse).length, 0);
    });

    it('since=<id of message k> replays k+1.. exactly, with no loss or duplicate at the seam with live messages', { timeout: 30000 }, async (t) => {
        const ch = uniqueChannel('seam');
        const ids = await publishMany(main.srv.url, ch, 10);
        /* Messages 11..200 are published while the subscriber connects and replays. */
        const burst = publishMany(main.srv.url, ch, 190, (i) => ({ n: i + 10 }));
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=${ids[4]}`, { t });
        await burst;
        await waitN(sse, 200, null, 10000);
        const ns = sse.envelopes().map((e) => e.data.n);
        const expected = Array.from({ length: 195 }, (_, i) => i + 6);
        assert.deepEqual(ns, expected, 'messages 6..200, each once, in order');
        const evIds = msgs(sse).map((e) => e.lastEventId);
        for (let i = 1; i < evIds.length; i++)
            assert.ok(cmpId(evIds[i - 1], evIds[i]) < 0, `event ids must increase: ${evIds[i - 1]} then ${evIds[i]}`);
    });

    it('seam, repeated: 5 subscribers joining at different positions during a burst', { timeout: 30000 }, async (t) => {
        const ch = uniqueChannel('seam5');
        const ids = await publishMany(main.srv.url, ch, 20);
        const burst = publishMany(main.srv.url, ch, 100, (i) => ({ n: i + 20 }));
        const subs = [];
        for (const k of [1, 5, 10, 15, 20]) {
            subs.push({ k, sse: await openSSE(main.srv.url, `/sse?channel=${ch}&since=${ids[k - 1]}`, { t }) });
        }
        await burst;
        for (const { k, sse } of subs) {
            await waitN(sse, 120, null, 10000);
            const ns = sse.envelopes().map((e) => e.data.n);
            assert.deepEqual(ns, Array.from({ length: 120 - k }, (_, i) => i + k + 1), `subscriber from ${k}`);
        }
    });

    it('seam with concurrent publishers: every subscriber gets exactly the messages after its position', { timeout: 30000 }, async (t) => {
        const ch = uniqueChannel('seamc');
        const early = (await publishMany(main.srv.url, ch, 40, (i) => ({ n: i }), 8)).sort(cmpId);
        const burstIds = publishMany(main.srv.url, ch, 300, (i) => ({ n: 40 + i }), 8);
        const subs = [];
        for (const k of [0, 9, 19, 29, 39])
            subs.push({ k, sse: await openSSE(main.srv.url, `/sse?channel=${ch}&since=${early[k]}`, { t }) });
        const all = [...early, ...(await burstIds)].sort(cmpId);
        for (const { k, sse } of subs) {
            const want = all.filter((id) => cmpId(id, early[k]) > 0);
            await sse.waitFor(() => msgs(sse).length >= want.length, 10000, `${want.length} messages after ${early[k]}`);
            assert.deepEqual(sse.envelopes().map((e) => e.id), want, `subscriber from position ${k + 1}`);
        }
    });

    it('the bare id lets a client that received nothing resume without loss', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('bare');
        await publishOk(main.srv.url, ch, { n: 0 });
        const first = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        const cursor = await first.waitLive();
        first.close();
        await publishOk(main.srv.url, ch, { n: 1 });
        await publishOk(main.srv.url, ch, { n: 2 });
        const viaHeader = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': cursor } });
        const viaSince = await openSSE(main.srv.url, `/sse?channel=${ch}&since=${encodeURIComponent(cursor)}`, { t });
        for (const sse of [viaHeader, viaSince]) {
            await waitN(sse, 2);
            assert.deepEqual(sse.envelopes().map((e) => e.data.n), [1, 2], `resumed from the bare id ${cursor}`);
        }
    });

    it('after a replay, a bare id still marks the point where the stream goes live', { timeout: 10000 }, async (t) => {
        /* Our decision and docs/protocol.md ("once every channel is live, a bare id: <cursor>
         * ... once per stream ... any client can tell that what follows is live"). */
        const ch = uniqueChannel('replaylive');
        const ids = await publishMany(main.srv.url, ch, 3);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t });
        await waitN(sse, 3);
        const cursor = await sse.waitLive(3000);
        assert.equal(cursor, ids[2], 'the bare id is the cursor after the last replayed message');
        const bare = sse.items.findIndex((it) => it.kind === 'id');
        const lastMsg = sse.items.findLastIndex((it) => it.kind === 'event');
        assert.ok(bare > lastMsg, 'the bare id comes after the replayed messages');
    });

    it('after a gap with nothing retained, a bare id still marks the live point', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('gaplive');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=99999999999999-0`, { t });
        await sse.next((e) => e.type === 'gap', 5000, 'the gap');
        await sse.waitLive(3000);
    });

    it('an empty Last-Event-ID header is ignored (since applies)', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('emptylei');
        const ids = await publishMany(main.srv.url, ch, 3);
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=${ids[1]}`, { t, headers: { 'last-event-id': '' } });
        const got = await drainWithSentinels(sse, main.srv.url, [ch]);
        assert.deepEqual(got[ch].map((d) => d.n), [3]);
    });

    it('Last-Event-ID takes precedence over since', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('lei');
        const ids = await publishMany(main.srv.url, ch, 5);
        const a = await openSSE(main.srv.url, `/sse?channel=${ch}&since=${ids[0]}`, { t, headers: { 'last-event-id': ids[2] } });
        const b = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { t, headers: { 'last-event-id': ids[3] } });
        const gotA = await drainWithSentinels(a, main.srv.url, [ch]);
        assert.deepEqual(gotA[ch].map((d) => d.n), [4, 5]);
        await waitN(b, 5);
        assert.deepEqual(b.envelopes().filter((e) => !e.data.sentinel).map((e) => e.data.n), [5]);
    });
});

describe('SSE: several channels in one stream', () => {
    it('messages of every channel arrive, each with its channel; ids are URL-safe cursors', { timeout: 10000 }, async (t) => {
        const A = uniqueChannel('mA'), B = uniqueChannel('mB');
        const sse = await openSSE(main.srv.url, `/sse?channel=${A}&channel=${B}`, { t });
        const live = await sse.waitLive();
        assert.match(live, CURSOR_SAFE_RE);
        const ia1 = await publishOk(main.srv.url, A, { n: 1 });
        const ib1 = await publishOk(main.srv.url, B, { n: 1 });
        const ia2 = await publishOk(main.srv.url, A, { n: 2 });
        await sse.waitEvents(3);
        const env = sse.envelopes();
        /* Order is defined per channel only. */
        assert.deepEqual(env.filter((e) => e.channel === A), [
            { channel: A, id: ia1, data: { n: 1 } },
            { channel: A, id: ia2, data: { n: 2 } },
        ]);
        assert.deepEqual(env.filter((e) => e.channel === B), [{ channel: B, id: ib1, data: { n: 1 } }]);
        assert.equal(env.length, 3);
        const cursors = msgs(sse).map((e) => e.lastEventId);
        for (const c of cursors) {
            assert.match(c, CURSOR_SAFE_RE, `cursor ${JSON.stringify(c)} must only use [A-Za-z0-9._~-]`);
            assert.ok(c.length <= 200, `a cursor over 2 channels should be short: ${c.length} chars`);
        }
        assert.equal(new Set(cursors).size, 3, 'each event advances the cursor');
    });

    for (const how of ['since', 'Last-Event-ID']) {
        it(`resuming with a mid-stream cursor via ${how}: exactly the later messages per channel`, { timeout: 15000 }, async (t) => {
            const A = uniqueChannel('rA'), B = uniqueChannel('rB');
            const path = `/sse?channel=${A}&channel=${B}`;
            const first = await openSSE(main.srv.url, path, { t });
            await first.waitLive();
            await publishOk(main.srv.url, A, { n: 1 });
            await publishOk(main.srv.url, B, { n: 1 });
            await first.waitEvents(2);
            const cursor = first.lastEventId; /* after A1 and B1 */
            await publishOk(main.srv.url, A, { n: 2 });
            await first.waitEvents(3);
            first.close();
            await publishOk(main.srv.url, A, { n: 3 });
            await publishOk(main.srv.url, B, { n: 2 });
            const sse = how === 'since'
                ? await openSSE(main.srv.url, `${path}&since=${cursor}`, { t })
                : await openSSE(main.srv.url, path, { t, headers: { 'last-event-id': cursor } });
            const got = await drainWithSentinels(sse, main.srv.url, [A, B]);
            assert.deepEqual(got[A].map((d) => d.n), [2, 3], `channel A after cursor ${cursor}`);
            assert.deepEqual(got[B].map((d) => d.n), [2], `channel B after cursor ${cursor}`);
            assert.equal(gaps(sse).length, 0);
        });
    }

    it('a several-channel cursor does not depend on the order of the channel parameters', { timeout: 10000 }, async (t) => {
        const A = uniqueChannel('oA'), B = uniqueChannel('oB');
        const first = await openSSE(main.srv.url, `/sse?channel=${A}&channel=${B}`, { t });
        await first.waitLive();
        await publishOk(main.srv.url, A, { n: 1 });
        await publishOk(main.srv.url, B, { n: 1 });
        await first.waitEvents(2);
        const cursor = first.lastEventId;
        first.close();
        await publishOk(main.srv.url, B, { n: 2 });
        const sse = await openSSE(main.srv.url, `/sse?channel=${B}&channel=${A}&since=${cursor}`, { t });
        const got = await drainWithSentinels(sse, main.srv.url, [A, B]);
        assert.deepEqual(got, { [A]: [], [B]: [{ n: 2 }] });
    });

    it('the bare id of a several-channel stream resumes without loss', { timeout: 10000 }, async (t) => {
        const A = uniqueChannel('bA'), B = uniqueChannel('bB');
        await publishOk(main.srv.url, A, { n: 0 });
        const path = `/sse?channel=${A}&channel=${B}`;
        const first = await openSSE(main.srv.url, path, { t });
        const cursor = await first.waitLive();
        first.close();
        await publishOk(main.srv.url, A, { n: 1 });
        await publishOk(main.srv.url, B, { n: 1 });
        const sse = await openSSE(main.srv.url, path, { t, headers: { 'last-event-id': cursor } });
        const got = await drainWithSentinels(sse, main.srv.url, [A, B]);
        assert.deepEqual(got, { [A]: [{ n: 1 }], [B]: [{ n: 1 }] });
    });

    it('cursor entries for channels outside the subscription are ignored', { timeout: 10000 }, async (t) => {
        const A = uniqueChannel('iA'), B = uniqueChannel('iB'), C = uniqueChannel('iC');
        const first = await openSSE(main.srv.url, `/sse?channel=${A}&channel=${B}`, { t });
        await first.waitLive();
        await publishOk(main.srv.url, A, { n: 1 });
        await publishOk(main.srv.url, B, { n: 1 });
        await first.waitEvents(2);
        const cursor = first.lastEventId;
        first.close();
        await publishOk(main.srv.url, C, { n: 1 });
        /* C has no entry in the cursor: new messages only; A and B's entries are not used. */
        const sse = await openSSE(main.srv.url, `/sse?channel=${C}&since=${cursor}`, { t });
        assert.equal(sse.status, 200);
        await sse.waitLive();
        await publishOk(main.srv.url, C, { n: 2 });
        const got = await drainWithSentinels(sse, main.srv.url, [C]);
        assert.deepEqual(got[C], [{ n: 2 }]);
    });

    it('a one-channel subscription takes its position from a several-channel cursor', { timeout: 10000 }, async (t) => {
        const A = uniqueChannel('xA'), B = uniqueChannel('xB');
        const first = await openSSE(main.srv.url, `/sse?channel=${A}&channel=${B}`, { t });
        await first.waitLive();
        await publishOk(main.srv.url, A, { n: 1 });
        await publishOk(main.srv.url, B, { n: 1 });
        await first.waitEvents(2);
        const cursor = first.lastEventId;
        first.close();
        await publishOk(main.srv.url, A, { n: 2 });
        const sse = await openSSE(main.srv.url, `/sse?channel=${A}&since=${cursor}`, { t });
        const got = await drainWithSentinels(sse, main.srv.url, [A]);
        assert.deepEqual(got[A], [{ n: 2 }]);
    });

    it('64 channels in one stream: every message arrives, the cursor stays URL-safe and resumes exactly', { timeout: 20000 }, async (t) => {
        const chans = Array.from({ length: 64 }, (_, i) => uniqueChannel(`c64-${i}`));
        const path = '/sse?' + chans.map((c) => `channel=${c}`).join('&');
        const first = await openSSE(main.srv.url, path, { t });
        assert.equal(first.status, 200);
        await first.waitLive();
        for (const c of chans)
            await publishOk(main.srv.url, c, { n: 1 });
        await first.waitEvents(64);
        const cursor = first.lastEventId;
        assert.match(cursor, CURSOR_SAFE_RE);
        t.diagnostic(`a 64-channel cursor is ${cursor.length} characters`);
        first.close();
        for (const c of chans.slice(0, 8))
            await publishOk(main.srv.url, c, { n: 2 });
        const sse = await openSSE(main.srv.url, path, { t, headers: { 'last-event-id': cursor } });
        const got = await drainWithSentinels(sse, main.srv.url, chans, 10000);
        for (const [i, c] of chans.entries())
            assert.deepEqual(got[c], i < 8 ? [{ n: 2 }] : [], `channel ${i}`);
    });

    it('a chain of reconnects with Last-Event-ID under load loses and duplicates nothing', { timeout: 40000 }, async (t) => {
        const A = uniqueChannel('cA'), B = uniqueChannel('cB');
        const path = `/sse?channel=${A}&channel=${B}`;
        const total = 300;
        const received = { [A]: [], [B]: [] };
        let lastId = null;
        let sse = await openSSE(main.srv.url, `${path}&since=0`, { t });
        await sse.waitLive();
        /* Publish alternately to A and B while the subscriber keeps reconnecting. */
        const publisher = (async () => {
            for (let i = 1; i <= total; i++)
                await publishOk(main.srv.url, i % 2 ? A : B, { n: Math.ceil(i / 2) });
        })();
        let count = 0;
        for (let round = 0; round < 100 && count < total; round++) {
            if (round > 0) {
                sse = await openSSE(main.srv.url, path, { t, headers: { 'last-event-id': lastId } });
            }
            const want = Math.min(count + 17, total);
            try {
                await sse.waitFor(() => count + msgs(sse).length >= want, 10000, `${want - count} more messages`);
            } finally {
                sse.close();
            }
            for (const env of sse.envelopes())
                received[env.channel].push(env.data.n);
            count += msgs(sse).length;
            lastId = sse.lastEventId;
            assert.ok(lastId, 'a cursor to resume from');
        }
        await publisher;
        const half = Array.from({ length: total / 2 }, (_, i) => i + 1);
        assert.deepEqual(received[A], half, 'channel A: every message once, in order');
        assert.deepEqual(received[B], half, 'channel B: every message once, in order');
    });
});

describe('SSE: gaps', () => {
    const hist = sharedServer(before, after, ['--history-size', '5']);

    it('a cursor before the trimmed history: a gap event, then the 5 retained messages', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('gap');
        const ids = await publishMany(hist.srv.url, ch, 20);
        const sse = await openSSE(hist.srv.url, `/sse?channel=${ch}&since=${ids[0]}`, { t });
        await waitN(sse, 20);
        const g = gaps(sse);
        assert.equal(g.length, 1, `exactly one gap event: ${sse.summary()}`);
        assert.equal(g[0].hasEventField, true);
        assert.deepEqual(JSON.parse(g[0].data), { channel: ch });
        const firstMsg = sse.events.findIndex((e) => e.type === 'message');
        assert.ok(sse.events.indexOf(g[0]) < firstMsg, 'the gap comes before the retained messages');
        assert.deepEqual(sse.envelopes().map((e) => e.data.n), [16, 17, 18, 19, 20]);
        assert.deepEqual(sse.envelopes().map((e) => e.id), ids.slice(15));
    });

    it('the same gap through Last-Event-ID', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('gaplei');
        const ids = await publishMany(hist.srv.url, ch, 8);
        const sse = await openSSE(hist.srv.url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': ids[1] } });
        await waitN(sse, 8);
        assert.equal(gaps(sse).length, 1);
        assert.deepEqual(sse.envelopes().map((e) => e.data.n), [4, 5, 6, 7, 8]);
    });

    it('no gap when the cursor is the message just before the oldest retained one', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('nogap');
        const ids = await publishMany(hist.srv.url, ch, 20);
        const sse = await openSSE(hist.srv.url, `/sse?channel=${ch}&since=${ids[14]}`, { t });
        await waitN(sse, 20);
        assert.equal(gaps(sse).length, 0, `nothing was lost after message 15: ${sse.summary()}`);
        assert.deepEqual(sse.envelopes().map((e) => e.data.n), [16, 17, 18, 19, 20]);
    });

    it('several channels: one gap event per trimmed channel, before its messages', { timeout: 15000 }, async (t) => {
        const A = uniqueChannel('gA'), B = uniqueChannel('gB'), C = uniqueChannel('gC');
        const path = `/sse?channel=${A}&channel=${B}&channel=${C}`;
        const first = await openSSE(hist.srv.url, path, { t });
        await first.waitLive();
        await publishOk(hist.srv.url, A, { n: 1 });
        await publishOk(hist.srv.url, B, { n: 1 });
        await publishOk(hist.srv.url, C, { n: 1 });
        await first.waitEvents(3);
        const cursor = first.lastEventId;
        first.close();
        await publishMany(hist.srv.url, A, 20, (i) => ({ n: i + 1 }));
        await publishMany(hist.srv.url, B, 20, (i) => ({ n: i + 1 }));
        await publishMany(hist.srv.url, C, 2, (i) => ({ n: i + 1 }));
        const sse = await openSSE(hist.srv.url, `${path}&since=${cursor}`, { t });
        await waitN(sse, 21, A);
        await waitN(sse, 21, B);
        await waitN(sse, 3, C);
        const g = gaps(sse).map((e) => JSON.parse(e.data).channel).sort();
        assert.deepEqual(g, [A, B].sort(), `a gap for A and for B, none for C: ${sse.summary(30)}`);
        for (const ch of [A, B]) {
            const gi = sse.events.findIndex((e) => e.type === 'gap' && JSON.parse(e.data).channel === ch);
            const mi = sse.events.findIndex((e) => e.type === 'message' && JSON.parse(e.data).channel === ch);
            assert.ok(gi < mi, `the gap of ${ch} comes before its messages`);
        }
        const by = (ch) => sse.envelopes().filter((e) => e.channel === ch).map((e) => e.data.n);
        assert.deepEqual(by(A), [17, 18, 19, 20, 21]);
        assert.deepEqual(by(B), [17, 18, 19, 20, 21]);
        assert.deepEqual(by(C), [2, 3]);
    });

    it('a cursor from the future on an empty channel: a gap (the engine lost data), then live messages', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('future');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&since=99999999999999-0`, { t });
        await sse.next((e) => e.type === 'gap', 5000, 'a gap event');
        /* After the gap the position is reset: a message published now must not be filtered
         * out as "before the cursor". */
        await publishOk(main.srv.url, ch, { n: 1 });
        await waitN(sse, 1, null, 5000);
        const g = gaps(sse);
        assert.equal(g.length, 1);
        assert.deepEqual(JSON.parse(g[0].data), { channel: ch });
    });

    describe('by age (--history-ttl 1)', () => {
        const ttl = sharedServer(before, after, ['--history-ttl', '1']);

        it('messages older than the TTL are gone: a gap, then nothing old', { timeout: 15000 }, async (t) => {
            const ch = uniqueChannel('ttl');
            const id1 = await publishOk(ttl.srv.url, ch, { n: 1 });
            await publishOk(ttl.srv.url, ch, { n: 2 });
            const published = Date.now();
            /* A TTL test: waiting out the TTL is the point. */
            await delay(Math.max(0, published + 2200 - Date.now()));
            const sse = await openSSE(ttl.srv.url, `/sse?channel=${ch}&since=${id1}`, { t });
            await sse.next((e) => e.type === 'gap', 5000, 'a gap event');
            const got = await drainWithSentinels(sse, ttl.srv.url, [ch]);
            assert.deepEqual(got[ch], [], 'the expired message 2 must not be delivered');
            const zero = await openSSE(ttl.srv.url, `/sse?channel=${ch}&since=0`, { t });
            await zero.next((e) => e.type === 'message', 5000, 'the (fresh) sentinel');
            assert.ok(zero.envelopes().every((e) => e.data.sentinel), `since=0 must not replay expired messages: ${zero.summary()}`);
        });
    });
});

describe('SSE: heartbeat and padding', () => {
    const ping = sharedServer(before, after, ['--ping-interval', '1']);

    it('--ping-interval 1: comment lines at least every ~1 s on an idle stream', { timeout: 10000 }, async (t) => {
        const sse = await openSSE(ping.srv.url, `/sse?channel=${uniqueChannel('hb')}`, { t });
        const opened = Date.now();
        await sse.waitFor(() => sse.comments.length >= 3, 5000, '3 heartbeat comments');
        const times = [opened, ...sse.comments.map((c) => c.t)];
        for (let i = 1; i < times.length; i++) {
            const gap = times[i] - times[i - 1];
            assert.ok(gap <= 2000, `heartbeat ${i} came ${gap} ms after the previous one (interval 1 s)`);
        }
        assert.equal(sse.events.length, 0, 'heartbeats are comments, not events');
    });

    it('padding=1: the stream starts with a comment of at least 2048 bytes, then works', { timeout: 10000 }, async (t) => {
        const ch = uniqueChannel('pad');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}&padding=1`, { t });
        await sse.waitLive();
        assert.equal(sse.items[0].kind, 'comment', `the first thing must be the padding comment: ${sse.summary()}`);
        let padBytes = 0;
        for (const it of sse.items) {
            if (it.kind !== 'comment')
                break;
            padBytes += it.bytes + 1;
        }
        assert.ok(padBytes >= 2048, `padding comment of ${padBytes} bytes`);
        assert.ok(sse.retries.length >= 1, 'the retry field still comes');
        await publishOk(main.srv.url, ch, { n: 1 });
        await waitN(sse, 1);
    });
});

describe('SSE: many subscribers', () => {
    it('1000 concurrent streams: all counted, all receive a message, modest memory each', { timeout: 50000 }, async (t) => {
        const srv = await startServer();
        t.after(() => srv.stop());
        const ch = uniqueChannel('many');
        const n = 1000;
        const rss0 = rssKiB(srv.pid);
        const streams = [];
        t.after(() => streams.forEach((s) => s.close()));
        for (let i = 0; i < n; i += 50) {
            const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => openSSE(srv.url, `/sse?channel=${ch}`, { timeoutMs: 10000 })));
            streams.push(...batch);
        }
        await Promise.all(streams.map((s) => s.waitLive(10000)));
        const conns = metricValue(await getMetrics(srv.url), 'pushedge_connections', { transport: 'sse' });
        assert.equal(conns, n, 'pushedge_connections{transport="sse"}');
        const rss1 = rssKiB(srv.pid);
        const perConn = ((rss1 - rss0) * 1024) / n;
        t.diagnostic(`VmRSS ${rss0} -> ${rss1} KiB for ${n} idle SSE streams: ${Math.round(perConn)} bytes each`);
        assert.ok(perConn < 64 * 1024, `${Math.round(perConn)} bytes per idle SSE stream`);
        const id = await publishOk(srv.url, ch, { to: 'all' });
        await Promise.all(streams.map((s) => s.next((e) => e.type === 'message', 10000, 'the broadcast')));
        for (const s of streams)
            assert.equal(s.lastEventId, id);
        await assertAlive(srv, `${n} streams`);
    });
});

/*
 * A subscriber that stops reading falls behind; if history is trimmed past its position
 * meanwhile, it must be told (a gap), never silently skip. Checked over everything received,
 * across a reconnect if the server chose to drop the stream instead.
 */
describe('SSE: backpressure never skips silently', () => {
    const small = sharedServer(before, after, ['--history-size', '200']);

    /** Checks that `items` (a stream's events) follow `order` exactly except right after a gap. */
    function assertNoSilentSkip(events, order, ch) {
        const pos = new Map(order.map((id, i) => [id, i]));
        let last = -1;
        let gapPending = false;
        for (const ev of events) {
            if (ev.type === 'gap') {
                assert.deepEqual(JSON.parse(ev.data), { channel: ch });
                gapPending = true;
                continue;
            }
            const i = pos.get(JSON.parse(ev.data).id);
            assert.ok(i !== undefined, 'a message that was never published');
            if (gapPending)
                assert.ok(i > last, `after a gap, message ${i} does not follow ${last}`);
            else
                assert.equal(i, last + 1, `message ${i} follows ${last} with no gap event in between`);
            last = i;
            gapPending = false;
        }
        return last;
    }

    for (const mode of ['live', 'catch-up']) {
        it(`a ${mode} subscriber that stops reading gets a gap or every message`, { timeout: 50000 }, async (t) => {
            const ch = uniqueChannel(`bp-${mode}`);
            const payload = 'b'.repeat(4096);
            const ids = [];
            if (mode === 'catch-up')
                ids.push(...(await publishMany(small.srv.url, ch, 200, (i) => ({ i, payload }), 8)));
            const path = `/sse?channel=${ch}${mode === 'catch-up' ? '&since=0' : ''}`;
            let sse = await openSSE(small.srv.url, path, { t });
            /* Wait until the subscription's first read has answered: its start is fixed only
             * then, not when the response head arrives. since=0 means "the oldest retained when
             * the read runs" (no gap, docs/protocol.md); with the Redis engine that read follows
             * a SUBSCRIBE round trip, and publishing at once could trim the first messages
             * before it, so the stream would rightly begin after them. */
            if (mode === 'live')
                await sse.waitLive();
            else
                await sse.waitFor(() => sse.envelopes().length > 0 || null, 10000, 'the first retained message');
            sse.pause();
            /* 12 MiB while it does not read: more than the socket buffers hold. */
            ids.push(...(await publishMany(small.srv.url, ch, 3000, (i) => ({ i, payload }), 8)));
            const order = [...ids].sort(cmpId);
            const finalId = order[order.length - 1];
            sse.resume();
            const events = [];
            for (let round = 0; round < 5; round++) {
                try {
                    await sse.waitFor(() => sse.envelopes().some((e) => e.id === finalId), 20000, 'the last message');
                    events.push(...sse.events);
                    break;
                } catch (e) {
                    if (!sse.ended)
                        throw e;
                    /* Dropped as a slow consumer: resume from its cursor, as a client would. */
                    events.push(...sse.events);
                    sse = await openSSE(small.srv.url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': sse.lastEventId } });
                }
            }
            const last = assertNoSilentSkip(events, order, ch);
            assert.equal(last, order.length - 1, 'the stream caught up to the last message');
            const g = events.filter((e) => e.type === 'gap').length;
            t.diagnostic(`${events.length - g} messages and ${g} gap(s) received of ${order.length} published`);
        });
    }
});

/** Decodes an HTTP/1.1 response (head + chunked or plain body) leniently, for truncated streams. */
function httpBody(buf) {
    const headEnd = buf.indexOf('\r\n\r\n');
    if (headEnd < 0)
        return { head: buf.toString('latin1'), body: Buffer.alloc(0) };
    const head = buf.subarray(0, headEnd).toString('latin1');
    let rest = buf.subarray(headEnd + 4);
    if (!/^transfer-encoding:\s*chunked/im.test(head))
        return { head, body: rest };
    const parts = [];
    for (;;) {
        const le = rest.indexOf('\r\n');
        if (le < 0)
            break;
        const size = parseInt(rest.subarray(0, le).toString('latin1'), 16);
        if (!Number.isFinite(size) || size === 0)
            break;
        const chunk = rest.subarray(le + 2, le + 2 + size);
        parts.push(chunk);
        if (chunk.length < size)
            break;
        rest = rest.subarray(le + 2 + size + 2);
    }
    return { head, body: Buffer.concat(parts) };
}

describe('SSE: a slow consumer', () => {
    it('is dropped and counted, memory stays bounded, others are unaffected, and it can resume', { timeout: 55000 }, async (t) => {
        /* Under ASan, freed memory sits in a quarantine (256 MiB by default) that would count as growth. */
        const asan = (process.env.ASAN_OPTIONS ? process.env.ASAN_OPTIONS + ':' : '') + 'quarantine_size_mb=16';
        /* The server may pause a subscriber whose socket is full and serve it from history later
         * (memory stays bounded either way); it then ends a stream whose write stays stuck for
         * two heartbeat intervals. A 1 s heartbeat keeps that within this test's bounds. */
        const srv = await startServer(['--history-size', '10000', '--ping-interval', '1'], { ASAN_OPTIONS: asan });
        t.after(() => srv.stop());
        const ch = uniqueChannel('slow');
        const metricsBefore = await getMetrics(srv.url);
        const connsBefore = metricValue(metricsBefore, 'pushedge_connections', { transport: 'sse' }) ?? 0;
        const rss0 = rssKiB(srv.pid);

        const healthy = await openSSE(srv.url, `/sse?channel=${ch}`, { t });
        await healthy.waitLive();
        const sock = await rawConnect(
            srv.port,
            `GET /sse?channel=${ch} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`,
        );
        t.after(() => sock.destroy());
        await waitUntil(
            async () => (metricValue(await getMetrics(srv.url), 'pushedge_connections', { transport: 'sse' }) ?? 0) >= connsBefore + 2,
            { timeoutMs: 5000, what: 'the non-reading SSE connection to be counted in pushedge_connections{transport="sse"}' },
        );
        /* And live: its bare "id:" (without a cursor the stream starts at the channel's newest
         * message when its read runs, which on Redis is a round trip after the connection is
         * counted: a publish in between would be before its start, not lost). Read from the
         * paused socket's buffer without making it flow; kept for the check at the end. */
        const early = [];
        await waitUntil(() => {
            for (let c; (c = sock.read()) !== null;)
                early.push(c);
            return /(^|\n)id:/m.test(Buffer.concat(early).toString('latin1')) || null;
        }, { timeoutMs: 5000, what: 'the non-reading SSE connection to be live (its bare "id:")' });

        /* Publish 4 KiB messages until the server gives up on the stalled stream: the kernel
         * buffers several MiB of a loopback connection before the server's own queue fills. */
        const payload = 'p'.repeat(4096);
        const maxTotal = 8000;
        const BATCH = 200;
        let maxRss = rss0;
        let published = 0;
        let dropped = 0;
        const slowCount = async () =>
            metricValue(await getMetrics(srv.url), 'pushedge_slow_consumers_total', { transport: 'sse' }) ?? 0;
        const acked = [];
        while (published < maxTotal && dropped < 1) {
            const base = published;
            acked.push(...(await publishMany(srv.url, ch, BATCH, (i) => ({ n: base + i, payload }), 8)));
            published += BATCH;
            maxRss = Math.max(maxRss, rssKiB(srv.pid));
            dropped = await slowCount();
        }
        if (dropped < 1) {
            dropped = await waitUntil(
                async () => {
                    const v = await slowCount();
                    maxRss = Math.max(maxRss, rssKiB(srv.pid));
                    return v >= 1 ? v : null;
                },
                { timeoutMs: 10000, intervalMs: 100, what: `pushedge_slow_consumers_total{transport="sse"} >= 1 after ${published} messages of 4 KiB` },
            );
        }
        const total = published;
        t.diagnostic(`slow consumer dropped after ${total} messages; VmRSS ${rss0} KiB -> max ${maxRss} KiB`);
        assert.ok(dropped >= 1);
        await assertAlive(srv, 'the slow consumer');
        const growthMiB = (maxRss - rss0) / 1024;
        assert.ok(growthMiB < 200, `VmRSS grew by ${growthMiB.toFixed(1)} MiB (from ${rss0} KiB to ${maxRss} KiB)`);

        /* The reader that keeps up got everything once, in id order. */
        await healthy.waitFor(() => msgs(healthy).length >= total, 20000, `${total} messages on the healthy stream`);
        const ids = healthy.envelopes().map((e) => e.id);
        /* publishMany runs 8 publishes at a time: the stream is the acknowledged IDs in ID order. */
        const stream = [...acked].sort(cmpId);
        assert.deepEqual(ids, stream, 'the healthy stream is exactly the acknowledged IDs, once each, in ID order');
        assert.deepEqual(healthy.envelopes().map((e) => e.data.n).sort((a, b) => a - b), Array.from({ length: total }, (_, i) => i + 1));
        healthy.close();

        /* The slow connection was closed by the server: read what it had sent. */
        const parts = [...early];
        sock.on('data', (c) => parts.push(c));
        sock.resume();
        await waitUntil(() => sock.closedByPeer, { timeoutMs: 15000, what: 'the server to close the slow connection' });
        const { head, body } = httpBody(Buffer.concat(parts));
        assert.match(head, /^HTTP\/1\.1 200/, 'the slow connection had started as a normal stream');
        const slow = new SSEClient('slow consumer');
        slow.feed(body);
        slow.finish(false);
        const got = slow.envelopes().map((e) => e.id);
        assert.deepEqual(got, stream.slice(0, got.length), 'what the slow consumer received is the acknowledged IDs up to the cut (never silently skipped)');
        assert.ok(got.length < total, 'the slow consumer was dropped before it got everything');
        /* What the server held for it: the acknowledged messages it never wrote. Bounded by the
         * documented 4 MiB queue, plus what the loop above publishes before it notices the drop
         * (two batches: the drop is counted at the end of one, fan-out may trail by one). */
        const eventBytes = Math.ceil(body.length / Math.max(1, got.length));
        const unwritten = (total - got.length) * eventBytes;
        const bound = SSE_MAX_QUEUE + (2 * BATCH + 1) * eventBytes;
        t.diagnostic(`unwritten at the cut: ${total - got.length} messages, ${(unwritten / 1048576).toFixed(2)} MiB (bound ${(bound / 1048576).toFixed(2)} MiB)`);
        assert.ok(unwritten <= bound, `the server held ${(unwritten / 1048576).toFixed(2)} MiB for the slow consumer ` +
            `(${total} published, ${got.length} written); the documented queue bound allows ${(bound / 1048576).toFixed(2)} MiB`);

        /* It resumes from its last cursor and gets the rest exactly. */
        const resume = await openSSE(srv.url, `/sse?channel=${ch}`, { t, headers: { 'last-event-id': slow.lastEventId || '0' } });
        await resume.waitFor(() => msgs(resume).length >= total - got.length, 20000, `the ${total - got.length} messages the slow consumer missed`);
        assert.deepEqual(resume.envelopes().map((e) => e.id), ids.slice(got.length), 'resumed without loss or duplicate');
        assert.equal(gaps(resume).length, 0);
        const after = rssKiB(srv.pid);
        assert.ok((after - rss0) / 1024 < 200, `VmRSS after the test: ${after} KiB (started at ${rss0} KiB)`);
    });
});

/*
 * HTTP/2 cleartext with prior knowledge (every --listen address serves HTTP/1.1 and h2c; SSE
 * works through HTTP/1.1 and HTTP/2: docs/protocol.md "Server-Sent Events").
 *
 * Covered: the operations endpoints, publishing (success and JSON errors) and SSE streams over
 * h2c; several concurrent SSE streams multiplexed on one connection alongside publishes on
 * the same connection; replay and resume with Last-Event-ID over h2; closing one stream
 * leaves the others and the connection working; an HTTP/1.1 client and an h2 client see the
 * same messages.
 *
 * Not covered: TLS + ALPN (no certificate in this suite), h2 flow-control starvation.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
    CURSOR_SAFE_RE,
    ID_RE,
    checkJsonError,
    h2connect,
    httpRequest,
    openSSE,
    publishOk,
    sharedServer,
    uniqueChannel,
} from './lib.mjs';

const main = sharedServer(before, after);

/** An h2 session for one test, destroyed after it. */
async function session(t) {
    const s = await h2connect(main.srv.url);
    t.after(() => s.destroy());
    return s;
}

function h2publish(s, channel, data) {
    return httpRequest(main.srv.url, `/api/publish?channel=${encodeURIComponent(channel)}`, {
        session: s,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(data),
    });
}

describe('HTTP/2 (h2c prior knowledge)', () => {
    it('GET /healthz, /readyz and /metrics', { timeout: 10000 }, async (t) => {
        const s = await session(t);
        assert.equal((await httpRequest(main.srv.url, '/healthz', { session: s })).status, 200);
        assert.equal((await httpRequest(main.srv.url, '/readyz', { session: s })).status, 200);
        const m = await httpRequest(main.srv.url, '/metrics', { session: s });
        assert.equal(m.status, 200);
        assert.match(String(m.headers['content-type']), /^text\/plain/);
    });

    it('publish: 200 with an id; errors carry the JSON error body', { timeout: 10000 }, async (t) => {
        const s = await session(t);
        const ch = uniqueChannel('h2pub');
        const r = await h2publish(s, ch, { over: 'h2' });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.channel, ch);
        assert.match(r.json.id, ID_RE);
        const bad = await httpRequest(main.srv.url, '/api/publish?channel=bad%20name', {
            session: s,
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: '1',
        });
        checkJsonError(bad, 400, 'bad channel over h2');
        const notJson = await httpRequest(main.srv.url, `/api/publish?channel=${ch}`, { session: s, method: 'POST', body: '{' });
        checkJsonError(notJson, 400, 'body not JSON over h2');
        const get = await httpRequest(main.srv.url, `/api/publish?channel=${ch}`, { session: s });
        checkJsonError(get, 405, 'GET /api/publish over h2');
        const missing = await httpRequest(main.srv.url, '/nope', { session: s });
        checkJsonError(missing, 404, 'unknown path over h2');
    });

    it('SSE: headers, retry, bare id, messages published on the same connection', { timeout: 10000 }, async (t) => {
        const s = await session(t);
        const ch = uniqueChannel('h2sse');
        const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { session: s, t });
        assert.equal(sse.status, 200);
        assert.match(String(sse.headers['content-type']), /^text\/event-stream/);
        assert.match(String(sse.headers['cache-control']), /no-cache/);
        assert.equal(sse.headers['content-length'], undefined);
        const live = await sse.waitLive();
        assert.match(live, CURSOR_SAFE_RE);
        assert.equal(sse.items[0].kind, 'retry', 'the stream starts with retry:');
        const ids = [];
        for (let n = 1; n <= 5; n++) {
            const r = await h2publish(s, ch, { n });
            assert.equal(r.status, 200);
            ids.push(r.json.id);
        }
        await sse.waitEvents(5);
        assert.deepEqual(sse.envelopes(), ids.map((id, i) => ({ channel: ch, id, data: { n: i + 1 } })));
        assert.deepEqual(sse.events.map((e) => e.lastEventId), ids);
        assert.ok(sse.events.every((e) => e.type === 'message' && !e.hasEventField));
    });

    it('ten SSE streams multiplexed on one connection, closing some leaves the rest working', { timeout: 15000 }, async (t) => {
        const s = await session(t);
        const chans = Array.from({ length: 10 }, (_, i) => uniqueChannel(`h2mux${i}`));
        const streams = [];
        for (const ch of chans) {
            const sse = await openSSE(main.srv.url, `/sse?channel=${ch}`, { session: s, t });
            await sse.waitLive();
            streams.push(sse);
        }
        for (const ch of chans)
            assert.equal((await h2publish(s, ch, { ch })).status, 200);
        for (let i = 0; i < chans.length; i++) {
            const ev = await streams[i].next(() => true, 5000, `the message on ${chans[i]}`);
            assert.deepEqual(JSON.parse(ev.data).data, { ch: chans[i] });
        }
        for (let i = 0; i < 5; i++)
            streams[i].close();
        for (const ch of chans)
            assert.equal((await h2publish(s, ch, { again: ch })).status, 200, 'the connection still serves requests');
        for (let i = 5; i < chans.length; i++) {
            const ev = await streams[i].next(() => true, 5000, `the second message on ${chans[i]}`);
            assert.deepEqual(JSON.parse(ev.data).data, { again: chans[i] });
        }
        assert.equal((await httpRequest(main.srv.url, '/healthz', { session: s })).status, 200);
    });

    it('replay with since=0 and resume with Last-Event-ID', { timeout: 10000 }, async (t) => {
        const s = await session(t);
        const ch = uniqueChannel('h2resume');
        const ids = [];
        for (let n = 1; n <= 6; n++)
            ids.push(await publishOk(main.srv.url, ch, { n }));
        const all = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, { session: s, t });
        await all.waitEvents(6);
        assert.deepEqual(all.envelopes().map((e) => e.data.n), [1, 2, 3, 4, 5, 6]);
        const resumed = await openSSE(main.srv.url, `/sse?channel=${ch}&since=0`, {
            session: s,
            t,
            headers: { 'last-event-id': ids[3] },
        });
        await resumed.waitEvents(2);
        await publishOk(main.srv.url, ch, { n: 7 });
        await resumed.waitEvents(3);
        assert.deepEqual(resumed.envelopes().map((e) => e.data.n), [5, 6, 7]);
    });

    it('an HTTP/1.1 and an HTTP/2 subscriber see the same stream', { timeout: 10000 }, async (t) => {
        const s = await session(t);
        const ch = uniqueChannel('h2both');
        const a = await openSSE(main.srv.url, `/sse?channel=${ch}`, { session: s, t });
        const b = await openSSE(main.srv.url, `/sse?channel=${ch}`, { t });
        await a.waitLive();
        await b.waitLive();
        for (let n = 1; n <= 20; n++)
            await publishOk(main.srv.url, ch, { n });
        await a.waitEvents(20);
        await b.waitEvents(20);
        assert.deepEqual(a.events.map((e) => e.data), b.events.map((e) => e.data));
        assert.deepEqual(a.events.map((e) => e.lastEventId), b.events.map((e) => e.lastEventId));
    });

    it('an SSE error (no channel) is a JSON 400 over h2', { timeout: 10000 }, async (t) => {
        const s = await session(t);
        const r = await httpRequest(main.srv.url, '/sse', { session: s });
        checkJsonError(r, 400, 'GET /sse without channel over h2');
    });
});

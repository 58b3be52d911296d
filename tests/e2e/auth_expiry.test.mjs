/*
 * Token expiry and refresh (docs/auth.md "Expiry", "Refresh"), against short-lived tokens (4 s,
 * --jwt-leeway 0) minted here with node's crypto:
 * - the notice at min(30 s, half the life) before exp, then the end at exp, per transport:
 *   WebSocket op `expiring` then close 4001 token_expired; SSE `event: expiring` then
 *   `event: expired` and the end of the stream; long-poll: a held poll answered at the notice
 *   with "expiring", a poll held past exp answered 401 token_expired, a poll with an expired
 *   token refused at once, and the cursor resumed with a new token;
 * - WebSocket refresh in-band with messages flowing at ~50/s: every message exactly once, in
 *   order, the connection kept past the first token's exp; refresh by another subject refused
 *   (the connection stays on its token); refresh with an invalid token refused; refresh
 *   narrowing the channels (each removed channel named in a `forbidden` error op);
 * - SSE and long-poll refresh by reconnecting with the cursor (Last-Event-ID, since) and a new
 *   token, messages flowing: every message exactly once, in order;
 * - --auth required: a WebSocket without a token that sends no auth op is closed with 4001
 *   after 10 s; one that authenticates in time stays.
 *
 * SSE is checked over HTTP/1 (the socket taken over) and HTTP/2 (a stream of h2o's).
 *
 * Not covered: the leeway's own length (0 here, so that tests are fast), clock skew.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { before, after } from 'node:test';
import { delay, h2connect, httpRequest, openSSE, publishOk, sharedServer } from './lib.mjs';
import { openWs } from './wslib.mjs';

const SECRET = 'e2e-secret-0123456789abcdef0123456789';
const b64 = (b) => Buffer.from(b).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);

function mint(payload) {
    const input = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify(payload))}`;
    return `${input}.${b64(crypto.createHmac('sha256', SECRET).update(input).digest())}`;
}

let userSeq = 0;
/* A subject of its own per test, so its channel user:<sub> is fresh. */
const newUser = () => `u${process.pid}x${++userSeq}`;
const token = (sub, life, extra = {}) => {
    const t = nowS();
    return mint({ sub, iat: t, exp: t + life, channels: ['user:{sub}', 'orders.*'], ...extra });
};
const expOf = (tok) => JSON.parse(Buffer.from(tok.split('.')[1], 'base64url').toString()).exp;
const bearer = (tok) => ({ authorization: `Bearer ${tok}` });

/** Publishes n messages {n: i} (i = 0..n-1) to channel every intervalMs; resolves when done. */
async function publishFlow(base, channel, n, intervalMs = 20) {
    const t0 = Date.now();
    for (let i = 0; i < n; i++) {
        await publishOk(base, channel, { n: i });
        const wait = t0 + (i + 1) * intervalMs - Date.now();
        if (wait > 0)
            await delay(wait);
    }
}

function assertExactlyOnce(got, n, what) {
    assert.equal(got.length, n, `${what}: ${got.length} messages for ${n} published (first differences: ${JSON.stringify(got.filter((v, i) => v !== i).slice(0, 5))})`);
    for (let i = 0; i < n; i++)
        assert.equal(got[i], i, `${what}: message ${i} out of order or repeated`);
}

describe('expiry without refresh', () => {
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--jwt-leeway', '0']);

    it('WebSocket: expiring op at half the life, then close 4001 at exp', async (t) => {
        const sub = newUser();
        const tok = token(sub, 4);
        const exp = expOf(tok);
        const ws = await openWs(ref.srv.url, `/ws?channel=user:${sub}`, { t, headers: bearer(tok) });
        await ws.nextOp('subscribed');
        const notice = await ws.nextOp('expiring', () => true, 6000);
        const noticeAt = Date.now();
        assert.equal(notice.exp, exp);
        assert.ok(noticeAt < exp * 1000, `the notice comes before exp (${exp * 1000 - noticeAt} ms before)`);
        /* Notice at exp - half the life (1.5-2 s, the token's start is rounded to a second), fired by a one-second tick. */
        assert.ok(noticeAt >= exp * 1000 - 2600, `not earlier than about half the life before exp (${exp * 1000 - noticeAt} ms before)`);
        const closed = await ws.waitClose(5000);
        assert.equal(closed.code, 4001, ws.summary());
        assert.equal(closed.reason, 'token_expired');
        assert.ok(closed.t >= exp * 1000 - 50, `closed at exp or later (${closed.t - exp * 1000} ms)`);
        assert.ok(closed.t <= exp * 1000 + 2500, `closed within the tick after exp (${closed.t - exp * 1000} ms)`);
    });

    it('SSE: event expiring, then event expired and the end of the stream', async (t) => {
        const sub = newUser();
        const tok = token(sub, 4);
        const exp = expOf(tok);
        const s = await openSSE(ref.srv.url, `/sse?channel=user:${sub}`, { t, headers: bearer(tok) });
        assert.equal(s.status, 200);
        await s.waitLive();
        const e1 = await s.next((e) => e.type !== 'message', 6000);
        assert.equal(e1.type, 'expiring');
        assert.deepEqual(JSON.parse(e1.data), { exp });
        assert.equal(e1.hadId, false, 'no id line: Last-Event-ID stays the last message');
        const e2 = await s.next((e) => e.type !== 'message', 5000);
        assert.equal(e2.type, 'expired');
        assert.deepEqual(JSON.parse(e2.data), { exp });
        assert.ok(e2.t >= exp * 1000 - 50, `expired at exp or later (${e2.t - exp * 1000} ms)`);
        await s.waitEnd(3000);
    });

    it('SSE over HTTP/2 (a stream on a shared connection): expiring, expired, the stream ends, the connection stays', async (t) => {
        const sub = newUser();
        const tok = token(sub, 3);
        const session = await h2connect(ref.srv.url);
        t.after(() => session.destroy());
        const s = await openSSE(ref.srv.url, `/sse?channel=user:${sub}`, { t, session, headers: bearer(tok) });
        assert.equal(s.status, 200);
        assert.equal((await s.next((e) => e.type !== 'message', 6000)).type, 'expiring');
        assert.equal((await s.next((e) => e.type !== 'message', 5000)).type, 'expired');
        await s.waitEnd(3000);
        assert.equal((await httpRequest(ref.srv.url, '/healthz', { session })).status, 200, 'the HTTP/2 connection is still usable');
    });

    it('long-poll: a held poll is answered at the notice with "expiring", one held past exp gets 401 token_expired, and the cursor resumes with a new token', async () => {
        const base = ref.srv.url;
        const sub = newUser();
        const ch = `user:${sub}`;
        const tok = token(sub, 4);
        const exp = expOf(tok);
        const first = await httpRequest(base, `/poll?channel=${ch}&since=0&timeout=1`, { headers: bearer(tok) });
        assert.equal(first.status, 200, first.text);
        /* Held from the start of the life: answered at the notice, empty, with the field. */
        const held = await httpRequest(base, `/poll?channel=${ch}&since=${encodeURIComponent(first.json.cursor)}&timeout=25`, { headers: bearer(tok), timeoutMs: 10000 });
        const heldAt = Date.now();
        assert.equal(held.status, 200, held.text);
        assert.deepEqual(held.json.messages, []);
        assert.equal(held.json.expiring, exp, 'the answer carries "expiring": exp');
        assert.ok(heldAt < exp * 1000, `answered before exp (${exp * 1000 - heldAt} ms before)`);
        /* Within the margin: held, and at exp answered 401 (nothing was taken from the cursor). */
        const cursor = held.json.cursor;
        const late = await httpRequest(base, `/poll?channel=${ch}&since=${encodeURIComponent(cursor)}&timeout=25`, { headers: bearer(tok), timeoutMs: 10000 });
        assert.equal(late.status, 401, late.text);
        assert.equal(late.json.error.code, 'token_expired');
        assert.ok(Date.now() >= exp * 1000 - 50, 'at exp or later');
        /* Expired: refused at once. */
        const refused = await httpRequest(base, `/poll?channel=${ch}&since=${encodeURIComponent(cursor)}&timeout=25`, { headers: bearer(tok) });
        assert.equal(refused.status, 401);
        assert.equal(refused.json.error.code, 'token_expired');
        /* A message published meanwhile is there for the new token, from the same cursor. */
        await publishOk(base, ch, { after: 'expiry' });
        const fresh = token(sub, 600);
        const resumed = await httpRequest(base, `/poll?channel=${ch}&since=${encodeURIComponent(cursor)}&timeout=5`, { headers: bearer(fresh) });
        assert.equal(resumed.status, 200, resumed.text);
        assert.deepEqual(resumed.json.messages.map((m) => m.data), [{ after: 'expiry' }]);
        assert.equal(resumed.json.expiring, undefined, 'a long-lived token carries no field');
    });

    it('an answer with messages within the margin carries "expiring"', async () => {
        const base = ref.srv.url;
        const sub = newUser();
        const ch = `user:${sub}`;
        const t = nowS();
        /* iat 100 s ago, exp in 20 s: the life is 120 s, the margin 30 s: within it now. */
        const tok = mint({ sub, iat: t - 100, exp: t + 20, channels: ['user:{sub}'] });
        await publishOk(base, ch, { x: 1 });
        const r = await httpRequest(base, `/poll?channel=${ch}&since=0&timeout=5`, { headers: bearer(tok) });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.messages.length, 1);
        assert.equal(r.json.expiring, t + 20);
    });
});

describe('refresh', () => {
    const ref = sharedServer(before, after, ['--auth', 'optional', '--jwt-secret', SECRET, '--jwt-leeway', '0']);

    it('WebSocket: refresh in-band with ~50 messages/s flowing: every message once, in order, past the old exp', async (t) => {
        const base = ref.srv.url;
        const sub = newUser();
        const ch = `user:${sub}`;
        const tok = token(sub, 4);
        const exp = expOf(tok);
        const ws = await openWs(base, `/ws?channel=${ch}`, { t, headers: bearer(tok) });
        await ws.nextOp('subscribed');
        const N = 300; /* 6 s at 50/s: across the notice and the old exp */
        let refreshed = null;
        const refresher = (async () => {
            await ws.nextOp('expiring', () => true, 6000);
            refreshed = await ws.request({ op: 'refresh', token: token(sub, 600) });
        })();
        await publishFlow(base, ch, N);
        await refresher;
        assert.equal(refreshed.op, 'refreshed', JSON.stringify(refreshed));
        assert.ok(refreshed.exp > exp + 500);
        await ws.waitFor(() => ws.ops().filter((m) => m.op === 'message').length >= N, 5000, `${N} messages`);
        assert.ok(Date.now() > exp * 1000 + 500, 'the flow outlived the first token');
        assert.equal(ws.closed, null, 'still open');
        assertExactlyOnce(ws.ops().filter((m) => m.op === 'message').map((m) => m.data.n), N, 'ws');
        assert.equal(ws.ops().filter((m) => m.op === 'error').length, 0);
    });

    it('WebSocket: refresh refusals keep the connection on its token (another subject, invalid, not a token)', async (t) => {
        const base = ref.srv.url;
        const sub = newUser();
        const ch = `user:${sub}`;
        const ws = await openWs(base, `/ws?channel=${ch}`, { t, headers: bearer(token(sub, 600)) });
        await ws.nextOp('subscribed');
        const other = await ws.request({ op: 'refresh', token: token(newUser(), 600) });
        assert.equal(other.op, 'error');
        assert.equal(other.code, 'forbidden');
        const none = await ws.request({ op: 'refresh', token: mint({ exp: nowS() + 600, channels: ['user:*'] }) });
        assert.equal(none.code, 'forbidden', 'a token without sub is another subject');
        const bad = await ws.request({ op: 'refresh', token: 'x.y.z' });
        assert.equal(bad.code, 'unauthorized');
        const expired = await ws.request({ op: 'refresh', token: mint({ sub, exp: nowS() - 10 }) });
        assert.equal(expired.code, 'token_expired');
        const missing = await ws.request({ op: 'refresh' });
        assert.equal(missing.code, 'bad_request');
        await publishOk(base, ch, { still: 'here' });
        const m = await ws.nextOp('message');
        assert.deepEqual(m.data, { still: 'here' });
        const anon = await openWs(base, '/ws', { t });
        const r = await anon.request({ op: 'refresh', token: token(sub, 600) });
        assert.equal(r.code, 'bad_request', 'an anonymous connection authenticates with auth, not refresh');
    });

    it('WebSocket: a refresh that narrows the channels unsubscribes the others, each named', async (t) => {
        const base = ref.srv.url;
        const sub = newUser();
        const ws = await openWs(base, `/ws?channel=user:${sub}&channel=orders.${sub}a`, { t, headers: bearer(token(sub, 600)) });
        await ws.nextOp('subscribed');
        await ws.nextOp('subscribed');
        assert.equal((await ws.request({ op: 'subscribe', channel: `orders.${sub}b` })).op, 'subscribed');
        const narrow = mint({ sub, exp: nowS() + 600, channels: ['user:{sub}'] });
        const r = await ws.request({ op: 'refresh', token: narrow });
        assert.equal(r.op, 'refreshed');
        const errors = ws.ops().filter((m) => m.op === 'error');
        assert.deepEqual(errors.map((e) => [e.code, e.channel]).sort(), [['forbidden', `orders.${sub}a`], ['forbidden', `orders.${sub}b`]]);
        await publishOk(base, `orders.${sub}a`, { gone: 1 });
        await publishOk(base, `user:${sub}`, { kept: 1 });
        const m = await ws.nextOp('message');
        assert.equal(m.channel, `user:${sub}`, 'the removed channel delivers nothing');
        const again = await ws.request({ op: 'subscribe', channel: `orders.${sub}a` });
        assert.equal(again.code, 'forbidden', 'and cannot be subscribed again with the new token');
    });

    it('SSE: refresh by reconnecting with Last-Event-ID and a new token, ~50 messages/s: once, in order', async (t) => {
        const base = ref.srv.url;
        const sub = newUser();
        const ch = `user:${sub}`;
        const tok = token(sub, 4);
        const N = 250;
        const got = [];
        let lastId = null;
        let s = await openSSE(base, `/sse?channel=${ch}`, { t, headers: bearer(tok) });
        lastId = await s.waitLive(); /* the start position, if no message came before the notice */
        const reconnector = (async () => {
            await s.next((e) => e.type === 'expiring', 6000);
            /* Everything received before the notice is in; close, then come back from the last id. */
            for (const e of s.events.filter((e) => e.type === 'message'))
                got.push(JSON.parse(e.data).data.n), (lastId = e.lastEventId);
            s.close();
            s = await openSSE(base, `/sse?channel=${ch}`, { t, headers: { ...bearer(token(sub, 600)), 'last-event-id': lastId } });
            assert.equal(s.status, 200);
        })();
        await publishFlow(base, ch, N);
        await reconnector;
        await s.waitFor(() => got.length + s.events.filter((e) => e.type === 'message').length >= N, 5000, `${N} messages`);
        for (const e of s.events.filter((e) => e.type === 'message'))
            got.push(JSON.parse(e.data).data.n);
        assertExactlyOnce(got, N, 'sse');
    });

    it('long-poll: refresh by the next poll with the cursor and a new token, ~50 messages/s: once, in order', async () => {
        const base = ref.srv.url;
        const sub = newUser();
        const ch = `user:${sub}`;
        let tok = token(sub, 4);
        const first = await httpRequest(base, `/poll?channel=${ch}&timeout=1`, { headers: bearer(tok) });
        let cursor = first.json.cursor;
        const N = 250;
        const got = [];
        let refreshedAt = null, done = false;
        const poller = (async () => {
            for (let i = 0; i < 1000 && !(done && got.length >= N); i++) {
                const r = await httpRequest(base, `/poll?channel=${ch}&since=${encodeURIComponent(cursor)}&timeout=2`, { headers: bearer(tok), timeoutMs: 10000 });
                assert.equal(r.status, 200, `poll ${i}: ${r.status} ${r.text}`);
                for (const m of r.json.messages)
                    got.push(m.data.n);
                cursor = r.json.cursor;
                if (r.json.expiring !== undefined && refreshedAt === null) {
                    tok = token(sub, 600);
                    refreshedAt = Date.now();
                }
            }
        })();
        await publishFlow(base, ch, N);
        done = true;
        await poller;
        assert.ok(refreshedAt !== null, 'an answer carried "expiring"');
        assertExactlyOnce(got, N, 'poll');
    });
});

describe('--auth required: the auth deadline', () => {
    const ref = sharedServer(before, after, ['--auth', 'required', '--jwt-secret', SECRET, '--jwt-leeway', '0']);

    it('a WebSocket without a token and no auth op is closed with 4001 after 10 s; one that authenticates stays', async (t) => {
        const base = ref.srv.url;
        const t0 = Date.now();
        const silent = await openWs(base, '/ws', { t });
        const authed = await openWs(base, '/ws', { t });
        const sub = newUser();
        const a = await authed.request({ op: 'auth', token: token(sub, 600) });
        assert.equal(a.op, 'authenticated');
        const closed = await silent.waitClose(13000);
        assert.equal(closed.code, 4001, silent.summary());
        assert.match(closed.reason, /^unauthorized/);
        const ms = closed.t - t0;
        assert.ok(ms >= 9500 && ms <= 12500, `closed after about 10 s (${ms} ms)`);
        assert.equal((await authed.request({ op: 'ping' })).op, 'pong', 'the authenticated one stays');
        assert.equal(authed.closed, null);
    });
});

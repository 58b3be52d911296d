/*
 * Authentication in the JS client (web/src/client/auth.js and its use by the client and the
 * transports), on fakes: where the token travels on each transport and with each `tokenVia`;
 * getToken() at start, before expiry (the server's notice on each transport, and the timer on
 * the token's own exp) and on every refusal (401 unauthorized / token_expired, 403, WebSocket
 * close 4001 / 4003, an error to the auth or refresh op); the WebSocket refresh in place; SSE and
 * long-poll carrying the new token from their positions, every message once; the `auth` event
 * when the server refuses for good; getToken() failures; reconnect().
 *
 * Not here: the server's side of any of it (tests/e2e/client_auth.test.mjs, auth.test.mjs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, sseMessage, refCursor, FakeClock } from './fakes.mjs';

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
/** A token shaped like a JWS (the client verifies nothing; it reads exp). */
const jwt = (claims) => `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.c2ln`;
const sec = (clock) => Math.floor(clock.now() / 1000);

/** A getToken() answering from `list` in turn (the last repeats); an Error in it is thrown. */
function tokens(...list) {
  const f = async () => {
    f.calls++;
    const v = list.length > 1 ? list.shift() : list[0];
    if (v instanceof Error) throw v;
    return v;
  };
  f.calls = 0;
  return f;
}

/** The fake server's side of an authenticated WebSocket: answers the auth op, the probe and the
 * subscribes. */
async function wsAuthed(ws, clock) {
  ws.open();
  for (const a of ws.sentOps('auth')) ws.recv({ op: 'authenticated', user: 'alice', exp: null, ref: a.ref });
  ws.pong();
  ws.confirmSubscribes();
  await clock.advance(0);
}

const T1 = jwt({ sub: 'alice', n: 1 });
const T2 = jwt({ sub: 'alice', n: 2 });
const T3 = jwt({ sub: 'alice', n: 3 });

/* ---- where the token travels ---- */

test('start: getToken() is called once before anything connects; WebSocket sends the auth op first', async () => {
  const getToken = tokens(T1);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  assert.equal(WS.attempts.length, 0);
  await clock.advance(0);
  assert.equal(getToken.calls, 1);
  const ws = WS.last;
  assert.equal(ws.url, 'ws://push.test/ws', 'no token in the URL');
  ws.open();
  assert.deepEqual(ws.sent.map((o) => o.op), ['auth', 'ping', 'subscribe', 'subscribe'], 'auth is the first message');
  assert.equal(ws.sent[0].token, T1);
  ws.pong();
  ws.confirmSubscribes();
  await clock.advance(0);
  assert.equal(client.transport, null, "not 'connected' before the auth op is answered");
  ws.recv({ op: 'authenticated', user: 'alice', exp: null, ref: ws.sent[0].ref });
  await clock.advance(0);
  assert.equal(client.transport, 'websocket');
  assert.equal(getToken.calls, 1);
  assert.deepEqual(eventsOf('auth'), []);
  client.close();
});

test('a static token is used at once; without any token nothing changes (no auth op, no header)', async () => {
  const one = setup({ token: T1 });
  one.client.subscribe('a', () => {});
  await one.clock.advance(0);
  one.WS.last.open();
  assert.deepEqual(one.WS.last.sentOps('auth').map((o) => o.token), [T1]);
  one.client.close();

  const none = setup({ transports: ['websocket'] });
  none.client.subscribe('a', () => {});
  await none.clock.advance(0);
  none.WS.last.open();
  assert.deepEqual(none.WS.last.sent.map((o) => o.op), ['ping', 'subscribe']);
  none.client.close();
  for (const transports of [['sse'], ['poll']]) {
    const h = setup({ transports });
    h.client.subscribe('a', () => {});
    await h.clock.advance(0);
    const headers = h.fetch.last.opts.headers || {};
    assert.equal(headers.Authorization, undefined, `${transports}: no Authorization`);
    assert.equal(h.fetch.last.params.get('token'), null);
    h.client.close();
  }
});

test("tokenVia 'header' (default): Authorization on SSE and poll, never in the URL", async () => {
  for (const transports of [['sse'], ['poll']]) {
    const { client, clock, fetch } = setup({ transports, token: T1 });
    client.subscribe('a', () => {});
    await clock.advance(0);
    assert.equal(fetch.last.opts.headers.Authorization, `Bearer ${T1}`, transports[0]);
    assert.equal(fetch.last.params.get('token'), null);
    if (transports[0] === 'sse') assert.equal(fetch.last.opts.headers.Accept, 'text/event-stream');
    client.close();
  }
});

test("tokenVia 'query': token= on every transport, no header, no auth op", async () => {
  const { client, clock, WS, fetch } = setup({ token: T1, tokenVia: 'query', transports: ['websocket'] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(new URL(WS.last.url).searchParams.get('token'), T1);
  WS.last.open();
  assert.deepEqual(WS.last.sentOps('auth'), []);
  client.close();
  for (const transports of [['sse'], ['poll']]) {
    const h = setup({ transports, token: T1, tokenVia: 'query' });
    h.client.subscribe('a', () => {});
    await h.clock.advance(0);
    assert.equal(h.fetch.last.params.get('token'), T1, transports[0]);
    assert.deepEqual(h.fetch.last.channels, ['a']);
    assert.equal((h.fetch.last.opts.headers || {}).Authorization, undefined);
    h.client.close();
  }
  assert.equal(fetch.requests.length, 0);
});

test("tokenVia 'cookie': the client sends no token anywhere (the browser sends the cookie)", async () => {
  const { client, clock, WS } = setup({ getToken: tokens(T1), tokenVia: 'cookie' });
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(new URL(WS.last.url).searchParams.get('token'), null);
  WS.last.open();
  assert.deepEqual(WS.last.sentOps('auth'), []);
  client.close();
  for (const transports of [['sse'], ['poll']]) {
    const h = setup({ transports, token: T1, tokenVia: 'cookie' });
    h.client.subscribe('a', () => {});
    await h.clock.advance(0);
    assert.equal(h.fetch.last.params.get('token'), null);
    assert.equal((h.fetch.last.opts.headers || {}).Authorization, undefined);
    h.client.close();
  }
  assert.throws(() => setup({ tokenVia: 'url' }), TypeError);
});

test('getToken() resolving to null at start: connects without a token (public channels)', async () => {
  const { client, clock, WS } = setup({ getToken: tokens(null) });
  client.subscribe('news', () => {});
  await clock.advance(0);
  WS.last.open();
  assert.deepEqual(WS.last.sent.map((o) => o.op), ['ping', 'subscribe']);
  client.close();
});

test('getToken() failing at start: tried again after a backoff, then connects', async () => {
  const getToken = tokens(new Error('login service down'), T1);
  const { client, clock, WS, eventsOf } = setup({ getToken, backoffBase: 1000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(WS.attempts.length, 0);
  const d = eventsOf('disconnected').at(-1);
  assert.equal(d.reason, 'token_failed');
  assert.equal(d.retryIn, 500); // random 0.5 * 1000
  await clock.advance(500);
  assert.equal(getToken.calls, 2);
  assert.equal(WS.attempts.length, 1);
  WS.last.open();
  assert.equal(WS.last.sentOps('auth')[0].token, T1);
  assert.deepEqual(eventsOf('auth'), []);
  client.close();
});

test('publish() sends the token as Bearer when no API key is given', async () => {
  const { client, fetch } = setup({ token: T1 });
  fetch.handler = (r) => r.respond(200, { json: { channel: 'chat:alice', id: '1-0' } });
  assert.equal(await client.publish('chat:alice', { hi: 1 }), '1-0');
  assert.equal(fetch.last.opts.headers.Authorization, `Bearer ${T1}`);
  await client.publish('x', 1, { apiKey: 'k' });
  assert.equal(fetch.last.opts.headers.Authorization, 'Bearer k', 'the API key wins');
  client.close();
});

/* ---- WebSocket: refresh in place, refusals ---- */

test('WebSocket: expiring -> getToken() -> refresh op on the same socket; messages flow on', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  const ws = WS.last;
  await wsAuthed(ws, clock);
  ws.recv({ op: 'message', channel: 'a', id: '1-0', data: null });
  ws.recv({ op: 'expiring', exp: sec(clock) + 60 });
  ws.recv({ op: 'expiring', exp: sec(clock) + 60 }); // twice: one call
  ws.recv({ op: 'message', channel: 'a', id: '2-0', data: null });
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  const r = ws.sentOps('refresh');
  assert.equal(r.length, 1);
  assert.equal(r[0].token, T2);
  ws.recv({ op: 'refreshed', exp: sec(clock) + 600, ref: r[0].ref });
  ws.recv({ op: 'message', channel: 'a', id: '3-0', data: null });
  await clock.advance(0);
  assert.equal(WS.instances.length, 1, 'no reconnect');
  assert.deepEqual(got, ['1-0', '2-0', '3-0']);
  assert.deepEqual(eventsOf('disconnected'), []);
  assert.equal(client.transport, 'websocket');
  client.close();
});

test("the timer on the token's own exp: refreshMargin before it, or half-way for a short-lived token", async () => {
  const clock = new FakeClock();
  const exp = sec(clock) + 120;
  const getToken = tokens(jwt({ exp }), jwt({ exp: exp + 600 }));
  // No idle pings: the fake server here answers none.
  const { client, WS } = setup({ getToken, refreshMargin: 30000, pingInterval: 3600e3 }, { clock });
  client.subscribe('a', () => {});
  await clock.advance(0);
  await wsAuthed(WS.last, clock);
  await clock.advance(89000);
  assert.equal(getToken.calls, 1);
  await clock.advance(1000); // 120 s - 30 s
  assert.equal(getToken.calls, 2);
  assert.equal(WS.last.sentOps('refresh').length, 1, 'the notice was missed: refreshed ahead all the same');
  client.close();

  const clock2 = new FakeClock();
  const short = tokens(jwt({ exp: sec(clock2) + 20 }), T2);
  const c2 = setup({ getToken: short, refreshMargin: 30000 }, { clock: clock2 });
  c2.client.subscribe('a', () => {});
  await c2.clock.advance(0);
  await wsAuthed(c2.WS.last, c2.clock);
  await c2.clock.advance(9900);
  assert.equal(short.calls, 1);
  await c2.clock.advance(100);
  assert.equal(short.calls, 2, 'a 20 s token is renewed after 10 s, not at once');
  c2.client.close();
});

test('WebSocket: close 4001 (expired without a refresh) -> getToken() -> a new socket from the positions', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  await wsAuthed(WS.last, clock);
  WS.last.recv({ op: 'message', channel: 'a', id: '5-0', data: null });
  WS.last.drop(4001, 'token expired');
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  assert.equal(WS.instances.length, 2);
  const ws = WS.last;
  ws.open();
  assert.equal(ws.sent[0].op, 'auth');
  assert.equal(ws.sent[0].token, T2);
  assert.equal(ws.sentOps('subscribe')[0].since, '5-0', 'from the position');
  ws.recv({ op: 'authenticated', ref: ws.sent[0].ref });
  ws.pong();
  ws.confirmSubscribes();
  await clock.advance(0);
  assert.equal(client.transport, 'websocket');
  ws.recv({ op: 'message', channel: 'a', id: '5-0', data: null }); // a duplicate is dropped
  ws.recv({ op: 'message', channel: 'a', id: '6-0', data: null });
  assert.deepEqual(got, ['5-0', '6-0']);
  assert.deepEqual(eventsOf('auth'), []);
  assert.deepEqual(eventsOf('disconnected').map((e) => [e.reason, e.retryIn]), [['token_expired', 0]]);
  client.close();
});

test('WebSocket: close 4003 (revoked) is final: auth event with the reason, no getToken(), no retry', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  await wsAuthed(WS.last, clock);
  WS.last.drop(4003, 'account suspended');
  await clock.advance(600000);
  assert.equal(getToken.calls, 1);
  assert.equal(WS.instances.length, 1);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.message, e.transport]), [['revoked', 'account suspended', 'websocket']]);
  assert.deepEqual(eventsOf('error').map((e) => e.code), ['revoked']);
  assert.equal(eventsOf('disconnected').at(-1).retryIn, null);
  assert.equal(client.state, 'disconnected');
  assert.equal(clock.pending(), 0, 'nothing scheduled');
  client.close();
});

test('WebSocket: the auth op refused -> one new token; refused again -> final (auth event, no retry)', async () => {
  const getToken = tokens(T1, T2, T3);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  for (let i = 0; i < 2; i++) {
    const ws = WS.last;
    ws.open();
    const auth = ws.sentOps('auth')[0];
    ws.recv({ op: 'error', code: i ? 'unauthorized' : 'token_expired', message: 'no', ref: auth.ref });
    assert.deepEqual(ws.closeCalls, [1000]);
    await clock.advance(0);
  }
  assert.equal(getToken.calls, 2, 'start, and once after the first refusal');
  assert.deepEqual(WS.instances.map((w) => w.sentOps('auth')[0].token), [T1, T2]);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.transport]), [['unauthorized', 'websocket']]);
  assert.equal(eventsOf('disconnected').at(-1).retryIn, null);
  await clock.advance(600000);
  assert.equal(WS.instances.length, 2);
  client.close();
});

test('a refusal: getToken() giving null, or the very token refused, is final', async () => {
  for (const next of [null, T1]) {
    const getToken = tokens(T1, next);
    const { client, clock, WS, eventsOf } = setup({ getToken });
    client.subscribe('a', () => {});
    await clock.advance(0);
    WS.last.open();
    WS.last.recv({ op: 'error', code: 'unauthorized', message: 'bad', ref: WS.last.sentOps('auth')[0].ref });
    await clock.advance(0);
    assert.equal(getToken.calls, 2);
    assert.equal(WS.instances.length, 1, `${next}: not tried again`);
    assert.deepEqual(eventsOf('auth').map((e) => e.code), ['unauthorized']);
    client.close();
  }
});

test('a refusal with a newer token already in hand: that one is tried without asking getToken()', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsAuthed(ws, clock);
  ws.recv({ op: 'expiring', exp: sec(clock) + 1 });
  await clock.advance(0);
  assert.equal(ws.sentOps('refresh')[0].token, T2);
  ws.drop(4001); // the server ended it before it read the refresh
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  WS.last.open();
  assert.equal(WS.last.sentOps('auth')[0].token, T2);
  assert.deepEqual(eventsOf('auth'), []);
  client.close();
});

test('WebSocket: a server that cannot refresh in place (unknown_op): a new socket carries the new token', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  await wsAuthed(WS.last, clock);
  WS.last.recv({ op: 'message', channel: 'a', id: '1-0', data: null });
  WS.last.recv({ op: 'expiring', exp: sec(clock) + 60 });
  await clock.advance(0);
  const r = WS.last.sentOps('refresh')[0];
  WS.last.recv({ op: 'error', code: 'unknown_op', message: 'unknown op', ref: r.ref });
  await clock.advance(0);
  assert.equal(WS.instances.length, 2);
  WS.last.open();
  assert.equal(WS.last.sentOps('auth')[0].token, T2);
  assert.equal(WS.last.sentOps('subscribe')[0].since, '1-0');
  assert.deepEqual(eventsOf('auth'), []);
  assert.deepEqual(eventsOf('transport'), [], 'not a fallback');
  client.close();
});

test('WebSocket: the refresh refused -> one more token on a new socket', async () => {
  const getToken = tokens(T1, T2, T3);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  await wsAuthed(WS.last, clock);
  WS.last.recv({ op: 'expiring', exp: sec(clock) + 60 });
  await clock.advance(0);
  const r = WS.last.sentOps('refresh')[0];
  WS.last.recv({ op: 'error', code: 'unauthorized', message: 'bad', ref: r.ref });
  await clock.advance(0);
  assert.equal(getToken.calls, 3);
  assert.equal(WS.instances.length, 2);
  WS.last.open();
  assert.equal(WS.last.sentOps('auth')[0].token, T3);
  assert.deepEqual(eventsOf('auth'), []);
  client.close();
});

test('WebSocket: a channel refused (forbidden) -> one new token on a new socket; refused again -> auth event for it, the others go on', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  client.subscribe('secret', (m) => got.push(m.id));
  await clock.advance(0);
  for (let i = 0; i < 2; i++) {
    const ws = WS.last;
    ws.open();
    ws.recv({ op: 'authenticated', ref: ws.sentOps('auth')[0].ref });
    ws.pong();
    for (const s of ws.sentOps('subscribe'))
      ws.recv(s.channel === 'secret' ? { op: 'error', code: 'forbidden', message: 'no', ref: s.ref } : { op: 'subscribed', channel: s.channel, ref: s.ref });
    await clock.advance(0);
  }
  assert.equal(WS.instances.length, 2);
  assert.deepEqual(WS.instances.map((w) => w.sentOps('auth')[0].token), [T1, T2]);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.channel]), [['forbidden', 'secret']]);
  assert.equal(client.transport, 'websocket', 'the other channel is served');
  WS.last.recv({ op: 'message', channel: 'a', id: '1-0', data: null });
  assert.deepEqual(got, ['1-0']);
  client.close();
});

test('WebSocket without any token: a refused channel is reported at once (error and auth), nothing retried', async () => {
  const { client, clock, WS, eventsOf } = setup({ transports: ['websocket'] });
  client.subscribe('private', () => {});
  await clock.advance(0);
  WS.last.open();
  WS.last.pong();
  const s = WS.last.sentOps('subscribe')[0];
  WS.last.recv({ op: 'error', code: 'unauthorized', message: 'a token is required', ref: s.ref });
  await clock.advance(0);
  assert.deepEqual(eventsOf('error').map((e) => [e.code, e.channel]), [['unauthorized', 'private']]);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.channel]), [['unauthorized', 'private']]);
  assert.equal(WS.instances.length, 1);
  client.close();
});

/* ---- SSE ---- */

/** A client on SSE with getToken; the first stream answered and live at position 1-0. */
async function sseLive(getToken, options = {}) {
  const h = setup({ transports: ['sse', 'poll'], getToken, ...options });
  const got = [];
  h.client.subscribe('a', (m) => got.push(m.id));
  await h.clock.advance(0);
  const stream = h.fetch.last.stream();
  stream.push('retry: 2000\n\n').push(sseMessage('a', '1-0'));
  await h.clock.advance(0);
  assert.equal(h.client.transport, 'sse');
  return { ...h, got, stream, first: h.fetch.last };
}

test('SSE: event: expiring -> getToken() -> a new request with the new token from the position; every message once', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, fetch, got, stream, first, eventsOf } = await sseLive(getToken);
  assert.equal(first.opts.headers.Authorization, `Bearer ${T1}`);
  stream.push(`event: expiring\ndata: {"exp":${sec(clock) + 60}}\n\n`).push(sseMessage('a', '2-0'));
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  assert.equal(fetch.requests.length, 2);
  assert.ok(first.aborted, 'the old stream is closed');
  const next = fetch.last;
  assert.equal(next.opts.headers.Authorization, `Bearer ${T2}`);
  assert.equal(next.since, '2-0');
  const s2 = next.stream();
  s2.push('retry: 2000\n\n').push(sseMessage('a', '2-0')).push(sseMessage('a', '3-0'));
  await clock.advance(0);
  assert.deepEqual(got, ['1-0', '2-0', '3-0']);
  assert.equal(client.transport, 'sse');
  assert.deepEqual(eventsOf('auth'), []);
  assert.deepEqual(eventsOf('disconnected'), [], 'replaced without a disconnection');
  client.close();
});

test("SSE: event: expired, then the end -> getToken() -> the same transport again with the new token", async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, fetch, stream, eventsOf } = await sseLive(getToken, { tokenVia: 'query' });
  stream.push('event: expired\ndata: {"exp":1}\n\n');
  stream.end();
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  assert.equal(fetch.last.path, '/sse', 'not a fallback to poll');
  assert.equal(fetch.last.params.get('token'), T2);
  assert.equal(fetch.last.since, '1-0');
  assert.deepEqual(eventsOf('disconnected').map((e) => [e.reason, e.retryIn]), [['token_expired', 0]]);
  client.close();
});

test('SSE: event: revoked, then the end -> final, with its reason', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, fetch, stream, eventsOf } = await sseLive(getToken);
  stream.push('event: revoked\ndata: {"reason":"password changed"}\n\n');
  stream.end();
  await clock.advance(600000);
  assert.equal(getToken.calls, 1);
  assert.equal(fetch.requests.length, 1);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.message, e.transport]), [['revoked', 'password changed', 'sse']]);
  client.close();
});

test('SSE: 401 token_expired -> getToken() -> SSE again; 403 forbidden with the new token -> final (auth event with the status)', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, fetch, eventsOf } = setup({ transports: ['sse', 'poll'], getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(401, { json: { error: { code: 'token_expired', message: 'expired' } } });
  await clock.advance(0);
  assert.equal(fetch.requests.length, 2);
  assert.equal(fetch.last.path, '/sse');
  assert.equal(fetch.last.opts.headers.Authorization, `Bearer ${T2}`);
  fetch.last.respond(403, { json: { error: { code: 'forbidden', message: 'not yours' } } });
  await clock.advance(600000);
  assert.equal(fetch.requests.length, 2);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.status, e.transport]), [['forbidden', 403, 'sse']]);
  assert.equal(eventsOf('disconnected').at(-1).retryIn, null);
  client.close();
});

test('no getToken(): a 401 is final at once, as before (error, then auth)', async () => {
  const { client, clock, fetch, events } = setup({ transports: ['sse', 'poll'] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(401, { json: { error: { code: 'unauthorized', message: 'a token is required' } } });
  await clock.advance(60000);
  assert.equal(fetch.requests.length, 1);
  assert.deepEqual(events.filter((e) => ['error', 'auth', 'disconnected'].includes(e.name)).map((e) => [e.name, e.code ?? e.retryIn]), [
    ['error', 'unauthorized'],
    ['auth', 'unauthorized'],
    ['disconnected', null],
  ]);
  client.close();
});

test('a WebSocket handshake refused in query mode, then SSE 401: the next try starts at the top again', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, fetch } = setup({ getToken, tokenVia: 'query' });
  client.subscribe('a', () => {});
  await clock.advance(0);
  WS.last.drop(1006); // a 401 handshake: the browser shows no status
  await clock.advance(0);
  assert.equal(fetch.last.path, '/sse');
  fetch.last.respond(401, { json: { error: { code: 'token_expired', message: 'expired' } } });
  await clock.advance(0);
  assert.equal(WS.attempts.length, 2, 'WebSocket again, with the new token');
  assert.equal(new URL(WS.last.url).searchParams.get('token'), T2);
  client.close();
});

test("cookie mode: getToken() resolving to true (the app renewed the cookie) reopens SSE on expiring", async () => {
  const getToken = tokens(true, true);
  const { client, clock, fetch, stream } = await sseLive(getToken, { tokenVia: 'cookie' });
  stream.push('event: expiring\ndata: {"exp":1}\n\n');
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  assert.equal(fetch.requests.length, 2);
  assert.equal(fetch.last.since, '1-0');
  assert.equal((fetch.last.opts.headers || {}).Authorization, undefined);
  client.close();
});

/* ---- long-polling ---- */

test('poll: an answer with expiring -> getToken() -> the held request is replaced by one with the new token and the cursor', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, fetch, eventsOf } = setup({ transports: ['poll'], getToken });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '1-0', messages: [{ channel: 'a', id: '1-0', data: 1 }], gaps: [], expiring: sec(clock) + 60 } });
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  const reqs = fetch.to('/poll');
  assert.ok(reqs[1].aborted, 'the request held with the old token is cut short');
  const last = reqs.at(-1);
  assert.equal(last.opts.headers.Authorization, `Bearer ${T2}`);
  assert.equal(last.since, '1-0');
  last.respond(200, { json: { cursor: '2-0', messages: [{ channel: 'a', id: '1-0', data: 1 }, { channel: 'a', id: '2-0', data: 2 }], gaps: [] } });
  await clock.advance(0);
  assert.deepEqual(got, ['1-0', '2-0']);
  assert.equal(client.transport, 'poll');
  assert.deepEqual(eventsOf('auth'), []);
  client.close();
});

test('poll: 401 token_expired -> getToken() -> polled again from the cursor; 403 revoked is final', async () => {
  const getToken = tokens(T1, T2, T3);
  const { client, clock, fetch, eventsOf } = setup({ transports: ['poll'], getToken, tokenVia: 'query' });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '4-0', messages: [{ channel: 'a', id: '4-0', data: 1 }], gaps: [] } });
  await clock.advance(0);
  fetch.last.respond(401, { json: { error: { code: 'token_expired', message: 'expired' } } });
  await clock.advance(0);
  assert.equal(getToken.calls, 2);
  assert.equal(fetch.last.params.get('token'), T2);
  assert.equal(fetch.last.since, '4-0');
  fetch.last.respond(200, { json: { cursor: '4-0', messages: [], gaps: [] } });
  await clock.advance(0);
  fetch.last.respond(403, { json: { error: { code: 'revoked', message: 'signed out everywhere' } } });
  await clock.advance(600000);
  assert.equal(getToken.calls, 2, 'revoked: no new token asked');
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.message, e.status]), [['revoked', 'signed out everywhere', 403]]);
  client.close();
});

/* ---- after the end ---- */

test('reconnect() after a final refusal asks getToken() again and connects from the positions', async () => {
  const getToken = tokens(T1, null, T2);
  const { client, clock, fetch, eventsOf } = setup({ transports: ['poll'], getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '9-0', messages: [{ channel: 'a', id: '9-0', data: 1 }], gaps: [] } });
  await clock.advance(0);
  fetch.last.respond(401, { json: { error: { code: 'token_expired', message: 'expired' } } });
  await clock.advance(0);
  assert.equal(eventsOf('auth').length, 1, 'logged out: getToken() gave null');
  const n = fetch.requests.length;
  client.reconnect();
  await clock.advance(0);
  assert.equal(getToken.calls, 3);
  assert.equal(fetch.requests.length, n + 1);
  assert.equal(fetch.last.opts.headers.Authorization, `Bearer ${T2}`);
  assert.equal(fetch.last.since, '9-0');
  client.close();
  assert.throws(() => client.reconnect(), /closed/);
});

test('close() stops the renewal timer and ignores a getToken() still in flight', async () => {
  let release;
  const getToken = () => new Promise((r) => (release = r));
  const { client, clock, WS } = setup({ getToken });
  client.subscribe('a', () => {});
  await clock.advance(0);
  client.close();
  release(jwt({ exp: sec(clock) + 3600 }));
  await clock.advance(0);
  assert.equal(WS.attempts.length, 0);
  assert.equal(clock.pending(), 0);

  const t = setup({ token: jwt({ exp: sec(clock) + 3600 }) }, { clock });
  t.client.subscribe('a', () => {});
  await clock.advance(0);
  assert.ok(clock.pending() > 0);
  t.client.close();
  assert.equal(clock.pending(), 0);
});

test('the cursor of a multi-channel SSE request survives a token change', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, fetch } = setup({ transports: ['sse'], getToken });
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  await clock.advance(0);
  const c = refCursor([['a', '3-0'], ['b', '7-0']]);
  fetch.last.stream().push(`retry: 2000\n\nid: ${c}\n\n`).push('event: expiring\ndata: {"exp":1}\n\n');
  await clock.advance(0);
  assert.equal(fetch.requests.length, 2);
  assert.equal(fetch.last.since, c);
  client.close();
});

/* ---- channels taken away ---- */

test('WebSocket: a channel revoked by the server (error op naming it) -> auth for it, it leaves the set, the others go on', async () => {
  const getToken = tokens(T1, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  client.subscribe('orders.1', (m) => got.push(m.id));
  await clock.advance(0);
  const ws = WS.last;
  await wsAuthed(ws, clock);
  ws.recv({ op: 'error', code: 'revoked', channel: 'orders.1', message: 'order closed' });
  await clock.advance(0);
  assert.equal(getToken.calls, 1, 'final: no new token asked');
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.channel, e.message]), [['revoked', 'orders.1', 'order closed']]);
  assert.deepEqual(ws.sentOps('unsubscribe').map((o) => o.channel), ['orders.1']);
  ws.recv({ op: 'message', channel: 'orders.1', id: '1-0', data: null });
  ws.recv({ op: 'message', channel: 'a', id: '2-0', data: null });
  assert.deepEqual(got, ['2-0']);
  assert.equal(WS.instances.length, 1);
  assert.equal(client.transport, 'websocket');
  client.close();
});

test('WebSocket: a refresh whose token no longer allows a channel (error naming it, then refreshed) -> one more token; the same again -> auth for it', async () => {
  const getToken = tokens(T1, T2, T2);
  const { client, clock, WS, eventsOf } = setup({ getToken });
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsAuthed(ws, clock);
  ws.recv({ op: 'expiring', exp: sec(clock) + 30 });
  await clock.advance(0);
  const r = ws.sentOps('refresh')[0];
  ws.recv({ op: 'error', code: 'forbidden', channel: 'b', message: 'not allowed' });
  ws.recv({ op: 'refreshed', exp: sec(clock) + 600, ref: r.ref });
  await clock.advance(0);
  assert.equal(getToken.calls, 3, 'asked once more for the channel');
  assert.equal(WS.instances.length, 1, 'getToken() gave the same token: no new socket');
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.channel]), [['forbidden', 'b']]);
  assert.equal(client.transport, 'websocket');
  client.close();
});

test('WebSocket: a channel error for a subscribe not answered yet does not hold the socket back from connected', async () => {
  const { client, clock, WS } = setup({ token: T1 });
  client.subscribe('a', () => {});
  client.subscribe('gone', () => {});
  await clock.advance(0);
  const ws = WS.last;
  ws.open();
  ws.recv({ op: 'authenticated', ref: ws.sentOps('auth')[0].ref });
  ws.pong();
  ws.recv({ op: 'subscribed', channel: 'a', ref: ws.sentOps('subscribe')[0].ref });
  ws.recv({ op: 'error', code: 'revoked', channel: 'gone', message: 'bye' });
  await clock.advance(0);
  assert.equal(client.transport, 'websocket');
  client.close();
});

test('SSE: event: revoked naming a channel -> auth for it; the stream goes on, then reopens without it', async () => {
  const getToken = tokens(T1);
  const { client, clock, fetch, got, stream, eventsOf } = await sseLive(getToken);
  client.subscribe('b', () => {});
  await clock.advance(0);
  const s2 = fetch.last.stream();
  s2.push('retry: 2000\n\n').push('event: revoked\ndata: {"channel":"b","reason":"moved"}\n\n');
  await clock.advance(0);
  assert.deepEqual(eventsOf('auth').map((e) => [e.code, e.channel, e.message]), [['revoked', 'b', 'moved']]);
  assert.deepEqual(fetch.last.channels, ['a'], 'the next request leaves it out');
  assert.equal(getToken.calls, 1);
  assert.ok(stream);
  assert.deepEqual(got, ['1-0']);
  client.close();
});

test('a getToken() answering synchronously works; a token without a readable exp arms no timer', async () => {
  const { client, clock, WS } = setup({ getToken: () => 'opaque-token' });
  client.subscribe('a', () => {});
  await clock.advance(0);
  WS.last.open();
  assert.equal(WS.last.sentOps('auth')[0].token, 'opaque-token');
  client.close();
  for (const token of ['a.%%%.c', `x.${Buffer.from('not json').toString('base64url')}.y`, jwt({ exp: 'tomorrow' }), jwt({ sub: 'x' })]) {
    const h = setup({ token, transports: ['poll'] });
    h.client.subscribe('a', () => {});
    await h.clock.advance(0);
    assert.equal(h.clock.pending(), 1, `${token}: only the poll's own deadline`);
    h.client.close();
  }
});

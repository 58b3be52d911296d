// Backoff, drain hints and throttled timers of web/src/pushedge.js, on a virtual clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, wsConnect, sseMessage } from './fakes.mjs';

test('backoff: full jitter, random() * min(cap, base * 2^attempt), growing with consecutive failures', async () => {
  const { client, clock, WS, eventsOf } = setup({ transports: ['websocket'], backoffBase: 500, backoffCap: 8000 });
  WS.refuse = true;
  const rs = [0.3, 0.999999, 0.5, 0.7, 0.1, 0.9, 0.999999, 0.25];
  const ceilings = [500, 1000, 2000, 4000, 8000, 8000, 8000, 8000];
  clock.setRandom([...rs]);
  client.subscribe('a', () => {});
  await clock.advance(0);
  for (let i = 0; i < rs.length; i++) {
    const d = eventsOf('disconnected');
    assert.equal(d.length, i + 1);
    const delay = rs[i] * ceilings[i];
    assert.equal(d[i].retryIn, Math.round(delay), `attempt ${i}`);
    assert.ok(d[i].retryIn >= 0 && d[i].retryIn <= ceilings[i]);
    const n = WS.attempts.length;
    if (delay >= 1) {
      await clock.advance(Math.ceil(delay) - 1);
      assert.equal(WS.attempts.length, n, `attempt ${i}: not before the delay`);
    }
    await clock.advance(1);
    assert.equal(WS.attempts.length, n + 1, `attempt ${i}: at the delay`);
  }
  // the lower end: random() = 0 retries at once
  clock.setRandom([0, 0.5]);
  const n = eventsOf('disconnected').length;
  await clock.advance(Math.ceil(0.25 * 8000));
  assert.deepEqual(eventsOf('disconnected').slice(n).map((e) => e.retryIn), [0, 4000]);
  client.close();
});

test('backoff: starts over after healthyAfter of a healthy connection, not before', async () => {
  const { client, clock, WS, eventsOf } = setup({ transports: ['websocket'], backoffBase: 500, backoffCap: 30000, healthyAfter: 10000 });
  WS.throwNext = 4;
  client.subscribe('a', () => {});
  await clock.advance(0);
  for (let i = 0; i < 4; i++) await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  assert.deepEqual(eventsOf('disconnected').map((e) => e.retryIn), [250, 500, 1000, 2000]);
  await wsConnect(WS.last, clock);
  await clock.advance(9000); // healthy, but not for long enough
  WS.last.drop(1006);
  await clock.advance(0);
  assert.equal(eventsOf('disconnected').at(-1).retryIn, 4000, 'still growing: 0.5 * 500 * 2^4');
  await clock.advance(4000);
  await wsConnect(WS.last, clock);
  for (let t = 0; t < 10000; t += 2000) {
    await clock.advance(2000);
    WS.last.recv({ op: 'message', channel: 'a', id: `${t + 1}-0`, data: null });
  }
  WS.last.drop(1006);
  await clock.advance(0);
  assert.equal(eventsOf('disconnected').at(-1).retryIn, 250, 'after 10 s healthy: back to 0.5 * base');
  client.close();
});

test('drain: WS close 1001 / 1012 reconnects on WebSocket within drainDelay, not counted as failures', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ drainDelay: [250, 2500] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const randoms = [0.5, 0, 0.999, 0.2];
  const codes = [1001, 1012, 1001, 1012];
  for (let i = 0; i < codes.length; i++) {
    await wsConnect(WS.last, clock);
    await clock.advance(1000);
    clock.setRandom(randoms[i]);
    const n = WS.instances.length;
    WS.last.drop(codes[i]);
    await clock.advance(0);
    const d = eventsOf('disconnected').at(-1);
    const delay = 250 + randoms[i] * 2250;
    assert.equal(d.reason, 'drain');
    assert.equal(d.retryIn, Math.round(delay));
    assert.ok(d.retryIn >= 250 && d.retryIn <= 2500);
    await clock.advance(Math.ceil(delay) - 1);
    assert.equal(WS.instances.length, n, `${codes[i]}: not before the delay`);
    await clock.advance(1);
    assert.equal(WS.instances.length, n + 1, `${codes[i]}: the same transport again`);
  }
  assert.equal(fetch.requests.length, 0, 'no fallback');
  assert.equal(eventsOf('transport').length, 0, 'four short lives ended by drains are not cuts');
  await wsConnect(WS.last, clock);
  clock.setRandom(0.5);
  WS.last.drop(1006); // a real failure now: the backoff starts at attempt 0
  await clock.advance(0);
  assert.equal(eventsOf('disconnected').at(-1).retryIn, 250);
  client.close();
});

test('drain: an SSE stream ended normally after retry: 3000 reconnects after 3000 ms stretched by drainJitter, with the cursor', async () => {
  const { client, clock, fetch, eventsOf } = setup({ transports: ['sse', 'poll'] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const s = fetch.last.stream();
  s.push('retry: 2000\n\n' + sseMessage('a', '7-0'));
  await clock.advance(0);
  clock.setRandom(0.5);
  s.push('retry: 3000\n\n');
  s.end();
  await clock.advance(0);
  // 3000 * (1 + 0.25 * 0.5): never sooner than the hint, up to a quarter later
  assert.deepEqual(eventsOf('disconnected').map((e) => [e.reason, e.retryIn]), [['drain', 3375]]);
  await clock.advance(3374);
  assert.equal(fetch.requests.length, 1);
  await clock.advance(1);
  assert.equal(fetch.requests.length, 2);
  assert.equal(fetch.last.path, '/sse');
  assert.equal(fetch.last.since, '7-0');
  client.close();
});

test('drain: SSE 503 with Retry-After: 5 comes back to SSE after 5-6.25 s', async () => {
  const { client, clock, fetch, eventsOf } = setup({ transports: ['sse', 'poll'] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  clock.setRandom(0);
  fetch.last.respond(503, { json: { error: { code: 'draining', message: 'bye' } }, headers: { 'Retry-After': '5' } });
  await clock.advance(0);
  assert.deepEqual(eventsOf('disconnected').map((e) => [e.reason, e.retryIn]), [['draining', 5000]]);
  await clock.advance(4999);
  assert.equal(fetch.requests.length, 1);
  await clock.advance(1);
  assert.equal(fetch.last.path, '/sse');
  client.close();
});

test('drain: poll 503 with Retry-After: 2 waits 1-2 s (jitter) then polls again from the same cursor', async () => {
  for (const [r, wait] of [[0.5, 1500], [0, 1000], [0.999, 1999]]) {
    const { client, clock, fetch, eventsOf } = setup({ transports: ['poll'] });
    client.subscribe('a', () => {});
    await clock.advance(0);
    fetch.last.respond(200, { json: { cursor: '4-0', messages: [], gaps: [] } });
    await clock.advance(0);
    clock.setRandom(r);
    fetch.last.respond(503, { json: { error: { code: 'engine_unavailable', message: 'x' } }, headers: { 'Retry-After': '2' } });
    await clock.advance(wait - 1);
    assert.equal(fetch.requests.length, 2, `random ${r}: not before ${wait} ms`);
    await clock.advance(1);
    assert.equal(fetch.requests.length, 3, `random ${r}: after ${wait} ms`);
    assert.equal(fetch.last.since, '4-0');
    assert.equal(eventsOf('disconnected').length, 0, 'the transport stays');
    assert.equal(client.transport, 'poll');
    client.close();
  }
});

test('drain: WS close 1012 with the reason {"reconnect_ms":N} waits N ms stretched by drainJitter; a reason that is not the hint falls back to drainDelay', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ drainDelay: [250, 2500] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const cases = [
    ['{"reconnect_ms":800}', 0.5, 900], // 800 * (1 + 0.25 * 0.5)
    ['{"reconnect_ms":0}', 0.5, 0], // now: the server paced it already
    ['{"reconnect_ms":-5}', 0, 250], // not a hint: drainDelay
    ['server restarting', 0, 250],
    ['{"reconnect_ms":', 1 - 1e-9, 2500], // truncated JSON: drainDelay
  ];
  for (const [reason, r, wait] of cases) {
    await wsConnect(WS.last, clock);
    await clock.advance(1000);
    clock.setRandom(r);
    const n = WS.instances.length;
    WS.last.drop(1012, reason);
    await clock.advance(0);
    const d = eventsOf('disconnected').at(-1);
    assert.equal(d.reason, 'drain', reason);
    assert.equal(d.retryIn, Math.round(wait), reason);
    if (wait > 0) {
      await clock.advance(Math.ceil(wait) - 1);
      assert.equal(WS.instances.length, n, `${reason}: not before ${wait} ms`);
    }
    await clock.advance(1);
    assert.equal(WS.instances.length, n + 1, `${reason}: the same transport again`);
  }
  assert.equal(fetch.requests.length, 0, 'no fallback');
  client.close();
});

test('drain: a poll answer with "reconnect_ms" takes its messages, then waits the hint (jittered) before polling from the new cursor', async () => {
  const { client, clock, fetch, eventsOf } = setup({ transports: ['poll'] });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '4-0', messages: [], gaps: [] } });
  await clock.advance(0);
  clock.setRandom(1 - 1e-9);
  fetch.last.respond(200, { json: { cursor: '5-0', messages: [{ channel: 'a', id: '5-0', data: 1 }], gaps: [], reconnect_ms: 2000 } });
  await clock.advance(0);
  assert.deepEqual(got, ['5-0']);
  assert.equal(fetch.requests.length, 2);
  await clock.advance(2000);
  assert.equal(fetch.requests.length, 2, 'not before the hint');
  await clock.advance(499);
  assert.equal(fetch.requests.length, 2, 'up to a quarter later (drainJitter)');
  await clock.advance(1);
  assert.equal(fetch.requests.length, 3);
  assert.equal(fetch.last.since, '5-0');
  assert.equal(eventsOf('disconnected').length, 0, 'the transport stays');
  client.close();
});

test('throttled timers: a pong deadline that fires 30 s late does not close the socket: another ping', async () => {
  const { client, clock, WS, eventsOf } = setup({ pingInterval: 20000, pongTimeout: 8000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  await clock.advance(20000);
  assert.equal(ws.sentOps('ping').length, 2, 'the idle ping');
  clock.jump(8000 + 30000); // the tab sleeps: the pong deadline runs 30 s late
  await clock.advance(0);
  assert.deepEqual(ws.closeCalls, [], 'not closed');
  assert.equal(ws.sentOps('ping').length, 3, 'asked again instead');
  assert.equal(client.transport, 'websocket');
  ws.pong();
  await clock.advance(7999 + 20000 - 1);
  assert.deepEqual(ws.closeCalls, []);
  assert.equal(eventsOf('disconnected').length, 0);
  // and with the pong missing again, the next deadline (on time) does close it
  await clock.advance(1);
  assert.equal(ws.sentOps('ping').length, 4);
  await clock.advance(8000);
  assert.deepEqual(ws.closeCalls, [4000]);
  client.close();
});

test('throttled timers: a genuinely missing pong (deadline on time) closes the socket and reconnects', async () => {
  const { client, clock, WS, eventsOf } = setup({ pingInterval: 20000, pongTimeout: 8000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  await clock.advance(20000);
  assert.equal(ws.sentOps('ping').length, 2);
  await clock.advance(7999);
  assert.deepEqual(ws.closeCalls, []);
  await clock.advance(1);
  assert.deepEqual(ws.closeCalls, [4000]);
  assert.equal(eventsOf('disconnected').at(-1).reason, 'ws_ping_timeout');
  await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  assert.equal(WS.instances.length, 2);
  client.close();
});

test('throttled timers: inbound traffic postpones the idle ping; a late SSE heartbeat deadline re-arms', async () => {
  const { client, clock, WS } = setup({ pingInterval: 20000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  await clock.advance(15000);
  ws.recv({ op: 'message', channel: 'a', id: '1-0', data: null });
  await clock.advance(19999);
  assert.equal(ws.sentOps('ping').length, 1, 'quiet for less than 20 s since the message');
  await clock.advance(1);
  assert.equal(ws.sentOps('ping').length, 2);
  client.close();

  const h = setup({ transports: ['sse', 'poll'], heartbeatTimeout: 60000 });
  h.client.subscribe('a', () => {});
  await h.clock.advance(0);
  const req = h.fetch.last;
  const s = req.stream();
  s.push('retry: 2000\n\n');
  await h.clock.advance(0);
  h.clock.jump(60000 + 40000); // the heartbeat deadline runs 40 s late
  await h.clock.advance(0);
  assert.equal(req.aborted, false, 'a late deadline says nothing about the stream');
  s.push(': ping\n');
  await h.clock.advance(59999);
  assert.equal(req.aborted, false);
  await h.clock.advance(1);
  assert.ok(req.aborted, 'an on-time deadline ends it');
  h.client.close();
});

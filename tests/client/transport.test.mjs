// Transport choice, fallback, resume and background re-probe of web/src/pushedge.js, on fakes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, wsConnect, sseMessage, refCursor, FakeStorage, FakeClock, STORAGE_KEY } from './fakes.mjs';

/** Lets ms pass on an SSE stream that gets the server's heartbeat comment every 25 s. */
async function heartbeats(clock, stream, ms, every = 25000) {
  while (ms > 0) {
    const step = Math.min(every, ms);
    await clock.advance(step);
    ms -= step;
    if (step === every) stream.push(': ping\n');
  }
}

const pick = (e, ...keys) => Object.fromEntries(keys.map((k) => [k, e[k]]));

test('transport order: WS constructor throws -> SSE at once -> poll -> backoff -> WS again', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ backoffBase: 1000 });
  WS.refuse = true;
  fetch.handler = (r) => r.fail(new TypeError('connection refused'));
  client.subscribe('a', () => {});
  const t0 = clock.now();
  await clock.advance(0);
  assert.equal(WS.attempts.length, 1);
  assert.deepEqual(WS.attempts[0], { url: 'ws://push.test/ws', protocols: ['pushedge.v1'] });
  assert.deepEqual(fetch.requests.map((r) => r.path), ['/sse', '/poll']);
  assert.deepEqual(fetch.requests.map((r) => r.at), [t0, t0], 'each fallback at once');
  assert.equal(fetch.requests[0].opts.headers.Accept, 'text/event-stream');
  const d = eventsOf('disconnected');
  assert.deepEqual(d.map((e) => [e.transport, e.reason, e.retryIn]), [
    ['websocket', 'ws_error', 0],
    ['sse', 'sse_error', 0],
    ['poll', 'poll_error', 500], // random 0.5 * min(cap, 1000 * 2^0)
  ]);
  await clock.advance(499);
  assert.equal(WS.attempts.length, 1, 'no new attempt during the backoff');
  await clock.advance(1);
  assert.equal(WS.attempts.length, 2, 'WebSocket first again after the backoff');
  assert.equal(fetch.requests.length, 4, 'and the ladder again');
  assert.equal(eventsOf('disconnected').at(-1).retryIn, 1000, 'the second round backs off longer');
  client.close();
});

test('transport order: a socket closed before open (1006) -> SSE at once, which connects', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup();
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  assert.equal(ws.readyState, 0);
  await clock.advance(300);
  const t1 = clock.now();
  ws.drop(1006);
  await clock.advance(0);
  assert.equal(eventsOf('disconnected')[0].reason, 'ws_refused');
  assert.equal(fetch.requests.length, 1);
  assert.equal(fetch.last.path, '/sse');
  assert.equal(fetch.last.at, t1);
  fetch.last.stream().push('retry: 2000\n\n');
  await clock.advance(0);
  assert.deepEqual(eventsOf('connected').map((e) => e.transport), ['sse']);
  assert.equal(client.transport, 'sse');
  assert.equal(client.state, 'connected');
  client.close();
});

test('transport order: https base URL gives a wss:// socket; a WS never opening times out to SSE', async () => {
  const clock = new FakeClock();
  const { client, WS, fetch, eventsOf } = setup({ connectTimeout: 3000 }, { clock });
  client.baseUrl = 'https://push.test';
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(WS.last.url, 'wss://push.test/ws');
  await clock.advance(2999);
  assert.equal(fetch.requests.length, 0);
  await clock.advance(1);
  assert.deepEqual(WS.last.closeCalls, [4000]);
  assert.equal(eventsOf('disconnected')[0].reason, 'ws_connect_timeout');
  assert.equal(fetch.last.path, '/sse');
  client.close();
});

test('black-holed WebSocket: opens, never answers the ping -> SSE after probeTimeout, remembered', async () => {
  const { client, clock, WS, fetch, storage, eventsOf } = setup({ probeTimeout: 5000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ op: 'ping' }, { op: 'subscribe', channel: 'a', ref: 1 }]);
  await clock.advance(4999);
  assert.equal(fetch.requests.length, 0);
  assert.equal(client.state, 'connecting');
  await clock.advance(1);
  assert.deepEqual(ws.closeCalls, [4000]);
  assert.deepEqual(eventsOf('transport').map((e) => pick(e, 'from', 'to', 'reason')), [{ from: 'websocket', to: 'sse', reason: 'ws_silent' }]);
  assert.equal(fetch.last.path, '/sse');
  fetch.last.stream().push('retry: 2000\n\n');
  await clock.advance(0);
  assert.deepEqual(eventsOf('connected').map((e) => e.transport), ['sse']);
  const saved = JSON.parse(storage.getItem(STORAGE_KEY));
  assert.equal(saved.transport, 'sse');
  assert.equal(saved.until, clock.now() + 24 * 3600 * 1000);
  client.close();
});

test('buffering proxy: SSE answers 200 but no byte arrives -> long-poll after probeTimeout', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ probeTimeout: 4000 });
  WS.refuse = true;
  client.subscribe('a', () => {});
  await clock.advance(0);
  const sse = fetch.last;
  assert.equal(sse.path, '/sse');
  sse.stream(); // headers came, the body is held back by the proxy
  await clock.advance(3999);
  assert.equal(fetch.requests.length, 1);
  await clock.advance(1);
  assert.ok(sse.aborted, 'the buffered request is aborted');
  assert.deepEqual(eventsOf('transport').map((e) => pick(e, 'from', 'to', 'reason')), [{ from: 'sse', to: 'poll', reason: 'sse_silent' }]);
  assert.equal(fetch.last.path, '/poll');
  fetch.last.respond(200, { json: { cursor: '3-0', messages: [], gaps: [] } });
  await clock.advance(0);
  assert.equal(client.transport, 'poll');
  client.close();
});

test('idle-killing proxy: a WebSocket cut after the same idle time pings sooner on the next connection', async () => {
  const { client, clock, WS } = setup({ pingInterval: 20000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws1 = WS.last;
  await wsConnect(ws1, clock);
  await clock.advance(7999);
  assert.equal(ws1.sentOps('ping').length, 1, 'only the probe ping so far (interval 20 s)');
  await clock.advance(1);
  ws1.drop(1006); // the proxy kills it after 8 s without traffic
  await clock.advance(250); // backoff: 0.5 * 500
  const ws2 = WS.last;
  assert.notEqual(ws2, ws1);
  await wsConnect(ws2, clock);
  assert.equal(ws2.sentOps('ping').length, 1);
  await clock.advance(3999);
  assert.equal(ws2.sentOps('ping').length, 1);
  await clock.advance(1);
  assert.equal(ws2.sentOps('ping').length, 2, 'pings after 4 s (half the idle time that was cut) instead of 20 s');
  ws2.pong();
  await clock.advance(4000);
  assert.equal(ws2.sentOps('ping').length, 3, 'and keeps that interval');
  assert.equal(client.transport, 'websocket');
  client.close();
});

test('idle-killing proxy: 3 similar SSE cuts in a row demote SSE to poll', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup();
  WS.refuse = true;
  client.subscribe('a', () => {});
  await clock.advance(0);
  for (let i = 0; i < 3; i++) {
    const req = fetch.last;
    assert.equal(req.path, '/sse', `connection ${i + 1} is SSE`);
    const s = req.stream();
    s.push('retry: 2000\n\n');
    await clock.advance(10000 + i * 500);
    s.cut(); // the proxy ends it after ~10 s without traffic
    await clock.advance(0);
    if (i < 2) {
      assert.equal(eventsOf('transport').length, 0, `not demoted after ${i + 1} cut(s)`);
      assert.equal(eventsOf('disconnected').at(-1).reason, 'sse_cut');
      await clock.advance(eventsOf('disconnected').at(-1).retryIn);
    }
  }
  assert.deepEqual(eventsOf('transport').map((e) => pick(e, 'from', 'to', 'reason')), [{ from: 'sse', to: 'poll', reason: 'sse_cut' }]);
  assert.equal(fetch.last.path, '/poll');
  client.close();
});

test('idle-killing proxy: a long-lived SSE connection ended by the network is not a cut', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ cutThreshold: 90000, heartbeatTimeout: 60000 });
  WS.refuse = true;
  client.subscribe('a', () => {});
  await clock.advance(0);
  for (let i = 0; i < 4; i++) {
    const s = fetch.last.stream();
    s.push('retry: 2000\n\n');
    for (let k = 0; k < 4; k++) {
      await clock.advance(25000);
      s.push(': ping\n');
    }
    s.cut(); // after 100 s
    await clock.advance(0);
    await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  }
  assert.equal(eventsOf('transport').length, 0);
  assert.equal(fetch.last.path, '/sse');
  client.close();
});

test('resume: WS positions become the SSE multi-channel cursor; duplicates dropped, order kept', async () => {
  const { client, clock, WS, fetch } = setup();
  const got = [];
  client.subscribe('a', (m) => got.push(`${m.channel}:${m.id}`));
  client.subscribe('b', (m) => got.push(`${m.channel}:${m.id}`));
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  ws.recv({ op: 'message', channel: 'a', id: '1000-0', data: 1 });
  ws.recv({ op: 'message', channel: 'a', id: '1000-1', data: 2 });
  ws.recv({ op: 'message', channel: 'b', id: '2000-5', data: 3 });
  assert.deepEqual(client.positions, { a: '1000-1', b: '2000-5' });
  ws.drop(1006); // the network ends it
  await clock.advance(250);
  WS.last.drop(1006); // and upgrades are refused from now on
  await clock.advance(0);
  const req = fetch.last;
  assert.equal(req.path, '/sse');
  assert.deepEqual(req.channels, ['a', 'b']);
  assert.equal(req.since, refCursor([['a', '1000-1'], ['b', '2000-5']]));
  assert.equal(req.since, client.cursor);
  const s = req.stream();
  const cur = (a, b) => refCursor([['a', a], ['b', b]]);
  s.push('retry: 2000\n\n');
  s.push(sseMessage('a', '1000-1', 2, cur('1000-1', '2000-5'))); // re-sent: dropped
  s.push(sseMessage('a', '1000-2', 4, cur('1000-2', '2000-5')));
  s.push(sseMessage('b', '2000-4', 0, cur('1000-2', '2000-5'))); // older: dropped
  s.push(sseMessage('b', '2000-5', 3, cur('1000-2', '2000-5'))); // re-sent: dropped
  s.push(sseMessage('b', '2000-6', 5, cur('1000-2', '2000-6')));
  s.push(sseMessage('a', '1000-2', 4, cur('1000-2', '2000-6'))); // again: dropped
  s.push(sseMessage('a', '1000-3', 6, cur('1000-3', '2000-6')));
  await clock.advance(0);
  assert.deepEqual(got, ['a:1000-0', 'a:1000-1', 'b:2000-5', 'a:1000-2', 'b:2000-6', 'a:1000-3']);
  assert.deepEqual(client.positions, { a: '1000-3', b: '2000-6' });
  client.close();
});

test('resume: one channel hands its bare message ID to SSE as since=', async () => {
  const { client, clock, WS, fetch } = setup();
  const got = [];
  client.subscribe('news', (m) => got.push(m.id));
  await clock.advance(0);
  await wsConnect(WS.last, clock);
  WS.last.recv({ op: 'message', channel: 'news', id: '1795593687634-0', data: {} });
  WS.last.recv({ op: 'message', channel: 'news', id: '1795593687634-1', data: {} });
  WS.last.drop(1006);
  await clock.advance(250);
  WS.last.drop(1006);
  await clock.advance(0);
  assert.equal(fetch.last.since, '1795593687634-1');
  assert.equal(client.cursor, '1795593687634-1');
  const s = fetch.last.stream();
  s.push(sseMessage('news', '1795593687634-1') + sseMessage('news', '1795593687634-2'));
  await clock.advance(0);
  assert.deepEqual(got, ['1795593687634-0', '1795593687634-1', '1795593687634-2']);
  client.close();
});

test('poll: each request carries the cursor of the previous answer and timeout=', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'] });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  client.subscribe('b', (m) => got.push(m.id));
  await clock.advance(0);
  const r1 = fetch.last;
  assert.equal(r1.path, '/poll');
  assert.deepEqual(r1.channels, ['a', 'b']);
  assert.equal(r1.since, null, 'new messages only: no since');
  assert.equal(r1.params.get('timeout'), '1', 'the first request holds a second only: the path is proved at once');
  const c1 = refCursor([['a', '5-0'], ['b', '7-0']]);
  r1.respond(200, { json: { cursor: c1, messages: [{ channel: 'a', id: '5-0', data: 1 }, { channel: 'b', id: '7-0', data: 2 }], gaps: [] } });
  await clock.advance(0);
  const r2 = fetch.last;
  assert.notEqual(r2, r1);
  assert.equal(r2.since, c1);
  assert.equal(r2.params.get('timeout'), '25');
  const c2 = refCursor([['a', '5-0'], ['b', '7-3']]); // an empty answer that still moves the cursor
  r2.respond(200, { json: { cursor: c2, messages: [], gaps: [] } });
  await clock.advance(0);
  assert.equal(fetch.last.since, c2);
  assert.deepEqual(got, ['5-0', '7-0']);
  assert.equal(client.transport, 'poll');
  client.close();
});

test('poll: a quiet channel is connected after the first one-second hold, not a whole pollTimeout', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'], pollTimeout: 25 });
  const states = [];
  client.on('state', (s) => states.push(s.state));
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(fetch.last.params.get('timeout'), '1');
  await clock.advance(1000);
  fetch.last.respond(200, { json: { cursor: '1-0', messages: [], gaps: [] } });
  await clock.advance(0);
  assert.equal(client.state, 'connected', `connected after 1 s (${states})`);
  client.close();
});

test('poll: one channel carries the bare ID; pollTimeout sets timeout=', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'], pollTimeout: 10 });
  client.subscribe('a', () => {}, { since: '0' });
  await clock.advance(0);
  assert.equal(fetch.last.since, '0');
  assert.equal(fetch.last.params.get('timeout'), '1', 'the first request: one second');
  fetch.last.respond(200, { json: { cursor: '12-4', messages: [{ channel: 'a', id: '12-4', data: null }], gaps: [] } });
  await clock.advance(0);
  assert.equal(fetch.last.since, '12-4');
  assert.equal(fetch.last.params.get('timeout'), '10', 'then pollTimeout');
  client.close();
});

test('WS subscribed op: its cursor becomes the position of a channel with no message yet', async () => {
  const { client, clock, WS } = setup();
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  ws.open();
  ws.pong();
  await clock.advance(0);
  const sub = ws.sentOps('subscribe')[0];
  assert.deepEqual(sub, { op: 'subscribe', channel: 'a', ref: sub.ref });
  assert.deepEqual(client.positions, {});
  assert.equal(client.transport, null, 'not connected before the subscribe is confirmed');
  ws.recv({ op: 'subscribed', channel: 'a', ref: sub.ref, cursor: '5000-3' });
  await clock.advance(0);
  assert.equal(client.transport, 'websocket');
  assert.deepEqual(client.positions, { a: '5000-3' });
  ws.drop(1006);
  await clock.advance(250);
  const ws2 = WS.last;
  ws2.open();
  assert.equal(ws2.sentOps('subscribe')[0].since, '5000-3', 'resubscribes from it: nothing published meanwhile is missed');
  client.close();
});

test('WS gap op: onGap and the gap event, and the position moves (even backwards)', async () => {
  const { client, clock, WS, eventsOf } = setup();
  const got = [];
  const gaps = [];
  client.subscribe('a', (m) => got.push(m.id), { onGap: (g) => gaps.push(g) });
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  ws.recv({ op: 'message', channel: 'a', id: '5000-3', data: 1 });
  ws.recv({ op: 'gap', channel: 'a', cursor: '100-0' }); // the engine lost its data: IDs start over
  assert.deepEqual(gaps, [{ channel: 'a' }]);
  assert.deepEqual(eventsOf('gap').map((e) => e.channel), ['a']);
  assert.deepEqual(client.positions, { a: '100-0' });
  ws.recv({ op: 'message', channel: 'a', id: '100-1', data: 2 });
  assert.deepEqual(got, ['5000-3', '100-1'], 'a lower ID after the gap is delivered');
  // a gap without a cursor: the next message is taken whatever its ID, resubscribing from '0'
  ws.recv({ op: 'gap', channel: 'a' });
  assert.deepEqual(client.positions, {});
  ws.recv({ op: 'message', channel: 'a', id: '3-0', data: 3 });
  assert.deepEqual(got, ['5000-3', '100-1', '3-0']);
  assert.equal(gaps.length, 2);
  client.close();
});

test('WS engine op is reported once per change; error op for a subscribe emits error', async () => {
  const { client, clock, WS, eventsOf } = setup();
  client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  ws.open();
  ws.pong();
  await clock.advance(0);
  ws.recv({ op: 'engine', state: 'unavailable' });
  ws.recv({ op: 'engine', state: 'unavailable' });
  ws.recv({ op: 'engine', state: 'available' });
  assert.deepEqual(eventsOf('engine').map((e) => e.state), ['unavailable', 'available']);
  const ref = ws.sentOps('subscribe')[0].ref;
  ws.recv({ op: 'error', code: 'forbidden', message: 'no', ref });
  assert.deepEqual(eventsOf('error').map((e) => pick(e, 'channel', 'code')), [{ channel: 'a', code: 'forbidden' }]);
  await clock.advance(0);
  assert.equal(client.transport, 'websocket', 'a refused subscribe is answered too: the socket counts as connected');
  client.close();
});

test('background re-probe: SSE -> WebSocket without loss or duplicates, fallback forgotten', async () => {
  const { client, clock, WS, fetch, storage, eventsOf } = setup({ reprobeInterval: 60000 });
  WS.throwNext = 1; // refused once
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  const sse = fetch.last;
  const s = sse.stream();
  s.push('retry: 2000\n\n' + sseMessage('a', '1-0') + sseMessage('a', '2-0'));
  await clock.advance(0);
  assert.equal(client.transport, 'sse');
  assert.equal(JSON.parse(storage.getItem(STORAGE_KEY)).transport, 'sse');
  await heartbeats(clock, s, 59999); // 60 s * (0.75 + 0.5 * 0.5)
  assert.equal(WS.instances.length, 0);
  await clock.advance(1);
  const ws = WS.last;
  assert.ok(ws, 'a WebSocket candidate is opened');
  ws.open();
  assert.equal(ws.sentOps('subscribe')[0].since, '2-0');
  s.push(sseMessage('a', '3-0')); // SSE still delivers during the overlap
  await clock.advance(0);
  assert.equal(client.transport, 'sse');
  assert.equal(sse.aborted, false);
  ws.pong();
  await clock.advance(0);
  assert.equal(client.transport, 'sse', 'the candidate takes over only once its subscribe is confirmed');
  const ref = ws.sentOps('subscribe')[0].ref;
  ws.recv({ op: 'subscribed', channel: 'a', ref, cursor: '2-0' });
  await clock.advance(0);
  assert.deepEqual(eventsOf('transport').map((e) => pick(e, 'from', 'to', 'reason')), [{ from: 'sse', to: 'websocket', reason: 'probe' }]);
  assert.equal(client.transport, 'websocket');
  assert.ok(sse.aborted, 'the SSE request is aborted');
  assert.equal(storage.getItem(STORAGE_KEY), null, 'the fallback is forgotten');
  ws.recv({ op: 'message', channel: 'a', id: '3-0', data: null }); // replayed after since=2-0: dropped
  ws.recv({ op: 'message', channel: 'a', id: '4-0', data: null });
  s.push(sseMessage('a', '5-0')); // the stopped SSE says nothing more
  await clock.advance(0);
  ws.recv({ op: 'message', channel: 'a', id: '5-0', data: null });
  assert.deepEqual(got, ['1-0', '2-0', '3-0', '4-0', '5-0']);
  assert.deepEqual(eventsOf('connected').map((e) => e.transport), ['sse', 'websocket']);
  client.close();
});

test('background re-probe: a black-holed candidate leaves SSE alone and is retried later (interval doubles)', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ reprobeInterval: 60000, probeTimeout: 5000 });
  WS.throwNext = 1;
  client.subscribe('a', () => {});
  await clock.advance(0);
  const s = fetch.last.stream();
  s.push('retry: 2000\n\n');
  await heartbeats(clock, s, 60000);
  const cand = WS.last;
  cand.open();
  for (let i = 0; i < 5; i++) {
    await clock.advance(1000);
    s.push(': ping\n');
  }
  assert.deepEqual(cand.closeCalls, [4000]);
  assert.equal(client.transport, 'sse');
  assert.equal(fetch.requests.length, 1);
  assert.equal(eventsOf('disconnected').length, 1, 'only the first refusal');
  await heartbeats(clock, s, 119999); // from the candidate's failure
  assert.equal(WS.instances.length, 1);
  await clock.advance(1);
  assert.equal(WS.instances.length, 2, 'next probe after 2 x reprobeInterval');
  client.close();
});

test('background re-probe: when SSE dies while a WS candidate probes and the candidate then fails, SSE is next', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ reprobeInterval: 60000, probeTimeout: 5000 });
  WS.throwNext = 1;
  client.subscribe('a', () => {});
  await clock.advance(0);
  const s = fetch.last.stream();
  s.push('retry: 2000\n\n');
  await heartbeats(clock, s, 60000);
  const cand = WS.last;
  cand.open(); // black-holed: it will never answer its ping
  s.cut(); // meanwhile the SSE stream is cut
  await clock.advance(0);
  assert.equal(client.state, 'connecting', 'the candidate takes over');
  await clock.advance(5000);
  assert.deepEqual(cand.closeCalls, [4000]);
  const tr = eventsOf('transport').at(-1);
  assert.deepEqual(pick(tr, 'from', 'to'), { from: 'websocket', to: 'sse' });
  assert.equal(fetch.last.path, '/sse', 'back to SSE, which worked, not down to poll');
  client.close();
});

test('a remembered transport (fresh) is where the client starts; an expired one is ignored', async () => {
  const clock = new FakeClock();
  const fresh = new FakeStorage({ [STORAGE_KEY]: JSON.stringify({ transport: 'sse', until: clock.now() + 1000 }) });
  const a = setup({}, { clock, storage: fresh });
  a.client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(a.WS.attempts.length, 0);
  assert.equal(a.fetch.last.path, '/sse');
  a.client.close();

  const remembersPoll = new FakeStorage({ [STORAGE_KEY]: JSON.stringify({ transport: 'poll', until: clock.now() + 1000 }) });
  const p = setup({}, { clock, storage: remembersPoll });
  p.client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(p.WS.attempts.length, 0);
  assert.equal(p.fetch.last.path, '/poll');
  p.client.close();

  const expired = new FakeStorage({ [STORAGE_KEY]: JSON.stringify({ transport: 'sse', until: clock.now() - 1 }) });
  const b = setup({}, { clock, storage: expired });
  b.client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(b.WS.attempts.length, 1);
  assert.equal(b.fetch.requests.length, 0);
  b.client.close();

  const otherServer = new FakeStorage({ 'pushedge.transport:http://other.test': JSON.stringify({ transport: 'sse', until: clock.now() + 1000 }) });
  const c = setup({}, { clock, storage: otherServer });
  c.client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(c.WS.attempts.length, 1, 'remembered per server');
  c.client.close();

  const junk = new FakeStorage({ [STORAGE_KEY]: '{not json' });
  const d = setup({}, { clock, storage: junk });
  d.client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(d.WS.attempts.length, 1);
  d.client.close();
});

test('cuts are counted per transport: two WS cuts and one SSE cut do not demote SSE', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup();
  client.subscribe('a', () => {});
  await clock.advance(0);
  for (let i = 0; i < 2; i++) {
    await wsConnect(WS.last, clock);
    await clock.advance(500); // cut 0.5 s after the pong
    WS.last.drop(1006);
    await clock.advance(0);
    await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  }
  WS.last.drop(1006); // now refused: SSE
  await clock.advance(0);
  const s = fetch.last.stream();
  s.push('retry: 2000\n\n');
  await clock.advance(500);
  s.cut();
  await clock.advance(0);
  assert.equal(eventsOf('transport').length, 0, 'one SSE cut is not three in a row');
  client.close();
});

test('outage: a client on SSE (WebSocket black-holed) whose server goes away comes back on SSE, not stuck on poll', async () => {
  const { client, clock, WS, fetch, eventsOf } = setup({ probeTimeout: 5000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  WS.last.open(); // black-holed
  await clock.advance(5000);
  const s = fetch.last.stream();
  s.push('retry: 2000\n\n');
  await clock.advance(1000);
  assert.equal(client.transport, 'sse');
  fetch.handler = (r) => r.fail(); // the server goes away
  s.cut();
  await clock.advance(0);
  for (let i = 0; i < 3; i++) await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  fetch.handler = null; // and comes back
  const before = fetch.requests.length;
  await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  assert.ok(fetch.requests.length > before);
  assert.notEqual(fetch.last.path, '/poll', 'the next round starts over instead of staying at the bottom');
  client.close();
});

test('background re-probe: a set change during a probe does not end the probing (on poll)', async () => {
  const clock = new FakeClock();
  const storage = new FakeStorage({ [STORAGE_KEY]: JSON.stringify({ transport: 'poll', until: clock.now() + 1e9 }) });
  const { client, WS, fetch } = setup({ reprobeInterval: 60000, probeTimeout: 5000 }, { storage, clock });
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(fetch.last.path, '/poll');
  fetch.last.respond(200, { json: { cursor: '1-0', messages: [], gaps: [] } });
  await clock.advance(0);
  assert.equal(client.transport, 'poll');
  /* Every held poll is answered empty after a second. */
  const run = async (ms) => {
    for (let t = 0; t < ms; t += 1000) {
      await clock.advance(1000);
      const r = fetch.last;
      if (r.path === '/poll' && !r.settled) r.respond(200, { json: { cursor: '1-0', messages: [], gaps: [] } });
    }
  };
  for (let i = 0; i < 200 && WS.instances.length === 0; i++) await run(1000);
  const before = WS.instances.length;
  assert.ok(before >= 1, 'a probe started');
  client.subscribe('b', () => {}); // while the candidate probes
  await clock.advance(0);
  await run(10 * 60000);
  assert.ok(WS.instances.length > before, `probing goes on after the set change (${WS.instances.length} probes)`);
  client.close();
});

test("background re-probe: a candidate's confirmed start does not make the active transport's next message a duplicate", async () => {
  const { client, clock, WS, fetch } = setup({ reprobeInterval: 60000 });
  WS.throwNext = 1; // refused once: SSE
  const got = [];
  client.subscribe('a', (m) => got.push(m.id)); // new messages only: no position yet
  await clock.advance(0);
  const s = fetch.last.stream();
  s.push('retry: 2000\n\n'); // open, but no live mark and no message yet
  await heartbeats(clock, s, 60000);
  const ws = WS.last;
  ws.open();
  const ref = ws.sentOps('subscribe')[0].ref;
  ws.recv({ op: 'subscribed', channel: 'a', ref, cursor: '5-0' }); // the candidate starts after 5-0
  await clock.advance(0);
  s.push(sseMessage('a', '5-0')); // ... which the active SSE still delivers
  await clock.advance(0);
  assert.deepEqual(got, ['5-0'], 'delivered once by the active transport');
  ws.pong(); // the candidate takes over from its start
  await clock.advance(0);
  ws.recv({ op: 'message', channel: 'a', id: '6-0', data: null });
  await clock.advance(0);
  assert.deepEqual(got, ['5-0', '6-0']);
  client.close();
});

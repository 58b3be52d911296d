// The public API of web/src/pushedge.js: subscription set changes, since, close(), argument checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, wsConnect, sseMessage, refCursor } from './fakes.mjs';

test('subscription set: two subscribe() calls in the same tick open one connection', async () => {
  const { client, clock, WS } = setup();
  client.subscribe('a', () => {});
  client.subscribe('b', () => {});
  assert.equal(WS.attempts.length, 0, 'nothing before the tick ends');
  await clock.advance(0);
  assert.equal(WS.attempts.length, 1);
  WS.last.open();
  assert.deepEqual(WS.last.sent.map((o) => [o.op, o.channel]), [['ping', undefined], ['subscribe', 'a'], ['subscribe', 'b']]);
  client.close();
});

test('subscription set on WS: a later subscribe and the unsubscribe function send ops on the same socket', async () => {
  const { client, clock, WS } = setup();
  const offA = client.subscribe('a', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  const offB1 = client.subscribe('b', () => {});
  const offB2 = client.subscribe('b', () => {}); // a second handler on the same channel
  await clock.advance(0);
  assert.equal(WS.instances.length, 1, 'the same socket');
  assert.deepEqual(ws.sentOps('subscribe').map((o) => o.channel), ['a', 'b']);
  const refs = ws.sentOps('subscribe').map((o) => o.ref);
  assert.equal(new Set(refs).size, 2, 'each subscribe has its own ref');
  offB1();
  await clock.advance(0);
  assert.equal(ws.sentOps('unsubscribe').length, 0, 'b still has a handler');
  offB2();
  offB2(); // twice: harmless
  await clock.advance(0);
  assert.deepEqual(ws.sentOps('unsubscribe'), [{ op: 'unsubscribe', channel: 'b' }]);
  offA();
  await clock.advance(0);
  assert.deepEqual(ws.closeCalls, [1000], 'no channel left: the socket is closed');
  assert.equal(client.state, 'idle');
  client.subscribe('c', () => {});
  await clock.advance(0);
  assert.equal(WS.instances.length, 2, 'a new channel later opens a new connection');
  client.close();
});

test('subscription set on WS: a subscribe while the socket is connecting is sent when it opens', async () => {
  const { client, clock, WS } = setup();
  client.subscribe('a', () => {});
  await clock.advance(0);
  client.subscribe('b', () => {});
  await clock.advance(0);
  assert.equal(WS.instances.length, 1);
  WS.last.open();
  assert.deepEqual(WS.last.sentOps('subscribe').map((o) => o.channel), ['a', 'b']);
  client.close();
});

test('subscription set on SSE: a change re-opens the request with both channels and the cursor', async () => {
  const { client, clock, fetch } = setup({ transports: ['sse', 'poll'] });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  const r1 = fetch.last;
  assert.deepEqual(r1.channels, ['a']);
  const s1 = r1.stream();
  s1.push('retry: 2000\n\n' + sseMessage('a', '10-0') + sseMessage('a', '11-0'));
  await clock.advance(0);
  client.subscribe('b', (m) => got.push(m.id), { since: '0' });
  await clock.advance(0);
  assert.ok(r1.aborted, 'the old request is aborted');
  const r2 = fetch.last;
  assert.notEqual(r2, r1);
  assert.deepEqual(r2.channels, ['a', 'b']);
  assert.equal(r2.since, refCursor([['a', '11-0'], ['b', '0-0']]), "a's position, b from the start ('0' is 0-0)");
  const s2 = r2.stream();
  const c = (a, b) => refCursor([['a', a], ['b', b]]);
  s2.push('retry: 2000\n\n' + sseMessage('b', '1-0', null, c('11-0', '1-0')) + sseMessage('a', '11-0', null, c('11-0', '1-0')) + sseMessage('a', '12-0', null, c('12-0', '1-0')));
  await clock.advance(0);
  assert.deepEqual(got, ['10-0', '11-0', '1-0', '12-0']);
  client.close();
});

test('subscription set on poll: a change aborts the held request and polls with the new set', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'] });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '3-0', messages: [{ channel: 'a', id: '3-0', data: 1 }], gaps: [] } });
  await clock.advance(0);
  const held = fetch.last;
  client.subscribe('b', () => {});
  await clock.advance(0);
  assert.ok(held.aborted);
  assert.deepEqual(fetch.last.channels, ['a', 'b']);
  assert.equal(fetch.last.since, refCursor([['a', '3-0']]));
  assert.equal(fetch.requests.length, 3);
  client.close();
});

test('since: "0" and IDs given by the app go to the server; positions take over once known', async () => {
  const { client, clock, WS } = setup();
  client.subscribe('a', () => {}, { since: '0' });
  client.subscribe('b', () => {}, { since: '77-1' });
  client.subscribe('c', () => {}, { since: refCursor([['c', '5-5'], ['zz', '1-1']]) });
  client.subscribe('d', () => {});
  assert.deepEqual(client.positions, { b: '77-1', c: '5-5' });
  await clock.advance(0);
  const ws = WS.last;
  ws.open();
  assert.deepEqual(ws.sentOps('subscribe').map((o) => [o.channel, o.since]), [['a', '0'], ['b', '77-1'], ['c', '5-5'], ['d', undefined]]);
  assert.equal(client.cursor, refCursor([['b', '77-1'], ['c', '5-5']]));
  client.close();
});

test('close(): stops timers and connections, no callbacks afterwards, subscribe() then throws', async () => {
  const { client, clock, WS, fetch, events } = setup();
  let calls = 0;
  client.subscribe('a', () => calls++);
  client.subscribe('b', () => calls++);
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  ws.recv({ op: 'message', channel: 'a', id: '1-0', data: null });
  assert.equal(calls, 1);
  client.close();
  assert.deepEqual(ws.closeCalls, [1000]);
  assert.equal(client.state, 'closed');
  assert.equal(client.transport, null);
  await clock.advance(0);
  assert.equal(clock.pending(), 0, 'no timer left');
  const n = events.length;
  assert.equal(events.at(-1).name, 'closed');
  ws.recv({ op: 'message', channel: 'a', id: '2-0', data: null }); // late frames
  ws.drop(1006);
  await clock.advance(3600 * 1000);
  assert.equal(calls, 1, 'no message callback');
  assert.equal(events.length, n, 'no event');
  assert.equal(WS.instances.length, 1, 'no reconnect');
  assert.equal(fetch.requests.length, 0);
  assert.throws(() => client.subscribe('a', () => {}), /closed/);
  client.close(); // twice: harmless
});

test('close(): on SSE and poll, the request is aborted and nothing follows', async () => {
  for (const transports of [['sse'], ['poll']]) {
    const { client, clock, fetch, events } = setup({ transports });
    let calls = 0;
    client.subscribe('a', () => calls++);
    await clock.advance(0);
    const req = fetch.last;
    client.close();
    await clock.advance(0);
    assert.ok(req.aborted, `${transports}: aborted`);
    if (transports[0] === 'sse') req.stream().push(sseMessage('a', '1-0'));
    else req.respond(200, { json: { cursor: '1-0', messages: [{ channel: 'a', id: '1-0', data: 1 }] } });
    const n = events.length;
    await clock.advance(600000);
    assert.equal(calls, 0);
    assert.equal(events.length, n);
    assert.equal(fetch.requests.length, 1);
    assert.equal(clock.pending(), 0, `${transports}: no timer left`);
  }
});

test('close() while waiting for a reconnect cancels it', async () => {
  const { client, clock, WS, eventsOf } = setup({ transports: ['websocket'] });
  WS.refuse = true;
  client.subscribe('a', () => {});
  await clock.advance(0);
  assert.ok(eventsOf('disconnected').at(-1).retryIn > 0);
  client.close();
  assert.equal(clock.pending(), 0);
  await clock.advance(60000);
  assert.equal(WS.attempts.length, 1);
});

test('bad channel names and handlers throw TypeError; more than 64 channels RangeError', () => {
  const { client } = setup();
  for (const bad of ['', 'a b', 'x'.repeat(201), 'é', 'a/b', 'a?b', 'a#', null, undefined, 42, {}])
    assert.throws(() => client.subscribe(bad, () => {}), TypeError, JSON.stringify(bad));
  assert.throws(() => client.subscribe('a', null), TypeError);
  assert.throws(() => client.subscribe('a'), TypeError);
  client.subscribe('A-Z_a.z:0@9', () => {}); // every allowed character class
  client.subscribe('x'.repeat(200), () => {});
  for (let i = 0; i < 62; i++) client.subscribe(`c${i}`, () => {});
  assert.throws(() => client.subscribe('one-too-many', () => {}), RangeError);
  client.close();
});

test('a throwing message handler does not stop delivery to the others', async (t) => {
  const { client, clock, WS } = setup();
  const got = [];
  const rethrown = []; // the client rethrows app errors on a (real) timer, outside delivery
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = (fn) => rethrown.push(fn);
  t.after(() => {
    globalThis.setTimeout = realSetTimeout;
  });
  client.subscribe('a', () => {
    throw new Error('app bug');
  });
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  await wsConnect(WS.last, clock);
  WS.last.recv({ op: 'message', channel: 'a', id: '1-0', data: null });
  WS.last.recv({ op: 'message', channel: 'a', id: '2-0', data: null });
  globalThis.setTimeout = realSetTimeout;
  assert.deepEqual(got, ['1-0', '2-0']);
  assert.equal(rethrown.length, 2);
  for (const fn of rethrown) assert.throws(fn, /app bug/);
  client.close();
});

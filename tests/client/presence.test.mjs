// The client's presence API (docs/client.md "Presence"): subscribe(..., {presence: fn}) on each
// transport, join/leave moving the position like messages (no repeat after a reconnect), counts
// handed on, channels that did not ask get nothing, and the argument rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, FakeClock, FakeLocks, FakeStorage, PushEdge, createFakeBroadcastChannel, createFakeWebSocket, setup, wsConnect, sseMessage } from './fakes.mjs';

test('presence on WS: the subscribe op asks for it; join, leave and count reach the handler; the position moves', async () => {
  const { client, clock, WS } = setup();
  const events = [], msgs = [];
  client.subscribe('room', (m) => msgs.push(m.id), { presence: (e) => events.push(e) });
  client.subscribe('plain', () => {});
  await clock.advance(0);
  const ws = WS.last;
  await wsConnect(ws, clock);
  const subs = ws.sentOps('subscribe');
  assert.equal(subs.find((o) => o.channel === 'room').presence, true);
  assert.equal(subs.find((o) => o.channel === 'plain').presence, undefined, 'only the channel that asked');
  const join = { op: 'join', id: '5-0', channel: 'room', client: 'ab.0.1', user: 'alice', node: 'ab', info: { name: 'A' } };
  ws.recv(join);
  ws.recv({ op: 'message', channel: 'room', id: '6-0', data: 1 });
  ws.recv({ op: 'count', channel: 'room', count: 1200 });
  ws.recv({ op: 'leave', id: '7-0', channel: 'room', client: 'ab.0.1', user: 'alice', node: 'ab' });
  ws.recv(join); // a repeat (as after a resubscribe from an older position): dropped
  await clock.advance(0);
  assert.deepEqual(events, [
    { type: 'join', id: '5-0', channel: 'room', client: 'ab.0.1', user: 'alice', node: 'ab', info: { name: 'A' } },
    { type: 'count', channel: 'room', count: 1200 },
    { type: 'leave', id: '7-0', channel: 'room', client: 'ab.0.1', user: 'alice', node: 'ab' },
  ]);
  assert.deepEqual(msgs, ['6-0']);
  assert.equal(client.positions.room, '7-0', 'the leave moved the position: a reconnect resumes after it');
  client.close();
});

test('presence on SSE: presence=1 in the request; events handed on; the id line moves the cursor', async () => {
  const { client, clock, fetch } = setup({ transports: ['sse', 'poll'] });
  const events = [], msgs = [];
  client.subscribe('room', (m) => msgs.push(m.id), { presence: (e) => events.push(e) });
  await clock.advance(0);
  const r = fetch.last;
  assert.equal(r.params.get('presence'), '1');
  const s = r.stream();
  s.push('retry: 2000\n\n' + 'id: 3-0\nevent: join\ndata: {"channel":"room","client":"c.0.1","user":null,"node":"c"}\n\n' +
    sseMessage('room', '4-0') + 'event: count\ndata: {"channel":"room","count":5000}\n\n');
  await clock.advance(0);
  assert.deepEqual(events, [
    { type: 'join', channel: 'room', client: 'c.0.1', user: null, node: 'c' },
    { type: 'count', channel: 'room', count: 5000 },
  ]);
  assert.deepEqual(msgs, ['4-0']);
  assert.equal(client.positions.room, '4-0');
  client.close();
});

test('presence on long-poll: presence=1; messages and events merged in ID order, counts last', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'] });
  const order = [];
  client.subscribe('room', (m) => order.push(`m${m.id}`), { presence: (e) => order.push(`${e.type}${e.id ?? e.count}`) });
  await clock.advance(0);
  assert.equal(fetch.last.params.get('presence'), '1');
  fetch.last.respond(200, { json: {
    cursor: '9-0',
    messages: [{ channel: 'room', id: '2-0', data: 1 }, { channel: 'room', id: '9-0', data: 2 }],
    gaps: [],
    presence: [{ op: 'join', id: '1-0', channel: 'room', client: 'x', user: null, node: 'n' },
      { op: 'leave', id: '5-0', channel: 'room', client: 'x', user: null, node: 'n' },
      { op: 'count', channel: 'room', count: 2001 }],
  } });
  await clock.advance(0);
  assert.deepEqual(order, ['join1-0', 'm2-0', 'leave5-0', 'm9-0', 'count2001']);
  client.close();
});

test('presence: argument rules', () => {
  const { client } = setup();
  assert.throws(() => client.subscribe('a', () => {}, { presence: 'yes' }), TypeError);
  client.subscribe('a', () => {});
  assert.throws(() => client.subscribe('a', () => {}, { presence: () => {} }), /without presence/);
  client.subscribe('b', () => {}, { presence: () => {} });
  client.subscribe('b', () => {}); // a second handler without presence: fine
  client.close();
});

test('presence: not with shared: true (TypeError), the subscription is not made', () => {
  const client = new PushEdge(BASE, { shared: true, locks: new FakeLocks(), BroadcastChannel: createFakeBroadcastChannel(),
    WebSocket: createFakeWebSocket(), clock: new FakeClock(), storage: new FakeStorage() });
  assert.ok(client.shared, 'sharing is on here');
  assert.throws(() => client.subscribe('a', () => {}, { presence: () => {} }), /shared/);
  client.subscribe('a', () => {}); // not taken: a first subscribe without presence works
  client.close();
});

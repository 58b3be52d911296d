// The shared connection of the JS client (option `shared`, web/src/client/shared.js): the pure
// parts (starts, the counted union of the tabs' sets) and the leader protocol between several
// clients of one "origin" on a fake Web Locks, a fake BroadcastChannel, a virtual clock and a
// fake WebSocket: one connection for all, counting, each message once and in order per tab,
// takeover after a close or a crash with resume from the lowest position, the sweep of dead
// tabs, the fallback without Web Locks. Not covered here: real browsers (tests/e2e/browser_shared).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { earlierStart, startsBefore, unionSet, tabStart } from '../../web/src/client/shared.js';
import { PushEdge, FakeClock, FakeStorage, FakeLocks, createFakeBroadcastChannel, createFakeWebSocket, createFakeFetch, wsConnect, env, BASE } from './fakes.mjs';

test('starts: "0" before IDs in order before null (new only); startsBefore is strict', () => {
  assert.equal(earlierStart(null, '5-0'), '5-0');
  assert.equal(earlierStart('5-0', null), '5-0');
  assert.equal(earlierStart('5-0', '4-9'), '4-9');
  assert.equal(earlierStart('10-0', '9-0'), '9-0', 'numeric, not lexical');
  assert.equal(earlierStart('0', '1-0'), '0');
  assert.equal(earlierStart(null, null), null);
  assert.equal(startsBefore('4-0', '5-0'), true);
  assert.equal(startsBefore('5-0', '5-0'), false);
  assert.equal(startsBefore(null, '5-0'), false, 'new only never rewinds');
  assert.equal(startsBefore('5-0', null), true);
  assert.equal(startsBefore('0', '1-0'), true);
  assert.equal(tabStart({ pos: '3-0', since: '0' }), '3-0');
  assert.equal(tabStart({ pos: null, since: '0' }), '0');
  assert.equal(tabStart({ pos: null, since: null }), null);
});

test('unionSet: a channel is in while any tab wants it, counted, from the earliest start', () => {
  const tabs = new Map([
    ['t1', new Map([['a', '7-0'], ['b', null]])],
    ['t2', new Map([['a', '5-0']])],
    ['t3', new Map([['a', null], ['c', '0']])],
  ]);
  const u = unionSet(tabs);
  assert.deepEqual([...u], [['a', { start: '5-0', tabs: 3 }], ['b', { start: null, tabs: 1 }], ['c', { start: '0', tabs: 1 }]]);
  tabs.delete('t2');
  assert.deepEqual(unionSet(tabs).get('a'), { start: '7-0', tabs: 2 });
  tabs.get('t1').delete('a');
  tabs.get('t3').delete('a');
  assert.equal(unionSet(tabs).has('a'), false);
});

/* n clients of one origin: one clock, one lock manager, one bus, one WebSocket class. */
function origin() {
  const clock = new FakeClock();
  const locks = new FakeLocks();
  const BC = createFakeBroadcastChannel();
  const WS = createFakeWebSocket();
  const fetch = createFakeFetch(clock);
  const tabs = [];
  const open = (options = {}) => {
    const client = new PushEdge(BASE, { shared: true, locks, BroadcastChannel: BC, WebSocket: WS, fetch, clock, storage: new FakeStorage(), ...options });
    const tab = { client, got: {}, states: [] };
    tab.sub = (channel, opts) =>
      client.subscribe(channel, (m) => (tab.got[channel] = tab.got[channel] || []).push(m.id), opts);
    client.on('state', (s) => tab.states.push(s.state));
    tabs.push(tab);
    return tab;
  };
  return { clock, locks, BC, WS, open, tabs };
}

/* The gather window, then the hub's socket confirmed. */
async function settle(o, ws) {
  await o.clock.advance(200);
  if (ws === undefined) ws = o.WS.last;
  if (ws && ws.readyState === 0) await wsConnect(ws, o.clock);
  await o.clock.advance(0);
  return o.WS.last;
}

test('shared: three tabs, one connection; each message reaches each subscribed tab once, in order', async () => {
  const o = origin();
  const [t1, t2, t3] = [o.open(), o.open(), o.open()];
  t1.sub('a');
  t1.sub('b');
  t2.sub('a');
  t3.sub('a');
  const ws = await settle(o);
  assert.equal(o.WS.instances.length, 1, 'one connection for three tabs');
  assert.deepEqual([t1.client.shared, t2.client.shared, t3.client.shared], ['leader', 'follower', 'follower']);
  assert.deepEqual(ws.sentOps('subscribe').map((x) => x.channel).sort(), ['a', 'b']);
  for (const t of [t1, t2, t3]) {
    assert.equal(t.client.state, 'connected');
    assert.equal(t.client.transport, 'websocket');
  }
  ws.recv({ op: 'message', ...env('a', '1-0') });
  ws.recv({ op: 'message', ...env('b', '1-1') });
  ws.recv({ op: 'message', ...env('a', '2-0') });
  ws.recv({ op: 'message', ...env('a', '2-0') }); // a duplicate
  await o.clock.advance(0);
  assert.deepEqual(t1.got, { a: ['1-0', '2-0'], b: ['1-1'] });
  assert.deepEqual(t2.got, { a: ['1-0', '2-0'] });
  assert.deepEqual(t3.got, { a: ['1-0', '2-0'] });
  assert.deepEqual(t2.client.positions, { a: '2-0' });
  for (const t of o.tabs) t.client.close();
});

test('shared: a channel is unsubscribed when the last tab lets it go, not before', async () => {
  const o = origin();
  const [t1, t2, t3] = [o.open(), o.open(), o.open()];
  const off1 = t1.sub('a');
  t1.sub('keep');
  const off2 = t2.sub('a');
  t3.sub('a');
  const ws = await settle(o);
  off1();
  off2();
  await o.clock.advance(0);
  assert.deepEqual(ws.sentOps('unsubscribe'), [], 'the third tab still wants a');
  t3.client.close(); // its `bye`
  await o.clock.advance(0);
  assert.deepEqual(ws.sentOps('unsubscribe').map((x) => x.channel), ['a']);
  assert.equal(o.WS.instances.length, 1);
  t1.client.close();
  t2.client.close();
});

test('shared: the leader closes mid-stream: the next tab takes over within the gather window and resumes from the lowest position', async () => {
  const o = origin();
  const [t1, t2, t3] = [o.open(), o.open(), o.open()];
  for (const t of [t1, t2, t3]) t.sub('a');
  const ws = await settle(o);
  ws.recv({ op: 'message', ...env('a', '1-0') });
  ws.recv({ op: 'message', ...env('a', '2-0') });
  await o.clock.advance(0);
  // t3 missed 2-0 (say the bus post was still in flight when the leader went): its position is 1-0.
  t3.client._positions.byChannel.get('a').pos = '1-0';
  t3.got.a.pop();
  const closedAt = o.clock.now();
  t1.client.close();
  await o.clock.advance(0);
  assert.equal(t2.client.shared, 'leader', 'the next in the lock queue');
  await o.clock.advance(200);
  assert.equal(o.WS.instances.length, 2, 'a new connection');
  const ws2 = o.WS.last;
  await wsConnect(ws2, o.clock);
  assert.ok(o.clock.now() - closedAt <= 200 + 1, 'within the gather window (plus the connect)');
  assert.deepEqual(ws2.sentOps('subscribe').map((x) => [x.channel, x.since]), [['a', '1-0']], 'from the lowest position a tab needs');
  ws2.recv({ op: 'message', ...env('a', '2-0') }); // the replay
  ws2.recv({ op: 'message', ...env('a', '3-0') });
  await o.clock.advance(0);
  assert.deepEqual(t2.got.a, ['1-0', '2-0', '3-0'], 'the new leader: each once');
  assert.deepEqual(t3.got.a, ['1-0', '2-0', '3-0'], 'the follower: the one it missed, then on');
  assert.equal(t3.client.transport, 'websocket');
  t2.client.close();
  t3.client.close();
});

test('shared: the leader tab crashes (its lock freed, no goodbye): takeover the same way', async () => {
  const o = origin();
  const [t1, t2] = [o.open(), o.open()];
  t1.sub('a');
  t2.sub('a');
  const ws = await settle(o);
  ws.recv({ op: 'message', ...env('a', '1-0') });
  await o.clock.advance(0);
  // The dead tab: its bus gone, its locks freed, its socket cut, nothing else.
  t1.client._shared.bus.close();
  t1.client._shared.closed = true;
  o.locks.crash(`pushedge:${BASE}`);
  ws.drop(1006);
  await o.clock.advance(0);
  assert.equal(t2.client.shared, 'leader');
  const ws2 = await settle(o, null);
  await wsConnect(o.WS.last, o.clock);
  assert.deepEqual(o.WS.last.sentOps('subscribe').map((x) => x.since), ['1-0']);
  o.WS.last.recv({ op: 'message', ...env('a', '2-0') });
  await o.clock.advance(0);
  assert.deepEqual(t2.got.a, ['1-0', '2-0']);
  assert.equal(ws2, o.WS.last);
  t2.client.close();
});

test('shared: a follower gone without a word is swept (its tab lock is gone) and its channels let go', async () => {
  const o = origin();
  const [t1, t2] = [o.open(), o.open()];
  t1.sub('a');
  t2.sub('b');
  const ws = await settle(o);
  assert.deepEqual(ws.sentOps('subscribe').map((x) => x.channel).sort(), ['a', 'b']);
  t2.client._shared.bus.close();
  t2.client._shared.closed = true;
  o.locks.crash(`pushedge:${BASE}:tab:${t2.client._shared.id}`);
  await o.clock.advance(5000);
  assert.deepEqual(ws.sentOps('unsubscribe').map((x) => x.channel), ['b']);
  t1.client.close();
});

test('shared: a tab asking for history before the hub\'s position makes the hub resume from it; others drop the replay', async () => {
  const o = origin();
  const [t1, t2] = [o.open(), o.open()];
  t1.sub('a');
  const ws = await settle(o);
  ws.recv({ op: 'message', ...env('a', '1-0') });
  ws.recv({ op: 'message', ...env('a', '2-0') });
  await o.clock.advance(0);
  t2.sub('a', { since: '0' });
  await o.clock.advance(0);
  const ws2 = o.WS.last;
  assert.notEqual(ws2, ws, 'the hub reconnected');
  await wsConnect(ws2, o.clock);
  assert.deepEqual(ws2.sentOps('subscribe').map((x) => x.since), ['0']);
  for (const id of ['1-0', '2-0', '3-0']) ws2.recv({ op: 'message', ...env('a', id) });
  await o.clock.advance(0);
  assert.deepEqual(t1.got.a, ['1-0', '2-0', '3-0']);
  assert.deepEqual(t2.got.a, ['1-0', '2-0', '3-0']);
  t1.client.close();
  t2.client.close();
});

test('shared: without Web Locks (and in Node) every client keeps its own connection', async () => {
  const clock = new FakeClock();
  const WS = createFakeWebSocket();
  const a = new PushEdge(BASE, { shared: true, WebSocket: WS, clock, storage: new FakeStorage() });
  const b = new PushEdge(BASE, { shared: true, BroadcastChannel: createFakeBroadcastChannel(), WebSocket: WS, clock, storage: new FakeStorage() });
  assert.equal(a.shared, null);
  assert.equal(b.shared, null);
  a.subscribe('a', () => {});
  b.subscribe('a', () => {});
  await clock.advance(0);
  assert.equal(WS.instances.length, 2);
  a.close();
  b.close();
});

test('shared: a follower publishes with its own getToken() token', async () => {
  const o = origin();
  const calls = [];
  const fetch = async (url, init) => {
    calls.push(init.headers.Authorization);
    return { ok: true, status: 200, json: async () => ({ id: '9-0' }) };
  };
  const t1 = o.open({ getToken: async () => 'leader-token' });
  const t2 = o.open({ getToken: async () => 'follower-token', fetch });
  await o.clock.advance(0);
  assert.equal(t2.client.shared, 'follower');
  assert.equal(await t2.client.publish('a', { x: 1 }), '9-0');
  assert.deepEqual(calls, ['Bearer follower-token']);
  t1.client.close();
  t2.client.close();
});

test('shared: a tab that comes after the connection is up learns its state; the others hear no repeat', async () => {
  const o = origin();
  const t1 = o.open();
  t1.sub('a');
  await settle(o);
  const t2 = o.open();
  t2.sub('a');
  await o.clock.advance(0);
  assert.equal(t2.client.state, 'connected');
  assert.equal(t2.client.transport, 'websocket');
  assert.deepEqual(t1.states, ['connecting', 'connected']);
  assert.equal(o.WS.instances.length, 1);
  t1.client.close();
  t2.client.close();
});

test('shared: past the hub\'s 64 channels a channel is refused with an error event in every tab', async () => {
  const o = origin();
  const [t1, t2] = [o.open(), o.open()];
  const errors = [];
  t2.client.on('error', (e) => errors.push(e));
  for (let i = 0; i < 40; i++) t1.sub(`a${i}`);
  for (let i = 0; i < 30; i++) t2.sub(`b${i}`);
  const ws = await settle(o);
  assert.equal(ws.sentOps('subscribe').length, 64);
  assert.ok(errors.length >= 6 && errors.every((e) => e.code === 'too_many_channels'), JSON.stringify(errors.slice(0, 2)));
  t1.client.close();
  t2.client.close();
});

test('shared: the connection carries the leader\'s token from its getToken(); after a takeover, the new leader\'s', async () => {
  const o = origin();
  const calls = { t1: 0, t2: 0 };
  const t1 = o.open({ getToken: async () => (calls.t1++, 'token-of-t1') });
  const t2 = o.open({ getToken: async () => (calls.t2++, 'token-of-t2') });
  t1.sub('a');
  t2.sub('a');
  await o.clock.advance(200);
  const authed = async (ws) => {
    ws.open();
    for (const a of ws.sentOps('auth')) ws.recv({ op: 'authenticated', user: 'alice', exp: null, ref: a.ref });
    ws.pong();
    ws.confirmSubscribes();
    await o.clock.advance(0);
  };
  await authed(o.WS.last);
  assert.deepEqual(o.WS.last.sentOps('auth').map((x) => x.token), ['token-of-t1']);
  assert.deepEqual(calls, { t1: 1, t2: 0 }, 'a follower does not fetch a token for the connection');
  assert.equal(t2.client.state, 'connected');
  t1.client.close();
  await o.clock.advance(200);
  await authed(o.WS.last);
  assert.equal(o.WS.instances.length, 2);
  assert.deepEqual(o.WS.last.sentOps('auth').map((x) => x.token), ['token-of-t2']);
  assert.equal(t2.client.transport, 'websocket');
  t2.client.close();
});

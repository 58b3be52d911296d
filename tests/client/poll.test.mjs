// Long-polling specifics, the re-probe from poll, and publish() of web/src/pushedge.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, FakeStorage, FakeClock, STORAGE_KEY } from './fakes.mjs';

const pick = (e, ...keys) => Object.fromEntries(keys.map((k) => [k, e[k]]));

test('poll: gaps are reported before the messages of the answer, which are then delivered', async () => {
  const { client, clock, fetch, eventsOf } = setup({ transports: ['poll'] });
  const got = [];
  const gaps = [];
  client.subscribe('a', (m) => got.push(m.id), { since: '50-0', onGap: (g) => gaps.push([g.channel, got.length]) });
  await clock.advance(0);
  assert.equal(fetch.last.since, '50-0');
  fetch.last.respond(200, { json: { cursor: '2-0', messages: [{ channel: 'a', id: '1-0', data: 1 }, { channel: 'a', id: '2-0', data: 2 }], gaps: ['a'] } });
  await clock.advance(0);
  assert.deepEqual(gaps, [['a', 0]], 'the gap first');
  assert.deepEqual(got, ['1-0', '2-0'], 'then what is retained, although below the old position');
  assert.deepEqual(eventsOf('gap').map((e) => e.channel), ['a']);
  assert.equal(fetch.last.since, '2-0');
  client.close();
});

test('poll: a request cut after a few seconds of holding makes the next ones hold for less', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'], pollTimeout: 25, backoffBase: 500 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '1-0', messages: [], gaps: [] } });
  await clock.advance(0);
  const held = fetch.last;
  assert.equal(held.params.get('timeout'), '25');
  await clock.advance(6000);
  held.fail(); // a proxy cut it after 6 s
  await clock.advance(0);
  assert.equal(fetch.requests.length, 2);
  await clock.advance(250); // 0.5 * backoffBase
  assert.equal(fetch.requests.length, 3);
  assert.equal(fetch.last.params.get('timeout'), '3', 'half the time that was cut');
  assert.equal(fetch.last.since, '1-0');
  client.close();
});

test('poll: an answer that never comes is given up after timeout + connectTimeout, then polled again', async () => {
  const { client, clock, fetch } = setup({ transports: ['poll'], pollTimeout: 25, connectTimeout: 8000 });
  client.subscribe('a', () => {});
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '1-0', messages: [], gaps: [] } });
  await clock.advance(0);
  const held = fetch.last;
  await clock.advance(32999);
  assert.equal(held.aborted, false);
  await clock.advance(1);
  assert.ok(held.aborted);
  await clock.advance(250);
  assert.equal(fetch.requests.length, 3);
  assert.equal(fetch.last.since, '1-0');
  assert.equal(client.transport, 'poll');
  client.close();
});

test('background re-probe from poll: WebSocket first, then SSE on the next round; SSE takes over', async () => {
  const clock = new FakeClock();
  const storage = new FakeStorage({ [STORAGE_KEY]: JSON.stringify({ transport: 'poll', until: clock.now() + 3600e3 }) });
  const { client, WS, fetch, eventsOf } = setup({ reprobeInterval: 60000 }, { clock, storage });
  WS.refuse = true;
  const got = [];
  client.subscribe('a', (m) => got.push(m.id));
  await clock.advance(0);
  let n = 0;
  const answerPolls = async (ms) => {
    for (let t = 0; t < ms; t += 5000) {
      const r = fetch.requests.filter((q) => q.path === '/poll').at(-1);
      if (!r.settled) r.respond(200, { json: { cursor: `${++n}-0`, messages: [{ channel: 'a', id: `${n}-0`, data: null }], gaps: [] } });
      await clock.advance(5000);
    }
  };
  await answerPolls(60000);
  assert.equal(WS.attempts.length, 1, 'the first probe is a WebSocket');
  assert.equal(fetch.to('/sse').length, 0);
  await answerPolls(120000); // the failed probe doubles the interval
  assert.equal(fetch.to('/sse').length, 1, 'the second one SSE');
  const sse = fetch.last;
  const pollReq = fetch.to('/poll').at(-1);
  assert.equal(sse.since, `${n}-0`);
  sse.stream().push('retry: 2000\n\n');
  await clock.advance(0);
  assert.deepEqual(eventsOf('transport').map((e) => pick(e, 'from', 'to', 'reason')), [{ from: 'poll', to: 'sse', reason: 'probe' }]);
  assert.equal(client.transport, 'sse');
  assert.ok(pollReq.aborted);
  assert.equal(JSON.parse(storage.getItem(STORAGE_KEY)).transport, 'sse');
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => `${i + 1}-0`));
  client.close();
});

test('publish(): POST with the JSON body and the key; resolves to the ID; errors carry code and status', async () => {
  const { client, fetch } = setup({ apiKey: 'k1' });
  const p = client.publish('news', { text: 'hi' });
  const req = fetch.last;
  assert.equal(req.path, '/api/publish');
  assert.equal(req.params.get('channel'), 'news');
  assert.equal(req.opts.method, 'POST');
  assert.equal(req.opts.body, '{"text":"hi"}');
  assert.equal(req.opts.headers.Authorization, 'Bearer k1');
  req.respond(200, { json: { channel: 'news', id: '9-0' } });
  assert.equal(await p, '9-0');
  const p2 = client.publish('news', 1, { apiKey: 'other' });
  assert.equal(fetch.last.opts.headers.Authorization, 'Bearer other');
  fetch.last.respond(403, { json: { error: { code: 'forbidden', message: 'wrong key' } } });
  await assert.rejects(p2, (e) => e.message === 'wrong key' && e.code === 'forbidden' && e.status === 403);
  client.close();
});

test('poll: an onGap handler that throws does not stop the polling loop', async (t) => {
  const rejections = [];
  const onRejection = (e) => rejections.push(e);
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  const realSetTimeout = globalThis.setTimeout;
  const rethrown = []; // the client rethrows app errors on a real timer, outside delivery
  globalThis.setTimeout = (fn) => rethrown.push(fn);
  t.after(() => {
    globalThis.setTimeout = realSetTimeout;
  });
  const { client, clock, fetch } = setup({ transports: ['poll'] });
  const got = [];
  client.subscribe('a', (m) => got.push(m.id), {
    since: '9-0',
    onGap: () => {
      throw new Error('app bug in onGap');
    },
  });
  await clock.advance(0);
  fetch.last.respond(200, { json: { cursor: '2-0', messages: [{ channel: 'a', id: '2-0', data: null }], gaps: ['a'] } });
  await clock.advance(0);
  assert.equal(fetch.requests.length, 2, 'polls again');
  assert.deepEqual(got, ['2-0']);
  client.close();
});

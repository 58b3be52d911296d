// The SSE parser of web/src/pushedge.js, driven through the transport (fetch + a streaming body).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, sseMessage, refCursor } from './fakes.mjs';

const json = (channel, id, data = null) => JSON.stringify({ channel, id, data });

/** A client on SSE for these channels; got lists `${channel}:${id}:${JSON data}`. */
async function onSse(channels = ['a'], options = {}) {
  const h = setup({ transports: ['sse', 'poll'], ...options });
  const got = [];
  const gaps = [];
  for (const c of channels)
    h.client.subscribe(c, (m) => got.push(`${m.channel}:${m.id}:${JSON.stringify(m.data)}`), { onGap: (g) => gaps.push(g.channel) });
  await h.clock.advance(0);
  const req = h.fetch.last;
  assert.equal(req.path, '/sse');
  const stream = req.stream();
  const push = async (...chunks) => {
    for (const c of chunks) {
      stream.push(c);
      await h.clock.advance(0);
    }
  };
  return { ...h, req, stream, push, got, gaps };
}

test('SSE: CRLF, CR and LF line endings', async () => {
  const { client, push, got } = await onSse();
  await push(`id: 1-0\r\ndata: ${json('a', '1-0', 1)}\r\n\r\n`);
  assert.deepEqual(got, ['a:1-0:1']);
  await push(`id: 2-0\rdata: ${json('a', '2-0', 2)}\r\r`);
  await push(`id: 3-0\ndata: ${json('a', '3-0', 3)}\n\n`);
  await push(`id: 4-0\r\ndata: ${json('a', '4-0', 4)}\n\r\n`); // mixed within one event
  assert.deepEqual(got, ['a:1-0:1', 'a:2-0:2', 'a:3-0:3', 'a:4-0:4']);
  assert.deepEqual(client.positions, { a: '4-0' });
  client.close();
});

test('SSE: an event ended by CR-only line endings is dispatched without waiting for the next chunk', async () => {
  const { client, push, got } = await onSse();
  await push(`id: 1-0\rdata: ${json('a', '1-0', 1)}\r\r`);
  assert.deepEqual(got, ['a:1-0:1']);
  client.close();
});

test('SSE: multi-line data is joined with LF; field syntax variants', async () => {
  const { client, push, got } = await onSse();
  await push('id: 1-0\ndata: {"channel":"a",\ndata: "id":"1-0",\ndata:"data":[1,\ndata: 2]}\n\n');
  assert.deepEqual(got, ['a:1-0:[1,2]']);
  await push(`event: message\nid: 2-0\nfoo: ignored\nretry: soon\ndata:${json('a', '2-0', 'x')}\n\n`); // explicit type, no space after the colon
  await push(`data: ${json('a', '3-0', '  two spaces')}\n\n`); // only the first space after the colon goes
  await push(`event: unknown\ndata: ${json('a', '9-0')}\n\n`); // another type is not a message
  await push('data\n\n'); // a field without a colon: empty data, not JSON: ignored
  await push('data: not json\n\n');
  assert.deepEqual(got, ['a:1-0:[1,2]', 'a:2-0:"x"', 'a:3-0:"  two spaces"']);
  client.close();
});

test('SSE: comments (heartbeats) keep the stream alive past heartbeatTimeout; silence ends it', async () => {
  const { client, clock, fetch, push, got, req, eventsOf } = await onSse(['a'], { heartbeatTimeout: 60000 });
  await push('retry: 2000\n\n');
  for (let i = 0; i < 12; i++) {
    await clock.advance(25000);
    await push(': ping\n');
  }
  assert.equal(fetch.requests.length, 1, '300 s of heartbeats only: still the same stream');
  assert.equal(client.transport, 'sse');
  assert.deepEqual(got, []);
  await clock.advance(59999);
  assert.equal(req.aborted, false);
  await clock.advance(1);
  assert.ok(req.aborted);
  assert.equal(eventsOf('disconnected').at(-1).reason, 'sse_heartbeat_timeout');
  await clock.advance(eventsOf('disconnected').at(-1).retryIn);
  assert.equal(fetch.requests.length, 2, 'reconnected');
  client.close();
});

test('SSE: the bare id: line (no data) marks the stream live and updates positions', async () => {
  const one = await onSse(['a']);
  await one.push('retry: 2000\n');
  assert.equal(one.client.transport, null, 'not before the first event ends');
  await one.push('\nid: 9-9\n\n');
  assert.equal(one.client.transport, 'sse');
  assert.deepEqual(one.client.positions, { a: '9-9' });
  assert.deepEqual(one.got, []);
  one.client.close();

  const two = await onSse(['a', 'b']);
  const c = refCursor([['a', '5-1'], ['b', '70-0']]);
  await two.push(`retry: 2000\n\nid: ${c}\n\n`);
  assert.deepEqual(two.client.positions, { a: '5-1', b: '70-0' });
  assert.equal(two.client.cursor, c);
  two.client.close();
});

test('SSE: event: gap calls onGap and the gap event, and its id: moves the position (even backwards)', async () => {
  const { client, push, got, gaps, eventsOf } = await onSse(['a']);
  await push(sseMessage('a', '90-0', 1));
  await push('event: gap\nid: 50-0\ndata: {"channel":"a"}\n\n');
  assert.deepEqual(gaps, ['a']);
  assert.deepEqual(eventsOf('gap').map((e) => e.channel), ['a']);
  assert.deepEqual(client.positions, { a: '50-0' });
  await push(sseMessage('a', '50-1', 2));
  assert.deepEqual(got, ['a:90-0:1', 'a:50-1:2'], 'the gap is no message; the lower ID after it is delivered');
  await push('event: gap\ndata: {"channel":"zzz"}\n\n', 'event: gap\ndata: nope\n\n'); // other channel, malformed
  assert.deepEqual(gaps, ['a']);
  client.close();
});

test('SSE: event: engine is reported as the engine event, not as a message', async () => {
  const { client, push, got, eventsOf } = await onSse(['a']);
  await push('event: engine\ndata: {"state":"unavailable"}\n\n');
  await push('event: engine\ndata: {"state":"unavailable"}\n\n');
  await push('event: engine\ndata: {"state":"available"}\n\n');
  await push('event: engine\ndata: garbage\n\n');
  assert.deepEqual(eventsOf('engine').map((e) => e.state), ['unavailable', 'available']);
  assert.deepEqual(got, []);
  client.close();
});

test('SSE: chunks split in the middle of a line, between CR and LF, inside a UTF-8 character', async () => {
  const { client, push, got, stream, clock } = await onSse(['a']);
  // split between CR and LF: if the LF were read as a second line ending, the id: alone would be
  // dispatched first and the message itself then dropped as already seen
  await push('id: 1-0\r', '\ndata: {"chan', 'nel":"a","id":"1-0","da', 'ta":1}\r', '\n\r', '\n');
  assert.deepEqual(got, ['a:1-0:1']);
  const bytes = new TextEncoder().encode(`id: 2-0\ndata: ${json('a', '2-0', 'é€😀')}\n\n`);
  for (let i = 0; i < bytes.length; i++) stream.push(bytes.subarray(i, i + 1)); // one byte at a time
  await clock.advance(0);
  assert.deepEqual(got, ['a:1-0:1', 'a:2-0:"é€😀"']);
  // two events in one chunk, and an event split across three
  const ev3 = sseMessage('a', '3-0', 3);
  const ev4 = sseMessage('a', '4-0', 4);
  const ev5 = sseMessage('a', '5-0', 5);
  await push(ev3 + ev4 + ev5.slice(0, 10), ev5.slice(10, 30), ev5.slice(30));
  assert.deepEqual(got.slice(2), ['a:3-0:3', 'a:4-0:4', 'a:5-0:5']);
  client.close();
});

test('SSE: a refused request with a JSON error is reported and not retried (fatal)', async () => {
  const h = setup({ transports: ['sse', 'poll'] });
  h.client.subscribe('a', () => {}, { since: 'bogus-cursor' });
  await h.clock.advance(0);
  h.fetch.last.respond(400, { json: { error: { code: 'bad_cursor', message: 'bad cursor' } } });
  await h.clock.advance(0);
  assert.deepEqual(h.eventsOf('error').map((e) => [e.code, e.status]), [['bad_cursor', 400]]);
  assert.deepEqual(h.eventsOf('disconnected').map((e) => [e.reason, e.retryIn]), [['bad_cursor', null]]);
  await h.clock.advance(600000);
  assert.equal(h.fetch.requests.length, 1);
  h.client.close();
});

test('SSE: an onGap handler that throws does not tear the stream down', async (t) => {
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = () => 0; // swallow a rethrow, if the client does it the way it does for messages
  t.after(() => {
    globalThis.setTimeout = realSetTimeout;
  });
  const h = setup({ transports: ['sse', 'poll'] });
  const got = [];
  h.client.subscribe('a', (m) => got.push(m.id), {
    onGap: () => {
      throw new Error('app bug in onGap');
    },
  });
  await h.clock.advance(0);
  const req = h.fetch.last;
  const s = req.stream();
  s.push('retry: 2000\n\nevent: gap\nid: 4-0\ndata: {"channel":"a"}\n\n' + sseMessage('a', '5-0'));
  await h.clock.advance(0);
  globalThis.setTimeout = realSetTimeout;
  assert.equal(req.aborted || h.fetch.requests.length > 1, false, 'the same stream goes on');
  assert.deepEqual(got, ['5-0']);
  h.client.close();
});

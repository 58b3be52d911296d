// Positions and dedupe of the JS client (web/src/client/positions.js): what a channel starts
// from, how the server's cursors and starts move it, and which messages are duplicates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Positions } from '../../web/src/client/positions.js';
import { refCursor } from './fakes.mjs';

test('add: an ID is the position at once; a cursor naming the channel gives its entry; "0" and none give none', () => {
  const p = new Positions();
  p.add('a', '5-1');
  p.add('b', refCursor([['b', '7-0'], ['x', '1-0']]));
  p.add('c', '0');
  p.add('d', undefined);
  p.add('e', refCursor([['x', '1-0']]));
  assert.deepEqual(p.snapshot(), { a: '5-1', b: '7-0' });
  assert.equal(p.startFor('a'), '5-1');
  assert.equal(p.startFor('c'), '0');
  assert.equal(p.startFor('d'), null);
  assert.equal(p.startFor('e'), refCursor([['x', '1-0']]), 'a cursor naming other channels is passed on as asked');
  assert.equal(p.startFor('nope'), null);
});

test('accept: new IDs advance the position; duplicates, older IDs, unknown channels and bad envelopes are dropped', () => {
  const p = new Positions();
  p.add('a', null);
  assert.equal(p.accept('a', '10-0'), true, 'the first message whatever its ID');
  assert.equal(p.accept('a', '10-0'), false, 'the same ID again');
  assert.equal(p.accept('a', '9-5'), false, 'older');
  assert.equal(p.accept('a', '10-1'), true);
  assert.equal(p.accept('a', '11-0'), true);
  assert.equal(p.accept('b', '12-0'), false, 'not subscribed');
  assert.equal(p.accept('a', 12), false, 'an ID that is not a string');
  assert.deepEqual(p.snapshot(), { a: '11-0' });
  // beyond 2^53: compared as big integers
  p.add('big', '9007199254740993-0');
  assert.equal(p.accept('big', '9007199254740992-9'), false);
  assert.equal(p.accept('big', '9007199254740993-1'), true);
});

test('advance and advanceCursor: the server\'s starts and cursors only move positions forward', () => {
  const p = new Positions();
  p.add('a', null);
  p.add('b', '5-0');
  p.advance('a', '3-0');
  p.advance('b', '4-0');
  assert.deepEqual(p.snapshot(), { a: '3-0', b: '5-0' });
  p.advanceCursor(refCursor([['a', '2-0'], ['b', '6-0']]), ['a', 'b']);
  assert.deepEqual(p.snapshot(), { a: '3-0', b: '6-0' });
  p.advanceCursor('8-0', ['a']); // a bare ID for a one-channel set
  assert.equal(p.snapshot().a, '8-0');
  p.advanceCursor('9-0', ['a', 'b']);
  assert.deepEqual(p.snapshot(), { a: '8-0', b: '6-0' }, 'a bare ID names no channel of a set');
  p.advance('zz', '1-0');
  assert.deepEqual(Object.keys(p.snapshot()), ['a', 'b'], 'an unknown channel is not added');
});

test('gap: the position follows the server backwards, or restarts with the next message whatever its ID', () => {
  const p = new Positions();
  p.add('a', '50-0');
  p.gap('a', '3-0');
  assert.equal(p.snapshot().a, '3-0');
  assert.equal(p.accept('a', '4-0'), true, 'not a duplicate of the old position');
  p.gap('a', null);
  assert.deepEqual(p.snapshot(), {});
  assert.equal(p.startFor('a'), '0', 'reconnects ask for everything retained');
  assert.equal(p.accept('a', '1-0'), true);
  p.gap('a', 'garbage');
  assert.equal(p.startFor('a'), '0');
  p.gap('unknown', '1-0');
});

test('sinceFor: one channel gives its own start; several the multi cursor, "0" as entry 0-0, all "0" as "0"', () => {
  const p = new Positions();
  p.add('a', '0');
  p.add('b', '0');
  assert.equal(p.sinceFor(['a']), '0');
  assert.equal(p.sinceFor(['a', 'b']), '0');
  p.accept('a', '4-2');
  assert.equal(p.sinceFor(['a']), '4-2');
  assert.equal(p.sinceFor(['a', 'b']), refCursor([['a', '4-2'], ['b', '0-0']]));
  p.add('c', null);
  assert.equal(p.sinceFor(['a', 'b', 'c']), refCursor([['a', '4-2'], ['b', '0-0']]), 'new messages only: no entry');
  p.add('d', refCursor([['d', '9-9'], ['x', '1-1']]));
  assert.equal(p.sinceFor(['c', 'd']), refCursor([['d', '9-9']]));
  const q = new Positions();
  q.add('c', null);
  q.add('e', null);
  assert.equal(q.sinceFor(['c', 'e']), null, 'nothing known: no since');
});

test('sinceFor: a channel deleted while a transport still holds the old set is left out, not a crash', () => {
  const p = new Positions();
  p.add('a', '0');
  p.add('b', null);
  p.accept('b', '3-1');
  p.delete('a');
  assert.equal(p.sinceFor(['a']), null);
  assert.equal(p.sinceFor(['a', 'b']), refCursor([['b', '3-1']]));
  const q = new Positions();
  q.add('a', '0');
  q.add('b', '0');
  q.delete('b');
  assert.equal(q.sinceFor(['a', 'b']), '0');
});

test('cursor and snapshot: positions only, in subscription order; delete and clear drop channels', () => {
  const p = new Positions();
  assert.equal(p.cursor(), null);
  p.add('b', null);
  p.add('a', '0');
  assert.equal(p.cursor(), null, '"0" is not a position');
  p.accept('a', '2-0');
  p.accept('b', '1-0');
  assert.equal(p.cursor(), refCursor([['b', '1-0'], ['a', '2-0']]));
  p.delete('b');
  assert.equal(p.cursor(), '2-0', 'one channel: its bare ID');
  assert.equal(p.accept('b', '3-0'), false);
  p.clear();
  assert.deepEqual(p.snapshot(), {});
});

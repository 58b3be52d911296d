// The cursor codec of web/src/pushedge.js (docs/protocol.md "The cursor").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { channelTag, encodeCursor, decodeCursor, compareIds, refTag, refCursor } from './fakes.mjs';

test('channelTag is 32-bit FNV-1a: "a" is 1r9wi7g in base 36 (the docs example)', () => {
  assert.equal(channelTag('a').toString(36), '1r9wi7g');
  assert.equal(channelTag(''), 0x811c9dc5);
  assert.equal(channelTag('a'), 0xe40c292c);
  for (const name of ['b', 'news', 'chat:room-1', 'user@example.com', 'x'.repeat(200), 'A.B_C-D:E@F'])
    assert.equal(channelTag(name), Number(refTag(name)), name);
  for (const name of ['a', 'zzzz', 'x'.repeat(200)]) {
    const t = channelTag(name);
    assert.ok(Number.isInteger(t) && t >= 0 && t <= 0xffffffff, `${name}: unsigned 32-bit`);
  }
});

test('encodeCursor / decodeCursor: one channel is the bare ID, round trip', () => {
  const pos = new Map([['a', '1795593687634-0']]);
  const c = encodeCursor(['a'], pos);
  assert.equal(c, '1795593687634-0');
  assert.deepEqual(decodeCursor(c, ['a']), pos);
  assert.equal(encodeCursor(['a'], new Map()), null);
});

test('encodeCursor / decodeCursor: several channels, multi form, round trip', () => {
  const channels = ['a', 'b', 'news', 'chat:1'];
  const pos = new Map([
    ['a', '1795593687634-0'],
    ['b', '1795593687641-7'],
    ['news', '0-0'],
    ['chat:1', '18446744073709551615-18446744073709551615'],
  ]);
  const c = encodeCursor(channels, pos);
  assert.equal(c, refCursor([...pos]));
  assert.match(c, /^[0-9a-z._]+$/);
  assert.equal(c.split('_')[0], `1r9wi7g.${(1795593687634).toString(36)}.0`);
  assert.deepEqual(decodeCursor(c, channels), pos);
  // channels without a position are left out; an entry for a channel outside the set is ignored
  const partial = encodeCursor(['a', 'b'], new Map([['b', '5-1']]));
  assert.equal(partial, refCursor([['b', '5-1']]));
  assert.deepEqual(decodeCursor(partial, ['a', 'b']), new Map([['b', '5-1']]));
  assert.deepEqual(decodeCursor(c, ['b', 'zzz']), new Map([['b', '1795593687641-7']]));
  assert.equal(encodeCursor(['a', 'b'], new Map()), null);
});

test('decodeCursor: a bare ID names the one channel of a one-channel set only; "0" names nothing', () => {
  assert.deepEqual(decodeCursor('12-3', ['a']), new Map([['a', '12-3']]));
  assert.deepEqual(decodeCursor('12-3', ['a', 'b']), new Map());
  assert.deepEqual(decodeCursor('0', ['a']), new Map());
  assert.deepEqual(decodeCursor('0', ['a', 'b']), new Map());
  assert.deepEqual(decodeCursor('', ['a']), new Map());
  assert.deepEqual(decodeCursor(null, ['a']), new Map());
});

test('decodeCursor: malformed input gives an empty map', () => {
  const good = refCursor([['a', '5-1'], ['b', '6-2']]);
  for (const bad of [
    '1r9wi7g.5', // two fields
    '1r9wi7g.5.1.2', // four fields
    '1R9WI7G.5.1', // upper case
    '1r9wi7g.05.1', // leading zero
    '1r9wi7g..1', // empty field
    '1r9wi7g.5.1_', // empty entry
    `${good}_x!.1.1`, // a bad entry after good ones spoils all
    '1r9wi7g.5.-1',
    'hello',
    '12-3-4',
    ' 12-3',
  ])
    assert.deepEqual(decodeCursor(bad, ['a', 'b']), new Map(), JSON.stringify(bad));
});

test('compareIds: by milliseconds then sequence, as big integers beyond 2^53', () => {
  assert.ok(compareIds('1-0', '2-0') < 0);
  assert.ok(compareIds('2-0', '1-0') > 0);
  assert.ok(compareIds('5-9', '5-10') < 0); // numeric, not lexicographic
  assert.ok(compareIds('10-0', '9-99') > 0);
  assert.equal(compareIds('7-7', '7-7'), 0);
  // 2^53 + 1 and 2^53 are the same double: the comparison must not go through Number
  assert.ok(compareIds('9007199254740993-0', '9007199254740992-0') > 0);
  assert.ok(compareIds('1-9007199254740993', '1-9007199254740992') > 0);
  assert.ok(compareIds('18446744073709551615-0', '18446744073709551614-18446744073709551615') > 0);
  // malformed IDs sort first
  assert.ok(compareIds('junk', '0-0') < 0);
  assert.ok(compareIds('0-0', 'junk') > 0);
  assert.equal(compareIds('junk', 'other'), 0);
  const sorted = ['3-0', '10-1', '10-0', '2-5', '9007199254740993-0', '9007199254740992-1'].sort(compareIds);
  assert.deepEqual(sorted, ['2-5', '3-0', '10-0', '10-1', '9007199254740992-1', '9007199254740993-0']);
});

test('encodeCursor: of two channels with the same tag only the first gets an entry (the server refuses duplicate tags)', () => {
  // 'ch7tzx' and 'chi3ad' collide in 32-bit FNV-1a (found by search)
  assert.equal(channelTag('ch7tzx'), channelTag('chi3ad'));
  const c = encodeCursor(['ch7tzx', 'chi3ad', 'a'], new Map([['ch7tzx', '1-0'], ['chi3ad', '2-0'], ['a', '3-0']]));
  assert.equal(c, refCursor([['ch7tzx', '1-0'], ['a', '3-0']]));
});

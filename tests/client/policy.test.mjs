// The transport ladder of the JS client (web/src/client/policy.js) as pure functions: every rung
// of docs/client.md "Transport choice and fallback", without timers, sockets or a client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ladderStart, nextRung, opened, healthy, promoted, adopted, closed, reprobeDelay, reprobeTarget } from '../../web/src/client/policy.js';

const ORDER = ['websocket', 'sse', 'poll'];
const OPTS = Object.freeze({
  backoffBase: 500,
  backoffCap: 30000,
  cutThreshold: 90000,
  cutsToDemote: 3,
  drainDelay: Object.freeze([250, 2500]),
  reprobeInterval: 60000,
});

/** A random source that records its calls. */
function rng(...values) {
  const list = values.length ? values : [0.5];
  const f = () => {
    f.calls++;
    return list.length > 1 ? list.shift() : list[0];
  };
  f.calls = 0;
  return f;
}
const never = () => assert.fail('random() must not be called here');

/** Deep-freezes a ladder: the policy must never change its input. */
function frozen(ladder) {
  for (const v of Object.values(ladder)) if (Array.isArray(v)) Object.freeze(v);
  return Object.freeze(ladder);
}

/** A ladder connected on `transport` (nextRung applied), with `extra` fields. */
function on(transport, extra = {}, order = ORDER) {
  const start = { ...ladderStart(order.indexOf(transport), 20000), ...extra };
  return frozen(nextRung(start, order).ladder);
}

const close = (transport, info) => ({ transport, ...info });

test('ladderStart: the given rung, nothing marked, no backoff yet, the configured ping interval', () => {
  assert.deepEqual(ladderStart(1, 20000), {
    level: 1, attempt: 0, descent: [], demoted: [], cuts: [], cutsOf: null, wsPingInterval: 20000, reprobeRound: 0,
  });
});

test('nextRung: the current rung; marked rungs are skipped, the last one is used whatever its mark', () => {
  assert.equal(nextRung(frozen(ladderStart(0, 1)), ORDER).transport, 'websocket');
  const l = frozen({ ...ladderStart(0, 1), demoted: ['websocket'] });
  assert.deepEqual([nextRung(l, ORDER).transport, nextRung(l, ORDER).ladder.level], ['sse', 1]);
  const all = frozen({ ...ladderStart(0, 1), demoted: ['websocket', 'sse', 'poll'] });
  assert.deepEqual([nextRung(all, ORDER).transport, nextRung(all, ORDER).ladder.level], ['poll', 2]);
  // a level beyond a shorter ladder is clamped
  const high = frozen(ladderStart(5, 1));
  assert.equal(nextRung(high, ['sse']).transport, 'sse');
  assert.equal(nextRung(high, ['sse']).ladder.level, 0);
});

test('nextRung: cuts are counted per transport, kept for the same one, dropped for another', () => {
  const l = frozen({ ...ladderStart(0, 1), cuts: [3000, 3100], cutsOf: 'websocket' });
  assert.deepEqual(nextRung(l, ORDER).ladder.cuts, [3000, 3100]);
  const moved = frozen({ ...l, level: 1 });
  const r = nextRung(moved, ORDER);
  assert.deepEqual([r.ladder.cuts, r.ladder.cutsOf], [[], 'sse']);
  // idempotent: applying it twice changes nothing
  assert.deepEqual(nextRung(frozen(r.ladder), ORDER), r);
});

test('closed: a fatal refusal stops: no next transport, no delay, the history unchanged', () => {
  const l = on('sse');
  const d = closed(l, close('sse', { reason: 'forbidden', fatal: true, opened: false }), ORDER, OPTS, never);
  assert.deepEqual(d, { ladder: l, next: null, delay: null, fallback: null });
});

test('closed: a drain hint comes back to the same transport after its retryIn, no backoff counted', () => {
  const l = on('sse', { attempt: 3 });
  const d = closed(l, close('sse', { reason: 'drain', drain: true, retryIn: 3000, opened: true, lived: 5000 }), ORDER, OPTS, never);
  assert.deepEqual([d.next, d.delay, d.fallback], ['sse', 3000, null]);
  assert.equal(d.ladder.attempt, 3);
  assert.equal(d.ladder.level, 1);
  // retryIn 0 is a delay, not a missing one
  assert.equal(closed(l, close('sse', { reason: 'drain', drain: true, retryIn: 0, opened: true, lived: 1 }), ORDER, OPTS, never).delay, 0);
});

test('closed: with drainJitter a hint is stretched at random by up to that fraction, never shortened; 0 stays 0', () => {
  const opts = { ...OPTS, drainJitter: 0.25 };
  const l = on('websocket');
  for (const [r, want] of [[0, 1000], [0.5, 1125], [0.999, 1000 * (1 + 0.25 * 0.999)]]) {
    const d = closed(l, close('websocket', { reason: 'drain', drain: true, retryIn: 1000, opened: true, lived: 1 }), ORDER, opts, rng(r));
    assert.equal(d.delay, want);
  }
  assert.equal(closed(l, close('websocket', { reason: 'drain', drain: true, retryIn: 0, opened: true, lived: 1 }), ORDER, opts, never).delay, 0);
});

test('closed: a drain hint without its own delay waits random in drainDelay (even before opening)', () => {
  const l = on('websocket');
  for (const [r, want] of [[0, 250], [0.5, 1375], [0.999, 250 + 0.999 * 2250]]) {
    const d = closed(l, close('websocket', { reason: 'drain', drain: true, code: 1012, opened: false, lived: 0 }), ORDER, OPTS, rng(r));
    assert.deepEqual([d.next, d.delay], ['websocket', want]);
  }
  const undef = closed(l, close('sse', { reason: 'unavailable', drain: true, retryIn: undefined, opened: false }), ORDER, OPTS, rng(0));
  assert.equal(undef.delay, 250);
});

test('closed: refused before opening: the next rung at once, noted in the descent, not marked', () => {
  for (const reason of ['ws_refused', 'ws_error', 'ws_connect_timeout']) {
    const d = closed(on('websocket'), close('websocket', { reason, opened: false, lived: 0, idleMs: 0 }), ORDER, OPTS, never);
    assert.deepEqual([d.next, d.delay, d.fallback], ['sse', 0, null], reason);
    assert.deepEqual(d.ladder.descent, ['websocket']);
    assert.deepEqual(d.ladder.demoted, []);
    assert.equal(d.ladder.attempt, 0);
  }
  const sse = closed(on('sse', { descent: ['websocket'] }), close('sse', { reason: 'sse_error', opened: false, lived: 0 }), ORDER, OPTS, never);
  assert.deepEqual([sse.next, sse.delay, sse.ladder.descent], ['poll', 0, ['websocket', 'sse']]);
});

test('closed: silent before opening (ws_silent, sse_silent, sse_connect_timeout): marked at once, the transport event', () => {
  const ws = closed(on('websocket'), close('websocket', { reason: 'ws_silent', opened: false, lived: 0, idleMs: 5000 }), ORDER, OPTS, never);
  assert.deepEqual([ws.next, ws.delay], ['sse', 0]);
  assert.deepEqual(ws.ladder.demoted, ['websocket']);
  assert.deepEqual(ws.ladder.descent, []);
  assert.deepEqual(ws.fallback, { from: 'websocket', to: 'sse', reason: 'ws_silent' });
  for (const reason of ['sse_silent', 'sse_connect_timeout']) {
    const d = closed(on('sse'), close('sse', { reason, opened: false, lived: 0, idleMs: 0 }), ORDER, OPTS, never);
    assert.deepEqual([d.next, d.delay, d.ladder.demoted, d.fallback], ['poll', 0, ['sse'], { from: 'sse', to: 'poll', reason }]);
  }
});

test('closed: the last rung failing too means the server is away: backoff, then from the top', () => {
  const l = on('poll', { descent: ['websocket', 'sse'], attempt: 2 });
  const r = rng(0.5);
  const d = closed(l, close('poll', { reason: 'poll_error', opened: false }), ORDER, OPTS, r);
  assert.equal(r.calls, 1);
  assert.deepEqual([d.next, d.delay], ['websocket', 0.5 * 2000]); // min(cap, 500 * 2^2)
  assert.deepEqual([d.ladder.level, d.ladder.descent, d.ladder.demoted, d.ladder.attempt], [0, [], [], 3]);
  assert.equal(d.fallback, null);
});

test('closed: from the top again skips what is marked (an outage does not leave the client on poll)', () => {
  const l = on('poll', { demoted: ['websocket'] });
  const d = closed(l, close('poll', { reason: 'poll_error', opened: false }), ORDER, OPTS, rng(0));
  assert.deepEqual([d.next, d.ladder.level, d.delay], ['sse', 1, 0]);
});

test('closed: a silent last rung is marked and the ladder starts over after a backoff', () => {
  const order = ['websocket', 'sse'];
  const l = on('sse', {}, order);
  const d = closed(l, close('sse', { reason: 'sse_connect_timeout', opened: false, lived: 0 }), order, OPTS, rng(0.5));
  assert.deepEqual([d.next, d.delay, d.ladder.demoted], ['websocket', 250, ['sse']]);
  assert.deepEqual(d.fallback, { from: 'sse', to: 'websocket', reason: 'sse_connect_timeout' });
  // a one-rung ladder: marked, and still the only transport
  const one = closed(on('websocket', {}, ['websocket']), close('websocket', { reason: 'ws_silent', opened: false, lived: 0 }), ['websocket'], OPTS, rng(0.5));
  assert.deepEqual([one.next, one.delay, one.fallback], ['websocket', 250, { from: 'websocket', to: 'websocket', reason: 'ws_silent' }]);
});

test('closed: backoff is random * min(backoffCap, backoffBase * 2^attempt), the exponent capped at 30', () => {
  const cases = [[0, 500], [1, 1000], [5, 16000], [6, 30000], [29, 30000], [30, 30000]];
  for (const [attempt, ceiling] of cases) {
    const d = closed(on('websocket', { attempt }, ['websocket']), close('websocket', { reason: 'ws_refused', opened: false, lived: 0 }), ['websocket'], OPTS, rng(0.999));
    assert.equal(d.delay, 0.999 * ceiling, `attempt ${attempt}`);
    assert.equal(d.ladder.attempt, Math.min(attempt + 1, 30));
  }
  assert.equal(closed(on('websocket', {}, ['websocket']), close('websocket', { reason: 'ws_refused', opened: false }), ['websocket'], OPTS, rng(0)).delay, 0);
});

test('closed: an opened connection that lived past cutThreshold is not a cut: cuts forgotten, backoff', () => {
  const l = on('sse', { cuts: [3000, 3000], cutsOf: 'sse', attempt: 1 });
  const d = closed(l, close('sse', { reason: 'sse_cut', opened: true, lived: 90000, idleMs: 3000 }), ORDER, OPTS, rng(0.5));
  assert.deepEqual([d.next, d.delay, d.ladder.cuts, d.ladder.demoted, d.ladder.attempt], ['sse', 500, [], [], 2]);
});

test('closed: cutsToDemote similar cuts in a row mark the transport: the next rung at once', () => {
  let l = on('sse');
  const cut = { reason: 'sse_cut', opened: true, lived: 5000, idleMs: 3000 };
  let d = closed(l, close('sse', cut), ORDER, OPTS, rng(0.5));
  assert.deepEqual([d.next, d.delay, d.ladder.cuts, d.fallback], ['sse', 250, [3000], null]);
  d = closed(frozen(d.ladder), close('sse', { ...cut, idleMs: 4000 }), ORDER, OPTS, rng(0.5));
  assert.deepEqual([d.next, d.delay, d.ladder.cuts], ['sse', 500, [3000, 4000]]);
  d = closed(frozen(d.ladder), close('sse', { ...cut, idleMs: 3500 }), ORDER, OPTS, never);
  assert.deepEqual([d.next, d.delay, d.ladder.cuts, d.ladder.demoted], ['poll', 0, [], ['sse']]);
  assert.deepEqual(d.fallback, { from: 'sse', to: 'poll', reason: 'sse_cut' });
  assert.equal(d.ladder.attempt, 2, 'the demotion itself is not a backoff');
});

test('closed: dissimilar cuts (the longest above 1.5x the shortest + 1 s) do not mark', () => {
  let l = on('sse');
  for (const idleMs of [2000, 2000]) l = frozen(closed(l, close('sse', { reason: 'sse_cut', opened: true, lived: 9000, idleMs }), ORDER, OPTS, rng(0)).ladder);
  const edge = closed(l, close('sse', { reason: 'sse_cut', opened: true, lived: 9000, idleMs: 4000 }), ORDER, OPTS, never);
  assert.deepEqual(edge.ladder.demoted, ['sse'], '4000 <= 1.5 * 2000 + 1000');
  const over = closed(l, close('sse', { reason: 'sse_cut', opened: true, lived: 9000, idleMs: 4001 }), ORDER, OPTS, rng(0));
  assert.deepEqual([over.ladder.demoted, over.next, over.ladder.cuts], [[], 'sse', [2000, 2000, 4001]]);
  // only the last cutsToDemote count: the 2000s drop out of the window, then similar ones mark
  let m = frozen(over.ladder);
  m = frozen(closed(m, close('sse', { reason: 'sse_cut', opened: true, lived: 9000, idleMs: 4500 }), ORDER, OPTS, rng(0)).ladder);
  assert.deepEqual(m.demoted, [], '2000, 4001, 4500: dissimilar');
  m = frozen(closed(m, close('sse', { reason: 'sse_cut', opened: true, lived: 9000, idleMs: 4500 }), ORDER, OPTS, never).ladder);
  assert.deepEqual(m.demoted, ['sse'], '4001, 4500, 4500');
});

test('closed: a cut without idleMs counts its lifetime; a poll ending (no lifetime) is not a cut', () => {
  const d = closed(on('sse'), close('sse', { reason: 'sse_ended', opened: true, lived: 7000 }), ORDER, OPTS, rng(0));
  assert.deepEqual(d.ladder.cuts, [7000]);
  const p = closed(on('poll', { cuts: [1000], cutsOf: 'poll' }), close('poll', { reason: 'poll_error', opened: true }), ORDER, OPTS, rng(0.5));
  assert.deepEqual([p.next, p.delay, p.ladder.cuts], ['poll', 250, []]);
});

test('closed: a WebSocket cut idle for 1 s or more pings at half that from now on (at least 1 s)', () => {
  const ws = (idleMs, extra = {}) => closed(on('websocket', extra), close('websocket', { reason: 'ws_closed', opened: true, lived: 10000, idleMs }), ORDER, OPTS, rng(0));
  assert.equal(ws(3000).ladder.wsPingInterval, 1500);
  assert.equal(ws(1999).ladder.wsPingInterval, 1000, 'not below 1 s');
  assert.equal(ws(999).ladder.wsPingInterval, 20000, 'below 1 s idle: not an idle cut');
  assert.equal(ws(20000).ladder.wsPingInterval, 20000, 'idle as long as the interval: pings did not help, nothing to lower');
  assert.equal(ws(3000, { wsPingInterval: 1500 }).ladder.wsPingInterval, 1500, 'only ever lowered');
  assert.equal(ws(3000, { wsPingInterval: 1400 }).ladder.wsPingInterval, 1400);
  const sse = closed(on('sse'), close('sse', { reason: 'sse_cut', opened: true, lived: 10000, idleMs: 3000 }), ORDER, OPTS, rng(0));
  assert.equal(sse.ladder.wsPingInterval, 20000, 'SSE cuts leave the WebSocket interval alone');
  const long = closed(on('websocket'), close('websocket', { reason: 'ws_closed', opened: true, lived: 95000, idleMs: 3000 }), ORDER, OPTS, rng(0));
  assert.equal(long.ladder.wsPingInterval, 20000, 'not a cut');
});

test('closed: a mark on the last rung leaves the level there', () => {
  const order = ['websocket', 'sse'];
  const s = on('sse', { cuts: [3000, 3000], cutsOf: 'sse' }, order);
  const d = closed(s, close('sse', { reason: 'sse_cut', opened: true, lived: 5000, idleMs: 3000 }), order, OPTS, never);
  assert.deepEqual([d.next, d.delay, d.ladder.level, d.fallback], ['sse', 0, 1, { from: 'sse', to: 'sse', reason: 'sse_cut' }]);
});

test('opened: what was refused on the way down is marked, the transport that works is not', () => {
  const l = frozen({ ...ladderStart(2, 1), descent: ['websocket', 'sse'] });
  assert.deepEqual([opened(l, 'poll').demoted, opened(l, 'poll').descent], [['websocket', 'sse'], []]);
  assert.deepEqual(opened(l, 'sse').demoted, ['websocket']);
  const again = frozen({ ...ladderStart(1, 1), descent: ['websocket'], demoted: ['websocket'] });
  assert.deepEqual(opened(again, 'sse').demoted, ['websocket'], 'no duplicates');
});

test('healthy, promoted, adopted', () => {
  const l = frozen({ ...ladderStart(2, 1), attempt: 5, demoted: ['websocket', 'sse'], reprobeRound: 3, cuts: [1], cutsOf: 'poll' });
  assert.equal(healthy(l).attempt, 0);
  const p = promoted(l, 'websocket', ORDER);
  assert.deepEqual([p.level, p.demoted, p.reprobeRound, p.cuts, p.attempt], [0, ['sse'], 0, [], 5]);
  const a = adopted(l, 'sse', ORDER);
  assert.deepEqual({ ...a, level: 2 }, l);
  assert.equal(a.level, 1);
});

test('reprobeDelay: none on the top rung; reprobeInterval doubling per failed probe up to 16x, +-25% jitter', () => {
  assert.equal(reprobeDelay(frozen(ladderStart(0, 1)), OPTS, never), null);
  const at = (round, r) => reprobeDelay(frozen({ ...ladderStart(1, 1), reprobeRound: round }), OPTS, rng(r));
  assert.equal(at(0, 0.5), 60000);
  assert.equal(at(0, 0), 45000);
  assert.equal(at(0, 1), 75000);
  assert.equal(at(1, 0.5), 120000);
  assert.equal(at(4, 0.5), 960000);
  assert.equal(at(9, 0.5), 960000, 'capped at 16x');
});

test('reprobeTarget: the top transport; from the third rung the top and the second in turn; never the active one', () => {
  assert.equal(reprobeTarget(frozen(ladderStart(0, 1)), ORDER, 'websocket'), null);
  const fromSse = reprobeTarget(frozen(ladderStart(1, 1)), ORDER, 'sse');
  assert.deepEqual([fromSse.transport, fromSse.ladder.reprobeRound], ['websocket', 1]);
  const seq = [];
  let l = frozen(ladderStart(2, 1));
  for (let i = 0; i < 4; i++) {
    const p = reprobeTarget(l, ORDER, 'poll');
    seq.push(p.transport);
    l = frozen(p.ladder);
  }
  assert.deepEqual(seq, ['websocket', 'sse', 'websocket', 'sse']);
  assert.equal(reprobeTarget(frozen({ ...ladderStart(2, 1), reprobeRound: 1 }), ORDER, 'sse'), null);
});

test('a whole descent: black-holed WebSocket, buffered SSE, poll works; marks kept through an outage', () => {
  let l = frozen(nextRung(ladderStart(0, 20000), ORDER).ladder);
  let d = closed(l, close('websocket', { reason: 'ws_silent', opened: false, lived: 0, idleMs: 5000 }), ORDER, OPTS, never);
  assert.equal(d.next, 'sse');
  d = closed(frozen(d.ladder), close('sse', { reason: 'sse_silent', opened: false, lived: 0 }), ORDER, OPTS, never);
  assert.equal(d.next, 'poll');
  l = frozen(opened(frozen(d.ladder), 'poll'));
  assert.deepEqual(l.demoted, ['websocket', 'sse']);
  // the server goes away: poll fails before and after a backoff; the ladder stays on poll
  d = closed(l, close('poll', { reason: 'poll_error', opened: true }), ORDER, OPTS, rng(0.5));
  assert.deepEqual([d.next, d.delay], ['poll', 250]);
  d = closed(frozen(d.ladder), close('poll', { reason: 'poll_error', opened: false }), ORDER, OPTS, rng(0.5));
  assert.deepEqual([d.next, d.delay, d.ladder.level], ['poll', 500, 2]);
  // a probe of WebSocket works: it is unmarked and the top
  const p = promoted(frozen(d.ladder), 'websocket', ORDER);
  assert.deepEqual([nextRung(p, ORDER).transport, p.demoted], ['websocket', ['sse']]);
});

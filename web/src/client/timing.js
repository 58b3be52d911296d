/*
 * timing.js: the clock every part of the client takes its time from (tests replace it), and
 * deadlines that notice when a throttled background tab ran them late (docs/client.md
 * "Reconnecting").
 */

/** A clock that tests replace (now/setTimeout/clearTimeout/random). */
export const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
  random: () => Math.random(),
};

/**
 * A timer that notices when it fired late: in a background tab browsers run timers seconds or a
 * minute late, and a deadline that fired late says nothing about the connection. fn(late) gets
 * how many ms late it ran. Returns the function that cancels it.
 */
export function deadline(clock, ms, fn) {
  const due = clock.now() + ms;
  const t = clock.setTimeout(() => fn(Math.max(0, clock.now() - due)), ms);
  return () => clock.clearTimeout(t);
}

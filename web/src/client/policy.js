/*
 * policy.js: the transport ladder as pure functions: which transport to use next and after
 * how long, from how the last one ended and what happened before (docs/client.md "Transport
 * choice and fallback", "Reconnecting"). No timers, no I/O, no client: the client keeps the
 * history (a plain object, never changed in place) and acts on what comes out.
 *
 * `order` is the ladder itself, best first (the `transports` option minus what the runtime
 * lacks); `options` the client's options (backoffBase, backoffCap, cutThreshold, cutsToDemote,
 * drainDelay, reprobeInterval); `random` a source of jitter in [0, 1), called only when a delay
 * is drawn.
 */

/* Endings that prove the path, not the server, is the problem: the transport is marked at once. */
const SILENT = ['ws_silent', 'sse_silent', 'sse_connect_timeout'];

/**
 * The history at start. level: the rung to start on (0, or a remembered transport's);
 * pingInterval: the WebSocket idle ping interval until cuts lower it.
 */
export function ladderStart(level, pingInterval) {
  return {
    level, // the rung in use or next
    attempt: 0, // reconnect attempts since the last healthy period (the backoff exponent)
    descent: [], // transports refused on the way down since the last success
    demoted: [], // transports marked as not working on this path
    cuts: [], // idle times of the recent cuts of `cutsOf`
    cutsOf: null,
    wsPingInterval: pingInterval, // lowered behind an idle-killing proxy
    reprobeRound: 0, // failed background probes since the last switch
  };
}

/**
 * The transport a (re)connect uses: the current rung, past the marked ones (the last rung is
 * used whatever its mark). Cuts are counted per transport: they start over with a new one.
 * Returns {transport, ladder}.
 */
export function nextRung(ladder, order) {
  let level = Math.min(ladder.level, order.length - 1);
  while (level < order.length - 1 && ladder.demoted.includes(order[level])) level++;
  const transport = order[level];
  const fresh = transport !== ladder.cutsOf;
  return { transport, ladder: { ...ladder, level, cuts: fresh ? [] : ladder.cuts, cutsOf: transport } };
}

/** `transport` proved healthy: what refused on the way down to it is blocked on this path. */
export function opened(ladder, transport) {
  const demoted = [...ladder.demoted];
  for (const n of ladder.descent) if (n !== transport && !demoted.includes(n)) demoted.push(n);
  return { ...ladder, demoted, descent: [] };
}

/** Connected for healthyAfter: the backoff starts over. */
export function healthy(ladder) {
  return { ...ladder, attempt: 0 };
}

/** A background probe of `transport` proved healthy and took over. */
export function promoted(ladder, transport, order) {
  return { ...ladder, level: order.indexOf(transport), demoted: ladder.demoted.filter((n) => n !== transport), reprobeRound: 0, cuts: [] };
}

/** The active transport ended while a probe of `transport` ran: the probe carries on as active. */
export function adopted(ladder, transport, order) {
  return { ...ladder, level: order.indexOf(transport) };
}

/**
 * The wait for a server's reconnect hint of `ms`: never shorter, stretched at random by up to
 * options.drainJitter of it, so that clients handed the same hint (a Retry-After in whole
 * seconds, another server's fixed one) still come back spread out.
 */
export function hintDelay(ms, options, random) {
  const jitter = options.drainJitter ?? 0;
  return ms > 0 && jitter > 0 ? ms * (1 + jitter * random()) : ms;
}

/* Exponential backoff with full jitter: random(0, min(cap, base * 2^attempt)). */
function backoff(attempt, options, random) {
  const ceiling = Math.min(options.backoffCap, options.backoffBase * 2 ** attempt);
  return { delay: random() * ceiling, attempt: Math.min(attempt + 1, 30) };
}

/**
 * The active transport ended. close: {transport, reason, opened, lived, idleMs, drain, retryIn,
 * fatal} as the transport reported it. Returns {ladder, next, delay, fallback}: the history
 * after it, the transport to connect next (null: none) after `delay` ms (null: no retry, a
 * fatal refusal), and, when the ending marked a transport, the `transport` event to emit
 * ({from, to, reason}).
 *
 *   fatal                      no retry; the history is unchanged
 *   drain                      the same transport after retryIn, else random in drainDelay
 *   never opened, not last     the next rung at once; silent endings mark the transport, a
 *                              refusal is only noted in the descent (marked if a rung below works)
 *   never opened, last rung    back to the top after a backoff; the descent is forgotten
 *   opened, lived >= threshold not a cut (cuts forgotten); backoff
 *   opened, lived < threshold  a cut: its idle time is kept; a WebSocket cut idle >= 1 s pings at
 *                              half that idle time from now on (>= 1 s); cutsToDemote cuts in a
 *                              row within 1.5x (+1 s) of each other mark the transport: the next
 *                              rung at once, else backoff
 */
export function closed(ladder, close, order, options, random) {
  const name = close.transport;
  if (close.fatal) return { ladder, next: null, delay: null, fallback: null };
  const last = order.length - 1;
  let { level, attempt, descent, demoted, cuts, wsPingInterval } = ladder;
  let delay;
  let demote = null;

  if (close.drain) {
    // Told to come back (drain, 503): same transport, after the hint, not a failure.
    const [lo, hi] = options.drainDelay;
    delay = close.retryIn != null ? hintDelay(close.retryIn, options, random) : lo + random() * (hi - lo);
  } else if (!close.opened) {
    // Refused, silent (black-holed) or buffered: the next transport down, at once. When even
    // the last one failed, the server itself is away: back off and start over from the top.
    if (SILENT.includes(close.reason)) demote = name;
    else descent = [...descent, name];
    if (level < last) {
      level++;
      delay = 0;
    } else {
      level = 0;
      descent = [];
      ({ delay, attempt } = backoff(attempt, options, random));
    }
  } else {
    // It worked, then the network ended it. The same short life again and again is an
    // idle-killing proxy: a WebSocket first pings more often, then falls back.
    if (close.lived < options.cutThreshold) {
      cuts = [...cuts, close.idleMs ?? close.lived];
      if (name === 'websocket' && close.idleMs >= 1000 && close.idleMs < wsPingInterval)
        wsPingInterval = Math.max(1000, Math.floor(close.idleMs / 2));
      const recent = cuts.slice(-options.cutsToDemote);
      if (recent.length >= options.cutsToDemote && Math.max(...recent) <= 1.5 * Math.min(...recent) + 1000) demote = name;
    } else {
      cuts = [];
    }
    if (demote) delay = 0;
    else ({ delay, attempt } = backoff(attempt, options, random));
  }

  let fallback = null;
  if (demote) {
    if (!demoted.includes(demote)) demoted = [...demoted, demote];
    cuts = [];
    if (level < last && order[level] === demote) level++;
    fallback = { from: name, to: order[level], reason: close.reason };
  }
  const rung = nextRung({ ...ladder, level, attempt, descent, demoted, cuts, wsPingInterval }, order);
  return { ladder: rung.ladder, next: rung.transport, delay, fallback };
}

/**
 * The server refused the token (docs/client.md "Authentication"): that says nothing about the
 * path, so the transports refused on the way down since the last success are not held against
 * it: the next connect starts where that descent began, with it forgotten. Nothing is marked.
 */
export function authRefused(ladder, order) {
  const first = ladder.descent.length ? order.indexOf(ladder.descent[0]) : -1;
  return { ...ladder, level: first >= 0 ? first : ladder.level, descent: [] };
}

/**
 * How long until the better transport is probed in the background while `active` is on a
 * lower rung: reprobeInterval, doubling with each failed probe up to 16x, +-25% jitter. null
 * on the top rung.
 */
export function reprobeDelay(ladder, options, random) {
  if (ladder.level === 0) return null;
  const factor = Math.min(16, 2 ** ladder.reprobeRound);
  return options.reprobeInterval * factor * (0.75 + random() * 0.5);
}

/**
 * Which transport to probe from `active`: the top one; from the third rung or lower, the top
 * and the second in turn. Returns {transport, ladder} (the round counted), or null.
 */
export function reprobeTarget(ladder, order, active) {
  const name = order[0] === active ? null : order[ladder.level > 1 && ladder.reprobeRound % 2 ? 1 : 0];
  if (!name || name === active) return null;
  return { transport: name, ladder: { ...ladder, reprobeRound: ladder.reprobeRound + 1 } };
}

/*
 * pushedge.js: the browser (and Node) client of pushedge, one dependency-free ES module.
 *
 *   import { PushEdge } from '/pushedge.js';
 *   const client = new PushEdge('https://push.example.com');
 *   const off = client.subscribe('news', (m) => render(m.data), { since: '0' });
 *   client.on('connected', ({ transport }) => ...);  // 'websocket' | 'sse' | 'poll'
 *   off(); client.close();
 *
 * What it does for the app (docs/client.md has the rules and their deadlines):
 *   - picks the transport by itself, WebSocket, then SSE, then long-polling, and falls back when
 *     one is refused, black-holed (opens, then stays silent), buffered (no byte arrives) or cut
 *     again and again by an idle-killing proxy; remembers what worked per server and probes the
 *     better transport again in the background, switching without loss;
 *   - keeps one position per channel (the last message ID), hands it to whichever transport
 *     comes next, drops duplicates by ID and tells the app about gaps;
 *   - reconnects with exponential backoff and full jitter, honours drain hints (WebSocket
 *     1001/1012, SSE `retry:` at the end of a stream, 503 + Retry-After) and does not take a
 *     throttled timer in a background tab for a dead connection.
 *
 * One file on purpose: the server serves it as /pushedge.js with no bundler in between. The
 * sections are: cursor codec, small helpers, the three transports, the client.
 */

/* ---- names, IDs and cursors (docs/protocol.md "The cursor") ------------------------------------- */

const CHANNEL_RE = /^[A-Za-z0-9_\-.:@]{1,200}$/;
const ID_RE = /^(\d+)-(\d+)$/;
const MAX_CHANNELS = 64;

/** Parses '<ms>-<seq>' into [ms, seq] BigInts, or null. */
function parseId(id) {
  const m = ID_RE.exec(id);
  return m ? [BigInt(m[1]), BigInt(m[2])] : null;
}

/** Compares two message IDs: <0, 0, >0 (malformed IDs sort first). */
export function compareIds(a, b) {
  const pa = parseId(a), pb = parseId(b);
  if (!pa || !pb) return (pa ? 1 : 0) - (pb ? 1 : 0);
  if (pa[0] !== pb[0]) return pa[0] < pb[0] ? -1 : 1;
  if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
  return 0;
}

/** The channel name's 32-bit FNV-1a hash (names are ASCII by the channel rule). */
export function channelTag(name) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i) & 0xff;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function parseB36(s) {
  if (!/^(0|[1-9a-z][0-9a-z]*)$/.test(s)) return null;
  let v = 0n;
  for (const c of s) v = v * 36n + BigInt(parseInt(c, 36));
  return v;
}

/**
 * The cursor of a subscription set: for one channel its position (a message ID), for several
 * the multi-channel form '<tag>.<ms>.<seq>_...'. positions: Map channel -> ID; channels without
 * one are left out (they start with new messages). Returns null when nothing is known.
 */
export function encodeCursor(channels, positions) {
  if (channels.length === 1) return positions.get(channels[0]) ?? null;
  const entries = [];
  const tags = new Set();
  for (const c of channels) {
    const p = positions.get(c);
    const id = p && parseId(p);
    if (!id) continue;
    const tag = channelTag(c);
    if (tags.has(tag)) continue; // a collision: the server would refuse the duplicate tag
    tags.add(tag);
    entries.push(`${tag.toString(36)}.${id[0].toString(36)}.${id[1].toString(36)}`);
  }
  return entries.length ? entries.join('_') : null;
}

/**
 * Reads a cursor from any transport into positions for `channels`: Map channel -> ID of the
 * channels it names. A bare ID applies to a one-channel set only ('0' names nothing).
 */
export function decodeCursor(cursor, channels) {
  const out = new Map();
  if (typeof cursor !== 'string' || cursor === '' || cursor === '0') return out;
  if (ID_RE.test(cursor)) {
    if (channels.length === 1) out.set(channels[0], cursor);
    return out;
  }
  const byTag = new Map();
  for (const entry of cursor.split('_')) {
    const f = entry.split('.');
    if (f.length !== 3) return new Map();
    const tag = parseB36(f[0]), ms = parseB36(f[1]), seq = parseB36(f[2]);
    if (tag === null || ms === null || seq === null) return new Map();
    byTag.set(Number(tag), `${ms}-${seq}`);
  }
  for (const c of channels) {
    const id = byTag.get(channelTag(c));
    if (id !== undefined) out.set(c, id);
  }
  return out;
}

/* ---- helpers ------------------------------------------------------------------------------------ */

const DEFAULTS = {
  transports: ['websocket', 'sse', 'poll'],
  connectTimeout: 8000, // a transport that has not opened by then failed
  probeTimeout: 5000, // an open WebSocket must answer its first ping, an SSE stream send a byte
  pingInterval: 20000, // WebSocket: ping when nothing came for this long
  pongTimeout: 8000, // ... and give up when the pong is this late
  heartbeatTimeout: 60000, // SSE: no byte for this long (server heartbeat 25 s) is a dead stream
  pollTimeout: 25, // seconds a long-poll may be held (the server caps it at --poll-timeout)
  backoffBase: 500,
  backoffCap: 30000,
  healthyAfter: 10000, // connected this long: the backoff starts over
  cutThreshold: 90000, // a streaming connection ended by the network before this is "cut"
  cutsToDemote: 3, // this many similar cuts in a row: fall back
  reprobeInterval: 60000, // how soon a better transport is tried again (doubles up to 16x)
  rememberFor: 24 * 3600 * 1000, // how long the transport that worked is remembered
  drainDelay: [250, 2500], // reconnect delay after a drain hint without its own (random in range)
  storageKey: 'pushedge.transport',
};

/** A clock that tests replace (now/setTimeout/clearTimeout/random). */
const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
  random: () => Math.random(),
};

function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    if (s) {
      const k = '__pushedge_probe__';
      s.setItem(k, '1');
      s.removeItem(k);
      return s;
    }
  } catch (e) {
    /* storage disabled (privacy mode, sandboxed frame): remember nothing */
  }
  const mem = new Map();
  return { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, String(v)), removeItem: (k) => mem.delete(k) };
}

/**
 * A timer that notices when it fired late: in a background tab browsers run timers seconds or a
 * minute late, and a deadline that fired late says nothing about the connection. fn(late) gets
 * how many ms late it ran.
 */
function deadline(clock, ms, fn) {
  const due = clock.now() + ms;
  const t = clock.setTimeout(() => fn(Math.max(0, clock.now() - due)), ms);
  return () => clock.clearTimeout(t);
}

/** Retry-After (seconds or an HTTP date) in ms, or null. */
function retryAfterMs(res, clock) {
  const v = res.headers && res.headers.get && res.headers.get('retry-after');
  if (!v) return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, t - clock.now());
}

/**
 * What a non-200 answer to SSE or a poll means: 'later' (503/429: a draining node or an engine
 * outage; come back after retryIn), 'fatal' (a 4xx JSON error: this request is refused for good),
 * or 'failed' (anything else: count it as a failure of the transport).
 */
async function readRefusal(res, clock) {
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    /* not JSON */
  }
  const error = (body && body.error) || {};
  if (res.status === 503 || res.status === 429) return { kind: 'later', code: error.code, retryIn: retryAfterMs(res, clock) };
  if (res.status >= 400 && res.status < 500 && error.code)
    return { kind: 'fatal', info: { code: error.code, message: error.message, status: res.status } };
  return { kind: 'failed' };
}

/* ---- transports -----------------------------------------------------------------------------------
 * A transport carries the client's whole channel set over one connection. It reports to its
 * owner (the client) through these calls, each with itself first:
 *   _tOpen(t)                  the connection is up and proved healthy: messages flow
 *   _tMessage(t, envelope)     a message {channel, id, data}
 *   _tCursor(t, cursor)        a cursor the server sent (positions of every channel)
 *   _tPosition(t, channel, id) one channel's position (WebSocket subscribed)
 *   _tGap(t, channel, cursor)  history no longer reaches back for the channel
 *   _tEngine(t, state)         the server's engine notice ('available' | 'unavailable')
 *   _tError(t, info)           a request the server refused for good (bad channel, 403)
 *   _tClose(t, info)           the connection ended: {reason, opened, drain, retryIn, idleMs}
 * After _tClose (or stop()) a transport says nothing more.
 */

/** What every transport has: its owner, the options and clock, and its life flags. */
class Transport {
  constructor(name, client, channels) {
    this.name = name;
    this.client = client;
    this.o = client._o;
    this.clock = client._clock;
    this.channels = channels;
    this.done = false; // stopped or reported closed: says nothing more
    this.opened = false; // proved healthy
    this.starts = new Map(); // channel -> start position the server confirmed, while a candidate
  }
}

class WsTransport extends Transport {
  constructor(client, channels) {
    super('websocket', client, new Set(channels));
    this.pending = new Map(); // ref -> channel, subscribes not confirmed yet
    this.ref = 0;
    this.ws = null;
    this.pongSeen = false; // the first pong came back: healthy
    this.lastInbound = 0;
    this.cancelTimer = null;
    this.pingInterval = client._wsPingInterval;
    this.lateRetries = 0;
  }

  start() {
    const Ctor = this.o.WebSocket || globalThis.WebSocket;
    const url = this.client._url('/ws').replace(/^http/, 'ws');
    try {
      this.ws = new Ctor(url, ['pushedge.v1']);
    } catch (e) {
      this._end({ reason: 'ws_error' });
      return;
    }
    this.ws.onopen = () => this._onOpen();
    this.ws.onmessage = (ev) => this._onFrame(ev.data);
    this.ws.onerror = () => {}; // onclose follows with the code
    this.ws.onclose = (ev) => this._onClose(ev);
    this._arm(this.o.connectTimeout, 'ws_connect_timeout');
  }

  stop() {
    this.done = true;
    this._disarm();
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
      this.ws.onerror = () => {};
      try {
        this.ws.close(1000);
      } catch (e) {
        /* already closing */
      }
    }
  }

  /** The set changed: subscribe and unsubscribe on the open socket. */
  update(channels) {
    const next = new Set(channels);
    if (!this.ws || this.ws.readyState !== 1) {
      this.channels = next; // subscribed when it opens
      return;
    }
    for (const c of this.channels) if (!next.has(c)) this._send({ op: 'unsubscribe', channel: c });
    for (const c of next) if (!this.channels.has(c)) this._subscribe(c);
    this.channels = next;
  }

  _send(op) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(op));
  }

  _subscribe(channel) {
    const ref = ++this.ref;
    this.pending.set(ref, channel);
    const since = this.client._startFor(channel);
    this._send(since ? { op: 'subscribe', channel, since, ref } : { op: 'subscribe', channel, ref });
  }

  _arm(ms, reason) {
    this._disarm();
    this.cancelTimer = deadline(this.clock, ms, (late) => {
      this.cancelTimer = null;
      if (this.done) return;
      if (late > Math.min(2000, ms / 2) && this.ws && this.ws.readyState === 1 && this.lateRetries < 3) {
        // Throttled: ask again and give it the full time now that we are awake. Three late
        // deadlines in a row with nothing received in between: dead, throttled or not.
        this.lateRetries++;
        this._ping();
        this._arm(this.o.pongTimeout, reason);
        return;
      }
      this._fail(reason);
    });
  }

  _disarm() {
    if (this.cancelTimer) this.cancelTimer();
    this.cancelTimer = null;
  }

  _ping() {
    this._send({ op: 'ping' });
  }

  _onOpen() {
    if (this.done) return;
    this.lastInbound = this.clock.now();
    // A proxy may accept the upgrade and then forward nothing: only a pong proves the path.
    this._ping();
    for (const c of this.channels) this._subscribe(c);
    this._arm(this.o.probeTimeout, 'ws_silent');
  }

  /* Healthy once the pong came back and every subscribe sent so far is answered: the pong
   * overtakes the subscribed replies (the server answers a ping at once, a subscribe once its
   * start is fixed), and 'connected' promises that anything published from then on arrives. */
  _maybeOpened() {
    if (this.opened || !this.pongSeen || this.pending.size > 0) return;
    this.opened = true;
    this.openedAt = this.clock.now();
    this._idleWatch();
    this.client._tOpen(this);
  }

  /* Pings when nothing came for pingInterval; the pong must follow within pongTimeout. */
  _idleWatch() {
    this._disarm();
    const quiet = this.clock.now() - this.lastInbound;
    const wait = Math.max(0, this.pingInterval - quiet);
    this.cancelTimer = deadline(this.clock, wait, () => {
      this.cancelTimer = null;
      if (this.done) return;
      if (this.clock.now() - this.lastInbound < this.pingInterval) {
        this._idleWatch();
        return;
      }
      this._ping();
      this._arm(this.o.pongTimeout, 'ws_ping_timeout');
    });
  }

  _onFrame(data) {
    if (this.done) return;
    this.lastInbound = this.clock.now();
    this.lateRetries = 0;
    let op;
    try {
      op = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch (e) {
      return;
    }
    let pong = false;
    switch (op.op) {
    case 'message':
      this.client._tMessage(this, { channel: op.channel, id: op.id, data: op.data });
      break;
    case 'pong':
      this.pongSeen = true;
      pong = true;
      break;
    case 'subscribed':
      if (this.pending.has(op.ref)) {
        this.pending.delete(op.ref);
        if (op.cursor) this.client._tPosition(this, op.channel, op.cursor);
      }
      break;
    case 'gap':
      this.client._tGap(this, op.channel, op.cursor ?? null);
      break;
    case 'engine':
      this.client._tEngine(this, op.state);
      break;
    case 'error':
      if (this.pending.has(op.ref)) {
        const channel = this.pending.get(op.ref);
        this.pending.delete(op.ref);
        if (op.code !== 'already_subscribed') this.client._tError(this, { channel, code: op.code, message: op.message });
      }
      break;
    default:
      break;
    }
    // The idle watch reads lastInbound when it fires: only a pong needs to re-arm it.
    if (!this.opened) this._maybeOpened();
    else if (pong) this._idleWatch();
  }

  _onClose(ev) {
    if (this.done) return;
    const code = ev && ev.code;
    const drain = code === 1001 || code === 1012;
    this._end({
      reason: drain ? 'drain' : this.opened ? 'ws_closed' : 'ws_refused',
      code,
      drain,
      idleMs: this.clock.now() - this.lastInbound,
    });
  }

  _fail(reason) {
    if (this.done) return;
    if (this.ws) {
      this.ws.onclose = null;
      try {
        this.ws.close(4000);
      } catch (e) {
        /* closing anyway */
      }
    }
    this._end({ reason, idleMs: this.clock.now() - this.lastInbound });
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    this._disarm();
    this.client._tClose(this, { opened: this.opened, lived: this.opened ? this.clock.now() - this.openedAt : 0, ...info });
  }
}

/*
 * SSE over fetch() with our own parser, not EventSource: EventSource hides comment lines (the
 * heartbeats we need to see to tell a buffering proxy from a quiet channel), the bare `id:` line
 * that marks a stream live, and the `retry:` hint of a draining node; and it reconnects by
 * itself, where we want the cursor, the backoff and the fallback in our hands.
 */
class SseTransport extends Transport {
  constructor(client, channels) {
    super('sse', client, [...channels]);
    this.gotByte = false;
    this.drainRetry = null; // a `retry:` after the stream's first one: the node drains
    this.abort = null;
    this.cancelTimer = null;
    this.lastByte = 0;
  }

  start() {
    const fetchFn = this.o.fetch || globalThis.fetch;
    const qs = this.client._query(this.channels);
    this.abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    this._arm(this.o.connectTimeout, 'sse_connect_timeout');
    let res;
    Promise.resolve()
      .then(() => fetchFn(this.client._url(`/sse?${qs}`), {
        headers: { Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: this.abort ? this.abort.signal : undefined,
      }))
      .then((r) => {
        res = r;
        if (this.done) return null;
        if (res.status !== 200) return this._refused(res);
        this._arm(this.o.probeTimeout, 'sse_silent');
        return this._read(res.body.getReader());
      })
      .catch(() => this._end({ reason: this.gotByte ? 'sse_cut' : 'sse_error' }));
  }

  stop() {
    this.done = true;
    this._disarm();
    if (this.abort) this.abort.abort();
  }

  update(channels) {
    // One request carries the set: reopen it from the current positions.
    this.client._reopen(this);
  }

  async _refused(res) {
    const r = await readRefusal(res, this.clock);
    if (this.done) return;
    if (r.kind === 'later') {
      this._end({ reason: r.code || 'unavailable', drain: true, retryIn: r.retryIn ?? undefined });
    } else if (r.kind === 'fatal') {
      this.client._tError(this, r.info);
      this._end({ reason: r.info.code, fatal: true });
    } else {
      this._end({ reason: `sse_status_${res.status}` });
    }
  }

  _arm(ms, reason) {
    this._disarm();
    this.cancelTimer = deadline(this.clock, ms, (late) => {
      this.cancelTimer = null;
      if (this.done) return;
      // Woken late (background tab): whatever arrived meanwhile is in lastByte.
      if (late > Math.min(2000, ms / 2) && this.gotByte) {
        this._arm(this.o.heartbeatTimeout, reason);
        return;
      }
      if (this.abort) this.abort.abort();
      this._end({ reason });
    });
  }

  _disarm() {
    if (this.cancelTimer) this.cancelTimer();
    this.cancelTimer = null;
  }

  async _read(reader) {
    const decoder = new TextDecoder();
    let buf = '';
    let skipLF = false; // the last chunk ended in CR: an LF starting this one is its other half
    let ev = { type: '', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (this.done) {
        reader.cancel().catch(() => {});
        return;
      }
      if (done) break;
      if (!this.gotByte) {
        this.gotByte = true;
        this.openedAt = this.clock.now();
      }
      this.lastByte = this.clock.now();
      this._arm(this.o.heartbeatTimeout, 'sse_heartbeat_timeout');
      buf += decoder.decode(value, { stream: true });
      if (skipLF && buf[0] === '\n') buf = buf.slice(1);
      skipLF = false;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        if (buf[nl] === '\r' && nl === buf.length - 1) skipLF = true;
        buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          this._dispatch(ev);
          if (this.done) return;
          ev = { type: '', data: [], id: null };
          continue;
        }
        if (line[0] === ':') continue; // heartbeat or padding: it did its job by arriving
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'data') ev.data.push(val);
        else if (field === 'event') ev.type = val;
        else if (field === 'id') ev.id = val;
        // The stream's first `retry:` is the server's default; one later is a drain hint.
        else if (field === 'retry' && /^\d+$/.test(val) && this.opened) this.drainRetry = Number(val);
      }
    }
    // The server ended the stream: a draining node does so after a fresh `retry:`. Without one
    // it is a cut like any other (a proxy ending idle responses cleanly).
    if (this.drainRetry !== null) this._end({ reason: 'drain', drain: true, retryIn: this.drainRetry });
    else this._end({ reason: 'sse_ended' });
  }

  _dispatch(ev) {
    if (!this.opened) {
      this.opened = true;
      this.client._tOpen(this);
    }
    const data = ev.data.join('\n');
    if (ev.type === '' || ev.type === 'message') {
      if (ev.data.length) {
        let env = null;
        try {
          env = JSON.parse(data);
        } catch (e) {
          /* not ours */
        }
        if (env && typeof env.channel === 'string') this.client._tMessage(this, env);
      }
    } else if (ev.type === 'gap') {
      let channel = null;
      try {
        channel = JSON.parse(data).channel;
      } catch (e) {
        /* malformed */
      }
      if (channel) this.client._tGap(this, channel, null);
    } else if (ev.type === 'engine') {
      try {
        this.client._tEngine(this, JSON.parse(data).state);
      } catch (e) {
        /* malformed */
      }
    }
    if (ev.id !== null && ev.id !== '') this.client._tCursor(this, ev.id);
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    this._disarm();
    const opened = this.opened;
    this.client._tClose(this, {
      opened,
      lived: opened ? this.clock.now() - this.openedAt : 0,
      idleMs: this.clock.now() - (this.lastByte || this.clock.now()),
      ...info,
    });
  }
}

/* Long-polling: one request at a time, each from the cursor of the previous answer. */
class PollTransport extends Transport {
  constructor(client, channels) {
    super('poll', client, [...channels]);
    this.abort = null;
    this.timer = null;
    this.hold = client._pollHold;
    this.failures = 0;
  }

  start() {
    this._poll();
  }

  stop() {
    this.done = true;
    if (this.abort) this.abort.abort();
    if (this.timer) this.clock.clearTimeout(this.timer);
  }

  update(channels) {
    this.channels = [...channels];
    // Abort the held request; the next one carries the new set from the current positions.
    if (this.abort) this.abort.abort();
  }

  _later(ms) {
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      if (!this.done) this._poll();
    }, ms);
  }

  async _poll() {
    const fetchFn = this.o.fetch || globalThis.fetch;
    const channels = this.channels;
    // Until the first answer proves the path, hold for a second only: a quiet channel would
    // otherwise keep the client "connecting" for a whole hold (25 s).
    const hold = this.opened ? this.hold : Math.min(1, this.hold);
    this.lastHold = hold;
    const qs = `${this.client._query(channels)}&timeout=${hold}`;
    const abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    this.abort = abort;
    const t0 = this.clock.now();
    let expired = false;
    const cancel = deadline(this.clock, hold * 1000 + this.o.connectTimeout, () => {
      expired = true;
      if (abort) abort.abort();
    });
    let res, body;
    try {
      res = await fetchFn(this.client._url(`/poll?${qs}`), { cache: 'no-store', signal: abort ? abort.signal : undefined });
      body = res.status === 200 ? await res.json() : null;
    } catch (e) {
      cancel();
      if (this.done) return;
      if (abort && abort.signal.aborted && !expired) {
        this._poll(); // the set changed
        return;
      }
      this._failed(this.clock.now() - t0);
      return;
    } finally {
      cancel();
    }
    if (this.done) return;
    if (res.status !== 200) {
      const r = await readRefusal(res, this.clock);
      if (this.done) return;
      if (r.kind === 'later') {
        // Come back when told (jittered); the cursor is unchanged.
        this._later(Math.round((r.retryIn ?? 2000) * (0.5 + this.clock.random() * 0.5)));
      } else if (r.kind === 'fatal') {
        this.client._tError(this, r.info);
        this.done = true;
        this.client._tClose(this, { reason: r.info.code, fatal: true, opened: this.opened });
      } else {
        this._failed(this.clock.now() - t0);
      }
      return;
    }
    this.failures = 0;
    if (!this.opened) {
      this.opened = true;
      this.client._tOpen(this);
      if (this.done) return;
    }
    if (channels === this.channels) {
      for (const g of body.gaps || []) this.client._tGap(this, g, null);
      for (const m of body.messages || []) this.client._tMessage(this, m);
      if (body.cursor) this.client._tCursor(this, body.cursor);
    }
    if (!this.done) this._poll();
  }

  /*
   * A failed request. One cut after a few seconds of holding is the signature of a proxy that
   * kills idle requests: hold for less than that from now on, and remember it for the client.
   */
  _failed(heldMs) {
    this.failures++;
    const heldS = Math.floor(heldMs / 1000);
    if (heldS >= 1 && heldS < this.lastHold) {
      this.hold = Math.max(1, Math.floor(heldS / 2));
      this.client._pollHold = this.hold;
    }
    if (this.failures >= 2 || !this.opened) {
      this.done = true;
      this.client._tClose(this, { reason: 'poll_error', opened: this.opened });
      return;
    }
    this._later(Math.round(this.o.backoffBase * this.clock.random()));
  }
}

const TRANSPORTS = { websocket: WsTransport, sse: SseTransport, poll: PollTransport };

/* ---- the client ------------------------------------------------------------------------------------ */

export class PushEdge {
  /**
   * @param {string} baseUrl  the server, e.g. 'https://push.example.com' (default: this page's origin)
   * @param {object} [options]  see docs/client.md; every deadline is in ms
   */
  constructor(baseUrl, options = {}) {
    const origin = globalThis.location && globalThis.location.origin;
    this.baseUrl = String(baseUrl || origin || '').replace(/\/+$/, '');
    this._o = { ...DEFAULTS, ...options };
    this._clock = options.clock || realClock;
    this._storage = options.storage || defaultStorage();
    this._subs = new Map(); // channel -> { handlers: Set, onGap: Set, since, pos }
    this._listeners = new Map(); // event -> Set
    this._closed = false;
    this._state = 'idle';
    this._active = null; // the transport delivering now
    this._candidate = null; // a better transport being probed in the background
    this._level = this._startLevel();
    this._attempt = 0; // reconnect attempts since the last healthy period
    this._descent = []; // transports refused on the way down since the last success
    this._retryTimer = null;
    this._healthyTimer = null;
    this._reprobeTimer = null;
    this._reprobeRound = 0;
    this._openTimer = null;
    this._cuts = []; // idle times of the recent cuts of _cutsOf
    this._cutsOf = null;
    this._demoted = new Set();
    this._wsPingInterval = this._o.pingInterval;
    this._pollHold = this._o.pollTimeout;
    this._engine = 'available';
  }

  /** 'websocket' | 'sse' | 'poll' while connected, else null. */
  get transport() {
    return this._state === 'connected' && this._active ? this._active.name : null;
  }

  /** 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed' */
  get state() {
    return this._state;
  }

  /** The cursor of the current subscription set: hand it back as `since` to resume elsewhere. */
  get cursor() {
    const channels = [...this._subs.keys()];
    const pos = new Map();
    for (const c of channels) {
      const s = this._subs.get(c);
      if (s.pos) pos.set(c, s.pos);
    }
    return encodeCursor(channels, pos);
  }

  /** Each channel's position: {channel: id}. */
  get positions() {
    const out = {};
    for (const [c, s] of this._subs) if (s.pos) out[c] = s.pos;
    return out;
  }

  /**
   * Listens to 'connecting' {transport}, 'connected' {transport}, 'disconnected' {transport,
   * reason, retryIn}, 'gap' {channel}, 'error' {channel?, code, message}, 'engine' {state},
   * 'transport' {from, to, reason}. Returns a function that removes the listener.
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event).delete(fn);
  }

  /**
   * Subscribes to a channel; onMessage gets envelopes {channel, id, data}, each once, in order.
   * `since`: a message ID or cursor to resume after, '0' for everything retained, absent for new
   * messages only (used when the channel is first subscribed). Returns the unsubscribe function.
   */
  subscribe(channel, onMessage, { since, onGap } = {}) {
    if (this._closed) throw new Error('PushEdge: the client is closed');
    if (typeof channel !== 'string' || !CHANNEL_RE.test(channel))
      throw new TypeError(`PushEdge: bad channel name ${JSON.stringify(channel)} (1-200 of A-Z a-z 0-9 _ - . : @)`);
    if (typeof onMessage !== 'function') throw new TypeError('PushEdge: onMessage must be a function');
    let sub = this._subs.get(channel);
    if (!sub) {
      if (this._subs.size >= MAX_CHANNELS) throw new RangeError(`PushEdge: at most ${MAX_CHANNELS} channels per client`);
      sub = { handlers: new Set(), onGap: new Set(), since: since ?? null, pos: null };
      if (since && ID_RE.test(since)) sub.pos = since;
      else if (since && since !== '0') sub.pos = decodeCursor(since, [channel]).get(channel) ?? null;
      this._subs.set(channel, sub);
      this._setChanged();
    }
    const entry = { fn: onMessage };
    sub.handlers.add(entry);
    if (onGap) sub.onGap.add(onGap);
    return () => {
      const s = this._subs.get(channel);
      if (!s || !s.handlers.has(entry)) return;
      s.handlers.delete(entry);
      if (onGap) s.onGap.delete(onGap);
      if (s.handlers.size === 0) {
        this._subs.delete(channel);
        this._setChanged();
      }
    };
  }

  /**
   * Publishes through the HTTP API; resolves to the message ID. With `key` (an Idempotency-Key),
   * calling again with the same key after a failure (503, a network error) cannot store the
   * message twice: it resolves to the stored message's ID.
   */
  async publish(channel, data, { apiKey, key } = {}) {
    const fetchFn = this._o.fetch || globalThis.fetch;
    const headers = { 'Content-Type': 'application/json' };
    if (apiKey || this._o.apiKey) headers.Authorization = `Bearer ${apiKey || this._o.apiKey}`;
    if (key !== undefined) headers['Idempotency-Key'] = key;
    const res = await fetchFn(this._url(`/api/publish?channel=${encodeURIComponent(channel)}`), {
      method: 'POST',
      headers,
      body: JSON.stringify(data),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      const err = new Error((body && body.error && body.error.message) || `publish failed: HTTP ${res.status}`);
      err.code = body && body.error && body.error.code;
      err.status = res.status;
      throw err;
    }
    return body.id;
  }

  /** Closes the connection and drops every subscription. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._stopTimers();
    this._drop('_active');
    this._drop('_candidate');
    this._subs.clear();
    this._setState('closed', {});
  }

  /* ---- internals: events and state ---- */

  _emit(event, info) {
    const set = this._listeners.get(event);
    if (set) for (const fn of [...set]) {
      try {
        fn(info);
      } catch (e) {
        setTimeout(() => { throw e; }, 0); // an app bug must not break delivery
      }
    }
  }

  _setState(state, info) {
    this._state = state;
    this._emit(state, info);
    this._emit('state', { state, ...info });
  }

  _url(path) {
    return this.baseUrl + path;
  }

  _order() {
    const have = {
      websocket: !!(this._o.WebSocket || globalThis.WebSocket),
      sse: !!(this._o.fetch || globalThis.fetch) && typeof TextDecoder !== 'undefined',
      poll: !!(this._o.fetch || globalThis.fetch),
    };
    return this._o.transports.filter((t) => TRANSPORTS[t] && have[t]);
  }

  _storageKey() {
    return `${this._o.storageKey}:${this.baseUrl}`;
  }

  /* Starts at the transport remembered for this server, if any and fresh. */
  _startLevel() {
    try {
      const saved = JSON.parse(this._storage.getItem(this._storageKey()) || 'null');
      if (saved && saved.until > this._clock.now()) {
        const i = this._order().indexOf(saved.transport);
        if (i > 0) return i;
      }
    } catch (e) {
      /* nothing usable remembered */
    }
    return 0;
  }

  _remember(name) {
    try {
      if (this._order().indexOf(name) === 0) this._storage.removeItem(this._storageKey());
      else this._storage.setItem(this._storageKey(), JSON.stringify({ transport: name, until: this._clock.now() + this._o.rememberFor }));
    } catch (e) {
      /* storage full or disabled */
    }
  }

  _stopTimers() {
    for (const k of ['_retryTimer', '_healthyTimer', '_reprobeTimer', '_openTimer']) {
      if (this[k]) this._clock.clearTimeout(this[k]);
      this[k] = null;
    }
  }

  _drop(which) {
    const t = this[which];
    this[which] = null;
    if (t) t.stop();
  }

  /* ---- internals: positions ---- */

  /** The `since` for one channel on a new connection: its position, else what the app asked. */
  _startFor(channel) {
    const s = this._subs.get(channel);
    if (!s) return null;
    return s.pos || s.since || null;
  }

  /** channel=..&since=.. for a set (SSE and long-poll). */
  _query(channels) {
    const parts = channels.map((c) => `channel=${encodeURIComponent(c)}`);
    const since = this._sinceFor(channels);
    if (since) parts.push(`since=${encodeURIComponent(since)}`);
    return parts.join('&');
  }

  /*
   * One cursor for the whole set: every channel's position. A channel with none yet starts as the
   * app asked: '0' (everything retained) is entry 0-0 in the multi form, an ID or cursor its entry.
   */
  _sinceFor(channels) {
    if (channels.length === 1) return this._startFor(channels[0]);
    const pos = new Map();
    let allZero = true;
    for (const c of channels) {
      const s = this._subs.get(c);
      if (s.pos) pos.set(c, s.pos);
      else if (s.since === '0') pos.set(c, '0-0');
      else if (s.since) {
        const p = decodeCursor(s.since, [c]).get(c);
        if (p) pos.set(c, p);
      }
      if (s.pos || s.since !== '0') allZero = false;
    }
    if (allZero) return '0';
    return encodeCursor(channels, pos);
  }

  _tMessage(t, env) {
    if (t !== this._active && t !== this._candidate) return;
    const s = this._subs.get(env.channel);
    if (!s || typeof env.id !== 'string') return;
    if (s.pos && compareIds(env.id, s.pos) <= 0) return; // seen already (a reconnect or a switch)
    s.pos = env.id;
    for (const h of [...s.handlers]) {
      try {
        h.fn(env);
      } catch (e) {
        setTimeout(() => { throw e; }, 0);
      }
    }
  }

  _tCursor(t, cursor) {
    if (t !== this._active && t !== this._candidate) return;
    const channels = [...this._subs.keys()];
    for (const [c, id] of decodeCursor(cursor, t.channels ? [...t.channels] : channels)) {
      const s = this._subs.get(c);
      if (s && (!s.pos || compareIds(id, s.pos) > 0)) s.pos = id;
    }
  }

  _tPosition(t, channel, id) {
    // A candidate's start is not a position yet: the active transport may still deliver what
    // came before it. It becomes one if the candidate takes over (_promote).
    if (t !== this._active) {
      if (t === this._candidate) t.starts.set(channel, id);
      return;
    }
    const s = this._subs.get(channel);
    if (s && (!s.pos || compareIds(id, s.pos) > 0)) s.pos = id;
  }

  _tGap(t, channel, cursor) {
    if (t !== this._active && t !== this._candidate) return;
    const s = this._subs.get(channel);
    if (!s) return;
    // The position may move backwards (the engine lost data and IDs start over): take what the
    // server says, or accept the next message whatever its ID.
    s.pos = cursor && ID_RE.test(cursor) ? cursor : null;
    if (!s.pos) s.since = '0';
    for (const fn of [...s.onGap]) {
      try {
        fn({ channel });
      } catch (e) {
        setTimeout(() => { throw e; }, 0);
      }
    }
    this._emit('gap', { channel });
  }

  _tEngine(t, state) {
    if (t !== this._active || state === this._engine) return;
    this._engine = state;
    this._emit('engine', { state });
  }

  _tError(t, info) {
    this._emit('error', info);
  }

  /* ---- internals: connecting, falling back, switching ---- */

  _setChanged() {
    if (this._closed) return;
    // Several subscribe() calls in one tick make one change.
    if (this._openTimer) return;
    this._openTimer = this._clock.setTimeout(() => {
      this._openTimer = null;
      this._applySet();
    }, 0);
  }

  _applySet() {
    const channels = [...this._subs.keys()];
    if (this._candidate) {
      // The probe was for the old set: drop it and try again later with the new one.
      this._drop('_candidate');
      if (this._active) this._scheduleReprobe();
    }
    if (channels.length === 0) {
      this._stopTimers();
      this._drop('_active');
      if (this._state !== 'idle') this._setState('idle', {});
      return;
    }
    if (this._active) this._active.update(channels);
    else if (!this._retryTimer) this._connect();
  }

  /** Called by SSE when its set changed: a new request from the positions. */
  _reopen(t) {
    if (t !== this._active) return;
    const channels = [...this._subs.keys()];
    const next = new TRANSPORTS[t.name](this, channels);
    this._active = next;
    t.stop();
    next.start();
  }

  _connect() {
    if (this._closed || this._subs.size === 0) return;
    const order = this._order();
    if (order.length === 0) throw new Error('PushEdge: no transport available (pass options.WebSocket or options.fetch)');
    this._level = Math.min(this._level, order.length - 1);
    while (this._level < order.length - 1 && this._demoted.has(order[this._level])) this._level++;
    const name = order[this._level];
    if (name !== this._cutsOf) {
      this._cuts = []; // cuts are counted per transport
      this._cutsOf = name;
    }
    const t = new TRANSPORTS[name](this, [...this._subs.keys()]);
    this._active = t;
    this._setState('connecting', { transport: name });
    t.start();
  }

  _tOpen(t) {
    if (t === this._candidate) {
      this._promote(t);
      return;
    }
    if (t !== this._active) return;
    // What refused on the way down to here is blocked on this path, not merely down.
    for (const n of this._descent) if (n !== t.name) this._demoted.add(n);
    this._descent = [];
    this._remember(t.name);
    this._setState('connected', { transport: t.name });
    if (this._healthyTimer) this._clock.clearTimeout(this._healthyTimer);
    this._healthyTimer = this._clock.setTimeout(() => {
      this._healthyTimer = null;
      this._attempt = 0;
    }, this._o.healthyAfter);
    this._scheduleReprobe();
  }

  /* A better transport proved itself next to the active one: it takes over (duplicates of the
   * overlap are dropped by ID), the old one is closed. */
  _promote(t) {
    const old = this._active;
    this._candidate = null;
    this._active = t;
    for (const [c, id] of t.starts) this._tPosition(t, c, id);
    this._level = this._order().indexOf(t.name);
    this._demoted.delete(t.name);
    this._reprobeRound = 0;
    this._cuts = [];
    if (old) old.stop();
    this._remember(t.name);
    this._emit('transport', { from: old ? old.name : null, to: t.name, reason: 'probe' });
    this._setState('connected', { transport: t.name });
    this._scheduleReprobe();
  }

  _scheduleReprobe() {
    if (this._reprobeTimer) this._clock.clearTimeout(this._reprobeTimer);
    this._reprobeTimer = null;
    if (this._level === 0 || !this._active) return;
    const factor = Math.min(16, 2 ** this._reprobeRound);
    const ms = this._o.reprobeInterval * factor * (0.75 + this._clock.random() * 0.5);
    this._reprobeTimer = this._clock.setTimeout(() => {
      this._reprobeTimer = null;
      this._reprobe();
    }, ms);
  }

  _reprobe() {
    if (this._closed || !this._active || this._candidate || this._state !== 'connected') return;
    const order = this._order();
    const name = order[0] === this._active.name ? null : order[this._level > 1 && this._reprobeRound % 2 ? 1 : 0];
    if (!name || name === this._active.name) return;
    this._reprobeRound++;
    const t = new TRANSPORTS[name](this, [...this._subs.keys()]);
    this._candidate = t;
    t.start();
  }

  _tClose(t, info) {
    if (t === this._candidate) {
      // The better transport still does not work here: try again later.
      this._candidate = null;
      this._scheduleReprobe();
      return;
    }
    if (t !== this._active) return;
    this._active = null;
    if (this._reprobeTimer) this._clock.clearTimeout(this._reprobeTimer);
    this._reprobeTimer = null;
    if (this._healthyTimer) this._clock.clearTimeout(this._healthyTimer);
    this._healthyTimer = null;
    if (this._candidate) {
      // The probe was about to take over anyway: let it (it reports open or close soon).
      this._active = this._candidate;
      this._candidate = null;
      for (const [c, id] of this._active.starts) this._tPosition(this._active, c, id);
      this._level = this._order().indexOf(this._active.name);
      this._setState('connecting', { transport: this._active.name });
      return;
    }
    const order = this._order();
    const name = t.name;
    let delay;
    let demote = null;

    if (info.fatal) {
      this._setState('disconnected', { transport: name, reason: info.reason, retryIn: null });
      return;
    }
    if (info.drain) {
      // Told to come back (drain, 503): same transport, after the hint, not a failure.
      const [lo, hi] = this._o.drainDelay;
      delay = info.retryIn ?? lo + this._clock.random() * (hi - lo);
    } else if (!info.opened) {
      // Refused, silent (black-holed) or buffered: the next transport down, at once. Silence
      // proves the path is the problem; a refusal only does once a transport below works (the
      // failures of this descent are then marked, in _tOpen). When even the last one failed, the
      // server itself is away: back off and start over from the top.
      if (info.reason === 'ws_silent' || info.reason === 'sse_silent' || info.reason === 'sse_connect_timeout') demote = name;
      else this._descent.push(name);
      if (this._level < order.length - 1) {
        this._level++;
        delay = 0;
      } else {
        this._level = 0;
        this._descent = [];
        delay = this._backoff();
      }
    } else {
      // It worked, then the network ended it. The same short life again and again is an
      // idle-killing proxy: a WebSocket first pings more often, then falls back.
      if (info.lived < this._o.cutThreshold) {
        this._cuts.push(info.idleMs ?? info.lived);
        if (name === 'websocket' && info.idleMs >= 1000 && info.idleMs < this._wsPingInterval) {
          this._wsPingInterval = Math.max(1000, Math.floor(info.idleMs / 2));
        }
        const recent = this._cuts.slice(-this._o.cutsToDemote);
        if (recent.length >= this._o.cutsToDemote && Math.max(...recent) <= 1.5 * Math.min(...recent) + 1000) demote = name;
      } else {
        this._cuts = [];
      }
      delay = demote ? 0 : this._backoff();
    }
    if (demote) {
      this._demoted.add(demote);
      this._cuts = [];
      if (this._level < order.length - 1 && order[this._level] === demote) this._level++;
      this._emit('transport', { from: name, to: order[this._level], reason: info.reason });
    }
    this._setState('disconnected', { transport: name, reason: info.reason, retryIn: Math.round(delay) });
    this._retryTimer = this._clock.setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, delay);
  }

  /* Exponential backoff with full jitter: random(0, min(cap, base * 2^attempt)). */
  _backoff() {
    const ceiling = Math.min(this._o.backoffCap, this._o.backoffBase * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 30);
    return this._clock.random() * ceiling;
  }
}

export default PushEdge;

/*
 * client.js: the PushEdge class: the app's subscriptions and events, and the orchestration of
 * the transports (which one runs, the background probe, retries) by the ladder policy
 * (policy.js) over the positions (positions.js), and what a refusal or an expiring notice of
 * the token (auth.js) makes it do. The only module that holds state across connections;
 * docs/client.md "Inside the client" shows who owns what.
 */

import { CHANNEL_RE, MAX_CHANNELS } from './cursor.js';
import { Positions } from './positions.js';
import { realClock } from './timing.js';
import { defaultStorage, recall, remember } from './memory.js';
import { ladderStart, nextRung, opened, healthy, promoted, adopted, closed, reprobeDelay, reprobeTarget, authRefused } from './policy.js';
import { TokenSource } from './auth.js';
import { WsTransport } from './transports/ws.js';
import { SseTransport } from './transports/sse.js';
import { PollTransport } from './transports/poll.js';
import { GATHER_MS, SWEEP_MS, SharedLink, sharedEnv, tabStart } from './shared.js';

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
  drainJitter: 0.25, // a drain hint's delay is stretched by up to this fraction, at random
  storageKey: 'pushedge.transport',
  tokenVia: 'header', // 'header' (Authorization; the auth op on WebSocket) | 'query' | 'cookie'
  refreshMargin: 30000, // renew the token this long before its exp
  shared: false, // one connection for every tab of the origin (shared.js)
  sharedGather: GATHER_MS, // a new leader waits this long for the other tabs' sets
  sharedSweep: SWEEP_MS, // the leader looks for tabs gone without a word this often
};

const TRANSPORTS = { websocket: WsTransport, sse: SseTransport, poll: PollTransport };
const PATHS = { websocket: '/ws', sse: '/sse', poll: '/poll' };

/* Calls a callback of the app: its exception must not break delivery, so it is rethrown later. */
function callApp(fn, info) {
  try {
    fn(info);
  } catch (e) {
    setTimeout(() => { throw e; }, 0);
  }
}

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
    this._subs = new Map(); // channel -> { handlers: Set, onGap: Set }, the app's side
    this._positions = new Positions(); // the same channels' positions
    this._listeners = new Map(); // event -> Set
    this._closed = false;
    this._state = 'idle';
    // A running transport is held in a slot: {name, transport, starts}; `starts` are the start
    // positions a background candidate's server confirmed (positions once it takes over).
    this._active = null; // the transport delivering now
    this._candidate = null; // a better transport being probed in the background
    this._ladder = ladderStart(recall(this._storage, this._storageKey(), this._order(), this._clock.now()), this._o.pingInterval);
    this._retryTimer = null;
    this._healthyTimer = null;
    this._reprobeTimer = null;
    this._openTimer = null;
    this._pollHold = this._o.pollTimeout; // learned by the poll transport behind a cutting proxy
    this._engine = 'available';
    if (this._o.refreshMargin === undefined) this._o.refreshMargin = DEFAULTS.refreshMargin;
    this._auth = new TokenSource(this._o, this._clock, () => this._renewToken());
    this._o.tokenVia = this._auth.via; // an explicit undefined means the default, for the transports too
    // Set when the next connect must first get a token from getToken(): {why: 'start'}, or
    // {why: 'refused', refused, token, transport} after the server refused `token`.
    this._tokenNeed = this._auth.started ? null : { why: 'start' };
    this._tokenWait = false; // a getToken() for the next connect is in flight
    this._tokenFailures = 0; // getToken() failures in a row (the backoff exponent)
    this._authRefusals = 0; // refusals of the token since a transport last opened: the 2nd is final
    this._denied = new Set(); // WebSocket channels refused once and retried with a new token
    // shared: the tab's end of the one connection of all tabs (null: this client connects
    // itself, also where Web Locks or BroadcastChannel are missing). The connection then is the
    // leader tab's hub, an unshared PushEdge with these options; this object only keeps the
    // app's subscriptions and their positions, and takes the hub's messages and events.
    this._shared = null;
    this._sharedVia = null; // the hub's transport while it is connected
    this._sharedLast = null; // 'state:transport' of the hub's last status heard
    const env = this._o.shared ? sharedEnv(this._o) : null;
    if (env)
      this._shared = new SharedLink(this, env, {
        baseUrl: this.baseUrl,
        clock: this._clock,
        gatherMs: this._o.sharedGather,
        sweepMs: this._o.sharedSweep,
        makeHub: () => new PushEdge(this.baseUrl, { ...options, shared: false, clock: this._clock, storage: this._storage }),
      });
  }

  /** 'websocket' | 'sse' | 'poll' while connected, else null. */
  get transport() {
    if (this._shared) return this._state === 'connected' ? this._sharedVia : null;
    return this._state === 'connected' && this._active ? this._active.name : null;
  }

  /** With `shared`: 'leader' (this tab holds the connection) or 'follower'; else null. */
  get shared() {
    return this._shared ? this._shared.role : null;
  }

  /** 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed' */
  get state() {
    return this._state;
  }

  /** The cursor of the current subscription set: hand it back as `since` to resume elsewhere. */
  get cursor() {
    return this._positions.cursor();
  }

  /** Each channel's position: {channel: id}. */
  get positions() {
    return this._positions.snapshot();
  }

  /**
   * Listens to 'connecting' {transport}, 'connected' {transport}, 'disconnected' {transport,
   * reason, retryIn}, 'gap' {channel}, 'error' {channel?, code, message}, 'engine' {state},
   * 'transport' {from, to, reason}, 'auth' {code, message, status?, channel?, transport} (the
   * server refused the token for good). Returns a function that removes the listener.
   */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event).delete(fn);
  }

  /**
   * Subscribes to a channel; onMessage gets envelopes {channel, id, data}, each once, in order.
   * `since`: a message ID or cursor to resume after, '0' for everything retained, absent for new
   * messages only (used when the channel is first subscribed). `presence`: a function that gets
   * the channel's presence events {type: 'join'|'leave'|'count', channel, ...} (docs/client.md
   * "Presence"); it must be given by the subscribe() that first subscribes the channel. Returns
   * the unsubscribe function.
   */
  subscribe(channel, onMessage, { since, onGap, presence } = {}) {
    if (this._closed) throw new Error('PushEdge: the client is closed');
    if (typeof channel !== 'string' || !CHANNEL_RE.test(channel))
      throw new TypeError(`PushEdge: bad channel name ${JSON.stringify(channel)} (1-200 of A-Z a-z 0-9 _ - . : @)`);
    if (typeof onMessage !== 'function') throw new TypeError('PushEdge: onMessage must be a function');
    if (presence !== undefined && typeof presence !== 'function') throw new TypeError('PushEdge: presence must be a function');
    if (presence && this._shared) throw new TypeError('PushEdge: presence is not available with shared: true');
    let sub = this._subs.get(channel);
    if (sub && presence && !sub.wantsPresence)
      throw new Error(`PushEdge: ${channel} is subscribed without presence; unsubscribe it first, or ask for presence in its first subscribe()`);
    if (!sub) {
      if (this._subs.size >= MAX_CHANNELS) throw new RangeError(`PushEdge: at most ${MAX_CHANNELS} channels per client`);
      sub = { handlers: new Set(), onGap: new Set(), presence: new Set(), wantsPresence: !!presence };
      this._positions.add(channel, since);
      this._subs.set(channel, sub);
      this._setChanged();
    }
    const entry = { fn: onMessage };
    sub.handlers.add(entry);
    if (onGap) sub.onGap.add(onGap);
    if (presence) sub.presence.add(presence);
    return () => {
      const s = this._subs.get(channel);
      if (!s || !s.handlers.has(entry)) return;
      s.handlers.delete(entry);
      if (onGap) s.onGap.delete(onGap);
      if (presence) s.presence.delete(presence);
      if (s.handlers.size === 0) {
        this._subs.delete(channel);
        this._positions.delete(channel);
        this._denied.delete(channel);
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
    // The API key, else the token (its `publish` claim; docs/auth.md "Publishing with a token").
    let bearer = apiKey || this._o.apiKey || this._auth.token;
    // Shared: the connection's token is the leader's; this tab gets its own for publishing.
    if (!bearer && this._shared && this._auth.canRenew()) {
      const r = await this._auth.renew();
      if (r.kind === 'ok') bearer = r.token;
    }
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
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

  /**
   * After the client stopped on a refusal for good (an `auth` event, or an `error` with
   * `retryIn: null`): connects again from the positions, with a new token from getToken()
   * when there is one (after the user logged in again, say). Does nothing while connected.
   */
  reconnect() {
    if (this._closed) throw new Error('PushEdge: the client is closed');
    if (this._shared) {
      this._shared.reconnect();
      return;
    }
    if (this._active || this._retryTimer || this._tokenWait) return;
    this._authRefusals = 0;
    this._denied.clear();
    if (this._auth.canRenew()) this._tokenNeed = { why: 'start' };
    this._connect();
  }

  /** Closes the connection and drops every subscription. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (this._shared) this._shared.close();
    this._auth.stop();
    this._stopTimers();
    this._drop('_active');
    this._drop('_candidate');
    this._subs.clear();
    this._positions.clear();
    this._setState('closed', {});
  }

  /* ---- internals: events and state ---- */

  _emit(event, info) {
    const set = this._listeners.get(event);
    if (set) for (const fn of [...set]) callApp(fn, info);
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

  _remember(name) {
    remember(this._storage, this._storageKey(), this._order(), name, this._clock.now(), this._o.rememberFor);
  }

  _stopTimers() {
    for (const k of ['_retryTimer', '_healthyTimer', '_reprobeTimer', '_openTimer']) {
      if (this[k]) this._clock.clearTimeout(this[k]);
      this[k] = null;
    }
  }

  _drop(which) {
    const slot = this[which];
    this[which] = null;
    if (slot) slot.transport.stop();
  }

  /* ---- internals: transports ---- */

  /**
   * A transport for `name`, built from its URL, its options and the callbacks below; it gets
   * no reference to the client. Returns its slot; the caller starts it with the channel set.
   */
  _spawn(name) {
    const url = this._url(PATHS[name]);
    const options = {
      ...this._o,
      clock: this._clock,
      pingInterval: this._ladder.wsPingInterval,
      pollTimeout: this._pollHold,
    };
    const slot = { name, transport: null, starts: new Map() };
    slot.transport = new TRANSPORTS[name](name === 'websocket' ? url.replace(/^http/, 'ws') : url, options, this._transportCallbacks(slot));
    return slot;
  }

  /*
   * What a transport may tell its owner, and the one thing it may ask (since). After close()
   * (or stop()) a transport says nothing more. Each call is bound to the transport's slot, so
   * that a transport that is neither active nor the candidate any more is ignored.
   *   since(channels)            the `since` to ask for the set (positions, else what the app asked)
   *   open()                     the connection is up and proved healthy: messages flow
   *   message(envelope)          a message {channel, id, data}
   *   cursor(cursor, channels)   a cursor the server sent for the set `channels`
   *   position(channel, id)      one channel's start position (WebSocket subscribed)
   *   gap(channel, cursor)       history no longer reaches back for the channel
   *   presence(event)            a presence event {type, channel, ...} (join/leave with id)
   *   wantsPresence(channel)     whether the channel asked for presence (presence=1 / op)
   *   engine(state)              the server's engine notice ('available' | 'unavailable')
   *   error(info)                a request the server refused for good (bad channel, bad cursor)
   *   token()                    the token to send (null: none)
   *   expiring(exp)              the server says the token expires at exp (s): get a new one
   *   denied(info)               WebSocket: one channel's subscribe refused as forbidden or
   *                              unauthorized {channel, code, message, token}
   *   hold(seconds)              long-polling learned a shorter hold (an idle-cutting proxy)
   *   close(info)                the connection ended: {reason, opened, lived, idleMs, drain,
   *                              retryIn, fatal, auth, token}; `auth` {code, message, status?}
   *                              when the server refused `token` (the one it carried)
   */
  _transportCallbacks(slot) {
    return {
      since: (channels) => this._positions.sinceFor(channels),
      open: () => this._tOpen(slot),
      message: (env) => this._tMessage(slot, env),
      cursor: (cursor, channels) => this._tCursor(slot, cursor, channels),
      position: (channel, id) => this._tPosition(slot, channel, id),
      gap: (channel, cursor) => this._tGap(slot, channel, cursor),
      presence: (ev) => this._tPresence(slot, ev),
      wantsPresence: (channel) => {
        const s = this._subs.get(channel);
        return !!(s && s.wantsPresence);
      },
      engine: (state) => this._tEngine(slot, state),
      error: (info) => this._emit('error', info),
      token: () => this._auth.token,
      expiring: () => this._tExpiring(slot),
      denied: (info) => this._tDenied(slot, info),
      hold: (seconds) => {
        this._pollHold = seconds;
      },
      close: (info) => this._tClose(slot, info),
    };
  }

  _live(slot) {
    return slot === this._active || slot === this._candidate;
  }

  _tMessage(slot, env) {
    if (!this._live(slot)) return;
    if (!this._positions.accept(env.channel, env.id)) return;
    const s = this._subs.get(env.channel);
    for (const h of [...s.handlers]) callApp(h.fn, env);
  }

  /*
   * A join or leave is an entry of the channel's history: with its own ID (WebSocket, long-poll)
   * it moves the position like a message and is dropped when already seen; SSE moves it by the
   * event's id line (cursor). A count is live only. Over SSE and long-poll presence=1 covers the
   * whole request, so channels that did not ask are members too: their events are not handed on.
   */
  _tPresence(slot, ev) {
    if (!this._live(slot)) return;
    const s = this._subs.get(ev.channel);
    if (!s) return;
    if (typeof ev.id === 'string' && !this._positions.accept(ev.channel, ev.id)) return;
    if (!s.wantsPresence) return;
    for (const fn of [...s.presence]) callApp(fn, ev);
  }

  _tCursor(slot, cursor, channels) {
    if (!this._live(slot)) return;
    this._positions.advanceCursor(cursor, channels);
  }

  _tPosition(slot, channel, id) {
    // A candidate's start is not a position yet: the active transport may still deliver what
    // came before it. It becomes one if the candidate takes over (_promote).
    if (slot !== this._active) {
      if (slot === this._candidate) slot.starts.set(channel, id);
      return;
    }
    this._positions.advance(channel, id);
  }

  _tGap(slot, channel, cursor) {
    if (!this._live(slot)) return;
    const s = this._subs.get(channel);
    if (!s) return;
    this._positions.gap(channel, cursor);
    for (const fn of [...s.onGap]) callApp(fn, { channel });
    this._emit('gap', { channel });
  }

  _tEngine(slot, state) {
    if (slot !== this._active || state === this._engine) return;
    this._engine = state;
    this._emit('engine', { state });
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
    if (this._shared) {
      this._shared.changed();
      return;
    }
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
    if (this._active) {
      // A transport that cannot change its set in place (SSE) is replaced by a new request
      // from the positions.
      if (!this._active.transport.update(channels)) this._reopen();
    } else if (!this._retryTimer) this._connect();
  }

  _reopen() {
    const old = this._active;
    const next = this._spawn(old.name);
    this._active = next;
    old.transport.stop();
    next.transport.start([...this._subs.keys()]);
  }

  _connect() {
    if (this._closed || this._subs.size === 0) return;
    if (this._tokenNeed) {
      this._fetchToken();
      return;
    }
    const order = this._order();
    if (order.length === 0) throw new Error('PushEdge: no transport available (pass options.WebSocket or options.fetch)');
    const rung = nextRung(this._ladder, order);
    this._ladder = rung.ladder;
    const slot = this._spawn(rung.transport);
    this._active = slot;
    this._setState('connecting', { transport: slot.name });
    slot.transport.start([...this._subs.keys()]);
  }

  _tOpen(slot) {
    if (slot === this._candidate) {
      this._promote(slot);
      return;
    }
    if (slot !== this._active) return;
    this._authRefusals = 0;
    this._ladder = opened(this._ladder, slot.name);
    this._remember(slot.name);
    this._setState('connected', { transport: slot.name });
    if (this._healthyTimer) this._clock.clearTimeout(this._healthyTimer);
    this._healthyTimer = this._clock.setTimeout(() => {
      this._healthyTimer = null;
      this._ladder = healthy(this._ladder);
    }, this._o.healthyAfter);
    this._scheduleReprobe();
  }

  /* A better transport proved itself next to the active one: it takes over (duplicates of the
   * overlap are dropped by ID), the old one is closed. */
  _promote(slot) {
    const old = this._active;
    this._candidate = null;
    this._active = slot;
    this._authRefusals = 0;
    for (const [c, id] of slot.starts) this._tPosition(slot, c, id);
    this._ladder = promoted(this._ladder, slot.name, this._order());
    if (old) old.transport.stop();
    this._remember(slot.name);
    this._emit('transport', { from: old ? old.name : null, to: slot.name, reason: 'probe' });
    this._setState('connected', { transport: slot.name });
    this._scheduleReprobe();
  }

  _scheduleReprobe() {
    if (this._reprobeTimer) this._clock.clearTimeout(this._reprobeTimer);
    this._reprobeTimer = null;
    if (!this._active) return;
    const ms = reprobeDelay(this._ladder, this._o, () => this._clock.random());
    if (ms === null) return;
    this._reprobeTimer = this._clock.setTimeout(() => {
      this._reprobeTimer = null;
      this._reprobe();
    }, ms);
  }

  _reprobe() {
    if (this._closed || !this._active || this._candidate || this._state !== 'connected') return;
    const pick = reprobeTarget(this._ladder, this._order(), this._active.name);
    if (!pick) return;
    this._ladder = pick.ladder;
    const slot = this._spawn(pick.transport);
    this._candidate = slot;
    slot.transport.start([...this._subs.keys()]);
  }

  _tClose(slot, info) {
    if (slot === this._candidate) {
      // The better transport still does not work here: try again later.
      this._candidate = null;
      this._scheduleReprobe();
      return;
    }
    if (slot !== this._active) return;
    this._active = null;
    if (this._reprobeTimer) this._clock.clearTimeout(this._reprobeTimer);
    this._reprobeTimer = null;
    if (this._healthyTimer) this._clock.clearTimeout(this._healthyTimer);
    this._healthyTimer = null;
    if (info.auth) {
      this._authRefused(slot, info);
      return;
    }
    if (this._candidate) {
      // The probe was about to take over anyway: let it (it reports open or close soon).
      this._active = this._candidate;
      this._candidate = null;
      for (const [c, id] of this._active.starts) this._tPosition(this._active, c, id);
      this._ladder = adopted(this._ladder, this._active.name, this._order());
      this._setState('connecting', { transport: this._active.name });
      return;
    }
    const d = closed(this._ladder, { transport: slot.name, ...info }, this._order(), this._o, () => this._clock.random());
    this._ladder = d.ladder;
    if (d.delay === null) {
      this._setState('disconnected', { transport: slot.name, reason: info.reason, retryIn: null });
      return;
    }
    if (d.fallback) this._emit('transport', d.fallback);
    this._setState('disconnected', { transport: slot.name, reason: info.reason, retryIn: Math.round(d.delay) });
    this._retryTimer = this._clock.setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, d.delay);
  }

  /* ---- internals: the shared connection (shared.js) ---- */

  /** This tab's set for the leader: Map channel -> the start it needs (its position, else since). */
  _sharedSet() {
    const set = new Map();
    for (const [c, p] of this._positions.byChannel) set.set(c, tabStart(p));
    return set;
  }

  /* The leader's hub delivered a message: this tab's own positions say whether it is new here. */
  _sharedMessage(env) {
    if (this._closed || !env || !this._positions.accept(env.channel, env.id)) return;
    const s = this._subs.get(env.channel);
    for (const h of [...s.handlers]) callApp(h.fn, env);
  }

  /* The hub's history no longer reaches back for the channel. This tab's position stays: the hub
   * resumed from the earliest tab's, which may be older than this one's. */
  _sharedGap(channel) {
    const s = this._subs.get(channel);
    if (this._closed || !s) return;
    for (const fn of [...s.onGap]) callApp(fn, { channel });
    this._emit('gap', { channel });
  }

  _sharedStatus(state, info) {
    if (this._closed) return;
    // A repeat (the leader tells a tab that came later the state it is in): nothing new here.
    const key = `${state}:${info.transport ?? ''}`;
    if (state !== 'disconnected' && state === this._state && key === this._sharedLast) return;
    this._sharedLast = key;
    this._sharedVia = state === 'connected' ? info.transport : null;
    this._setState(state, info);
  }

  _sharedEvent(name, info) {
    if (!this._closed) this._emit(name, info);
  }

  /* The hub's positions: a channel this tab wants from "new messages only" and has no position
   * for yet takes the hub's, so that a later leader resumes it from there, not from "now". */
  _sharedPositions(positions) {
    for (const [c, p] of this._positions.byChannel)
      if (!p.pos && !p.since && typeof positions[c] === 'string') p.pos = positions[c];
  }

  /* The hub (a leader's) had positions moved back (Positions.rewind): the running transport is
   * replaced by one that asks from them. */
  _rewound() {
    if (this._candidate) {
      this._drop('_candidate');
      if (this._active) this._scheduleReprobe();
    }
    if (this._active) this._reopen();
  }

  /* ---- internals: the token (docs/client.md "Authentication") ---- */

  /*
   * Gets the token the next connect needs (this._tokenNeed), then connects. At start no token
   * (null) means connecting without one; after a refusal it means the refusal is final, as does
   * the very token that was refused. A getToken() that fails is tried again after a backoff.
   */
  _fetchToken() {
    if (this._tokenWait) return;
    this._tokenWait = true;
    const need = this._tokenNeed;
    this._auth.renew().then((r) => {
      this._tokenWait = false;
      if (this._closed || this._tokenNeed !== need) return;
      if (r.kind === 'failed') {
        this._tokenRetry(need);
        return;
      }
      this._tokenFailures = 0;
      this._tokenNeed = null;
      // r.token null with 'ok': the app renewed the cookie (getToken() resolved to true).
      if (need.why === 'refused' && !(r.kind === 'ok' && (r.token === null || r.token !== need.token))) {
        this._authFinal(need.transport, need.refused);
        return;
      }
      if (!this._active && !this._retryTimer) this._connect();
    });
  }

  _tokenRetry(need) {
    const n = Math.min(this._tokenFailures++, 30);
    const delay = this._clock.random() * Math.min(this._o.backoffCap, this._o.backoffBase * 2 ** n);
    this._setState('disconnected', { transport: need.transport || null, reason: 'token_failed', retryIn: Math.round(delay) });
    this._retryTimer = this._clock.setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, delay);
  }

  /*
   * The server refused the token the active transport carried (info.token). Revoked: final. A
   * second refusal before any transport opened again: final. Otherwise once more at once, with
   * a newer token already in hand, else with a new one from getToken(); from the top of the
   * ladder's last descent (a refusal of the token is no failure of the path).
   */
  _authRefused(slot, info) {
    const refused = { ...info.auth };
    this._drop('_candidate');
    const newer = !!this._auth.token && this._auth.token !== info.token;
    if (refused.code === 'revoked' || this._authRefusals > 0 || (!newer && !this._auth.canRenew())) {
      this._authFinal(slot.name, refused);
      return;
    }
    this._authRefusals++;
    this._ladder = authRefused(this._ladder, this._order());
    if (!newer) this._tokenNeed = { why: 'refused', refused, token: info.token ?? null, transport: slot.name };
    this._setState('disconnected', { transport: slot.name, reason: refused.code, retryIn: 0 });
    this._retryTimer = this._clock.setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, 0);
  }

  /* Refused for good: `error` (as every fatal refusal), `auth`, then no retry. */
  _authFinal(transport, refused) {
    this._auth.stop();
    this._tokenNeed = null;
    const info = this._refusalInfo(refused);
    this._emit('error', info);
    this._emit('auth', { ...info, transport });
    this._setState('disconnected', { transport, reason: refused.code, retryIn: null });
  }

  _refusalInfo(r) {
    const info = { code: r.code, message: r.message || '' };
    if (r.status !== undefined) info.status = r.status;
    if (r.channel !== undefined) info.channel = r.channel;
    return info;
  }

  /*
   * One channel refused or taken away while the others go on: on WebSocket a subscribe refused
   * (forbidden, or unauthorized on an anonymous socket) or a channel the server removed (revoked,
   * or not allowed by a refreshed token); on SSE a channel revoked. Once per channel, a new
   * token (one in hand, else from getToken()) is tried on a new connection; the same token
   * again, a second refusal, or a revocation is final for the channel: `error` and `auth` with
   * it. A revoked channel also leaves the set (asking for it again on the next reconnect would
   * undo the revocation); a refused one stays, unserved, as it always has.
   */
  _tDenied(slot, info) {
    if (slot === this._candidate) {
      // The active transport serves the set meanwhile; probe again later.
      this._drop('_candidate');
      this._scheduleReprobe();
      return;
    }
    if (slot !== this._active) return;
    const final = () => {
      const out = this._refusalInfo(info);
      if (info.code === 'revoked') this._dropChannel(info.channel);
      this._emit('error', out);
      this._emit('auth', { ...out, transport: slot.name });
    };
    const newer = !!this._auth.token && this._auth.token !== info.token;
    if (info.code === 'revoked' || this._denied.has(info.channel) || (!newer && !this._auth.canRenew())) {
      final();
      return;
    }
    this._denied.add(info.channel);
    if (newer) {
      this._reopen();
      return;
    }
    this._auth.renew().then((r) => {
      if (this._closed || slot !== this._active) return;
      if (r.kind === 'ok' && (r.token === null || r.token !== info.token)) this._reopen();
      else final();
    });
  }

  /* The server no longer serves `channel` to this client: it leaves the set as if unsubscribed. */
  _dropChannel(channel) {
    if (!this._subs.has(channel)) return;
    this._subs.delete(channel);
    this._positions.delete(channel);
    this._denied.delete(channel);
    this._setChanged();
  }

  _tExpiring(slot) {
    if (this._live(slot)) this._renewToken();
  }

  /* Ahead of exp (the server's notice, or the timer on the token's own exp): a new token, handed
   * to the running transports. Nothing while none runs: the next connect is refused at worst,
   * and that path gets a token. */
  _renewToken() {
    if (this._closed || !this._auth.canRenew() || (!this._active && !this._candidate)) return;
    this._auth.renew().then((r) => {
      if (!this._closed && r.kind === 'ok') this._tokenChanged(r.token);
    });
  }

  /* Each running transport takes the new token in place or is replaced by one that carries it
   * (from the positions: nothing lost, duplicates dropped by ID). `token` null: a renewed cookie. */
  _tokenChanged(token) {
    for (const which of ['_active', '_candidate']) {
      const slot = this[which];
      if (!slot || (token !== null && slot.transport.token === token)) continue;
      if (slot.transport.tokenChanged()) continue;
      if (which === '_active') this._reopen();
      else {
        this._drop('_candidate');
        this._scheduleReprobe();
      }
    }
  }
}

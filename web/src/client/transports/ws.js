/*
 * transports/ws.js: the WebSocket transport: one socket carries every channel, each subscribed
 * with its own start; healthy once the first ping is answered, then watched by idle pings
 * (docs/protocol.md "WebSocket", docs/client.md "Transport choice and fallback").
 *
 * The token (docs/client.md "Authentication"): a browser cannot set a header on a WebSocket
 * handshake, so by default it goes in-band, as the `auth` op before anything else (or in the
 * URL, or not at all: the cookie). A new token replaces it in place (`refresh` op, no reconnect).
 * Refusals of the token end the socket for the client to decide (close 4001 expired, 4003
 * revoked, an `error` to `auth` or `refresh`); a subscribe refused as `forbidden` or
 * `unauthorized` is one channel's matter (denied()).
 *
 * Built from (url, options, callbacks); knows nothing of the client. The callbacks are listed
 * in client.js (transportCallbacks).
 */

import { deadline } from '../timing.js';
import { presenceEvent } from '../http.js';
import { Transport } from './base.js';

/*
 * The reconnect hint of a draining pushedge: the close reason is `{"reconnect_ms":N}`
 * (docs/protocol.md "Close codes"). Anything else (another server's text) has none: undefined.
 */
function reconnectHint(reason) {
  if (typeof reason !== 'string' || reason[0] !== '{') return undefined;
  try {
    const v = JSON.parse(reason).reconnect_ms;
    return Number.isInteger(v) && v >= 0 && v <= 600000 ? v : undefined;
  } catch (e) {
    return undefined;
  }
}

/* Codes of an error op naming a channel the server took away (docs/protocol.md "WebSocket"). */
const CHANNEL_REFUSALS = ['forbidden', 'unauthorized', 'revoked'];

export class WsTransport extends Transport {
  /**
   * url: the ws:// or wss:// endpoint. options: WebSocket (constructor), clock, connectTimeout,
   * probeTimeout, pongTimeout, pingInterval.
   */
  constructor(url, options, callbacks) {
    super(url, options, callbacks);
    this.channels = new Set();
    // this.opened (base.js) turns true when: proved healthy
    this.pending = new Map(); // ref -> channel, subscribes not confirmed yet
    this.ref = 0;
    this.ws = null;
    this.pongSeen = false; // the first pong came back: healthy
    this.lastInbound = 0;
    this.cancelTimer = null;
    this.pingInterval = options.pingInterval;
    this.lateRetries = 0;
    this.token = null; // the token the server holds for this socket (null: none, or the cookie)
    this.authRef = null; // ref of the auth op, until answered
    this.refreshRef = null; // ref of the latest refresh op, until answered
    this.refreshing = null; // ... and the token it carries
  }

  start(channels) {
    this.channels = new Set(channels);
    const Ctor = this.o.WebSocket || globalThis.WebSocket;
    this.token = this.cb.token();
    let url = this.url;
    if (this.token && this.o.tokenVia === 'query') url += `${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(this.token)}`;
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

  /** The set changed: subscribe and unsubscribe on the open socket. Always done in place. */
  update(channels) {
    const next = new Set(channels);
    if (!this.ws || this.ws.readyState !== 1) {
      this.channels = next; // subscribed when it opens
      return true;
    }
    for (const c of this.channels) if (!next.has(c)) this._send({ op: 'unsubscribe', channel: c });
    for (const c of next) if (!this.channels.has(c)) this._subscribe(c);
    this.channels = next;
    return true;
  }

  /**
   * The client holds a new token. True when this socket takes it in place: not open yet with
   * the token in-band (the auth op will carry it), or open with a token the server can replace
   * (the `refresh` op). False when only a new socket can carry it (in the URL, a cookie renewed
   * by the app, or a socket that started without a token).
   */
  tokenChanged() {
    const token = this.cb.token();
    if (!this.ws || this.ws.readyState !== 1) return this.o.tokenVia === 'header' && !this.authRef;
    if (!token || (!this.token && this.o.tokenVia !== 'cookie')) return false;
    if (token === this.token || token === this.refreshing) return true;
    const ref = ++this.ref;
    this.refreshRef = ref;
    this.refreshing = token;
    this._send({ op: 'refresh', token, ref });
    return true;
  }

  _send(op) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(op));
  }

  _subscribe(channel) {
    const ref = ++this.ref;
    this.pending.set(ref, channel);
    const since = this.cb.since([channel]);
    const op = since ? { op: 'subscribe', channel, since, ref } : { op: 'subscribe', channel, ref };
    if (this.cb.wantsPresence(channel)) op.presence = true;
    this._send(op);
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
    // The auth op must be the connection's first message (docs/auth.md); the server handles
    // ops in order, so the subscribes behind it are checked against its token.
    const token = this.cb.token();
    if (token && this.o.tokenVia === 'header') {
      this.token = token;
      this.authRef = ++this.ref;
      this._send({ op: 'auth', token, ref: this.authRef });
    }
    // A proxy may accept the upgrade and then forward nothing: only a pong proves the path.
    this._ping();
    for (const c of this.channels) this._subscribe(c);
    this._arm(this.o.probeTimeout, 'ws_silent');
  }

  /* Healthy once the pong came back and the auth op and every subscribe sent so far are
   * answered: the pong overtakes the subscribed replies (the server answers a ping at once, a
   * subscribe once its start is fixed), and 'connected' promises that anything published from
   * then on arrives. */
  _maybeOpened() {
    if (this.opened || !this.pongSeen || this.pending.size > 0 || this.authRef !== null) return;
    this.opened = true;
    this.openedAt = this.clock.now();
    this._idleWatch();
    this.cb.open();
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
      this.cb.message({ channel: op.channel, id: op.id, data: op.data });
      break;
    case 'join':
    case 'leave':
    case 'count': {
      const p = presenceEvent(op.op, op);
      if (p) this.cb.presence(p);
      break;
    }
    case 'pong':
      this.pongSeen = true;
      pong = true;
      break;
    case 'subscribed':
      if (this.pending.has(op.ref)) {
        this.pending.delete(op.ref);
        if (op.cursor) this.cb.position(op.channel, op.cursor);
      }
      break;
    case 'gap':
      this.cb.gap(op.channel, op.cursor ?? null);
      break;
    case 'engine':
      this.cb.engine(op.state);
      break;
    case 'authenticated':
      if (op.ref === this.authRef || op.ref === undefined) this.authRef = null;
      break;
    case 'expiring':
      this.cb.expiring(typeof op.exp === 'number' ? op.exp : null);
      break;
    case 'refreshed':
      if (op.ref === this.refreshRef || op.ref === undefined) {
        this.token = this.refreshing;
        this.refreshRef = null;
      }
      break;
    case 'error':
      if (this.authRef !== null && op.ref === this.authRef) {
        this._failAuth({ code: op.code, message: op.message }, this.token);
        return;
      }
      if (this.refreshRef !== null && op.ref === this.refreshRef) {
        this.refreshRef = null;
        if (op.code === 'unauthorized' || op.code === 'token_expired' || op.code === 'forbidden') {
          this._failAuth({ code: op.code, message: op.message }, this.refreshing);
        } else {
          // This server cannot replace a token in place: a new socket carries the new one,
          // from the positions, at once.
          this._fail('token_refresh', { drain: true, retryIn: 0 });
        }
        return;
      }
      if (this.pending.has(op.ref)) {
        const channel = this.pending.get(op.ref);
        this.pending.delete(op.ref);
        if (op.code === 'token_expired') {
          this._failAuth({ channel, code: op.code, message: op.message }, this.token);
          return;
        }
        if (op.code === 'forbidden' || op.code === 'unauthorized') this.cb.denied({ channel, code: op.code, message: op.message, token: this.token });
        else if (op.code !== 'already_subscribed') this.cb.error({ channel, code: op.code, message: op.message });
      } else if (typeof op.channel === 'string' && CHANNEL_REFUSALS.includes(op.code)) {
        // The server removed a channel from this socket: revoked (POST /api/disconnect with a
        // channel pattern), or not allowed by the token a refresh brought. A subscribe of it
        // still unanswered is never answered now.
        for (const [ref, ch] of this.pending) if (ch === op.channel) this.pending.delete(ref);
        const token = this.refreshRef !== null ? this.refreshing : this.token;
        this.cb.denied({ channel: op.channel, code: op.code, message: op.message, token });
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
    // 4001: the token expired without a refresh; 4003: revoked (docs/auth.md).
    if (code === 4001 || code === 4003) {
      this._end({
        reason: code === 4001 ? 'token_expired' : 'revoked',
        auth: { code: code === 4001 ? 'token_expired' : 'revoked', message: (ev && ev.reason) || '' },
        token: this.token,
        code,
        idleMs: this.clock.now() - this.lastInbound,
      });
      return;
    }
    const drain = code === 1001 || code === 1012;
    this._end({
      reason: drain ? 'drain' : this.opened ? 'ws_closed' : 'ws_refused',
      code,
      drain,
      retryIn: drain ? reconnectHint(ev && ev.reason) : undefined,
      idleMs: this.clock.now() - this.lastInbound,
    });
  }

  _fail(reason, extra = {}, code = 4000) {
    if (this.done) return;
    if (this.ws) {
      this.ws.onclose = null;
      try {
        this.ws.close(code);
      } catch (e) {
        /* closing anyway */
      }
    }
    this._end({ reason, idleMs: this.clock.now() - this.lastInbound, ...extra });
  }

  /* The server refused the socket's token (`token`: the one it refused): the client decides. */
  _failAuth(info, token) {
    this._fail(info.code, { auth: info, token }, 1000);
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    this._disarm();
    this.cb.close({ opened: this.opened, lived: this.opened ? this.clock.now() - this.openedAt : 0, ...info });
  }
}

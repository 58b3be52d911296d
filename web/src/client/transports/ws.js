/*
 * transports/ws.js: the WebSocket transport: one socket carries every channel, each subscribed
 * with its own start; healthy once the first ping is answered, then watched by idle pings
 * (docs/protocol.md "WebSocket", docs/client.md "Transport choice and fallback").
 *
 * Built from (url, options, callbacks); knows nothing of the client. The callbacks are listed
 * in client.js (transportCallbacks).
 */

import { deadline } from '../timing.js';
import { Transport } from './base.js';

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
  }

  start(channels) {
    this.channels = new Set(channels);
    const Ctor = this.o.WebSocket || globalThis.WebSocket;
    try {
      this.ws = new Ctor(this.url, ['pushedge.v1']);
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

  _send(op) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(op));
  }

  _subscribe(channel) {
    const ref = ++this.ref;
    this.pending.set(ref, channel);
    const since = this.cb.since([channel]);
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
    case 'error':
      if (this.pending.has(op.ref)) {
        const channel = this.pending.get(op.ref);
        this.pending.delete(op.ref);
        if (op.code !== 'already_subscribed') this.cb.error({ channel, code: op.code, message: op.message });
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
    this.cb.close({ opened: this.opened, lived: this.opened ? this.clock.now() - this.openedAt : 0, ...info });
  }
}

/*
 * pushedge.js: the browser client, as an ES module.
 *
 * This first version speaks Server-Sent Events only: one EventSource carries every channel of
 * the client, the cursor it last received is kept across reconnects and changes of the channel
 * set, and messages are deduplicated by ID per channel. The WebSocket -> SSE -> long-poll
 * ladder comes with those transports (docs/client.md will describe it).
 *
 *   import { PushEdge } from '/pushedge.js';
 *   const client = new PushEdge('http://127.0.0.1:8080');
 *   const off = client.subscribe('news', (m) => console.log(m.data), { since: '0' });
 *   client.transport;   // 'sse' while connected, else null
 *   off(); client.close();
 */

const ID_RE = /^(\d+)-(\d+)$/;

function idAfter(a, b) {
  const ma = ID_RE.exec(a), mb = ID_RE.exec(b);
  if (!ma || !mb) return true;
  const msA = BigInt(ma[1]), msB = BigInt(mb[1]);
  if (msA !== msB) return msA > msB;
  return BigInt(ma[2]) > BigInt(mb[2]);
}

export class PushEdge {
  /**
   * @param {string} baseUrl  the server, e.g. 'https://push.example.com'
   * @param {object} [options]
   * @param {Function} [options.EventSource]  an EventSource constructor (for Node or tests)
   * @param {(state: string, info?: object) => void} [options.onState]  'connecting', 'connected', 'disconnected', 'gap'
   */
  constructor(baseUrl, options = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.options = options;
    this._EventSource = options.EventSource || globalThis.EventSource;
    this._subs = new Map(); // channel -> { handlers: Set, since, lastId }
    this._source = null;
    this._cursor = null;
    this._transport = null;
    this._closed = false;
    this._reopenTimer = null;
  }

  /** 'sse' while connected, else null. */
  get transport() {
    return this._transport;
  }

  /** The cursor of the current subscription set (hand it back to resume elsewhere). */
  get cursor() {
    return this._cursor;
  }

  /**
   * Subscribes to a channel. `onMessage` receives envelopes {channel, id, data}.
   * `since`: a message ID or cursor to resume after, '0' for all retained, absent for new only.
   * Returns a function that unsubscribes this handler.
   */
  subscribe(channel, onMessage, { since } = {}) {
    if (this._closed) throw new Error('PushEdge: client is closed');
    let sub = this._subs.get(channel);
    if (!sub) {
      sub = { handlers: new Set(), since: since ?? null, lastId: null };
      this._subs.set(channel, sub);
      this._scheduleReopen();
    }
    sub.handlers.add(onMessage);
    return () => {
      const s = this._subs.get(channel);
      if (!s) return;
      s.handlers.delete(onMessage);
      if (s.handlers.size === 0) {
        this._subs.delete(channel);
        this._scheduleReopen();
      }
    };
  }

  close() {
    this._closed = true;
    clearTimeout(this._reopenTimer);
    this._teardown();
    this._subs.clear();
  }

  _state(state, info) {
    if (this.options.onState) this.options.onState(state, info);
  }

  _teardown() {
    if (this._source) {
      this._source.close();
      this._source = null;
    }
    if (this._transport) this._state('disconnected');
    this._transport = null;
  }

  /* Several subscribe() calls in one tick open one stream. */
  _scheduleReopen() {
    clearTimeout(this._reopenTimer);
    this._reopenTimer = setTimeout(() => this._open(), 0);
  }

  _open() {
    this._teardown();
    if (this._closed || this._subs.size === 0) return;
    if (!this._EventSource) throw new Error('PushEdge: no EventSource available (pass options.EventSource)');
    const qs = new URLSearchParams();
    const channels = [...this._subs.keys()];
    for (const c of channels) qs.append('channel', c);
    const since = this._sinceFor(channels);
    if (since) qs.set('since', since);
    this._state('connecting', { transport: 'sse' });
    const source = new this._EventSource(`${this.baseUrl}/sse?${qs}`);
    this._source = source;
    source.onopen = () => {
      this._transport = 'sse';
      this._state('connected', { transport: 'sse' });
    };
    source.onerror = () => {
      if (this._transport) this._state('disconnected');
      this._transport = null;
    };
    source.onmessage = (ev) => this._onEvent(ev);
    source.addEventListener('gap', (ev) => {
      if (ev.lastEventId) this._cursor = ev.lastEventId;
      let channel = null;
      try {
        channel = JSON.parse(ev.data).channel;
      } catch (e) {
        /* a malformed gap still means "refetch" */
      }
      this._state('gap', { channel });
    });
  }

  /*
   * The position to reopen from: the stream's own cursor when the set did not change; else a
   * single channel's own last ID or `since`; else '0'-less "new only" for brand new channels.
   */
  _sinceFor(channels) {
    if (channels.length === 1) {
      const s = this._subs.get(channels[0]);
      return s.lastId || s.since || null;
    }
    if (this._cursor && channels.every((c) => this._subs.get(c).lastId)) return this._cursor;
    const explicit = channels.map((c) => this._subs.get(c).since).find((s) => s);
    return explicit || this._cursor || null;
  }

  _onEvent(ev) {
    let env;
    try {
      env = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (ev.lastEventId) this._cursor = ev.lastEventId;
    const sub = this._subs.get(env.channel);
    if (!sub) return;
    if (sub.lastId && !idAfter(env.id, sub.lastId)) return; // a duplicate after a reconnect
    sub.lastId = env.id;
    for (const h of [...sub.handlers]) h(env);
  }
}

export default PushEdge;

/*
 * transports/sse.js: the Server-Sent Events transport: one request carries the whole channel
 * set from its multi-channel cursor; healthy at the first event; watched by the server's
 * heartbeats (docs/protocol.md "Server-Sent Events").
 *
 * SSE over fetch() with our own parser, not EventSource: EventSource hides comment lines (the
 * heartbeats we need to see to tell a buffering proxy from a quiet channel), the bare `id:` line
 * that marks a stream live, and the `retry:` hint of a draining node; and it reconnects by
 * itself, where we want the cursor, the backoff and the fallback in our hands.
 *
 * The token goes with the request (docs/client.md "Authentication"); a stream cannot change it,
 * so a new token means a new request from the positions (tokenChanged() answers false), and the
 * server's `expiring` notice is passed on for the client to get one. `expired` and `revoked`
 * end the stream as refusals of the token.
 *
 * Built from (url, options, callbacks); knows nothing of the client. The callbacks are listed
 * in client.js (transportCallbacks).
 */

import { deadline } from '../timing.js';
import { channelQuery, presenceEvent, readRefusal, withToken } from '../http.js';
import { Transport } from './base.js';

/* The text of an `expired` / `revoked` event's data: its "reason" or "message" member, or the
 * data itself when it is not a JSON object. */
function reasonText(data) {
  try {
    const v = JSON.parse(data);
    if (v && typeof v === 'object') return v.reason ?? v.message ?? '';
    return typeof v === 'string' ? v : '';
  } catch (e) {
    return data;
  }
}

export class SseTransport extends Transport {
  /**
   * url: the /sse endpoint. options: fetch, clock, connectTimeout, probeTimeout,
   * heartbeatTimeout.
   */
  constructor(url, options, callbacks) {
    super(url, options, callbacks);
    this.channels = [];
    // this.opened (base.js) turns true when: the first event arrived
    this.gotByte = false;
    this.drainRetry = null; // a `retry:` after the stream's first one: the node drains
    this.abort = null;
    this.cancelTimer = null;
    this.lastByte = 0;
    this.token = null; // the token this request carries
    this.authEnd = null; // the server ended the stream for its token: {code, message}
  }

  start(channels) {
    this.channels = [...channels];
    const fetchFn = this.o.fetch || globalThis.fetch;
    const qs = channelQuery(this.channels, this.cb.since(this.channels), this.channels.some((c) => this.cb.wantsPresence(c)));
    this.token = this.cb.token();
    const req = withToken(`${this.url}?${qs}`, { Accept: 'text/event-stream' }, this.token, this.o.tokenVia);
    this.abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    this._arm(this.o.connectTimeout, 'sse_connect_timeout');
    let res;
    Promise.resolve()
      .then(() => fetchFn(req.url, {
        headers: req.headers,
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
      .catch(() => {
        // After `expired` / `revoked` the end is the server's, however the socket closed.
        if (this.authEnd) this._end({ reason: this.authEnd.code, auth: this.authEnd, token: this.token });
        else this._end({ reason: this.gotByte ? 'sse_cut' : 'sse_error' });
      });
  }

  stop() {
    this.done = true;
    this._disarm();
    if (this.abort) this.abort.abort();
  }

  /** One request carries the set: it cannot change in place (false); the owner opens a new one. */
  update(channels) {
    return false;
  }

  /** Nor can it change its token (false): the owner opens a new request with the new one. */
  tokenChanged() {
    return false;
  }

  async _refused(res) {
    const r = await readRefusal(res, this.clock);
    if (this.done) return;
    if (r.kind === 'later') {
      this._end({ reason: r.code || 'unavailable', drain: true, retryIn: r.retryIn ?? undefined });
    } else if (r.kind === 'auth') {
      this._end({ reason: r.info.code, auth: r.info, token: this.token });
    } else if (r.kind === 'fatal') {
      this.cb.error(r.info);
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
    // The server ended the stream: for its token after `expired` or `revoked`; a draining node
    // after a fresh `retry:`. Without either it is a cut like any other (a proxy ending idle
    // responses cleanly).
    if (this.authEnd) this._end({ reason: this.authEnd.code, auth: this.authEnd, token: this.token });
    else if (this.drainRetry !== null) this._end({ reason: 'drain', drain: true, retryIn: this.drainRetry });
    else this._end({ reason: 'sse_ended' });
  }

  _dispatch(ev) {
    if (!this.opened) {
      this.opened = true;
      this.cb.open();
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
        if (env && typeof env.channel === 'string') this.cb.message(env);
      }
    } else if (ev.type === 'gap') {
      let channel = null;
      try {
        channel = JSON.parse(data).channel;
      } catch (e) {
        /* malformed */
      }
      if (channel) this.cb.gap(channel, null);
    } else if (ev.type === 'join' || ev.type === 'leave' || ev.type === 'count') {
      // Presence (docs/protocol.md): a join or leave moves the cursor like a message (its id
      // line, below); a count has none.
      let p = null;
      try {
        p = presenceEvent(ev.type, JSON.parse(data));
      } catch (e) {
        /* malformed */
      }
      if (p) this.cb.presence(p);
    } else if (ev.type === 'engine') {
      try {
        this.cb.engine(JSON.parse(data).state);
      } catch (e) {
        /* malformed */
      }
    } else if (ev.type === 'expiring') {
      let exp = null;
      try {
        exp = JSON.parse(data).exp;
      } catch (e) {
        /* malformed: a notice all the same */
      }
      this.cb.expiring(typeof exp === 'number' ? exp : null);
    } else if (ev.type === 'expired' || ev.type === 'revoked') {
      let channel = null;
      try {
        channel = JSON.parse(data).channel ?? null;
      } catch (e) {
        /* not JSON: the whole stream */
      }
      if (ev.type === 'revoked' && typeof channel === 'string') {
        // One channel taken out of the stream; the others go on.
        this.cb.denied({ channel, code: 'revoked', message: reasonText(data), token: this.token });
      } else {
        // The stream ends next; the reason is read when it does (a revocation's text is for the app).
        this.authEnd = { code: ev.type === 'expired' ? 'token_expired' : 'revoked', message: reasonText(data) };
      }
    }
    if (ev.id !== null && ev.id !== '') this.cb.cursor(ev.id, this.channels);
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    this._disarm();
    const opened = this.opened;
    this.cb.close({
      opened,
      lived: opened ? this.clock.now() - this.openedAt : 0,
      idleMs: this.clock.now() - (this.lastByte || this.clock.now()),
      ...info,
    });
  }
}

/*
 * transports/poll.js: long-polling: one request at a time, each from the cursor of the previous
 * answer; learns how long a proxy lets a request be held (docs/protocol.md "Long-polling").
 * Each request carries the token the client holds at the time; an answer's `expiring` is passed
 * on for the client to get a new one, and a new token cuts the held request short so that the
 * next one carries it (docs/client.md "Authentication").
 *
 * Built from (url, options, callbacks); knows nothing of the client. The callbacks are listed
 * in client.js (transportCallbacks).
 */

import { deadline } from '../timing.js';
import { channelQuery, presenceEvent, readRefusal, withToken } from '../http.js';
import { compareIds } from '../cursor.js';
import { hintDelay } from '../policy.js';
import { Transport } from './base.js';

export class PollTransport extends Transport {
  /**
   * url: the /poll endpoint. options: fetch, clock, connectTimeout, backoffBase, pollTimeout
   * (the hold in seconds to ask for; the client passes the one learned by earlier polls).
   */
  constructor(url, options, callbacks) {
    super(url, options, callbacks);
    this.channels = [];
    // this.opened (base.js) turns true when: the first answer came
    this.abort = null;
    this.timer = null;
    this.hold = options.pollTimeout;
    this.failures = 0;
    this.token = null; // the token of the request in flight
  }

  start(channels) {
    this.channels = [...channels];
    this._poll();
  }

  stop() {
    this.done = true;
    if (this.abort) this.abort.abort();
    if (this.timer) this.clock.clearTimeout(this.timer);
  }

  /** The set changed: done in place (true). */
  update(channels) {
    this.channels = [...channels];
    // Abort the held request; the next one carries the new set from the current positions.
    if (this.abort) this.abort.abort();
    return true;
  }

  /** The token changed: done in place (true); the held request is replaced by one with it. */
  tokenChanged() {
    if (this.abort) this.abort.abort();
    return true;
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
    const qs = `${channelQuery(channels, this.cb.since(channels), channels.some((c) => this.cb.wantsPresence(c)))}&timeout=${hold}`;
    const token = this.cb.token();
    this.token = token;
    const req = withToken(`${this.url}?${qs}`, {}, token, this.o.tokenVia);
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
      const init = { cache: 'no-store', signal: abort ? abort.signal : undefined };
      if (req.headers.Authorization) init.headers = req.headers;
      res = await fetchFn(req.url, init);
      body = res.status === 200 ? await res.json() : null;
    } catch (e) {
      cancel();
      if (this.done) return;
      if (abort && abort.signal.aborted && !expired) {
        this._poll(); // the set or the token changed
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
      } else if (r.kind === 'auth') {
        this.done = true;
        this.cb.close({ reason: r.info.code, auth: r.info, token, opened: this.opened });
      } else if (r.kind === 'fatal') {
        this.cb.error(r.info);
        this.done = true;
        this.cb.close({ reason: r.info.code, fatal: true, opened: this.opened });
      } else {
        this._failed(this.clock.now() - t0);
      }
      return;
    }
    this.failures = 0;
    if (!this.opened) {
      this.opened = true;
      this.cb.open();
      if (this.done) return;
    }
    if (channels === this.channels) {
      for (const g of body.gaps || []) this.cb.gap(g, null);
      if (Array.isArray(body.presence) && body.presence.length) {
        // Messages and join/leave events in the channels' order (by ID: the answer keeps them in
        // two lists), then the counts (live, no ID).
        const all = [...(body.messages || []).map((m) => ({ m })), ...body.presence.filter((p) => p && p.id).map((p) => ({ p }))];
        all.sort((x, y) => compareIds((x.m || x.p).id, (y.m || y.p).id));
        for (const x of all) {
          if (x.m) this.cb.message(x.m);
          else {
            const p = presenceEvent(x.p.op, x.p);
            if (p) this.cb.presence(p);
          }
        }
        for (const c of body.presence) {
          if (c && c.op === 'count' && !c.id) {
            const p = presenceEvent('count', c);
            if (p) this.cb.presence(p);
          }
        }
      } else {
        for (const m of body.messages || []) this.cb.message(m);
      }
      if (body.cursor) this.cb.cursor(body.cursor, channels);
    }
    // A notice about the token this request carried; once the client has a new one it is news
    // to nobody (getToken() is called once however many notices come meanwhile).
    if (body.expiring !== undefined && body.expiring !== null && token === this.cb.token() && !this.done) this.cb.expiring(body.expiring);
    if (this.done) return;
    // A draining node's answer says when to come back (to another node): wait that long,
    // jittered, from the cursor just taken (docs/protocol.md "Long-polling").
    const hint = body.reconnect_ms;
    if (Number.isInteger(hint) && hint > 0 && hint <= 600000) this._later(Math.round(hintDelay(hint, this.o, () => this.clock.random())));
    else this._poll();
  }

  /*
   * A failed request. One cut after a few seconds of holding is the signature of a proxy that
   * kills idle requests: hold for less than that from now on, and tell the owner (hold()) so
   * that the next poll transport starts with it.
   */
  _failed(heldMs) {
    this.failures++;
    const heldS = Math.floor(heldMs / 1000);
    if (heldS >= 1 && heldS < this.lastHold) {
      this.hold = Math.max(1, Math.floor(heldS / 2));
      this.cb.hold(this.hold);
    }
    if (this.failures >= 2 || !this.opened) {
      this.done = true;
      this.cb.close({ reason: 'poll_error', opened: this.opened });
      return;
    }
    this._later(Math.round(this.o.backoffBase * this.clock.random()));
  }
}

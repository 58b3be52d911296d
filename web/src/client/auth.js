/*
 * auth.js: the client's token (docs/client.md "Authentication"): what the app gave (`token`)
 * or what `getToken()` returns, one call at a time however many notices ask for one, and the
 * timer that renews it a margin before its own `exp` in case the server's notice is missed.
 * Owned by the client; transports read the token only through the client's token() callback.
 */

/* A token this close to its `exp` (ms) is not renewed ahead any more: the server's notice or
 * refusal comes first, and renewing an almost-dead token again and again helps nobody. */
const MIN_AHEAD = 2000;

/** Where a token travels: 'header' (Authorization, in-band on WebSocket), 'query', 'cookie'. */
export const TOKEN_VIA = ['header', 'query', 'cookie'];

/*
 * The `exp` claim (seconds since the epoch) of a compact JWS, read without verifying anything
 * (the server verifies; the client only wants to know when to renew), or null.
 */
export function tokenExpiry(token) {
  if (typeof token !== 'string') return null;
  const part = token.split('.')[1];
  if (!part || !/^[A-Za-z0-9_-]+$/.test(part)) return null;
  try {
    let b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch (e) {
    return null;
  }
}

export class TokenSource {
  /**
   * options: token (a string to start with), getToken (async () => string | true | null),
   * refreshMargin (ms). clock: the client's. onDue(): the renewal timer fired (the client then
   * calls renew() and hands a new token to its transports).
   */
  constructor(options, clock, onDue) {
    this.getToken = typeof options.getToken === 'function' ? options.getToken : null;
    this.via = options.tokenVia || 'header';
    if (!TOKEN_VIA.includes(this.via)) throw new TypeError(`PushEdge: tokenVia must be one of ${TOKEN_VIA.join(', ')}`);
    this.margin = options.refreshMargin;
    this.clock = clock;
    this.onDue = onDue;
    this.token = null; // the token transports send (null: none; in cookie mode the cookie goes by itself)
    this.pending = null; // the getToken() call in flight
    this.timer = null;
    this.gen = 0; // counts stop()s: a getToken() answered after one arms no timer
    // Nothing to wait for at start when a token was given or there is no getToken.
    this.started = !this.getToken || (typeof options.token === 'string' && options.token !== '');
    if (typeof options.token === 'string' && options.token !== '') this._set(options.token);
  }

  /** Whether a refused or expiring token can be replaced (a getToken was given). */
  canRenew() {
    return !!this.getToken;
  }

  /**
   * Calls getToken(), once however many ask meanwhile. Resolves (never rejects) to
   * {kind: 'ok', token} (token: the string, or null for `true`: a cookie renewed by the app),
   * {kind: 'none'} (null, undefined, false or '': no token to be had) or {kind: 'failed', error}
   * (it threw or rejected: try again later).
   */
  renew() {
    if (!this.getToken) return Promise.resolve({ kind: 'none' });
    if (!this.pending) {
      const gen = this.gen;
      this.pending = Promise.resolve()
        .then(() => this.getToken())
        .then(
          (t) => {
            this.pending = null;
            if (typeof t === 'string' && t !== '') {
              this._set(t, gen === this.gen);
              return { kind: 'ok', token: t };
            }
            if (t === true) return { kind: 'ok', token: null };
            return { kind: 'none' };
          },
          (error) => {
            this.pending = null;
            if (gen === this.gen) this._arm(); // try again ahead of exp, later
            return { kind: 'failed', error };
          },
        );
    }
    return this.pending;
  }

  /** No more renewals (the client closed, or was refused for good). */
  stop() {
    this.gen++;
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  _set(token, arm = true) {
    this.token = token;
    this.exp = tokenExpiry(token);
    if (arm) this._arm();
  }

  /*
   * Renews ahead of `exp`: `margin` before it, or at half the time left when the token lives
   * shorter than twice the margin (so a short-lived token is not renewed the moment it comes).
   */
  _arm() {
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = null;
    if (this.exp === null || this.exp === undefined) return;
    const left = this.exp * 1000 - this.clock.now();
    if (left <= MIN_AHEAD) return;
    const wait = Math.max(left - this.margin, left / 2);
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.onDue();
    }, wait);
  }
}

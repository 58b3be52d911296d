/*
 * http.js: what the fetch-based transports share: the channel/since query of a request, where
 * its token goes, and the reading of a refusal (docs/protocol.md "Server-Sent Events",
 * "Long-polling"; docs/client.md "Authentication").
 */

/* The codes of a refusal of the credentials rather than of the request: the client may renew
 * the token and try again (docs/auth.md "Refusals"; `revoked` is final). */
export const AUTH_CODES = ['unauthorized', 'token_expired', 'forbidden', 'revoked'];

/**
 * channel=..&channel=..&since=.. for a set of channels and its `since` (null: none), with
 * presence=1 when `presence` (docs/protocol.md "Presence": it applies to the whole request).
 */
export function channelQuery(channels, since, presence = false) {
  const parts = channels.map((c) => `channel=${encodeURIComponent(c)}`);
  if (since) parts.push(`since=${encodeURIComponent(since)}`);
  if (presence) parts.push('presence=1');
  return parts.join('&');
}

/**
 * A presence event as the client hands it to the app: {type: 'join'|'leave'|'count', channel,
 * ...the server's fields} (client, user, node, info?, id for join and leave; count for count).
 * `o` is the server's object (its `op`, if any, becomes `type`). null if it is not one.
 */
export function presenceEvent(type, o) {
  if (!o || typeof o !== 'object' || typeof o.channel !== 'string') return null;
  const { op, ...rest } = o;
  return { type, ...rest };
}

/**
 * A request's URL and headers with the token where `via` says ('header': Authorization;
 * 'query': token=; 'cookie': nowhere, the browser sends the cookie). Without a token the
 * headers stay as given, so a tokenless cross-origin request still needs no preflight.
 */
export function withToken(url, headers, token, via) {
  if (!token || via === 'cookie') return { url, headers };
  if (via === 'query') return { url: `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`, headers };
  return { url, headers: { ...headers, Authorization: `Bearer ${token}` } };
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
 * outage; come back after retryIn), 'auth' (401/403 with one of AUTH_CODES: the token was
 * refused; the client decides whether a new one may help), 'fatal' (another 4xx JSON error:
 * this request is refused for good), or 'failed' (anything else: count it as a failure of the
 * transport).
 */
export async function readRefusal(res, clock) {
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    /* not JSON */
  }
  const error = (body && body.error) || {};
  if (res.status === 503 || res.status === 429) return { kind: 'later', code: error.code, retryIn: retryAfterMs(res, clock) };
  if ((res.status === 401 || res.status === 403) && AUTH_CODES.includes(error.code))
    return { kind: 'auth', info: { code: error.code, message: error.message, status: res.status } };
  if (res.status >= 400 && res.status < 500 && error.code)
    return { kind: 'fatal', info: { code: error.code, message: error.message, status: res.status } };
  return { kind: 'failed' };
}

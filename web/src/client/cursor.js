/*
 * cursor.js: names, message IDs and the cursor codec (docs/protocol.md "Names and IDs", "The
 * cursor"). Pure functions; the public ones are part of the client's API.
 */

export const CHANNEL_RE = /^[A-Za-z0-9_\-.:@]{1,200}$/;
export const ID_RE = /^(\d+)-(\d+)$/;
export const MAX_CHANNELS = 64;

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

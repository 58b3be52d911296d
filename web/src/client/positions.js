/*
 * positions.js: each subscribed channel's position (the ID of the last message delivered) and
 * what the app asked to start from; the dedupe by ID that makes reconnects, transport switches
 * and overlapping probes exactly-once; the `since` a new connection asks for (docs/client.md
 * "Resume"). Owned by the client; transports read it only through the client's since().
 */

import { ID_RE, compareIds, encodeCursor, decodeCursor } from './cursor.js';

export class Positions {
  constructor() {
    this.byChannel = new Map(); // channel -> { since, pos }, in subscription order
  }

  /**
   * A channel enters the set. `since`: a message ID or cursor to resume after, '0' for
   * everything retained, null for new messages only.
   */
  add(channel, since) {
    const p = { since: since ?? null, pos: null };
    if (since && ID_RE.test(since)) p.pos = since;
    else if (since && since !== '0') p.pos = decodeCursor(since, [channel]).get(channel) ?? null;
    this.byChannel.set(channel, p);
  }

  delete(channel) {
    this.byChannel.delete(channel);
  }

  clear() {
    this.byChannel.clear();
  }

  /**
   * A message arrived: true when it is new (its ID is above the channel's position, which it
   * becomes), false for a duplicate, an unknown channel or a malformed envelope.
   */
  accept(channel, id) {
    const p = this.byChannel.get(channel);
    if (!p || typeof id !== 'string') return false;
    if (p.pos && compareIds(id, p.pos) <= 0) return false; // seen already (a reconnect or a switch)
    p.pos = id;
    return true;
  }

  /** The server named a channel's position (a subscription's start): it only moves forward. */
  advance(channel, id) {
    const p = this.byChannel.get(channel);
    if (p && (!p.pos || compareIds(id, p.pos) > 0)) p.pos = id;
  }

  /** A cursor from the server for the set `channels`: every position it names moves forward. */
  advanceCursor(cursor, channels) {
    for (const [c, id] of decodeCursor(cursor, channels)) this.advance(c, id);
  }

  /*
   * History no longer reaches back for the channel. The position may move backwards (the engine
   * lost data and IDs start over): take what the server says, or accept the next message
   * whatever its ID.
   */
  gap(channel, cursor) {
    const p = this.byChannel.get(channel);
    if (!p) return;
    p.pos = cursor && ID_RE.test(cursor) ? cursor : null;
    if (!p.pos) p.since = '0';
  }

  /**
   * The position goes back to `start` (a message ID, or '0' for everything retained): a shared
   * connection's leader was asked for a channel from before where it is (shared.js). The next
   * connection asks from there; what comes up to the old position is taken again.
   */
  rewind(channel, start) {
    const p = this.byChannel.get(channel);
    if (!p) return;
    if (start === '0') {
      p.pos = null;
      p.since = '0';
    } else if (start && ID_RE.test(start)) p.pos = start;
  }

  /** The `since` for one channel on a new connection: its position, else what the app asked. */
  startFor(channel) {
    const p = this.byChannel.get(channel);
    if (!p) return null;
    return p.pos || p.since || null;
  }

  /*
   * One `since` for a set of channels: every channel's position. A channel with none yet starts
   * as the app asked: '0' (everything retained) is entry 0-0 in the multi form, an ID or cursor
   * its entry.
   */
  sinceFor(channels) {
    if (channels.length === 1) return this.startFor(channels[0]);
    const pos = new Map();
    let allZero = true;
    for (const c of channels) {
      const p = this.byChannel.get(c);
      // Unsubscribed since the transport took its set (the new set is applied a tick later):
      // no position for it, and it does not stop the others from asking for everything.
      if (!p) continue;
      if (p.pos) pos.set(c, p.pos);
      else if (p.since === '0') pos.set(c, '0-0');
      else if (p.since) {
        const id = decodeCursor(p.since, [c]).get(c);
        if (id) pos.set(c, id);
      }
      if (p.pos || p.since !== '0') allZero = false;
    }
    if (allZero) return '0';
    return encodeCursor(channels, pos);
  }

  /** The cursor of the whole set (positions only): null when nothing is known. */
  cursor() {
    const pos = new Map();
    for (const [c, p] of this.byChannel) if (p.pos) pos.set(c, p.pos);
    return encodeCursor([...this.byChannel.keys()], pos);
  }

  /** {channel: id} of the channels with a position. */
  snapshot() {
    const out = {};
    for (const [c, p] of this.byChannel) if (p.pos) out[c] = p.pos;
    return out;
  }
}

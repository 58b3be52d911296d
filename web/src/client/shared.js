/*
 * shared.js: one connection for every tab of an origin (the option `shared`; docs/client.md
 * "One connection for all tabs").
 *
 * Every PushEdge made with `shared: true` gets a SharedLink. The links of one server URL meet on
 * a BroadcastChannel (the bus) and queue for one Web Lock (the leader lock), both named after
 * the URL. The link holding the lock is the leader: it runs the hub, an ordinary PushEdge of its
 * own (its transports, ladder, token), subscribed to the union of the channels every tab wants;
 * each channel from the earliest position any tab needs. It hands every message of the hub to
 * every tab (its own directly, the others over the bus); each tab keeps its own positions, so a
 * tab drops what it has already seen (a message from before its position, a replay after a new
 * leader resumed from an older tab's position) and takes the rest once and in order.
 *
 * The leader learns each tab's set from its `state` posts (sent on every change, and again
 * when a new leader announces itself), and forgets a tab that said `bye` or whose own lock (each
 * link holds `<name>:tab:<id>` for its life; the browser frees it with the tab) is gone: a sweep
 * every SWEEP_MS asks locks.query(). That is timer-throttling proof: a background follower has
 * nothing to send to stay counted.
 *
 * When the leader closes or its tab dies, the browser frees the lock and the next link in the
 * queue becomes leader: it announces itself, waits GATHER_MS for the tabs' sets and positions,
 * then connects from the lowest position each channel needs.
 *
 * Rejected: a SharedWorker holding the transport (no SharedWorker on Chrome for Android, the
 * worker's script would have to be served as a separate file, and a dead worker is a harder
 * failure to notice); per-tab heartbeats to keep followers counted (background tabs get their
 * timers throttled to once a minute and would be dropped).
 *
 * Bus messages ({t, ...}); when adding one, also update SharedLink._onBus:
 *   tab -> leader  state {tab, set: [[channel, start]]}, bye {tab}, reconnect {}
 *   leader -> tabs leader {tab}, msg {env}, gap {channel}, status {state, info},
 *                  event {name, info}, pos {positions}
 */

import { ID_RE, compareIds } from './cursor.js';

/* ms a new leader waits for the other tabs' sets and positions before it connects: the
 * BroadcastChannel round trip is well under 10 ms between tabs of one browser. */
export const GATHER_MS = 150;
/* ms between the leader's checks for tabs that went away without a `bye` (crashed, killed). */
export const SWEEP_MS = 5000;

/* The hub's events every tab hears as its own. */
const HUB_STATES = ['connecting', 'connected', 'disconnected', 'idle'];
const HUB_EVENTS = ['error', 'engine', 'transport', 'auth'];

/**
 * What sharing needs here: {locks, BroadcastChannel} (options.locks / options.BroadcastChannel
 * first, for tests), or null where either is missing, and in Node (whose BroadcastChannel
 * reaches only the same process's threads: nothing to share with).
 */
export function sharedEnv(options) {
  const locks = options.locks || (globalThis.navigator && globalThis.navigator.locks);
  const BC = options.BroadcastChannel || globalThis.BroadcastChannel;
  const node = !options.locks && !!(globalThis.process && globalThis.process.versions && globalThis.process.versions.node);
  if (!locks || typeof locks.request !== 'function' || typeof BC !== 'function' || node) return null;
  return { locks, BroadcastChannel: BC };
}

/*
 * Starts of a channel, earliest first: '0' (everything retained), then message IDs in order,
 * then null (new messages only).
 */
export function earlierStart(a, b) {
  if (a === null || a === undefined) return b ?? null;
  if (b === null || b === undefined) return a;
  if (a === '0' || b === '0') return '0';
  return compareIds(a, b) <= 0 ? a : b;
}

/** Whether start `a` asks for something before `b` does. */
export function startsBefore(a, b) {
  return (a ?? null) !== (b ?? null) && earlierStart(a, b) === (a ?? null);
}

/**
 * The union of the tabs' sets, counted: tabs is Map tabId -> Map channel -> start. Returns Map
 * channel -> {start, tabs}: the earliest start any tab needs, and how many tabs want it. A
 * channel is in it while at least one tab wants it.
 */
export function unionSet(tabs) {
  const out = new Map();
  for (const set of tabs.values()) {
    for (const [channel, start] of set) {
      const u = out.get(channel);
      if (u) {
        u.start = earlierStart(u.start, start);
        u.tabs++;
      } else out.set(channel, { start: start ?? null, tabs: 1 });
    }
  }
  return out;
}

/* The start a tab hands the leader for one channel of its Positions entry {since, pos}. */
export function tabStart(p) {
  if (p.pos) return p.pos;
  if (p.since === '0') return '0';
  return p.since && ID_RE.test(p.since) ? p.since : null;
}

function newId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The leader's side: the hub and the tabs' sets. Made when the link gets the lock; stop() when
 * it gives the lock back. link: the SharedLink (post(), tab, clock, locks, names).
 */
export class SharedLeader {
  constructor(link, makeHub, { gatherMs = GATHER_MS, sweepMs = SWEEP_MS } = {}) {
    this.link = link;
    this.makeHub = makeHub;
    this.sweepMs = sweepMs;
    this.tabs = new Map(); // tabId -> Map channel -> start; this link's own tab included
    this.offs = new Map(); // channel -> the hub's unsubscribe function
    this.hub = null; // made after the gather window
    this.stopped = false;
    this.tabs.set(link.id, link.localSet());
    link.post({ t: 'leader', tab: link.id });
    this.timer = link.clock.setTimeout(() => this._start(), gatherMs);
  }

  /* The gather window is over: the hub connects for everything the tabs said. */
  _start() {
    this.timer = null;
    if (this.stopped) return;
    const hub = this.makeHub();
    this.hub = hub;
    for (const state of HUB_STATES)
      hub.on(state, (info) => {
        if (state === 'connected') this._positions();
        this._broadcast({ t: 'status', state, info });
      });
    for (const name of HUB_EVENTS) hub.on(name, (info) => this._broadcast({ t: 'event', name, info }));
    this._apply();
    this._sweep();
  }

  /** A tab's set (its channels and their starts), or null: the tab is gone. */
  setTab(tab, set) {
    if (set) this.tabs.set(tab, set);
    else if (!this.tabs.delete(tab)) return;
    if (!this.hub) return;
    this._apply();
    // A tab that came after the hub's last state change learns it now (the tabs that knew it
    // already ignore a repeat).
    const state = this.hub.state;
    if (set && state !== 'idle' && state !== 'closed') this._broadcast({ t: 'status', state, info: this.hub.transport ? { transport: this.hub.transport } : {} });
  }

  reconnect() {
    if (this.hub) this.hub.reconnect();
  }

  stop() {
    this.stopped = true;
    if (this.timer) this.link.clock.clearTimeout(this.timer);
    this.timer = null;
    if (this.hub) this.hub.close();
    this.hub = null;
    this.offs.clear();
  }

  /*
   * Makes the hub's set the union of the tabs' sets: a new channel subscribed from the earliest
   * start a tab gave; a channel no tab wants unsubscribed; a channel that a tab wants from before
   * the hub's position rewound to it (the hub reconnects from its positions: the tabs drop the
   * replay up to their own).
   */
  _apply() {
    const hub = this.hub;
    const want = unionSet(this.tabs);
    for (const [channel, off] of [...this.offs]) {
      if (want.has(channel)) continue;
      off();
      this.offs.delete(channel);
    }
    let rewound = false;
    for (const [channel, { start }] of want) {
      if (!this.offs.has(channel)) {
        let off;
        try {
          off = hub.subscribe(channel, (env) => this._deliver(env), { since: start ?? undefined, onGap: () => this._broadcast({ t: 'gap', channel }) });
        } catch (e) {
          // The union is past the hub's 64 channels: the tabs hear it as a refusal of the channel.
          this._broadcast({ t: 'event', name: 'error', info: { channel, code: 'too_many_channels', message: String(e.message) } });
          continue;
        }
        this.offs.set(channel, off);
      } else if (startsBefore(start, hub._positions.startFor(channel))) {
        hub._positions.rewind(channel, start);
        rewound = true;
      }
    }
    if (rewound) hub._rewound();
    this._positions();
  }

  _deliver(env) {
    this._broadcast({ t: 'msg', env });
  }

  /* The hub's positions: a tab that has none for a channel takes the hub's (it has had every
   * message before it), so that a later leader does not resume that tab from "new only". */
  _positions() {
    if (this.hub) this._broadcast({ t: 'pos', positions: this.hub.positions });
  }

  /* To every tab: the others over the bus, this link's own directly. */
  _broadcast(m) {
    this.link.post(m);
    this.link.handle(m);
  }

  /* Forgets the tabs whose own lock is gone (closed or crashed without a `bye`). */
  _sweep() {
    if (this.stopped) return;
    this.timer = this.link.clock.setTimeout(() => this._sweep(), this.sweepMs);
    const locks = this.link.locks;
    if (typeof locks.query !== 'function') return;
    Promise.resolve()
      .then(() => locks.query())
      .then((q) => {
        if (this.stopped) return;
        const alive = new Set([...(q.held || []), ...(q.pending || [])].map((l) => l.name));
        let gone = false;
        for (const tab of [...this.tabs.keys()]) {
          if (tab === this.link.id || alive.has(this.link.tabLockName(tab))) continue;
          this.tabs.delete(tab);
          gone = true;
        }
        if (gone && this.hub) this._apply();
      })
      .catch(() => {});
  }
}

/**
 * One tab's (one PushEdge's) end of the sharing. tab: the PushEdge; it provides _sharedSet()
 * (Map channel -> start), and takes _sharedMessage(env), _sharedGap(channel),
 * _sharedStatus(state, info), _sharedEvent(name, info), _sharedPositions(positions).
 * makeHub(): a new, unshared PushEdge for the leader role.
 */
export class SharedLink {
  constructor(tab, env, { baseUrl, clock, makeHub, gatherMs, sweepMs }) {
    this.tab = tab;
    this.id = newId();
    this.clock = clock;
    this.locks = env.locks;
    this.name = `pushedge:${baseUrl}`;
    this.leader = null; // a SharedLeader while this link holds the lock
    this.closed = false;
    this._release = [];
    this._abort = typeof AbortController === 'function' ? new AbortController() : null;
    this.bus = new env.BroadcastChannel(this.name);
    this.bus.onmessage = (e) => this._onBus(e.data);
    const hold = (name, onGranted) => {
      const opts = this._abort ? { signal: this._abort.signal } : {};
      Promise.resolve()
        .then(() =>
          this.locks.request(name, opts, () => {
            if (this.closed) return undefined;
            if (onGranted) onGranted();
            return new Promise((resolve) => this._release.push(resolve));
          }),
        )
        .catch(() => {}); // aborted by close()
    };
    hold(this.tabLockName(this.id), null);
    hold(this.name, () => {
      this.leader = new SharedLeader(this, makeHub, { gatherMs, sweepMs });
    });
  }

  tabLockName(id) {
    return `${this.name}:tab:${id}`;
  }

  /** 'leader' | 'follower' */
  get role() {
    return this.leader ? 'leader' : 'follower';
  }

  localSet() {
    return this.tab._sharedSet();
  }

  /** This tab's set changed: the leader hears of it. */
  changed() {
    if (this.closed) return;
    if (this.leader) this.leader.setTab(this.id, this.localSet());
    else this.post({ t: 'state', tab: this.id, set: [...this.localSet()] });
  }

  reconnect() {
    if (this.leader) this.leader.reconnect();
    else this.post({ t: 'reconnect' });
  }

  close() {
    if (this.closed) return;
    if (this.leader) this.leader.stop();
    else this.post({ t: 'bye', tab: this.id });
    this.closed = true;
    this.leader = null;
    for (const r of this._release) r();
    if (this._abort) this._abort.abort();
    try {
      this.bus.close();
    } catch (e) {
      /* closed already */
    }
  }

  post(m) {
    if (this.closed) return;
    try {
      this.bus.postMessage(m);
    } catch (e) {
      /* a closed channel (the page is going away) */
    }
  }

  _onBus(m) {
    if (this.closed || !m || typeof m.t !== 'string') return;
    if (this.leader) {
      // Leader: the tabs' posts. Another leader's posts (the one before, still flushing) are
      // ignored: this hub serves everything now.
      if (m.t === 'state') this.leader.setTab(m.tab, new Map(m.set));
      else if (m.t === 'bye') this.leader.setTab(m.tab, null);
      else if (m.t === 'reconnect') this.leader.reconnect();
      return;
    }
    if (m.t === 'leader') this.post({ t: 'state', tab: this.id, set: [...this.localSet()] });
    else this.handle(m);
  }

  /** A leader's post, on this tab. */
  handle(m) {
    const tab = this.tab;
    if (m.t === 'msg') tab._sharedMessage(m.env);
    else if (m.t === 'gap') tab._sharedGap(m.channel);
    else if (m.t === 'status') tab._sharedStatus(m.state, m.info || {});
    else if (m.t === 'event') tab._sharedEvent(m.name, m.info || {});
    else if (m.t === 'pos') tab._sharedPositions(m.positions || {});
  }
}

/*
 * Test doubles for the JS client (web/src/pushedge.js): a virtual clock, a WebSocket class, a
 * fetch with controllable requests and streaming bodies, a storage. No network, no real timers:
 * everything the client waits for is driven from the test.
 */

import { readFile } from 'node:fs/promises';

/* The module under test. It is a plain ES module without a package.json beside it: Node >= 20.19
 * detects that by itself; older Node 20 releases get it through a data: URL. */
const MODULE_URL = new URL('../../web/src/pushedge.js', import.meta.url);
async function loadClient() {
  try {
    return await import(MODULE_URL.href);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    const src = await readFile(MODULE_URL, 'utf8');
    return import(`data:text/javascript;charset=utf-8,${encodeURIComponent(src)}`);
  }
}
export const lib = await loadClient();
export const { PushEdge, channelTag, encodeCursor, decodeCursor, compareIds } = lib;

/** Lets pending promise chains (fetch, json(), reader.read()) run: a few macrotask turns. */
export async function flush(turns = 8) {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

/*
 * Virtual time. advance(ms) runs every timer due within ms in due order (ties: creation order),
 * each at its due time, flushing microtasks after each. jump(ms) moves time without running
 * anything: the timers that became due then run late on the next advance() (a throttled
 * background tab).
 */
export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this._now = start;
    this._timers = new Map(); // id -> {due, seq, fn}
    this._seq = 0;
    this._random = () => 0.5;
    this.ran = []; // {id, due, at} of every timer that ran
  }

  now() {
    return this._now;
  }

  setTimeout(fn, ms) {
    const id = ++this._seq;
    this._timers.set(id, { due: this._now + Math.max(0, Number(ms) || 0), seq: id, fn, ms });
    return id;
  }

  clearTimeout(id) {
    this._timers.delete(id);
  }

  random() {
    return this._random();
  }

  /** A constant, or a list used in turn (the last value repeats). */
  setRandom(v) {
    if (typeof v === 'function') this._random = v;
    else if (Array.isArray(v)) {
      const list = [...v];
      this._random = () => (list.length > 1 ? list.shift() : list[0]);
    } else this._random = () => v;
  }

  /** How many timers are pending (optionally only those created with this delay). */
  pending(ms) {
    let n = 0;
    for (const t of this._timers.values()) if (ms === undefined || t.ms === ms) n++;
    return n;
  }

  _next(limit) {
    let best = null;
    for (const [id, t] of this._timers) {
      if (t.due > limit) continue;
      if (!best || t.due < best.t.due || (t.due === best.t.due && t.seq < best.t.seq)) best = { id, t };
    }
    return best;
  }

  async advance(ms = 0) {
    const target = this._now + ms;
    await flush();
    for (;;) {
      const n = this._next(target);
      if (!n) break;
      this._timers.delete(n.id);
      if (n.t.due > this._now) this._now = n.t.due;
      this.ran.push({ id: n.id, due: n.t.due, at: this._now });
      n.t.fn();
      await flush();
    }
    this._now = target;
    await flush();
  }

  /** Time passes but no timer runs (the tab sleeps); run them late with advance(0). */
  jump(ms) {
    this._now += ms;
  }
}

/* ---- WebSocket ------------------------------------------------------------------------------- */

/**
 * A fresh WebSocket class per test. Class knobs: refuse = true (every construction throws),
 * throwNext = n (the next n throw), onCreate(ws). Server side of an instance: open(), recv(op),
 * drop(code) (the network or the server ends it), sentOps(name).
 */
export function createFakeWebSocket() {
  class FakeWebSocket {
    constructor(url, protocols) {
      FakeWebSocket.attempts.push({ url, protocols });
      if (FakeWebSocket.refuse || FakeWebSocket.throwNext > 0) {
        if (FakeWebSocket.throwNext > 0) FakeWebSocket.throwNext--;
        throw new SyntaxError('refused by the fake');
      }
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = []; // parsed ops
      this.closeCalls = []; // codes passed to close()
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeWebSocket.instances.push(this);
      if (FakeWebSocket.onCreate) FakeWebSocket.onCreate(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(JSON.parse(text));
    }

    close(code) {
      this.closeCalls.push(code);
      if (this.readyState < 2) this.readyState = 2;
    }

    get closed() {
      return this.closeCalls.length > 0;
    }

    /* server side */
    open() {
      this.readyState = 1;
      if (this.onopen) this.onopen({ type: 'open' });
    }

    recv(op) {
      if (this.onmessage) this.onmessage({ data: typeof op === 'string' ? op : JSON.stringify(op) });
    }

    drop(code = 1006, reason = '') {
      this.readyState = 3;
      if (this.onerror && code === 1006) this.onerror({ type: 'error' });
      if (this.onclose) this.onclose({ code, wasClean: code !== 1006, reason });
    }

    sentOps(name) {
      return this.sent.filter((o) => o.op === name);
    }

    /** The server's answer to a ping. */
    pong() {
      this.recv({ op: 'pong' });
    }

    /** The server's answer to every subscribe not answered yet (without a start position). */
    confirmSubscribes() {
      this.confirmed = this.confirmed || new Set();
      for (const o of this.sentOps('subscribe')) {
        if (this.confirmed.has(o.ref)) continue;
        this.confirmed.add(o.ref);
        this.recv({ op: 'subscribed', channel: o.channel, ref: o.ref });
      }
    }
  }
  FakeWebSocket.instances = [];
  FakeWebSocket.attempts = [];
  FakeWebSocket.refuse = false;
  FakeWebSocket.throwNext = 0;
  FakeWebSocket.onCreate = null;
  Object.defineProperty(FakeWebSocket, 'last', { get: () => FakeWebSocket.instances.at(-1) });
  return FakeWebSocket;
}

/* ---- fetch ------------------------------------------------------------------------------------- */

const encoder = new TextEncoder();

function abortError() {
  const e = new Error('The operation was aborted.');
  e.name = 'AbortError';
  return e;
}

/** A response body: push(text | Uint8Array), end() (normal end), cut() (network error). */
export class FakeStream {
  constructor() {
    this.queue = [];
    this.waiters = [];
    this.ended = false;
    this.error = null;
    this.cancelled = false;
    this.reader = {
      read: () => this._read(),
      cancel: () => {
        this.cancelled = true;
        this._settle();
        return Promise.resolve();
      },
    };
  }

  _read() {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this._settle();
    });
  }

  _settle() {
    while (this.waiters.length) {
      if (this.queue.length) this.waiters.shift().resolve({ value: this.queue.shift(), done: false });
      else if (this.error) this.waiters.shift().reject(this.error);
      else if (this.ended || this.cancelled) this.waiters.shift().resolve({ value: undefined, done: true });
      else break;
    }
  }

  push(chunk) {
    if (this.ended || this.error || this.cancelled) return this;
    this.queue.push(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
    this._settle();
    return this;
  }

  end() {
    this.ended = true;
    this._settle();
  }

  cut(err = new TypeError('network error')) {
    if (this.error) return;
    this.error = err;
    this.queue = [];
    this._settle();
  }
}

function headersOf(obj = {}) {
  const m = new Map(Object.entries(obj).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return { get: (k) => m.get(String(k).toLowerCase()) ?? null, has: (k) => m.has(String(k).toLowerCase()) };
}

/** One fetch() call, answered by the test: fail(), respond(status, {json, headers}), stream(). */
export class FakeRequest {
  constructor(url, opts, at) {
    this.url = url;
    this.opts = opts || {};
    this.at = at; // virtual time of the call
    const u = new URL(url);
    this.path = u.pathname;
    this.params = u.searchParams;
    this.settled = false;
    this.aborted = false;
    this.stream_ = null;
    this.promise = new Promise((res, rej) => {
      this._res = res;
      this._rej = rej;
    });
    const sig = this.opts.signal;
    if (sig) {
      if (sig.aborted) this._onAbort();
      else sig.addEventListener('abort', () => this._onAbort(), { once: true });
    }
  }

  get channels() {
    return this.params.getAll('channel');
  }

  get since() {
    return this.params.get('since');
  }

  _onAbort() {
    this.aborted = true;
    if (!this.settled) {
      this.settled = true;
      this._rej(abortError());
    }
    if (this.stream_) this.stream_.cut(abortError());
  }

  fail(err = new TypeError('fetch failed')) {
    if (this.settled) return;
    this.settled = true;
    this._rej(err);
  }

  respond(status, { json, headers } = {}) {
    if (this.settled) return;
    this.settled = true;
    this._res({
      status,
      ok: status >= 200 && status < 300,
      headers: headersOf(headers),
      json: () => (this.aborted ? Promise.reject(abortError()) : json === undefined ? Promise.reject(new SyntaxError('not JSON')) : Promise.resolve(structuredClone(json))),
      body: null,
    });
  }

  /** Answers 200 (or status) with a streaming body and returns it. */
  stream(status = 200, headers = { 'content-type': 'text/event-stream' }) {
    const s = new FakeStream();
    this.stream_ = s;
    if (this.settled) return s;
    this.settled = true;
    this._res({
      status,
      ok: status >= 200 && status < 300,
      headers: headersOf(headers),
      json: () => Promise.reject(new SyntaxError('a stream')),
      body: { getReader: () => s.reader },
    });
    return s;
  }
}

/** fetch.requests lists every call; fetch.handler(req), when set, answers each one at once. */
export function createFakeFetch(clock) {
  const fetch = (url, opts) => {
    const req = new FakeRequest(url, opts, clock ? clock.now() : 0);
    fetch.requests.push(req);
    if (fetch.handler) fetch.handler(req);
    return req.promise;
  };
  fetch.requests = [];
  fetch.handler = null;
  fetch.to = (path) => fetch.requests.filter((r) => r.path === path);
  Object.defineProperty(fetch, 'last', { get: () => fetch.requests.at(-1) });
  return fetch;
}

/* ---- storage ----------------------------------------------------------------------------------- */

export class FakeStorage {
  constructor(init = {}) {
    this.map = new Map(Object.entries(init));
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

/* ---- a client wired to all of the above -------------------------------------------------------- */

export const BASE = 'http://push.test';
export const STORAGE_KEY = `pushedge.transport:${BASE}`;

/**
 * Builds a client on fakes. Returns {client, clock, WS, fetch, storage, events, eventsOf(name)}.
 * events records every event the client emits, with the virtual time.
 */
export function setup(options = {}, { storage = new FakeStorage(), clock = new FakeClock() } = {}) {
  const WS = createFakeWebSocket();
  const fetch = createFakeFetch(clock);
  const client = new PushEdge(BASE, { WebSocket: WS, fetch, clock, storage, ...options });
  const events = [];
  for (const name of ['connecting', 'connected', 'disconnected', 'gap', 'error', 'engine', 'transport', 'idle', 'closed', 'auth'])
    client.on(name, (info) => events.push({ name, at: clock.now(), ...info }));
  const eventsOf = (name) => events.filter((e) => e.name === name);
  return { client, clock, WS, fetch, storage, events, eventsOf };
}

/** An envelope as the server sends it. */
export const env = (channel, id, data = null) => ({ channel, id, data });

/** One SSE message event, the way the server writes it. */
export function sseMessage(channel, id, data = null, cursor = id) {
  return `id: ${cursor}\ndata: ${JSON.stringify({ channel, id, data })}\n\n`;
}

/** Opens a fake WebSocket, answers its probe ping and confirms its subscribes, as the server
 * does: the client counts it as connected. */
export async function wsConnect(ws, clock) {
  ws.open();
  ws.pong();
  ws.confirmSubscribes();
  await clock.advance(0);
}

/** Reference FNV-1a / base-36 cursor written independently of the client, for expectations. */
export function refTag(name) {
  let h = 0x811c9dc5n;
  for (const b of Buffer.from(name, 'latin1')) {
    h ^= BigInt(b);
    h = (h * 0x01000193n) & 0xffffffffn;
  }
  return h;
}
export function refCursor(entries) {
  return entries
    .map(([channel, id]) => {
      const [ms, seq] = id.split('-').map(BigInt);
      return `${refTag(channel).toString(36)}.${ms.toString(36)}.${seq.toString(36)}`;
    })
    .join('_');
}

/* ---- Web Locks and BroadcastChannel (the shared connection) ------------------------------------ */

/**
 * navigator.locks for one origin: exclusive locks granted in request order, a held lock freed
 * when the callback's promise settles, a pending request dropped by its AbortSignal; query()
 * as the browser's. crash(name) frees a held lock as the browser does for a dead tab.
 */
export class FakeLocks {
  constructor() {
    this.held = new Map(); // name -> {release}
    this.queue = []; // {name, cb, resolve, reject}
  }

  request(name, opts, cb) {
    if (typeof opts === 'function') [opts, cb] = [{}, opts];
    return new Promise((resolve, reject) => {
      const req = { name, cb, resolve, reject };
      if (opts.signal) {
        if (opts.signal.aborted) return reject(abortError());
        opts.signal.addEventListener('abort', () => {
          const i = this.queue.indexOf(req);
          if (i < 0) return;
          this.queue.splice(i, 1);
          reject(abortError());
        });
      }
      this.queue.push(req);
      queueMicrotask(() => this._grant());
    });
  }

  _grant() {
    for (const req of [...this.queue]) {
      if (this.held.has(req.name)) continue;
      this.queue.splice(this.queue.indexOf(req), 1);
      const entry = { release: null };
      this.held.set(req.name, entry);
      const done = new Promise((r) => (entry.release = r));
      Promise.race([Promise.resolve().then(() => req.cb({ name: req.name })), done]).then(
        (v) => this._free(req.name, entry, () => req.resolve(v)),
        (e) => this._free(req.name, entry, () => req.reject(e)),
      );
    }
  }

  _free(name, entry, then) {
    if (this.held.get(name) === entry) this.held.delete(name);
    then();
    queueMicrotask(() => this._grant());
  }

  /** The tab holding `name` died: the lock is freed without its callback settling. */
  crash(name) {
    const entry = this.held.get(name);
    if (entry) entry.release();
  }

  async query() {
    return { held: [...this.held.keys()].map((name) => ({ name })), pending: this.queue.map((r) => ({ name: r.name })) };
  }
}

/** A BroadcastChannel class for one origin: a post reaches every other open instance of the
 * same name, asynchronously (a macrotask), in order, as a structured clone. kill(bc) closes one
 * as a dead tab's. */
export function createFakeBroadcastChannel() {
  const all = new Set();
  class FakeBroadcastChannel {
    constructor(name) {
      this.name = name;
      this.onmessage = null;
      this.closed = false;
      all.add(this);
    }
    postMessage(m) {
      if (this.closed) throw new Error('InvalidStateError: closed');
      const data = structuredClone(m);
      for (const o of all)
        if (o !== this && o.name === this.name) setImmediate(() => !o.closed && o.onmessage && o.onmessage({ data }));
      FakeBroadcastChannel.posts.push(data);
    }
    close() {
      this.closed = true;
      all.delete(this);
    }
  }
  FakeBroadcastChannel.posts = [];
  return FakeBroadcastChannel;
}

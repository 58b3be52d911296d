// Type declarations of pushedge.js (docs/client.md describes every option and rule).

/** What a subscriber receives for one message, on every transport. */
export interface Envelope<T = unknown> {
  channel: string;
  /** The message ID, `<ms>-<seq>`; strictly increasing within a channel. */
  id: string;
  data: T;
}

export type TransportName = 'websocket' | 'sse' | 'poll';
/** Where the token travels (docs/client.md "Authentication"). */
export type TokenVia = 'header' | 'query' | 'cookie';
export type ClientState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  random(): number;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface PushEdgeOptions {
  /** Transports to use, best first. Default ['websocket', 'sse', 'poll']. */
  transports?: TransportName[];
  /** A WebSocket constructor (Node: `import WebSocket from 'ws'`). Default globalThis.WebSocket. */
  WebSocket?: unknown;
  /** A fetch function (SSE, long-polling, publish). Default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Where the transport that worked is remembered. Default localStorage, else memory. */
  storage?: StorageLike;
  /** Bearer token for publish() (else the token, for its `publish` claim). */
  apiKey?: string;
  /** A JSON Web Token to connect with (no getToken: a refusal of it is final). */
  token?: string;
  /**
   * Returns a JWT (or a promise of one). Called at start (unless `token` is given), before the
   * token expires (the server's `expiring` notice, or `refreshMargin` before its own `exp`) and
   * when the server refuses it (401 `unauthorized` / `token_expired`, 403 `forbidden`, WebSocket
   * close 4001). `null` (or undefined): no token: at start connect without one; after a refusal
   * give up (the `auth` event). `true` (with tokenVia 'cookie'): the app renewed the cookie
   * itself. A rejection is tried again after a backoff.
   */
  getToken?: () => Promise<string | true | null | undefined> | string | true | null | undefined;
  /**
   * 'header' (default): `Authorization: Bearer` on SSE, long-poll and publish, the in-band
   * `auth` op on WebSocket. 'query': `?token=` on every request (the weakest: URLs are logged).
   * 'cookie': none; the browser sends the `pushedge_token` cookie (same site only).
   */
  tokenVia?: TokenVia;
  /** ms before the token's own `exp` at which getToken() is called ahead of the server's notice. Default 30000. */
  refreshMargin?: number;
  /** ms before a transport that has not opened counts as failed. Default 8000. */
  connectTimeout?: number;
  /** ms for an open WebSocket to answer its first ping, or an SSE stream to send a byte. Default 5000. */
  probeTimeout?: number;
  /** ms of WebSocket silence before the client pings. Default 20000 (lowered by itself behind idle-killing proxies). */
  pingInterval?: number;
  /** ms a pong may take. Default 8000. */
  pongTimeout?: number;
  /** ms without any SSE byte (heartbeats included) before the stream counts as dead. Default 60000. */
  heartbeatTimeout?: number;
  /** Seconds a long-poll may be held (the server caps it). Default 25. */
  pollTimeout?: number;
  /** Backoff: random(0, min(backoffCap, backoffBase * 2^attempt)) ms. Defaults 500 and 30000. */
  backoffBase?: number;
  backoffCap?: number;
  /** ms connected before the backoff starts over. Default 10000. */
  healthyAfter?: number;
  /** A streaming connection ended by the network within this many ms is a "cut". Default 90000. */
  cutThreshold?: number;
  /** Similar cuts in a row that make the client fall back. Default 3. */
  cutsToDemote?: number;
  /** ms before a better transport is tried again in the background (doubles up to 16x). Default 60000. */
  reprobeInterval?: number;
  /** ms the transport that worked is remembered. Default 86400000. */
  rememberFor?: number;
  /** [min, max] ms before reconnecting after a drain hint that names no delay. Default [250, 2500]. */
  drainDelay?: [number, number];
  /** A server's reconnect hint (WebSocket close reason, SSE retry:, long-poll reconnect_ms, Retry-After) is waited
   * for, stretched at random by up to this fraction of it. Default 0.25. */
  drainJitter?: number;
  /** Prefix of the storage key (the server's URL is appended). Default 'pushedge.transport'. */
  storageKey?: string;
  /**
   * One connection for every tab of this origin that talks to the same server URL (docs/client.md
   * "One connection for all tabs"): a leader tab, elected with Web Locks, holds it; the others
   * get their messages and events over a BroadcastChannel. Where either is missing (and in
   * Node) each client keeps its own connection. Default false.
   */
  shared?: boolean;
  /** ms a new leader waits for the other tabs' channels and positions before connecting. Default 150. */
  sharedGather?: number;
  /** ms between the leader's checks for tabs gone without a word. Default 5000. */
  sharedSweep?: number;
  /** A Web Locks manager (default navigator.locks; for tests). */
  locks?: unknown;
  /** A BroadcastChannel constructor (default globalThis.BroadcastChannel; for tests). */
  BroadcastChannel?: unknown;
  /** A clock for tests. */
  clock?: Clock;
}

export interface SubscribeOptions {
  /** A message ID or cursor to resume after, '0' for everything retained; absent: new messages only. */
  since?: string;
  /** Called when history no longer reaches back to the channel's position (refetch your state). */
  onGap?: (info: { channel: string }) => void;
  /**
   * The channel's presence events (docs/client.md "Presence"); the client becomes a member of the
   * channel. Must be given by the subscribe() that first subscribes the channel; not with
   * `shared: true`.
   */
  presence?: (event: PresenceEvent) => void;
}

/** A member's join or leave (an entry of the channel's history, with its id), or a count. */
export type PresenceEvent =
  | {
      type: 'join' | 'leave';
      channel: string;
      id?: string; /* absent over SSE (the stream's cursor carries it) */
      client: string;
      user: string | null;
      node: string;
      info?: Record<string, unknown>;
    }
  | { type: 'count'; channel: string; count: number };

export interface StateInfo {
  state: ClientState;
  transport?: TransportName;
  /** Why the connection ended ('ws_refused', 'ws_silent', 'sse_silent', 'drain', ...). */
  reason?: string;
  /** ms until the next attempt (null: no retry, a fatal error). */
  retryIn?: number | null;
}

export interface ClientEvents {
  state: StateInfo;
  connecting: { transport: TransportName };
  connected: { transport: TransportName };
  disconnected: { transport: TransportName; reason: string; retryIn: number | null };
  idle: Record<string, never>;
  closed: Record<string, never>;
  gap: { channel: string };
  error: { channel?: string; code: string; message: string; status?: number };
  engine: { state: 'available' | 'unavailable' };
  transport: { from: TransportName | null; to: TransportName; reason: string };
  /** The server refused the token for good (after one new token from getToken(), or at once when revoked). */
  auth: AuthInfo;
}

export interface AuthInfo {
  /** 'unauthorized' | 'token_expired' | 'forbidden' | 'revoked' */
  code: string;
  /** The server's text (for 'revoked', the reason given to POST /api/disconnect). */
  message: string;
  /** The HTTP status of a refused SSE or long-poll request (401, 403). */
  status?: number;
  /** The channel refused (WebSocket refuses subscriptions one by one; the others go on). */
  channel?: string;
  transport: TransportName;
}

export class PushEdge {
  constructor(baseUrl?: string, options?: PushEdgeOptions);
  readonly baseUrl: string;
  /** The transport while connected, else null. */
  readonly transport: TransportName | null;
  readonly state: ClientState;
  /** The cursor of the subscription set: pass it as `since` to resume anywhere. */
  readonly cursor: string | null;
  /** Each channel's position (its last message ID). */
  readonly positions: Record<string, string>;
  /** With `shared`: 'leader' (this tab holds the connection) or 'follower'; null when not shared. */
  readonly shared: 'leader' | 'follower' | null;
  on<K extends keyof ClientEvents>(event: K, fn: (info: ClientEvents[K]) => void): () => void;
  subscribe<T = unknown>(channel: string, onMessage: (m: Envelope<T>) => void, options?: SubscribeOptions): () => void;
  publish(channel: string, data: unknown, options?: { apiKey?: string; key?: string }): Promise<string>;
  /** After a refusal for good (`auth`, or an `error` with retryIn null): connect again, with a new token from getToken(). */
  reconnect(): void;
  close(): void;
}

export function compareIds(a: string, b: string): number;
export function channelTag(name: string): number;
export function encodeCursor(channels: string[], positions: Map<string, string>): string | null;
export function decodeCursor(cursor: string, channels: string[]): Map<string, string>;

export default PushEdge;

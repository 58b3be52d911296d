/*
 * bounds.h: every numeric limit of the edge, each with the reason for its value. Options in config.h
 * override some of them at run time; these are the fixed ones.
 */
#ifndef PE_BOUNDS_H
#define PE_BOUNDS_H

/* Event-loop threads: the pubsub engines keep one watcher bit per thread in a 64-bit mask. */
#define PE_MAX_THREADS 64
/* Listen addresses: a handful covers IPv4 + IPv6 + a metrics-only address. */
#define PE_MAX_LISTEN 16
/* --allowed-origin values: an application's few front-end origins; a longer list belongs in a
 * proxy in front of us. */
#define PE_MAX_ORIGINS 32
/* Longest origin ("scheme://host[:port]"): a 253-byte DNS name plus scheme and port. */
#define PE_MAX_ORIGIN_LEN 300
/* A long-poll answer: at most this many messages or about this many bytes of envelopes (one
 * message always fits, whatever its size); the returned cursor continues the batch. Small
 * enough for old proxies' response buffers, large enough that catching up takes few rounds. */
#define PE_POLL_MAX_MESSAGES 100
#define PE_POLL_MAX_BYTES (256u << 10)
/* How long a browser may cache a CORS preflight answer, in seconds. */
#define PE_CORS_MAX_AGE 600
/* Bytes of SSE output queued per stream before it counts as a slow consumer and is ended (it
 * resumes from its cursor): 64 messages of the default 64 KiB maximum, or thousands of small
 * ones, while a stalled peer cannot pin more than this. */
#define PE_SSE_MAX_QUEUE (4u << 20)
/* Queued bytes above which catch-up from history pauses until the socket drains: keeps a
 * reconnect storm of subscribers replaying 1000 messages each from buffering it all at once. */
#define PE_SSE_LOW_WATER (256u << 10)
/* Entries (messages and control lines) per h2o_send: bounds the iovec array (IOV_MAX is 1024
 * and each entry can take two vectors). */
#define PE_SSE_MAX_BATCH 256
/* The padding prelude (?padding=1): 2 KiB of comment defeats the common first-chunk buffering
 * of old proxies and browsers' MIME sniffing (IE/Edge legacy buffered the first 2 KiB). */
#define PE_SSE_PADDING 2048
/* Reconnect delay announced to EventSource clients at stream start, in milliseconds. */
#define PE_SSE_RETRY_MS 2000
/* Paced drain (edge/server.c, docs/operations.md "Draining and deploys"). A draining loop tells
 * its streams to leave in batches, one batch per PE_DRAIN_TICK_MS over --drain-spread, and
 * every client told gets a reconnect hint drawn at random from [0, PE_DRAIN_HINT_JITTER_MS):
 * the batches spread the herd over the window, the jitter smooths each batch's edge (a batch
 * is one tick's worth of clients, the jitter spreads it over ten ticks). Without pacing
 * (--drain-spread 0) every client is told at once and the hint alone must spread them: it is
 * drawn from [PE_DRAIN_HINT_UNPACED_MIN_MS, + PE_DRAIN_HINT_UNPACED_SPREAD_MS). */
#define PE_DRAIN_TICK_MS 100
#define PE_DRAIN_HINT_JITTER_MS 1000
#define PE_DRAIN_HINT_UNPACED_MIN_MS 1000
#define PE_DRAIN_HINT_UNPACED_SPREAD_MS 4000
/* Request bodies h2o buffers before our own size check answers 413 with a JSON body; larger
 * ones get h2o's plain 413 without being read into memory. */
#define PE_MAX_ENTITY_SLACK (1u << 20)
/* WebSocket output queued per connection before it is a slow consumer (closed with 1013); raised
 * to two maximal messages when --max-message-size is larger (edge/ws/ws.c). */
#define PE_WS_MAX_QUEUE (4u << 20)
/* Queued bytes above which a WebSocket subscriber's catch-up pauses (as for SSE). */
#define PE_WS_LOW_WATER (256u << 10)
/* Frames per writev. */
#define PE_WS_MAX_BATCH 256
/* Messages shorter than this are sent uncompressed even with permessage-deflate: deflate's
 * block overhead and CPU outweigh the saving on small JSON. */
#define PE_WS_DEFLATE_MIN 256
/* How long a server-initiated close waits for the peer's close frame before the TCP close. */
#define PE_WS_CLOSE_WAIT_MS 2000
/* WebSocket output queued (bytes, in flight included) past which the connection's input is no
 * longer read: every pong, op reply and echo is output the peer asked for, so a peer that sends
 * faster than it reads would otherwise grow the queue without bound (a ping flood grew the
 * server by ~125 MB/s). Reading resumes when the queue drains below it; TCP flow control then
 * holds the peer back. Large enough that a pipelining client is never paused for long. */
#define PE_WS_READ_PAUSE (64u << 10)
/* Bytes a WebSocket connection reads per wake-up. h2o's own read loop drains the whole kernel
 * receive buffer (autotuned up to tcp_rmem's maximum, 32 MiB on some hosts) into memory at
 * once, ahead of any pause; reading this much at a time keeps a flooding peer's input in the
 * kernel, where TCP flow control pushes back. */
#define PE_WS_READ_CHUNK (64u << 10)
/* Connections not counted as clients: descriptors kept free for what else the process opens
 * (Redis links and their reconnects, the event loops' epoll and wake-up descriptors, files read
 * at start, a log pipe). The default connection limit is RLIMIT_NOFILE minus this reserve, minus
 * PE_FD_RESERVE_PER_THREAD for each loop thread (its listeners, epoll, queues, Redis links). */
#define PE_FD_RESERVE 64
#define PE_FD_RESERVE_PER_THREAD 8
/* Connections past --max-connections still get a 503 with Retry-After (so a client knows to
 * back off rather than guessing at a reset) up to this share of the limit (1/16, at least 4, at
 * most 1024); past that they are closed right after accept(2). Both kinds hold a descriptor for
 * a moment, which is why the default limit leaves room for them. */
#define PE_CONN_SLACK_MIN 4
#define PE_CONN_SLACK_MAX 1024
/* How long a loop stops accepting after accept(2) failed for want of descriptors or memory
 * (EMFILE, ENFILE, ENOBUFS, ENOMEM). The evloop is level-triggered: retrying at once would spin
 * at 100% CPU while the connection stays in the backlog. */
#define PE_ACCEPT_PAUSE_MS 100
/* A TLS connection without TLS input or output for this long (checked once per period, so
 * between one and two periods) gives back OpenSSL's record buffers (~17 KiB each way) and h2o's
 * encrypted-input buffer (8 KiB); the next read or write allocates them again. Long enough
 * that a connection receiving a message every second or faster keeps them (no allocation per
 * write under fan-out), short enough that a connection gone idle costs the idle figure within
 * two seconds (docs/architecture.md "TLS memory"). */
#define PE_TLS_IDLE_RELEASE_MS 1000
/* A write on a TLS socket: runs of small pieces (iovecs up to PE_TLS_COALESCE_PIECE bytes) are
 * copied into one buffer per thread, up to a TLS record's payload (16 KiB) per run, because h2o
 * seals at least one record per iovec; larger pieces are records of their own anyway. The
 * buffer (PE_TLS_COALESCE_BYTES, per thread) bounds the copying of one write; what does not fit
 * goes as it is. */
#define PE_TLS_COALESCE_PIECE 2048
#define PE_TLS_COALESCE_RUN 16384
#define PE_TLS_COALESCE_BYTES (64u << 10)
/* Retry-After (seconds) on a refusal for want of room (connections, held polls). */
#define PE_RETRY_AFTER_FULL 5
/* How often each loop checks its held long-polls for clients that went away (HTTP/1 notices a
 * vanished client only when it writes, so a fire-and-forget poll would hold its descriptor for
 * --poll-timeout). One recv(MSG_PEEK) per held poll per period. */
#define PE_POLL_SWEEP_MS 1000
/* Peer-caused events logged at most once per this period per kind (a flood must not become a
 * log flood); the line says how many were not logged. */
#define PE_LOG_RATE_MS 10000
/* Buckets of the per-address connection table (--max-connections-per-ip); chained, so it only
 * sets the average chain length. */
#define PE_PER_IP_BUCKETS 4096
/* Request URL: 64 channel names of 200 characters, percent-encoded, plus a full cursor fit. */
#define PE_MAX_URL (48u << 10)
/* Request header bytes (names + values): cookies and tokens fit; more is abuse. */
#define PE_MAX_HEADER_BYTES (32u << 10)
/* Channels per node (--max-channels default). Anyone may name a channel by subscribing to it;
 * an empty channel costs ~250 bytes in the engine and per subscribed thread, so this bounds
 * what names alone can hold at a few hundred MiB while leaving room for per-user channels. */
#define PE_DEFAULT_MAX_CHANNELS 1000000
/* Refusals (401/403) logged per thread per window; the rest are counted in one line. */
#define PE_LOG_REFUSALS_PER_WINDOW 20
#define PE_LOG_REFUSAL_WINDOW_MS 10000
/* With --log-format json every refused request is an event line, up to this many per thread
 * per window (a log pipeline wants them all; a flood of bad requests must not become a flood of
 * blocking writes to stderr). */
#define PE_LOG_REFUSAL_EVENTS_PER_WINDOW 1000
/* POST /api/batch: items per request, and body bytes (or --max-message-size plus
 * PE_BATCH_ITEM_SLACK when that is larger, so one maximal message always fits with its channel
 * and key). A thousand small messages cover any realistic flush of a backend's outbox; the
 * answer (about 100 bytes per item) and the engine's pipeline stay small, and a batch is
 * answered well within the Redis engine's 3 s command timeout. The body limit stays below what
 * h2o buffers (--max-message-size + PE_MAX_ENTITY_SLACK), so an oversized batch gets our JSON
 * 413 up to that point. */
#define PE_BATCH_MAX_ITEMS 1000
#define PE_BATCH_MAX_BYTES (1u << 20)
#define PE_BATCH_ITEM_SLACK 4096
/* Bytes of X-Forwarded-For (and of Forwarded) read to find the client behind --trusted-proxy:
 * dozens of hops; a longer list makes the client unknown (not trusted) rather than costly. */
#define PE_MAX_FORWARDED 2048
/* --trusted-proxy networks: a deployment's few proxy subnets. */
#define PE_MAX_TRUSTED_PROXIES 32
/* --jwt-key files: a few rotating PEM keys or JWKS documents. */
#define PE_MAX_JWT_KEY_FILES 16
/* --public-channel patterns (as many as a token may carry, edge/identity/policy.h). */
#define PE_MAX_PUBLIC_CHANNELS 64
/* Descriptors front.c can follow (a table of pointers, touched only where used): beyond it a
 * connection goes without the head checks, so the limit sits above any sane RLIMIT_NOFILE. */
#define PE_FRONT_MAX_FDS (1u << 21)
/* Body bytes read and dropped after a refused request's answer before the connection is closed
 * (front.c drain): the rest of a typical message, so the peer reads the answer, not a reset. */
#define PE_FRONT_DRAIN_BYTES (4u << 20)
/* HTTP/2 requests without credentials front.c remembers per connection between two checks
 * (each is given one check to complete an empty body); more at once is refused at once. */
#define PE_FRONT_H2_SUSPECTS 16
/* Token deadlines (edge/core/deadline.c): a wheel of one-second slots per thread. A deadline
 * further away than the wheel's turn waits in its slot for the turns in between; 64 keeps the
 * wheel at 1 KiB per thread and each tick's walk to one slot. */
#define PE_DEADLINE_SLOTS 64
/* --auth required: a WebSocket that came without a token must send its auth op within this (ms),
 * else it is closed with 4001 (an anonymous connection can do nothing but hold a descriptor). */
#define PE_WS_AUTH_DEADLINE_MS 10000
/* POST /api/disconnect's reason, shown to the client: fits a WebSocket close frame's reason
 * (123 bytes, RFC 6455 5.5) with room to spare. */
#define PE_REVOKE_REASON_MAX 100
#endif

/*
 * thread.h: the per-thread and process-wide state every handler and transport shares. One
 * pe_thread_t per event-loop thread owns that thread's h2o context, listeners, pubsub node,
 * long-lived streams and counters (share-nothing: no other thread writes them; /metrics reads
 * counters with relaxed loads). pe_server_t is the process-wide, read-only-after-start part.
 * edge/server.c fills both in and runs the loops; thread.c keeps the registry of long-lived
 * streams that draining walks.
 */
#ifndef PE_THREAD_H
#define PE_THREAD_H

#include <pthread.h>
#include <h2o.h>
#include <h2o/multithread.h>
#include "pubsub/pubsub.h"
#include "pubsub/stats.h"
#include "edge/core/config.h"
#include "edge/core/conn_limit.h"
#include "edge/util/bounds.h"

typedef enum en_pe_transport_t { PE_TRANSPORT_SSE = 0, PE_TRANSPORT_WS, PE_TRANSPORT_POLL, PE_TRANSPORT_MAX } pe_transport_t;
extern const char *const pe_transport_names[PE_TRANSPORT_MAX];

/* Why a connection ended (pushedge_disconnects_total{reason}; docs/operations.md "Metrics"). */
typedef enum en_pe_end_reason_t {
    PE_END_NONE = 0,      /* not decided yet */
    PE_END_CLIENT_LEFT,   /* the peer closed, reset, or sent its close first */
    PE_END_SLOW_CONSUMER, /* its queue passed the bound, or its writes stopped progressing */
    PE_END_HEARTBEAT,     /* silent for two ping intervals */
    PE_END_DRAIN,         /* the node drains */
    PE_END_AUTH,          /* its token expired or was revoked */
    PE_END_LIMIT,         /* it passed a per-connection bound (a message over --max-message-size) */
    PE_END_ERROR,         /* a protocol violation or a failure on our side */
    PE_END_MAX
} pe_end_reason_t;
extern const char *const pe_end_reason_names[PE_END_MAX];

/*
 * Histograms kept as per-thread, non-cumulative bucket counts (the owning thread increments one
 * bucket per observation with a relaxed store, no read-modify-write atomics); /metrics sums the
 * threads and makes them cumulative. The last bucket is +Inf.
 */
#define PE_LATENCY_BUCKETS 15 /* finite bounds of the delivery-latency histogram */
extern const uint64_t pe_latency_bounds_us[PE_LATENCY_BUCKETS];
#define PE_DURATION_BUCKETS 11 /* finite bounds of the connection-duration histogram */
extern const uint64_t pe_duration_bounds_ms[PE_DURATION_BUCKETS];

/** The bucket of v: the first bound >= v, or n (+Inf). */
static inline unsigned
pe_hist_bucket(const uint64_t *bounds, unsigned n, uint64_t v)
{
    unsigned i = 0;
    while (i != n && v > bounds[i])
        ++i;
    return i;
}

/* Counters of one thread: written by that thread only (PE_STAT_ADD), read anywhere. */
typedef struct st_pe_thread_stats_t {
    uint64_t connections[PE_TRANSPORT_MAX]; /* gauge */
    uint64_t slow_consumers[PE_TRANSPORT_MAX];
    uint64_t disconnects[PE_TRANSPORT_MAX][PE_END_MAX];
    uint64_t latency[PE_TRANSPORT_MAX][PE_LATENCY_BUCKETS + 1]; /* publish accepted -> written */
    uint64_t latency_sum_us[PE_TRANSPORT_MAX];
    uint64_t duration[PE_TRANSPORT_MAX][PE_DURATION_BUCKETS + 1]; /* connection lifetimes */
    uint64_t duration_sum_ms[PE_TRANSPORT_MAX];
    uint64_t requests;
    uint64_t publish_errors;
    uint64_t loop_lag_ms;            /* worst timer lateness in the last second */
    uint64_t front_refused;          /* requests refused from their head (edge/front.c) */
    uint64_t tls_handshake_failures; /* edge/tls.c: handshakes that failed (garbage, versions, ciphers) */
    uint64_t tls_handshake_timeouts; /* edge/tls.c: handshakes not done within h2o's handshake timeout */
    uint64_t tls_idle_releases;      /* edge/tls.c: idle TLS connections that gave their buffers back */
} pe_thread_stats_t;

/* A revocation (POST /api/disconnect, edge/core/revoke.c): a user's connections, or only its
 * subscriptions to channels that pattern covers (NULL: all of them). Strings borrowed. */
typedef struct st_pe_revocation_t {
    const char *user;
    size_t user_len;
    const char *pattern; /* a valid pattern without {sub}, or NULL */
    size_t pattern_len;
    const char *reason; /* shown to the client: printable ASCII, at most PE_REVOKE_REASON_MAX bytes */
    size_t reason_len;
} pe_revocation_t;

/**
 * A long-lived response registered with its thread so that draining reaches it. Embedded in the
 * transport's object; linked while the response is open. Draining calls up into the transport
 * through `drain`, revocation through `revoke`.
 */
typedef struct st_pe_stream_t {
    h2o_linklist_t _link; /* in thr->streams, then in thr->drained_streams once told to leave */
    /* Tells the client to reconnect elsewhere, after drain_hint_ms, and ends the response (may
     * complete later). */
    void (*drain)(struct st_pe_stream_t *stream);
    /* Read-only for the transport: the reconnect hint (ms) the drain walk chose for this stream,
     * set before drain() is called (WebSocket close reason, SSE retry:, long-poll Retry-After). */
    unsigned drain_hint_ms;
    /* Applies a revocation if it names this stream's user: returns 1 if the stream lost access
     * (it ends, or lost channels), else 0. May unlink itself; must not free. NULL: never revoked. */
    int (*revoke)(struct st_pe_stream_t *stream, const pe_revocation_t *r);
} pe_stream_t;

typedef struct st_pe_server_t pe_server_t;

/* edge/front.c's per-thread state: the HTTP/2 connections it sweeps. */
typedef struct st_pe_front_thread_t {
    h2o_linklist_t h2; /* pe_front_t */
    h2o_timeout_entry_t sweep_entry;
} pe_front_thread_t;

/* The hold times a long-poll may ask for below --poll-timeout, in seconds: a few fixed steps
 * (pe_poll_short_seconds, fallback/poll.h), so each is one h2o timeout list per thread. */
#define PE_POLL_SHORT_STEPS 6

typedef struct st_pe_thread_t {
    h2o_context_t ctx; /* first: handlers recover the thread from req->conn->ctx */
    pe_server_t *server;
    unsigned index;
    h2o_evloop_t *loop;
    h2o_accept_ctx_t accept_ctx;
    /* Clear-text listeners first, then the TLS ones (index >= num_clear_listeners). */
    h2o_socket_t *listeners[2 * PE_MAX_LISTEN];
    int listen_fds[2 * PE_MAX_LISTEN];
    size_t num_listeners;
    size_t num_clear_listeners;
    /* edge/tls.c: this loop's reference to the context new TLS handshakes use, replaced on
     * this thread only when a reload notice arrives on tls_reload. */
    struct ssl_ctx_st *tls_ctx;
    h2o_multithread_receiver_t tls_reload;
    h2o_timeout_t tls_idle_timeout; /* PE_TLS_IDLE_RELEASE_MS: when idle TLS buffers are released */
    pe_ps_node_t *node;
    h2o_linklist_t streams;                        /* pe_stream_t not yet told to drain */
    h2o_linklist_t drained_streams;                /* pe_stream_t told to drain, still open */
    h2o_timeout_t ping_timeout;                    /* --ping-interval, for SSE heartbeats */
    h2o_timeout_t poll_timeout;                    /* --poll-timeout, for held long-polls */
    h2o_timeout_t poll_short[PE_POLL_SHORT_STEPS]; /* shorter holds clients ask for (?timeout=) */
    h2o_timeout_t lag_timeout;                     /* one second, measures loop lag */
    h2o_timeout_t ws_close_timeout;                /* PE_WS_CLOSE_WAIT_MS */
    h2o_timeout_t accept_pause_timeout;            /* PE_ACCEPT_PAUSE_MS */
    h2o_timeout_entry_t accept_pause_entry;
    h2o_timeout_t poll_sweep_timeout; /* PE_POLL_SWEEP_MS */
    h2o_timeout_entry_t poll_sweep_entry;
    h2o_linklist_t held_polls; /* HTTP/1 long-polls waiting, checked for departed clients (fallback/poll.c) */
    h2o_timeout_entry_t lag_entry;
    uint64_t lag_due;                   /* loop ms when lag_entry should fire */
    h2o_multithread_receiver_t control; /* drain and stop notices from the main thread */
    int draining;
    int stop;
    uint64_t drain_deadline; /* loop ms */
    /* Paced drain (server.c): the streams open when the drain began, how many were told so
     * far, when it began (loop ms), and the tick that tells the next batch. */
    size_t drain_total;
    size_t drain_told;
    uint64_t drain_started;
    h2o_timeout_t drain_tick_timeout; /* PE_DRAIN_TICK_MS */
    h2o_timeout_entry_t drain_tick;
    pthread_t tid;
    pe_thread_stats_t stats;
    pe_front_thread_t front;
    /* edge/core/deadline.c: token deadlines, a wheel of one-second slots ticked while not empty. */
    h2o_linklist_t deadline_slots[PE_DEADLINE_SLOTS];
    h2o_timeout_entry_t deadline_tick;
    uint64_t deadline_cursor_s; /* the second whose slot the next tick walks first */
    size_t deadline_count;      /* deadlines set */
    /* edge/core/revoke.c: revocations posted to this loop (by the endpoint's thread, or by the
     * engine's control channel on this thread), and answers to its own revocations. */
    h2o_multithread_receiver_t revoke;
} pe_thread_t;

struct st_pe_server_t {
    const pe_config_t *cfg;
    h2o_globalconf_t globalconf;
    pe_ps_engine_t *engine;
    pe_thread_t *threads;
    unsigned num_threads;
    h2o_iovec_t index_html; /* the demo page, read at start (no file I/O after boot) */
    h2o_iovec_t client_js;
    pthread_mutex_t setup_lock; /* with setup_cond: pe_server_start waits for every loop's setup */
    pthread_cond_t setup_cond;  /* also signals each loop's end to pe_server_join */
    unsigned num_setup;
    pe_limits_t limits;
    /* The TLS context of the start (edge/tls.c): each loop takes its own reference; NULL
     * without TLS listeners. */
    struct ssl_ctx_st *tls_ctx;
    unsigned num_done; /* loops that left their loop and parked (thread_main) */
    int leaving;       /* atomic: set at the first signal (pre-drain and drain): /readyz answers 503 */
    int draining;      /* set by the main thread before notifying the loops */
    int force_stop;
};

static inline pe_thread_t *
pe_thread_of(h2o_req_t *req)
{
    return (pe_thread_t *)req->conn->ctx;
}

/** Counts one delivery of transport t whose publish was accepted at accepted_us, written at now_us. */
static inline void
pe_stats_delivered(pe_thread_stats_t *st, pe_transport_t t, uint64_t accepted_us, uint64_t now_us)
{
    uint64_t v = now_us > accepted_us ? now_us - accepted_us : 0;
    PE_STAT_ADD(st->latency[t][pe_hist_bucket(pe_latency_bounds_us, PE_LATENCY_BUCKETS, v)], 1);
    PE_STAT_ADD(st->latency_sum_us[t], v);
}
/** Counts the end of a connection of transport t that lived ms milliseconds. */
static inline void
pe_stats_ended(pe_thread_stats_t *st, pe_transport_t t, pe_end_reason_t why, uint64_t ms)
{
    PE_STAT_ADD(st->disconnects[t][why], 1);
    PE_STAT_ADD(st->duration[t][pe_hist_bucket(pe_duration_bounds_ms, PE_DURATION_BUCKETS, ms)], 1);
    PE_STAT_ADD(st->duration_sum_ms[t], ms);
}

/** Links a long-lived stream into its thread's registry (draining walks it). */
void pe_stream_register(pe_thread_t *thr, pe_stream_t *stream);
/** Unlinks it; harmless when it is not linked. */
void pe_stream_unregister(pe_stream_t *stream);
/**
 * Tells at most n streams of thr not yet told (oldest first) to drain, each with a reconnect
 * hint from pe_stream_drain_hint(). Each moves to thr->drained_streams before its drain() runs,
 * so a drain() that unregisters its stream synchronously is fine. Returns how many were told.
 */
size_t pe_stream_drain_some(pe_thread_t *thr, size_t n, int paced);
/** Tells every stream of thr not yet told to drain (pe_stream_drain_some without a bound). */
void pe_stream_drain_all(pe_thread_t *thr);
/**
 * The reconnect hint for one client, in ms: random in [0, PE_DRAIN_HINT_JITTER_MS) when the
 * drain is paced, else in the wider unpaced range (edge/util/bounds.h).
 */
unsigned pe_stream_drain_hint(int paced);
/** The number of streams of thr not yet told to drain. */
size_t pe_stream_count(pe_thread_t *thr);
/** 1 if thr holds no open stream (told or not). */
int pe_stream_none_open(pe_thread_t *thr);

#endif

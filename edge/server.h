/*
 * server.h: the edge's internal header. One pe_thread_t per event-loop thread owns that
 * thread's h2o context, listeners, pubsub node, long-lived streams and counters (share-nothing:
 * no other thread writes them; /metrics reads counters with relaxed loads). pe_server_t is the
 * process-wide, read-only-after-start part.
 */
#ifndef PE_SERVER_H
#define PE_SERVER_H

#include <pthread.h>
#include <sys/socket.h>
#include <h2o.h>
#include <h2o/multithread.h>
#include "../pubsub/pubsub.h"
#include "config.h"
#include "limits.h"

typedef enum en_pe_transport_t { PE_TRANSPORT_SSE = 0, PE_TRANSPORT_WS, PE_TRANSPORT_POLL, PE_TRANSPORT_MAX } pe_transport_t;
extern const char *const pe_transport_names[PE_TRANSPORT_MAX];

/* Counters of one thread: written by that thread only (PE_STAT_ADD), read anywhere. */
typedef struct st_pe_thread_stats_t {
    uint64_t connections[PE_TRANSPORT_MAX]; /* gauge */
    uint64_t slow_consumers[PE_TRANSPORT_MAX];
    uint64_t requests;
    uint64_t publish_errors;
    uint64_t loop_lag_ms;   /* worst timer lateness in the last second */
    uint64_t front_refused; /* requests refused from their head (front.c) */
} pe_thread_stats_t;

#define PE_STAT_ADD(field, n) __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define PE_STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define PE_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/**
 * A long-lived response registered with its thread so that draining reaches it. Embedded in the
 * transport's object; linked while the response is open.
 */
typedef struct st_pe_stream_t {
    h2o_linklist_t _link;
    /* Tells the client to reconnect elsewhere and ends the response (may complete later). */
    void (*drain)(struct st_pe_stream_t *stream);
} pe_stream_t;

typedef struct st_pe_server_t pe_server_t;
typedef struct st_pe_front_t pe_front_t;

/* front.c's per-thread state: the HTTP/2 connections it sweeps. */
typedef struct st_pe_front_thread_t {
    h2o_linklist_t h2; /* pe_front_t */
    h2o_timeout_entry_t sweep_entry;
} pe_front_thread_t;

/* Why a connection or request was refused for want of room (pushedge_rejected_total{reason}). */
typedef enum en_pe_reject_t {
    PE_REJECT_CONNECTIONS = 0,
    PE_REJECT_CONNECTIONS_PER_IP,
    PE_REJECT_HELD_POLLS,
    PE_REJECT_MAX
} pe_reject_t;
extern const char *const pe_reject_names[PE_REJECT_MAX];

typedef struct st_pe_ip_entry_t pe_ip_entry_t;
typedef struct st_pe_limits_t pe_limits_t;
typedef struct st_pe_refusal_t {
    pe_limits_t *limits;
    pe_reject_t reason;
} pe_refusal_t;

/**
 * The node's connection and held-poll accounting (conn_limit.c), shared by the threads: the
 * counters are atomics, the per-address table has its own lock. Set up before the loops start.
 */
struct st_pe_limits_t {
    size_t max_connections; /* effective --max-connections */
    size_t slack;           /* refused with an answer up to max_connections + slack; closed past it */
    size_t max_per_ip;      /* 0: off */
    size_t max_held_polls;
    size_t open;                      /* atomic: accepted connections whose socket is not closed yet */
    size_t held_polls;                /* atomic */
    uint64_t rejected[PE_REJECT_MAX]; /* atomic */
    pe_refusal_t refusals[PE_REJECT_MAX];
    pthread_mutex_t ip_lock;
    pe_ip_entry_t **ip_buckets; /* PE_PER_IP_BUCKETS chains; NULL when max_per_ip is 0 */
};

/* The hold times a long-poll may ask for below --poll-timeout (fallback/poll.c), in seconds: a
 * few fixed steps, so each is one h2o timeout list per thread. */
#define PE_POLL_SHORT_STEPS 6
extern const unsigned pe_poll_short_seconds[PE_POLL_SHORT_STEPS];

typedef struct st_pe_thread_t {
    h2o_context_t ctx; /* first: handlers recover the thread from req->conn->ctx */
    pe_server_t *server;
    unsigned index;
    h2o_evloop_t *loop;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listeners[PE_MAX_LISTEN];
    int listen_fds[PE_MAX_LISTEN];
    size_t num_listeners;
    pe_ps_node_t *node;
    h2o_linklist_t streams;                        /* pe_stream_t */
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
    pthread_t tid;
    pe_thread_stats_t stats;
    pe_front_thread_t front;
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

/* server.c */
int pe_server_init(pe_server_t *server, const pe_config_t *cfg, pe_ps_engine_t *engine);
int pe_server_start(pe_server_t *server);
/** Asks every thread to drain (force == 0) or stop at once (force == 1). Thread-safe. */
void pe_server_notify(pe_server_t *server, int force);
/** Waits for every thread to leave its loop. The threads never end (they park, see
 * thread_main): the caller's return from main ends the process. */
void pe_server_join(pe_server_t *server);
void pe_server_dispose(pe_server_t *server);
void pe_stream_register(pe_thread_t *thr, pe_stream_t *stream);
void pe_stream_unregister(pe_stream_t *stream);

/* conn_limit.c */
/** Derives the effective limits from cfg and RLIMIT_NOFILE (call after raising it); logs them. */
void pe_limits_init(pe_limits_t *limits, const pe_config_t *cfg, unsigned threads);
void pe_limits_dispose(pe_limits_t *limits);
/**
 * Counts a socket just accepted and installs its close hook. Returns 0 to serve it, 1 to serve
 * it only with refusals (pe_limits_refuse_request answers its requests), -1 to close it now
 * (nothing was counted; the caller closes it).
 */
int pe_limits_on_accept(pe_limits_t *limits, h2o_socket_t *sock);
/** For a request on a connection refused at accept: answers 503 and returns 1; else returns 0. */
int pe_limits_refuse_request(h2o_req_t *req);
/** Counts a long-poll about to be held: 0, or -1 (counted as a rejection) when the node is full. */
int pe_limits_hold_poll(pe_limits_t *limits);
void pe_limits_release_poll(pe_limits_t *limits);

/* http.c: small response helpers */
/** Sends {"error":{"code":code,"message":message}} with the status. */
void pe_http_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message);
/** Sends a JSON body with the status and no-store caching. */
void pe_http_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len);
/** The query string after '?', or an empty vector. */
h2o_iovec_t pe_http_query(h2o_req_t *req);
/** Sends 405 with an Allow header. */
void pe_http_method_not_allowed(h2o_req_t *req, const char *allow);
/**
 * Adds the CORS response headers for the request's Origin under --allowed-origin (none when the
 * list is empty or the origin is not in it; Vary: Origin whenever a list is set). Call before
 * the response starts.
 */
void pe_http_cors(h2o_req_t *req);
/**
 * Answers an OPTIONS preflight: 204 with the CORS headers for an allowed origin, 403 with a JSON
 * error otherwise. Returns 0 if it answered, -1 if the request is not OPTIONS or no
 * --allowed-origin is set (the handler then answers 405).
 */
int pe_http_preflight(h2o_req_t *req, const char *methods);
/**
 * Answers 403 origin_not_allowed, readable by the refused page (its own origin in
 * Access-Control-Allow-Origin), so a browser client can tell a refusal from an outage.
 */
void pe_http_refuse_origin(h2o_req_t *req);
/** 1 if a WebSocket handshake's Origin passes --allowed-origin (or same origin, or no policy). */
int pe_http_origin_is_allowed(h2o_req_t *req);

/* http.c: who may publish (docs/security.md). One rule for every way in: HTTP publish and
 * batch, the WebSocket publish op, and the request-head check of front.c. */
typedef enum en_pe_auth_t {
    PE_AUTH_OK = 0,
    PE_AUTH_NO_KEY,       /* 401: --api-key is set and no Authorization: Bearer came */
    PE_AUTH_WRONG_KEY,    /* 403 */
    PE_AUTH_NOT_LOOPBACK, /* 403: no --api-key and the client is not on loopback */
    PE_AUTH_ORIGIN,       /* 403: a browser page of an origin that may not publish */
    PE_AUTH_MAX
} pe_auth_t;

/** The parts of a request the publish rule reads; values borrowed from the request. */
typedef struct st_pe_auth_view_t {
    h2o_iovec_t authorization, origin, host, sec_fetch_site;
    h2o_iovec_t forwarded_for; /* X-Forwarded-For lines joined with ',' (may be truncated: see len) */
    h2o_iovec_t forwarded;     /* Forwarded lines joined with ',' */
    int forwarded_truncated;   /* more than the view holds: the client address is unknown */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    char _buf[2][PE_MAX_FORWARDED];
} pe_auth_view_t;

/** Collects `name: value` into view (names lower-case); call once per header, in order. */
void pe_auth_view_add(pe_auth_view_t *view, const char *name, size_t name_len, const char *value, size_t value_len);
/** Fills view from an h2o request (any HTTP version). */
void pe_auth_view_from_req(h2o_req_t *req, pe_auth_view_t *view);
/** Applies --api-key, --allowed-origin and --trusted-proxy to view. Pure; any thread. */
pe_auth_t pe_auth_check(const pe_config_t *cfg, const pe_auth_view_t *view);
/** Sends the JSON error of a refusal (r != PE_AUTH_OK). */
void pe_auth_refuse(h2o_req_t *req, pe_auth_t r);
/** The publish endpoints' check: 0 if req may publish, else sends the error and returns -1. */
int pe_publish_authorize(h2o_req_t *req);
/** Constant-time comparison of a secret (the time depends on the lengths only). */
int pe_secret_equals(const char *a, size_t alen, const char *b, size_t blen);
/** A per-thread pseudo-random number, seeded from getrandom(2) (jitter, not secrets). */
uint32_t pe_rand(void);
/**
 * For sockets a transport took over from h2o (WebSocket, HTTP/1 SSE): drops what is in the read
 * buffer when `discard`, then gives an empty buffer back. h2o keeps it (8 KiB) for the socket's
 * life; a subscriber reads a few bytes a minute, so keeping it would be most of an idle
 * connection's memory. The next read allocates one again (evloop reserves before every read).
 */
void pe_socket_release_input(h2o_socket_t *sock, int discard);

/* front.c: request heads checked before h2o reads bodies (docs/security.md) */
/** Sizes the descriptor table from RLIMIT_NOFILE; once, before any thread accepts. */
int pe_front_init(void);
void pe_front_thread_init(pe_thread_t *thr);
/** Wraps an accepted plaintext socket's reads; call right after h2o_accept. */
void pe_front_attach(pe_thread_t *thr, h2o_socket_t *sock);
/**
 * First thing of the router for every request: answers (and returns 0) an HTTP/1 request whose
 * head front.c refused or whose framing is faulty, with Connection: close; otherwise -1.
 */
int pe_front_on_req(h2o_req_t *req);
/**
 * The framing rules (pure, for tests): `headers` are picohttpparser's phr_header of the head.
 * Returns 0 or a reason (> 0); *has_body says whether a body follows.
 */
int pe_front_check_framing(const char *head, size_t head_len, const void *headers, size_t num_headers, int minor_version,
                           int *has_body);

/* handlers */
int pe_publish_on_req(h2o_req_t *req);
int pe_batch_on_req(h2o_req_t *req); /* batch.c: POST /api/batch */
/* publish.c, shared with batch.c: each returns 0, or sends the error answer and returns -1. */
/** The Idempotency-Key header into *key ({NULL, 0} when absent); 400 if malformed or repeated. */
int pe_publish_idempotency_key(h2o_req_t *req, h2o_iovec_t *key);
int pe_sse_on_req(h2o_req_t *req);
int pe_ws_on_req(h2o_req_t *req, int echo);
int pe_poll_on_req(h2o_req_t *req); /* fallback/poll.c */
/* ws.c: broadcast frames built, [0] plain, [1] deflated (atomic, any thread). */
extern uint64_t pe_ws_frames_built[2];
int pe_ops_on_req(h2o_req_t *req, h2o_iovec_t path); /* health, metrics, static; -1 if not ours */

#endif

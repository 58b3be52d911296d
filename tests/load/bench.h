/*
 * bench.h: the types pushedge-bench's files share (see pushedge-bench.c for what the tool does).
 *
 * Threads share nothing but what is in this header: the immutable configuration (pb_config_t,
 * filled before any thread starts), the per-channel publish tally written by the publisher,
 * and each thread's pb_shared_t block of counters that the main thread reads while it waits.
 * Everything else (connections, read buffers, histograms) is private to its thread and merged by
 * the main thread only after pthread_join.
 */
#ifndef PB_BENCH_H
#define PB_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PB_MAX_THREADS 64
#define PB_MAX_PIDS 16
#define PB_MAX_SRC 256
#define PB_MAX_SUB_URLS 8
/* The duplicate detector keeps a 64-message window per connection (pb_conn_t.window). Publishes
 * on different keep-alive connections may be stored out of send order, by at most the number in
 * flight, so more publisher connections than the window would turn reordering into false
 * duplicates. */
#define PB_MAX_PUBLISHERS 64
/* --hist: messages (by seq, per channel) that get a latency histogram of their own; later ones
 * count in the overall histogram only. 64 x ~30 KiB per subscriber thread. */
#define PB_MAX_SEQ_HIST 64
/* A frame, line or response that does not fit here is a protocol error for the benchmark. */
#define PB_MAX_CARRY (4u << 20)
#define PB_READ_BUF (PB_MAX_CARRY + (1u << 20))

typedef enum { PB_WS, PB_WS_DEFLATE, PB_SSE, PB_POLL } pb_transport_t;

/* --role: one process does everything (both), or the work is split over processes that share a
 * --run-id and --channel-prefix (tests/load/scaleout.mjs): several "sub" processes, each under
 * its own descriptor limit, and one "pub" process. A sub process prints a ready line when its
 * connections are subscribed and learns how many messages to expect from its stdin. */
typedef enum { PB_ROLE_BOTH, PB_ROLE_SUB, PB_ROLE_PUB } pb_role_t;

/* The marker every payload embeds: "pe":"<seq>:<send_ns>:<run>" (seq per channel, send_ns from
 * CLOCK_MONOTONIC, run a random id so messages of an earlier run on the same channel are told
 * apart). */
#define PB_MARKER "\"pe\":\""
#define PB_MARKER_LEN (sizeof(PB_MARKER) - 1)

/* Immutable after main() has parsed the options; read by every thread. */
typedef struct st_pb_config_t {
    pb_transport_t transport;
    struct sockaddr_in target;
    char host_hdr[64]; /* "127.0.0.1:8080" for the Host header */
    /* Where subscribers connect, round-robin by connection index (--sub-url, repeatable; default:
     * the --url server). Publishing always goes to --url: with several nodes sharing an engine,
     * every message then crosses the engine to reach the other nodes' subscribers. */
    struct sockaddr_in sub_addr[PB_MAX_SUB_URLS];
    char sub_host_hdr[PB_MAX_SUB_URLS][64];
    uint8_t sub_tls[PB_MAX_SUB_URLS]; /* subscribe over TLS (https://, wss:// or --tls) */
    uint32_t nsub_urls;
    /* TLS subscribers (bench_tls.c). Publishing stays clear text: what is measured is the
     * fan-out to the subscribers, and the publisher's connections are few and long-lived. */
    int tls;                         /* at least one sub_tls */
    const char *tls_ca;              /* --tls-ca: verify the server against this CA file; NULL: no verification */
    const char *tls_sni;             /* --tls-sni: server name to send (and check with --tls-ca); NULL: none */
    int tls_resume;                  /* --tls-resume: reuse the thread's last session for new connections */
    int tls_version;                 /* --tls-version: 0 (1.2 or 1.3, negotiated), 12 or 13 */
    const char *tls_groups;          /* --tls-groups: key exchange groups, OpenSSL's list syntax; NULL: default */
    const char *sub_path, *pub_path; /* templates with {channel} */
    char **channel;                  /* names, [channels] */
    char **sub_target;               /* sub_path expanded per channel */
    char **pub_target;               /* pub_path expanded per channel */
    uint32_t connections, channels, threads, publishers, size;
    int64_t publish_channel; /* -1: round robin over the channels */
    /* --publish-redis: publish with FCALL pushedge_publish straight into this Redis instead of
     * the HTTP API (the server's publish path then costs it nothing). */
    int publish_redis;
    struct sockaddr_in redis_addr;
    uint64_t messages;
    double rate;                                        /* messages per second, 0: as fast as the publishers go */
    double connect_rate;                                /* connections per second over all threads */
    double connect_timeout;                             /* seconds for the whole connect phase */
    double drain_wait, settle, idle, duration, timeout; /* seconds */
    /* --churn S: every ready subscriber closes after a random 0.5 S .. 1.5 S and reconnects at
     * once, resuming from the last cursor it saw, so the same per-connection accounting still
     * proves nothing was lost or repeated across reconnects. 0: connections stay. */
    double churn;
    struct in_addr src[PB_MAX_SRC];
    uint32_t nsrc;
    pid_t pid[PB_MAX_PIDS];
    uint32_t npid;
    int ready_ack;   /* wait for the server to confirm the subscription (pushedge ws/sse) */
    uint32_t run_id; /* random (or --run-id), embedded in every marker */
    int verbose;
    pb_role_t role;
    /* --hist: the result carries the latency histogram (sparse) overall and for each of the
     * first seq_hists messages (seq below it); 0: quantiles only. */
    int hist;
    uint32_t seq_hists;
} pb_config_t;

/* Log-linear latency histogram in microseconds: values below 128 exactly, above with 7
 * significant bits (under 0.8% error), the way HdrHistogram does it. Owned by one thread. */
#define PB_HIST_BUCKETS (58 * 64 + 64)
typedef struct st_pb_hist_t {
    uint64_t count[PB_HIST_BUCKETS];
    uint64_t total, max;
} pb_hist_t;

/* Counters a subscriber thread publishes while running; read by the main thread. Aligned so
 * that two threads' blocks never share a cache line. */
typedef struct st_pb_shared_t {
    _Alignas(64) atomic_uint_fast64_t opened; /* connections that became ready */
    atomic_uint_fast64_t failed;              /* connections that never became ready */
    atomic_uint_fast64_t closed;              /* ready connections lost afterwards */
    atomic_uint_fast64_t unique;              /* first deliveries of this run's messages */
    atomic_uint_fast64_t last_rx_ns;          /* CLOCK_MONOTONIC of the last first delivery */
    atomic_uint_fast64_t last_ready_ns;       /* CLOCK_MONOTONIC of the last connection ready */
    atomic_uint_fast64_t reconnected;         /* --churn: resumed connections that became ready again */
    atomic_int connect_done;                  /* every connection of the thread is ready or failed */
} pb_shared_t;

/* What a subscriber thread reports after it has been joined. */
typedef struct st_pb_result_t {
    pb_hist_t hist;
    pb_hist_t *seq_hist; /* [pb_cfg->seq_hists] with --hist, else NULL; heap, owned by whoever holds the result */
    uint64_t unique, dup, foreign, skipped, lost, extra, protocol_errors, server_closes, deflated, deflate_refused;
    uint64_t churned, reconnected, retries,
        gaps; /* --churn: closes by us, resumes ready again, retries after a failure; gaps seen */
    uint64_t tls_handshakes, tls_resumed, tls_failed;    /* completed, of them abbreviated; failed */
    char tls_protocol[16], tls_cipher[64], tls_alpn[16]; /* of the first completed handshake */
} pb_result_t;

typedef struct st_pb_sub_thread_t pb_sub_thread_t;

/* Shared between main and the publisher thread. */
typedef struct st_pb_pub_state_t {
    atomic_int go;   /* set by main: connect and publish */
    atomic_int done; /* set by the publisher when every answer is in (or it gave up) */
    atomic_uint_fast64_t sent, ok, errors;
    atomic_uint_fast32_t *ok_per_channel; /* [channels]: 2xx answers, the expected count per subscriber */
    atomic_uint_fast64_t start_ns, end_ns;
} pb_pub_state_t;

extern const pb_config_t *pb_cfg;
extern atomic_int pb_stop;
extern pb_pub_state_t pb_pub;
extern atomic_uint_fast32_t *pb_ready_per_channel; /* [channels] ready subscribers, final once connect_done */

/* ---- bench_util.c ---- */
uint64_t pb_now_ns(void);
void pb_hist_add(pb_hist_t *h, uint64_t us);
void pb_hist_merge(pb_hist_t *dst, const pb_hist_t *src);
/** Prints the histogram as a JSON array of [bucket upper bound in us, count] for non-empty buckets. */
void pb_hist_print_sparse(const pb_hist_t *h);
/** The smallest recorded value v such that a fraction q of the samples are <= v (bucket upper bound, capped at max). */
uint64_t pb_hist_quantile(const pb_hist_t *h, double q);
void pb_sha1(const void *data, size_t len, uint8_t out[20]);
/** Writes the base64 of len bytes and a NUL to out (4 * ceil(len / 3) + 1 bytes); returns the length. */
size_t pb_base64(const uint8_t *in, size_t len, char *out);
/** memmem for a needle in a haystack that may hold NULs. */
const char *pb_find(const char *hay, size_t hay_len, const char *needle, size_t needle_len);
/**
 * Finds the end of an HTTP response head in buf. Returns the offset just past the blank line,
 * 0 when incomplete, -1 when malformed or larger than 16 KiB. Sets *status.
 */
long pb_http_head(const char *buf, size_t len, int *status);
/** Value of header name (case-insensitive) within a head, or NULL; *vlen gets its length. */
const char *pb_http_header(const char *head, size_t head_len, const char *name, size_t *vlen);
/** Sum of VmRSS in KiB over the configured pids; -1 if any could not be read. */
long pb_server_rss_kb(void);
/** CPU time (user + system, all threads) in microseconds summed over the configured pids; -1 if any could not be read. */
long long pb_server_cpu_us(void);
/** Expands {channel} in tmpl; returns malloc'ed text. */
char *pb_expand(const char *tmpl, const char *channel);
/** Parses the marker at p (just past PB_MARKER). Returns 1 for this run's message, 0 for another run's, -1 if malformed. */
int pb_parse_marker(const char *p, const char *end, uint32_t *seq, uint64_t *send_ns);
void pb_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *pb_malloc(size_t sz);
void *pb_realloc(void *p, size_t sz);

/* ---- bench_sub.c ---- */
/** Starts a subscriber thread owning connections idx, idx + threads, idx + 2 * threads... */
pb_sub_thread_t *pb_sub_start(uint32_t idx, pb_shared_t *shared);
/** Joins the thread (after pb_stop is set), fills *res and frees everything it owned. */
void pb_sub_join(pb_sub_thread_t *t, pb_result_t *res);

/* ---- bench_tls.c ---- */
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
/** A client context for one subscriber thread (none is shared: no lock between threads); dies on a bad --tls-ca. */
SSL_CTX *pb_tls_ctx_new(void);
/** The thread's last session to resume (--tls-resume), NULL: none yet. Owned by the context. */
SSL_SESSION *pb_tls_session(SSL_CTX *ctx);
void pb_tls_ctx_free(SSL_CTX *ctx);
/** A client connection on fd, with SNI and verification set up; NULL on failure. */
SSL *pb_tls_new(SSL_CTX *ctx, int fd, const struct sockaddr_in *peer);
/** Formats the pending OpenSSL error (or, without one, errno's text) into buf for a log line. */
const char *pb_tls_error(char *buf, size_t len, int ssl_err);

/* ---- bench_pub.c ---- */
int pb_pub_start(pthread_t *tid);

#endif

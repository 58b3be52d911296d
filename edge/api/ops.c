/*
 * ops.c: operational endpoints (/healthz, /readyz, /metrics) and the static web files (the demo
 * page at / and the JS client), which are read once at start and served from memory.
 *
 * Metrics are summed over threads at scrape time from per-thread counters; a scrape is rare, so
 * it pays the aggregation and the hot path pays nothing (no shared atomic counters).
 */
#include <stdarg.h>
#include "edge/api/ops.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include "edge/wire/wire.h"

typedef struct st_textbuf_t {
    h2o_mem_pool_t *pool;
    char *buf;
    size_t len, cap;
} textbuf_t;

static void put(textbuf_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
put(textbuf_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2 + (size_t)n;
        char *nbuf = h2o_mem_alloc_pool(t->pool, ncap);
        memcpy(nbuf, t->buf, t->len);
        t->buf = nbuf;
        t->cap = ncap;
    }
}

/* Sums one histogram over the threads: field(thr, t) is the bucket array of transport t. */
static void
put_histogram(textbuf_t *t, pe_server_t *server, const char *name, const char *help, const uint64_t *bounds, unsigned nbounds,
              double unit, size_t bucket_off, size_t sum_off, size_t row_stride)
{
    put(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int k = 0; k != PE_TRANSPORT_MAX; ++k) {
        uint64_t count = 0, sum = 0;
        uint64_t buckets[PE_LATENCY_BUCKETS > PE_DURATION_BUCKETS ? PE_LATENCY_BUCKETS + 1 : PE_DURATION_BUCKETS + 1] = {0};
        for (unsigned i = 0; i != server->num_threads; ++i) {
            const char *st = (const char *)&server->threads[i].stats;
            const uint64_t *row = (const uint64_t *)(st + bucket_off + (size_t)k * row_stride);
            for (unsigned b = 0; b <= nbounds; ++b)
                buckets[b] += __atomic_load_n(&row[b], __ATOMIC_RELAXED);
            sum += __atomic_load_n((const uint64_t *)(st + sum_off) + k, __ATOMIC_RELAXED);
        }
        for (unsigned b = 0; b <= nbounds; ++b) {
            count += buckets[b];
            if (b == nbounds)
                put(t, "%s_bucket{transport=\"%s\",le=\"+Inf\"} %llu\n", name, pe_transport_names[k], (unsigned long long)count);
            else
                put(t, "%s_bucket{transport=\"%s\",le=\"%g\"} %llu\n", name, pe_transport_names[k], bounds[b] * unit,
                    (unsigned long long)count);
        }
        put(t, "%s_sum{transport=\"%s\"} %.6f\n%s_count{transport=\"%s\"} %llu\n", name, pe_transport_names[k], sum * unit, name,
            pe_transport_names[k], (unsigned long long)count);
    }
}

/* The Round 2 metrics: disconnects by reason, delivery latency, connection lifetimes. */
static void
put_connection_metrics(textbuf_t *t, pe_server_t *server)
{
    put(t, "# HELP pushedge_disconnects_total Connections ended, by transport and reason (long-poll: only ends that were not an "
           "answer).\n# TYPE pushedge_disconnects_total counter\n");
    for (int k = 0; k != PE_TRANSPORT_MAX; ++k)
        for (int r = PE_END_NONE + 1; r != PE_END_MAX; ++r) {
            uint64_t n = 0;
            for (unsigned i = 0; i != server->num_threads; ++i)
                n += PE_STAT_GET(server->threads[i].stats.disconnects[k][r]);
            put(t, "pushedge_disconnects_total{transport=\"%s\",reason=\"%s\"} %llu\n", pe_transport_names[k],
                pe_end_reason_names[r], (unsigned long long)n);
        }
    put_histogram(t, server, "pushedge_delivery_latency_seconds",
                  "Live messages from publish accepted (by the engine) to written to the subscriber's socket.",
                  pe_latency_bounds_us, PE_LATENCY_BUCKETS, 1e-6, offsetof(pe_thread_stats_t, latency),
                  offsetof(pe_thread_stats_t, latency_sum_us), sizeof(((pe_thread_stats_t *)0)->latency[0]));
    put_histogram(t, server, "pushedge_connection_duration_seconds",
                  "Lifetimes of ended connections (long-poll: of each held request).", pe_duration_bounds_ms, PE_DURATION_BUCKETS,
                  1e-3, offsetof(pe_thread_stats_t, duration), offsetof(pe_thread_stats_t, duration_sum_ms),
                  sizeof(((pe_thread_stats_t *)0)->duration[0]));
}

/* What /readyz answers, and pushedge_ready exports: the engine is reachable and the node is not
 * leaving (pre-drain or drain). */
static int
is_ready(pe_server_t *server)
{
    return pe_ps_engine_is_ready(server->engine) && !__atomic_load_n(&server->leaving, __ATOMIC_RELAXED);
}

static void
send_metrics(h2o_req_t *req)
{
    pe_server_t *server = pe_thread_of(req)->server;
    textbuf_t t = {&req->pool, h2o_mem_alloc_pool(&req->pool, 4096), 0, 4096};
    uint64_t conns[PE_TRANSPORT_MAX] = {0}, slow[PE_TRANSPORT_MAX] = {0}, requests = 0, publish_errors = 0, refused = 0,
             tls_failed = 0, tls_timeouts = 0, tls_releases = 0;
    pe_ps_node_stats_t sum = {0};

    for (unsigned i = 0; i != server->num_threads; ++i) {
        pe_thread_t *thr = &server->threads[i];
        for (int k = 0; k != PE_TRANSPORT_MAX; ++k) {
            conns[k] += PE_STAT_GET(thr->stats.connections[k]);
            slow[k] += PE_STAT_GET(thr->stats.slow_consumers[k]);
        }
        requests += PE_STAT_GET(thr->stats.requests);
        publish_errors += PE_STAT_GET(thr->stats.publish_errors);
        refused += PE_STAT_GET(thr->stats.front_refused);
        tls_failed += PE_STAT_GET(thr->stats.tls_handshake_failures);
        tls_timeouts += PE_STAT_GET(thr->stats.tls_handshake_timeouts);
        tls_releases += PE_STAT_GET(thr->stats.tls_idle_releases);
        if (thr->node != NULL) {
            pe_ps_node_stats_t s;
            pe_ps_node_get_stats(thr->node, &s);
            sum.published += s.published;
            sum.replayed += s.replayed;
            sum.delivered += s.delivered;
            sum.gaps += s.gaps;
            sum.subscribers += s.subscribers;
            sum.channels += s.channels;
            for (unsigned k = 0; k != 3; ++k)
                sum.reads[k] += s.reads[k];
        }
    }

    put(&t, "# HELP pushedge_connections Open subscriber connections by transport.\n# TYPE pushedge_connections gauge\n");
    for (int k = 0; k != PE_TRANSPORT_MAX; ++k)
        put(&t, "pushedge_connections{transport=\"%s\"} %llu\n", pe_transport_names[k], (unsigned long long)conns[k]);
    put(&t, "# HELP pushedge_slow_consumers_total Subscribers ended for falling too far behind.\n"
            "# TYPE pushedge_slow_consumers_total counter\n");
    for (int k = 0; k != PE_TRANSPORT_MAX; ++k)
        put(&t, "pushedge_slow_consumers_total{transport=\"%s\"} %llu\n", pe_transport_names[k], (unsigned long long)slow[k]);
    put(&t,
        "# HELP pushedge_messages_published_total Messages stored through this node.\n"
        "# TYPE pushedge_messages_published_total counter\npushedge_messages_published_total %llu\n"
        "# HELP pushedge_publish_errors_total Publishes answered with an engine error.\n"
        "# TYPE pushedge_publish_errors_total counter\npushedge_publish_errors_total %llu\n"
        "# HELP pushedge_messages_delivered_total Messages handed to subscribers (catch-up and live).\n"
        "# TYPE pushedge_messages_delivered_total counter\npushedge_messages_delivered_total %llu\n"
        "# HELP pushedge_gaps_total Gap signals sent to subscribers.\n"
        "# TYPE pushedge_gaps_total counter\npushedge_gaps_total %llu\n"
        "# HELP pushedge_subscribers Subscribers on this node.\n"
        "# TYPE pushedge_subscribers gauge\npushedge_subscribers %llu\n"
        "# HELP pushedge_channels Channels with local subscribers, summed over threads.\n"
        "# TYPE pushedge_channels gauge\npushedge_channels %llu\n"
        "# HELP pushedge_http_requests_total HTTP requests received.\n"
        "# TYPE pushedge_http_requests_total counter\npushedge_http_requests_total %llu\n"
        "# HELP pushedge_refused_heads_total Requests refused from their head (framing, or a body without publish "
        "credentials).\n"
        "# TYPE pushedge_refused_heads_total counter\npushedge_refused_heads_total %llu\n"
        "# HELP pushedge_engine_ready 1 if the message engine is reachable.\n"
        "# TYPE pushedge_engine_ready gauge\npushedge_engine_ready{engine=\"%s\"} %d\n"
        "# HELP pushedge_draining 1 while the node drains for shutdown.\n"
        "# TYPE pushedge_draining gauge\npushedge_draining %d\n"
        "# HELP pushedge_ready 1 while /readyz answers 200 (engine reachable, not leaving).\n"
        "# TYPE pushedge_ready gauge\npushedge_ready %d\n",
        (unsigned long long)sum.published, (unsigned long long)publish_errors, (unsigned long long)sum.delivered,
        (unsigned long long)sum.gaps, (unsigned long long)sum.subscribers, (unsigned long long)sum.channels,
        (unsigned long long)requests, (unsigned long long)refused, pe_ps_engine_name(server->engine),
        pe_ps_engine_is_ready(server->engine), __atomic_load_n(&server->draining, __ATOMIC_RELAXED), is_ready(server));
    put(&t,
        "# HELP pushedge_catchup_reads_total History reads (catch-ups) by how they were answered: an engine read, the "
        "channel's recent-message cache, or the reply of a read in flight.\n"
        "# TYPE pushedge_catchup_reads_total counter\n"
        "pushedge_catchup_reads_total{source=\"engine\"} %llu\npushedge_catchup_reads_total{source=\"cache\"} %llu\n"
        "pushedge_catchup_reads_total{source=\"shared\"} %llu\n",
        (unsigned long long)sum.reads[PE_PS_READ_ENGINE], (unsigned long long)sum.reads[PE_PS_READ_CACHE],
        (unsigned long long)sum.reads[PE_PS_READ_SHARED]);
    put(&t,
        "# HELP pushedge_publish_replays_total Keyed publishes answered with the ID of an earlier one (nothing stored).\n"
        "# TYPE pushedge_publish_replays_total counter\npushedge_publish_replays_total %llu\n",
        (unsigned long long)sum.replayed);
    uint64_t idem_keys, idem_evictions;
    if (pe_ps_engine_idempotency_stats(server->engine, &idem_keys, &idem_evictions) == 0)
        put(&t,
            "# HELP pushedge_idempotency_keys Idempotency keys the memory engine holds.\n"
            "# TYPE pushedge_idempotency_keys gauge\npushedge_idempotency_keys %llu\n"
            "# HELP pushedge_idempotency_evictions_total Keys forgotten before their window ended (the table was full).\n"
            "# TYPE pushedge_idempotency_evictions_total counter\npushedge_idempotency_evictions_total %llu\n",
            (unsigned long long)idem_keys, (unsigned long long)idem_evictions);
    put(&t,
        "# HELP pushedge_ws_frames_built_total WebSocket broadcast frames built (once per message and encoding).\n"
        "# TYPE pushedge_ws_frames_built_total counter\n"
        "pushedge_ws_frames_built_total{encoding=\"plain\"} %llu\npushedge_ws_frames_built_total{encoding=\"deflate\"} %llu\n",
        (unsigned long long)__atomic_load_n(&pe_ws_frames_built[PE_WIRE_WS_KIND_PLAIN], __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&pe_ws_frames_built[PE_WIRE_WS_KIND_DEFLATE], __ATOMIC_RELAXED));
    put(&t,
        "# HELP pushedge_engine_channels Channels the engine holds in this process (memory engine; 0 on Redis).\n"
        "# TYPE pushedge_engine_channels gauge\npushedge_engine_channels %llu\n"
        "# HELP pushedge_max_channels The --max-channels bound (0: none).\n"
        "# TYPE pushedge_max_channels gauge\npushedge_max_channels %llu\n",
        (unsigned long long)pe_ps_engine_num_channels(server->engine), (unsigned long long)server->cfg->max_channels);
    const pe_limits_t *limits = &server->limits;
    put(&t,
        "# HELP pushedge_open_connections Accepted TCP connections not closed yet (every transport, refused ones included).\n"
        "# TYPE pushedge_open_connections gauge\npushedge_open_connections %zu\n"
        "# HELP pushedge_max_connections The connection limit (--max-connections or its default).\n"
        "# TYPE pushedge_max_connections gauge\npushedge_max_connections %zu\n"
        "# HELP pushedge_held_polls Long-polls held open.\n"
        "# TYPE pushedge_held_polls gauge\npushedge_held_polls %zu\n"
        "# HELP pushedge_max_held_polls The held long-poll limit (--max-held-polls or its default).\n"
        "# TYPE pushedge_max_held_polls gauge\npushedge_max_held_polls %zu\n"
        "# HELP pushedge_rejected_total Connections and requests refused for want of room, by limit.\n"
        "# TYPE pushedge_rejected_total counter\n",
        __atomic_load_n(&limits->open, __ATOMIC_RELAXED), limits->max_connections,
        __atomic_load_n(&limits->held_polls, __ATOMIC_RELAXED), limits->max_held_polls);
    for (int k = 0; k != PE_REJECT_MAX; ++k)
        put(&t, "pushedge_rejected_total{reason=\"%s\"} %llu\n", pe_reject_names[k],
            (unsigned long long)__atomic_load_n(&limits->rejected[k], __ATOMIC_RELAXED));
    put(&t,
        "# HELP pushedge_tls_handshake_failures_total TLS handshakes that failed (error) or did not finish in time (timeout).\n"
        "# TYPE pushedge_tls_handshake_failures_total counter\n"
        "pushedge_tls_handshake_failures_total{reason=\"error\"} %llu\npushedge_tls_handshake_failures_total{reason=\"timeout\"} "
        "%llu\n"
        "# HELP pushedge_tls_idle_releases_total TLS connections that gave their record buffers back after "
        "being idle for a second.\n"
        "# TYPE pushedge_tls_idle_releases_total counter\npushedge_tls_idle_releases_total %llu\n",
        (unsigned long long)tls_failed, (unsigned long long)tls_timeouts, (unsigned long long)tls_releases);
    put_connection_metrics(&t, server);
    put(&t, "# HELP pushedge_loop_lag_seconds Worst timer lateness of each event loop in the last second.\n"
            "# TYPE pushedge_loop_lag_seconds gauge\n");
    for (unsigned i = 0; i != server->num_threads; ++i)
        put(&t, "pushedge_loop_lag_seconds{thread=\"%u\"} %.3f\n", i, PE_STAT_GET(server->threads[i].stats.loop_lag_ms) / 1000.0);

    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, t.buf, t.len);
}

static void
send_static(h2o_req_t *req, h2o_iovec_t body, const char *type)
{
    if (body.base == NULL) {
        pe_http_error(req, 404, "Not Found", "not_found", "this file is not installed (see --web-root)");
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    h2o_send_inline(req, body.base, body.len);
}

int
pe_ops_on_req(h2o_req_t *req, h2o_iovec_t path)
{
    pe_server_t *server = pe_thread_of(req)->server;
    int is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
                 h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));

#define IS(lit) h2o_memis(path.base, path.len, H2O_STRLIT(lit))
    if (!(IS("/healthz") || IS("/readyz") || IS("/metrics") || IS("/") || IS("/index.html") || IS("/pushedge.js")))
        return -1;
    if (!is_get) {
        pe_http_method_not_allowed(req, "GET, HEAD");
        return 0;
    }
    if (IS("/healthz")) {
        pe_http_json(req, 200, "OK", H2O_STRLIT("{\"status\":\"ok\"}"));
    } else if (IS("/readyz")) {
        int leaving = __atomic_load_n(&server->leaving, __ATOMIC_RELAXED);
        if (is_ready(server))
            pe_http_json(req, 200, "OK", H2O_STRLIT("{\"status\":\"ready\"}"));
        else
            pe_http_error(req, 503, "Service Unavailable", "not_ready", leaving ? "draining" : pe_ps_err_unavailable);
    } else if (IS("/metrics")) {
        send_metrics(req);
    } else if (IS("/pushedge.js")) {
        /* The client is public code, like a script on a CDN: any page may import it (a module
         * import is a CORS request). What it then connects to is checked by --allowed-origin. */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, H2O_STRLIT("*"));
        send_static(req, server->client_js, "text/javascript; charset=utf-8");
    } else {
        send_static(req, server->index_html, "text/html; charset=utf-8");
    }
#undef IS
    return 0;
}

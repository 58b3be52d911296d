/*
 * http.c: response helpers shared by the handlers: JSON errors of the shape of docs/protocol.md,
 * the query string, and small socket and randomness helpers.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "edge/util/log.h"
#include "edge/util/bounds.h"
#include "edge/util/query.h"
#include "edge/core/http.h"
#include "pubsub/pubsub.h" /* pe_channel_is_valid, pe_ps_err_bad_channel */

void
pe_http_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, body, len);
}

/*
 * Refusals an operator must be able to see (a client whose origin or credentials are refused
 * retries quietly otherwise), bounded so that a flood of bad requests cannot turn into a flood
 * of log writes (stderr may be a pipe that blocks the loop when its reader falls behind): at
 * most `limit` per thread per PE_LOG_REFUSAL_WINDOW_MS, then one line saying how many were not
 * logged. Returns 1 if this refusal may be logged.
 */
static __thread uint64_t refusal_window_start;
static __thread unsigned refusals_logged, refusals_dropped;

static int
refusal_allowed(h2o_req_t *req, unsigned limit)
{
    uint64_t now = h2o_now(req->conn->ctx->loop);
    if (now - refusal_window_start >= PE_LOG_REFUSAL_WINDOW_MS) {
        if (refusals_dropped != 0)
            pe_log(PE_LOG_WARN, "http", "%u more refusals in the last %u s were not logged", refusals_dropped,
                   PE_LOG_REFUSAL_WINDOW_MS / 1000);
        refusal_window_start = now;
        refusals_logged = refusals_dropped = 0;
    }
    if (refusals_logged >= limit) {
        ++refusals_dropped;
        return 0;
    }
    ++refusals_logged;
    return 1;
}

/* The text line of a refused 401/403. */
static void
log_refusal(h2o_req_t *req, int status, const char *code)
{
    char peer[INET6_ADDRSTRLEN] = "?";
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len != 0 && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, peer, sizeof(peer));
    else if (len != 0 && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, peer, sizeof(peer));
    ssize_t oi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    h2o_iovec_t origin = oi >= 0 ? req->headers.entries[oi].value : h2o_iovec_init(H2O_STRLIT("-"));
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    pe_log(PE_LOG_WARN, "http", "refused %.*s %.*s from %s (Origin %.*s): %d %s", (int)req->method.len, req->method.base,
           (int)(path_len < 200 ? path_len : 200), req->path.base, peer, (int)(origin.len < 200 ? origin.len : 200), origin.base,
           status, code);
}

/* The structured line of a refused request (--log-format json: every one, at info). The URL
 * loses its token parameter: a JWT in a log is a credential anyone with the log can use. */
static void
log_refusal_event(h2o_req_t *req, int status, const char *code)
{
    pe_log_event_t e;
    pe_log_peer_t peer;
    char peer_text[PE_LOG_PEER_MAX];
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    pe_log_peer_set(&peer, (struct sockaddr *)&ss, len);
    size_t cap = req->path.len < 1024 ? req->path.len + 1 : 1025;
    char *path = h2o_mem_alloc_pool(&req->pool, cap);
    size_t path_len = pe_query_redact(req->path.base, req->path.len, path, cap);
    ssize_t oi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    pe_log_event_begin(&e, "http", "refused");
    pe_log_event_uint(&e, "status", (uint64_t)status);
    pe_log_event_str(&e, "code", code, strlen(code));
    pe_log_event_str(&e, "method", req->method.base, req->method.len < 32 ? req->method.len : 32);
    pe_log_event_str(&e, "path", path, path_len);
    pe_log_event_str(&e, "peer", peer_text, pe_log_peer_format(&peer, peer_text));
    if (oi >= 0)
        pe_log_event_str(&e, "origin", req->headers.entries[oi].value.base,
                         req->headers.entries[oi].value.len < 200 ? req->headers.entries[oi].value.len : 200);
    pe_log_event_end(&e);
}

void
pe_http_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message)
{
    int json = pe_log_format == PE_LOG_FORMAT_JSON, events = pe_log_events_enabled(), denied = status == 401 || status == 403;
    if ((events || (denied && !json)) &&
        refusal_allowed(req, json ? PE_LOG_REFUSAL_EVENTS_PER_WINDOW : PE_LOG_REFUSALS_PER_WINDOW)) {
        if (events)
            log_refusal_event(req, status, code);
        if (denied && !json)
            log_refusal(req, status, code);
    }
    /* jansson escapes the message; the code is one of our own snake_case constants. */
    json_t *root = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = root != NULL ? json_dumps(root, JSON_COMPACT) : NULL;
    if (text != NULL) {
        pe_http_json(req, status, reason, text, strlen(text));
    } else {
        static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}";
        pe_http_json(req, status, reason, fallback, sizeof(fallback) - 1);
    }
    free(text);
    json_decref(root);
}

long
pe_http_query_channel(h2o_req_t *req, char **channel)
{
    h2o_iovec_t qs = pe_http_query(req);
    char *buf = h2o_mem_alloc_pool(&req->pool, qs.len + 1);
    long len = pe_query_get(qs.base, qs.len, "channel", buf);
    if (len == -1) {
        pe_http_error(req, 400, "Bad Request", "missing_channel", "the channel query parameter is required");
        return -1;
    }
    if (len < 0 || !pe_channel_is_valid(buf, (size_t)len)) {
        pe_http_error(req, 400, "Bad Request", "bad_channel", pe_ps_err_bad_channel);
        return -1;
    }
    buf[len] = '\0';
    *channel = buf;
    return len;
}

void
pe_http_method_not_allowed(h2o_req_t *req, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    pe_http_error(req, 405, "Method Not Allowed", "method_not_allowed", "method not allowed");
}

h2o_iovec_t
pe_http_query(h2o_req_t *req)
{
    if (req->query_at == SIZE_MAX)
        return h2o_iovec_init(NULL, 0);
    return h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
}

void (*pe_socket_release_tls_input)(h2o_socket_t *sock);

void
pe_socket_release_input(h2o_socket_t *sock, int discard)
{
    if (sock->ssl != NULL && pe_socket_release_tls_input != NULL)
        pe_socket_release_tls_input(sock);
    if (discard)
        h2o_buffer_consume(&sock->input, sock->input->size);
    if (sock->input->size == 0 && sock->input->bytes != NULL) {
        h2o_buffer_dispose(&sock->input);
        h2o_buffer_init(&sock->input, &h2o_socket_buffer_prototype);
    }
}

uint32_t
pe_rand(void)
{
    /* xorshift32 per thread: drain hints only need to differ between clients and between starts. */
    static __thread uint32_t state;
    while (state == 0) {
        if (getrandom(&state, sizeof(state), 0) != sizeof(state))
            state = (uint32_t)time(NULL) ^ ((uint32_t)getpid() << 16) ^ (uint32_t)(uintptr_t)&state;
    }
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

struct st_pe_http_weak_req_t {
    h2o_req_t **weak; /* NULL once dropped */
};

static void
on_weak_req_dispose(void *p)
{
    pe_http_weak_req_t *ref = p;
    if (ref->weak != NULL)
        *ref->weak = NULL;
}

pe_http_weak_req_t *
pe_http_weak_req(h2o_req_t *req, h2o_req_t **weak)
{
    pe_http_weak_req_t *ref = h2o_mem_alloc_shared(&req->pool, sizeof(*ref), on_weak_req_dispose);
    ref->weak = weak;
    *weak = req;
    return ref;
}

void
pe_http_weak_req_drop(pe_http_weak_req_t *ref)
{
    ref->weak = NULL;
}

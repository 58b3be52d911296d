/*
 * http.c: response helpers shared by the handlers: JSON errors of the shape of docs/protocol.md,
 * the query string, the cross-origin policy of --allowed-origin (CORS headers, preflights, the
 * WebSocket Origin check), and small socket and randomness helpers.
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
#include "edge/core/http.h"
#include "edge/core/thread.h"

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
 * retries quietly otherwise): one line per refusal, at most PE_LOG_REFUSALS_PER_WINDOW per
 * thread per PE_LOG_REFUSAL_WINDOW_MS, then one line saying how many were not logged.
 */
static __thread uint64_t refusal_window_start;
static __thread unsigned refusals_logged, refusals_dropped;

static void
log_refusal(h2o_req_t *req, int status, const char *code)
{
    uint64_t now = h2o_now(req->conn->ctx->loop);
    if (now - refusal_window_start >= PE_LOG_REFUSAL_WINDOW_MS) {
        if (refusals_dropped != 0)
            pe_log(PE_LOG_WARN, "http", "%u more refusals in the last %u s were not logged", refusals_dropped,
                   PE_LOG_REFUSAL_WINDOW_MS / 1000);
        refusal_window_start = now;
        refusals_logged = refusals_dropped = 0;
    }
    if (refusals_logged == PE_LOG_REFUSALS_PER_WINDOW) {
        ++refusals_dropped;
        return;
    }
    ++refusals_logged;
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

void
pe_http_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message)
{
    if (status == 401 || status == 403)
        log_refusal(req, status, code);
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

/* ---- cross-origin requests ------------------------------------------------------------------- */

/* Returns the allowed value for Access-Control-Allow-Origin ("*" or the origin itself), or NULL
 * when the request has no Origin or the origin is not allowed. */
static const char *
allowed_origin(h2o_req_t *req, h2o_iovec_t *origin)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (i < 0 || cfg->num_allowed_origins == 0)
        return NULL;
    *origin = req->headers.entries[i].value;
    for (size_t j = 0; j != cfg->num_allowed_origins; ++j) {
        const char *o = cfg->allowed_origins[j];
        if (strcmp(o, "*") == 0)
            return o;
        /* Origins compare exactly (RFC 6454 5), but browsers lower-case scheme and host. */
        if (strlen(o) == origin->len && h2o_lcstris(origin->base, origin->len, o, origin->len))
            return o;
    }
    return NULL;
}

void
pe_http_cors(h2o_req_t *req)
{
    h2o_iovec_t origin;
    const char *allowed = allowed_origin(req, &origin);
    /* The answer depends on Origin whenever a list is configured: caches must key on it. */
    if (pe_thread_of(req)->server->cfg->num_allowed_origins != 0)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
    if (allowed == NULL)
        return;
    if (strcmp(allowed, "*") == 0)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, H2O_STRLIT("*"));
    else
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, origin.base, origin.len);
}

int
pe_http_preflight(h2o_req_t *req, const char *methods)
{
    /* Without a policy an OPTIONS request is the handler's business (405). */
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) ||
        pe_thread_of(req)->server->cfg->num_allowed_origins == 0)
        return -1;
    h2o_iovec_t origin;
    if (allowed_origin(req, &origin) == NULL) {
        pe_http_cors(req); /* Vary */
        pe_http_error(req, 403, "Forbidden", "origin_not_allowed", "this origin is not in --allowed-origin");
        return 0;
    }
    pe_http_cors(req);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-methods"), 0, NULL, methods,
                          strlen(methods));
    /* Last-Event-ID: EventSource's reconnect; Authorization, Content-Type and Idempotency-Key:
     * publishing. */
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                          H2O_STRLIT("Last-Event-ID, Cache-Control, Content-Type, Authorization, Idempotency-Key"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-max-age"), 0, NULL,
                          H2O_STRLIT(H2O_TO_STR(PE_CORS_MAX_AGE)));
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, NULL, 0);
    return 0;
}

int
pe_http_origin_is_allowed(h2o_req_t *req)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (cfg->num_allowed_origins == 0 || i < 0)
        return 1; /* no policy, or not a browser */
    h2o_iovec_t origin;
    if (allowed_origin(req, &origin) != NULL)
        return 1;
    /* Same origin: the Origin's host[:port] is the Host the browser connected to. */
    h2o_iovec_t o = req->headers.entries[i].value;
    const char *sep = memchr(o.base, ':', o.len);
    if (sep != NULL && (size_t)(o.base + o.len - sep) > 3 && sep[1] == '/' && sep[2] == '/') {
        const char *host = sep + 3;
        size_t host_len = o.base + o.len - host;
        return req->authority.len == host_len && h2o_lcstris(req->authority.base, host_len, host, host_len);
    }
    return 0;
}

void
pe_http_refuse_origin(h2o_req_t *req)
{
    /* The refusal itself is readable by the refused page (it says nothing about the resource),
     * so its client can tell "not allowed" from "unreachable" and stop retrying. */
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (i >= 0) {
        h2o_iovec_t o = req->headers.entries[i].value;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, o.base, o.len);
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
    pe_http_error(req, 403, "Forbidden", "origin_not_allowed", "this origin is not in --allowed-origin");
}

void
pe_socket_release_input(h2o_socket_t *sock, int discard)
{
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

/*
 * http.c: response helpers shared by the handlers: JSON errors of CONTRACT.md's shape, the
 * query string, the cross-origin policy of --allowed-origin (CORS headers, preflights, the
 * WebSocket Origin check), and who may publish (API key, origin, loopback behind
 * --trusted-proxy; docs/security.md).
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "server.h"

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

/* ---- who may publish ------------------------------------------------------------------------- */

int
pe_secret_equals(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Every byte of a is visited whatever matched, so the time reveals the lengths at most. */
    unsigned char diff = alen != blen;
    for (size_t i = 0; i != alen; ++i)
        diff |= (unsigned char)(a[i] ^ b[i % (blen == 0 ? 1 : blen)]);
    return diff == 0 && blen != 0;
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

static void
view_append(pe_auth_view_t *view, h2o_iovec_t *dst, char *buf, const char *value, size_t len)
{
    size_t need = (dst->len != 0 ? 1 : 0) + len;
    if (dst->len + need > PE_MAX_FORWARDED) {
        view->forwarded_truncated = 1;
        return;
    }
    if (dst->len != 0)
        buf[dst->len++] = ',';
    memcpy(buf + dst->len, value, len);
    dst->len += len;
    dst->base = buf;
}

void
pe_auth_view_add(pe_auth_view_t *view, const char *name, size_t name_len, const char *value, size_t value_len)
{
    h2o_iovec_t v = h2o_iovec_init(value, value_len);
#define NAME_IS(lit) h2o_memis(name, name_len, H2O_STRLIT(lit))
    if (NAME_IS("authorization"))
        view->authorization = v;
    else if (NAME_IS("origin"))
        view->origin = v;
    else if (NAME_IS("host"))
        view->host = v;
    else if (NAME_IS("sec-fetch-site"))
        view->sec_fetch_site = v;
    else if (NAME_IS("x-forwarded-for"))
        view_append(view, &view->forwarded_for, view->_buf[0], value, value_len);
    else if (NAME_IS("forwarded"))
        view_append(view, &view->forwarded, view->_buf[1], value, value_len);
#undef NAME_IS
}

void
pe_auth_view_from_req(h2o_req_t *req, pe_auth_view_t *view)
{
    memset(view, 0, offsetof(pe_auth_view_t, _buf));
    for (size_t i = 0; i != req->headers.size; ++i) {
        const h2o_header_t *h = req->headers.entries + i;
        pe_auth_view_add(view, h->name->base, h->name->len, h->value.base, h->value.len);
    }
    /* HTTP/1 moves Host into authority; HTTP/2 has :authority there. */
    view->host = req->authority;
    view->peer_len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&view->peer);
}

static int
addr_of_sockaddr(const struct sockaddr_storage *ss, socklen_t len, unsigned char out[16])
{
    if (len == 0)
        return -1;
    if (ss->ss_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

static int
addr_is_loopback(const unsigned char a[16])
{
    static const unsigned char v6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, v6, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
}

static int
addr_is_trusted_proxy(const pe_config_t *cfg, const unsigned char a[16])
{
    for (size_t i = 0; i != cfg->num_trusted_proxies; ++i)
        if (pe_cidr_contains(&cfg->trusted_nets[i], a))
            return 1;
    return 0;
}

/* One hop of a forwarding list, trimmed: an X-Forwarded-For entry ("1.2.3.4", "::1") or a
 * Forwarded element's for= value ("1.2.3.4", "\"[::1]:80\"", "1.2.3.4:80"). */
static int
parse_hop(const char *s, size_t len, int is_forwarded, unsigned char out[16])
{
    while (len != 0 && (*s == ' ' || *s == '\t'))
        ++s, --len;
    while (len != 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        --len;
    if (is_forwarded) {
        /* the for= parameter of this element (parameters are separated by ';') */
        const char *p = s, *end = s + len, *value = NULL;
        size_t vlen = 0;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p)), *pe = semi != NULL ? semi : end;
            while (p < pe && (*p == ' ' || *p == '\t'))
                ++p;
            if (pe - p > 4 && h2o_lcstris(p, 4, H2O_STRLIT("for="))) {
                value = p + 4;
                vlen = (size_t)(pe - value);
                while (vlen != 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
                    --vlen;
            }
            p = pe + 1;
        }
        if (value == NULL)
            return -1;
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"')
            ++value, vlen -= 2;
        s = value;
        len = vlen;
        if (len != 0 && *s == '[') {
            const char *close = memchr(s, ']', len);
            if (close == NULL)
                return -1;
            return pe_config_parse_ip(s + 1, (size_t)(close - s - 1), out);
        }
        /* "1.2.3.4:port" */
        const char *colon = memchr(s, ':', len);
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(s + len - colon - 1)) == NULL)
            len = (size_t)(colon - s);
    }
    return pe_config_parse_ip(s, len, out);
}

/*
 * The client's address is loopback. Without --trusted-proxy (or from a peer outside it) the
 * client is the peer. From a trusted proxy it is the nearest hop of X-Forwarded-For (else
 * Forwarded) that is not itself a trusted proxy, read right to left: the proxy appends the
 * address it saw, so entries left of it are whatever the client wrote and prove nothing.
 * Every hop being a trusted proxy means the request started on one of them: the leftmost.
 * A missing, malformed or oversized list makes the client unknown, which is not loopback.
 */
static int
client_is_loopback(const pe_config_t *cfg, const pe_auth_view_t *view)
{
    unsigned char addr[16];
    if (addr_of_sockaddr(&view->peer, view->peer_len, addr) != 0)
        return 0;
    if (!addr_is_trusted_proxy(cfg, addr))
        return addr_is_loopback(addr);
    int is_forwarded = view->forwarded_for.len == 0;
    h2o_iovec_t list = is_forwarded ? view->forwarded : view->forwarded_for;
    if (list.len == 0 || view->forwarded_truncated)
        return 0;
    const char *end = list.base + list.len;
    while (end > list.base) {
        const char *start = end;
        while (start > list.base && start[-1] != ',')
            --start;
        if (parse_hop(start, (size_t)(end - start), is_forwarded, addr) != 0)
            return 0;
        if (!addr_is_trusted_proxy(cfg, addr))
            return addr_is_loopback(addr);
        end = start > list.base ? start - 1 : start;
    }
    return addr_is_loopback(addr);
}

/* "localhost", "127.x.y.z" or "[::1]", with an optional port: names a DNS-rebinding page
 * cannot take, so an Origin equal to such a Host is the server's own page. */
static int
host_is_loopback_name(const char *h, size_t len)
{
    const char *colon = NULL;
    if (len != 0 && h[0] == '[') {
        const char *close = memchr(h, ']', len);
        return close != NULL && h2o_memis(h, (size_t)(close - h + 1), H2O_STRLIT("[::1]"));
    }
    colon = memchr(h, ':', len);
    size_t hl = colon != NULL ? (size_t)(colon - h) : len;
    if (hl == 9 && strncasecmp(h, "localhost", 9) == 0)
        return 1;
    unsigned char addr[16];
    return pe_config_parse_ip(h, hl, addr) == 0 && addr_is_loopback(addr) && memchr(h, '.', hl) != NULL;
}

static int
origin_may_publish(const pe_config_t *cfg, const pe_auth_view_t *view)
{
    h2o_iovec_t o = view->origin;
    if (o.base == NULL) {
        /* Browsers send Origin on every POST and WebSocket handshake; a fetch metadata header
         * saying another site without one is not a case to trust. */
        h2o_iovec_t s = view->sec_fetch_site;
        return !(h2o_memis(s.base, s.len, H2O_STRLIT("cross-site")) || h2o_memis(s.base, s.len, H2O_STRLIT("same-site")));
    }
    for (size_t j = 0; j != cfg->num_allowed_origins; ++j) {
        const char *a = cfg->allowed_origins[j];
        if (strcmp(a, "*") == 0 || (strlen(a) == o.len && h2o_lcstris(o.base, o.len, a, o.len)))
            return 1;
    }
    /* The server's own page: Origin is "scheme://" + Host, and Host a loopback name. */
    const char *sep = memchr(o.base, ':', o.len);
    if (sep == NULL || (size_t)(o.base + o.len - sep) <= 3 || sep[1] != '/' || sep[2] != '/')
        return 0;
    const char *host = sep + 3;
    size_t host_len = (size_t)(o.base + o.len - host);
    return view->host.len == host_len && strncasecmp(view->host.base, host, host_len) == 0 && host_is_loopback_name(host, host_len);
}

pe_auth_t
pe_auth_check(const pe_config_t *cfg, const pe_auth_view_t *view)
{
    if (!origin_may_publish(cfg, view))
        return PE_AUTH_ORIGIN;
    if (cfg->api_key == NULL)
        return client_is_loopback(cfg, view) ? PE_AUTH_OK : PE_AUTH_NOT_LOOPBACK;
    h2o_iovec_t v = view->authorization;
    if (v.base == NULL)
        return PE_AUTH_NO_KEY;
    if (v.len < 7 || !h2o_lcstris(v.base, 7, H2O_STRLIT("bearer ")) ||
        !pe_secret_equals(v.base + 7, v.len - 7, cfg->api_key, strlen(cfg->api_key)))
        return PE_AUTH_WRONG_KEY;
    return PE_AUTH_OK;
}

void
pe_auth_refuse(h2o_req_t *req, pe_auth_t r)
{
    switch (r) {
    case PE_AUTH_NO_KEY:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
        pe_http_error(req, 401, "Unauthorized", "unauthorized", "an Authorization: Bearer header is required");
        break;
    case PE_AUTH_WRONG_KEY:
        pe_http_error(req, 403, "Forbidden", "forbidden", "wrong API key");
        break;
    case PE_AUTH_NOT_LOOPBACK:
        pe_http_error(req, 403, "Forbidden", "forbidden", "publishing is allowed from loopback peers only (set --api-key)");
        break;
    default:
        pe_http_refuse_origin(req);
        break;
    }
}

int
pe_publish_authorize(h2o_req_t *req)
{
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    pe_auth_t r = pe_auth_check(pe_thread_of(req)->server->cfg, &view);
    if (r == PE_AUTH_OK)
        return 0;
    pe_auth_refuse(req, r);
    return -1;
}

/*
 * cors.c: the cross-origin policy of --allowed-origin (docs/protocol.md "Cross-origin requests
 * (CORS)"): response headers (credentials only for origins listed by name), preflights, the
 * readable refusal, the WebSocket Origin check, and the origin check of requests whose token is
 * the cookie (cross-site WebSocket hijacking and its SSE / poll equivalents, docs/auth.md).
 */
#include <string.h>
#include "edge/core/cors.h"
#include "edge/core/http.h"
#include "edge/core/thread.h"
#include "edge/identity/policy.h"

/* Returns the allowed value for Access-Control-Allow-Origin ("*" or the origin itself), or NULL
 * when the request has no Origin or the origin is not allowed. An origin listed by name wins
 * over "*" wherever they stand in the list (*explicit set): only a named origin may be sent
 * credentials (pe_http_cors_credentials). */
static const char *
allowed_origin_ex(h2o_req_t *req, h2o_iovec_t *origin, int *explicit)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    *explicit = 0;
    if (i < 0 || cfg->num_allowed_origins == 0)
        return NULL;
    *origin = req->headers.entries[i].value;
    const char *star = NULL;
    for (size_t j = 0; j != cfg->num_allowed_origins; ++j) {
        const char *o = cfg->allowed_origins[j];
        if (strcmp(o, "*") == 0) {
            star = o;
            continue;
        }
        /* Origins compare exactly (RFC 6454 5), but browsers lower-case scheme and host. */
        if (strlen(o) == origin->len && h2o_lcstris(origin->base, origin->len, o, origin->len)) {
            *explicit = 1;
            return o;
        }
    }
    return star;
}

static const char *
allowed_origin(h2o_req_t *req, h2o_iovec_t *origin)
{
    int explicit;
    return allowed_origin_ex(req, origin, &explicit);
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

void
pe_http_cors_credentials(h2o_req_t *req)
{
    /* Only with identity on (cookies mean nothing otherwise) and only for an origin listed by
     * name: "*" with credentials is refused by browsers, and reflecting any Origin with them
     * would let every site read what the user's cookie opens. */
    if (pe_thread_of(req)->server->cfg->auth_mode == PE_AUTH_MODE_OFF)
        return;
    h2o_iovec_t origin;
    int explicit;
    if (allowed_origin_ex(req, &origin, &explicit) != NULL && explicit)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-credentials"), 0, NULL,
                              H2O_STRLIT("true"));
}

int
pe_http_preflight(h2o_req_t *req, const char *methods, int credentials)
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
    if (credentials)
        pe_http_cors_credentials(req);
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

static int
origin_check(h2o_req_t *req, int strict)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
    if (i < 0 && strict) {
        /* Browsers send Origin on every WebSocket handshake and CORS request, not on a no-cors
         * one (an <img> or <script> of another site's page pointing here). Fetch metadata,
         * where sent, tells those apart from a tool or the user's own address bar. */
        ssize_t s = h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-fetch-site"), -1);
        if (s < 0)
            return 1;
        h2o_iovec_t v = req->headers.entries[s].value;
        return !(h2o_memis(v.base, v.len, H2O_STRLIT("cross-site")) || h2o_memis(v.base, v.len, H2O_STRLIT("same-site")));
    }
    if (i < 0 || (cfg->num_allowed_origins == 0 && !strict))
        return 1; /* not a browser, or no policy */
    /* A cookie's request needs its origin listed by name: "*" lets any page read what anyone
     * may read, not act as the user whose cookie the browser adds. */
    h2o_iovec_t origin;
    int explicit;
    if (cfg->num_allowed_origins != 0 && allowed_origin_ex(req, &origin, &explicit) != NULL && (explicit || !strict))
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

int
pe_http_origin_is_allowed(h2o_req_t *req)
{
    return origin_check(req, 0);
}

int
pe_http_origin_is_allowed_with_cookie(h2o_req_t *req)
{
    /* Cross-site WebSocket hijacking: browsers send cookies on cross-site WebSocket handshakes
     * and WebSocket has no CORS, so the Origin is the only thing that tells the user's own page
     * from another site's. */
    return origin_check(req, 1);
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
pe_http_refuse_cookie_origin(h2o_req_t *req)
{
    /* No Access-Control-Allow-Origin here: the request carried the user's cookie, and a
     * credentialed answer is unreadable to the page without credentials allowed anyway. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
    pe_http_error(req, 403, "Forbidden", "origin_not_allowed",
                  "a cookie token is usable from this server's own origin or an --allowed-origin only");
}

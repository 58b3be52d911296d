/*
 * router.c: the request router: limits and front checks first, then the endpoint by path, with
 * the cross-origin policy of the endpoints a page may call (docs/protocol.md "Cross-origin
 * requests (CORS)").
 */
#include "edge/core/access.h"
#include "edge/core/conn_limit.h"
#include "edge/core/http.h"
#include "edge/core/cors.h"
#include "edge/core/thread.h"
#include "edge/api/batch.h"
#include "edge/api/disconnect.h"
#include "edge/api/ops.h"
#include "edge/api/presence.h"
#include "edge/api/publish.h"
#include "edge/ws/ws.h"
#include "edge/front.h"
#include "edge/router.h"
#include "fallback/poll.h"
#include "fallback/sse.h"

int
pe_router_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);
    PE_STAT_ADD(thr->stats.requests, 1);
    h2o_iovec_t path = req->path_normalized;

    /* A connection accepted past --max-connections (or the per-address limit) gets only this. */
    if (pe_limits_refuse_request(req))
        return 0;
    if (pe_front_on_req(req) == 0)
        return 0;

    /* h2o 2.2 buffers requests up to ~400 KiB of head; answer oversized ones clearly. */
    if (req->path.len > PE_MAX_URL) {
        pe_http_error(req, 414, "URI Too Long", "uri_too_long", "the request URL is too long");
        return 0;
    }
    size_t header_bytes = 0;
    for (size_t i = 0; i != req->headers.size; ++i)
        header_bytes += req->headers.entries[i].name->len + req->headers.entries[i].value.len;
    if (header_bytes > PE_MAX_HEADER_BYTES) {
        pe_http_error(req, 431, "Request Header Fields Too Large", "headers_too_large", "the request headers are too large");
        return 0;
    }

    /* Cross-origin endpoints: a preflight is answered here; otherwise the CORS headers go on
     * req->res.headers now, so every answer of the handler carries them (errors included).
     * Checklist when adding one: a branch here and the CORS table in docs/protocol.md. */
    int (*cors_handler)(h2o_req_t *) = NULL;
    const char *methods = "GET, OPTIONS";
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/api/publish"))) {
        cors_handler = pe_publish_on_req;
        methods = "POST, OPTIONS";
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/api/batch"))) {
        cors_handler = pe_batch_on_req;
        methods = "POST, OPTIONS";
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/sse"))) {
        cors_handler = pe_sse_on_req;
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/poll"))) {
        cors_handler = pe_poll_on_req;
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/api/presence"))) {
        cors_handler = pe_presence_on_req;
    }
    if (cors_handler != NULL) {
        /* The subscribing endpoints read the token cookie (docs/auth.md "Tokens"). */
        int reads_cookie = cors_handler == pe_sse_on_req || cors_handler == pe_poll_on_req;
        if (pe_http_preflight(req, methods, reads_cookie) == 0)
            return 0;
        /* Under an origin policy a stream a page may not read is refused, readably, instead of
         * being served to a browser that hides it (and whose client would retry forever). */
        if (cors_handler != pe_publish_on_req && !pe_http_origin_is_allowed(req)) {
            pe_http_refuse_origin(req);
            return 0;
        }
        /* A cookie rides along whichever site's page makes the request: it opens a stream only
         * for the server's own page or a listed origin, checked before the token is verified
         * so another site learns nothing about it. */
        if (reads_cookie && pe_access_token_source(req) == PE_TOKEN_COOKIE && !pe_http_origin_is_allowed_with_cookie(req)) {
            pe_http_refuse_cookie_origin(req);
            return 0;
        }
        pe_http_cors(req);
        if (reads_cookie)
            pe_http_cors_credentials(req);
        return cors_handler(req);
    }
    /* A backend's call (API key), never a browser's: no CORS. */
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/api/disconnect")))
        return pe_disconnect_on_req(req);
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/ws")))
        return pe_ws_on_req(req, 0);
    if (thr->server->cfg->ws_echo && h2o_memis(path.base, path.len, H2O_STRLIT("/ws/echo")))
        return pe_ws_on_req(req, 1);
    if (pe_presence_users_on_req(req, path))
        return 0;
    if (pe_ops_on_req(req, path) == 0)
        return 0;
    pe_http_error(req, 404, "Not Found", "not_found", "no such endpoint");
    return 0;
}

/*
 * http.c: response helpers shared by the handlers: JSON errors of CONTRACT.md's shape, the
 * query string, and the loopback test for the unauthenticated publish rule.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
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

void
pe_http_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message)
{
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

int
pe_http_peer_is_loopback(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len == 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        /* ::ffff:127.x.y.z from a dual-stack socket */
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

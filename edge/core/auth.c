/*
 * auth.c: who may publish (docs/security.md): the API key, the origin of a browser page, and
 * the loopback rule behind --trusted-proxy. One rule for HTTP publish and batch, the WebSocket
 * publish op, and edge/front.c's request-head check.
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
#include "edge/core/access.h"
#include "edge/core/auth.h"
#include "edge/core/http.h"
#include "edge/core/cors.h"
#include "edge/core/thread.h"

/* ---- who may publish ------------------------------------------------------------------------- */

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
    case PE_AUTH_TOKEN_INVALID:
    case PE_AUTH_TOKEN_EXPIRED:
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_token\""));
        if (r == PE_AUTH_TOKEN_EXPIRED)
            pe_http_error(req, 401, "Unauthorized", "token_expired", "the token has expired");
        else
            pe_http_error(req, 401, "Unauthorized", "unauthorized", "the token is not valid");
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

/* The token of an Authorization: Bearer value that is not the API key; 0 if there is none. */
static int
bearer_token(const pe_config_t *cfg, h2o_iovec_t v, h2o_iovec_t *token)
{
    if (cfg->auth_mode == PE_AUTH_MODE_OFF || v.base == NULL || v.len < 7 || !h2o_lcstris(v.base, 7, H2O_STRLIT("bearer ")))
        return 0;
    *token = h2o_iovec_init(v.base + 7, v.len - 7);
    return 1;
}

pe_auth_t
pe_auth_check_publisher(const pe_config_t *cfg, const pe_auth_view_t *view)
{
    pe_auth_t r = pe_auth_check(cfg, view);
    h2o_iovec_t token;
    if (r == PE_AUTH_OK || r == PE_AUTH_ORIGIN || !bearer_token(cfg, view->authorization, &token))
        return r;
    /* Verified here already, so an unauthenticated body is still refused from its head. */
    pe_identity_t id;
    pe_jwt_result_t v = pe_access_verify(cfg, token.base, token.len, &id);
    int may = v == PE_JWT_OK && id.publish.num != 0;
    pe_identity_dispose(&id);
    if (may)
        return PE_AUTH_OK;
    /* Something that is not a JWT is a wrong API key, as before --auth. */
    if (v == PE_JWT_OK || memchr(token.base, '.', token.len) == NULL)
        return r;
    return v == PE_JWT_EXPIRED ? PE_AUTH_TOKEN_EXPIRED : PE_AUTH_TOKEN_INVALID;
}

/* The publish endpoints' first step: 1 if the request may publish by the API key rule, 0 with
 * the Bearer token in *token to check against its claims, or -1 with the refusal answered. */
static int
publisher_key_or_token(h2o_req_t *req, const pe_config_t *cfg, pe_auth_t *r, h2o_iovec_t *token)
{
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    *r = pe_auth_check(cfg, &view);
    if (*r == PE_AUTH_OK)
        return 1;
    if (*r == PE_AUTH_ORIGIN || !bearer_token(cfg, view.authorization, token)) {
        pe_auth_refuse(req, *r);
        return -1;
    }
    return 0;
}

/* Answers a token that may not publish: 403 if it verified (forbidden says why), else 401; a
 * value that is not a token at all is a wrong API key, as before --auth. */
static void
refuse_publisher_token(h2o_req_t *req, pe_auth_t r, pe_jwt_result_t v, h2o_iovec_t token, const char *forbidden)
{
    if (v == PE_JWT_OK)
        pe_http_error(req, 403, "Forbidden", "forbidden", forbidden);
    else if (memchr(token.base, '.', token.len) == NULL)
        pe_auth_refuse(req, r);
    else
        pe_auth_refuse(req, v == PE_JWT_EXPIRED ? PE_AUTH_TOKEN_EXPIRED : PE_AUTH_TOKEN_INVALID);
}

int
pe_publish_authorize_channel(h2o_req_t *req, const char *channel, size_t len)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    pe_auth_t r;
    h2o_iovec_t token;
    int k = publisher_key_or_token(req, cfg, &r, &token);
    if (k != 0)
        return k > 0 ? 0 : -1;
    pe_identity_t id;
    pe_jwt_result_t v = pe_access_verify(cfg, token.base, token.len, &id);
    pe_access_t a = v == PE_JWT_OK ? pe_may_publish(&id, channel, len) : PE_ACCESS_UNAUTHORIZED;
    pe_identity_dispose(&id);
    if (a == PE_ACCESS_OK)
        return 0;
    refuse_publisher_token(req, r, v, token, "the token does not allow publishing to this channel");
    return -1;
}

int
pe_publish_authorize_batch(h2o_req_t *req, pe_identity_t *id)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    memset(id, 0, sizeof(*id));
    pe_auth_t r;
    h2o_iovec_t token;
    int k = publisher_key_or_token(req, cfg, &r, &token);
    if (k != 0)
        return k > 0 ? 0 : -1;
    pe_jwt_result_t v = pe_access_verify(cfg, token.base, token.len, id);
    if (v == PE_JWT_OK && id->publish.num != 0)
        return 0;
    refuse_publisher_token(req, r, v, token, "the token allows publishing to no channel");
    pe_identity_dispose(id);
    return -1;
}

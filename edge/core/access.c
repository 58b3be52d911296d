/*
 * access.c: identity and access on the request side (access.h). The token is looked for in a
 * fixed order, Authorization first: the first source present is the one used, so a stale cookie
 * cannot override a header the application set deliberately, and an invalid token is refused
 * rather than silently replaced by another source's.
 */
#include <string.h>
#include <time.h>
#include "edge/core/access.h"
#include "edge/core/http.h"
#include "edge/core/thread.h"
#include "edge/util/log.h"
#include "edge/util/secret.h"

pe_jwt_result_t
pe_access_verify(const pe_config_t *cfg, const char *token, size_t len, pe_identity_t *id)
{
    memset(id, 0, sizeof(*id));
    if (cfg->keys == NULL)
        return PE_JWT_INVALID;
    pe_jwt_opts_t opts = {cfg->jwt_issuer, cfg->jwt_audience, cfg->jwt_leeway};
    pe_keyset_t *keys = pe_keyholder_acquire(cfg->keys);
    const char *why = NULL;
    pe_jwt_result_t r = pe_jwt_verify(keys, &opts, (int64_t)time(NULL), token, len, id, &why);
    pe_keyset_release(keys);
    if (r != PE_JWT_OK) {
        /* The reason only, never the token: it is a credential. */
        static pe_log_rate_t rate;
        pe_log_ratelimited(&rate, PE_LOG_DEBUG, "edge/access", "token refused: %s", why != NULL ? why : "?");
    }
    return r;
}

/* The value of cookie `name` in one Cookie header (RFC 6265 5.4: "a=b; c=d"). */
static int
cookie_get(const char *s, size_t len, const char *name, h2o_iovec_t *out)
{
    size_t nlen = strlen(name);
    const char *end = s + len;
    while (s < end) {
        while (s < end && (*s == ' ' || *s == ';'))
            ++s;
        const char *pair_end = memchr(s, ';', (size_t)(end - s));
        if (pair_end == NULL)
            pair_end = end;
        const char *eq = memchr(s, '=', (size_t)(pair_end - s));
        if (eq != NULL && (size_t)(eq - s) == nlen && memcmp(s, name, nlen) == 0) {
            const char *v = eq + 1, *ve = pair_end;
            while (ve > v && ve[-1] == ' ')
                --ve;
            /* A quoted value (RFC 6265 4.1.1 allows DQUOTE around it). */
            if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
                ++v;
                --ve;
            }
            *out = h2o_iovec_init(v, (size_t)(ve - v));
            return 1;
        }
        s = pair_end;
    }
    return 0;
}

/* Finds the request's token; its source and *out if one is present (possibly empty), else
 * PE_TOKEN_NONE. */
static pe_token_source_t
find_token(const pe_config_t *cfg, h2o_iovec_t *out, h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        /* Another scheme (Basic, for a proxy in front) is not ours: look further. */
        if (v.len >= 7 && h2o_lcstris(v.base, 7, H2O_STRLIT("bearer "))) {
            size_t at = 7;
            while (at < v.len && v.base[at] == ' ')
                ++at;
            /* The --api-key is the operator's publishing secret, not a token: a backend that
             * sends it (to publish on a WebSocket) is anonymous here, and not refused 401. */
            if (cfg->api_key == NULL || !pe_secret_equals(v.base + at, v.len - at, cfg->api_key, strlen(cfg->api_key))) {
                *out = h2o_iovec_init(v.base + at, v.len - at);
                return PE_TOKEN_HEADER;
            }
        }
    }
    /* HTTP/2 may split cookies over several headers (RFC 9113 8.2.3). */
    for (i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_COOKIE, i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (cookie_get(v.base, v.len, PE_ACCESS_COOKIE, out))
            return PE_TOKEN_COOKIE;
    }
    h2o_iovec_t qs = pe_http_query(req);
    if (qs.len != 0) {
        char *buf = h2o_mem_alloc_pool(&req->pool, qs.len + 1);
        long n = pe_query_get(qs.base, qs.len, "token", buf);
        if (n >= 0) {
            *out = h2o_iovec_init(buf, (size_t)n);
            return PE_TOKEN_QUERY;
        }
        if (n == -2) {
            *out = h2o_iovec_init("", 0); /* malformed: present, and invalid */
            return PE_TOKEN_QUERY;
        }
    }
    return PE_TOKEN_NONE;
}

pe_token_source_t
pe_access_token_source(h2o_req_t *req)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    h2o_iovec_t token;
    return cfg->auth_mode == PE_AUTH_MODE_OFF ? PE_TOKEN_NONE : find_token(cfg, &token, req);
}

static void
refuse_token(h2o_req_t *req, pe_jwt_result_t r)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer error=\"invalid_token\""));
    if (r == PE_JWT_EXPIRED)
        pe_http_error(req, 401, "Unauthorized", "token_expired", "the token has expired; get a new one and reconnect");
    else
        pe_http_error(req, 401, "Unauthorized", "unauthorized", "the token is not valid");
}

int
pe_access_identify(h2o_req_t *req, pe_identity_t *id)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    memset(id, 0, sizeof(*id));
    h2o_iovec_t token;
    if (cfg->auth_mode == PE_AUTH_MODE_OFF || find_token(cfg, &token, req) == PE_TOKEN_NONE)
        return 0;
    pe_jwt_result_t r = pe_access_verify(cfg, token.base, token.len, id);
    if (r == PE_JWT_OK)
        return 0;
    refuse_token(req, r);
    return -1;
}

pe_access_t
pe_access_subscribe(const pe_config_t *cfg, const pe_identity_t *id, const char *channel, size_t len)
{
    return pe_may_subscribe((pe_auth_mode_t)cfg->auth_mode, &cfg->public_channels, id, channel, len);
}

const char *
pe_access_code(pe_access_t a)
{
    return a == PE_ACCESS_FORBIDDEN ? "forbidden" : "unauthorized";
}

const char *
pe_access_message(pe_access_t a)
{
    /* The same words whether or not the channel exists: a refusal reveals nothing about it. */
    return a == PE_ACCESS_FORBIDDEN ? "the token does not allow this channel"
                                    : "a valid token is required (Authorization: Bearer, cookie " PE_ACCESS_COOKIE " or ?token=)";
}

int
pe_access_check_query(h2o_req_t *req, const pe_identity_t *id, const pe_sub_query_t *q)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    for (size_t i = 0; i != q->num_channels; ++i) {
        pe_access_t a = pe_access_subscribe(cfg, id, q->channels[i].name, q->channels[i].len);
        if (a == PE_ACCESS_OK)
            continue;
        if (a == PE_ACCESS_UNAUTHORIZED) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
            pe_http_error(req, 401, "Unauthorized", pe_access_code(a), pe_access_message(a));
        } else {
            pe_http_error(req, 403, "Forbidden", pe_access_code(a), pe_access_message(a));
        }
        return -1;
    }
    return 0;
}

int
pe_access_authorize_query(h2o_req_t *req, const pe_sub_query_t *q, pe_identity_t *id)
{
    if (pe_access_identify(req, id) != 0)
        return -1;
    if (pe_access_check_query(req, id, q) != 0) {
        pe_identity_dispose(id);
        return -1;
    }
    return 0;
}

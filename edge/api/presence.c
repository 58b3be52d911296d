/*
 * presence.c: the registry endpoints (presence.h). Both ask the engine (pubsub's
 * pe_ps_presence_query / pe_ps_user_query), which answers from the whole registry: every node
 * sharing the engine, not only this one. The answer comes later, so the pending query holds the
 * request weakly (pe_http_weak_req): a client that left is not answered.
 *
 * Who may read: GET /api/presence takes the API key (or, without --api-key, a loopback client,
 * the publish rule), or a token that may read the channel. A token presented is judged on its
 * own: a loopback client with a token that does not cover the channel gets 403, as on /sse. The
 * user listing takes the API key rule only: it names a user's connections, which a token of
 * another user must not see.
 */
#include <jansson.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "edge/api/presence.h"
#include "edge/core/access.h"
#include "edge/core/auth.h"
#include "edge/core/http.h"
#include "edge/core/thread.h"
#include "edge/util/query.h"

/* A query waiting for the engine; owned by the engine's callback context until it runs. */
typedef struct st_pending_t {
    h2o_req_t *req; /* weak: NULL once the request is disposed */
    pe_http_weak_req_t *req_ref;
    char *head;            /* the answer up to the count: {"channel":"NAME" or {"user":"SUB" */
    const char *list_name; /* "members" or "connections" */
    int with_members;
} pending_t;

static void
on_answer(void *ctx, const char *err, uint64_t count, const char *members, size_t members_len)
{
    pending_t *p = ctx;
    h2o_req_t *req = p->req;
    if (req != NULL) {
        pe_http_weak_req_drop(p->req_ref);
        if (err != NULL) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
            pe_http_error(req, 503, "Service Unavailable", "engine_unavailable", err);
        } else {
            char num[32];
            int nlen = snprintf(num, sizeof(num), ",\"count\":%llu", (unsigned long long)count);
            h2o_iovec_t body = h2o_concat(
                &req->pool, h2o_iovec_init(p->head, strlen(p->head)), h2o_iovec_init(num, (size_t)nlen),
                p->with_members ? h2o_iovec_init(H2O_STRLIT(",\"")) : h2o_iovec_init("", 0),
                p->with_members ? h2o_iovec_init(p->list_name, strlen(p->list_name)) : h2o_iovec_init("", 0),
                p->with_members ? h2o_iovec_init(H2O_STRLIT("\":")) : h2o_iovec_init("", 0),
                members != NULL ? h2o_iovec_init(members, members_len) : h2o_iovec_init("", 0), h2o_iovec_init(H2O_STRLIT("}")));
            pe_http_json(req, 200, "OK", body.base, body.len);
        }
    }
    free(p->head);
    pe_free(p);
}

static pending_t *
pending_new(h2o_req_t *req, char *head, const char *list_name, int with_members)
{
    pending_t *p = pe_calloc(1, sizeof(*p));
    p->head = head;
    p->list_name = list_name;
    p->with_members = with_members;
    p->req_ref = pe_http_weak_req(req, &p->req);
    return p;
}

static void
pending_fail(pending_t *p, h2o_req_t *req, const char *err)
{
    pe_http_weak_req_drop(p->req_ref);
    free(p->head);
    pe_free(p);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    pe_http_error(req, 503, "Service Unavailable", "engine_unavailable", err);
}

/* The API key rule, or a token that may read the channel (see the file comment). 0, or the
 * refusal answered and -1. */
static int
authorize_read(h2o_req_t *req, const char *channel, size_t len)
{
    const pe_config_t *cfg = pe_thread_of(req)->server->cfg;
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    pe_auth_t r = pe_auth_check(cfg, &view);
    if (r == PE_AUTH_OK && cfg->api_key != NULL)
        return 0; /* the API key itself */
    if (pe_access_token_source(req) != PE_TOKEN_NONE) {
        pe_identity_t id;
        if (pe_access_identify(req, &id) != 0)
            return -1;
        pe_access_t a = pe_access_subscribe(cfg, &id, channel, len);
        pe_identity_dispose(&id);
        if (a == PE_ACCESS_OK)
            return 0;
        if (a == PE_ACCESS_FORBIDDEN)
            pe_http_error(req, 403, "Forbidden", pe_access_code(a), pe_access_message(a));
        else
            pe_http_error(req, 401, "Unauthorized", pe_access_code(a), pe_access_message(a));
        return -1;
    }
    if (r == PE_AUTH_OK)
        return 0;
    pe_auth_refuse(req, r);
    return -1;
}

int
pe_presence_on_req(h2o_req_t *req)
{
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        pe_http_method_not_allowed(req, "GET");
        return 0;
    }
    char *channel;
    long clen = pe_http_query_channel(req, &channel);
    if (clen < 0)
        return 0;
    h2o_iovec_t qs = pe_http_query(req);
    char *flag = h2o_mem_alloc_pool(&req->pool, qs.len + 1);
    long flen = pe_query_get(qs.base, qs.len, "members", flag);
    int with_members = !(flen == 1 && flag[0] == '0');
    if (authorize_read(req, channel, (size_t)clen) != 0)
        return 0;
    /* Channel names need no JSON escaping (their characters, docs/protocol.md "Names"). */
    size_t hlen = sizeof("{\"channel\":\"\"") + (size_t)clen;
    char *head = pe_malloc(hlen);
    snprintf(head, hlen, "{\"channel\":\"%s\"", channel);
    pending_t *p = pending_new(req, head, "members", with_members);
    const char *err = pe_ps_presence_query(pe_thread_of(req)->node, channel, (size_t)clen, with_members, on_answer, p);
    if (err != NULL)
        pending_fail(p, req, err);
    return 0;
}

int
pe_presence_users_on_req(h2o_req_t *req, h2o_iovec_t path)
{
    static const char prefix[] = "/api/users/", suffix[] = "/connections";
    if (path.len <= sizeof(prefix) - 1 + sizeof(suffix) - 1 || memcmp(path.base, prefix, sizeof(prefix) - 1) != 0 ||
        memcmp(path.base + path.len - (sizeof(suffix) - 1), suffix, sizeof(suffix) - 1) != 0)
        return 0;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        pe_http_method_not_allowed(req, "GET");
        return 1;
    }
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    pe_auth_t r = pe_auth_check(pe_thread_of(req)->server->cfg, &view);
    if (r != PE_AUTH_OK) {
        pe_auth_refuse(req, r);
        return 1;
    }
    /* The subject as the client wrote it in the path, percent-decoded. */
    const char *raw = path.base + sizeof(prefix) - 1;
    size_t raw_len = path.len - (sizeof(prefix) - 1) - (sizeof(suffix) - 1);
    char *user = h2o_mem_alloc_pool(&req->pool, raw_len + 1);
    long ulen = pe_query_decode(raw, raw_len, user);
    /* No subject holds a NUL (as POST /api/disconnect): the Redis engine's key would end at it
     * and name the user before it. */
    if (ulen <= 0 || ulen > 256 || memchr(user, '/', (size_t)ulen) != NULL || memchr(user, '\0', (size_t)ulen) != NULL) {
        pe_http_error(req, 400, "Bad Request", "bad_user", "the user id is 1-256 bytes, percent-encoded in the path");
        return 1;
    }
    json_t *ju = json_stringn(user, (size_t)ulen);
    char *ujson = ju != NULL ? json_dumps(ju, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(ju);
    if (ujson == NULL) {
        pe_http_error(req, 400, "Bad Request", "bad_user", "the user id is not valid UTF-8");
        return 1;
    }
    size_t hlen = sizeof("{\"user\":") + strlen(ujson);
    char *head = pe_malloc(hlen);
    snprintf(head, hlen, "{\"user\":%s", ujson);
    free(ujson);
    pending_t *p = pending_new(req, head, "connections", 1);
    const char *err = pe_ps_user_query(pe_thread_of(req)->node, user, (size_t)ulen, on_answer, p);
    if (err != NULL)
        pending_fail(p, req, err);
    return 1;
}

/*
 * disconnect.c: POST /api/disconnect?user=SUB[&channel=PATTERN][&reason=TEXT] (docs/auth.md
 * "Revocation"): ends the connections of the user whose token's "sub" is SUB (or only their
 * subscriptions to the channels PATTERN covers; a connection left with none ends) on every
 * thread of this node and, through the engine's control channel, on every node sharing it.
 * Answers 200 {"disconnected": N} once every thread of this node has applied it, N counted on
 * this node (the other nodes apply it within the time of a Redis PUBLISH and do not answer).
 *
 * Allowed by the publish rule's API key check (pe_auth_check: --api-key in constant time, or
 * loopback without one), never by a token: ending other users' access is the backend's call.
 * The work across threads is edge/core/revoke.c's; this file checks the request and answers.
 */
#include <stdio.h>
#include "pubsub/alloc.h"
#include "edge/api/disconnect.h"
#include "edge/api/publish.h"
#include "edge/core/auth.h"
#include "edge/core/http.h"
#include "edge/core/revoke.h"
#include "edge/core/thread.h"
#include "edge/identity/policy.h"
#include "edge/util/bounds.h"
#include "edge/util/query.h"

/* The answer waiting for the threads; freed by the callback (the request may be gone by then). */
typedef struct st_pending_t {
    h2o_req_t *req; /* weak: NULL once the request is disposed */
    pe_http_weak_req_t *req_ref;
    const char *err; /* the broadcast to other nodes failed (pe_ps_err_unavailable) */
} pending_t;

static void
on_done(void *ctx, size_t count)
{
    pending_t *p = ctx;
    h2o_req_t *req = p->req;
    if (req != NULL) {
        pe_http_weak_req_drop(p->req_ref);
        if (p->err != NULL) {
            /* This node's connections are cut; the other nodes could not be told. */
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
            char msg[160];
            snprintf(msg, sizeof(msg), "%zu cut on this node, but the other nodes could not be reached: retry", count);
            pe_http_error(req, 503, "Service Unavailable", "engine_unavailable", msg);
        } else {
            char body[48];
            int n = snprintf(body, sizeof(body), "{\"disconnected\":%zu}", count);
            pe_http_json(req, 200, "OK", body, (size_t)n);
        }
    }
    pe_free(p);
}

int
pe_disconnect_on_req(h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);
    if (pe_publish_require_post(req) != 0)
        return 0;
    if (pe_publish_authorize(req) != 0)
        return 0;
    h2o_iovec_t qs = pe_http_query(req);
    char *user = h2o_mem_alloc_pool(&req->pool, qs.len + 1), *channel = h2o_mem_alloc_pool(&req->pool, qs.len + 1),
         *reason = h2o_mem_alloc_pool(&req->pool, qs.len + 1);
    long user_len = pe_query_get(qs.base, qs.len, "user", user), channel_len = pe_query_get(qs.base, qs.len, "channel", channel),
         reason_len = pe_query_get(qs.base, qs.len, "reason", reason);
    if (user_len <= 0 || (size_t)user_len > PE_POLICY_MAX_SUB || memchr(user, '\0', (size_t)user_len) != NULL) {
        pe_http_error(req, 400, "Bad Request", "bad_user", "user is required: the token's sub, at most 256 bytes");
        return 0;
    }
    if (channel_len == -2 || (channel_len >= 0 && !pe_pattern_is_valid(channel, (size_t)channel_len, 0))) {
        pe_http_error(req, 400, "Bad Request", "bad_channel", "channel must be a channel name, optionally ending in *");
        return 0;
    }
    if (reason_len == -2 || (reason_len >= 0 && !pe_revoke_reason_is_valid(reason, (size_t)reason_len))) {
        pe_http_error(req, 400, "Bad Request", "bad_reason", "reason is 1-100 printable ASCII characters without \" or \\");
        return 0;
    }
    pe_revocation_t r = {user,
                         (size_t)user_len,
                         channel_len >= 0 ? channel : NULL,
                         channel_len >= 0 ? (size_t)channel_len : 0,
                         reason_len >= 0 ? reason : "revoked",
                         reason_len >= 0 ? (size_t)reason_len : 7};
    pending_t *p = pe_calloc(1, sizeof(*p));
    p->req_ref = pe_http_weak_req(req, &p->req);
    p->err = pe_revoke_start(thr, &r, on_done, p);
    return 0;
}

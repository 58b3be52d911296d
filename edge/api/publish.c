/*
 * publish.c: POST /api/publish?channel=NAME (docs/protocol.md "Publish").
 *
 * Checks run cheapest first (method, channel, authorisation, size, JSON), so a hostile client
 * costs little. The body is validated with jansson and stored as sent (minified, not re-printed).
 * The answer waits for the engine: 200 only once the message is stored, never before.
 *
 * Idempotency-Key (docs/protocol.md "Publish"): passed to the engine with the message;
 * a repeat within the window answers the first publish's ID (and Idempotent-Replayed: true).
 * A 503 from the callback may be pe_ps_err_unconfirmed (the message may be stored): the error
 * message says so, and the key is the way to find out (docs/operations.md).
 *
 * Lifetime: the engine's callback may come after the client went away (the connection closes
 * and h2o frees the request). The pending publish is therefore a heap object with a weak
 * pointer to the request, cleared when h2o disposes the request (pe_http_weak_req)
 * (a request may end before its asynchronous answer); the callback answers only if the request is still there.
 */
#include <jansson.h>
#include "pubsub/alloc.h"
#include "pubsub/json_text.h"
#include "edge/util/query.h"
#include "edge/api/publish.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include "edge/core/auth.h"

typedef struct st_pending_t {
    h2o_req_t *req; /* weak: NULL once the request is disposed */
    pe_http_weak_req_t *req_ref;
    char channel[PE_CHANNEL_MAXLEN + 1];
    size_t channel_len;
} pending_t;

static void
on_published(void *ctx, const char *err, const pe_id_t *id, int replayed)
{
    pending_t *pending = ctx;
    h2o_req_t *req = pending->req;
    if (req != NULL) {
        pe_http_weak_req_drop(pending->req_ref);
        if (err != NULL) {
            PE_STAT_ADD(pe_thread_of(req)->stats.publish_errors, 1);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
            /* not_replicated: stored on the Redis master, not confirmed by its replicas
             * (--redis-wait-replicas); a retry with the same key is safe. */
            pe_http_error(req, 503, "Service Unavailable",
                          err == pe_ps_err_not_replicated ? "not_replicated" : "engine_unavailable", err);
        } else {
            char id_str[PE_ID_MAXLEN + 1];
            pe_id_format(*id, id_str);
            /* Channel names need no JSON escaping: their alphabet has no quote or backslash. */
            h2o_iovec_t body =
                h2o_concat(&req->pool, h2o_iovec_init(H2O_STRLIT("{\"channel\":\"")),
                           h2o_iovec_init(pending->channel, pending->channel_len), h2o_iovec_init(H2O_STRLIT("\",\"id\":\"")),
                           h2o_iovec_init(id_str, strlen(id_str)), h2o_iovec_init(H2O_STRLIT("\"}")));
            if (replayed)
                h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("idempotent-replayed"), 0, NULL,
                                      H2O_STRLIT("true"));
            pe_http_json(req, 200, "OK", body.base, body.len);
        }
    }
    pe_free(pending);
}

int
pe_publish_idempotency_key(h2o_req_t *req, h2o_iovec_t *key)
{
    *key = h2o_iovec_init(NULL, 0);
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), -1);
    if (i < 0)
        return 0;
    /* Two keys would leave it open which one a retry must repeat. */
    if (h2o_find_header_by_str(&req->headers, H2O_STRLIT("idempotency-key"), i) >= 0) {
        pe_http_error(req, 400, "Bad Request", "bad_key", "only one Idempotency-Key header is allowed");
        return -1;
    }
    h2o_iovec_t v = req->headers.entries[i].value;
    if (!pe_ps_key_is_valid(v.base, v.len)) {
        pe_http_error(req, 400, "Bad Request", "bad_key", pe_ps_err_bad_key);
        return -1;
    }
    *key = v;
    return 0;
}

int
pe_publish_require_post(h2o_req_t *req)
{
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")))
        return 0;
    pe_http_method_not_allowed(req, "POST");
    return -1;
}

json_t *
pe_publish_parse_body(h2o_req_t *req)
{
    json_error_t jerr;
    json_t *value = req->entity.base != NULL
                        ? pe_json_load_untrusted(req->entity.base, req->entity.len,
                                                 JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr)
                        : NULL;
    if (value == NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "the body is not JSON: %s", req->entity.base != NULL ? jerr.text : "empty body");
        pe_http_error(req, 400, "Bad Request", "invalid_json", msg);
    }
    return value;
}

const char *
pe_publish_error_code(const char *err)
{
    if (err == pe_ps_err_unavailable)
        return "engine_unavailable";
    if (err == pe_ps_err_bad_channel)
        return "bad_channel";
    if (err == pe_ps_err_channel_limit)
        return "channel_limit";
    if (err == pe_ps_err_bad_key)
        return "bad_key";
    if (err == pe_ps_err_not_replicated)
        return "not_replicated";
    return "engine_error";
}

int
pe_publish_on_req(h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);
    const pe_config_t *cfg = thr->server->cfg;

    if (pe_publish_require_post(req) != 0)
        return 0;

    /* the channel */
    char *channel;
    long channel_len = pe_http_query_channel(req, &channel);
    if (channel_len < 0)
        return 0;

    /* API key, origin and loopback rules shared with /api/batch, the WebSocket op and front.c;
     * or a token whose "publish" claim covers the channel (docs/auth.md). */
    if (pe_publish_authorize_channel(req, channel, (size_t)channel_len) != 0)
        return 0;

    h2o_iovec_t key;
    if (pe_publish_idempotency_key(req, &key) != 0)
        return 0;

    /* the body */
    if (req->entity.len > cfg->max_message_size) {
        pe_http_error(req, 413, "Payload Too Large", "too_large", "the message is larger than --max-message-size");
        return 0;
    }
    /* Only validated: the text is stored as sent, so big integers keep every digit although
     * jansson would hold them as doubles. The allocation-free check answers for the usual body;
     * jansson decides (and words the error) whenever it is not sure. */
    if (req->entity.base == NULL || !pe_json_valid_fast(req->entity.base, req->entity.len)) {
        json_t *value = pe_publish_parse_body(req);
        if (value == NULL)
            return 0;
        json_decref(value);
    }

    pending_t *pending = pe_calloc(1, sizeof(*pending));
    pending->req = req;
    memcpy(pending->channel, channel, (size_t)channel_len);
    pending->channel_len = (size_t)channel_len;
    const char *err = pe_ps_publish(thr->node, channel, (size_t)channel_len, key.base, key.len, req->entity.base, req->entity.len,
                                    on_published, pending);
    if (err != NULL) {
        pe_free(pending);
        PE_STAT_ADD(thr->stats.publish_errors, 1);
        const char *code = pe_publish_error_code(err);
        if (err == pe_ps_err_bad_channel || err == pe_ps_err_bad_key) {
            pe_http_error(req, 400, "Bad Request", code, err);
        } else {
            /* Retry soon after an outage; a full node frees channels more slowly. */
            if (err == pe_ps_err_unavailable || err == pe_ps_err_channel_limit)
                h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, err == pe_ps_err_unavailable ? "1" : "5",
                               1);
            pe_http_error(req, 503, "Service Unavailable", code, err);
        }
        return 0;
    }
    pending->req_ref = pe_http_weak_req(req, &pending->req);
    return 0;
}

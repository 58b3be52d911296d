/*
 * batch.c: POST /api/batch (docs/protocol.md "Batch publish"): a JSON array of
 * {"channel": NAME, "data": <json>, "key": K?} stored item by item, answered with one result per
 * item in request order once every item has its outcome.
 *
 * The request as a whole follows /api/publish: the same method, authorisation, CORS and error
 * shapes; the body is bounded by PE_BATCH_MAX_BYTES and PE_BATCH_MAX_ITEMS (edge/util/bounds.h). A
 * body that is not a JSON array is refused whole (400), since it cannot be split into items;
 * past that point every item is checked and published on its own, and a bad item becomes an
 * error result without affecting the others. Items are handed to the engine in request order
 * on this thread's node, so a channel's items are stored in that order (the memory engine
 * assigns IDs in call order; the Redis engine pipelines them on one connection per master).
 *
 * Each item's data is stored as written, like /api/publish: its span is found in the raw text
 * (pe_json_array_next / pe_json_object_next) while jansson validates the body and reads the
 * channel and key strings.
 *
 * Lifetime: as in publish.c, the batch is a heap object with a weak pointer to the request,
 * cleared when h2o disposes the request (pe_http_weak_req); the last engine callback answers (if the request is still
 * there) and frees the batch.
 */
#include <jansson.h>
#include "pubsub/alloc.h"
#include "pubsub/json_text.h"
#include "edge/api/batch.h"
#include "edge/api/publish.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include "edge/core/auth.h"

typedef struct st_batch_t batch_t;

typedef struct st_batch_item_t {
    batch_t *batch;
    char *channel; /* as the client wrote it, for the answer (owned); NULL if absent or not a string */
    size_t channel_len;
    const char *err_code; /* NULL: stored (id) */
    const char *err_message;
    pe_id_t id;
    int replayed;
} batch_item_t;

struct st_batch_t {
    h2o_req_t *req; /* weak: NULL once the request is disposed */
    pe_http_weak_req_t *req_ref;
    size_t num_items;
    size_t outstanding; /* items waiting for the engine */
    batch_item_t items[];
};

static void
free_batch(batch_t *batch)
{
    for (size_t i = 0; i != batch->num_items; ++i)
        pe_free(batch->items[i].channel);
    pe_free(batch);
}

/* An item's result as jansson writes it (errors, and a channel that needs escaping): malloc'ed
 * compact text, or NULL. */
static char *
dump_item(const batch_item_t *it)
{
    json_t *r = json_object();
    json_object_set_new(r, "channel", it->channel != NULL ? json_stringn(it->channel, it->channel_len) : json_null());
    if (it->err_code != NULL) {
        json_object_set_new(r, "error", json_pack("{s:s,s:s}", "code", it->err_code, "message", it->err_message));
    } else {
        char id_str[PE_ID_MAXLEN + 1];
        pe_id_format(it->id, id_str);
        json_object_set_new(r, "id", json_string(id_str));
        if (it->replayed)
            json_object_set_new(r, "replayed", json_true());
    }
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    return text;
}

/*
 * Writes {"results":[...]} into the request's pool. A stored item whose channel is valid (its
 * characters need no escaping) is written directly, byte for byte what jansson would write;
 * the others (errors, rare) go through jansson one by one (dump_item). A 100-item batch built
 * as a jansson tree and dumped cost more than storing its messages.
 */
static void
respond(batch_t *batch)
{
    h2o_req_t *req = batch->req;
    int retry = 0;
    size_t cap = sizeof("{\"results\":[]}");
    char **slow = pe_calloc(batch->num_items != 0 ? batch->num_items : 1, sizeof(*slow));
    int failed = 0;
    for (size_t i = 0; i != batch->num_items; ++i) {
        batch_item_t *it = &batch->items[i];
        if (it->err_code != NULL)
            retry |= strcmp(it->err_code, "engine_unavailable") == 0 || strcmp(it->err_code, "not_replicated") == 0;
        if (it->err_code == NULL && it->channel != NULL && pe_channel_is_valid(it->channel, it->channel_len)) {
            cap += sizeof("{\"channel\":\"\",\"id\":\"\",\"replayed\":true},") + it->channel_len + PE_ID_MAXLEN;
        } else if ((slow[i] = dump_item(it)) != NULL) {
            cap += strlen(slow[i]) + 1;
        } else {
            failed = 1;
        }
    }
    char *buf = failed ? NULL : h2o_mem_alloc_pool(&req->pool, cap);
    size_t n = 0;
    if (buf != NULL) {
#define PUT(p, l) (memcpy(buf + n, (p), (l)), n += (l))
        PUT("{\"results\":[", 12);
        for (size_t i = 0; i != batch->num_items; ++i) {
            batch_item_t *it = &batch->items[i];
            if (i != 0)
                PUT(",", 1);
            if (slow[i] != NULL) {
                PUT(slow[i], strlen(slow[i]));
                continue;
            }
            char id_str[PE_ID_MAXLEN + 1];
            size_t id_len = pe_id_format(it->id, id_str);
            PUT("{\"channel\":\"", 12);
            PUT(it->channel, it->channel_len);
            PUT("\",\"id\":\"", 8);
            PUT(id_str, id_len);
            if (it->replayed)
                PUT("\",\"replayed\":true}", 18);
            else
                PUT("\"}", 2);
        }
        PUT("]}", 2);
#undef PUT
    }
    for (size_t i = 0; i != batch->num_items; ++i)
        free(slow[i]); /* jansson's json_dumps allocates with malloc */
    pe_free(slow);
    if (retry)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    if (buf == NULL) {
        pe_http_error(req, 500, "Internal Server Error", "internal", "the answer could not be encoded");
        return;
    }
    pe_http_json(req, 200, "OK", buf, n);
}

static void
on_item_published(void *ctx, const char *err, const pe_id_t *id, int replayed)
{
    batch_item_t *it = ctx;
    batch_t *batch = it->batch;
    if (err != NULL) {
        it->err_code = err == pe_ps_err_not_replicated ? "not_replicated" : "engine_unavailable";
        it->err_message = err;
        if (batch->req != NULL)
            PE_STAT_ADD(pe_thread_of(batch->req)->stats.publish_errors, 1);
    } else {
        it->id = *id;
        it->replayed = replayed;
    }
    if (--batch->outstanding != 0)
        return;
    if (batch->req != NULL) {
        pe_http_weak_req_drop(batch->req_ref);
        respond(batch);
    }
    free_batch(batch);
}

static void
item_error(batch_item_t *it, const char *code, const char *message)
{
    it->err_code = code;
    it->err_message = message;
}

/*
 * Checks one item (jitem, whose raw text is body[off..off+len)) and hands it to the engine, or
 * records why not. Returns 1 if the item waits for the engine, else 0.
 */
static int
publish_item(pe_thread_t *thr, const pe_identity_t *id, batch_item_t *it, json_t *jitem, const char *text, size_t len)
{
    const pe_config_t *cfg = thr->server->cfg;
    json_t *jchannel = json_object_get(jitem, "channel");
    if (json_is_string(jchannel)) {
        it->channel_len = json_string_length(jchannel);
        it->channel = pe_strndup(json_string_value(jchannel), it->channel_len);
    }
    if (!json_is_object(jitem)) {
        item_error(it, "bad_request", "each item must be an object {\"channel\", \"data\", \"key\"?}");
        return 0;
    }

    /* The raw members: data's span, and no member given twice (jansson keeps the last one, the
     * raw scan would find the first: they must be the same). */
    size_t pos = 0, koff, klen, voff, vlen, data_off = 0, data_len = 0;
    unsigned seen_channel = 0, seen_data = 0, seen_key = 0;
    while (pe_json_object_next(text, len, &pos, &koff, &klen, &voff, &vlen)) {
        const char *k = text + koff;
        /* Keys compared as jansson reads them: "d\u0061ta" is data (and a duplicate of it). */
        if (pe_json_key_equals(k, klen, "channel", 7)) {
            ++seen_channel;
        } else if (pe_json_key_equals(k, klen, "data", 4)) {
            ++seen_data;
            data_off = voff;
            data_len = vlen;
        } else if (pe_json_key_equals(k, klen, "key", 3)) {
            ++seen_key;
        }
    }
    if (seen_channel > 1 || seen_data > 1 || seen_key > 1) {
        item_error(it, "bad_request", "an item names channel, data or key more than once");
        return 0;
    }
    if (jchannel == NULL) {
        item_error(it, "missing_channel", "the channel field is required");
        return 0;
    }
    if (it->channel == NULL || !pe_channel_is_valid(it->channel, it->channel_len)) {
        item_error(it, "bad_channel", pe_ps_err_bad_channel);
        return 0;
    }
    /* Admitted by a token: each item within its "publish" claim (docs/auth.md). */
    if (id->authenticated && pe_may_publish(id, it->channel, it->channel_len) != PE_ACCESS_OK) {
        item_error(it, "forbidden", "the token does not allow publishing to this channel");
        return 0;
    }
    if (seen_data == 0 || json_object_get(jitem, "data") == NULL) {
        item_error(it, "bad_request", "the data field is required");
        return 0;
    }
    if (data_len > cfg->max_message_size) {
        item_error(it, "too_large", "the message is larger than --max-message-size");
        return 0;
    }
    json_t *jkey = json_object_get(jitem, "key");
    const char *key = NULL;
    size_t key_len = 0;
    if (jkey != NULL) {
        if (!json_is_string(jkey) || !pe_ps_key_is_valid(json_string_value(jkey), json_string_length(jkey))) {
            item_error(it, "bad_key", pe_ps_err_bad_key);
            return 0;
        }
        key = json_string_value(jkey);
        key_len = json_string_length(jkey);
    }

    const char *err =
        pe_ps_publish(thr->node, it->channel, it->channel_len, key, key_len, text + data_off, data_len, on_item_published, it);
    if (err != NULL) {
        PE_STAT_ADD(thr->stats.publish_errors, 1);
        item_error(it, pe_publish_error_code(err), err);
        return 0;
    }
    return 1;
}

int
pe_batch_on_req(h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);
    const pe_config_t *cfg = thr->server->cfg;

    pe_identity_t id;
    if (pe_publish_require_post(req) != 0 || pe_publish_authorize_batch(req, &id) != 0)
        return 0;

    size_t max_bytes = PE_BATCH_MAX_BYTES;
    if (cfg->max_message_size + PE_BATCH_ITEM_SLACK > max_bytes)
        max_bytes = cfg->max_message_size + PE_BATCH_ITEM_SLACK;
    if (req->entity.len > max_bytes) {
        pe_http_error(req, 413, "Payload Too Large", "too_large",
                      "the batch is larger than 1 MiB (or --max-message-size + 4 KiB when that is larger)");
        pe_identity_dispose(&id);
        return 0;
    }
    json_t *root = pe_publish_parse_body(req);
    if (root == NULL) {
        pe_identity_dispose(&id);
        return 0;
    }
    if (!json_is_array(root)) {
        json_decref(root);
        pe_identity_dispose(&id);
        pe_http_error(req, 400, "Bad Request", "bad_request", "the body must be a JSON array of {\"channel\", \"data\", \"key\"?}");
        return 0;
    }
    size_t n = json_array_size(root);
    if (n > PE_BATCH_MAX_ITEMS) {
        json_decref(root);
        pe_identity_dispose(&id);
        pe_http_error(req, 413, "Payload Too Large", "too_many_items",
                      "a batch holds at most " H2O_TO_STR(PE_BATCH_MAX_ITEMS) " items");
        return 0;
    }

    batch_t *batch = pe_calloc(1, sizeof(*batch) + n * sizeof(batch_item_t));
    batch->req = req;
    batch->num_items = n;
    size_t pos = 0, off, len;
    for (size_t i = 0; i != n; ++i) {
        batch_item_t *it = &batch->items[i];
        it->batch = batch;
        /* The body is valid JSON with n elements: the raw scan finds each of them. */
        if (!pe_json_array_next(req->entity.base, req->entity.len, &pos, &off, &len)) {
            item_error(it, "bad_request", "the item could not be read");
            continue;
        }
        batch->outstanding += publish_item(thr, &id, it, json_array_get(root, i), req->entity.base + off, len);
    }
    json_decref(root);
    pe_identity_dispose(&id);

    /* No callback runs inside pe_ps_publish, so none has run yet. */
    if (batch->outstanding == 0) {
        respond(batch);
        free_batch(batch);
        return 0;
    }
    batch->req_ref = pe_http_weak_req(req, &batch->req);
    return 0;
}

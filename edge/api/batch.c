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
    char *channel; /* decoded, for the answer; NULL if absent or not a string. In the request's pool:
                    * read only by respond(), which runs only while the request is there */
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

/* What an item says, however it was read (pe_json_batch_item on the raw text, or jansson). */
typedef struct st_item_fields_t {
    int is_object;
    int duplicate;       /* channel, data or key given more than once */
    int has_channel;     /* the member exists */
    const char *channel; /* its decoded value when a string (channel_len bytes), else NULL */
    size_t channel_len;
    int has_data;
    const char *data; /* its text as written */
    size_t data_len;
    int has_key;
    const char *key; /* its decoded value when a string, else NULL */
    size_t key_len;
} item_fields_t;

/*
 * The fields of jitem (the parsed item, whose raw text is text[0..len)): jansson reads the
 * channel and key strings (decoding their escapes); the raw scan finds data's span and counts
 * each name, compared as jansson reads it ("d\u0061ta" is data and a duplicate of it): jansson
 * keeps the last of a duplicate, the raw scan the first, so duplicates are refused.
 */
static void
fields_from_jansson(json_t *jitem, const char *text, size_t len, item_fields_t *f)
{
    memset(f, 0, sizeof(*f));
    json_t *jchannel = json_object_get(jitem, "channel");
    if (json_is_string(jchannel)) {
        f->channel = json_string_value(jchannel);
        f->channel_len = json_string_length(jchannel);
    }
    f->is_object = json_is_object(jitem);
    if (!f->is_object)
        return;
    size_t pos = 0, koff, klen, voff, vlen;
    unsigned seen_channel = 0, seen_data = 0, seen_key = 0;
    while (pe_json_object_next(text, len, &pos, &koff, &klen, &voff, &vlen)) {
        const char *k = text + koff;
        if (pe_json_key_equals(k, klen, "channel", 7)) {
            ++seen_channel;
        } else if (pe_json_key_equals(k, klen, "data", 4)) {
            ++seen_data;
            f->data = text + voff;
            f->data_len = vlen;
        } else if (pe_json_key_equals(k, klen, "key", 3)) {
            ++seen_key;
        }
    }
    f->duplicate = seen_channel > 1 || seen_data > 1 || seen_key > 1;
    f->has_channel = jchannel != NULL;
    f->has_data = seen_data != 0 && json_object_get(jitem, "data") != NULL;
    json_t *jkey = json_object_get(jitem, "key");
    f->has_key = jkey != NULL;
    if (json_is_string(jkey)) {
        f->key = json_string_value(jkey);
        f->key_len = json_string_length(jkey);
    }
}

/* The fields of the item text[0..len) read without jansson; 0 when the raw reading is not sure
 * (pe_json_batch_item). The text must be valid JSON. */
static int
fields_from_text(const char *text, size_t len, item_fields_t *f)
{
    pe_json_batch_item_t raw;
    if (!pe_json_batch_item(text, len, &raw))
        return 0;
    memset(f, 0, sizeof(*f));
    f->is_object = 1;
    f->has_channel = raw.channel.present;
    if (raw.channel.is_string) {
        f->channel = text + raw.channel.off;
        f->channel_len = raw.channel.len;
    }
    f->has_data = raw.data.present;
    f->data = text + raw.data.off;
    f->data_len = raw.data.len;
    f->has_key = raw.key.present;
    if (raw.key.is_string) {
        f->key = text + raw.key.off;
        f->key_len = raw.key.len;
    }
    return 1;
}

/*
 * Checks one item and hands it to the engine, or records why not. The channel is copied into the
 * request's pool for the answer (read only while the request is there). Returns 1 if the item
 * waits for the engine, else 0.
 */
static int
publish_item(pe_thread_t *thr, h2o_req_t *req, const pe_identity_t *id, batch_item_t *it, const item_fields_t *f)
{
    const pe_config_t *cfg = thr->server->cfg;
    if (f->channel != NULL) {
        it->channel = h2o_strdup(&req->pool, f->channel, f->channel_len).base;
        it->channel_len = f->channel_len;
    }
    if (!f->is_object) {
        item_error(it, "bad_request", "each item must be an object {\"channel\", \"data\", \"key\"?}");
        return 0;
    }
    if (f->duplicate) {
        item_error(it, "bad_request", "an item names channel, data or key more than once");
        return 0;
    }
    if (!f->has_channel) {
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
    if (!f->has_data) {
        item_error(it, "bad_request", "the data field is required");
        return 0;
    }
    if (f->data_len > cfg->max_message_size) {
        item_error(it, "too_large", "the message is larger than --max-message-size");
        return 0;
    }
    if (f->has_key && (f->key == NULL || !pe_ps_key_is_valid(f->key, f->key_len))) {
        item_error(it, "bad_key", pe_ps_err_bad_key);
        return 0;
    }

    const char *err =
        pe_ps_publish(thr->node, it->channel, it->channel_len, f->key, f->key_len, f->data, f->data_len, on_item_published, it);
    if (err != NULL) {
        PE_STAT_ADD(thr->stats.publish_errors, 1);
        item_error(it, pe_publish_error_code(err), err);
        return 0;
    }
    return 1;
}

/* An item of a body that pe_json_valid_fast accepted: read raw, or by jansson when unsure. */
static int
publish_text_item(pe_thread_t *thr, h2o_req_t *req, const pe_identity_t *id, batch_item_t *it, const char *text, size_t len)
{
    item_fields_t f;
    if (fields_from_text(text, len, &f))
        return publish_item(thr, req, id, it, &f);
    json_t *jitem = pe_json_load_untrusted(text, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
    if (jitem == NULL) { /* cannot happen: the body is valid, so is each element */
        item_error(it, "bad_request", "the item could not be read");
        return 0;
    }
    fields_from_jansson(jitem, text, len, &f);
    int r = publish_item(thr, req, id, it, &f);
    json_decref(jitem);
    return r;
}

static void
refuse_not_array(h2o_req_t *req)
{
    pe_http_error(req, 400, "Bad Request", "bad_request", "the body must be a JSON array of {\"channel\", \"data\", \"key\"?}");
}

static void
refuse_too_many(h2o_req_t *req)
{
    pe_http_error(req, 413, "Payload Too Large", "too_many_items",
                  "a batch holds at most " H2O_TO_STR(PE_BATCH_MAX_ITEMS) " items");
}

static batch_t *
new_batch(h2o_req_t *req, size_t n)
{
    batch_t *batch = pe_calloc(1, sizeof(*batch) + n * sizeof(batch_item_t));
    batch->req = req;
    batch->num_items = n;
    for (size_t i = 0; i != n; ++i)
        batch->items[i].batch = batch;
    return batch;
}

/*
 * The usual body (pe_json_valid_fast is sure it is valid): no tree is built. The items' spans
 * are found by the raw scanner, each item's members read raw (jansson only for an item the raw
 * reading is unsure of). Returns the batch, or NULL once the request is answered.
 */
static batch_t *
publish_fast(pe_thread_t *thr, h2o_req_t *req, const pe_identity_t *id)
{
    const char *body = req->entity.base;
    size_t len = req->entity.len, i = 0;
    while (i != len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
        ++i;
    if (i == len || body[i] != '[') {
        refuse_not_array(req);
        return NULL;
    }
    /* The elements' spans, at most PE_BATCH_MAX_ITEMS (one more is refused). */
    struct {
        size_t off, len;
    } stack_spans[128], *spans = stack_spans;
    size_t n = 0, cap = sizeof(stack_spans) / sizeof(stack_spans[0]), pos = 0, off, vlen;
    while (pe_json_array_next(body, len, &pos, &off, &vlen)) {
        if (n == PE_BATCH_MAX_ITEMS) {
            if (spans != stack_spans)
                pe_free(spans);
            refuse_too_many(req);
            return NULL;
        }
        if (n == cap) {
            cap *= 2;
            if (spans == stack_spans) {
                spans = pe_malloc(cap * sizeof(*spans));
                memcpy(spans, stack_spans, sizeof(stack_spans));
            } else {
                spans = pe_realloc(spans, cap * sizeof(*spans));
            }
        }
        spans[n].off = off;
        spans[n].len = vlen;
        ++n;
    }
    batch_t *batch = new_batch(req, n);
    for (size_t k = 0; k != n; ++k)
        batch->outstanding += publish_text_item(thr, req, id, &batch->items[k], body + spans[k].off, spans[k].len);
    if (spans != stack_spans)
        pe_free(spans);
    return batch;
}

/* Any other body: jansson parses it whole (and words the error when it is not JSON). Returns
 * the batch, or NULL once the request is answered. */
static batch_t *
publish_parsed(pe_thread_t *thr, h2o_req_t *req, const pe_identity_t *id)
{
    json_t *root = pe_publish_parse_body(req);
    if (root == NULL)
        return NULL;
    if (!json_is_array(root)) {
        json_decref(root);
        refuse_not_array(req);
        return NULL;
    }
    size_t n = json_array_size(root);
    if (n > PE_BATCH_MAX_ITEMS) {
        json_decref(root);
        refuse_too_many(req);
        return NULL;
    }
    batch_t *batch = new_batch(req, n);
    size_t pos = 0, off, len;
    for (size_t i = 0; i != n; ++i) {
        batch_item_t *it = &batch->items[i];
        /* The body is valid JSON with n elements: the raw scan finds each of them. */
        if (!pe_json_array_next(req->entity.base, req->entity.len, &pos, &off, &len)) {
            item_error(it, "bad_request", "the item could not be read");
            continue;
        }
        item_fields_t f;
        fields_from_jansson(json_array_get(root, i), req->entity.base + off, len, &f);
        batch->outstanding += publish_item(thr, req, id, it, &f);
    }
    json_decref(root);
    return batch;
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
    /* Valid for sure (the usual body): read raw; else jansson parses, and words any error. */
    batch_t *batch = req->entity.base != NULL && pe_json_valid_fast(req->entity.base, req->entity.len)
                         ? publish_fast(thr, req, &id)
                         : publish_parsed(thr, req, &id);
    pe_identity_dispose(&id);
    if (batch == NULL)
        return 0;

    /* No callback runs inside pe_ps_publish, so none has run yet. */
    if (batch->outstanding == 0) {
        respond(batch);
        free_batch(batch);
        return 0;
    }
    batch->req_ref = pe_http_weak_req(req, &batch->req);
    return 0;
}

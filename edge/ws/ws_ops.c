/*
 * ws_ops.c: the JSON op protocol of /ws (docs/protocol.md "WebSocket"): the client's ops
 * (subscribe, unsubscribe, publish, ping) and the server's (message, subscribed, unsubscribed,
 * published, gap, engine, error), as the subscriber callbacks of a connection and the handler
 * of its text messages. Frames and the socket are ws.c's and the core's; this file only queues
 * text through pe_ws__queue_frame, and a message through the connection core with its shared
 * frame (edge/wire), never encoding one per subscriber.
 *
 * Identity ops (docs/auth.md): auth (the first message of a connection without a token) and
 * refresh (a new token for the same subject, no reconnect); the server's expiring notice comes
 * from the connection core's token timer through ws.c.
 *
 * Replies carry the op's "ref" spliced in as the client wrote it (jansson would re-print
 * numbers, and a client matches replies by ref). A "subscribed" waits until pubsub has fixed
 * the channel's start (on_ready), so a client that publishes after it receives its message
 * whatever the engine's latency.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "pubsub/json_text.h"
#include "edge/core/access.h"
#include "edge/core/thread.h"
#include "edge/util/bounds.h"
#include "edge/wire/wire.h"
#include "edge/ws/ws_ops.h"

/* An op's "ref" as the client wrote it (points into the op's text). */
typedef struct st_raw_ref_t {
    const char *text;
    size_t len;
} raw_ref_t;

/* A subscribe op (or a query-string channel) not confirmed yet. */
struct st_pe_ws_pending_sub_t {
    pe_ws_pending_sub_t *next;
    char *ref; /* the raw text of the op's ref, or NULL */
    size_t ref_len;
    size_t channel_len;
    char channel[PE_CHANNEL_MAXLEN + 1];
};

/* A publish op waiting for the engine; owned by pubsub's callback context until it runs. */
struct st_pe_ws_publish_t {
    pe_ws_conn_t *ws; /* weak: NULL once the connection is gone */
    pe_ws_publish_t *next, *prev;
    char *ref; /* the raw text of the op's ref, or NULL */
    size_t ref_len;
    size_t channel_len;
    char channel[PE_CHANNEL_MAXLEN + 1];
};

static void
add_pending_sub(pe_ws_conn_t *ws, const char *channel, size_t len, const char *ref, size_t ref_len)
{
    pe_ws_pending_sub_t *p = pe_calloc(1, sizeof(*p)), **tail = &ws->pending_subs;
    memcpy(p->channel, channel, len);
    p->channel_len = len;
    if (ref != NULL) {
        p->ref = pe_strndup(ref, ref_len);
        p->ref_len = ref_len;
    }
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = p;
}

/* Removes and returns the oldest pending entry of the channel, or NULL. */
static pe_ws_pending_sub_t *
take_pending_sub(pe_ws_conn_t *ws, const char *channel, size_t len)
{
    for (pe_ws_pending_sub_t **pp = &ws->pending_subs; *pp != NULL; pp = &(*pp)->next) {
        pe_ws_pending_sub_t *p = *pp;
        if (p->channel_len == len && memcmp(p->channel, channel, len) == 0) {
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void
free_pending_sub(pe_ws_pending_sub_t *p)
{
    pe_free(p->ref);
    pe_free(p);
}

/* ---- replies --------------------------------------------------------------------------------- */

/* Queues a JSON reply (steals root), with the op's ref spliced in (ref may be NULL). */
static void
queue_reply(pe_ws_conn_t *ws, json_t *root, const char *ref, size_t ref_len)
{
    char *text = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(root);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    if (ref != NULL && len != 0 && text[len - 1] == '}') {
        static const char key[] = ",\"ref\":";
        char *full = pe_malloc(len + sizeof(key) + ref_len);
        memcpy(full, text, len - 1);
        memcpy(full + len - 1, key, sizeof(key) - 1);
        memcpy(full + len - 1 + sizeof(key) - 1, ref, ref_len);
        full[len - 1 + sizeof(key) - 1 + ref_len] = '}';
        pe_ws__queue_frame(ws, PE_WS_OP_TEXT, 0, full, len + sizeof(key) - 1 + ref_len);
        pe_free(full);
    } else {
        pe_ws__queue_frame(ws, PE_WS_OP_TEXT, 0, text, len);
    }
    free(text);
}

static void
queue_ref_reply(pe_ws_conn_t *ws, json_t *root, const raw_ref_t *ref)
{
    queue_reply(ws, root, ref != NULL ? ref->text : NULL, ref != NULL ? ref->len : 0);
}

static void
queue_error(pe_ws_conn_t *ws, const raw_ref_t *ref, const char *code, const char *message)
{
    queue_ref_reply(ws, json_pack("{s:s,s:s,s:s}", "op", "error", "code", code, "message", message), ref);
}

/* An error about one channel (a refusal or a removal that no op of the client asked for). */
static void
queue_channel_error(pe_ws_conn_t *ws, const char *code, const char *channel, size_t len, const char *message, size_t message_len)
{
    queue_reply(
        ws, json_pack("{s:s,s:s,s:s%,s:s%}", "op", "error", "code", code, "channel", channel, len, "message", message, message_len),
        NULL, 0);
}

void
pe_ws_ops_refuse_binary(pe_ws_conn_t *ws)
{
    queue_error(ws, NULL, "unsupported", "binary messages are not part of pushedge.v1");
}

/* ---- subscriber callbacks (only queue: the core writes from the loop) ------------------------- */

static int
on_message(pe_sub_t *sub, pe_msg_t *msg)
{
    pe_ws_conn_t *ws = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, conn.sub, sub);
    if (!pe_conn_is_open(&ws->conn))
        return PE_SUB_PAUSE;
    /* A peer that limited our window below 15 bits gets the uncompressed shared frame. */
    int deflate = ws->pmd_enabled && ws->pmd.server_max_window_bits == 15 && pe_wire_ws_text_len(msg) >= PE_WS_DEFLATE_MIN;
    /* A join or leave (PE_MSG_JOIN/LEAVE) is its own op, in the same slots (edge/wire). */
    const pe_msg_encoding_t *frame = pe_wire_ws_message(msg, deflate);
    return pe_conn_push(&ws->conn, 0, msg, frame->data, frame->len);
}

/* The channel's position as a one-channel cursor (what `subscribed` and `gap` carry). */
static void
position_text(const pe_sub_t *sub, const char *channel, size_t len, char buf[PE_ID_MAXLEN + 1])
{
    pe_id_t id = PE_ID_ZERO;
    pe_sub_position(sub, channel, len, &id); /* the callbacks run for channels it has */
    pe_id_format(id, buf);
}

static int
on_gap(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_ws_conn_t *ws = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, conn.sub, sub);
    if (!pe_conn_is_open(&ws->conn))
        return PE_SUB_CONTINUE;
    /* The position after the gap, so a client that reconnects before the next message is not
     * told about the same gap again. */
    char pos[PE_ID_MAXLEN + 1];
    position_text(sub, channel, len, pos);
    queue_reply(ws, json_pack("{s:s,s:s%,s:s}", "op", "gap", "channel", channel, len, "cursor", pos), NULL, 0);
    return PE_SUB_CONTINUE; /* the gap op goes between the messages, where it happened */
}

static void
on_live(pe_sub_t *sub)
{
}

static void
on_ready(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_ws_conn_t *ws = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, conn.sub, sub);
    pe_ws_pending_sub_t *p = take_pending_sub(ws, channel, len);
    if (p == NULL)
        return;
    if (pe_conn_is_open(&ws->conn)) {
        /* The start position, so a client that has not received a message yet can still resume
         * without loss (on this or another transport). */
        char pos[PE_ID_MAXLEN + 1];
        position_text(sub, channel, len, pos);
        queue_reply(ws, json_pack("{s:s,s:s%,s:s}", "op", "subscribed", "channel", channel, len, "cursor", pos), p->ref,
                    p->ref_len);
    }
    free_pending_sub(p);
}

static void
on_engine(pe_sub_t *sub, int up)
{
    pe_ws_conn_t *ws = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, conn.sub, sub);
    if (!pe_conn_is_open(&ws->conn))
        return;
    /* One notice per outage; the subscription resumes by itself when the engine is back. */
    queue_reply(ws, json_pack("{s:s,s:s}", "op", "engine", "state", up ? "available" : "unavailable"), NULL, 0);
}

const pe_sub_callbacks_t pe_ws_ops_sub_callbacks = {on_message, on_gap, on_live, on_engine, on_ready, pe_conn_who};

/* ---- ops ------------------------------------------------------------------------------------- */

static void
on_query_channel(void *ctx, const char *channel, size_t len)
{
    add_pending_sub(ctx, channel, len, NULL, 0);
}

void
pe_ws_ops_subscribe_query(pe_ws_conn_t *ws, const pe_sub_query_t *q)
{
    pe_conn_subscribe(&ws->conn.sub, q, on_query_channel, ws);
}

static void
on_published(void *ctx, const char *err, const pe_id_t *id, int replayed)
{
    pe_ws_publish_t *p = ctx;
    pe_ws_conn_t *ws = p->ws;
    if (ws != NULL) {
        if (p->prev != NULL)
            p->prev->next = p->next;
        else
            ws->publishes = p->next;
        if (p->next != NULL)
            p->next->prev = p->prev;
        raw_ref_t ref = {p->ref, p->ref_len};
        if (err != NULL) {
            queue_error(ws, p->ref != NULL ? &ref : NULL, err == pe_ps_err_not_replicated ? "not_replicated" : "engine_unavailable",
                        err);
        } else {
            char id_str[PE_ID_MAXLEN + 1];
            pe_id_format(*id, id_str);
            json_t *root = json_pack("{s:s,s:s%,s:s}", "op", "published", "channel", p->channel, p->channel_len, "id", id_str);
            if (replayed)
                json_object_set_new(root, "replayed", json_true());
            queue_reply(ws, root, p->ref, p->ref_len);
        }
    }
    pe_free(p->ref);
    pe_free(p);
}

static void
subscribe(pe_ws_conn_t *ws, const raw_ref_t *ref, const char *channel, size_t len, const pe_cursor_t *since, int presence)
{
    pe_start_t start = pe_start_from_cursor(since, channel, len, 1);
    pe_access_t access = pe_access_subscribe(ws->conn.thr->server->cfg, &ws->conn.identity, channel, len);
    if (access != PE_ACCESS_OK) {
        queue_error(ws, ref, pe_access_code(access), pe_access_message(access));
        return;
    }
    if (pe_ps_engine_channels_full(pe_ps_node_engine(ws->conn.thr->node), 1)) {
        queue_error(ws, ref, "channel_limit", pe_ps_err_channel_limit);
        return;
    }
    const char *err =
        pe_sub_add_flags(&ws->conn.sub, channel, len, start, presence ? PE_SUB_PRESENCE_EVENTS | PE_SUB_PRESENCE_MEMBER : 0);
    if (err != NULL) {
        queue_error(ws, ref,
                    err == pe_ps_err_bad_channel ? "bad_channel"
                    : err == pe_ps_err_duplicate ? "already_subscribed"
                                                 : "too_many_channels",
                    err);
        return;
    }
    add_pending_sub(ws, channel, len, ref != NULL ? ref->text : NULL, ref != NULL ? ref->len : 0);
}

static void
unsubscribe(pe_ws_conn_t *ws, const raw_ref_t *ref, const char *channel, size_t len)
{
    if (pe_sub_remove(&ws->conn.sub, channel, len) != 0) {
        queue_error(ws, ref, "not_subscribed", "not subscribed to that channel");
        return;
    }
    pe_ws_pending_sub_t *p = take_pending_sub(ws, channel, len);
    if (p != NULL)
        free_pending_sub(p); /* removed before it was ready: never confirmed */
    queue_ref_reply(ws, json_pack("{s:s,s:s%}", "op", "unsubscribed", "channel", channel, len), ref);
}

static void
publish(pe_ws_conn_t *ws, const raw_ref_t *ref, json_t *root, const char *text, size_t len, const char *channel, size_t channel_len)
{
    size_t off, vlen;
    json_t *jkey = json_object_get(root, "key");
    pe_access_t by_token = ws->token_may_publish && ws->conn.identity.authenticated
                               ? pe_may_publish(&ws->conn.identity, channel, channel_len)
                               : PE_ACCESS_UNAUTHORIZED;
    if (!ws->may_publish && by_token == PE_ACCESS_FORBIDDEN) {
        queue_error(ws, ref, "forbidden", "the token does not allow publishing to this channel");
        return;
    }
    if (!ws->may_publish && by_token != PE_ACCESS_OK) {
        queue_error(ws, ref, "forbidden",
                    ws->conn.thr->server->cfg->api_key != NULL
                        ? "publishing needs the API key (Authorization: Bearer) at the handshake"
                        : "publishing needs a loopback client and an allowed origin (or set --api-key)");
        return;
    }
    if (!pe_json_find_member(text, len, "data", 4, &off, &vlen)) {
        queue_error(ws, ref, "bad_request", "the data field is required");
        return;
    }
    if (jkey != NULL && (!json_is_string(jkey) || !pe_ps_key_is_valid(json_string_value(jkey), json_string_length(jkey)))) {
        queue_error(ws, ref, "bad_key", pe_ps_err_bad_key);
        return;
    }
    pe_ws_publish_t *p = pe_calloc(1, sizeof(*p));
    p->ws = ws;
    if (ref != NULL) {
        p->ref = pe_strndup(ref->text, ref->len);
        p->ref_len = ref->len;
    }
    memcpy(p->channel, channel, channel_len);
    p->channel_len = channel_len;
    /* The value is forwarded as the client wrote it (jansson would re-print numbers). */
    const char *err = pe_ps_publish(ws->conn.thr->node, channel, channel_len, jkey != NULL ? json_string_value(jkey) : NULL,
                                    jkey != NULL ? json_string_length(jkey) : 0, text + off, vlen, on_published, p);
    if (err != NULL) {
        queue_error(ws, ref, err == pe_ps_err_channel_limit ? "channel_limit" : "engine_unavailable", err);
        pe_free(p->ref);
        pe_free(p);
        return;
    }
    p->next = ws->publishes;
    if (p->next != NULL)
        p->next->prev = p;
    ws->publishes = p;
}

void
pe_ws_ops_expiring(pe_ws_conn_t *ws)
{
    queue_reply(ws, json_pack("{s:s,s:I}", "op", "expiring", "exp", (json_int_t)ws->conn.identity.exp), NULL, 0);
}

/* Removes the channel from the subscription and its unconfirmed subscribe, if any. */
static void
drop_channel(pe_ws_conn_t *ws, const char *channel, size_t len)
{
    pe_sub_remove(&ws->conn.sub, channel, len);
    pe_ws_pending_sub_t *p = take_pending_sub(ws, channel, len);
    if (p != NULL)
        free_pending_sub(p);
}

void
pe_ws_ops_channel_revoked(pe_ws_conn_t *ws, const char *channel, size_t len, const pe_revocation_t *r)
{
    drop_channel(ws, channel, len); /* the subscription is gone already; the confirmation too now */
    queue_channel_error(ws, "revoked", channel, len, r->reason, r->reason_len);
}

/* The token of an auth or refresh op, verified: 0 with *id filled, or the error op queued. */
static int
verify_op_token(pe_ws_conn_t *ws, const raw_ref_t *ref, json_t *root, pe_identity_t *id)
{
    json_t *jtoken = json_object_get(root, "token");
    if (!json_is_string(jtoken)) {
        queue_error(ws, ref, "bad_request", "the token field is required");
        return -1;
    }
    pe_jwt_result_t r = pe_access_verify(ws->conn.thr->server->cfg, json_string_value(jtoken), json_string_length(jtoken), id);
    if (r != PE_JWT_OK) {
        queue_error(ws, ref, r == PE_JWT_EXPIRED ? "token_expired" : "unauthorized",
                    r == PE_JWT_EXPIRED ? "the token has expired" : "the token is not valid");
        return -1;
    }
    return 0;
}

/* {"op":"auth","token":"<jwt>"}: the in-band token of a client that could not send one with the
 * handshake (docs/auth.md). Only as the first message of an anonymous connection; a token
 * already in place is replaced by refresh (future work), not here. */
static void
authenticate(pe_ws_conn_t *ws, const raw_ref_t *ref, json_t *root, int first)
{
    const pe_config_t *cfg = ws->conn.thr->server->cfg;
    if (cfg->auth_mode == PE_AUTH_MODE_OFF) {
        queue_error(ws, ref, "bad_request", "this server does not read tokens (--auth off)");
        return;
    }
    if (!first || ws->conn.identity.authenticated) {
        queue_error(ws, ref, "bad_request", "auth must be the first message of a connection without a token");
        return;
    }
    pe_identity_t id;
    if (verify_op_token(ws, ref, root, &id) != 0)
        return;
    json_t *reply = json_pack("{s:s}", "op", "authenticated");
    json_object_set_new(reply, "user", id.sub != NULL ? json_stringn(id.sub, id.sub_len) : json_null());
    json_object_set_new(reply, "exp", id.exp != 0 ? json_integer(id.exp) : json_null());
    /* Also ends the auth deadline of --auth required and starts the token's expiry timer. */
    pe_conn_set_identity(&ws->conn, &id);
    pe_conn_register_user(&ws->conn);
    queue_ref_reply(ws, reply, ref);
}

/*
 * {"op":"refresh","token":"<jwt>"}: a new token for the same subject replaces the connection's,
 * without a reconnect (docs/auth.md "Refresh"). Any refusal keeps the connection on its old
 * token (which still ends at its own exp). Channels the new token does not allow are removed,
 * each with an error op naming it, before the "refreshed" reply; messages of the others flow
 * on untouched (the subscription is the same object).
 */
static void
refresh(pe_ws_conn_t *ws, const raw_ref_t *ref, json_t *root)
{
    const pe_config_t *cfg = ws->conn.thr->server->cfg;
    if (cfg->auth_mode == PE_AUTH_MODE_OFF) {
        queue_error(ws, ref, "bad_request", "this server does not read tokens (--auth off)");
        return;
    }
    if (!ws->conn.identity.authenticated) {
        queue_error(ws, ref, "bad_request", "refresh replaces a token: this connection has none (send auth)");
        return;
    }
    pe_identity_t id;
    if (verify_op_token(ws, ref, root, &id) != 0)
        return;
    /* Another subject would be another user taking the connection over, with its positions. */
    const pe_identity_t *old = &ws->conn.identity;
    if (id.sub_len != old->sub_len || (id.sub == NULL) != (old->sub == NULL) ||
        (id.sub != NULL && memcmp(id.sub, old->sub, id.sub_len) != 0)) {
        pe_identity_dispose(&id);
        queue_error(ws, ref, "forbidden", "the new token is for another user");
        return;
    }
    if (ws->conn.sub.cb != NULL) {
        /* Backwards: removing a channel moves the ones after it. */
        for (size_t i = pe_sub_num_channels(&ws->conn.sub); i-- != 0;) {
            size_t len;
            const char *name = pe_sub_channel(&ws->conn.sub, i, &len);
            pe_access_t a = pe_access_subscribe(cfg, &id, name, len);
            if (a == PE_ACCESS_OK)
                continue;
            char copy[PE_CHANNEL_MAXLEN + 1]; /* the name goes with the channel */
            memcpy(copy, name, len);
            drop_channel(ws, copy, len);
            const char *msg = pe_access_message(a);
            queue_channel_error(ws, pe_access_code(a), copy, len, msg, strlen(msg));
        }
    }
    json_t *reply = json_pack("{s:s}", "op", "refreshed");
    json_object_set_new(reply, "exp", id.exp != 0 ? json_integer(id.exp) : json_null());
    pe_conn_set_identity(&ws->conn, &id);
    queue_ref_reply(ws, reply, ref);
}

void
pe_ws_ops_handle(pe_ws_conn_t *ws, const char *text, size_t len)
{
    int first = !ws->ops_seen;
    ws->ops_seen = 1;
    json_error_t jerr;
    json_t *root = pe_json_load_untrusted(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    if (root == NULL || !json_is_object(root)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "a JSON object is expected%s%s", root == NULL ? ": " : "", root == NULL ? jerr.text : "");
        queue_error(ws, NULL, "invalid_json", msg);
        json_decref(root);
        return;
    }
    size_t ref_off, ref_len;
    raw_ref_t raw_ref;
    const raw_ref_t *ref = NULL;
    if (pe_json_find_member(text, len, "ref", 3, &ref_off, &ref_len)) {
        raw_ref = (raw_ref_t){text + ref_off, ref_len};
        ref = &raw_ref;
    }
    const char *op = json_string_value(json_object_get(root, "op"));
    json_t *jchannel = json_object_get(root, "channel");
    const char *channel = json_string_value(jchannel);
    size_t channel_len = channel != NULL ? json_string_length(jchannel) : 0;

    if (op == NULL) {
        queue_error(ws, ref, "bad_request", "the op field is required");
    } else if (strcmp(op, "ping") == 0) {
        queue_ref_reply(ws, json_pack("{s:s}", "op", "pong"), ref);
    } else if (strcmp(op, "auth") == 0) {
        authenticate(ws, ref, root, first);
    } else if (strcmp(op, "refresh") == 0) {
        refresh(ws, ref, root);
    } else if (strcmp(op, "subscribe") != 0 && strcmp(op, "unsubscribe") != 0 && strcmp(op, "publish") != 0) {
        queue_error(ws, ref, "unknown_op", "unknown op");
    } else if (channel == NULL) {
        queue_error(ws, ref, "bad_request", "the channel field is required");
    } else if (!pe_channel_is_valid(channel, channel_len)) {
        queue_error(ws, ref, "bad_channel", pe_ps_err_bad_channel);
    } else if (op[0] == 's') {
        json_t *jsince = json_object_get(root, "since");
        pe_cursor_t since = {.kind = PE_CURSOR_NONE};
        const char *err = NULL;
        if (jsince != NULL && !json_is_string(jsince)) {
            queue_error(ws, ref, "bad_cursor", "since must be a string");
        } else if (jsince != NULL && pe_cursor_parse(json_string_value(jsince), json_string_length(jsince), &since, &err) != 0) {
            queue_error(ws, ref, "bad_cursor", err != NULL ? err : "malformed cursor");
        } else {
            subscribe(ws, ref, channel, channel_len, &since, json_is_true(json_object_get(root, "presence")));
        }
    } else if (op[0] == 'u') {
        unsubscribe(ws, ref, channel, channel_len);
    } else {
        publish(ws, ref, root, text, len, channel, channel_len);
    }
    json_decref(root);
}

void
pe_ws_ops_dispose(pe_ws_conn_t *ws)
{
    for (pe_ws_publish_t *p = ws->publishes; p != NULL; p = p->next)
        p->ws = NULL;
    while (ws->pending_subs != NULL) {
        pe_ws_pending_sub_t *p = ws->pending_subs;
        ws->pending_subs = p->next;
        free_pending_sub(p);
    }
}

/*
 * ws.c: GET /ws and GET /ws/echo, the WebSocket transport (RFC 6455 + RFC 7692).
 *
 * Why our own framing instead of h2o's websocket.h (wslay): wslay copies every message it sends
 * into the connection's write buffer, and h2o 2.2 cannot negotiate extensions. Fan-out to 10k
 * subscribers would copy each message 10k times. Here the handshake is checked by us, the
 * socket is taken over with h2o_http1_upgrade, input goes through the pure reader of
 * ws_frame.c, and output is the outq of SSE: each message's complete frame (header + payload,
 * and separately its permessage-deflate form) is built once, lazily, as a shared encoding of the
 * message (pe_msg_encoding), and every subscriber's writev points at those same bytes.
 *
 * Compression. With permessage-deflate the server always uses server_no_context_takeover, so a
 * message compresses to the same bytes for every connection: compressed once, shared. Messages
 * under PE_WS_DEFLATE_MIN bytes are sent uncompressed (RSV1 clear, which the extension allows
 * per message). A connection that limited our window below 15 bits gets uncompressed frames
 * from the shared path (the echo endpoint compresses with its own window). The client is told
 * client_no_context_takeover, so no inflate state outlives one incoming message.
 *
 * Lifetime. The connection object is ours (heap) from the handshake until conn_free, which runs
 * only from socket callbacks and timers, never from inside a pubsub callback (those only queue
 * and arm a zero timeout). The socket is closed only when no write is in flight; a write stuck
 * on a peer that stopped reading is failed by shutting the socket down, which brings h2o's
 * write callback back with an error.
 *
 * Input is paused while output is backed up. Pongs, op replies and echoes are output the peer
 * asked for; a peer that sends faster than it reads (a ping flood) would grow the queue without
 * bound. Past PE_WS_READ_PAUSE queued bytes the connection stops reading and leaves the rest of
 * its input in the socket buffer; TCP flow control then holds the peer back. Reading resumes once
 * the queue drains below that. A paused peer whose writes make no progress for two ping
 * intervals (the silence rule's window) reads nothing: a slow consumer, closed with 1013 like a
 * subscriber that falls behind. The socket is read here, PE_WS_READ_CHUNK bytes per wake-up
 * (h2o_socket_dont_read makes h2o's read callback a readiness notice): h2o's own reads would
 * drain the whole kernel receive buffer into memory before the pause could apply.
 *
 * Closing: a peer's close is answered with the same code and the TCP connection closed after
 * the write; a protocol violation sends the close code (1002, 1007, 1009) and closes after the
 * write; the server's own closes (1012 drain, 1013 slow consumer) wait up to PE_WS_CLOSE_WAIT_MS
 * for the peer's answer.
 */
#include <jansson.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include "pubsub/alloc.h"
#include "pubsub/json_text.h"
#include "edge/util/log.h"
#include "edge/core/outq.h"
#include "edge/util/query.h"
#include "edge/ws/ws.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include "edge/core/cors.h"
#include "edge/core/auth.h"
#include <h2o/http1.h> /* after h2o.h, which it needs */
#include "edge/wire/ws_deflate.h"
#include "edge/wire/ws_frame.h"
#include "edge/ws/ws_handshake.h"

enum { ENC_PLAIN = 0, ENC_DEFLATE = 1 };

typedef struct st_ws_publish_t ws_publish_t;
typedef struct st_ws_pending_sub_t ws_pending_sub_t;

/* An op's "ref" as the client wrote it (points into the op's text). */
typedef struct st_raw_ref_t {
    const char *text;
    size_t len;
} raw_ref_t;

typedef struct st_pe_ws_conn_t {
    pe_thread_t *thr;
    h2o_socket_t *sock; /* NULL until the 101 is written */
    pe_stream_t stream;
    pe_sub_t sub;
    pe_ws_reader_t reader;
    pe_outq_t out;
    pe_ws_pmd_t pmd;
    uint64_t last_rx; /* loop ms of the last byte received */
    uint64_t last_tx; /* loop ms of the last write completed (or of the pause, if later) */
    size_t max_queue; /* bytes queued and in flight past which it is a slow consumer */
    h2o_timeout_entry_t ping_entry;
    h2o_timeout_entry_t flush_entry;
    h2o_timeout_entry_t close_entry;
    ws_publish_t *publishes;        /* publish ops waiting for the engine */
    ws_pending_sub_t *pending_subs; /* subscriptions whose "subscribed" waits for on_ready */
    pe_sub_query_t *initial;        /* channels from the query string, until subscribed */
    char *initial_arena;
    unsigned pmd_enabled : 1;
    unsigned echo : 1;
    unsigned may_publish : 1;
    unsigned sub_inited : 1;
    unsigned writing : 1;
    unsigned close_sent : 1;
    unsigned closing : 1; /* close the TCP connection once the queue is written */
    unsigned overflow : 1;
    unsigned reading_stopped : 1;
    unsigned read_paused : 1; /* input left unread until the queue drains (PE_WS_READ_PAUSE) */
    unsigned own_read : 1;    /* we read the socket (not TLS), h2o only notifies */
    unsigned lingering : 1;   /* our last frame is written: draining the peer's input until EOF */
} pe_ws_conn_t;

/* A subscribe op (or a query-string channel) not confirmed yet: the reply goes out when pubsub has
 * fixed the channel's start (on_ready), so a client that publishes after "subscribed" receives
 * its message whatever the engine's latency. */
struct st_ws_pending_sub_t {
    ws_pending_sub_t *next;
    char *ref; /* the raw text of the op's ref, or NULL */
    size_t ref_len;
    size_t channel_len;
    char channel[PE_CHANNEL_MAXLEN + 1];
};

static void
add_pending_sub(pe_ws_conn_t *conn, const char *channel, size_t len, const char *ref, size_t ref_len)
{
    ws_pending_sub_t *p = pe_calloc(1, sizeof(*p)), **tail = &conn->pending_subs;
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
static ws_pending_sub_t *
take_pending_sub(pe_ws_conn_t *conn, const char *channel, size_t len)
{
    for (ws_pending_sub_t **pp = &conn->pending_subs; *pp != NULL; pp = &(*pp)->next) {
        ws_pending_sub_t *p = *pp;
        if (p->channel_len == len && memcmp(p->channel, channel, len) == 0) {
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void
free_pending_sub(ws_pending_sub_t *p)
{
    pe_free(p->ref);
    pe_free(p);
}

struct st_ws_publish_t {
    pe_ws_conn_t *conn; /* weak: NULL once the connection is gone */
    ws_publish_t *next, *prev;
    char *ref; /* the raw text of the op's ref, or NULL */
    size_t ref_len;
    size_t channel_len;
    char channel[PE_CHANNEL_MAXLEN + 1];
};

static void flush(pe_ws_conn_t *conn);
static void schedule_flush(pe_ws_conn_t *conn);
static void conn_free(pe_ws_conn_t *conn);
static void set_overflow(pe_ws_conn_t *conn);
static void resume_reading(pe_ws_conn_t *conn);
static void on_read(h2o_socket_t *sock, const char *err);

/* ---- frames ---------------------------------------------------------------------------------- */

static void
queue_frame(pe_ws_conn_t *conn, int opcode, int rsv1, const void *payload, size_t len)
{
    /* Nothing may follow our close frame (RFC 6455 5.5.1): replies to what the peer sent after
     * it are dropped. */
    if (conn->close_sent)
        return;
    uint8_t hdr[PE_WS_MAX_HEADER];
    size_t hlen = pe_ws_encode_header(hdr, opcode, rsv1, len);
    pe_outq_text(&conn->out, hdr, hlen);
    pe_outq_text(&conn->out, payload, len);
    pe_outq_push(&conn->out, hlen + len, NULL, NULL, 0);
    schedule_flush(conn);
}

/* Queues a JSON reply (steals root), with the op's "ref" spliced in as the client wrote it
 * (ref may be NULL): jansson would re-print numbers, and a client matches replies by ref. */
static void
queue_reply(pe_ws_conn_t *conn, json_t *root, const char *ref, size_t ref_len)
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
        queue_frame(conn, PE_WS_OP_TEXT, 0, full, len + sizeof(key) - 1 + ref_len);
        pe_free(full);
    } else {
        queue_frame(conn, PE_WS_OP_TEXT, 0, text, len);
    }
    free(text);
}

static void
queue_json(pe_ws_conn_t *conn, json_t *root)
{
    queue_reply(conn, root, NULL, 0);
}

static void
queue_error(pe_ws_conn_t *conn, const raw_ref_t *ref, const char *code, const char *message)
{
    json_t *root = json_pack("{s:s,s:s,s:s}", "op", "error", "code", code, "message", message);
    queue_reply(conn, root, ref != NULL ? ref->text : NULL, ref != NULL ? ref->len : 0);
}

static void
queue_close(pe_ws_conn_t *conn, int code, const char *reason)
{
    if (conn->close_sent)
        return;
    uint8_t payload[125];
    size_t len = code == 1005 ? 0 : pe_ws_encode_close_payload(payload, code, reason);
    queue_frame(conn, PE_WS_OP_CLOSE, 0, payload, len);
    conn->close_sent = 1;
}

/* ---- shared message encodings ---------------------------------------------------------------- */

#define OP_PREFIX "{\"op\":\"message\",\"channel\":\""
#define OP_ID "\",\"id\":\""
#define OP_DATA "\",\"data\":"

static size_t
op_text_len(const pe_msg_t *msg)
{
    return sizeof(OP_PREFIX) - 1 + msg->channel_len + sizeof(OP_ID) - 1 + msg->id_len + sizeof(OP_DATA) - 1 + msg->data_len + 1;
}

static void
write_op_text(const pe_msg_t *msg, char *p)
{
#define PUT(s, n)                                                                                                                  \
    do {                                                                                                                           \
        memcpy(p, (s), (n));                                                                                                       \
        p += (n);                                                                                                                  \
    } while (0)
    PUT(OP_PREFIX, sizeof(OP_PREFIX) - 1);
    PUT(msg->channel, msg->channel_len);
    PUT(OP_ID, sizeof(OP_ID) - 1);
    PUT(msg->id_str, msg->id_len);
    PUT(OP_DATA, sizeof(OP_DATA) - 1);
    PUT(msg->data, msg->data_len);
    PUT("}", 1);
#undef PUT
}

static pe_msg_encoding_t *
make_frame(int rsv1, const void *payload, size_t len)
{
    uint8_t hdr[PE_WS_MAX_HEADER];
    size_t hlen = pe_ws_encode_header(hdr, PE_WS_OP_TEXT, rsv1, len);
    pe_msg_encoding_t *enc = pe_malloc(sizeof(*enc) + hlen + len);
    memcpy(enc->data, hdr, hlen);
    memcpy(enc->data + hlen, payload, len);
    enc->len = hlen + len;
    return enc;
}

static pe_msg_encoding_t *
build_plain(const pe_msg_t *msg)
{
    __atomic_fetch_add(&pe_ws_frames_built[ENC_PLAIN], 1, __ATOMIC_RELAXED);
    size_t len = op_text_len(msg);
    uint8_t hdr[PE_WS_MAX_HEADER];
    size_t hlen = pe_ws_encode_header(hdr, PE_WS_OP_TEXT, 0, len);
    pe_msg_encoding_t *enc = pe_malloc(sizeof(*enc) + hlen + len);
    memcpy(enc->data, hdr, hlen);
    write_op_text(msg, enc->data + hlen);
    enc->len = hlen + len;
    return enc;
}

static pe_msg_encoding_t *
build_deflate(const pe_msg_t *msg)
{
    __atomic_fetch_add(&pe_ws_frames_built[ENC_DEFLATE], 1, __ATOMIC_RELAXED);
    size_t len = op_text_len(msg);
    char *text = pe_malloc(len);
    write_op_text(msg, text);
    uint8_t *z;
    size_t zlen;
    pe_msg_encoding_t *enc;
    if (pe_ws_deflate_message((const uint8_t *)text, len, 15, &z, &zlen) == 0) {
        enc = make_frame(1, z, zlen);
        pe_free(z);
    } else {
        /* zlib failed: an uncompressed frame is always valid under permessage-deflate. */
        enc = make_frame(0, text, len);
    }
    pe_free(text);
    return enc;
}

/* ---- pubsub callbacks (never call h2o from here) --------------------------------------------- */

static int
on_message(pe_sub_t *sub, pe_msg_t *msg)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, sub, sub);
    if (conn->overflow || conn->close_sent)
        return PE_SUB_PAUSE;
    int deflate = conn->pmd_enabled && conn->pmd.server_max_window_bits == 15 && op_text_len(msg) >= PE_WS_DEFLATE_MIN;
    const pe_msg_encoding_t *enc = pe_msg_encoding(msg, deflate ? ENC_DEFLATE : ENC_PLAIN, deflate ? build_deflate : build_plain);
    pe_outq_push(&conn->out, 0, msg, enc->data, enc->len);
    if (pe_outq_bytes(&conn->out) > conn->max_queue)
        set_overflow(conn);
    schedule_flush(conn);
    return pe_outq_bytes(&conn->out) >= PE_WS_LOW_WATER ? PE_SUB_PAUSE : PE_SUB_CONTINUE;
}

/* The channel's position as a one-channel cursor (what `subscribed` and `gap` carry). */
static void
position_text(const pe_sub_t *sub, const char *channel, size_t len, char buf[PE_ID_MAXLEN + 1])
{
    pe_id_t id = PE_ID_ZERO;
    pe_sub_position(sub, channel, len, &id); /* the callbacks run for channels it has */
    pe_id_format(id, buf);
}

static void
on_gap(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, sub, sub);
    if (conn->overflow || conn->close_sent)
        return;
    /* The position after the gap, so a client that reconnects before the next message is not
     * told about the same gap again. */
    char pos[PE_ID_MAXLEN + 1];
    position_text(sub, channel, len, pos);
    queue_json(conn, json_pack("{s:s,s:s%,s:s}", "op", "gap", "channel", channel, len, "cursor", pos));
}

static void
on_live(pe_sub_t *sub)
{
}

static void
on_ready(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, sub, sub);
    ws_pending_sub_t *p = take_pending_sub(conn, channel, len);
    if (p == NULL)
        return;
    if (!conn->overflow && !conn->close_sent) {
        /* The start position, so a client that has not received a message yet can still resume
         * without loss (on this or another transport). */
        char pos[PE_ID_MAXLEN + 1];
        position_text(sub, channel, len, pos);
        queue_reply(conn, json_pack("{s:s,s:s%,s:s}", "op", "subscribed", "channel", channel, len, "cursor", pos), p->ref,
                    p->ref_len);
    }
    free_pending_sub(p);
}

static void
on_engine(pe_sub_t *sub, int up)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, sub, sub);
    if (conn->overflow || conn->close_sent)
        return;
    /* One notice per outage; the subscription resumes by itself when the engine is back. */
    queue_json(conn, json_pack("{s:s,s:s}", "op", "engine", "state", up ? "available" : "unavailable"));
}

static const pe_sub_callbacks_t ws_callbacks = {on_message, on_gap, on_live, on_engine, on_ready};

/* ---- writing --------------------------------------------------------------------------------- */

static void
on_write_complete(h2o_socket_t *sock, const char *err)
{
    pe_ws_conn_t *conn = sock->data;
    conn->writing = 0;
    if (err != NULL) {
        conn_free(conn);
        return;
    }
    conn->last_tx = h2o_now(conn->thr->loop);
    pe_outq_written(&conn->out);
    if (conn->read_paused && pe_outq_bytes(&conn->out) < PE_WS_READ_PAUSE)
        resume_reading(conn);
    if (conn->sub_inited && !conn->overflow && !conn->close_sent && pe_outq_bytes(&conn->out) < PE_WS_LOW_WATER)
        pe_sub_resume(&conn->sub);
    flush(conn); /* may free conn */
}

/* The queue passed its bound (conn->max_queue): nothing more is queued, and the connection is closed with
 * 1013 once the write in flight completes, or torn down by the close timer if that write is stuck
 * on a peer that stopped reading (flush cannot run while it is in flight). */
static void
set_overflow(pe_ws_conn_t *conn)
{
    if (conn->overflow)
        return;
    conn->overflow = 1;
    if (conn->read_paused && !conn->reading_stopped && !conn->lingering) {
        conn->read_paused = 0;
        h2o_socket_read_start(conn->sock, on_read);
    }
    PE_STAT_ADD(conn->thr->stats.slow_consumers[PE_TRANSPORT_WS], 1);
    pe_log(PE_LOG_INFO, "edge/ws", "thread %u: closing a slow consumer (1013)", conn->thr->index);
    if (!h2o_timeout_is_linked(&conn->close_entry))
        h2o_timeout_link(conn->thr->loop, &conn->thr->ws_close_timeout, &conn->close_entry);
}

/* Ends a connection that cannot be closed politely: free now, or fail the stuck write first. */
static void
close_now(pe_ws_conn_t *conn)
{
    if (conn->writing) {
        conn->closing = 1;
        shutdown(h2o_socket_get_fd(conn->sock), SHUT_RDWR);
        return;
    }
    conn_free(conn);
}

static void
on_linger_read(h2o_socket_t *sock, const char *err)
{
    pe_ws_conn_t *conn = sock->data;
    if (err != NULL) {
        conn_free(conn); /* the peer's EOF (or an error): done */
        return;
    }
    pe_socket_release_input(sock, 1);
}

/*
 * Our last frame (the close) is written. Closing a socket that still has unread input makes the
 * kernel answer with a reset, which can destroy that frame before the peer reads it (a peer still
 * sending the message we refused with 1009, say). So: half-close, discard what the peer still
 * sends, and free on its EOF or when the close timer fires.
 */
static void
linger(pe_ws_conn_t *conn)
{
    if (conn->lingering)
        return;
    conn->lingering = 1;
    /* h2o reads (and we discard) from here on: only the peer's EOF matters. */
    if (conn->own_read)
        h2o_socket_dont_read(conn->sock, 0);
    shutdown(h2o_socket_get_fd(conn->sock), SHUT_WR);
    pe_socket_release_input(conn->sock, 1);
    h2o_socket_read_start(conn->sock, on_linger_read);
    if (!h2o_timeout_is_linked(&conn->close_entry))
        h2o_timeout_link(conn->thr->loop, &conn->thr->ws_close_timeout, &conn->close_entry);
}

/* Writes what is queued; frees the connection when it is closing and everything was written.
 * Callers must not touch conn after it returns. */
static void
flush(pe_ws_conn_t *conn)
{
    if (conn->sock == NULL || conn->writing)
        return;
    if (conn->overflow && !conn->close_sent) {
        /* The write in flight finished before the close timer: the 1013 goes out in place of
         * what is queued. */
        pe_outq_drop_queued(&conn->out);
        queue_close(conn, PE_WS_CLOSE_TRY_AGAIN, "slow consumer: reconnect and resume");
        conn->closing = 1;
    }
    h2o_iovec_t *iov;
    size_t niov = pe_outq_next_chunk(&conn->out, PE_WS_MAX_BATCH, &iov);
    if (niov == 0) {
        if (conn->closing) {
            linger(conn);
            return;
        }
        /* Everything is written: an idle subscriber keeps no queue capacity (the allocator's
         * per-thread cache makes the next message's allocation cheap). */
        pe_outq_trim(&conn->out);
        return;
    }
    conn->writing = 1;
    h2o_socket_write(conn->sock, iov, niov, on_write_complete);
}

static void
on_flush_timeout(h2o_timeout_entry_t *entry)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, flush_entry, entry);
    flush(conn);
}

static void
schedule_flush(pe_ws_conn_t *conn)
{
    if (conn->sock != NULL && !h2o_timeout_is_linked(&conn->flush_entry))
        h2o_timeout_link(conn->thr->loop, &conn->thr->ctx.zero_timeout, &conn->flush_entry);
}

/* ---- ops ------------------------------------------------------------------------------------- */

static void
on_published(void *ctx, const char *err, const pe_id_t *id, int replayed)
{
    ws_publish_t *p = ctx;
    pe_ws_conn_t *conn = p->conn;
    if (conn != NULL) {
        if (p->prev != NULL)
            p->prev->next = p->next;
        else
            conn->publishes = p->next;
        if (p->next != NULL)
            p->next->prev = p->prev;
        raw_ref_t ref = {p->ref, p->ref_len};
        if (err != NULL) {
            queue_error(conn, p->ref != NULL ? &ref : NULL, "engine_unavailable", err);
        } else {
            char id_str[PE_ID_MAXLEN + 1];
            pe_id_format(*id, id_str);
            json_t *root = json_pack("{s:s,s:s%,s:s}", "op", "published", "channel", p->channel, p->channel_len, "id", id_str);
            if (replayed)
                json_object_set_new(root, "replayed", json_true());
            queue_reply(conn, root, p->ref, p->ref_len);
        }
    }
    pe_free(p->ref);
    pe_free(p);
}

static void
subscribe(pe_ws_conn_t *conn, const raw_ref_t *ref, const char *channel, size_t len, const pe_cursor_t *since)
{
    pe_start_t start = pe_start_from_cursor(since, channel, len, 1);
    if (pe_ps_engine_channels_full(pe_ps_node_engine(conn->thr->node), 1)) {
        queue_error(conn, ref, "channel_limit", pe_ps_err_channel_limit);
        return;
    }
    const char *err = pe_sub_add(&conn->sub, channel, len, start);
    if (err != NULL) {
        queue_error(conn, ref,
                    err == pe_ps_err_bad_channel ? "bad_channel"
                    : err == pe_ps_err_duplicate ? "already_subscribed"
                                                 : "too_many_channels",
                    err);
        return;
    }
    add_pending_sub(conn, channel, len, ref != NULL ? ref->text : NULL, ref != NULL ? ref->len : 0);
}

static void
handle_op(pe_ws_conn_t *conn, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *root = pe_json_load_untrusted(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    if (root == NULL || !json_is_object(root)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "a JSON object is expected%s%s", root == NULL ? ": " : "", root == NULL ? jerr.text : "");
        queue_error(conn, NULL, "invalid_json", msg);
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
        queue_error(conn, ref, "bad_request", "the op field is required");
    } else if (strcmp(op, "ping") == 0) {
        queue_reply(conn, json_pack("{s:s}", "op", "pong"), ref != NULL ? ref->text : NULL, ref != NULL ? ref->len : 0);
    } else if (strcmp(op, "subscribe") == 0 || strcmp(op, "unsubscribe") == 0 || strcmp(op, "publish") == 0) {
        if (channel == NULL) {
            queue_error(conn, ref, "bad_request", "the channel field is required");
        } else if (!pe_channel_is_valid(channel, channel_len)) {
            queue_error(conn, ref, "bad_channel", pe_ps_err_bad_channel);
        } else if (op[0] == 's') {
            json_t *jsince = json_object_get(root, "since");
            pe_cursor_t since = {.kind = PE_CURSOR_NONE};
            const char *err = NULL;
            if (jsince != NULL && !json_is_string(jsince)) {
                queue_error(conn, ref, "bad_cursor", "since must be a string");
            } else if (jsince != NULL &&
                       pe_cursor_parse(json_string_value(jsince), json_string_length(jsince), &since, &err) != 0) {
                queue_error(conn, ref, "bad_cursor", err != NULL ? err : "malformed cursor");
            } else {
                subscribe(conn, ref, channel, channel_len, &since);
            }
        } else if (op[0] == 'u') {
            if (pe_sub_remove(&conn->sub, channel, channel_len) != 0) {
                queue_error(conn, ref, "not_subscribed", "not subscribed to that channel");
            } else {
                ws_pending_sub_t *p = take_pending_sub(conn, channel, channel_len);
                if (p != NULL)
                    free_pending_sub(p); /* removed before it was ready: never confirmed */
                json_t *reply = json_pack("{s:s,s:s%}", "op", "unsubscribed", "channel", channel, channel_len);
                queue_reply(conn, reply, ref != NULL ? ref->text : NULL, ref != NULL ? ref->len : 0);
            }
        } else {
            size_t off, vlen;
            json_t *jkey = json_object_get(root, "key");
            if (!conn->may_publish) {
                queue_error(conn, ref, "forbidden",
                            conn->thr->server->cfg->api_key != NULL
                                ? "publishing needs the API key (Authorization: Bearer) at the handshake"
                                : "publishing needs a loopback client and an allowed origin (or set --api-key)");
            } else if (!pe_json_find_member(text, len, "data", 4, &off, &vlen)) {
                queue_error(conn, ref, "bad_request", "the data field is required");
            } else if (jkey != NULL &&
                       (!json_is_string(jkey) || !pe_ps_key_is_valid(json_string_value(jkey), json_string_length(jkey)))) {
                queue_error(conn, ref, "bad_key", pe_ps_err_bad_key);
            } else {
                ws_publish_t *p = pe_calloc(1, sizeof(*p));
                p->conn = conn;
                if (ref != NULL) {
                    p->ref = pe_strndup(ref->text, ref->len);
                    p->ref_len = ref->len;
                }
                memcpy(p->channel, channel, channel_len);
                p->channel_len = channel_len;
                /* The value is forwarded as the client wrote it (jansson would re-print numbers). */
                const char *err =
                    pe_ps_publish(conn->thr->node, channel, channel_len, jkey != NULL ? json_string_value(jkey) : NULL,
                                  jkey != NULL ? json_string_length(jkey) : 0, text + off, vlen, on_published, p);
                if (err != NULL) {
                    queue_error(conn, ref, err == pe_ps_err_channel_limit ? "channel_limit" : "engine_unavailable", err);
                    pe_free(p->ref);
                    pe_free(p);
                } else {
                    p->next = conn->publishes;
                    if (p->next != NULL)
                        p->next->prev = p;
                    conn->publishes = p;
                }
            }
        }
    } else {
        queue_error(conn, ref, "unknown_op", "unknown op");
    }
    json_decref(root);
}

/* ---- reading --------------------------------------------------------------------------------- */

/* A protocol violation: what the peer sent before it (echoes, replies) still goes out, then the
 * close frame (Autobahn 3.x/4.x expect the earlier messages to arrive). */
static void
fail(pe_ws_conn_t *conn, int code, const char *reason)
{
    queue_close(conn, code, reason);
    conn->closing = 1;
    conn->reading_stopped = 1;
    h2o_socket_read_stop(conn->sock);
}

static void
handle_message(pe_ws_conn_t *conn, const pe_ws_event_t *ev)
{
    const uint8_t *payload = ev->payload;
    size_t len = ev->payload_len;
    uint8_t *inflated = NULL;

    if (ev->compressed) {
        int r = pe_ws_inflate_message(payload, len, conn->thr->server->cfg->max_message_size, &inflated, &len);
        if (r == -2) {
            fail(conn, PE_WS_CLOSE_TOO_BIG, "message too big");
            return;
        }
        if (r != 0) {
            fail(conn, PE_WS_CLOSE_INVALID_DATA, "invalid compressed data");
            return;
        }
        payload = inflated;
        if (ev->opcode == PE_WS_OP_TEXT) {
            pe_utf8_t v;
            pe_utf8_init(&v);
            if (pe_utf8_feed(&v, payload, len) != 0 || !pe_utf8_is_complete(&v)) {
                pe_free(inflated);
                fail(conn, PE_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
                return;
            }
        }
    }

    if (conn->echo) {
        uint8_t *z;
        size_t zlen;
        if (conn->pmd_enabled && pe_ws_deflate_message(payload, len, conn->pmd.server_max_window_bits, &z, &zlen) == 0) {
            queue_frame(conn, ev->opcode, 1, z, zlen);
            pe_free(z);
        } else {
            queue_frame(conn, ev->opcode, 0, payload, len);
        }
    } else if (ev->opcode != PE_WS_OP_TEXT) {
        queue_error(conn, NULL, "unsupported", "binary messages are not part of pushedge.v1");
    } else {
        handle_op(conn, (const char *)payload, len);
    }
    pe_free(inflated);
    if (pe_outq_bytes(&conn->out) > conn->max_queue)
        set_overflow(conn);
}

/* Handles the events in the socket's input until it is used up, the connection stops reading,
 * or the output queue is backed up (then reading pauses with the rest left in the buffer).
 * Never frees conn; the caller flushes. */
static void
process_input(pe_ws_conn_t *conn)
{
    h2o_socket_t *sock = conn->sock;
    while (sock->input->size != 0 && !conn->reading_stopped) {
        /* A connection being closed as a slow consumer queues nothing more, and is read (and
         * its input dropped) so that closing it does not reset the connection under the close
         * frame. */
        if (!conn->overflow && pe_outq_bytes(&conn->out) >= PE_WS_READ_PAUSE) {
            if (!conn->read_paused) {
                conn->read_paused = 1;
                /* The no-progress clock of the slow-reader rule starts now at the latest. */
                conn->last_tx = h2o_now(conn->thr->loop);
                h2o_socket_read_stop(sock);
            }
            return;
        }
        pe_ws_event_t ev;
        size_t used = pe_ws_reader_feed(&conn->reader, (const uint8_t *)sock->input->bytes, sock->input->size, &ev);
        h2o_buffer_consume(&sock->input, used);
        switch (ev.kind) {
        case PE_WS_EV_NONE:
            break;
        case PE_WS_EV_MESSAGE:
            if (!conn->overflow)
                handle_message(conn, &ev);
            break;
        case PE_WS_EV_PING:
            if (!conn->overflow)
                queue_frame(conn, PE_WS_OP_PONG, 0, ev.payload, ev.payload_len);
            break;
        case PE_WS_EV_PONG:
            break;
        case PE_WS_EV_CLOSE:
            /* Answer with the peer's code (RFC 6455 5.5.1) after what is already queued (messages
             * the peer sent before its close are answered), then close after the write. */
            if (!conn->close_sent)
                queue_close(conn, ev.code, "");
            conn->closing = 1;
            conn->reading_stopped = 1;
            h2o_socket_read_stop(sock);
            break;
        case PE_WS_EV_ERROR:
            fail(conn, ev.code, ev.reason);
            break;
        }
        if (ev.kind == PE_WS_EV_NONE)
            break;
    }
    if (pe_ws_reader_buffered(&conn->reader) == 0)
        pe_ws_reader_shrink(&conn->reader);
    pe_socket_release_input(sock, 0);
}

/* The queue drained below PE_WS_READ_PAUSE: handle what was left unread, then read again. */
static void
resume_reading(pe_ws_conn_t *conn)
{
    conn->read_paused = 0;
    if (conn->lingering)
        return; /* on_linger_read owns the input now */
    /* Input was not read while paused: the silence rule counts from now. */
    conn->last_rx = h2o_now(conn->thr->loop);
    process_input(conn);
    if (!conn->read_paused && !conn->reading_stopped)
        h2o_socket_read_start(conn->sock, on_read);
}

/* Reads at most PE_WS_READ_CHUNK bytes into sock->input; returns NULL or an error (end of stream
 * included). Level-triggered epoll calls back again while more is waiting. */
static const char *
read_some(h2o_socket_t *sock)
{
    h2o_iovec_t buf = h2o_buffer_reserve(&sock->input, 4096);
    if (buf.base == NULL)
        return "out of memory";
    size_t want = buf.len < PE_WS_READ_CHUNK ? buf.len : PE_WS_READ_CHUNK;
    ssize_t r;
    while ((r = read(h2o_socket_get_fd(sock), buf.base, want)) == -1 && errno == EINTR)
        ;
    if (r == 0)
        return "closed";
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? NULL : "read error";
    sock->input->size += (size_t)r;
    return NULL;
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    pe_ws_conn_t *conn = sock->data;
    if (err == NULL && conn->own_read)
        err = read_some(sock);
    if (err != NULL) {
        close_now(conn);
        return;
    }
    conn->last_rx = h2o_now(conn->thr->loop);
    process_input(conn);
    flush(conn);
}

/* ---- timers, drain, disposal ----------------------------------------------------------------- */

static void
on_ping_timer(h2o_timeout_entry_t *entry)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, ping_entry, entry);
    uint64_t interval = conn->thr->server->cfg->ping_interval * 1000, now = h2o_now(conn->thr->loop);
    if (conn->read_paused) {
        /* Not reading, so silence proves nothing: the sign of life is a write completing. Two
         * intervals without one (the silence rule's window) means the peer reads nothing. A
         * write completes only once its whole batch (up to PE_WS_MAX_BATCH frames) is out, so
         * one interval would close a subscriber that reads a large backlog slowly. */
        if (now - conn->last_tx >= 2 * interval && !conn->overflow)
            set_overflow(conn);
    } else if (now - conn->last_rx > 2 * interval &&
               (!(conn->writing || !pe_outq_is_empty(&conn->out)) || now - conn->last_tx > 2 * interval)) {
        /* Silent for two intervals. With output pending, our ping waits behind a backlog the
         * peer may still be reading (its pong cannot come before it): a write completing within
         * the window is a sign of life too, and only a peer that neither answers nor reads is
         * gone. */
        pe_log(PE_LOG_DEBUG, "edge/ws", "thread %u: closing a peer silent for two ping intervals", conn->thr->index);
        close_now(conn);
        return;
    }
    if (!conn->close_sent && !conn->overflow)
        queue_frame(conn, PE_WS_OP_PING, 0, NULL, 0);
    h2o_timeout_link(conn->thr->loop, &conn->thr->ping_timeout, &conn->ping_entry);
}

static void
on_close_timer(h2o_timeout_entry_t *entry)
{
    /* The peer did not answer our close in time (or a write is stuck): end it. */
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, close_entry, entry);
    close_now(conn);
}

static void
on_drain(pe_stream_t *stream)
{
    pe_ws_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_ws_conn_t, stream, stream);
    if (conn->close_sent)
        return;
    queue_close(conn, PE_WS_CLOSE_RESTART, "server restarting: reconnect");
    /* A slow consumer's close timer may be running already (set_overflow). */
    if (!h2o_timeout_is_linked(&conn->close_entry))
        h2o_timeout_link(conn->thr->loop, &conn->thr->ws_close_timeout, &conn->close_entry);
}

static void
conn_free(pe_ws_conn_t *conn)
{
    if (h2o_timeout_is_linked(&conn->ping_entry))
        h2o_timeout_unlink(&conn->ping_entry);
    if (h2o_timeout_is_linked(&conn->flush_entry))
        h2o_timeout_unlink(&conn->flush_entry);
    if (h2o_timeout_is_linked(&conn->close_entry))
        h2o_timeout_unlink(&conn->close_entry);
    if (conn->sub_inited)
        pe_sub_dispose(&conn->sub);
    for (ws_publish_t *p = conn->publishes; p != NULL; p = p->next)
        p->conn = NULL;
    while (conn->pending_subs != NULL) {
        ws_pending_sub_t *p = conn->pending_subs;
        conn->pending_subs = p->next;
        free_pending_sub(p);
    }
    pe_stream_unregister(&conn->stream);
    pe_outq_dispose(&conn->out);
    pe_ws_reader_dispose(&conn->reader);
    if (conn->sock != NULL) {
        h2o_socket_close(conn->sock);
        PE_STAT_ADD(conn->thr->stats.connections[PE_TRANSPORT_WS], (uint64_t)-1);
    }
    pe_free(conn->initial);
    pe_free(conn->initial_arena);
    pe_free(conn);
}

/* ---- the handshake --------------------------------------------------------------------------- */

static void
on_upgrade_complete(void *data, h2o_socket_t *sock, size_t reqsize)
{
    pe_ws_conn_t *conn = data;
    if (sock == NULL) {
        conn_free(conn);
        return;
    }
    conn->sock = sock;
    sock->data = conn;
    h2o_buffer_consume(&sock->input, reqsize);
    conn->last_rx = h2o_now(conn->thr->loop);
    PE_STAT_ADD(conn->thr->stats.connections[PE_TRANSPORT_WS], 1);
    pe_stream_register(conn->thr, &conn->stream);
    h2o_timeout_link(conn->thr->loop, &conn->thr->ping_timeout, &conn->ping_entry);

    if (!conn->echo) {
        pe_sub_init(&conn->sub, conn->thr->node, &ws_callbacks);
        conn->sub_inited = 1;
        pe_sub_query_t *q = conn->initial;
        for (size_t i = 0; q != NULL && i != q->num_channels; ++i) {
            pe_start_t start = pe_start_from_cursor(&q->since, q->channels[i].name, q->channels[i].len, q->num_channels);
            if (pe_sub_add(&conn->sub, q->channels[i].name, q->channels[i].len, start) == NULL)
                add_pending_sub(conn, q->channels[i].name, q->channels[i].len, NULL, 0);
        }
        /* Subscribed (pubsub and the pending list copied the names): the parsed query, 2.6 KiB
         * with room for 64 channels, is not kept for the connection's life. */
        pe_free(conn->initial);
        pe_free(conn->initial_arena);
        conn->initial = NULL;
        conn->initial_arena = NULL;
    }
    /* Over TLS h2o must read (it decrypts): the pause still bounds the queue, but one wake-up
     * may pull the kernel's whole receive buffer into memory. */
    if (sock->ssl == NULL) {
        conn->own_read = 1;
        h2o_socket_dont_read(sock, 1);
    }
    h2o_socket_read_start(sock, on_read);
    if (sock->input->size != 0) {
        on_read(sock, NULL);
    } else {
        pe_socket_release_input(sock, 0);
        flush(conn);
    }
}

/* Sends a handshake refusal with the JSON error body. */
static int
refuse(h2o_req_t *req, int status, const char *reason, const char *code, const char *message)
{
    if (status == 426) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-version"), 0, NULL, H2O_STRLIT("13"));
    }
    pe_http_error(req, status, reason, code, message);
    return 0;
}

static h2o_iovec_t
find_header(h2o_req_t *req, const char *name, size_t len)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);
    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

/* Joins every line of a repeatable header with ", " (RFC 7230 3.2.2). */
static h2o_iovec_t
join_header(h2o_req_t *req, const char *name, size_t len)
{
    h2o_iovec_t all = {NULL, 0};
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, name, len, i)) >= 0;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        all = all.base == NULL ? v : h2o_concat(&req->pool, all, h2o_iovec_init(H2O_STRLIT(", ")), v);
    }
    return all;
}

int
pe_ws_on_req(h2o_req_t *req, int echo)
{
    pe_thread_t *thr = pe_thread_of(req);
    const pe_config_t *cfg = thr->server->cfg;

    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        pe_http_method_not_allowed(req, "GET");
        return 0;
    }
    if (req->version >= 0x200)
        return refuse(req, 400, "Bad Request", "http2_websocket", "WebSocket needs HTTP/1.1 here; use /sse over HTTP/2");
    /* Cross-site WebSocket hijacking: a browser page of another origin must not ride on the
     * user's network position or cookies. */
    if (!pe_http_origin_is_allowed(req))
        return refuse(req, 403, "Forbidden", "origin_not_allowed", "this origin is not in --allowed-origin");
    if (thr->draining) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        return refuse(req, 503, "Service Unavailable", "draining", "this node is shutting down; reconnect");
    }
    /* h2o's HTTP/1 parser moves Upgrade into req->upgrade only when Connection lists "upgrade"
     * (both are hop-by-hop and absent from req->headers). */
    h2o_iovec_t version = find_header(req, H2O_STRLIT("sec-websocket-version")),
                key = find_header(req, H2O_STRLIT("sec-websocket-key")),
                protocols = join_header(req, H2O_STRLIT("sec-websocket-protocol"));
    pe_ws_handshake_req_t hs_req = {.upgrade = {req->upgrade.base, req->upgrade.len},
                                    .version = {version.base, version.len},
                                    .key = {key.base, key.len},
                                    .protocols = {protocols.base, protocols.len}};
    pe_ws_handshake_t hs;
    int status = pe_ws_handshake_check(&hs_req, &hs);
    if (status != 0)
        return refuse(req, status, status == 426 ? "Upgrade Required" : "Bad Request", hs.code, hs.message);

    /* The subscription in the query string, checked before upgrading. */
    pe_sub_query_t *q = NULL;
    char *arena = NULL;
    h2o_iovec_t qs = pe_http_query(req);
    if (!echo && qs.len != 0) {
        q = pe_malloc(sizeof(*q));
        arena = pe_malloc(qs.len + 1);
        const char *code, *err;
        if (pe_sub_query_parse(qs.base, qs.len, q, arena, &code, &err) != 0 && strcmp(code, "missing_channel") != 0) {
            pe_free(q);
            pe_free(arena);
            return refuse(req, 400, "Bad Request", code, err);
        }
        /* Last-Event-ID is an SSE header; a WebSocket client resumes with since. */
        if (pe_ps_engine_channels_full(pe_ps_node_engine(thr->node), q->num_channels)) {
            pe_free(q);
            pe_free(arena);
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
            return refuse(req, 503, "Service Unavailable", "channel_limit", pe_ps_err_channel_limit);
        }
    }

    pe_ws_conn_t *conn = pe_calloc(1, sizeof(*conn));
    conn->thr = thr;
    conn->echo = echo;
    /* Two maximal messages always fit (one in flight, one queued): with a large
     * --max-message-size a single echo or publish must not count as a slow consumer. */
    conn->max_queue = PE_WS_MAX_QUEUE;
    if (conn->max_queue < 2 * (cfg->max_message_size + PE_WS_MAX_HEADER + 256))
        conn->max_queue = 2 * (cfg->max_message_size + PE_WS_MAX_HEADER + 256);
    conn->initial = q;
    conn->initial_arena = arena;
    /* The publish op follows the HTTP rule (key, origin, loopback behind --trusted-proxy): a
     * page that may subscribe cross-origin may still not publish. */
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    conn->may_publish = pe_auth_check(cfg, &view) == PE_AUTH_OK;
    conn->stream.drain = on_drain;
    conn->ping_entry.cb = on_ping_timer;
    conn->flush_entry.cb = on_flush_timeout;
    conn->close_entry.cb = on_close_timer;

    /* permessage-deflate */
    h2o_iovec_t ext = join_header(req, H2O_STRLIT("sec-websocket-extensions"));
    if (ext.base != NULL) {
        char resp[256];
        int r = pe_ws_pmd_negotiate(ext.base, ext.len, &conn->pmd, resp, sizeof(resp));
        if (r < 0) {
            conn_free(conn);
            return refuse(req, 400, "Bad Request", "bad_extensions", "malformed Sec-WebSocket-Extensions");
        }
        if (r == 1) {
            conn->pmd_enabled = 1;
            /* h2o keeps the pointer, not a copy: the value must live in the request's pool. */
            h2o_iovec_t v = h2o_strdup(&req->pool, resp, SIZE_MAX);
            h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-extensions"), 0, NULL, v.base, v.len);
        }
    }
    pe_ws_reader_init(&conn->reader, cfg->max_message_size, conn->pmd_enabled);

    char *accept = h2o_mem_alloc_pool(&req->pool, sizeof(hs.accept));
    memcpy(accept, hs.accept, sizeof(hs.accept));

    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL, accept, strlen(accept));
    if (hs.select_protocol)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-protocol"), 0, NULL,
                              H2O_STRLIT("pushedge.v1"));
    h2o_http1_upgrade(req, NULL, 0, on_upgrade_complete, conn);
    return 0;
}

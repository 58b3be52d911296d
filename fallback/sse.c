/*
 * sse.c: GET /sse, the Server-Sent Events transport (docs/protocol.md "Server-Sent Events"), on
 * the connection core (edge/core/conn.h).
 *
 * What is SSE-specific lives here: the request's prologue and response head, the stream's
 * prelude (padding, retry), the events (a message is the shared frame of edge/wire; with
 * several channels the stream's own cursor line replaces the frame's id line), the heartbeat
 * comment, the drain hint. The socket or HTTP/2 stream, the bounded queue, its flush, the slow
 * consumer rule and every way the stream ends are the core's.
 *
 * Two ways to the wire: on HTTP/1.x the core takes the socket over after h2o wrote the 200 head
 * (the body is delimited by the connection's close, which every SSE client and HTTP/1.0 proxy
 * understands); on HTTP/2 the stream is h2o's generator on a shared connection.
 *
 * Bounds: past PE_SSE_MAX_QUEUE queued bytes a stream is a slow consumer and is ended (the
 * client resumes from its last id); catch-up pauses at PE_SSE_LOW_WATER so replaying history
 * never fills the queue by itself; a write in flight for two heartbeat intervals means a peer
 * that stopped reading: also a slow consumer.
 */
#include <stdio.h>
#include "pubsub/alloc.h"
#include "edge/core/access.h"
#include "edge/core/conn.h"
#include "edge/core/http.h"
#include "edge/util/bounds.h"
#include "edge/wire/wire.h"
#include "fallback/sse.h"

typedef struct st_pe_sse_t {
    pe_conn_t conn;         /* first: the core allocates and frees the whole object */
    unsigned live_sent : 1; /* the bare id line that marks the stream live went out */
    unsigned multi : 1;     /* several channels: every event carries the full cursor */
} pe_sse_t;

/* Appends "id: <cursor>\n" to the queue's text; returns its length. */
static size_t
put_cursor_line(pe_sse_t *sse)
{
    char cursor[PE_CURSOR_MAXLEN + 1], line[PE_WIRE_SSE_ID_LINE_MAX];
    size_t n = pe_wire_sse_id_line(line, cursor, pe_sub_cursor(&sse->conn.sub, cursor, sizeof(cursor)));
    pe_outq_text(&sse->conn.out, line, n);
    return n;
}

/* ---- pubsub callbacks (only queue: the core writes from the loop) ------------------------ */

static int
on_message(pe_sub_t *sub, pe_msg_t *msg)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, conn.sub, sub);
    if (!pe_conn_is_open(&sse->conn))
        return PE_SUB_PAUSE;
    const pe_msg_encoding_t *ev = pe_wire_sse_event(msg);
    if (sse->multi && msg->kind != PE_MSG_COUNT) { /* a count carries no id line to replace */
        size_t off = pe_wire_sse_data_off(msg), text = put_cursor_line(sse);
        return pe_conn_push(&sse->conn, text, msg, ev->data + off, ev->len - off);
    }
    return pe_conn_push(&sse->conn, 0, msg, ev->data, ev->len);
}

static int
on_gap(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, conn.sub, sub);
    if (!pe_conn_is_open(&sse->conn))
        return PE_SUB_CONTINUE;
    pe_outq_t *out = &sse->conn.out;
    pe_outq_text(out, H2O_STRLIT(PE_WIRE_SSE_GAP_HEAD));
    size_t n = sizeof(PE_WIRE_SSE_GAP_HEAD) - 1 + put_cursor_line(sse);
    pe_outq_text(out, H2O_STRLIT(PE_WIRE_SSE_GAP_MID));
    pe_outq_text(out, channel, len);
    pe_outq_text(out, H2O_STRLIT(PE_WIRE_SSE_GAP_TAIL));
    pe_conn_push(&sse->conn, n + sizeof(PE_WIRE_SSE_GAP_MID) - 1 + len + sizeof(PE_WIRE_SSE_GAP_TAIL) - 1, NULL, NULL, 0);
    return PE_SUB_CONTINUE; /* the gap event goes between the messages, where it happened */
}

static void
on_live(pe_sub_t *sub)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, conn.sub, sub);
    if (!pe_conn_is_open(&sse->conn) || sse->live_sent)
        return;
    /* Once, when catch-up is over: an id with no data sets the client's Last-Event-ID without
     * dispatching an event (WHATWG "dispatch the event": step 1 runs before the empty-data
     * check), so a client that received nothing yet still reconnects from here, and any client
     * can tell that what follows is live. */
    size_t n = put_cursor_line(sse);
    pe_outq_text(&sse->conn.out, "\n", 1);
    pe_conn_push(&sse->conn, n + 1, NULL, NULL, 0);
    sse->live_sent = 1;
}

/* One event per outage and one when the engine is back; the stream stays open and catches up
 * by itself. Its default-less type keeps it away from onmessage handlers. */
static void
on_engine(pe_sub_t *sub, int up)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, conn.sub, sub);
    if (up)
        pe_conn_push_text(&sse->conn, H2O_STRLIT(PE_WIRE_SSE_ENGINE_UP));
    else
        pe_conn_push_text(&sse->conn, H2O_STRLIT(PE_WIRE_SSE_ENGINE_DOWN));
}

static const pe_sub_callbacks_t sse_sub_callbacks = {on_message, on_gap, on_live, on_engine, NULL, pe_conn_who};

/* ---- the core's callbacks ---------------------------------------------------------------- */

/* HTTP/1: a client says nothing after its request; EOF (or an error) means it left. */
static void
on_read(h2o_socket_t *sock, const char *err)
{
    pe_conn_t *conn = sock->data;
    if (err != NULL) {
        pe_conn_set_reason(conn, PE_END_CLIENT_LEFT);
        pe_conn_abort(conn);
        pe_conn_flush(conn); /* frees it, or fails its write in flight */
        return;
    }
    pe_socket_release_input(sock, 1); /* an idle stream keeps no read buffer */
}

static void
on_open(pe_conn_t *conn)
{
    h2o_socket_read_start(conn->sock, on_read);
    pe_socket_release_input(conn->sock, 1); /* discards anything sent after the request */
}

static int
on_heartbeat(pe_conn_t *conn, uint64_t now, uint64_t interval)
{
    if (conn->write_started != 0 && now - conn->write_started > 2 * interval) {
        pe_conn_slow(conn, "a write was stuck for two heartbeat intervals");
        return 0;
    }
    /* A comment: clients ignore it, intermediaries see traffic, and a dead peer fails the write. */
    pe_conn_push_text(conn, H2O_STRLIT(PE_WIRE_SSE_PING));
    return 0;
}

static void
on_drain(pe_conn_t *conn)
{
    /* Spread the herd: each client waits a different time (the drain walk's jittered hint)
     * before it comes back. */
    char line[PE_WIRE_SSE_RETRY_MAX];
    pe_conn_push_text(conn, line, pe_wire_sse_retry(line, conn->_stream.drain_hint_ms));
    pe_conn_end(conn);
}

/* Token expiry and revocation (docs/auth.md): events without an id line (they move no client's
 * Last-Event-ID), the ends followed by the end of the stream. */
static void
on_auth(pe_conn_t *conn, pe_conn_auth_event_t ev, const pe_revocation_t *r)
{
    char line[64 + PE_REVOKE_REASON_MAX];
    int n;
    switch (ev) {
    case PE_CONN_TOKEN_EXPIRING:
    case PE_CONN_TOKEN_EXPIRED:
        n = snprintf(line, sizeof(line), "event: %s\ndata: {\"exp\":%lld}\n\n",
                     ev == PE_CONN_TOKEN_EXPIRING ? "expiring" : "expired", (long long)conn->identity.exp);
        pe_conn_push_text(conn, line, (size_t)n);
        if (ev == PE_CONN_TOKEN_EXPIRING)
            return;
        break;
    case PE_CONN_AUTH_MISSING:
        break;
    case PE_CONN_REVOKED:
        /* The reason is printable ASCII without quotes or backslashes (edge/api/disconnect.c). */
        n = snprintf(line, sizeof(line), "event: revoked\ndata: {\"reason\":\"%.*s\"}\n\n", (int)r->reason_len, r->reason);
        pe_conn_push_text(conn, line, (size_t)n);
        break;
    }
    pe_conn_end(conn);
}

static void
on_channel_revoked(pe_conn_t *conn, const char *channel, size_t len, const pe_revocation_t *r)
{
    char line[64 + PE_CHANNEL_MAXLEN + PE_REVOKE_REASON_MAX];
    int n = snprintf(line, sizeof(line), "event: revoked\ndata: {\"channel\":\"%.*s\",\"reason\":\"%.*s\"}\n\n", (int)len, channel,
                     (int)r->reason_len, r->reason);
    pe_conn_push_text(conn, line, (size_t)n);
}

static const pe_conn_callbacks_t sse_conn_callbacks = {
    .transport = PE_TRANSPORT_SSE,
    .tag = "fallback/sse",
    .low_water = PE_SSE_LOW_WATER,
    .max_batch = PE_SSE_MAX_BATCH,
    .on_open = on_open,
    .on_heartbeat = on_heartbeat,
    .on_drain = on_drain,
    .on_auth = on_auth,
    .on_channel_revoked = on_channel_revoked,
};

/* ---- the handler ------------------------------------------------------------------------- */

int
pe_sse_on_req(h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);

    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        pe_http_method_not_allowed(req, "GET");
        return 0;
    }
    if (pe_conn_refuse_draining(req))
        return 0;
    pe_sub_query_t *q = h2o_mem_alloc_pool(&req->pool, sizeof(*q));
    char *arena = h2o_mem_alloc_pool(&req->pool, pe_http_query(req).len + 1);
    if (pe_conn_parse_subscription(req, PE_CONN_QUERY_LAST_EVENT_ID, q, arena) != 0)
        return 0;
    pe_identity_t id;
    if (pe_access_authorize_query(req, q, &id) != 0)
        return 0;
    if (pe_conn_refuse_channels_full(req, q->num_channels)) {
        pe_identity_dispose(&id);
        return 0;
    }

    pe_sse_t *sse = (pe_sse_t *)pe_conn_new(req, sizeof(*sse), &sse_conn_callbacks);
    pe_conn_t *conn = &sse->conn;
    pe_conn_set_identity(conn, &id);
    pe_conn_register_user(conn);
    conn->max_queue = PE_SSE_MAX_QUEUE;
    sse->multi = q->num_channels > 1;

    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache, no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    int own_socket = req->version < 0x200;
    if (own_socket) /* h2o's upgrade head says "Connection: upgrade"; say that the body ends with the connection */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONNECTION, NULL, H2O_STRLIT("close"));
    else
        pe_conn_start_stream(conn, req);

    if (q->padding) {
        char pad[PE_SSE_PADDING + 2];
        pad[0] = ':';
        memset(pad + 1, ' ', PE_SSE_PADDING);
        pad[PE_SSE_PADDING + 1] = '\n';
        pe_conn_push_text(conn, pad, sizeof(pad));
    }
    char retry[PE_WIRE_SSE_RETRY_MAX];
    pe_conn_push_text(conn, retry, pe_wire_sse_retry(retry, PE_SSE_RETRY_MS));

    pe_sub_init(&conn->sub, thr->node, &sse_sub_callbacks);
    pe_conn_subscribe(&conn->sub, q, NULL, NULL);
    /* The subscription is in place before the upgrade: pubsub never calls back from inside, and
     * what it delivers meanwhile waits in the queue until the socket is ours. */
    if (own_socket)
        pe_conn_upgrade(conn, req);
    return 0;
}

/*
 * ws.c: GET /ws and GET /ws/echo, the WebSocket transport (RFC 6455 + RFC 7692) on the
 * connection core (edge/core/conn.h): the handshake's checks and the 101, reading, the ping and
 * close rules. The JSON op protocol is ws_ops.c's, framing ws_conn.c's; the socket, the output queue,
 * its flush, the slow-consumer policy and every way a connection ends are the core's.
 *
 * Why our own framing instead of h2o's websocket.h (wslay): wslay copies every message it sends
 * into the connection's write buffer, and h2o 2.2 cannot negotiate extensions. Fan-out to 10k
 * subscribers would copy each message 10k times. Here the handshake is checked by us, the core
 * takes the socket over with h2o_http1_upgrade, input goes through the pure reader of
 * edge/wire/ws_frame.c, and each message's complete frame (and separately its permessage-deflate
 * form) is built once by edge/wire and shared by every subscriber's writev.
 *
 * Compression. With permessage-deflate the server always uses server_no_context_takeover, so a
 * message compresses to the same bytes for every connection: compressed once, shared. Messages
 * under PE_WS_DEFLATE_MIN bytes are sent uncompressed (RSV1 clear, which the extension allows
 * per message). A connection that limited our window below 15 bits gets uncompressed frames
 * from the shared path (the echo endpoint compresses with its own window). The client is told
 * client_no_context_takeover, so no inflate state outlives one incoming message.
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
 * Closing: a peer's close is answered with the same code and the connection ends after the
 * write; a protocol violation sends the close code (1002, 1007, 1009) and ends after the write;
 * the server's own closes (1012 drain, 1013 slow consumer) wait up to PE_WS_CLOSE_WAIT_MS for the
 * peer's answer. After our last frame the core lingers (half-close, input discarded until the
 * peer's EOF) so that the close is not destroyed by a reset.
 */
#include <errno.h>
#include <unistd.h>
#include "pubsub/alloc.h"
#include "edge/core/access.h"
#include "edge/core/auth.h"
#include "edge/core/cors.h"
#include "edge/core/http.h"
#include "edge/util/bounds.h"
#include "edge/util/log.h"
#include "edge/ws/ws.h"
#include "edge/ws/ws_conn.h"
#include "edge/ws/ws_ops.h"
#include "edge/ws/ws_handshake.h"

/* ---- reading --------------------------------------------------------------------------------- */

static void on_read(h2o_socket_t *sock, const char *err);

/* The last frame is ours or the peer's: answer or fail with `code`, end after the write, and
 * read nothing more (RFC 6455 5.5.1). */
static void
end_with_close(pe_ws_conn_t *ws, int code, const char *reason, pe_end_reason_t why)
{
    pe_conn_set_reason(&ws->conn, why);
    pe_ws__queue_close(ws, code, reason);
    pe_conn_end(&ws->conn);
    ws->read = PE_WS_READ_STOPPED;
    h2o_socket_read_stop(ws->conn.sock);
}

static void
handle_message(pe_ws_conn_t *ws, const pe_ws_event_t *ev)
{
    const uint8_t *payload = ev->payload;
    size_t len = ev->payload_len;
    uint8_t *inflated = NULL;

    if (ev->compressed) {
        int r = pe_ws_inflate_message(payload, len, ws->conn.thr->server->cfg->max_message_size, &inflated, &len);
        if (r == -2) {
            end_with_close(ws, PE_WS_CLOSE_TOO_BIG, "message too big", PE_END_LIMIT);
            return;
        }
        if (r != 0) {
            end_with_close(ws, PE_WS_CLOSE_INVALID_DATA, "invalid compressed data", PE_END_ERROR);
            return;
        }
        payload = inflated;
        if (ev->opcode == PE_WS_OP_TEXT) {
            pe_utf8_t v;
            pe_utf8_init(&v);
            if (pe_utf8_feed(&v, payload, len) != 0 || !pe_utf8_is_complete(&v)) {
                pe_free(inflated);
                end_with_close(ws, PE_WS_CLOSE_INVALID_DATA, "invalid UTF-8", PE_END_ERROR);
                return;
            }
        }
    }

    if (ws->echo) {
        uint8_t *z;
        size_t zlen;
        if (ws->pmd_enabled && pe_ws_deflate_message(payload, len, ws->pmd.server_max_window_bits, &z, &zlen) == 0) {
            pe_ws__queue_frame(ws, ev->opcode, 1, z, zlen);
            pe_free(z);
        } else {
            pe_ws__queue_frame(ws, ev->opcode, 0, payload, len);
        }
    } else if (ev->opcode != PE_WS_OP_TEXT) {
        pe_ws_ops_refuse_binary(ws);
    } else {
        pe_ws_ops_handle(ws, (const char *)payload, len);
    }
    pe_free(inflated);
}

/* Handles the events in the socket's input until it is used up, the connection stops reading,
 * or the output queue is backed up (then reading pauses with the rest left in the buffer).
 * Never frees the connection; the caller flushes. */
static void
process_input(pe_ws_conn_t *ws)
{
    h2o_socket_t *sock = ws->conn.sock;
    while (sock->input->size != 0 && ws->read != PE_WS_READ_STOPPED) {
        /* A connection ending as a slow consumer (ENDING while still reading) queues nothing
         * more, and is read (its input dropped) so that closing it does not reset the
         * connection under the close frame. */
        int dropping = ws->conn.state == PE_CONN_ENDING;
        if (!dropping && pe_outq_bytes(&ws->conn.out) >= PE_WS_READ_PAUSE) {
            if (ws->read != PE_WS_READ_PAUSED) {
                ws->read = PE_WS_READ_PAUSED;
                /* The no-progress clock of the slow-reader rule starts now at the latest. */
                ws->last_tx = h2o_now(ws->conn.thr->loop);
                h2o_socket_read_stop(sock);
            }
            return;
        }
        pe_ws_event_t ev;
        size_t used = pe_ws_reader_feed(&ws->reader, (const uint8_t *)sock->input->bytes, sock->input->size, &ev);
        h2o_buffer_consume(&sock->input, used);
        switch (ev.kind) {
        case PE_WS_EV_NONE:
        case PE_WS_EV_PONG:
            break;
        case PE_WS_EV_MESSAGE:
            if (!dropping)
                handle_message(ws, &ev);
            break;
        case PE_WS_EV_PING:
            pe_ws__queue_frame(ws, PE_WS_OP_PONG, 0, ev.payload, ev.payload_len);
            break;
        case PE_WS_EV_CLOSE:
            /* Answer with the peer's code (RFC 6455 5.5.1) after what is already queued (messages
             * the peer sent before its close are answered); nothing is queued if our own close
             * went out already. */
            end_with_close(ws, ev.code, "", PE_END_CLIENT_LEFT);
            break;
        case PE_WS_EV_ERROR:
            /* What the peer sent before the violation (echoes, replies) still goes out, then the
             * close frame (Autobahn 3.x/4.x expect the earlier messages to arrive). */
            end_with_close(ws, ev.code, ev.reason, ev.code == PE_WS_CLOSE_TOO_BIG ? PE_END_LIMIT : PE_END_ERROR);
            break;
        }
        if (ev.kind == PE_WS_EV_NONE)
            break;
    }
    if (pe_ws_reader_buffered(&ws->reader) == 0)
        pe_ws_reader_shrink(&ws->reader);
    pe_socket_release_input(sock, 0);
}

/* The queue drained below PE_WS_READ_PAUSE: handle what was left unread, then read again. */
static void
resume_reading(pe_ws_conn_t *ws)
{
    ws->read = PE_WS_READING;
    /* Input was not read while paused: the silence rule counts from now. */
    ws->last_rx = h2o_now(ws->conn.thr->loop);
    process_input(ws);
    if (ws->read == PE_WS_READING)
        h2o_socket_read_start(ws->conn.sock, on_read);
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
    pe_ws_conn_t *ws = sock->data; /* the core's conn, first member */
    if (err == NULL && ws->own_read)
        err = read_some(sock);
    if (err != NULL) {
        pe_conn_set_reason(&ws->conn, PE_END_CLIENT_LEFT); /* EOF or a reset */
        pe_conn_abort(&ws->conn);
        pe_conn_flush(&ws->conn); /* frees it, or fails its write in flight */
        return;
    }
    ws->last_rx = h2o_now(ws->conn.thr->loop);
    process_input(ws);
    pe_conn_flush(&ws->conn); /* may free it */
}

/* ---- the core's callbacks -------------------------------------------------------------------- */

static void
on_open(pe_conn_t *conn)
{
    pe_ws_conn_t *ws = (pe_ws_conn_t *)conn;
    h2o_socket_t *sock = conn->sock;
    ws->last_rx = h2o_now(conn->thr->loop);
    if (!ws->echo) {
        pe_sub_init(&conn->sub, conn->thr->node, &pe_ws_ops_sub_callbacks);
        if (ws->initial != NULL)
            pe_ws_ops_subscribe_query(ws, &ws->initial->q);
        /* Subscribed (pubsub and the pending list copied the names): the parsed query is not
         * kept for the connection's life. */
        pe_free(ws->initial);
        ws->initial = NULL;
    }
    /* Over TLS h2o must read (it decrypts): the pause still bounds the queue, but one wake-up
     * may pull the kernel's whole receive buffer into memory. */
    if (sock->ssl == NULL) {
        ws->own_read = 1;
        h2o_socket_dont_read(sock, 1);
    }
    h2o_socket_read_start(sock, on_read);
    if (sock->input->size != 0)
        process_input(ws);
    else
        pe_socket_release_input(sock, 0);
}

static int
on_heartbeat(pe_conn_t *conn, uint64_t now, uint64_t interval)
{
    pe_ws_conn_t *ws = (pe_ws_conn_t *)conn;
    if (ws->read == PE_WS_READ_PAUSED) {
        /* Not reading, so silence proves nothing: the sign of life is a write completing. Two
         * intervals without one (the silence rule's window) means the peer reads nothing. A
         * write completes only once its whole batch (up to PE_WS_MAX_BATCH frames) is out, so
         * one interval would close a subscriber that reads a large backlog slowly. */
        if (now - ws->last_tx >= 2 * interval)
            pe_conn_slow(conn, "its writes made no progress for two ping intervals (1013)");
    } else if (now - ws->last_rx > 2 * interval &&
               ((conn->write_started == 0 && pe_outq_is_empty(&conn->out)) || now - ws->last_tx > 2 * interval)) {
        /* Silent for two intervals. With output pending, our ping waits behind a backlog the
         * peer may still be reading (its pong cannot come before it): a write completing within
         * the window is a sign of life too, and only a peer that neither answers nor reads is
         * gone. */
        pe_log(PE_LOG_DEBUG, "edge/ws", "thread %u: closing a peer silent for two ping intervals", conn->thr->index);
        return -1;
    }
    pe_ws__queue_frame(ws, PE_WS_OP_PING, 0, NULL, 0);
    return 0;
}

static void
on_drain(pe_conn_t *conn)
{
    /* The reason carries the hint as JSON (docs/protocol.md "Close codes"): at most 31 of the
     * 123 bytes a close reason may hold. */
    char reason[32];
    snprintf(reason, sizeof(reason), "{\"reconnect_ms\":%u}", conn->_stream.drain_hint_ms);
    pe_ws__queue_close((pe_ws_conn_t *)conn, PE_WS_CLOSE_RESTART, reason);
    pe_conn_close_wait(conn);
}

/* The queue passed its bound: nothing more is queued; the 1013 goes out after the write in
 * flight, and input is read (and dropped) until the end so the close is not reset. */
static int
on_slow(pe_conn_t *conn)
{
    pe_ws_conn_t *ws = (pe_ws_conn_t *)conn;
    if (ws->read == PE_WS_READ_PAUSED && conn->sock != NULL) {
        ws->read = PE_WS_READING;
        h2o_socket_read_start(conn->sock, on_read);
    }
    pe_ws__queue_close(ws, PE_WS_CLOSE_TRY_AGAIN, "slow consumer: reconnect and resume");
    return 1;
}

static void
on_written(pe_conn_t *conn)
{
    pe_ws_conn_t *ws = (pe_ws_conn_t *)conn;
    ws->last_tx = h2o_now(conn->thr->loop);
    if (ws->read == PE_WS_READ_PAUSED && pe_outq_bytes(&conn->out) < PE_WS_READ_PAUSE)
        resume_reading(ws);
}

static void
on_dispose(pe_conn_t *conn)
{
    pe_ws_conn_t *ws = (pe_ws_conn_t *)conn;
    pe_ws_ops_dispose(ws);
    pe_ws_reader_dispose(&ws->reader);
    pe_free(ws->initial);
}

/* Token expiry, the auth deadline and revocation (docs/auth.md): the notice is an op; the ends
 * are close frames with an application code, answered by the peer within the close deadline. */
static void
on_auth(pe_conn_t *conn, pe_conn_auth_event_t ev, const pe_revocation_t *r)
{
    pe_ws_conn_t *ws = (pe_ws_conn_t *)conn;
    switch (ev) {
    case PE_CONN_TOKEN_EXPIRING:
        pe_ws_ops_expiring(ws);
        return;
    case PE_CONN_TOKEN_EXPIRED:
        pe_ws__queue_close(ws, PE_WS_CLOSE_TOKEN_EXPIRED, "token_expired");
        break;
    case PE_CONN_AUTH_MISSING:
        pe_ws__queue_close(ws, PE_WS_CLOSE_TOKEN_EXPIRED, "unauthorized: no auth op in time");
        break;
    case PE_CONN_REVOKED: {
        char reason[PE_REVOKE_REASON_MAX + 1];
        memcpy(reason, r->reason, r->reason_len);
        reason[r->reason_len] = '\0';
        pe_ws__queue_close(ws, PE_WS_CLOSE_REVOKED, reason);
    } break;
    }
    pe_conn_close_wait(conn);
}

static void
on_channel_revoked(pe_conn_t *conn, const char *channel, size_t len, const pe_revocation_t *r)
{
    pe_ws_ops_channel_revoked((pe_ws_conn_t *)conn, channel, len, r);
}

static const pe_conn_callbacks_t ws_conn_callbacks = {
    .transport = PE_TRANSPORT_WS,
    .tag = "edge/ws",
    .low_water = PE_WS_LOW_WATER,
    .max_batch = PE_WS_MAX_BATCH,
    .linger = 1,
    .on_open = on_open,
    .on_heartbeat = on_heartbeat,
    .on_drain = on_drain,
    .on_slow = on_slow,
    .on_written = on_written,
    .on_dispose = on_dispose,
    .on_auth = on_auth,
    .on_channel_revoked = on_channel_revoked,
};

/* ---- the handshake --------------------------------------------------------------------------- */

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
    if (pe_conn_refuse_draining(req))
        return 0;
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

    /* The subscription in the query string, checked before upgrading. Last-Event-ID is an SSE
     * header; a WebSocket client resumes with since. */
    pe_ws_initial_t *initial = NULL;
    h2o_iovec_t qs = pe_http_query(req);
    if (!echo && qs.len != 0) {
        initial = pe_malloc(offsetof(pe_ws_initial_t, arena) + qs.len + 1);
        if (pe_conn_parse_subscription(req, PE_CONN_QUERY_CHANNEL_OPTIONAL, &initial->q, initial->arena) != 0 ||
            pe_conn_refuse_channels_full(req, initial->q.num_channels)) {
            pe_free(initial);
            return 0;
        }
    }
    /* A token in a cookie comes with every handshake the browser makes, whichever site asks:
     * only the server's own page or an --allowed-origin may use it (docs/auth.md). Checked
     * before the token is verified, so the answer says nothing about the cookie's validity. */
    if (pe_access_token_source(req) == PE_TOKEN_COOKIE && !pe_http_origin_is_allowed_with_cookie(req)) {
        pe_free(initial);
        return refuse(req, 403, "Forbidden", "origin_not_allowed",
                      "a cookie token is usable from this server's own origin or an --allowed-origin only");
    }
    /* Who the client is, and whether the query's channels are allowed: answered before the
     * upgrade, as HTTP 401/403 (docs/auth.md); channels added later are checked per op. */
    pe_identity_t id;
    if (initial != NULL ? pe_access_authorize_query(req, &initial->q, &id) != 0 : pe_access_identify(req, &id) != 0) {
        pe_free(initial);
        return 0;
    }

    /* permessage-deflate */
    pe_ws_pmd_t pmd = {0};
    int pmd_enabled = 0;
    /* --no-ws-deflate: the offer is not even parsed; the connection runs uncompressed. */
    h2o_iovec_t ext = cfg->no_ws_deflate ? h2o_iovec_init(NULL, 0) : join_header(req, H2O_STRLIT("sec-websocket-extensions"));
    if (ext.base != NULL) {
        char resp[256];
        int r = pe_ws_pmd_negotiate(ext.base, ext.len, &pmd, resp, sizeof(resp));
        if (r < 0) {
            pe_free(initial);
            pe_identity_dispose(&id);
            return refuse(req, 400, "Bad Request", "bad_extensions", "malformed Sec-WebSocket-Extensions");
        }
        if (r == 1) {
            pmd_enabled = 1;
            /* h2o keeps the pointer, not a copy: the value must live in the request's pool. */
            h2o_iovec_t v = h2o_strdup(&req->pool, resp, SIZE_MAX);
            h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-extensions"), 0, NULL, v.base, v.len);
        }
    }

    pe_ws_conn_t *ws = (pe_ws_conn_t *)pe_conn_new(req, sizeof(*ws), &ws_conn_callbacks);
    /* The publish op follows the HTTP rule (key compared in constant time, origin, loopback
     * behind --trusted-proxy): a page that may subscribe cross-origin may still not publish. */
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    pe_auth_t publish_rule = pe_auth_check(cfg, &view);
    /* With --auth required a connection without a token may only send its auth op, and must
     * within the deadline (4001 otherwise); one that sent the API key (a backend that publishes)
     * has a use without a token. */
    int await_auth = !echo && !id.authenticated && cfg->auth_mode == PE_AUTH_MODE_REQUIRED &&
                     !(cfg->api_key != NULL && publish_rule == PE_AUTH_OK);
    pe_conn_set_identity(&ws->conn, &id);
    pe_conn_register_user(&ws->conn);
    if (await_auth)
        pe_conn_await_auth(&ws->conn, PE_WS_AUTH_DEADLINE_MS);
    ws->echo = echo;
    ws->pmd = pmd;
    ws->pmd_enabled = pmd_enabled;
    ws->initial = initial;
    ws->last_rx = ws->last_tx = h2o_now(thr->loop);
    /* Two maximal messages always fit (one in flight, one queued): with a large
     * --max-message-size a single echo or publish must not count as a slow consumer. */
    uint64_t two_messages = 2 * (cfg->max_message_size + PE_WS_MAX_HEADER + 256);
    ws->conn.max_queue = two_messages > PE_WS_MAX_QUEUE ? (uint32_t)two_messages : PE_WS_MAX_QUEUE;
    ws->may_publish = publish_rule == PE_AUTH_OK;
    ws->token_may_publish = publish_rule != PE_AUTH_ORIGIN;
    pe_ws_reader_init(&ws->reader, cfg->max_message_size, pmd_enabled);

    char *accept = h2o_mem_alloc_pool(&req->pool, sizeof(hs.accept));
    memcpy(accept, hs.accept, sizeof(hs.accept));
    req->res.status = 101;
    req->res.reason = "Switching Protocols";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL, accept, strlen(accept));
    if (hs.select_protocol)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-protocol"), 0, NULL,
                              H2O_STRLIT("pushedge.v1"));
    pe_conn_upgrade(&ws->conn, req);
    return 0;
}

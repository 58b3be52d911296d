/*
 * conn.c: the connection core (conn.h): one socket or stream, its output queue, its timers and
 * its end, shared by the WebSocket and SSE transports; and the request prologue of every
 * subscribing transport.
 *
 * Data flow. Pubsub callbacks and the transport's input handling append entries to the queue
 * (pe_conn_push) and arm a zero timeout; the flush swaps the queue into the in-flight batch and
 * hands it to one writev (socket mode: h2o_socket_write) or one h2o_send (stream mode) as an
 * iovec array pointing at the messages' shared frames: no message byte is copied per
 * subscriber. Everything that arrives while a write is in flight coalesces into the next batch,
 * so under load a connection costs one write per loop iteration, not one per message.
 *
 * Ending. Every way a connection ends goes through the flush, at a safe point (a timer, a socket
 * or generator callback): callers only change the state. With no write in flight the flush
 * frees the conn (socket) or sends the last chunk (stream); with one in flight h2o offers no way
 * to cancel it, so an abort shuts the socket down, the write fails and its callback frees the
 * conn (on HTTP/2 this ends the whole connection, which is the one that stopped reading).
 *
 * Why the socket takeover for HTTP/1 SSE as for WebSocket: an idle stream then costs this object
 * and h2o's socket only (no request, pool, parser buffer or chunked encoder), writes carry no
 * chunk framing, and reading the socket shows at once a client that left (h2o's HTTP/1 does not
 * read while a response is in progress).
 */
#include <assert.h>
#include <sys/socket.h>
#include "pubsub/alloc.h"
#include "edge/core/conn.h"
#include "edge/core/http.h"
#include "edge/util/log.h"
#include <h2o/http1.h> /* after h2o.h, which it needs */

static void flush(pe_conn_t *conn);
static void on_heartbeat(h2o_timeout_entry_t *entry);

/* ---- observability ----------------------------------------------------------------------- */

static void
log_open(pe_conn_t *conn, h2o_req_t *req)
{
    pe_log_event_t e;
    char peer[PE_LOG_PEER_MAX], *path = h2o_mem_alloc_pool(&req->pool, req->path.len + 1);
    pe_log_event_begin(&e, "conn", "open");
    pe_log_event_str(&e, "transport", pe_transport_names[conn->cb->transport], strlen(pe_transport_names[conn->cb->transport]));
    pe_log_event_str(&e, "peer", peer, pe_log_peer_format(&conn->peer, peer));
    pe_log_event_str(&e, "path", path, pe_query_redact(req->path.base, req->path.len, path, req->path.len + 1));
    pe_log_event_uint(&e, "thread", conn->thr->index);
    pe_log_event_end(&e);
}

static void
log_close(pe_conn_t *conn, uint64_t duration_ms)
{
    pe_log_event_t e;
    char peer[PE_LOG_PEER_MAX];
    const char *reason = pe_end_reason_names[conn->end_reason];
    pe_log_event_begin(&e, "conn", "close");
    pe_log_event_str(&e, "transport", pe_transport_names[conn->cb->transport], strlen(pe_transport_names[conn->cb->transport]));
    pe_log_event_str(&e, "peer", peer, pe_log_peer_format(&conn->peer, peer));
    pe_log_event_seconds(&e, "duration", duration_ms);
    pe_log_event_str(&e, "reason", reason, strlen(reason));
    pe_log_event_uint(&e, "bytes", conn->bytes_out);
    pe_log_event_uint(&e, "thread", conn->thr->index);
    pe_log_event_end(&e);
}

typedef struct st_stamp_ctx_t {
    pe_conn_t *conn;
    uint64_t now_us; /* read once per written chunk, at its first live message */
} stamp_ctx_t;

/* One written entry of a live message: its publish-to-socket latency. */
static void
on_stamp_written(void *p, uint64_t accepted_us)
{
    stamp_ctx_t *ctx = p;
    if (ctx->now_us == 0)
        ctx->now_us = pe_msg_clock_us();
    pe_stats_delivered(&ctx->conn->thr->stats, ctx->conn->cb->transport, accepted_us, ctx->now_us);
}

/* ---- the one free ------------------------------------------------------------------------ */

static void
conn_free(pe_conn_t *conn)
{
    if (conn->end_reason == PE_END_NONE)
        conn->end_reason = PE_END_ERROR;
    uint64_t now = h2o_now(conn->thr->loop), ms = now > conn->opened_ms ? now - conn->opened_ms : 0;
    pe_stats_ended(&conn->thr->stats, conn->cb->transport, (pe_end_reason_t)conn->end_reason, ms);
    if (pe_log_events_enabled())
        log_close(conn, ms);
    if (h2o_timeout_is_linked(&conn->_timer))
        h2o_timeout_unlink(&conn->_timer);
    if (h2o_timeout_is_linked(&conn->_flush))
        h2o_timeout_unlink(&conn->_flush);
    pe_deadline_cancel(conn->thr, &conn->_auth_timer);
    if (conn->sub.cb != NULL)
        pe_sub_dispose(&conn->sub);
    if (conn->user_reg != NULL)
        pe_ps_user_unregister(conn->thr->node, conn->user_reg);
    pe_stream_unregister(&conn->_stream);
    pe_outq_dispose(&conn->out);
    pe_identity_dispose(&conn->identity);
    if (conn->cb->on_dispose != NULL)
        conn->cb->on_dispose(conn);
    if (conn->sock != NULL)
        h2o_socket_close(conn->sock);
    PE_STAT_ADD(conn->thr->stats.connections[conn->cb->transport], (uint64_t)-1);
    pe_free(conn);
}

/* ---- timers ------------------------------------------------------------------------------ */

static void
schedule_flush(pe_conn_t *conn)
{
    if (!h2o_timeout_is_linked(&conn->_flush))
        h2o_timeout_link(conn->thr->loop, &conn->thr->ctx.zero_timeout, &conn->_flush);
}

static void
on_flush_timeout(h2o_timeout_entry_t *entry)
{
    flush(H2O_STRUCT_FROM_MEMBER(pe_conn_t, _flush, entry));
}

static void
on_close_deadline(h2o_timeout_entry_t *entry)
{
    /* The peer did not answer our close in time, or a write is stuck: end it. */
    pe_conn_abort(H2O_STRUCT_FROM_MEMBER(pe_conn_t, _timer, entry));
}

/* The timer entry becomes the close deadline; one already running is kept. */
static void
arm_close_deadline(pe_conn_t *conn)
{
    if (conn->_timer.cb == on_close_deadline && h2o_timeout_is_linked(&conn->_timer))
        return;
    if (h2o_timeout_is_linked(&conn->_timer))
        h2o_timeout_unlink(&conn->_timer);
    conn->_timer.cb = on_close_deadline;
    h2o_timeout_link(conn->thr->loop, &conn->thr->ws_close_timeout, &conn->_timer);
}

static void
on_heartbeat(h2o_timeout_entry_t *entry)
{
    pe_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_conn_t, _timer, entry);
    if (conn->state > PE_CONN_ENDING)
        return; /* the stream's last send is out: nothing to keep alive */
    uint64_t interval = conn->thr->server->cfg->ping_interval * 1000;
    if (conn->cb->on_heartbeat(conn, h2o_now(conn->thr->loop), interval) != 0) {
        pe_conn_set_reason(conn, PE_END_HEARTBEAT);
        pe_conn_abort(conn);
        return;
    }
    /* The callback may have made the entry a close deadline (a slow consumer) or ended the conn. */
    if (conn->_timer.cb == on_heartbeat && !h2o_timeout_is_linked(&conn->_timer) && conn->state <= PE_CONN_ENDING)
        h2o_timeout_link(conn->thr->loop, &conn->thr->ping_timeout, &conn->_timer);
}

/* ---- state changes (never free, never call h2o's send paths) ----------------------------- */

void
pe_conn_close_wait(pe_conn_t *conn)
{
    if (!pe_conn_is_open(conn))
        return;
    conn->state = PE_CONN_CLOSE_WAIT;
    arm_close_deadline(conn);
    schedule_flush(conn);
}

void
pe_conn_end(pe_conn_t *conn)
{
    if (conn->state >= PE_CONN_ENDING)
        return;
    conn->state = PE_CONN_ENDING;
    schedule_flush(conn);
}

void
pe_conn_abort(pe_conn_t *conn)
{
    if (conn->state == PE_CONN_ABORTING || conn->state == PE_CONN_ENDED)
        return;
    conn->state = PE_CONN_ABORTING;
    pe_outq_drop_queued(&conn->out);
    if (h2o_timeout_is_linked(&conn->_timer))
        h2o_timeout_unlink(&conn->_timer);
    if (conn->sock != NULL)
        h2o_socket_read_stop(conn->sock);
    schedule_flush(conn);
}

void
pe_conn_slow(pe_conn_t *conn, const char *why)
{
    if (!pe_conn_is_open(conn))
        return;
    PE_STAT_ADD(conn->thr->stats.slow_consumers[conn->cb->transport], 1);
    pe_conn_set_reason(conn, PE_END_SLOW_CONSUMER);
    pe_log(PE_LOG_INFO, conn->cb->tag, "thread %u: ending a slow consumer: %s", conn->thr->index, why);
    pe_outq_drop_queued(&conn->out);
    if (conn->cb->on_slow != NULL && conn->cb->on_slow(conn)) {
        /* The farewell goes out after the write in flight; a write stuck on a peer that stopped
         * reading is ended by the deadline. */
        conn->state = PE_CONN_ENDING;
        arm_close_deadline(conn);
        schedule_flush(conn);
    } else {
        pe_conn_abort(conn);
    }
}

int
pe_conn_push(pe_conn_t *conn, size_t text_len, pe_msg_t *msg, const char *shared, size_t shared_len)
{
    if (!pe_conn_is_open(conn))
        return PE_SUB_PAUSE;
    pe_outq_push(&conn->out, text_len, msg, shared, shared_len);
    if (msg != NULL && msg->accepted_us != 0 && conn->sub.cb != NULL && pe_sub_delivering_live(&conn->sub))
        pe_outq_stamp(&conn->out, msg->accepted_us);
    schedule_flush(conn);
    if (pe_outq_bytes(&conn->out) > conn->max_queue) {
        pe_conn_slow(conn, "its queue passed the byte bound");
        return PE_SUB_PAUSE;
    }
    return pe_outq_bytes(&conn->out) >= conn->cb->low_water ? PE_SUB_PAUSE : PE_SUB_CONTINUE;
}

void
pe_conn_push_text(pe_conn_t *conn, const void *s, size_t len)
{
    if (!pe_conn_is_open(conn))
        return;
    pe_outq_text(&conn->out, s, len);
    pe_conn_push(conn, len, NULL, NULL, 0);
}

/* ---- writing ----------------------------------------------------------------------------- */

/* Half-closes and discards the peer's input until its EOF or the close deadline: closing a
 * socket that still has unread input makes the kernel answer with a reset, which can destroy
 * our last frame before the peer reads it (a peer still sending the message we refused). */
static void
on_linger_read(h2o_socket_t *sock, const char *err)
{
    pe_conn_t *conn = sock->data;
    if (err != NULL) {
        conn_free(conn); /* the peer's EOF (or an error): done */
        return;
    }
    pe_socket_release_input(sock, 1);
}

static void
linger(pe_conn_t *conn)
{
    conn->state = PE_CONN_LINGERING;
    /* h2o reads (and we discard) from here on, whoever read before: only the peer's EOF matters. */
    h2o_socket_dont_read(conn->sock, 0);
    shutdown(h2o_socket_get_fd(conn->sock), SHUT_WR);
    pe_socket_release_input(conn->sock, 1);
    h2o_socket_read_start(conn->sock, on_linger_read);
    arm_close_deadline(conn);
}

/* Fails the write in flight: h2o's write callback (socket) or its disposal of the request
 * (stream) then ends the conn. */
static void
shut_under_write(pe_conn_t *conn)
{
    h2o_socket_t *sock = conn->sock;
    if (sock == NULL && conn->req != NULL && conn->req->conn->callbacks->get_socket != NULL)
        sock = conn->req->conn->callbacks->get_socket(conn->req->conn);
    if (sock != NULL)
        shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
}

/* The end with nothing in flight: free (socket), or the last chunk (stream: h2o may dispose the
 * request, and free the conn with it, before h2o_send returns). */
static void
end_now(pe_conn_t *conn, int error)
{
    if (conn->req == NULL) {
        conn_free(conn);
        return;
    }
    conn->state = PE_CONN_ENDED;
    h2o_send(conn->req, NULL, 0, error ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
}

static void on_write_complete(h2o_socket_t *sock, const char *err);

/* A TLS socket's write: h2o seals at least one record per iovec (lib/common/socket.c
 * h2o_socket_write: one SSL_write per buffer), and a queue entry gives up to two (the
 * connection's own bytes, then the shared frame), so a batch of small messages would cost two
 * records, two seals and two record headers per message. Runs of small iovecs are copied into
 * one buffer of the thread instead: one record per run (h2o may still cut it into records of
 * ~1,400 bytes while a connection is young). h2o encrypts inside h2o_socket_write on a TLS
 * socket and keeps no pointer to the clear bytes, so the buffer is free again when it returns.
 * Rewrites iov in place; returns the new count. */
static size_t
coalesce_for_tls(h2o_iovec_t *iov, size_t niov)
{
    static __thread char buf[PE_TLS_COALESCE_BYTES];
    size_t used = 0, out = 0, i = 0;
    while (i != niov) {
        size_t run = used;
        while (i != niov && iov[i].len <= PE_TLS_COALESCE_PIECE && used - run + iov[i].len <= PE_TLS_COALESCE_RUN &&
               used + iov[i].len <= sizeof(buf)) {
            memcpy(buf + used, iov[i].base, iov[i].len);
            used += iov[i].len;
            ++i;
        }
        if (used != run)
            iov[out++] = h2o_iovec_init(buf + run, used - run);
        else
            iov[out++] = iov[i++]; /* large, or the buffer is full: as it is */
    }
    return out;
}

/* May free conn: callers must not touch it after it returns. */
static void
flush(pe_conn_t *conn)
{
    int stream = conn->req != NULL;
    if (!stream && conn->sock == NULL)
        return; /* the upgrade is in progress: h2o calls back with the socket (or without) */
    switch (conn->state) {
    case PE_CONN_OPENING:
    case PE_CONN_LINGERING:
    case PE_CONN_ENDED:
        return;
    case PE_CONN_ABORTING:
        if (conn->write_started != 0)
            shut_under_write(conn);
        else
            end_now(conn, 1);
        return;
    default:
        break;
    }
    if (conn->write_started != 0)
        return;
    h2o_iovec_t *iov;
    size_t niov = pe_outq_next_chunk(&conn->out, conn->cb->max_batch, &iov);
    if (niov == 0) {
        if (conn->state == PE_CONN_ENDING) {
            if (!stream && conn->cb->linger)
                linger(conn);
            else
                end_now(conn, 0);
            return;
        }
        /* Everything is written: an idle connection keeps no queue capacity (the allocator's
         * per-thread cache makes the next message's allocation cheap). */
        if (!stream)
            pe_outq_trim(&conn->out);
        return;
    }
    /* h2o_now is the loop's clock in ms since the epoch: never 0. */
    conn->write_started = h2o_now(conn->thr->loop);
    if (stream)
        h2o_send(conn->req, iov, niov, H2O_SEND_STATE_IN_PROGRESS);
    else {
        if (conn->sock->ssl != NULL && niov > 1)
            niov = coalesce_for_tls(iov, niov);
        h2o_socket_write(conn->sock, iov, niov, on_write_complete);
    }
}

void
pe_conn_flush(pe_conn_t *conn)
{
    flush(conn);
}

/* A write completed (or failed: the peer is gone, or we shut the socket down). */
static void
written(pe_conn_t *conn)
{
    conn->write_started = 0;
    conn->bytes_out += conn->out.chunk_bytes;
    stamp_ctx_t ctx = {conn, 0};
    pe_outq_each_stamp(&conn->out, on_stamp_written, &ctx);
    pe_outq_written(&conn->out);
    if (conn->cb->on_written != NULL)
        conn->cb->on_written(conn);
    if (conn->state == PE_CONN_OPEN && conn->sub.cb != NULL && pe_outq_bytes(&conn->out) < conn->cb->low_water)
        pe_sub_resume(&conn->sub);
}

static void
on_write_complete(h2o_socket_t *sock, const char *err)
{
    pe_conn_t *conn = sock->data;
    if (err != NULL || conn->state == PE_CONN_ABORTING) {
        if (err != NULL && conn->state != PE_CONN_ABORTING)
            pe_conn_set_reason(conn, PE_END_CLIENT_LEFT); /* the write failed: the peer is gone */
        conn_free(conn);
        return;
    }
    written(conn);
    /* A TLS connection's record buffers stay while it is busy; edge/tls.c gives them back once it
     * has been idle for PE_TLS_IDLE_RELEASE_MS. */
    flush(conn); /* may free conn */
}

/* ---- socket mode ------------------------------------------------------------------------- */

static void
on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    pe_conn_t *conn = data;
    if (sock == NULL) {
        pe_conn_set_reason(conn, PE_END_CLIENT_LEFT); /* h2o could not write the response head */
        conn_free(conn);
        return;
    }
    conn->sock = sock;
    sock->data = conn;
    h2o_buffer_consume(&sock->input, reqsize);
    if (conn->state == PE_CONN_ABORTING) {
        conn_free(conn);
        return;
    }
    if (conn->state == PE_CONN_OPENING)
        conn->state = PE_CONN_OPEN;
    if (conn->cb->on_open != NULL)
        conn->cb->on_open(conn);
    flush(conn);
}

void
pe_conn_upgrade(pe_conn_t *conn, h2o_req_t *req)
{
    h2o_http1_upgrade(req, NULL, 0, on_upgraded, conn);
}

/* ---- stream mode ------------------------------------------------------------------------- */

/* In the request's pool: the generator, and the way back to the conn. */
typedef struct st_stream_holder_t {
    h2o_generator_t gen;
    pe_conn_t *conn;
} stream_holder_t;

static void
on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    pe_conn_t *conn = ((stream_holder_t *)gen)->conn;
    written(conn);
    flush(conn);
}

static void
on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    /* The client went away; the pool's disposal frees the conn. */
    pe_conn_set_reason(((stream_holder_t *)gen)->conn, PE_END_CLIENT_LEFT);
    ((stream_holder_t *)gen)->conn->state = PE_CONN_ENDED;
}

static void
on_request_dispose(void *p)
{
    pe_conn_t *conn = ((stream_holder_t *)p)->conn;
    conn->req = NULL;
    conn_free(conn);
}

void
pe_conn_start_stream(pe_conn_t *conn, h2o_req_t *req)
{
    stream_holder_t *holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), on_request_dispose);
    *holder = (stream_holder_t){{on_proceed, on_stop}, conn};
    conn->req = req;
    conn->state = PE_CONN_OPEN;
    h2o_start_response(req, &holder->gen);
    schedule_flush(conn);
}

/* ---- identity: expiry and revocation ------------------------------------------------------ */

/* What _auth_timer waits for. */
enum { AUTH_IDLE = 0, AUTH_NOTICE, AUTH_EXPIRY, AUTH_DEADLINE };

/* Ends an open conn for an identity reason through its transport's farewell. */
static void
end_for_auth(pe_conn_t *conn, pe_conn_auth_event_t ev, const pe_revocation_t *r)
{
    pe_conn_set_reason(conn, PE_END_AUTH);
    conn->cb->on_auth(conn, ev, r);
}

static void
on_auth_timer(pe_deadline_t *d)
{
    pe_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_conn_t, _auth_timer, d);
    if (!pe_conn_is_open(conn) || conn->cb->on_auth == NULL)
        return;
    switch (conn->_auth_phase) {
    case AUTH_NOTICE:
        conn->cb->on_auth(conn, PE_CONN_TOKEN_EXPIRING, NULL);
        /* The end: exp plus the leeway the verification forgives (a token refused at a new
         * connection is not kept alive on an old one). */
        conn->_auth_phase = AUTH_EXPIRY;
        pe_deadline_set(conn->thr, &conn->_auth_timer, ((uint64_t)conn->identity.exp + conn->thr->server->cfg->jwt_leeway) * 1000);
        break;
    case AUTH_EXPIRY:
        conn->_auth_phase = AUTH_IDLE;
        end_for_auth(conn, PE_CONN_TOKEN_EXPIRED, NULL);
        break;
    case AUTH_DEADLINE:
        conn->_auth_phase = AUTH_IDLE;
        end_for_auth(conn, PE_CONN_AUTH_MISSING, NULL);
        break;
    }
}

void
pe_conn_set_identity(pe_conn_t *conn, pe_identity_t *id)
{
    pe_identity_dispose(&conn->identity);
    conn->identity = *id;
    memset(id, 0, sizeof(*id));
    conn->_auth_timer.cb = on_auth_timer;
    if (!conn->identity.authenticated || conn->identity.exp == 0) {
        conn->_auth_phase = AUTH_IDLE;
        pe_deadline_cancel(conn->thr, &conn->_auth_timer);
        return;
    }
    conn->_auth_phase = AUTH_NOTICE;
    pe_deadline_set(conn->thr, &conn->_auth_timer,
                    pe_token_notice_ms(conn->identity.exp, conn->identity.iat, h2o_now(conn->thr->loop)));
}

void
pe_conn_await_auth(pe_conn_t *conn, uint64_t ms)
{
    conn->_auth_timer.cb = on_auth_timer;
    conn->_auth_phase = AUTH_DEADLINE;
    pe_deadline_set(conn->thr, &conn->_auth_timer, h2o_now(conn->thr->loop) + ms);
}

static int
on_revoke(pe_stream_t *stream, const pe_revocation_t *r)
{
    pe_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_conn_t, _stream, stream);
    const pe_identity_t *id = &conn->identity;
    if (!pe_conn_is_open(conn) || conn->cb->on_auth == NULL || !id->authenticated || id->sub == NULL ||
        id->sub_len != r->user_len || memcmp(id->sub, r->user, r->user_len) != 0)
        return 0;
    if (r->pattern == NULL) {
        end_for_auth(conn, PE_CONN_REVOKED, r);
        return 1;
    }
    if (conn->sub.cb == NULL)
        return 0;
    size_t n = pe_sub_num_channels(&conn->sub), matching = 0;
    for (size_t i = 0; i != n; ++i) {
        size_t len;
        const char *name = pe_sub_channel(&conn->sub, i, &len);
        matching += pe_pattern_match(r->pattern, r->pattern_len, NULL, 0, name, len);
    }
    if (matching == 0)
        return 0;
    /* A connection that would be left with no channel has nothing to wait for: it ends. */
    if (matching == n) {
        end_for_auth(conn, PE_CONN_REVOKED, r);
        return 1;
    }
    /* Backwards: removing a channel moves the ones after it. */
    for (size_t i = n; i-- != 0;) {
        size_t len;
        const char *name = pe_sub_channel(&conn->sub, i, &len);
        if (!pe_pattern_match(r->pattern, r->pattern_len, NULL, 0, name, len))
            continue;
        char copy[PE_CHANNEL_MAXLEN + 1]; /* the name goes with the channel */
        memcpy(copy, name, len);
        pe_sub_remove(&conn->sub, copy, len);
        if (conn->cb->on_channel_revoked != NULL)
            conn->cb->on_channel_revoked(conn, copy, len, r);
    }
    return 1;
}

/* ---- identity: connection ids, presence, the user registry ------------------------------- */

/* This thread's connection numbers; with the node id and the thread's index they make an id
 * no other connection of any node has (a restarted process has a new node id). */
static __thread uint64_t next_serial;

size_t
pe_conn_client_id(const pe_conn_t *conn, char buf[PE_CONN_ID_MAX])
{
    int n = snprintf(buf, PE_CONN_ID_MAX, "%s.%u.%llu", pe_ps_engine_node_id(pe_ps_node_engine(conn->thr->node)), conn->thr->index,
                     (unsigned long long)conn->serial);
    return n < 0 ? 0 : (size_t)n < PE_CONN_ID_MAX ? (size_t)n : PE_CONN_ID_MAX - 1;
}

/* Fills who from the connection: its id, user, transport and when it opened (wall clock). */
static void
conn_who(pe_conn_t *conn, pe_ps_who_t *out)
{
    pe_conn_client_id(conn, out->client);
    out->user = conn->identity.sub;
    out->user_len = conn->identity.sub_len;
    out->transport = pe_transport_names[conn->cb->transport];
    uint64_t now_ms = pe_msg_clock_us() / 1000, age = h2o_now(conn->thr->loop) - conn->opened_ms;
    out->since_ms = now_ms > age ? now_ms - age : now_ms;
    out->node = pe_ps_engine_node_id(pe_ps_node_engine(conn->thr->node));
    out->info = conn->identity.info;
    out->info_len = conn->identity.info_len;
}

void
pe_conn_who(pe_sub_t *sub, pe_ps_who_t *out)
{
    conn_who(H2O_STRUCT_FROM_MEMBER(pe_conn_t, sub, sub), out);
}

void
pe_conn_register_user(pe_conn_t *conn)
{
    if (conn->user_reg != NULL || conn->identity.sub == NULL)
        return;
    pe_ps_who_t who;
    conn_who(conn, &who);
    conn->user_reg = pe_ps_user_register(conn->thr->node, &who);
}

/* ---- creation ---------------------------------------------------------------------------- */

static void
on_drain(pe_stream_t *stream)
{
    pe_conn_t *conn = H2O_STRUCT_FROM_MEMBER(pe_conn_t, _stream, stream);
    if (pe_conn_is_open(conn)) {
        pe_conn_set_reason(conn, PE_END_DRAIN);
        conn->cb->on_drain(conn);
    }
}

pe_conn_t *
pe_conn_new(h2o_req_t *req, size_t sz, const pe_conn_callbacks_t *cb)
{
    assert(sz >= sizeof(pe_conn_t));
    pe_conn_t *conn = pe_calloc(1, sz);
    conn->cb = cb;
    conn->thr = pe_thread_of(req);
    conn->state = PE_CONN_OPENING;
    conn->_stream.drain = on_drain;
    conn->_stream.revoke = on_revoke;
    conn->_timer.cb = on_heartbeat;
    conn->_flush.cb = on_flush_timeout;
    conn->opened_ms = h2o_now(conn->thr->loop);
    conn->serial = ++next_serial;
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    if (req->conn->callbacks != NULL && req->conn->callbacks->get_peername != NULL)
        sslen = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    pe_log_peer_set(&conn->peer, (struct sockaddr *)&ss, sslen);
    if (pe_log_events_enabled())
        log_open(conn, req);
    PE_STAT_ADD(conn->thr->stats.connections[cb->transport], 1);
    pe_stream_register(conn->thr, &conn->_stream);
    h2o_timeout_link(conn->thr->loop, &conn->thr->ping_timeout, &conn->_timer);
    return conn;
}

/* ---- the request prologue ---------------------------------------------------------------- */

int
pe_conn_refuse_draining(h2o_req_t *req)
{
    if (!pe_thread_of(req)->draining)
        return 0;
    /* The client comes back to another node (docs/protocol.md "Operations"), on a new
     * connection: h2o 2.2 would keep this one alive to the draining node. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    req->http1_is_persistent = 0;
    pe_http_error(req, 503, "Service Unavailable", "draining", "this node is shutting down; reconnect");
    return 1;
}

int
pe_conn_refuse_channels_full(h2o_req_t *req, size_t adding)
{
    if (!pe_ps_engine_channels_full(pe_ps_node_engine(pe_thread_of(req)->node), adding))
        return 0;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
    pe_http_error(req, 503, "Service Unavailable", "channel_limit", pe_ps_err_channel_limit);
    return 1;
}

int
pe_conn_parse_subscription(h2o_req_t *req, unsigned flags, pe_sub_query_t *q, char *arena)
{
    h2o_iovec_t qs = pe_http_query(req);
    const char *code, *err;
    if (pe_sub_query_parse(qs.base, qs.len, q, arena, &code, &err) != 0 &&
        !((flags & PE_CONN_QUERY_CHANNEL_OPTIONAL) != 0 && strcmp(code, "missing_channel") == 0)) {
        pe_http_error(req, 400, "Bad Request", code, err);
        return -1;
    }
    if ((flags & PE_CONN_QUERY_LAST_EVENT_ID) != 0) {
        /* EventSource reconnects carry Last-Event-ID; it wins over the URL's since. */
        ssize_t hi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
        if (hi >= 0 && req->headers.entries[hi].value.len != 0) {
            h2o_iovec_t v = req->headers.entries[hi].value;
            if (pe_cursor_parse(v.base, v.len, &q->since, &err) != 0) {
                pe_http_error(req, 400, "Bad Request", "bad_cursor", err);
                return -1;
            }
        }
    }
    return 0;
}

void
pe_conn_subscribe(pe_sub_t *sub, const pe_sub_query_t *q, void (*added)(void *ctx, const char *channel, size_t len), void *ctx)
{
    for (size_t i = 0; i != q->num_channels; ++i) {
        pe_start_t start = pe_start_from_cursor(&q->since, q->channels[i].name, q->channels[i].len, q->num_channels);
        /* presence=1: the events, and a listing for the transports that can say who they are
         * (a long-poll, one request at a time, has no lasting connection to list). */
        unsigned flags = !q->presence           ? 0
                         : sub->cb->who != NULL ? PE_SUB_PRESENCE_EVENTS | PE_SUB_PRESENCE_MEMBER
                                                : PE_SUB_PRESENCE_EVENTS;
        if (pe_sub_add_flags(sub, q->channels[i].name, q->channels[i].len, start, flags) == NULL && added != NULL)
            added(ctx, q->channels[i].name, q->channels[i].len);
    }
}

/*
 * sse.c: GET /sse, the Server-Sent Events transport (docs/protocol.md "Server-Sent Events").
 *
 * Output path. Pubsub callbacks never write: they append an entry to the stream's queue (a
 * reference to the message's shared SSE frame, plus any per-stream text such as a multi-channel
 * cursor line) and arm a zero timeout. The flush then swaps the queue into the in-flight batch
 * and hands it to h2o_send as an iovec array pointing at the shared frames: no message byte is
 * copied per subscriber on HTTP/1 (h2o's HTTP/2 framing copies once into its frame buffer).
 * h2o allows one send in flight per generator, so everything that arrives meanwhile coalesces
 * into the next batch: under load a stream costs one writev per loop iteration, not one per
 * message. The batch's memory stays untouched until `proceed` says h2o is done with it.
 *
 * Bounds. The queue is bounded in bytes (PE_SSE_MAX_QUEUE); a stream past it is a slow
 * consumer and is ended (the client resumes from its last id). Catch-up from history pauses at
 * PE_SSE_LOW_WATER so replaying history never fills the queue by itself. A send that stays in
 * flight for two heartbeat intervals means a peer that stopped reading: also ended.
 *
 * Ending a stream. With no send in flight, h2o_send(ERROR) ends it. With a send in flight h2o
 * offers no way to abort, so we shut the socket down: the pending write fails and h2o disposes
 * the request through its normal path (on HTTP/2 this ends the whole connection, which is the
 * one that stopped reading).
 *
 * Two ways to the wire.
 *   - HTTP/1.x: the stream takes the socket over (h2o_http1_upgrade with a 200: h2o writes the
 *     status line and headers, then hands us the socket and frees its connection and request).
 *     The body is delimited by the connection's close, which every SSE client and HTTP/1.0
 *     proxy understands. What that buys: an idle stream costs our object and h2o's socket only
 *     (no request, pool, parser buffer or chunked encoder: ~1.6 KiB instead of ~14 KiB), writes
 *     are one writev of shared frames with no chunk framing, and reading the socket shows a
 *     client that left at once (h2o's HTTP/1 does not read while a response is in progress, so
 *     a vanished peer was only noticed by the next heartbeat's write).
 *   - HTTP/2: h2o's generator (h2o_send, one send in flight), on a stream of a shared connection.
 *
 * Lifetime. On HTTP/2 the stream object lives in req->pool and is torn down by the pool's
 * dispose hook. On HTTP/1 it is malloc'd and freed by sse_free once the socket is closed. h2o is
 * never called from inside a pubsub callback, so nothing can vanish under one.
 */
#include <sys/socket.h>
#include "pubsub/alloc.h"
#include "edge/util/log.h"
#include "edge/core/outq.h"
#include "edge/util/query.h"
#include "fallback/sse.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include <h2o/http1.h>

typedef struct st_pe_sse_t {
    h2o_generator_t gen;
    pe_stream_t stream;
    pe_sub_t sub;
    h2o_req_t *req;     /* HTTP/2: the object lives in req->pool. HTTP/1: NULL once upgraded */
    h2o_socket_t *sock; /* HTTP/1, once h2o handed the socket over */
    pe_thread_t *thr;
    pe_outq_t out;
    uint64_t sending_since; /* loop ms of the send in flight */
    h2o_timeout_entry_t ping_entry;
    h2o_timeout_entry_t flush_entry;
    unsigned sending : 1;    /* an h2o_send is in flight */
    unsigned live_sent : 1;  /* the bare id line that marks the stream live went out */
    unsigned multi : 1;      /* several channels: every event carries the full cursor */
    unsigned ending : 1;     /* drain: send what is queued, then the final chunk */
    unsigned ended : 1;      /* FINAL or ERROR was sent, or the socket shut down */
    unsigned overflow : 1;   /* slow consumer: end at the next flush */
    unsigned own_socket : 1; /* HTTP/1: the stream writes to the socket itself */
} pe_sse_t;

static void schedule_flush(pe_sse_t *sse);
static void sse_free(pe_sse_t *sse);
static void on_write_complete(h2o_socket_t *sock, const char *err);

static void
push_text(pe_sse_t *sse, const char *s, size_t len)
{
    pe_outq_push_text(&sse->out, s, len);
    schedule_flush(sse);
}

/* ---- ending ---------------------------------------------------------------------------------- */

/* Ends the stream now, dropping what is queued (the client resumes from its last id). */
static void
abort_stream(pe_sse_t *sse)
{
    if (sse->ended)
        return;
    sse->ended = 1;
    pe_outq_drop_queued(&sse->out);
    if (sse->own_socket) {
        /* Before h2o hands the socket over, on_upgraded sees `ended` and frees the stream; a
         * write in flight fails on the shut socket and its callback frees it. */
        if (sse->sock == NULL)
            return;
        if (sse->sending)
            shutdown(h2o_socket_get_fd(sse->sock), SHUT_RDWR);
        else
            sse_free(sse);
        return;
    }
    if (!sse->sending) {
        h2o_send(sse->req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    h2o_socket_t *sock =
        sse->req->conn->callbacks->get_socket != NULL ? sse->req->conn->callbacks->get_socket(sse->req->conn) : NULL;
    if (sock != NULL)
        shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
}

static void
slow_consumer(pe_sse_t *sse, const char *why)
{
    PE_STAT_ADD(sse->thr->stats.slow_consumers[PE_TRANSPORT_SSE], 1);
    pe_log(PE_LOG_INFO, "edge/sse", "thread %u: ending a stream: %s", sse->thr->index, why);
    abort_stream(sse);
}

/* ---- sending --------------------------------------------------------------------------------- */

/* May end the response; h2o can then free the request and this object with it, so callers
 * must not touch sse after flush returns. */
static void
flush(pe_sse_t *sse)
{
    if (sse->ended)
        return;
    /* Before the in-flight check: a peer that stopped reading keeps a send in flight forever. */
    if (sse->overflow) {
        slow_consumer(sse, "its queue passed the byte bound");
        return;
    }
    if (sse->sending || (sse->own_socket && sse->sock == NULL))
        return;
    h2o_iovec_t *iov;
    size_t niov = pe_outq_next_chunk(&sse->out, PE_SSE_MAX_BATCH, &iov);
    if (niov == 0) {
        if (sse->ending) {
            sse->ended = 1;
            if (sse->own_socket)
                sse_free(sse); /* the close ends the body */
            else
                h2o_send(sse->req, NULL, 0, H2O_SEND_STATE_FINAL);
            return;
        }
        if (sse->own_socket)
            pe_outq_trim(&sse->out); /* an idle stream keeps no queue capacity */
        return;
    }
    sse->sending = 1;
    sse->sending_since = h2o_now(sse->thr->loop);
    if (sse->own_socket)
        h2o_socket_write(sse->sock, iov, niov, on_write_complete);
    else
        h2o_send(sse->req, iov, niov, H2O_SEND_STATE_IN_PROGRESS);
}

/* HTTP/1: the write of a batch completed (or failed: the peer is gone, or we shut it down). */
static void
on_write_complete(h2o_socket_t *sock, const char *err)
{
    pe_sse_t *sse = sock->data;
    sse->sending = 0;
    if (err != NULL || sse->ended) {
        sse_free(sse);
        return;
    }
    pe_outq_written(&sse->out);
    if (!sse->overflow && pe_outq_bytes(&sse->out) < PE_SSE_LOW_WATER)
        pe_sub_resume(&sse->sub);
    flush(sse); /* may free sse */
}

/* HTTP/1: a client says nothing after its request; EOF (or an error) means it left. */
static void
on_read(h2o_socket_t *sock, const char *err)
{
    pe_sse_t *sse = sock->data;
    if (err != NULL) {
        abort_stream(sse); /* frees it, or its write in flight fails and that frees it */
        return;
    }
    pe_socket_release_input(sock, 1); /* an idle stream keeps no read buffer */
}

static void
on_flush_timeout(h2o_timeout_entry_t *entry)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, flush_entry, entry);
    flush(sse);
}

static void
schedule_flush(pe_sse_t *sse)
{
    if (!h2o_timeout_is_linked(&sse->flush_entry))
        h2o_timeout_link(sse->thr->loop, &sse->thr->ctx.zero_timeout, &sse->flush_entry);
}

static void
on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, gen, gen);
    sse->sending = 0;
    pe_outq_written(&sse->out);
    /* Resume first: flush may end the response, and h2o may then free the request (and this
     * object, which lives in its pool) before flush returns. */
    if (!sse->ended && !sse->overflow && pe_outq_bytes(&sse->out) < PE_SSE_LOW_WATER)
        pe_sub_resume(&sse->sub);
    flush(sse);
}

static void
on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    /* The client went away; the pool's dispose hook frees everything. */
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, gen, gen);
    sse->ended = 1;
}

/* ---- pubsub callbacks (never call h2o from here) --------------------------------------------- */

/* Appends "id: <cursor>\n" to the queue's text; returns its length. */
static size_t
put_cursor_line(pe_sse_t *sse)
{
    char line[PE_CURSOR_MAXLEN + 8];
    memcpy(line, "id: ", 4);
    size_t n = pe_sub_cursor(&sse->sub, line + 4, sizeof(line) - 5);
    line[4 + n] = '\n';
    pe_outq_text(&sse->out, line, n + 5);
    return n + 5;
}

static int
on_message(pe_sub_t *sub, pe_msg_t *msg)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, sub, sub);
    if (sse->ended || sse->overflow)
        return PE_SUB_PAUSE;
    /* With one channel the cursor is the message ID, already in the shared frame; with several
     * the stream's own cursor line replaces the frame's id line. */
    if (sse->multi) {
        size_t text = put_cursor_line(sse);
        pe_outq_push(&sse->out, text, msg, msg->sse_frame + msg->sse_data_off, msg->sse_frame_len - msg->sse_data_off);
    } else {
        pe_outq_push(&sse->out, 0, msg, msg->sse_frame, msg->sse_frame_len);
    }
    if (pe_outq_bytes(&sse->out) > PE_SSE_MAX_QUEUE) {
        sse->overflow = 1;
        pe_outq_drop_queued(&sse->out);
    }
    schedule_flush(sse);
    return pe_outq_bytes(&sse->out) >= PE_SSE_LOW_WATER ? PE_SUB_PAUSE : PE_SUB_CONTINUE;
}

static void
on_gap(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, sub, sub);
    if (sse->ended || sse->overflow)
        return;
    static const char head[] = "event: gap\n", mid[] = "data: {\"channel\":\"", tail[] = "\"}\n\n";
    pe_outq_text(&sse->out, head, sizeof(head) - 1);
    size_t n = sizeof(head) - 1 + put_cursor_line(sse);
    pe_outq_text(&sse->out, mid, sizeof(mid) - 1);
    pe_outq_text(&sse->out, channel, len);
    pe_outq_text(&sse->out, tail, sizeof(tail) - 1);
    pe_outq_push(&sse->out, n + sizeof(mid) - 1 + len + sizeof(tail) - 1, NULL, NULL, 0);
    schedule_flush(sse);
}

static void
on_live(pe_sub_t *sub)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, sub, sub);
    if (sse->ended || sse->live_sent)
        return;
    /* Once, when catch-up is over: an id with no data sets the client's Last-Event-ID without
     * dispatching an event (WHATWG "dispatch the event": step 1 runs before the empty-data
     * check), so a client that received nothing yet still reconnects from here, and any client
     * can tell that what follows is live. */
    size_t n = put_cursor_line(sse);
    pe_outq_text(&sse->out, "\n", 1);
    pe_outq_push(&sse->out, n + 1, NULL, NULL, 0);
    sse->live_sent = 1;
    schedule_flush(sse);
}

/* One event per outage and one when the engine is back; the stream stays open and catches up
 * by itself. Its default-less type keeps it away from onmessage handlers. */
static void
on_engine(pe_sub_t *sub, int up)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, sub, sub);
    if (sse->ended || sse->overflow)
        return;
    if (up)
        push_text(sse, H2O_STRLIT("event: engine\ndata: {\"state\":\"available\"}\n\n"));
    else
        push_text(sse, H2O_STRLIT("event: engine\ndata: {\"state\":\"unavailable\"}\n\n"));
}

static const pe_sub_callbacks_t sse_callbacks = {on_message, on_gap, on_live, on_engine, NULL};

/* ---- timers, drain, disposal ----------------------------------------------------------------- */

static void
on_ping(h2o_timeout_entry_t *entry)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, ping_entry, entry);
    if (sse->ended)
        return;
    uint64_t interval = sse->thr->server->cfg->ping_interval * 1000;
    if (sse->sending && h2o_now(sse->thr->loop) - sse->sending_since > 2 * interval) {
        slow_consumer(sse, "a write was stuck for two heartbeat intervals");
        return;
    }
    /* A comment: clients ignore it, intermediaries see traffic, and a dead peer fails the write. */
    push_text(sse, H2O_STRLIT(": ping\n\n"));
    h2o_timeout_link(sse->thr->loop, &sse->thr->ping_timeout, &sse->ping_entry);
}

static void
on_drain(pe_stream_t *stream)
{
    pe_sse_t *sse = H2O_STRUCT_FROM_MEMBER(pe_sse_t, stream, stream);
    if (sse->ended || sse->ending)
        return;
    /* Spread the herd: each client waits a different time before it comes back. */
    char line[48];
    int n = snprintf(line, sizeof(line), "retry: %u\n\n",
                     PE_SSE_DRAIN_RETRY_MIN_MS + (unsigned)(pe_rand() % PE_SSE_DRAIN_RETRY_SPREAD_MS));
    sse->ending = 1;
    push_text(sse, line, (size_t)n);
}

/* What both ways of ending have to release; the object itself is freed by its owner. */
static void
release(pe_sse_t *sse)
{
    pe_sub_dispose(&sse->sub);
    if (h2o_timeout_is_linked(&sse->ping_entry))
        h2o_timeout_unlink(&sse->ping_entry);
    if (h2o_timeout_is_linked(&sse->flush_entry))
        h2o_timeout_unlink(&sse->flush_entry);
    pe_stream_unregister(&sse->stream);
    pe_outq_dispose(&sse->out);
    PE_STAT_ADD(sse->thr->stats.connections[PE_TRANSPORT_SSE], (uint64_t)-1);
}

/* HTTP/2: the request's pool is going away. */
static void
on_dispose(void *p)
{
    release(p);
}

/* HTTP/1: closes the socket and frees the stream. Callers must not touch sse afterwards. */
static void
sse_free(pe_sse_t *sse)
{
    release(sse);
    if (sse->sock != NULL)
        h2o_socket_close(sse->sock);
    pe_free(sse);
}

/* HTTP/1: h2o wrote the response head and handed the socket over (or failed: sock NULL). */
static void
on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    pe_sse_t *sse = data;
    sse->req = NULL; /* gone with h2o's connection */
    if (sock == NULL) {
        sse_free(sse);
        return;
    }
    sse->sock = sock;
    sock->data = sse;
    h2o_buffer_consume(&sock->input, reqsize);
    if (sse->ended) {
        sse_free(sse);
        return;
    }
    h2o_socket_read_start(sock, on_read);
    on_read(sock, NULL); /* discards anything sent after the request, frees the read buffer */
    flush(sse);
}

/* ---- the handler ----------------------------------------------------------------------------- */

int
pe_sse_on_req(h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);

    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        pe_http_method_not_allowed(req, "GET");
        return 0;
    }
    if (thr->draining) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        pe_http_error(req, 503, "Service Unavailable", "draining", "this node is shutting down; reconnect");
        return 0;
    }

    h2o_iovec_t qs = pe_http_query(req);
    pe_sub_query_t *q = h2o_mem_alloc_pool(&req->pool, sizeof(*q));
    char *arena = h2o_mem_alloc_pool(&req->pool, qs.len + 1);
    const char *code, *err;
    if (pe_sub_query_parse(qs.base, qs.len, q, arena, &code, &err) != 0) {
        pe_http_error(req, 400, "Bad Request", code, err);
        return 0;
    }
    /* EventSource reconnects carry Last-Event-ID; it wins over the URL's since. */
    ssize_t hi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
    if (hi >= 0 && req->headers.entries[hi].value.len != 0) {
        h2o_iovec_t v = req->headers.entries[hi].value;
        if (pe_cursor_parse(v.base, v.len, &q->since, &err) != 0) {
            pe_http_error(req, 400, "Bad Request", "bad_cursor", err);
            return 0;
        }
    }

    if (pe_ps_engine_channels_full(pe_ps_node_engine(thr->node), q->num_channels)) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        pe_http_error(req, 503, "Service Unavailable", "channel_limit", pe_ps_err_channel_limit);
        return 0;
    }
    int own_socket = req->version < 0x200;
    pe_sse_t *sse = own_socket ? pe_malloc(sizeof(*sse)) : h2o_mem_alloc_shared(&req->pool, sizeof(*sse), on_dispose);
    *sse = (pe_sse_t){.req = req, .thr = thr, .own_socket = own_socket};
    sse->gen.proceed = on_proceed;
    sse->gen.stop = on_stop;
    sse->stream.drain = on_drain;
    sse->ping_entry.cb = on_ping;
    sse->flush_entry.cb = on_flush_timeout;
    sse->multi = q->num_channels > 1;
    PE_STAT_ADD(thr->stats.connections[PE_TRANSPORT_SSE], 1);
    pe_stream_register(thr, &sse->stream);

    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache, no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    if (!own_socket)
        h2o_start_response(req, &sse->gen);
    else /* h2o's upgrade head says "Connection: upgrade"; say that the body ends with the connection */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONNECTION, NULL, H2O_STRLIT("close"));

    if (q->padding) {
        char pad[PE_SSE_PADDING + 3];
        pad[0] = ':';
        memset(pad + 1, ' ', PE_SSE_PADDING);
        pad[PE_SSE_PADDING + 1] = '\n';
        push_text(sse, pad, PE_SSE_PADDING + 2);
    }
    char retry[32];
    int n = snprintf(retry, sizeof(retry), "retry: %u\n\n", PE_SSE_RETRY_MS);
    push_text(sse, retry, (size_t)n);

    pe_sub_init(&sse->sub, thr->node, &sse_callbacks);
    for (size_t i = 0; i != q->num_channels; ++i) {
        pe_start_t start = pe_start_from_cursor(&q->since, q->channels[i].name, q->channels[i].len, q->num_channels);
        pe_sub_add(&sse->sub, q->channels[i].name, q->channels[i].len, start);
    }
    h2o_timeout_link(thr->loop, &thr->ping_timeout, &sse->ping_entry);
    /* Send the headers and prelude now: a client should see the stream open at once. The
     * subscription is in place before the upgrade: pubsub never calls back from inside, and
     * what it delivers meanwhile waits in the queue until the socket is ours. */
    if (own_socket)
        h2o_http1_upgrade(req, NULL, 0, on_upgraded, sse);
    else
        flush(sse);
    return 0;
}

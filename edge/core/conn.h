/*
 * conn.h: the connection core, the life of one long-lived subscriber connection whatever its
 * transport: a WebSocket, an SSE stream on an HTTP/1 socket taken over from h2o, or an SSE
 * stream on an HTTP/2 stream of h2o's. The transport says what to send; the core owns how it
 * gets there and when the connection ends.
 *
 * What the core owns (transports never touch these directly):
 *   - the socket (socket mode: from h2o_http1_upgrade's hand-over until the connection is freed)
 *     or the response (stream mode: a generator in the request's pool, one h2o_send in flight);
 *   - the bounded output queue and its deferred flush (one write in flight; what arrives
 *     meanwhile coalesces into the next writev, up to cb->max_batch entries);
 *   - the heartbeat timer (--ping-interval) and the close deadline (PE_WS_CLOSE_WAIT_MS), one
 *     timer entry whose role follows the state;
 *   - the slow-consumer policy: past max_queue bytes the queue is dropped, counted in
 *     slow_consumers[transport], and the connection ends (after the transport's farewell frame
 *     if it has one, else at once);
 *   - the drain hook (the thread's stream registry), the connection gauge, the subscription's
 *     disposal and its resumption when the queue drains below cb->low_water.
 *
 * Ownership. pe_conn_new allocates the transport's object (the core at its start) and the core
 * is its only owner on every path: it is freed in one place (the core's free), which runs
 *   - in socket mode, once the socket is done (closed after the last write, the peer's EOF while
 *     lingering, a failed write, an abort), never while h2o still holds a write or the upgrade;
 *   - in stream mode, only when h2o disposes the request's pool (the request is a weak pointer:
 *     a small holder in the pool points back at the conn and frees it from its dispose hook).
 * The transport frees what it holds in cb->on_dispose, called once from there.
 *
 * When callbacks run: on_open, on_written and on_heartbeat from the core's own socket,
 * generator and timer callbacks; on_drain from the thread's drain walk; on_slow from inside
 * pe_conn_push or pe_conn_slow (so possibly inside a pubsub callback: it may only queue);
 * on_dispose from the core's free. None may free the connection or call pe_conn_flush. No
 * pe_conn_* call frees the connection or writes, except pe_conn_flush: ending is deferred to the
 * flush (a zero timeout), so a transport may call every other pe_conn_* function from a pubsub
 * callback (pe_conn_new, pe_conn_upgrade and pe_conn_start_stream belong to the request handler).
 *
 * States (conn->state), and who moves them:
 *
 *   OPENING --(h2o hands the socket over / stream response started)--> OPEN
 *   OPEN --pe_conn_close_wait--> CLOSE_WAIT --pe_conn_end--> ENDING
 *   OPEN --pe_conn_end, or slow consumer with a farewell--> ENDING
 *   ENDING --(queue written; socket, cb->linger)--> LINGERING --(peer EOF or deadline)--> freed
 *   ENDING --(queue written)--> freed (socket) or ENDED (stream: FINAL sent)
 *   any --pe_conn_abort, slow consumer without a farewell, close deadline--> ABORTING
 *   ABORTING --(no write in flight)--> freed (socket) or ENDED (stream: ERROR sent)
 *   ENDED --(the request's pool is disposed)--> freed
 */
#ifndef PE_CONN_H
#define PE_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "pubsub/pubsub.h"
#include "edge/core/deadline.h"
#include "edge/core/outq.h"
#include "edge/core/thread.h"
#include "edge/util/log.h"
#include "edge/identity/policy.h"
#include "edge/util/query.h"

typedef struct st_pe_conn_t pe_conn_t;

/* What the core tells a transport about its identity (docs/auth.md "Expiry", "Revocation"). */
typedef enum en_pe_conn_auth_event_t {
    PE_CONN_TOKEN_EXPIRING = 0, /* the notice is due: conn->identity.exp is the token's exp; queue it */
    PE_CONN_TOKEN_EXPIRED,      /* exp + --jwt-leeway passed without a refresh: say so and end the conn */
    PE_CONN_AUTH_MISSING,       /* the deadline of pe_conn_await_auth passed without a token: end the conn */
    PE_CONN_REVOKED             /* a revocation named its user (all of it, or its last channel): end the conn */
} pe_conn_auth_event_t;

typedef enum en_pe_conn_state_t {
    PE_CONN_OPENING = 0, /* socket mode: h2o writes the response head; output queues, nothing is written */
    PE_CONN_OPEN,        /* output is accepted and written as it comes */
    PE_CONN_CLOSE_WAIT,  /* the transport's last frame is queued (a WebSocket close): no more output; input
                            is still read until the transport ends the conn or the close deadline passes */
    PE_CONN_ENDING,      /* no more output: what is queued is written, then the connection ends */
    PE_CONN_LINGERING,   /* socket mode: all written and our side shut; the peer's input is discarded until its
                            EOF or the close deadline, so closing does not reset the connection under our last frame */
    PE_CONN_ABORTING,    /* ending without its queue at the next flush; a write in flight is failed by shutting
                            the socket down */
    PE_CONN_ENDED        /* stream mode: the last send is out (or h2o stopped the response); the request's pool
                            disposal frees the conn */
} pe_conn_state_t;

/**
 * What a transport plugs into the core: a static table. Every callback is optional unless
 * stated. None may free the connection or call pe_conn_flush; each may call the other pe_conn_*
 * functions.
 */
typedef struct st_pe_conn_callbacks_t {
    pe_transport_t transport; /* which counters (connections, slow consumers) */
    const char *tag;          /* log module tag, "edge/ws" */
    size_t low_water;         /* queued bytes below which a paused catch-up resumes */
    size_t max_batch;         /* queue entries per write (each takes up to two iovecs) */
    int linger;               /* socket mode: after the last write of ENDING, linger (WebSocket) instead of closing */
    /**
     * Socket mode, OPENING -> OPEN (or a later state reached meanwhile): h2o handed the socket
     * over; sock->data is the conn and sock->input holds what followed the request. Start
     * reading here. The core flushes after it returns.
     */
    void (*on_open)(pe_conn_t *conn);
    /**
     * Required. The heartbeat, every --ping-interval while OPENING, OPEN, or ENDING without a close
     * deadline (CLOSE_WAIT, a farewell and lingering run the deadline instead): queue the keep-alive if the conn accepts output,
     * apply the transport's liveness rule (pe_conn_slow for a peer that reads nothing). Returns
     * 0, or -1 if the peer is gone (the core aborts). now and interval are in ms.
     */
    int (*on_heartbeat)(pe_conn_t *conn, uint64_t now, uint64_t interval);
    /**
     * Required. The node drains: queue the goodbye, then pe_conn_end or pe_conn_close_wait.
     * Called at most once, while OPENING or OPEN.
     */
    void (*on_drain)(pe_conn_t *conn);
    /**
     * The conn became a slow consumer (its queue was dropped): queue a farewell frame and return
     * 1 (the conn ends once it is written, within the close deadline), or return 0 to abort.
     * NULL: abort.
     */
    int (*on_slow)(pe_conn_t *conn);
    /** A write completed (the queue has room again). */
    void (*on_written)(pe_conn_t *conn);
    /** Frees what the transport holds; called once, right before the conn's memory goes. */
    void (*on_dispose)(pe_conn_t *conn);
    /**
     * An identity event, while OPENING or OPEN (see pe_conn_auth_event_t; r is the revocation for
     * PE_CONN_REVOKED, else NULL): every one but
     * EXPIRING ends the conn (PE_END_AUTH is recorded before the call), after the farewell the
     * transport queues. Called from the thread's deadline tick or a revocation, never from a
     * pubsub callback. NULL: the transport carries no identity (its conns are never revoked).
     */
    void (*on_auth)(pe_conn_t *conn, pe_conn_auth_event_t ev, const pe_revocation_t *r);
    /**
     * A revocation removed this channel from the subscription (other channels remain): tell the
     * client. Optional.
     */
    void (*on_channel_revoked)(pe_conn_t *conn, const char *channel, size_t len, const pe_revocation_t *r);
} pe_conn_callbacks_t;

/**
 * The core of a connection, first member of the transport's object. Fields are read-only for
 * transports except where stated.
 */
struct st_pe_conn_t {
    const pe_conn_callbacks_t *cb;
    pe_thread_t *thr;
    pe_conn_state_t state;
    /* Bytes queued and in flight past which it is a slow consumer (the transport sets it; 32 bits
     * keep an idle connection small, and --max-message-size is at most 64 MiB). */
    uint32_t max_queue;
    h2o_socket_t *sock; /* socket mode once handed over (NULL while OPENING); sock->data is the conn */
    h2o_req_t *req;     /* stream mode only: weak, valid until the request's pool is disposed */
    /* The subscription: the transport calls pe_sub_init (sub.cb stays NULL for a conn without
     * one) and adds channels; the core resumes it and disposes of it. */
    pe_sub_t sub;
    /* The output queue: transports add per-connection text with pe_outq_text, then an entry
     * with pe_conn_push. */
    pe_outq_t out;
    uint64_t write_started; /* loop ms when the write in flight started; 0: none in flight */
    /* Who the client is (docs/auth.md): anonymous (all zero) with --auth off or without a token.
     * The transport moves the identity its prologue verified (pe_access_authorize_query) in
     * right after pe_conn_new; the core releases it in its free. */
    pe_identity_t identity;
    /*
     * Per-connection concerns each get their member here, set in pe_conn_new from the request
     * and released in the core's free (per-connection limits and presence will join them).
     * Observability (docs/operations.md "Metrics", "Logs"): when it opened, what it sent, why it
     * ends (pe_conn_set_reason; the first reason set wins, so the peer's answer to our drain
     * close still counts as a drain), and the peer for the close line.
     */
    uint64_t opened_ms; /* loop ms */
    /* Presence and the user registry (edge/core/presence.c): the connection's number on its
     * thread (its id is "<node id>.<thread>.<serial>", pe_conn_client_id), and its listing
     * under its user while it has one (released in the core's free). */
    uint64_t serial;
    pe_ps_member_t *user_reg;
    uint64_t bytes_out; /* bytes written to the client */
    pe_log_peer_t peer;
    uint8_t end_reason;  /* pe_end_reason_t */
    uint8_t _auth_phase; /* what _auth_timer waits for (conn.c) */
    /* private */
    pe_stream_t _stream;        /* in thr->streams from pe_conn_new to the free: drain reaches it */
    h2o_timeout_entry_t _timer; /* the heartbeat, or the close deadline (see the states) */
    h2o_timeout_entry_t _flush; /* zero timeout: the deferred flush */
    pe_deadline_t _auth_timer;  /* the token's notice, then its end; or the auth deadline */
};

/**
 * Allocates a transport object of sz bytes (zeroed; the pe_conn_t first) for req's thread, in
 * OPENING, with cb, the heartbeat running and the conn registered for drain and counted in the
 * connection gauge. The caller then starts it with pe_conn_upgrade or pe_conn_start_stream in
 * the same request handler (every refusal comes before it).
 */
pe_conn_t *pe_conn_new(h2o_req_t *req, size_t sz, const pe_conn_callbacks_t *cb);
/**
 * Socket mode: sends the response head set up in req->res (101, or 200 for SSE) and takes the
 * socket over once written (cb->on_open); req is gone when this returns. HTTP/1 only.
 */
void pe_conn_upgrade(pe_conn_t *conn, h2o_req_t *req);
/** Stream mode: starts the response set up in req->res on h2o's generator; the conn is OPEN. */
void pe_conn_start_stream(pe_conn_t *conn, h2o_req_t *req);

/**
 * Moves *id in as the conn's identity (*id is left anonymous; the previous identity is
 * released) and times its expiry: the notice at pe_token_notice_ms (from now), then the end at
 * exp + --jwt-leeway (cb->on_auth). A token without exp, or an anonymous id, stops the timer.
 * Used at connect, by the WebSocket auth op and by refresh.
 */
void pe_conn_set_identity(pe_conn_t *conn, pe_identity_t *id);
/** The conn must get a token within ms (pe_conn_set_identity), else PE_CONN_AUTH_MISSING. */
void pe_conn_await_auth(pe_conn_t *conn, uint64_t ms);

/** 1 if the conn accepts output (OPENING or OPEN). */
static inline int
pe_conn_is_open(const pe_conn_t *conn)
{
    return conn->state <= PE_CONN_OPEN;
}
/**
 * Appends an entry to the queue: the last text_len bytes given to pe_outq_text(&conn->out, ..),
 * then shared[0..shared_len) of msg (retained; msg may be NULL with shared_len 0). Dropped when
 * the conn no longer accepts output. Schedules a flush; a queue past max_queue makes the conn a
 * slow consumer. Returns PE_SUB_PAUSE when a catch-up should pause (the queue reached
 * cb->low_water, or the conn accepts nothing more), else PE_SUB_CONTINUE.
 */
int pe_conn_push(pe_conn_t *conn, size_t text_len, pe_msg_t *msg, const char *shared, size_t shared_len);
/** Queues per-connection text as one entry (pe_outq_text + pe_conn_push). */
void pe_conn_push_text(pe_conn_t *conn, const void *s, size_t len);
/** OPENING/OPEN -> CLOSE_WAIT: no more output; the close deadline runs. */
void pe_conn_close_wait(pe_conn_t *conn);
/** -> ENDING: what is queued is written, then the conn ends. No-op once ENDING or later. */
void pe_conn_end(pe_conn_t *conn);
/** -> ABORTING: the queue is dropped and the conn ends at the next flush. No-op once ABORTING or ENDED. */
void pe_conn_abort(pe_conn_t *conn);
/**
 * Records why the conn ends (pushedge_disconnects_total{reason}, the close log line) unless a
 * reason was recorded already: the first cause wins. The core records what it sees itself (slow
 * consumer, drain, heartbeat, a failed write, the peer leaving an HTTP/2 stream); a transport
 * records what only it can tell (its peer's EOF or close frame, a protocol error, a bound). A
 * conn freed with no reason recorded counts as error: a way to end that nobody named.
 */
static inline void
pe_conn_set_reason(pe_conn_t *conn, pe_end_reason_t why)
{
    if (conn->end_reason == PE_END_NONE)
        conn->end_reason = (uint8_t)why;
}
/** The slow-consumer policy (see the file comment); why goes to the log. No-op unless OPENING or OPEN. */
void pe_conn_slow(pe_conn_t *conn, const char *why);
/**
 * Writes what is queued, or ends the conn when its state says so. May free the conn: callers
 * must not touch it afterwards. Call only from the transport's own socket callbacks (its read
 * callback), never from a pubsub callback or another core callback.
 */
void pe_conn_flush(pe_conn_t *conn);

/* Longest connection id, NUL included. */
#define PE_CONN_ID_MAX (PE_PS_CLIENT_MAXLEN + 1)
/** Writes the connection's id ("<node id>.<thread>.<serial>", unique across nodes) into buf; returns its length. */
size_t pe_conn_client_id(const pe_conn_t *conn, char buf[PE_CONN_ID_MAX]);
/**
 * Lists the connection under its token's subject in the user registry (GET
 * /api/users/SUB/connections), once it has one; no-op for anonymous connections or when it is
 * listed already. Transports call it when the identity is set (after pe_conn_new, after a
 * WebSocket auth op); the core removes the listing in its free.
 */
void pe_conn_register_user(pe_conn_t *conn);
/** The pe_sub_callbacks_t.who of the core's transports: who the connection is, for presence. */
void pe_conn_who(pe_sub_t *sub, pe_ps_who_t *out);

/* ---- the request prologue of the subscribing transports (WebSocket, SSE, long-poll) ---- */

/** Answers 503 draining with Retry-After if the thread drains: returns 1 if it answered, else 0. */
int pe_conn_refuse_draining(h2o_req_t *req);
/** Answers 503 channel_limit if subscribing to `adding` channels would pass --max-channels: 1 if it answered. */
int pe_conn_refuse_channels_full(h2o_req_t *req, size_t adding);
/* pe_conn_parse_subscription flags */
#define PE_CONN_QUERY_CHANNEL_OPTIONAL 1 /* no channel is fine (a WebSocket subscribes later) */
#define PE_CONN_QUERY_LAST_EVENT_ID 2    /* a Last-Event-ID header overrides since (SSE) */
/**
 * Parses the subscription in the query string into q, with names in arena (query length + 1
 * bytes), then the Last-Event-ID header if asked. Returns 0, or answers 400 and returns -1.
 */
int pe_conn_parse_subscription(h2o_req_t *req, unsigned flags, pe_sub_query_t *q, char *arena);
/**
 * Adds each channel of q to sub from q's cursor. added (may be NULL) is called for each channel
 * pubsub accepted, with ctx. Never calls back into the transport otherwise.
 */
void pe_conn_subscribe(pe_sub_t *sub, const pe_sub_query_t *q, void (*added)(void *ctx, const char *channel, size_t len),
                       void *ctx);

#endif

/*
 * poll.c: GET /poll, HTTP long-polling (docs/protocol.md "Long-polling"), for networks whose
 * proxies buffer or cut streaming responses.
 *
 * A poll is a short-lived subscriber. It subscribes to its channels from the cursor (catch-up
 * first, through the same pubsub path as the streaming transports), and answers:
 *   - at once, with a bounded batch, when catch-up found messages or gaps (catch-up pauses when
 *     the batch is full; the returned cursor continues from the last message included);
 *   - otherwise as soon as a live message arrives (after the current loop iteration, so a burst
 *     goes out in one answer);
 *   - otherwise after --poll-timeout with an empty list.
 * The answer lists its gaps before its messages, so a gap that comes after messages of its
 * channel ends the batch before it (on_gap): the next poll, from the cursor, is told it.
 * The cursor it returns is built from the subscriber's positions, which pubsub advances only
 * for messages this poll actually took, so nothing published later can be missed. There is no
 * session on the server: any node sharing the engine can answer the next poll.
 *
 * The answer is a single JSON body with Content-Length (HTTP/1.0 proxies need no chunking),
 * built by edge/wire: its envelopes are the messages' shared envelope bytes, written by
 * reference. The request prologue (draining, the subscription query, the channel limit) and the
 * subscription are the connection core's (edge/core/conn.h), as for SSE and WebSocket; the rest
 * of the core (a socket's output queue, heartbeat, slow-consumer policy) does not apply to a
 * request answered once.
 *
 * Tokens (docs/auth.md "Expiry"): a poll remembers its token's subject and expiry, not the
 * token. An answer given once the token is within its notice margin carries "expiring": T. A
 * poll held when the notice time comes is answered then (with what it has, and "expiring"), so
 * the client refreshes before its next poll; a poll that starts within the margin is held as
 * usual, but at exp + --jwt-leeway it is answered 401 token_expired (its cursor is unchanged: the
 * client resumes from it with a new token). A revocation naming its subject answers it 403
 * revoked. Both are answered from a zero timeout like every other answer.
 *
 * Lifetime: the poll object lives in req->pool, its only owner; the pool's dispose hook frees
 * everything. Nothing calls h2o from inside a pubsub callback.
 *
 * Departed clients. h2o 2.2 stops reading an HTTP/1 connection while its request is handled and
 * notices a vanished client only when it writes, so a fire-and-forget poll would hold its
 * descriptor for the whole hold time (20,000 of them exhausted the node's descriptors). Each loop
 * therefore sweeps its held HTTP/1 polls every PE_POLL_SWEEP_MS with a non-blocking
 * recv(MSG_PEEK) on the socket: end of stream or an error means the client is gone (or has
 * half-closed, which a long-polling client does not do), and the poll is answered at once with
 * what it has, which makes h2o write, notice the closed peer and free the connection. HTTP/2
 * connections are read all the time, so h2o notices a reset stream or a closed connection by
 * itself. The number of held polls per node is bounded (--max-held-polls; pe_limits_hold_poll).
 */
#include <errno.h>
#include <sys/socket.h>
#include "edge/core/access.h"
#include "edge/core/conn.h"
#include "edge/core/deadline.h"
#include <stdio.h>
#include "edge/util/query.h"
#include "edge/wire/wire.h"
#include "fallback/poll.h"
#include "edge/core/conn_limit.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include "pubsub/alloc.h"

const unsigned pe_poll_short_seconds[PE_POLL_SHORT_STEPS] = {1, 2, 3, 5, 10, 15};

/*
 * The hold list for `?timeout=SECONDS`: the longest step not above it, or --poll-timeout when
 * that is shorter or nothing was asked. A client behind a proxy that cuts requests idle for a
 * few seconds asks for less than the cut. Returns NULL if the value is malformed.
 */
static h2o_timeout_t *
hold_timeout(h2o_req_t *req, pe_thread_t *thr, h2o_iovec_t qs)
{
    char *buf = h2o_mem_alloc_pool(&req->pool, qs.len + 1); /* a decoded value never outgrows the query */
    long len = pe_query_get(qs.base, qs.len, "timeout", buf);
    if (len == -1)
        return &thr->poll_timeout;
    if (len < 1 || len > 6)
        return NULL;
    unsigned long want = 0;
    for (long i = 0; i != len; ++i) {
        if (buf[i] < '0' || buf[i] > '9')
            return NULL;
        want = want * 10 + (unsigned long)(buf[i] - '0');
    }
    if (want == 0)
        return NULL;
    if (want >= thr->server->cfg->poll_timeout)
        return &thr->poll_timeout;
    h2o_timeout_t *best = &thr->poll_short[0];
    for (size_t i = 0; i != PE_POLL_SHORT_STEPS; ++i)
        if (pe_poll_short_seconds[i] <= want)
            best = &thr->poll_short[i];
    return best;
}

typedef struct st_pe_poll_t {
    pe_sub_t sub;
    pe_stream_t stream;
    h2o_req_t *req;
    pe_thread_t *thr;
    pe_msg_t **msgs;    /* owned references, in the order received */
    uint64_t *accepted; /* per message: its acceptance if it came live (delivery latency), else 0 */
    size_t num_msgs, cap_msgs;
    uint64_t opened_ms;     /* loop ms: the hold time goes to the connection-duration histogram */
    pe_end_reason_t reason; /* PE_END_NONE for a poll answered as usual (not a disconnect) */
    size_t bytes;
    char **gaps; /* channel names (pool strings) */
    size_t num_gaps;
    size_t max_gaps;
    h2o_timeout_entry_t hold_entry;
    h2o_timeout_entry_t answer_entry;
    h2o_linklist_t held_link; /* in thr->held_polls while an HTTP/1 poll waits */
    /* The token: its subject (pool string, NULL: anonymous) and expiry (0: none). */
    const char *user;
    size_t user_len;
    int64_t exp;
    pe_deadline_t token_deadline; /* the notice time, then exp + leeway (see the file comment) */
    const char *revoked;          /* the revocation's reason (pool string): answer 403 revoked */
    unsigned answered : 1;
    unsigned full : 1;
    unsigned expiring : 1; /* the answer carries "expiring" */
    unsigned expired : 1;  /* answer 401 token_expired */
    unsigned presence : 1; /* ?presence=1: the answer carries "presence" (the join/leave events among msgs) */
} pe_poll_t;

static void
schedule_answer(pe_poll_t *poll)
{
    if (!poll->answered && !h2o_timeout_is_linked(&poll->answer_entry))
        h2o_timeout_link(poll->thr->loop, &poll->thr->ctx.zero_timeout, &poll->answer_entry);
}

/* ---- pubsub callbacks (never call h2o from here) --------------------------------------------- */

static int
on_message(pe_sub_t *sub, pe_msg_t *msg)
{
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, sub, sub);
    /* Once answered the subscriber is about to go; its positions no longer matter. */
    if (poll->answered)
        return PE_SUB_PAUSE;
    if (poll->num_msgs == poll->cap_msgs) {
        poll->cap_msgs = poll->cap_msgs == 0 ? 16 : poll->cap_msgs * 2;
        poll->msgs = pe_realloc(poll->msgs, poll->cap_msgs * sizeof(*poll->msgs));
        poll->accepted = pe_realloc(poll->accepted, poll->cap_msgs * sizeof(*poll->accepted));
    }
    pe_msg_retain(msg);
    poll->accepted[poll->num_msgs] = pe_sub_delivering_live(sub) ? msg->accepted_us : 0;
    poll->msgs[poll->num_msgs++] = msg;
    poll->bytes += msg->envelope_len + 1;
    schedule_answer(poll);
    if (poll->num_msgs >= PE_POLL_MAX_MESSAGES || poll->bytes >= PE_POLL_MAX_BYTES) {
        poll->full = 1;
        return PE_SUB_PAUSE;
    }
    return PE_SUB_CONTINUE;
}

/* 1 if the batch holds a message of the channel, else 0 (at most PE_POLL_MAX_MESSAGES to look at). */
static int
holds_channel(const pe_poll_t *poll, const char *channel, size_t len)
{
    for (size_t i = 0; i != poll->num_msgs; ++i)
        if (poll->msgs[i]->channel_len == len && memcmp(poll->msgs[i]->channel, channel, len) == 0)
            return 1;
    return 0;
}

static int
on_gap(pe_sub_t *sub, const char *channel, size_t len)
{
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, sub, sub);
    if (poll->answered)
        return PE_SUB_PAUSE;
    /* The answer lists its gaps before its messages (docs/protocol.md "Long-polling"), so a gap
     * that comes after messages of the channel cannot go into this batch: the client would read
     * it as coming first, and the messages after it, whose IDs can be lower than those before
     * it (a failover lost what the client got), as delivered out of order. The batch ends
     * before the gap: the cursor stays at the last message taken, and the poll after it is
     * told the gap by the engine. */
    if (holds_channel(poll, channel, len)) {
        poll->full = 1;
        schedule_answer(poll);
        return PE_SUB_PAUSE;
    }
    /* A second gap of the channel with no message between: the first one listed says it. */
    for (size_t i = 0; i != poll->num_gaps; ++i)
        if (strlen(poll->gaps[i]) == len && memcmp(poll->gaps[i], channel, len) == 0)
            return PE_SUB_CONTINUE;
    if (poll->num_gaps != poll->max_gaps)
        poll->gaps[poll->num_gaps++] = h2o_strdup(&poll->req->pool, channel, len).base;
    schedule_answer(poll);
    return PE_SUB_CONTINUE;
}

static void
on_live(pe_sub_t *sub)
{
    /* Catch-up is over: what it found is answered now (answer() waited for this); with nothing
     * found the poll holds for a live message or the timeout. */
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, sub, sub);
    if (poll->num_msgs != 0 || poll->num_gaps != 0)
        schedule_answer(poll);
}

static const pe_sub_callbacks_t poll_callbacks = {on_message, on_gap, on_live, NULL, NULL};

/* ---- the answer ------------------------------------------------------------------------------ */

static void
answer(pe_poll_t *poll)
{
    if (poll->answered)
        return;
    /* A batch in the middle of catch-up is complete only once catch-up paused (full) or
     * finished (live): otherwise more retained messages, or the ones after a gap, are on their
     * way. on_message and on_live schedule the answer again. */
    if (!poll->full && !pe_sub_is_live(&poll->sub))
        return;
    poll->answered = 1;
    if (h2o_timeout_is_linked(&poll->hold_entry))
        h2o_timeout_unlink(&poll->hold_entry);
    if (h2o_linklist_is_linked(&poll->held_link))
        h2o_linklist_unlink(&poll->held_link);
    pe_deadline_cancel(poll->thr, &poll->token_deadline);
    h2o_req_t *req = poll->req;
    if (poll->revoked != NULL) {
        pe_http_error(req, 403, "Forbidden", "revoked", poll->revoked);
        return;
    }
    /* Messages that came before the end are answered (with "expiring"); only an empty poll ends
     * with the 401, so nothing taken from the engine is dropped. */
    if (poll->expired && poll->num_msgs == 0 && poll->num_gaps == 0) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer error=\"invalid_token\""));
        pe_http_error(req, 401, "Unauthorized", "token_expired",
                      "the token has expired; get a new one and poll again from the cursor");
        return;
    }

    char cursor[PE_CURSOR_MAXLEN + 1];
    size_t cursor_len = pe_sub_cursor(&poll->sub, cursor, sizeof(cursor));

    /* Join and leave events go to "presence" (in order, each with its id), messages to
     * "messages": the cursor covers both. */
    pe_msg_t **msgs = poll->msgs;
    size_t num_msgs = poll->num_msgs, num_events = 0, events_len = 0;
    for (size_t i = 0; i != poll->num_msgs; ++i) {
        if (poll->msgs[i]->kind != PE_MSG_DATA) {
            ++num_events;
            events_len += pe_wire_ws_text_len(poll->msgs[i]) + 1;
        }
    }
    if (num_events != 0) {
        msgs = h2o_mem_alloc_pool(&req->pool, sizeof(*msgs) * poll->num_msgs);
        num_msgs = 0;
        for (size_t i = 0; i != poll->num_msgs; ++i)
            if (poll->msgs[i]->kind == PE_MSG_DATA)
                msgs[num_msgs++] = poll->msgs[i];
    }
    h2o_iovec_t *bufs = h2o_mem_alloc_pool(&req->pool, sizeof(*bufs) * (2 * num_msgs + 5));
    size_t total, n = pe_wire_poll_body(&req->pool, cursor, cursor_len, msgs, num_msgs, poll->gaps, poll->num_gaps, bufs, &total);
    if (poll->presence) {
        /* The body ends with '}': the field goes before it. */
        static const char head[] = ",\"presence\":[";
        char *ev = h2o_mem_alloc_pool(&req->pool, sizeof(head) + events_len + 2), *p = ev;
        memcpy(p, head, sizeof(head) - 1);
        p += sizeof(head) - 1;
        for (size_t i = 0, k = 0; i != poll->num_msgs; ++i) {
            if (poll->msgs[i]->kind == PE_MSG_DATA)
                continue;
            if (k++ != 0)
                *p++ = ',';
            p += pe_wire_presence_text(poll->msgs[i], p);
        }
        memcpy(p, "]}", 2);
        p += 2;
        --bufs[n - 1].len;
        bufs[n++] = h2o_iovec_init(ev, (size_t)(p - ev));
        total += (size_t)(p - ev) - 1;
    }
    if (poll->exp != 0 && (poll->expiring || poll->expired)) {
        /* The body ends with '}': the field goes before it. */
        char *field = h2o_mem_alloc_pool(&req->pool, 40);
        int flen = snprintf(field, 40, ",\"expiring\":%lld}", (long long)poll->exp);
        --bufs[n - 1].len;
        bufs[n++] = h2o_iovec_init(field, (size_t)flen);
        total += (size_t)flen - 1;
    }

    if (poll->thr->draining) {
        /* Any answer of a draining node tells the client when to come back (to another node,
         * this one no longer accepts): the hint the drain walk chose for this poll, or a fresh
         * one for a poll answered early (a message came before its batch). Retry-After has
         * whole seconds only (rounded up); "reconnect_ms" is exact. */
        unsigned hint = poll->reason == PE_END_DRAIN ? poll->stream.drain_hint_ms
                                                     : pe_stream_drain_hint(poll->thr->server->cfg->drain_spread != 0);
        char *field = h2o_mem_alloc_pool(&req->pool, 32), *secs = h2o_mem_alloc_pool(&req->pool, 16);
        int flen = snprintf(field, 32, ",\"reconnect_ms\":%u}", hint);
        int slen = snprintf(secs, 16, "%u", (hint + 999) / 1000);
        --bufs[n - 1].len;
        bufs[n++] = h2o_iovec_init(field, (size_t)flen);
        total += (size_t)flen - 1;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, secs, (size_t)slen);
        /* h2o 2.2 keeps an HTTP/1 connection alive through a shutdown: the client's next poll
         * would come back here on it (503 draining, again and again until the process ends)
         * instead of going to another node after the hint. */
        req->http1_is_persistent = 0;
    }

    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = total;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    static h2o_generator_t generator = {NULL, NULL};
    h2o_start_response(req, &generator);
    /* The message references stay held by the poll (freed with the pool) until h2o is done. */
    h2o_send(req, bufs, n, H2O_SEND_STATE_FINAL);
    /* h2o wrote the answer or queued it behind nothing: "written" for the latency histogram. */
    uint64_t now_us = 0;
    for (size_t i = 0; i != poll->num_msgs; ++i) {
        if (poll->accepted[i] == 0)
            continue;
        if (now_us == 0)
            now_us = pe_msg_clock_us();
        pe_stats_delivered(&poll->thr->stats, PE_TRANSPORT_POLL, poll->accepted[i], now_us);
    }
}

static void
on_answer_timeout(h2o_timeout_entry_t *entry)
{
    answer(H2O_STRUCT_FROM_MEMBER(pe_poll_t, answer_entry, entry));
}

static void
on_hold_timeout(h2o_timeout_entry_t *entry)
{
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, hold_entry, entry);
    poll->full = 1; /* answer with whatever there is, even mid catch-up */
    answer(poll);
}

static void
on_drain(pe_stream_t *stream)
{
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, stream, stream);
    if (!poll->answered && poll->reason == PE_END_NONE)
        poll->reason = PE_END_DRAIN;
    poll->full = 1;
    schedule_answer(poll);
}

/* 1 if the HTTP/1 client behind req has closed its side or the connection failed. */
static int
client_is_gone(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL)
        return 0;
    char c;
    ssize_t r = recv(h2o_socket_get_fd(sock), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void
on_sweep(h2o_timeout_entry_t *entry)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, poll_sweep_entry, entry);
    /* answer() unlinks the poll it answers; nothing else changes the list meanwhile. */
    h2o_linklist_t *node = thr->held_polls.next;
    while (node != &thr->held_polls) {
        h2o_linklist_t *next = node->next;
        pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, held_link, node);
        if (client_is_gone(poll->req)) {
            if (poll->reason == PE_END_NONE)
                poll->reason = PE_END_CLIENT_LEFT;
            poll->full = 1;
            answer(poll);
        }
        node = next;
    }
    if (!h2o_linklist_is_empty(&thr->held_polls))
        h2o_timeout_link(thr->loop, &thr->poll_sweep_timeout, &thr->poll_sweep_entry);
}

static void
on_dispose(void *p)
{
    pe_poll_t *poll = p;
    if (h2o_linklist_is_linked(&poll->held_link))
        h2o_linklist_unlink(&poll->held_link);
    pe_limits_release_poll(&poll->thr->server->limits);
    pe_deadline_cancel(poll->thr, &poll->token_deadline);
    pe_sub_dispose(&poll->sub);
    if (h2o_timeout_is_linked(&poll->hold_entry))
        h2o_timeout_unlink(&poll->hold_entry);
    if (h2o_timeout_is_linked(&poll->answer_entry))
        h2o_timeout_unlink(&poll->answer_entry);
    pe_stream_unregister(&poll->stream);
    for (size_t i = 0; i != poll->num_msgs; ++i)
        pe_msg_release(poll->msgs[i]);
    pe_free(poll->msgs);
    pe_free(poll->accepted);
    PE_STAT_ADD(poll->thr->stats.connections[PE_TRANSPORT_POLL], (uint64_t)-1);
    /* A poll's "connection" is its held request: its hold time is its lifetime; only the ends
     * that are not an answer (the client left, the node drained) count as disconnects. */
    uint64_t now = h2o_now(poll->thr->loop), ms = now > poll->opened_ms ? now - poll->opened_ms : 0;
    pe_thread_stats_t *st = &poll->thr->stats;
    if (poll->reason != PE_END_NONE)
        PE_STAT_ADD(st->disconnects[PE_TRANSPORT_POLL][poll->reason], 1);
    PE_STAT_ADD(st->duration[PE_TRANSPORT_POLL][pe_hist_bucket(pe_duration_bounds_ms, PE_DURATION_BUCKETS, ms)], 1);
    PE_STAT_ADD(st->duration_sum_ms[PE_TRANSPORT_POLL], ms);
}

/* The token's notice time (a poll held since before it), then its end. */
static void
on_token_deadline(pe_deadline_t *d)
{
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, token_deadline, d);
    if (poll->answered)
        return;
    if (!poll->expiring) {
        poll->expiring = 1;
    } else {
        poll->expired = 1;
        if (poll->reason == PE_END_NONE)
            poll->reason = PE_END_AUTH;
    }
    poll->full = 1;
    schedule_answer(poll);
}

static int
on_revoke(pe_stream_t *stream, const pe_revocation_t *r)
{
    pe_poll_t *poll = H2O_STRUCT_FROM_MEMBER(pe_poll_t, stream, stream);
    if (poll->answered || poll->revoked != NULL || poll->user == NULL || poll->user_len != r->user_len ||
        memcmp(poll->user, r->user, r->user_len) != 0)
        return 0;
    if (r->pattern != NULL) {
        int any = 0;
        for (size_t i = 0; i != pe_sub_num_channels(&poll->sub) && !any; ++i) {
            size_t len;
            const char *name = pe_sub_channel(&poll->sub, i, &len);
            any = pe_pattern_match(r->pattern, r->pattern_len, NULL, 0, name, len);
        }
        if (!any)
            return 0;
    }
    poll->revoked = h2o_strdup(&poll->req->pool, r->reason, r->reason_len).base;
    if (poll->reason == PE_END_NONE)
        poll->reason = PE_END_AUTH;
    poll->full = 1;
    schedule_answer(poll);
    return 1;
}

/* ---- the handler ----------------------------------------------------------------------------- */

int
pe_poll_on_req(h2o_req_t *req)
{
    pe_thread_t *thr = pe_thread_of(req);

    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        pe_http_method_not_allowed(req, "GET, OPTIONS");
        return 0;
    }
    h2o_iovec_t qs = pe_http_query(req);
    pe_sub_query_t *q = h2o_mem_alloc_pool(&req->pool, sizeof(*q));
    char *arena = h2o_mem_alloc_pool(&req->pool, qs.len + 1);
    if (pe_conn_parse_subscription(req, 0, q, arena) != 0)
        return 0;
    /* The identity is checked here; the poll keeps only its subject (revocation) and expiry. */
    pe_identity_t id;
    if (pe_access_authorize_query(req, q, &id) != 0)
        return 0;
    h2o_iovec_t user = id.authenticated && id.sub != NULL ? h2o_strdup(&req->pool, id.sub, id.sub_len) : h2o_iovec_init(NULL, 0);
    int64_t exp = id.authenticated ? id.exp : 0, iat = id.iat;
    pe_identity_dispose(&id);
    h2o_timeout_t *hold = hold_timeout(req, thr, qs);
    if (hold == NULL) {
        pe_http_error(req, 400, "Bad Request", "bad_timeout", "timeout must be a whole number of seconds from 1");
        return 0;
    }

    if (pe_conn_refuse_draining(req))
        return 0;
    if (!pe_ps_engine_is_ready(pe_ps_node_engine(thr->node))) {
        /* Nothing could be read or awaited: tell the client when to come back. */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("2"));
        pe_http_error(req, 503, "Service Unavailable", "engine_unavailable", pe_ps_err_unavailable);
        return 0;
    }
    if (pe_conn_refuse_channels_full(req, q->num_channels))
        return 0;
    if (pe_limits_hold_poll(&thr->server->limits) != 0) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT(H2O_TO_STR(PE_RETRY_AFTER_FULL)));
        pe_http_error(req, 503, "Service Unavailable", "too_many_polls",
                      "this node holds as many long-polls as it may; retry later");
        return 0;
    }
    pe_poll_t *poll = h2o_mem_alloc_shared(&req->pool, sizeof(*poll), on_dispose);
    *poll = (pe_poll_t){.req = req, .thr = thr, .opened_ms = h2o_now(thr->loop)};
    poll->stream.drain = on_drain;
    poll->stream.revoke = on_revoke;
    poll->user = user.base;
    poll->user_len = user.len;
    poll->exp = exp;
    if (exp != 0) {
        /* Within the margin already: the answer says so, and the hold ends at the token's end. */
        uint64_t now = h2o_now(thr->loop), notice = pe_token_notice_ms(exp, iat, now);
        poll->token_deadline.cb = on_token_deadline;
        if (notice <= now) {
            poll->expiring = 1;
            pe_deadline_set(thr, &poll->token_deadline, ((uint64_t)exp + thr->server->cfg->jwt_leeway) * 1000);
        } else {
            pe_deadline_set(thr, &poll->token_deadline, notice);
        }
    }
    poll->hold_entry.cb = on_hold_timeout;
    poll->answer_entry.cb = on_answer_timeout;
    poll->max_gaps = q->num_channels;
    poll->gaps = h2o_mem_alloc_pool(&req->pool, sizeof(*poll->gaps) * q->num_channels);
    poll->presence = q->presence;
    PE_STAT_ADD(thr->stats.connections[PE_TRANSPORT_POLL], 1);
    pe_stream_register(thr, &poll->stream);

    pe_sub_init(&poll->sub, thr->node, &poll_callbacks);
    pe_conn_subscribe(&poll->sub, q, NULL, NULL);
    h2o_timeout_link(thr->loop, hold, &poll->hold_entry);
    if (req->version < 0x200 && !poll->answered) {
        h2o_linklist_insert(&thr->held_polls, &poll->held_link);
        thr->poll_sweep_entry.cb = on_sweep;
        if (!h2o_timeout_is_linked(&thr->poll_sweep_entry))
            h2o_timeout_link(thr->loop, &thr->poll_sweep_timeout, &thr->poll_sweep_entry);
    }
    return 0;
}

/*
 * Unit tests for edge/core/conn.c, the connection core, in socket mode on a real h2o evloop with
 * a socketpair standing in for the client: the state machine's transitions and what the peer
 * sees for each (bytes, EOF), counted callbacks (exactly one on_dispose, after the last write),
 * and no leftovers (the connection gauge back to 0, LeakSanitizer in the test build).
 *
 * Covered: queued output coalescing into one write; pe_conn_end (everything written, then the
 * close); lingering (our side shut, freed on the peer's EOF); the slow-consumer policy with and
 * without a farewell frame (counted, queue dropped, farewell then close); drain (on_drain once);
 * CLOSE_WAIT (no more output, the close deadline aborts); an abort under a write stuck on a peer
 * that reads nothing (the socket is shut, the write fails, the conn is freed); a heartbeat that
 * declares the peer gone; output refused once the conn no longer accepts it; the request
 * prologue's subscribe helper is covered by the e2e suites; the observability counters (bytes
 * written, delivery latency of live messages only, the first end reason, the lifetime).
 *
 * Also: the thread's deadline wheel (edge/core/deadline.c: due entries fire once, within a tick
 * after their time; cancelled ones never; a callback may re-arm itself and cancel others) and
 * the token timer on a conn (the notice, then the end with PE_END_AUTH; a new identity re-arms
 * it; revocation by user and by channel pattern is in the e2e suites).
 *
 * Not covered here: stream mode (HTTP/2: tests/e2e/h2.test.mjs and sse.test.mjs over HTTP/2),
 * the HTTP/1 upgrade itself (the test hands the socket over as h2o's upgrade callback would), and
 * the transports' own rules (tests/e2e/ws*.test.mjs, sse.test.mjs).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include "tap.h"
#include "edge/core/conn.c"

static h2o_globalconf_t globalconf;
static pe_config_t cfg;
static pe_server_t server;
static pe_thread_t thr;

/* What the test transport saw. */
static struct {
    int opened, written, drained, slow, disposed, heartbeats;
    int slow_farewell;  /* on_slow queues "bye" and returns 1 */
    int heartbeat_gone; /* on_heartbeat returns -1 */
    int auth[4];        /* on_auth calls per pe_conn_auth_event_t */
    uint64_t auth_at[4];
    int end_reason; /* the conn's at on_dispose */
} seen;

static void
t_open(pe_conn_t *conn)
{
    ++seen.opened;
}
static int
t_heartbeat(pe_conn_t *conn, uint64_t now, uint64_t interval)
{
    ++seen.heartbeats;
    return seen.heartbeat_gone ? -1 : 0;
}
static void
t_drain(pe_conn_t *conn)
{
    ++seen.drained;
    pe_conn_push_text(conn, H2O_STRLIT("goodbye"));
    pe_conn_end(conn);
}
static int
t_slow(pe_conn_t *conn)
{
    ++seen.slow;
    if (!seen.slow_farewell)
        return 0;
    pe_conn_push_text(conn, H2O_STRLIT("bye"));
    return 1;
}
static void
t_written(pe_conn_t *conn)
{
    ++seen.written;
}
static void
t_dispose(pe_conn_t *conn)
{
    ++seen.disposed;
    seen.end_reason = conn->end_reason;
}

static void
t_auth(pe_conn_t *conn, pe_conn_auth_event_t ev, const pe_revocation_t *r)
{
    ++seen.auth[ev];
    seen.auth_at[ev] = h2o_now(conn->thr->loop);
    if (ev != PE_CONN_TOKEN_EXPIRING)
        pe_conn_end(conn);
}

static pe_conn_callbacks_t callbacks = {
    .transport = PE_TRANSPORT_WS,
    .tag = "test",
    .low_water = 1024,
    .max_batch = 16,
    .on_open = t_open,
    .on_heartbeat = t_heartbeat,
    .on_drain = t_drain,
    .on_slow = t_slow,
    .on_written = t_written,
    .on_dispose = t_dispose,
    .on_auth = t_auth,
};

static int peer = -1;

/* A conn in OPEN on one end of a fresh socketpair; the other end is `peer` (non-blocking). */
static pe_conn_t *
open_conn(uint32_t max_queue)
{
    memset(&seen, 0, sizeof(seen));
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        abort();
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    peer = fds[1];
    h2o_conn_t hconn = {.ctx = &thr.ctx};
    h2o_req_t req = {.conn = &hconn};
    pe_conn_t *conn = pe_conn_new(&req, sizeof(pe_conn_t), &callbacks);
    conn->max_queue = max_queue;
    TAP_EQ_INT(conn->state, PE_CONN_OPENING, "a new conn is OPENING");
    /* What h2o_http1_upgrade's completion does. */
    on_upgraded(conn, h2o_evloop_socket_create(thr.loop, fds[0], 0), 0);
    TAP_EQ_INT(conn->state, PE_CONN_OPEN, "handed the socket: OPEN");
    TAP_EQ_INT(seen.opened, 1, "on_open once");
    return conn;
}

static void
run_loop(int ms)
{
    uint64_t until = h2o_now(thr.loop) + ms;
    do {
        h2o_evloop_run(thr.loop, 10);
    } while (h2o_now(thr.loop) < until);
}

/* Reads what the peer has; returns its length, -1 on EOF with nothing read. */
static ssize_t
peer_read(char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t r = read(peer, buf + len, cap - len);
        if (r > 0) {
            len += (size_t)r;
            continue;
        }
        if (r == 0 && len == 0)
            return -1;
        return (ssize_t)len;
    }
}

static int
peer_at_eof(void)
{
    char c;
    return read(peer, &c, 1) == 0;
}

static void
close_peer(void)
{
    close(peer);
    peer = -1;
}

static void
test_write_and_end(void)
{
    pe_conn_t *conn = open_conn(1 << 20);
    TAP_EQ_UINT(PE_STAT_GET(thr.stats.connections[PE_TRANSPORT_WS]), 1, "counted in the gauge");
    pe_conn_push_text(conn, H2O_STRLIT("one,"));
    pe_conn_push_text(conn, H2O_STRLIT("two,"));
    pe_conn_push_text(conn, H2O_STRLIT("three"));
    run_loop(50);
    char buf[256];
    ssize_t n = peer_read(buf, sizeof(buf));
    TAP_EQ_MEM(buf, n < 0 ? 0 : (size_t)n, "one,two,three", 13, "the peer reads the queue in order");
    TAP_EQ_INT(seen.written, 1, "three entries, one write");
    TAP_OK(pe_outq_is_empty(&conn->out), "nothing left queued");

    pe_conn_push_text(conn, H2O_STRLIT("last"));
    pe_conn_end(conn);
    TAP_EQ_INT(conn->state, PE_CONN_ENDING, "pe_conn_end: ENDING");
    TAP_EQ_INT(pe_conn_push(conn, 0, NULL, NULL, 0), PE_SUB_PAUSE, "ENDING accepts no output");
    run_loop(50);
    n = peer_read(buf, sizeof(buf));
    TAP_EQ_MEM(buf, n < 0 ? 0 : (size_t)n, "last", 4, "what was queued before the end is written");
    TAP_OK(peer_at_eof(), "then the socket is closed");
    TAP_EQ_INT(seen.disposed, 1, "on_dispose once");
    TAP_EQ_UINT(PE_STAT_GET(thr.stats.connections[PE_TRANSPORT_WS]), 0, "the gauge is back to 0");
    close_peer();
}

static void
test_linger(void)
{
    callbacks.linger = 1;
    pe_conn_t *conn = open_conn(1 << 20);
    pe_conn_push_text(conn, H2O_STRLIT("close frame"));
    pe_conn_end(conn);
    run_loop(50);
    char buf[64];
    ssize_t n = peer_read(buf, sizeof(buf));
    TAP_EQ_MEM(buf, n < 0 ? 0 : (size_t)n, "close frame", 11, "the last frame is written");
    TAP_EQ_INT(conn->state, PE_CONN_LINGERING, "then LINGERING");
    TAP_OK(peer_at_eof(), "our side is shut");
    TAP_EQ_INT(seen.disposed, 0, "not freed while the peer may still send");
    TAP_OK(write(peer, "late", 4) == 4, "the peer still sends");
    run_loop(20);
    TAP_EQ_INT(seen.disposed, 0, "its input is discarded");
    close_peer();
    run_loop(50);
    TAP_EQ_INT(seen.disposed, 1, "freed on the peer's EOF");
    callbacks.linger = 0;
}

static void
test_slow(void)
{
    uint64_t slow0 = PE_STAT_GET(thr.stats.slow_consumers[PE_TRANSPORT_WS]);
    pe_conn_t *conn = open_conn(100);
    char big[150];
    memset(big, 'x', sizeof(big));
    pe_outq_text(&conn->out, big, sizeof(big));
    TAP_EQ_INT(pe_conn_push(conn, sizeof(big), NULL, NULL, 0), PE_SUB_PAUSE, "past max_queue: pause");
    TAP_EQ_INT(seen.slow, 1, "on_slow once");
    TAP_EQ_INT(conn->state, PE_CONN_ABORTING, "no farewell: ABORTING");
    TAP_EQ_UINT(PE_STAT_GET(thr.stats.slow_consumers[PE_TRANSPORT_WS]) - slow0, 1, "counted");
    pe_conn_slow(conn, "again");
    TAP_EQ_INT(seen.slow, 1, "a second slow verdict is a no-op");
    run_loop(50);
    TAP_OK(peer_at_eof(), "closed without the queue");
    TAP_EQ_INT(seen.disposed, 1, "freed once");
    close_peer();

    seen.slow_farewell = 1;
    conn = open_conn(100);
    seen.slow_farewell = 1;
    pe_outq_text(&conn->out, big, sizeof(big));
    pe_conn_push(conn, sizeof(big), NULL, NULL, 0);
    TAP_EQ_INT(conn->state, PE_CONN_ENDING, "with a farewell: ENDING");
    TAP_OK(conn->_timer.cb == on_close_deadline && h2o_timeout_is_linked(&conn->_timer), "the close deadline runs");
    run_loop(50);
    char buf[256];
    ssize_t n = peer_read(buf, sizeof(buf));
    TAP_EQ_MEM(buf, n < 0 ? 0 : (size_t)n, "bye", 3, "only the farewell is written");
    TAP_OK(peer_at_eof(), "then the close");
    TAP_EQ_INT(seen.disposed, 1, "freed once");
    close_peer();
    seen.slow_farewell = 0;
}

static void
test_drain_and_close_wait(void)
{
    pe_conn_t *conn = open_conn(1 << 20);
    pe_stream_drain_all(&thr);
    TAP_EQ_INT(seen.drained, 1, "drain reaches the conn once");
    pe_stream_drain_all(&thr);
    TAP_EQ_INT(seen.drained, 1, "not twice (it no longer accepts output)");
    run_loop(50);
    char buf[64];
    ssize_t n = peer_read(buf, sizeof(buf));
    TAP_EQ_MEM(buf, n < 0 ? 0 : (size_t)n, "goodbye", 7, "the goodbye is written");
    TAP_OK(peer_at_eof(), "then the close");
    TAP_EQ_INT(seen.disposed, 1, "freed");
    close_peer();

    conn = open_conn(1 << 20);
    pe_conn_push_text(conn, H2O_STRLIT("close"));
    pe_conn_close_wait(conn);
    TAP_EQ_INT(conn->state, PE_CONN_CLOSE_WAIT, "CLOSE_WAIT");
    pe_conn_push_text(conn, H2O_STRLIT("dropped"));
    run_loop(50);
    n = peer_read(buf, sizeof(buf));
    TAP_EQ_MEM(buf, n < 0 ? 0 : (size_t)n, "close", 5, "nothing after the last frame");
    TAP_EQ_INT(seen.disposed, 0, "waiting for the peer");
    run_loop(PE_WS_CLOSE_WAIT_MS + 200);
    TAP_EQ_INT(seen.disposed, 1, "the close deadline ends it");
    close_peer();
}

static void
test_abort_under_write(void)
{
    pe_conn_t *conn = open_conn(64 << 20);
    /* More than the socket buffers hold: the write stays in flight while the peer reads nothing. */
    size_t len = 16 << 20;
    char *big = malloc(len);
    memset(big, 'y', len);
    pe_conn_push_text(conn, big, len);
    free(big);
    run_loop(50);
    TAP_OK(conn->write_started != 0, "a write is in flight");
    pe_conn_abort(conn);
    TAP_EQ_INT(conn->state, PE_CONN_ABORTING, "ABORTING");
    run_loop(50);
    TAP_EQ_INT(seen.disposed, 1, "the stuck write failed and the conn was freed");
    close_peer();
}

static void
test_heartbeat(void)
{
    pe_conn_t *conn = open_conn(1 << 20);
    run_loop(1100);
    TAP_OK(seen.heartbeats >= 1, "the heartbeat runs every --ping-interval");
    TAP_EQ_INT(conn->state, PE_CONN_OPEN, "still OPEN");
    seen.heartbeat_gone = 1;
    run_loop(1100);
    TAP_EQ_INT(seen.disposed, 1, "a heartbeat that declares the peer gone aborts");
    TAP_OK(peer_at_eof(), "closed");
    close_peer();
}

/* The core's observability: bytes written, the latency of live messages only, and the first
 * end reason recorded, counted with the lifetime once at the free. */
static void
test_observability(void)
{
    pe_thread_stats_t before = thr.stats;
    pe_conn_t *conn = open_conn(1 << 20);
    static const pe_sub_callbacks_t no_callbacks;
    conn->sub.cb = &no_callbacks; /* a subscriber as far as the core can tell (never disposed: reset below) */
    pe_msg_t *msg = pe_msg_new((pe_id_t){1, 0}, "c", 1, "1", 1);
    msg->accepted_us = pe_msg_clock_us() - 3000; /* accepted 3 ms ago */

    conn->sub._live_dispatch = 1; /* as inside fan_out */
    pe_conn_push(conn, 0, msg, msg->envelope, msg->envelope_len);
    conn->sub._live_dispatch = 0; /* the same message from history: not counted */
    pe_conn_push(conn, 0, msg, msg->envelope, msg->envelope_len);
    pe_conn_push_text(conn, H2O_STRLIT("text"));
    run_loop(50);
    char buf[256];
    ssize_t n = peer_read(buf, sizeof(buf));
    TAP_EQ_UINT(conn->bytes_out, 2 * msg->envelope_len + 4, "bytes_out counts what was written");
    TAP_EQ_UINT((uint64_t)n, conn->bytes_out, "as the peer read it");
    uint64_t count = 0, below_2ms = 0;
    for (unsigned b = 0; b <= PE_LATENCY_BUCKETS; ++b) {
        uint64_t d = thr.stats.latency[PE_TRANSPORT_WS][b] - before.latency[PE_TRANSPORT_WS][b];
        count += d;
        if (b != PE_LATENCY_BUCKETS && pe_latency_bounds_us[b] < 2500)
            below_2ms += d;
    }
    TAP_EQ_UINT(count, 1, "one latency observation: the live message, not the catch-up one");
    TAP_EQ_UINT(below_2ms, 0, "in a bucket at or above its 3 ms age");
    uint64_t sum = thr.stats.latency_sum_us[PE_TRANSPORT_WS] - before.latency_sum_us[PE_TRANSPORT_WS];
    TAP_OK(sum >= 3000 && sum < 1000000, "the sum holds its age (%llu us)", (unsigned long long)sum);
    pe_msg_release(msg);

    conn->sub.cb = NULL;
    pe_conn_set_reason(conn, PE_END_CLIENT_LEFT);
    pe_conn_set_reason(conn, PE_END_DRAIN);
    pe_conn_end(conn);
    run_loop(50);
    TAP_EQ_INT(seen.disposed, 1, "freed");
    TAP_EQ_UINT(thr.stats.disconnects[PE_TRANSPORT_WS][PE_END_CLIENT_LEFT] -
                    before.disconnects[PE_TRANSPORT_WS][PE_END_CLIENT_LEFT],
                1, "counted once under the first reason recorded");
    TAP_EQ_UINT(thr.stats.disconnects[PE_TRANSPORT_WS][PE_END_DRAIN] - before.disconnects[PE_TRANSPORT_WS][PE_END_DRAIN], 0,
                "not under a later one");
    uint64_t lives = 0;
    for (unsigned b = 0; b <= PE_DURATION_BUCKETS; ++b)
        lives += thr.stats.duration[PE_TRANSPORT_WS][b] - before.duration[PE_TRANSPORT_WS][b];
    TAP_EQ_UINT(lives, 1, "one lifetime observed");
    close_peer();

    /* A conn nobody named a reason for counts as error. */
    before = thr.stats;
    conn = open_conn(1 << 20);
    pe_conn_end(conn);
    run_loop(50);
    TAP_EQ_UINT(thr.stats.disconnects[PE_TRANSPORT_WS][PE_END_ERROR] - before.disconnects[PE_TRANSPORT_WS][PE_END_ERROR], 1,
                "no reason: error");
    close_peer();
    /* The slow-consumer policy records its reason. */
    before = thr.stats;
    conn = open_conn(1 << 20);
    pe_conn_slow(conn, "test");
    run_loop(50);
    TAP_EQ_UINT(thr.stats.disconnects[PE_TRANSPORT_WS][PE_END_SLOW_CONSUMER] -
                    before.disconnects[PE_TRANSPORT_WS][PE_END_SLOW_CONSUMER],
                1, "slow consumer");
    close_peer();
}

/* ---- the deadline wheel and the token timer ---- */

static struct {
    pe_deadline_t d[6];
    int fired[6];
    uint64_t at[6];
} dl;

static void
on_dl(pe_deadline_t *d)
{
    size_t i = (size_t)(d - dl.d);
    ++dl.fired[i];
    dl.at[i] = h2o_now(thr.loop);
    if (i == 4 && dl.fired[4] == 1) /* re-arms itself once */
        pe_deadline_set(&thr, d, h2o_now(thr.loop) + 100);
    if (i == 1)
        pe_deadline_cancel(&thr, &dl.d[5]); /* cancels another, possibly due in the same tick */
}

static void
test_deadlines(void)
{
    uint64_t now = h2o_now(thr.loop);
    uint64_t due[6] = {now + 300, now + 1200, now + 200, now - 5000, now + 100, now + 1200};
    for (size_t i = 0; i != 6; ++i) {
        dl.d[i].cb = on_dl;
        pe_deadline_set(&thr, &dl.d[i], due[i]);
    }
    pe_deadline_set(&thr, &dl.d[0], due[0]); /* setting again moves, never doubles */
    pe_deadline_cancel(&thr, &dl.d[2]);
    TAP_EQ_UINT(thr.deadline_count, 5, "five set");
    run_loop(2600);
    TAP_EQ_INT(dl.fired[0], 1, "fired once");
    TAP_OK(dl.at[0] >= due[0] && dl.at[0] <= due[0] + 1100, "within a tick after its time (%lld ms late)",
           (long long)(dl.at[0] - due[0]));
    TAP_EQ_INT(dl.fired[1], 1, "a later one fired once");
    TAP_OK(dl.at[1] >= due[1], "not early");
    TAP_EQ_INT(dl.fired[2], 0, "a cancelled one never fires");
    TAP_EQ_INT(dl.fired[3], 1, "one set in the past fires at the next tick");
    TAP_EQ_INT(dl.fired[4], 2, "a callback may re-arm its own deadline");
    TAP_OK(dl.fired[5] <= 1, "cancelled from another's callback: at most the once it may already have fired in that tick");
    TAP_EQ_UINT(thr.deadline_count, 0, "nothing left set");
}

static void
test_token_timer(void)
{
    cfg.jwt_leeway = 0;
    pe_conn_t *conn = open_conn(1 << 20);
    uint64_t now = h2o_now(thr.loop);
    pe_identity_t id = {.authenticated = 1, .exp = (int64_t)((now + 2000) / 1000), .iat = (int64_t)(now / 1000)};
    pe_conn_set_identity(conn, &id);
    TAP_OK(!id.authenticated, "the identity was moved in");
    TAP_OK(pe_deadline_is_set(&conn->_auth_timer), "the notice is set");
    uint64_t exp_ms = (uint64_t)conn->identity.exp * 1000;
    run_loop((int)(exp_ms + 1500 - now));
    TAP_EQ_INT(seen.auth[PE_CONN_TOKEN_EXPIRING], 1, "the notice once");
    TAP_OK(seen.auth_at[PE_CONN_TOKEN_EXPIRING] < exp_ms, "before exp");
    TAP_EQ_INT(seen.auth[PE_CONN_TOKEN_EXPIRED], 1, "then the end once");
    TAP_OK(seen.auth_at[PE_CONN_TOKEN_EXPIRED] >= exp_ms, "at exp or later");
    TAP_EQ_INT(seen.disposed, 1, "the conn ended and was freed");
    TAP_EQ_INT(seen.end_reason, PE_END_AUTH, "for auth");
    close(peer);

    /* A refresh (a new identity) re-arms; an identity without exp stops the timer. */
    conn = open_conn(1 << 20);
    now = h2o_now(thr.loop);
    pe_identity_t a = {.authenticated = 1, .exp = (int64_t)(now / 1000) + 1};
    pe_conn_set_identity(conn, &a);
    pe_identity_t b = {.authenticated = 1, .exp = 0};
    pe_conn_set_identity(conn, &b);
    TAP_OK(!pe_deadline_is_set(&conn->_auth_timer), "no exp: no timer");
    pe_conn_await_auth(conn, 100);
    run_loop(1300);
    TAP_EQ_INT(seen.auth[PE_CONN_AUTH_MISSING], 1, "the auth deadline passed");
    TAP_EQ_INT(seen.auth[PE_CONN_TOKEN_EXPIRING], 0, "and no token event");
    TAP_EQ_INT(seen.end_reason, PE_END_AUTH, "ended for auth");
    close(peer);
    TAP_EQ_UINT(thr.deadline_count, 0, "nothing left set");
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the server does: a write to a shut socket fails, it does not kill */
    h2o_config_init(&globalconf);
    h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    cfg.ping_interval = 1;
    server.cfg = &cfg;
    thr.server = &server;
    thr.loop = h2o_evloop_create();
    h2o_context_init(&thr.ctx, thr.loop, &globalconf);
    h2o_linklist_init_anchor(&thr.streams);
    h2o_linklist_init_anchor(&thr.drained_streams);
    h2o_timeout_init(thr.loop, &thr.ping_timeout, cfg.ping_interval * 1000);
    h2o_timeout_init(thr.loop, &thr.ws_close_timeout, PE_WS_CLOSE_WAIT_MS);

    tap_subtest("write and end", test_write_and_end);
    tap_subtest("linger", test_linger);
    tap_subtest("slow consumer", test_slow);
    tap_subtest("drain and close wait", test_drain_and_close_wait);
    tap_subtest("abort under a write", test_abort_under_write);
    tap_subtest("heartbeat", test_heartbeat);
    tap_subtest("observability", test_observability);
    pe_deadline_thread_init(&thr);
    tap_subtest("deadlines", test_deadlines);
    tap_subtest("token timer", test_token_timer);
    TAP_OK(h2o_linklist_is_empty(&thr.streams), "no conn left registered");

    if (h2o_timeout_is_linked(&thr.deadline_tick))
        h2o_timeout_unlink(&thr.deadline_tick);
    h2o_timeout_dispose(thr.loop, &thr.ping_timeout);
    h2o_timeout_dispose(thr.loop, &thr.ws_close_timeout);
    h2o_context_dispose(&thr.ctx);
    h2o_evloop_destroy(thr.loop);
    h2o_config_dispose(&globalconf);
    return tap_done();
}

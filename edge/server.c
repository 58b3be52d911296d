/*
 * server.c: threads, listeners and draining (the requests go to edge/router.c).
 *
 * Thread model. --threads N event loops, each with its own h2o context, its own listening
 * sockets on every --listen address (SO_REUSEPORT: the kernel spreads connections, no accept
 * lock, no thundering herd), its own pubsub node and counters. What loops share is listed in
 * docs/architecture.md "Threads": the read-only configuration and limits, the engine (its own
 * locks), messages (reference-counted), front.c's per-descriptor table. The main thread
 * creates the sockets (so a bind error stops the start with a clear message), starts the loops,
 * then only waits for signals.
 *
 * Draining (SIGTERM/SIGINT). The main thread posts a notice to every loop's queue. Each loop
 * closes its listeners, asks h2o to wind down its connections (GOAWAY on HTTP/2, no keep-alive
 * on HTTP/1), tells every open stream to reconnect elsewhere (pe_stream_t.drain), and leaves
 * once its streams are gone or --drain-timeout passed.
 *
 * The telling is paced: a loop with N streams tells them in batches, one every PE_DRAIN_TICK_MS,
 * so that by time e into --drain-spread S it has told ceil(N * e / S) of them (the first batch
 * at once, the last at S - S/N), each with a jittered reconnect hint. The clients then arrive at
 * the other nodes spread over S plus the jitter rather than in the same second. Spreading only
 * the hints (all told at once, "come back in 0..S") was rejected: the client's socket stays open
 * and counted here for nothing, an intermediary or a client that ignores hints brings the herd
 * back anyway, and a hint longer than the drain left could never be honoured by a long-poll.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include "pubsub/alloc.h"
#include "edge/util/log.h"
#include "edge/server.h"
#include "edge/front.h"
#include "edge/router.h"
#include "edge/tls.h"
#include "edge/core/thread.h"
#include "edge/core/deadline.h"
#include "edge/core/revoke.h"
#include "fallback/poll.h"

/* ---- listeners ------------------------------------------------------------------------------- */

static int
open_listener(const char *option, const char *hostport, int reuseport, char *err, size_t errlen)
{
    char host[256];
    unsigned port;
    char portstr[8];
    if (pe_config_split_hostport(hostport, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "%s %s: malformed", option, hostport);
        return -1;
    }
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s %s: %s", option, hostport, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "%s %s: %s", option, hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    freeaddrinfo(res);
    return fd;
}

static void on_accept(h2o_socket_t *listener, const char *err);
static void on_accept_tls(h2o_socket_t *listener, const char *err);

static h2o_socket_cb
accept_cb(pe_thread_t *thr, size_t i)
{
    return i < thr->num_clear_listeners ? on_accept : on_accept_tls;
}

static void
set_accepting(pe_thread_t *thr, int on)
{
    for (size_t i = 0; i != thr->num_listeners; ++i) {
        if (thr->listeners[i] == NULL)
            continue;
        if (on)
            h2o_socket_read_start(thr->listeners[i], accept_cb(thr, i));
        else
            h2o_socket_read_stop(thr->listeners[i]);
    }
}

static void
on_accept_pause_end(h2o_timeout_entry_t *entry)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, accept_pause_entry, entry);
    if (!thr->draining)
        set_accepting(thr, 1);
}

/* accept(2) failed for want of a resource. The evloop is level-triggered and the connection
 * stays in the backlog, so retrying at once would spin: this loop stops accepting for
 * PE_ACCEPT_PAUSE_MS (the other loops' listeners keep their own rhythm). */
static void
pause_accepting(pe_thread_t *thr, int err)
{
    static pe_log_rate_t rate;
    pe_log_ratelimited(&rate, PE_LOG_WARN, "edge", "accept: %s with %zu connections open: not accepting for %u ms", strerror(err),
                       __atomic_load_n(&thr->server->limits.open, __ATOMIC_RELAXED), PE_ACCEPT_PAUSE_MS);
    set_accepting(thr, 0);
    if (!h2o_timeout_is_linked(&thr->accept_pause_entry))
        h2o_timeout_link(thr->loop, &thr->accept_pause_timeout, &thr->accept_pause_entry);
}

static void
accept_some(h2o_socket_t *listener, const char *err, int tls)
{
    pe_thread_t *thr = listener->data;
    if (err != NULL || thr->draining)
        return;
    /* Accept a bounded number per wake-up so one loop cannot starve its other work. */
    for (int i = 0; i != 64; ++i) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(thr, errno);
            else if (errno == ECONNABORTED || errno == EINTR || errno == EPROTO)
                continue;
            break;
        }
        int limited = pe_limits_on_accept(&thr->server->limits, sock);
        if (limited < 0) {
            h2o_socket_close(sock);
            continue;
        }
        if (tls) {
            /* HTTP and front.c come after the handshake (edge/tls.c). */
            pe_tls_accept(thr, sock, limited);
            continue;
        }
        h2o_accept(&thr->accept_ctx, sock);
        /* A connection served only with refusals keeps the limits' close hook as its mark
         * (pe_limits_refuse_request reads it); front.c would chain in front of it. */
        if (limited == 0)
            pe_front_attach(thr, sock);
    }
}

static void
on_accept(h2o_socket_t *listener, const char *err)
{
    accept_some(listener, err, 0);
}

static void
on_accept_tls(h2o_socket_t *listener, const char *err)
{
    accept_some(listener, err, 1);
}

static void
close_listeners(pe_thread_t *thr)
{
    for (size_t i = 0; i != thr->num_listeners; ++i) {
        if (thr->listeners[i] != NULL) {
            h2o_socket_read_stop(thr->listeners[i]);
            h2o_socket_close(thr->listeners[i]);
            thr->listeners[i] = NULL;
        }
    }
}

/* ---- per-thread loop ------------------------------------------------------------------------- */

static void
on_lag_timer(h2o_timeout_entry_t *entry)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, lag_entry, entry);
    /* h2o 2.2 zeroes entry->registered_at before calling back, so the due time is our own. */
    uint64_t now = h2o_now(thr->loop), due = thr->lag_due;
    PE_STAT_SET(thr->stats.loop_lag_ms, now > due ? now - due : 0);
    h2o_timeout_link(thr->loop, &thr->lag_timeout, &thr->lag_entry);
    thr->lag_due = thr->lag_entry.registered_at + 1000;
}

/* How many of total streams should have been told elapsed ms into a spread of spread ms. */
static size_t
drain_target(size_t total, uint64_t elapsed, uint64_t spread)
{
    if (spread == 0 || elapsed >= spread)
        return SIZE_MAX;
    /* ceil(total * elapsed / spread), at least one: the first batch goes at once. */
    uint64_t t = ((uint64_t)total * elapsed + spread - 1) / spread;
    return t == 0 ? 1 : (size_t)t;
}

static void
on_drain_tick(h2o_timeout_entry_t *entry)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, drain_tick, entry);
    uint64_t spread = thr->server->cfg->drain_spread;
    size_t target = drain_target(thr->drain_total, h2o_now(thr->loop) - thr->drain_started, spread);
    if (target > thr->drain_told)
        thr->drain_told += pe_stream_drain_some(thr, target - thr->drain_told, spread != 0);
    /* Streams opened after the drain began (an upgrade already under way) are told with the
     * last batch, at the end of the spread. */
    if (target != SIZE_MAX && !h2o_linklist_is_empty(&thr->streams))
        h2o_timeout_link(thr->loop, &thr->drain_tick_timeout, &thr->drain_tick);
}

static void
start_drain(pe_thread_t *thr)
{
    if (thr->draining)
        return;
    thr->draining = 1;
    thr->drain_started = h2o_now(thr->loop);
    thr->drain_deadline = thr->drain_started + thr->server->cfg->drain_timeout * 1000;
    close_listeners(thr);
    h2o_context_request_shutdown(&thr->ctx);
    thr->drain_total = pe_stream_count(thr);
    thr->drain_told = 0;
    thr->drain_tick.cb = on_drain_tick;
    on_drain_tick(&thr->drain_tick);
}

static void
on_control(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, control, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        pe_free(msg);
    }
    if (__atomic_load_n(&thr->server->force_stop, __ATOMIC_ACQUIRE))
        thr->stop = 1;
    start_drain(thr);
}

/* Builds a thread's loop, context, node and listeners. Runs on the loop thread itself: h2o 2.2
 * keeps a thread-local socket buffer prototype and recycles every consumed buffer into the free
 * list of the prototype the socket was created with, unlocked. Sockets made here on the main
 * thread (the context's wake-up queue, the node's queue, the listeners) would share the main
 * thread's list between all loops: a use-after-free under load. pe_server_start waits for every
 * setup, so the control receiver exists before any signal can be forwarded to it. */
static void
thread_setup(pe_thread_t *thr)
{
    pe_server_t *server = thr->server;

    thr->loop = h2o_evloop_create();
    h2o_context_init(&thr->ctx, thr->loop, &server->globalconf);
    thr->accept_ctx.ctx = &thr->ctx;
    thr->accept_ctx.hosts = server->globalconf.hosts;
    h2o_linklist_init_anchor(&thr->streams);
    h2o_linklist_init_anchor(&thr->drained_streams);
    h2o_timeout_init(thr->loop, &thr->ping_timeout, server->cfg->ping_interval * 1000);
    h2o_timeout_init(thr->loop, &thr->poll_timeout, server->cfg->poll_timeout * 1000);
    for (size_t i = 0; i != PE_POLL_SHORT_STEPS; ++i)
        h2o_timeout_init(thr->loop, &thr->poll_short[i], pe_poll_short_seconds[i] * 1000);
    h2o_timeout_init(thr->loop, &thr->lag_timeout, 1000);
    h2o_timeout_init(thr->loop, &thr->ws_close_timeout, PE_WS_CLOSE_WAIT_MS);
    h2o_timeout_init(thr->loop, &thr->accept_pause_timeout, PE_ACCEPT_PAUSE_MS);
    h2o_timeout_init(thr->loop, &thr->drain_tick_timeout, PE_DRAIN_TICK_MS);
    h2o_timeout_init(thr->loop, &thr->poll_sweep_timeout, PE_POLL_SWEEP_MS);
    thr->accept_pause_entry.cb = on_accept_pause_end;
    h2o_linklist_init_anchor(&thr->held_polls);
    thr->lag_entry.cb = on_lag_timer;
    h2o_timeout_link(thr->loop, &thr->lag_timeout, &thr->lag_entry);
    thr->lag_due = thr->lag_entry.registered_at + 1000;
    pe_front_thread_init(thr);
    h2o_multithread_register_receiver(thr->ctx.queue, &thr->control, on_control);
    pe_tls_thread_init(thr, server->tls_ctx);
    thr->node = pe_ps_node_create(server->engine, thr->loop, thr->index);
    pe_deadline_thread_init(thr);
    pe_revoke_thread_init(thr);
    for (size_t i = 0; i != thr->num_listeners; ++i) {
        thr->listeners[i] = h2o_evloop_socket_create(thr->loop, thr->listen_fds[i], H2O_SOCKET_FLAG_DONT_READ);
        thr->listeners[i]->data = thr;
        h2o_socket_read_start(thr->listeners[i], accept_cb(thr, i));
    }
}

static void *
thread_main(void *arg)
{
    pe_thread_t *thr = arg;
    thread_setup(thr);
    /* No loop serves before every loop is set up: a request on this loop reads the others'
     * fields (/metrics reads every thread's node and counters) and the engine's node table,
     * which their setup writes. The lock orders those writes before this loop's reads. */
    pthread_mutex_lock(&thr->server->setup_lock);
    ++thr->server->num_setup;
    pthread_cond_broadcast(&thr->server->setup_cond);
    while (thr->server->num_setup != thr->server->num_threads)
        pthread_cond_wait(&thr->server->setup_cond, &thr->server->setup_lock);
    pthread_mutex_unlock(&thr->server->setup_lock);
    for (;;) {
        h2o_evloop_run(thr->loop, thr->draining ? 100 : 1000);
        if (thr->stop)
            break;
        if (thr->draining && (pe_stream_none_open(thr) || h2o_now(thr->loop) >= thr->drain_deadline))
            break;
    }
    if (h2o_timeout_is_linked(&thr->drain_tick))
        h2o_timeout_unlink(&thr->drain_tick);
    /* Out of time: the streams not told yet get their hint now, and the rounds below write it.
     * The paced drain's last batch falls due at --drain-spread, which may be the deadline itself,
     * and its tick runs a little late: a loop woken by I/O just past the deadline got here first
     * (as does a stream registered in the last tick's interval). A second signal (stop) tells
     * nobody. */
    if (thr->draining && !thr->stop)
        thr->drain_told += pe_stream_drain_some(thr, SIZE_MAX, thr->server->cfg->drain_spread != 0);
    close_listeners(thr);
    /* Give h2o a few rounds to finish writing final chunks; streams still open past the
     * deadline end with the process. */
    for (int i = 0; i != 10; ++i)
        h2o_evloop_run(thr->loop, 0);

    /* Park instead of ending; the process exits from main. h2o keeps freed socket buffers,
     * memory-pool chunks and HTTP/2 write buffers in thread-local free lists, two of them static
     * (lib/common/memory.c, lib/http2/connection.c) so nothing outside h2o can empty them: a
     * thread that ended would leave them unreachable, and LeakSanitizer could only be quietened
     * by suppressions that also hide the buffers pushedge releases or takes over itself
     * (tests/lsan.supp). A parked thread's TLS stays a root of the leak check. */
    pthread_mutex_lock(&thr->server->setup_lock);
    ++thr->server->num_done;
    pthread_cond_broadcast(&thr->server->setup_cond);
    for (;;)
        pthread_cond_wait(&thr->server->setup_cond, &thr->server->setup_lock);
    return NULL;
}

/* Opens one listening socket per thread for addr (SO_REUSEPORT); 0 or -1 after printing why. */
static int
open_listeners(pe_server_t *server, const char *addr, const char *option)
{
    char err[512];
    for (unsigned t = 0; t != server->num_threads; ++t) {
        pe_thread_t *thr = &server->threads[t];
        if (t == 0) {
            /* Probe without SO_REUSEPORT first: a port held by another process that also sets
             * SO_REUSEPORT would otherwise be shared silently. */
            int probe = open_listener(option, addr, 0, err, sizeof(err));
            if (probe < 0) {
                fprintf(stderr, "pushedge: %s\n", err);
                return -1;
            }
            close(probe);
        }
        int fd = open_listener(option, addr, 1, err, sizeof(err));
        if (fd < 0) {
            fprintf(stderr, "pushedge: %s\n", err);
            return -1;
        }
        thr->listen_fds[thr->num_listeners++] = fd;
    }
    return 0;
}

int
pe_server_init(pe_server_t *server, const pe_config_t *cfg, pe_ps_engine_t *engine)
{
    memset(server, 0, sizeof(*server));
    server->cfg = cfg;
    server->engine = engine;
    server->num_threads = cfg->threads;
    pe_limits_init(&server->limits, cfg, cfg->threads);

    h2o_config_init(&server->globalconf);
    /* No version for scanners to match against advisories. */
    server->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("pushedge"));
    if (pe_front_init() != 0) {
        fprintf(stderr, "pushedge: getrlimit: %s\n", strerror(errno));
        return 1;
    }
    /* Bodies a bit over our limit reach the handler, which answers 413 with a JSON body. */
    server->globalconf.max_request_entity_size = cfg->max_message_size + PE_MAX_ENTITY_SLACK;
    h2o_hostconf_t *hostconf = h2o_config_register_host(&server->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = pe_router_on_req;

    if (cfg->num_listen_tls != 0) {
        char err[512];
        if ((server->tls_ctx = pe_tls_context_create(cfg->tls_cert, cfg->tls_key, err, sizeof(err))) == NULL) {
            fprintf(stderr, "pushedge: %s\n", err);
            return 2;
        }
        char desc[512];
        pe_tls_context_describe(server->tls_ctx, desc, sizeof(desc));
        pe_log(PE_LOG_INFO, "tls", "certificate from %s: %s", cfg->tls_cert, desc);
    }

    server->threads = pe_calloc(server->num_threads, sizeof(*server->threads));
    for (unsigned t = 0; t != server->num_threads; ++t) {
        server->threads[t].server = server;
        server->threads[t].index = t;
    }
    for (size_t i = 0; i != cfg->num_listen; ++i)
        if (open_listeners(server, cfg->listen[i], "--listen") != 0)
            return 1;
    for (unsigned t = 0; t != server->num_threads; ++t)
        server->threads[t].num_clear_listeners = server->threads[t].num_listeners;
    for (size_t i = 0; i != cfg->num_listen_tls; ++i)
        if (open_listeners(server, cfg->listen_tls[i], "--listen-tls") != 0)
            return 1;
    return 0;
}

int
pe_server_start(pe_server_t *server)
{
    pthread_mutex_init(&server->setup_lock, NULL);
    pthread_cond_init(&server->setup_cond, NULL);
    for (unsigned t = 0; t != server->num_threads; ++t)
        h2o_multithread_create_thread(&server->threads[t].tid, NULL, thread_main, &server->threads[t]);
    pthread_mutex_lock(&server->setup_lock);
    while (server->num_setup != server->num_threads)
        pthread_cond_wait(&server->setup_cond, &server->setup_lock);
    pthread_mutex_unlock(&server->setup_lock);
    return 0;
}

void
pe_server_notify(pe_server_t *server, int force)
{
    /* Stop accepting everywhere before any client is told to reconnect, so none of them lands
     * on a listener of this node that has not processed its notice yet. shutdown(2) on a
     * listening socket stops it without closing the descriptor its loop still owns. */
    for (unsigned t = 0; t != server->num_threads; ++t)
        for (size_t i = 0; i != server->threads[t].num_listeners; ++i)
            shutdown(server->threads[t].listen_fds[i], SHUT_RDWR);
    __atomic_store_n(&server->leaving, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&server->draining, 1, __ATOMIC_RELEASE);
    if (force)
        __atomic_store_n(&server->force_stop, 1, __ATOMIC_RELEASE);
    for (unsigned t = 0; t != server->num_threads; ++t) {
        /* A fresh message each time: one still queued cannot be linked twice. */
        h2o_multithread_message_t *msg = pe_calloc(1, sizeof(*msg));
        h2o_multithread_send_message(&server->threads[t].control, msg);
    }
}

void
pe_server_join(pe_server_t *server)
{
    pthread_mutex_lock(&server->setup_lock);
    while (server->num_done != server->num_threads)
        pthread_cond_wait(&server->setup_cond, &server->setup_lock);
    pthread_mutex_unlock(&server->setup_lock);
}

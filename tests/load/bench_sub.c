/*
 * bench_sub.c: the subscriber threads of pushedge-bench. Each thread owns every T-th connection
 * (T = --threads) and runs its own level-triggered epoll loop; nothing is shared with the other
 * threads except the pb_shared_t counters the main thread watches.
 *
 * Per connection. The struct is ~80 bytes, because 18,000 of them are open at once: no buffer
 * lives in it (a TLS connection adds OpenSSL's own state and record buffers, tens of KiB). Each readiness event reads into the
 * thread's large buffer (as much as is there, several reads if it fills), parses every complete frame, SSE line or poll response in
 * place, and copies only an incomplete tail to a heap "carry" that the next read puts back in front. Under fan-out load messages
 * arrive whole, so carries are rare and short-lived.
 *
 * Counting. Messages are recognised by the marker in the payload, never by the envelope, so the
 * same code measures pushedge and nchan. A 64-message window per connection (base + bitmap)
 * tells first deliveries from duplicates while tolerating the bounded reordering caused by
 * several publishing connections; the main thread compares first deliveries with what the
 * publisher got 2xx answers for to count losses at the end.
 *
 * Readiness. A connection is "opened" when a message published from then on must reach it:
 * after the pushedge ack (WebSocket "subscribed" op; SSE's bare "id:" line that marks the
 * stream live), after the handshake for nchan (--ready handshake), and once its first request
 * is out for long-polling (which starts at cursor 0 so nothing published later is missed).
 *
 * Churn (--churn S). A ready connection closes after a random lifetime and reconnects at once
 * with ?since= the last position it saw (WebSocket: the subscribed op's cursor, then each
 * message's id; SSE: the id of the last complete event; long-poll: the answer's cursor). It
 * keeps its window and counts, so a message lost or repeated across any reconnect shows in
 * lost/duplicated exactly as without churn. A ready connection that the server drops, or whose
 * reconnect fails, retries after a second (counted in "retries"), the way a real client would.
 *
 * TLS (--tls, or a --sub-url https:// / wss://). After the TCP connect the connection does a
 * non-blocking SSL_do_handshake in state CS_TLS, watching EPOLLIN or EPOLLOUT as OpenSSL asks
 * (WANT_READ / WANT_WRITE); then it sends its request and goes on exactly as in clear text, only
 * reading with SSL_read and writing with SSL_write. A readable TLS connection is read until
 * OpenSSL holds nothing more (SSL_has_pending), not a fixed number of rounds as in clear text:
 * decrypted bytes or a read-ahead record left inside OpenSSL would never wake the
 * level-triggered epoll again, while bytes still in the socket do.
 * bench_tls.c sets the contexts up (one per thread).
 *
 * When adding a transport: request_build(), process(), and the ready rule above.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>
#include "bench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h; glibc's netinet/in.h does not define it */
#endif

/* Connections in the middle of connect + handshake per thread: more would only overflow the
 * server's accept backlog and turn into SYN retransmits that distort connect_seconds. */
#define MAX_PENDING 1024
#define MAX_EVENTS 512

/* CS_TLS: the TLS handshake, between the TCP connect and the HTTP request (TLS connections only). */
typedef enum { CS_IDLE, CS_CONNECTING, CS_TLS, CS_HANDSHAKE, CS_WAIT_READY, CS_OPEN, CS_CLOSED } conn_state_t;
typedef enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END, CH_END } chunk_state_t;

#define CF_READY 0x01        /* counted in "opened": its messages are expected */
#define CF_DEFLATE 0x02      /* permessage-deflate negotiated */
#define CF_CHUNKED 0x04      /* SSE body in chunked transfer coding */
#define CF_FRAG_DEFLATE 0x08 /* the message being reassembled from fragments is compressed */
#define CF_EV_ID 0x10        /* the SSE event being read had an id: line */
#define CF_EV_DATA 0x20      /* ... and a data: line */
#define CF_WANT_OUT 0x40     /* the fd is registered for EPOLLOUT (connecting, or TLS wants to write) */

typedef struct st_pb_conn_t {
    int fd;
    SSL *ssl; /* TLS connections: from the TCP connect on; NULL in clear text */
    uint32_t channel;
    uint32_t base;   /* every seq below base was received */
    uint32_t unique; /* distinct messages of this run received */
    uint64_t window; /* bit i: seq base + i received; bit 0 is always clear */
    char *carry;     /* incomplete tail of the last read (raw bytes; dechunked text for SSE); heap */
    uint32_t carry_len;
    union {
        uint32_t chunk_rem; /* SSE: bytes left in the current chunk */
        uint32_t frag_len;  /* WS: bytes in frag */
    };
    union {
        char *frag;  /* WS: the fragments of a message so far (heap) */
        char *ev_id; /* SSE: the id: of the event being read, the position once the event is complete */
    };
    /* The last position seen (heap; NULL: none yet): poll always, WebSocket and SSE with --churn.
     * A reconnect resumes from it. */
    char *cursor;
    uint64_t due_ns; /* --churn: when an open connection closes, or a dropped one retries; 0: unset */
    uint8_t state, flags, chunk_state;
} pb_conn_t;

struct st_pb_sub_thread_t {
    pthread_t tid;
    uint32_t idx;
    int ep;
    pb_shared_t *shared;
    pb_conn_t *conns;
    uint32_t nconns;
    uint32_t next_start; /* connect phase: conns[next_start] is the next one to start */
    uint32_t pending;    /* started, neither ready nor failed */
    int connect_phase;
    uint64_t phase_start_ns, deadline_ns;
    uint64_t now;     /* CLOCK_MONOTONIC at the current read: the receive time of what it holds */
    uint64_t last_rx; /* time of the last first delivery */
    uint64_t rng;
    uint64_t next_churn_scan;
    unsigned logged; /* failure reasons printed, to keep stderr readable at 18,000 failures */
    char *buf;       /* PB_READ_BUF bytes */
    char *infl;      /* inflate output, PB_MAX_CARRY bytes, allocated on the first compressed message */
    z_stream z;
    int z_ok;
    SSL_CTX *tls_ctx; /* when any --sub-url is TLS: this thread's own context */
    pb_result_t res;
};

static uint32_t
global_index(const pb_sub_thread_t *t, const pb_conn_t *c)
{
    return t->idx + (uint32_t)(c - t->conns) * pb_cfg->threads;
}

static uint64_t
rng_next(uint64_t *s)
{
    /* splitmix64: masking keys need not be strong here, only non-constant. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static void
log_failure(pb_sub_thread_t *t, const pb_conn_t *c, const char *why, int err)
{
    if (t->logged++ < 5 || pb_cfg->verbose)
        fprintf(stderr, "pushedge-bench: conn %u (%s): %s%s%s\n", global_index(t, c), pb_cfg->channel[c->channel], why,
                err != 0 ? ": " : "", err != 0 ? strerror(err) : "");
}

static int
is_pending(const pb_conn_t *c)
{
    return c->state == CS_CONNECTING || c->state == CS_TLS || c->state == CS_HANDSHAKE || c->state == CS_WAIT_READY;
}

/* Drops the socket and what was being parsed on it; keeps the position, window and counts
 * (a churn reconnect goes on from them). Leaves c->state to the caller. */
static void
conn_release(pb_sub_thread_t *t, pb_conn_t *c)
{
    if (c->ssl != NULL) {
        /* No close_notify: a benchmark's subscriber leaves the way a closed browser tab does. */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd); /* also removes it from the epoll set: the fd is never dup'ed */
    c->fd = -1;
    free(c->carry);
    c->carry = NULL;
    c->carry_len = 0;
    free(c->frag); /* SSE's ev_id: same pointer */
    c->frag = NULL;
    c->frag_len = 0;
    c->chunk_state = CH_SIZE;
    if (is_pending(c))
        t->pending--;
    c->flags &= CF_READY;
    c->due_ns = 0;
}

static void
set_cursor(pb_conn_t *c, const char *p, size_t len)
{
    free(c->cursor);
    c->cursor = pb_malloc(len + 1);
    memcpy(c->cursor, p, len);
    c->cursor[len] = '\0';
}

/* The single close path for a failure or the server's close: after it c->state is CS_CLOSED and
 * the fd is gone, or, with --churn, a ready connection waits in CS_IDLE to retry. */
static void
conn_close(pb_sub_thread_t *t, pb_conn_t *c, const char *why, int err)
{
    if (c->state == CS_CLOSED || c->state == CS_IDLE)
        return;
    if (why != NULL)
        log_failure(t, c, why, err);
    conn_release(t, c);
    if (c->flags & CF_READY) {
        atomic_fetch_add_explicit(&t->shared->closed, 1, memory_order_relaxed);
        if (pb_cfg->churn > 0 && !atomic_load_explicit(&pb_stop, memory_order_relaxed)) {
            c->state = CS_IDLE;
            c->due_ns = pb_now_ns() + 1000000000u;
            t->res.retries++;
            return;
        }
    } else {
        atomic_fetch_add_explicit(&t->shared->failed, 1, memory_order_relaxed);
    }
    free(c->cursor);
    c->cursor = NULL;
    c->state = CS_CLOSED;
}

static void
mark_ready(pb_sub_thread_t *t, pb_conn_t *c)
{
    c->state = CS_OPEN;
    t->pending--;
    if (c->flags & CF_READY) {
        t->res.reconnected++; /* a churn reconnect: it was counted in "opened" the first time */
        return;
    }
    c->flags |= CF_READY;
    atomic_fetch_add_explicit(&t->shared->opened, 1, memory_order_relaxed);
    atomic_store_explicit(&t->shared->last_ready_ns, pb_now_ns(), memory_order_relaxed);
}

static int
send_all(pb_sub_thread_t *t, pb_conn_t *c, const void *p, size_t len)
{
    /* Everything a subscriber sends (a request, a pong, a close) is tiny and goes out on a socket
     * whose send buffer is otherwise empty: a short write means the peer stopped reading, which
     * for a benchmark is a failed connection rather than something to queue for. */
    if (c->ssl != NULL) {
        /* Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write writes all of it or fails. */
        ERR_clear_error();
        int n = SSL_write(c->ssl, p, (int)len);
        if (n == (int)len)
            return 0;
        char err[256];
        int e = SSL_get_error(c->ssl, n);
        conn_close(t, c, e == SSL_ERROR_WANT_WRITE ? "TLS write would block" : pb_tls_error(err, sizeof(err), e), 0);
        return -1;
    }
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return 0;
    conn_close(t, c, n < 0 ? "send" : "short write", n < 0 ? errno : 0);
    return -1;
}

/* Watches EPOLLOUT (want_out) or EPOLLIN; 0, or -1 if it closed c. */
static int
set_events(pb_sub_thread_t *t, pb_conn_t *c, int want_out)
{
    if (!(c->flags & CF_WANT_OUT) == !want_out)
        return 0;
    struct epoll_event ev = {.events = want_out ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        conn_close(t, c, "epoll_ctl", errno);
        return -1;
    }
    c->flags = (uint8_t)(want_out ? c->flags | CF_WANT_OUT : c->flags & ~CF_WANT_OUT);
    return 0;
}

/* ---- requests -------------------------------------------------------------------------------- */

static void
ws_key(uint32_t g, char out[25])
{
    /* Derived from the run id and the connection's index, so the accept value can be checked
     * without keeping the key in every connection. */
    uint64_t s = ((uint64_t)pb_cfg->run_id << 32) ^ g, k[2];
    k[0] = rng_next(&s);
    k[1] = rng_next(&s);
    pb_base64((const uint8_t *)k, 16, out);
}

static int
send_request(pb_sub_thread_t *t, pb_conn_t *c)
{
    const char *target = pb_cfg->sub_target[c->channel], *host = pb_cfg->sub_host_hdr[global_index(t, c) % pb_cfg->nsub_urls];
    const char *sep = strchr(target, '?') != NULL ? "&" : "?";
    /* A churn reconnect of WebSocket and SSE resumes after what it saw; the first connection
     * subscribes to new messages only. Long-poll always carries its cursor (from 0). */
    const char *since = pb_cfg->transport != PB_POLL && c->cursor != NULL ? "since=" : "";
    const char *resume = pb_cfg->transport != PB_POLL && c->cursor != NULL ? c->cursor : "";
    char req[4096];
    int n;
    switch (pb_cfg->transport) {
    case PB_WS:
    case PB_WS_DEFLATE: {
        char key[25];
        ws_key(global_index(t, c), key);
        n = snprintf(req, sizeof(req),
                     "GET %s%s%s%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     target, *since ? sep : "", since, resume, host, key,
                     pb_cfg->transport == PB_WS_DEFLATE ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                                          "client_no_context_takeover; server_no_context_takeover\r\n"
                                                        : "");
        break;
    }
    case PB_SSE:
        n = snprintf(req, sizeof(req),
                     "GET %s%s%s%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n", target,
                     *since ? sep : "", since, resume, host);
        break;
    case PB_POLL:
    default:
        n = snprintf(req, sizeof(req), "GET %s%ssince=%s HTTP/1.1\r\nHost: %s\r\n\r\n", target, sep,
                     c->cursor != NULL ? c->cursor : "0", host);
        break;
    }
    if (n < 0 || (size_t)n >= sizeof(req)) {
        conn_close(t, c, "request too long", 0);
        return -1;
    }
    return send_all(t, c, req, (size_t)n);
}

/* The transport is up (TCP, or TLS over it): send the request, wait for the answer. */
static void
begin_request(pb_sub_thread_t *t, pb_conn_t *c)
{
    if (set_events(t, c, 0) != 0)
        return;
    c->state = CS_HANDSHAKE;
    if (send_request(t, c) != 0)
        return;
    if (pb_cfg->transport == PB_POLL)
        mark_ready(t, c);
}

static void
tls_done(pb_sub_thread_t *t, pb_conn_t *c)
{
    t->res.tls_handshakes++;
    if (SSL_session_reused(c->ssl))
        t->res.tls_resumed++;
    const unsigned char *alpn;
    unsigned alen;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    if (alen != 0 && (alen != 8 || memcmp(alpn, "http/1.1", 8) != 0)) {
        t->res.tls_failed++;
        conn_close(t, c, "the server chose an ALPN protocol other than http/1.1", 0);
        return;
    }
    if (t->res.tls_protocol[0] == '\0') {
        snprintf(t->res.tls_protocol, sizeof(t->res.tls_protocol), "%s", SSL_get_version(c->ssl));
        snprintf(t->res.tls_cipher, sizeof(t->res.tls_cipher), "%s", SSL_get_cipher_name(c->ssl));
        snprintf(t->res.tls_alpn, sizeof(t->res.tls_alpn), "%.*s", (int)alen, alen != 0 ? (const char *)alpn : "");
    }
    begin_request(t, c);
}

/* One step of the non-blocking client handshake, on every readiness event in CS_TLS. */
static void
tls_step(pb_sub_thread_t *t, pb_conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        tls_done(t, c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        set_events(t, c, e == SSL_ERROR_WANT_WRITE);
        return;
    }
    char err[256], why[300];
    snprintf(why, sizeof(why), "TLS handshake: %s", pb_tls_error(err, sizeof(err), e));
    t->res.tls_failed++;
    conn_close(t, c, why, 0);
}

static void
on_connected(pb_sub_thread_t *t, pb_conn_t *c)
{
    uint32_t u = global_index(t, c) % pb_cfg->nsub_urls;
    if (!pb_cfg->sub_tls[u]) {
        begin_request(t, c);
        return;
    }
    if ((c->ssl = pb_tls_new(t->tls_ctx, c->fd, &pb_cfg->sub_addr[u])) == NULL) {
        t->res.tls_failed++;
        conn_close(t, c, "SSL_new", 0);
        return;
    }
    c->state = CS_TLS;
    tls_step(t, c);
}

static void
conn_start(pb_sub_thread_t *t, pb_conn_t *c)
{
    uint32_t g = global_index(t, c);
    c->state = CS_CONNECTING;
    t->pending++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_close(t, c, "socket", errno);
        return;
    }
    int one = 1;
    if (pb_cfg->nsrc != 0) {
        /* Without IP_BIND_ADDRESS_NO_PORT, bind() picks the port before the destination is known,
         * and every source address shares one ~28k ephemeral port range. */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = pb_cfg->src[g % pb_cfg->nsrc]};
        if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            conn_close(t, c, "bind", errno);
            return;
        }
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const struct sockaddr_in *to = &pb_cfg->sub_addr[g % pb_cfg->nsub_urls];
    int r = connect(c->fd, (const struct sockaddr *)to, sizeof(*to));
    if (r != 0 && errno != EINPROGRESS) {
        conn_close(t, c, "connect", errno);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        conn_close(t, c, "epoll_ctl", errno);
        return;
    }
    c->flags |= CF_WANT_OUT;
    if (r == 0)
        on_connected(t, c);
}

/* ---- delivery accounting --------------------------------------------------------------------- */

static void
record(pb_sub_thread_t *t, pb_conn_t *c, uint32_t seq, uint64_t send_ns)
{
    if (seq < c->base) {
        t->res.dup++;
        return;
    }
    uint64_t off = seq - c->base;
    if (off >= 64) {
        /* Slide the window; seqs that leave it unseen are loss candidates (reconciled at the end
         * against what was published: a late arrival would be miscounted as a duplicate, which
         * needs reordering by more than the 64 publishes that can be in flight at once). */
        uint64_t shift = off - 63;
        if (shift >= 64) {
            t->res.skipped += (64 - (uint64_t)__builtin_popcountll(c->window)) + (shift - 64);
            c->window = 0;
        } else {
            t->res.skipped += shift - (uint64_t)__builtin_popcountll(c->window & ((1ull << shift) - 1));
            c->window >>= shift;
        }
        c->base += (uint32_t)shift;
        off = 63;
    }
    uint64_t bit = 1ull << off;
    if (c->window & bit) {
        t->res.dup++;
        return;
    }
    c->window |= bit;
    if (c->window & 1) {
        unsigned n = ~c->window == 0 ? 64 : (unsigned)__builtin_ctzll(~c->window);
        c->window = n == 64 ? 0 : c->window >> n;
        c->base += n;
    }
    c->unique++;
    t->res.unique++;
    t->last_rx = t->now;
    uint64_t us = t->now > send_ns ? (t->now - send_ns) / 1000 : 0;
    pb_hist_add(&t->res.hist, us);
    if (seq < pb_cfg->seq_hists)
        pb_hist_add(&t->res.seq_hist[seq], us);
}

static void
scan_markers(pb_sub_thread_t *t, pb_conn_t *c, const char *p, size_t len)
{
    const char *end = p + len, *m;
    while ((m = pb_find(p, (size_t)(end - p), PB_MARKER, PB_MARKER_LEN)) != NULL) {
        uint32_t seq;
        uint64_t send_ns;
        p = m + PB_MARKER_LEN;
        int r = pb_parse_marker(p, end, &seq, &send_ns);
        if (r > 0)
            record(t, c, seq, send_ns);
        else if (r == 0)
            t->res.foreign++;
        else
            t->res.protocol_errors++;
    }
}

/* ---- WebSocket ------------------------------------------------------------------------------- */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int
ws_check_handshake(pb_sub_thread_t *t, pb_conn_t *c, const char *head, size_t hl, int status)
{
    if (status != 101) {
        char why[32];
        snprintf(why, sizeof(why), "handshake status %d", status);
        conn_close(t, c, why, 0);
        return -1;
    }
    char key[25], expect[29], cat[64];
    uint8_t digest[20];
    ws_key(global_index(t, c), key);
    memcpy(cat, key, 24);
    memcpy(cat + 24, ws_guid, 36);
    pb_sha1(cat, 60, digest);
    pb_base64(digest, 20, expect);
    size_t vlen;
    const char *v = pb_http_header(head, hl, "sec-websocket-accept", &vlen);
    if (v == NULL || vlen != 28 || memcmp(v, expect, 28) != 0) {
        conn_close(t, c, "bad Sec-WebSocket-Accept", 0);
        return -1;
    }
    v = pb_http_header(head, hl, "sec-websocket-extensions", &vlen);
    if (v != NULL && pb_find(v, vlen, "permessage-deflate", 18) != NULL) {
        /* One inflate state per thread, reset per message, is only valid when the server resets
         * its deflate state per message too (RFC 7692 7.1.1.1: it must echo the parameter). */
        if (pb_cfg->transport != PB_WS_DEFLATE || pb_find(v, vlen, "server_no_context_takeover", 26) == NULL) {
            conn_close(t, c, "unexpected permessage-deflate parameters", 0);
            return -1;
        }
        c->flags |= CF_DEFLATE;
    } else if (pb_cfg->transport == PB_WS_DEFLATE) {
        t->res.deflate_refused++;
    }
    return 0;
}

static int
ws_send_control(pb_sub_thread_t *t, pb_conn_t *c, int op, const char *payload, size_t len)
{
    uint8_t f[2 + 4 + 125];
    if (len > 125)
        len = 125;
    uint32_t mask = (uint32_t)rng_next(&t->rng);
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(0x80 | len); /* RFC 6455 5.3: every client frame is masked */
    memcpy(f + 2, &mask, 4);
    for (size_t i = 0; i != len; ++i)
        f[6 + i] = (uint8_t)payload[i] ^ f[2 + (i & 3)];
    return send_all(t, c, f, 6 + len);
}

static int
ws_inflate(pb_sub_thread_t *t, const char *in, size_t len, size_t *outlen)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (!t->z_ok) {
        if (inflateInit2(&t->z, -15) != Z_OK)
            return -1;
        t->z_ok = 1;
        t->infl = pb_malloc(PB_MAX_CARRY);
    }
    inflateReset(&t->z);
    t->z.next_in = (Bytef *)in;
    t->z.avail_in = (uInt)len;
    t->z.next_out = (Bytef *)t->infl;
    t->z.avail_out = PB_MAX_CARRY;
    int r = inflate(&t->z, Z_SYNC_FLUSH);
    if ((r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) || t->z.avail_in != 0)
        return -1;
    if (r != Z_STREAM_END) {
        /* RFC 7692 7.2.2: the sender stripped the sync flush's empty block; put it back. */
        t->z.next_in = (Bytef *)tail;
        t->z.avail_in = 4;
        r = inflate(&t->z, Z_SYNC_FLUSH);
        if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
            return -1;
    }
    *outlen = PB_MAX_CARRY - t->z.avail_out;
    return 0;
}

/* The string value of "name":"..." in p[0..len), or NULL. Bench payloads hold no such keys. */
static const char *
json_string(const char *p, size_t len, const char *name, size_t *vlen)
{
    char key[32];
    int kl = snprintf(key, sizeof(key), "\"%s\":\"", name);
    const char *v = pb_find(p, len, key, (size_t)kl), *q;
    if (v == NULL)
        return NULL;
    v += kl;
    if ((q = memchr(v, '"', len - (size_t)(v - p))) == NULL || q - v > 2400)
        return NULL;
    *vlen = (size_t)(q - v);
    return v;
}

/* Keeps where a reconnect resumes: the subscription's start until a message arrives, then the
 * last message's id; a gap moves the position past it. */
static void
ws_position(pb_sub_thread_t *t, pb_conn_t *c, const char *p, size_t len, int subscribed)
{
    const char *v;
    size_t vlen;
    if (pb_find(p, len, "\"op\":\"message\"", 14) != NULL) {
        if ((v = json_string(p, len, "id", &vlen)) != NULL)
            set_cursor(c, v, vlen);
    } else if (pb_find(p, len, "\"op\":\"gap\"", 10) != NULL) {
        t->res.gaps++;
        if ((v = json_string(p, len, "cursor", &vlen)) != NULL)
            set_cursor(c, v, vlen);
    } else if (subscribed && c->cursor == NULL) {
        /* Only the first time: a resumed subscription's start says nothing about what it has seen. */
        if ((v = json_string(p, len, "cursor", &vlen)) != NULL)
            set_cursor(c, v, vlen);
    }
}

static int
ws_message(pb_sub_thread_t *t, pb_conn_t *c, const char *p, size_t len, int compressed)
{
    if (compressed) {
        if (!(c->flags & CF_DEFLATE) || ws_inflate(t, p, len, &len) != 0) {
            t->res.protocol_errors++;
            conn_close(t, c, compressed && !(c->flags & CF_DEFLATE) ? "RSV1 without deflate" : "inflate failed", 0);
            return -1;
        }
        p = t->infl;
        t->res.deflated++;
    }
    int subscribed = pb_find(p, len, "\"op\":\"subscribed\"", 17) != NULL;
    if (pb_cfg->churn > 0)
        ws_position(t, c, p, len, subscribed);
    if (c->state == CS_WAIT_READY && subscribed)
        mark_ready(t, c);
    scan_markers(t, c, p, len);
    return 0;
}

/* Parses the complete frames in p[0..len); returns the bytes consumed or -1 if it closed c. */
static long
ws_frames(pb_sub_thread_t *t, pb_conn_t *c, const char *p, size_t len)
{
    size_t pos = 0;
    while (len - pos >= 2) {
        uint8_t b0 = (uint8_t)p[pos], b1 = (uint8_t)p[pos + 1];
        size_t hdr = 2;
        uint64_t plen = b1 & 0x7f;
        if (b1 & 0x80) {
            t->res.protocol_errors++;
            conn_close(t, c, "masked server frame", 0);
            return -1;
        }
        if (plen == 126) {
            if (len - pos < 4)
                break;
            plen = (uint64_t)(uint8_t)p[pos + 2] << 8 | (uint8_t)p[pos + 3];
            hdr = 4;
        } else if (plen == 127) {
            if (len - pos < 10)
                break;
            plen = 0;
            for (int i = 0; i != 8; ++i)
                plen = plen << 8 | (uint8_t)p[pos + 2 + i];
            hdr = 10;
        }
        if (plen > PB_MAX_CARRY - 16) {
            t->res.protocol_errors++;
            conn_close(t, c, "frame too large", 0);
            return -1;
        }
        if (len - pos < hdr + plen)
            break;
        const char *payload = p + pos + hdr;
        int op = b0 & 0x0f, fin = b0 & 0x80, rsv1 = b0 & 0x40;
        pos += hdr + (size_t)plen;
        switch (op) {
        case 0x1:
        case 0x2:
            if (c->frag != NULL)
                goto Error;
            if (fin) {
                if (ws_message(t, c, payload, (size_t)plen, rsv1) != 0)
                    return -1;
            } else {
                c->frag = pb_malloc(plen != 0 ? (size_t)plen : 1);
                memcpy(c->frag, payload, (size_t)plen);
                c->frag_len = (uint32_t)plen;
                c->flags = (uint8_t)((c->flags & ~CF_FRAG_DEFLATE) | (rsv1 ? CF_FRAG_DEFLATE : 0));
            }
            break;
        case 0x0:
            if (c->frag == NULL || (size_t)c->frag_len + plen > PB_MAX_CARRY)
                goto Error;
            c->frag = pb_realloc(c->frag, c->frag_len + (size_t)plen + 1);
            memcpy(c->frag + c->frag_len, payload, (size_t)plen);
            c->frag_len += (uint32_t)plen;
            if (fin) {
                char *m = c->frag;
                c->frag = NULL;
                int r = ws_message(t, c, m, c->frag_len, c->flags & CF_FRAG_DEFLATE);
                free(m);
                if (r != 0)
                    return -1;
            }
            break;
        case 0x8:
            /* Answer with the server's status code (RFC 6455 5.5.1), then drop the connection. */
            ws_send_control(t, c, 0x8, payload, plen >= 2 ? 2 : 0);
            t->res.server_closes++;
            conn_close(t, c, "server closed the WebSocket", 0);
            return -1;
        case 0x9:
            if (ws_send_control(t, c, 0xa, payload, (size_t)plen) != 0)
                return -1;
            break;
        case 0xa:
            break;
        default:
            goto Error;
        }
    }
    return (long)pos;
Error:
    t->res.protocol_errors++;
    conn_close(t, c, "WebSocket protocol error", 0);
    return -1;
}

/* ---- SSE ------------------------------------------------------------------------------------- */

/* Decodes the chunked bytes b[in..len) in place to b[in..out); returns out, or -1 on a bad
 * chunk size. Works byte by byte through chunk-size lines so no raw carry is ever needed. */
static long
dechunk(pb_conn_t *c, char *b, size_t in, size_t len)
{
    size_t o = in, i = in;
    while (i < len) {
        switch (c->chunk_state) {
        case CH_SIZE:
        case CH_EXT: {
            char ch = b[i++];
            int hex = ch >= '0' && ch <= '9'   ? ch - '0'
                      : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                      : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                               : -1;
            if (ch == '\n') {
                c->chunk_state = c->chunk_rem == 0 ? CH_END : CH_DATA;
            } else if (c->chunk_state == CH_SIZE && hex >= 0) {
                if (c->chunk_rem > PB_MAX_CARRY)
                    return -1;
                c->chunk_rem = c->chunk_rem * 16 + (uint32_t)hex;
            } else if (ch != '\r') {
                c->chunk_state = CH_EXT;
            }
            break;
        }
        case CH_DATA: {
            size_t n = len - i < c->chunk_rem ? len - i : c->chunk_rem;
            memmove(b + o, b + i, n);
            o += n;
            i += n;
            c->chunk_rem -= (uint32_t)n;
            if (c->chunk_rem == 0)
                c->chunk_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (b[i++] == '\n')
                c->chunk_state = CH_SIZE;
            break;
        case CH_END:
            i = len; /* trailers: the stream is over anyway */
            break;
        }
    }
    return (long)o;
}

static void
sse_line(pb_sub_thread_t *t, pb_conn_t *c, const char *line, size_t len)
{
    if (len == 0) {
        /* pushedge marks the stream live with an event that has an id and no data. */
        if (c->state == CS_WAIT_READY && (c->flags & CF_EV_ID) && !(c->flags & CF_EV_DATA))
            mark_ready(t, c);
        c->flags &= (uint8_t) ~(CF_EV_ID | CF_EV_DATA);
        if (c->ev_id != NULL) {
            /* The position moves only with a complete event (as EventSource's lastEventId): a
             * reconnect between the id: line and the data would otherwise skip the message. */
            free(c->cursor);
            c->cursor = c->ev_id;
            c->ev_id = NULL;
        }
    } else if (len >= 5 && memcmp(line, "data:", 5) == 0) {
        c->flags |= CF_EV_DATA;
        scan_markers(t, c, line + 5, len - 5);
    } else if ((len >= 3 && memcmp(line, "id:", 3) == 0) || (len == 2 && memcmp(line, "id", 2) == 0)) {
        c->flags |= CF_EV_ID;
        if (pb_cfg->churn > 0 && len > 3) {
            size_t skip = line[3] == ' ' ? 4 : 3;
            free(c->ev_id);
            c->ev_id = pb_malloc(len - skip + 1);
            memcpy(c->ev_id, line + skip, len - skip);
            c->ev_id[len - skip] = '\0';
        }
    } else if (len >= 6 && memcmp(line, "event:", 6) == 0 && pb_find(line, len, "gap", 3) != NULL) {
        t->res.gaps++;
    }
}

/* b[0..raw) is text carried from the last read, b[raw..len) what was just read. Sets the
 * incomplete last line as the residue; returns 0, or -1 if it closed c. */
static int
sse_body(pb_sub_thread_t *t, pb_conn_t *c, char *b, size_t raw, size_t len, size_t *res_off, size_t *res_len)
{
    size_t end = len;
    if (c->flags & CF_CHUNKED) {
        long o = dechunk(c, b, raw, len);
        if (o < 0) {
            t->res.protocol_errors++;
            conn_close(t, c, "bad chunk", 0);
            return -1;
        }
        end = (size_t)o;
    }
    size_t s = 0;
    const char *nl;
    while ((nl = memchr(b + s, '\n', end - s)) != NULL) {
        size_t ll = (size_t)(nl - (b + s));
        sse_line(t, c, b + s, ll != 0 && b[s + ll - 1] == '\r' ? ll - 1 : ll);
        s += ll + 1;
    }
    if ((c->flags & CF_CHUNKED) && c->chunk_state == CH_END) {
        conn_close(t, c, "server ended the stream", 0);
        return -1;
    }
    *res_off = s;
    *res_len = end - s;
    return 0;
}

/* ---- long-poll ------------------------------------------------------------------------------- */

/* Handles every complete response in b[0..len) and asks for the next one; returns the bytes
 * consumed or -1 if it closed c. */
static long
poll_responses(pb_sub_thread_t *t, pb_conn_t *c, const char *b, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        int status;
        long hl = pb_http_head(b + pos, len - pos, &status);
        if (hl == 0)
            break;
        size_t vlen;
        const char *v = hl > 0 ? pb_http_header(b + pos, (size_t)hl, "content-length", &vlen) : NULL;
        if (v == NULL) {
            t->res.protocol_errors++;
            conn_close(t, c, hl < 0 ? "bad response head" : "poll answer without Content-Length", 0);
            return -1;
        }
        size_t cl = (size_t)strtoull(v, NULL, 10);
        if (cl > PB_MAX_CARRY) {
            conn_close(t, c, "poll answer too large", 0);
            return -1;
        }
        if (len - pos - (size_t)hl < cl)
            break;
        const char *body = b + pos + hl;
        if (status != 200) {
            char why[32];
            snprintf(why, sizeof(why), "poll status %d", status);
            conn_close(t, c, why, 0);
            return -1;
        }
        size_t curlen;
        const char *cur = json_string(body, cl, "cursor", &curlen);
        if (cur != NULL)
            set_cursor(c, cur, curlen);
        if (pb_find(body, cl, "\"gaps\":[\"", 9) != NULL)
            t->res.gaps++;
        scan_markers(t, c, body, cl);
        pos += (size_t)hl + cl;
        if (send_request(t, c) != 0)
            return -1;
    }
    return (long)pos;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* Consumes buf[0..len), where buf[0..carried) came from c->carry. Leaves the bytes to carry to
 * the next read in *res_off and *res_len; returns 0, or -1 if c was closed. */
static int
process(pb_sub_thread_t *t, pb_conn_t *c, char *buf, size_t carried, size_t len, size_t *res_off, size_t *res_len)
{
    size_t pos = 0;
    if (c->state == CS_HANDSHAKE && pb_cfg->transport != PB_POLL) {
        int status;
        long hl = pb_http_head(buf, len, &status);
        if (hl == 0) {
            *res_off = 0;
            *res_len = len;
            return 0;
        }
        if (hl < 0) {
            conn_close(t, c, "bad response head", 0);
            return -1;
        }
        if (pb_cfg->transport == PB_SSE) {
            if (status != 200) {
                char why[32];
                snprintf(why, sizeof(why), "SSE status %d", status);
                conn_close(t, c, why, 0);
                return -1;
            }
            size_t vlen;
            const char *v = pb_http_header(buf, (size_t)hl, "transfer-encoding", &vlen);
            if (v != NULL && pb_find(v, vlen, "chunked", 7) != NULL)
                c->flags |= CF_CHUNKED;
        } else if (ws_check_handshake(t, c, buf, (size_t)hl, status) != 0) {
            return -1;
        }
        if (pb_cfg->ready_ack) {
            c->state = CS_WAIT_READY;
        } else {
            mark_ready(t, c);
        }
        pos = (size_t)hl;
        carried = pos; /* what follows the head is raw */
    }
    long used;
    switch (pb_cfg->transport) {
    case PB_WS:
    case PB_WS_DEFLATE:
        if ((used = ws_frames(t, c, buf + pos, len - pos)) < 0)
            return -1;
        *res_off = pos + (size_t)used;
        *res_len = len - *res_off;
        return 0;
    case PB_SSE:
        if (sse_body(t, c, buf + pos, carried - pos, len - pos, res_off, res_len) != 0)
            return -1;
        *res_off += pos;
        return 0;
    case PB_POLL:
    default:
        if ((used = poll_responses(t, c, buf, len)) < 0)
            return -1;
        *res_off = (size_t)used;
        *res_len = len - *res_off;
        return 0;
    }
}

/* t->buf[0..carried) came from c->carry, t->buf[carried..len) was just read: parses it and
 * keeps the incomplete tail as the new carry. Returns 0, or -1 if c was closed. */
static int
consume(pb_sub_thread_t *t, pb_conn_t *c, size_t carried, size_t len)
{
    free(c->carry);
    c->carry = NULL;
    c->carry_len = 0;
    t->now = pb_now_ns();
    size_t res_off, res_len;
    if (process(t, c, t->buf, carried, len, &res_off, &res_len) != 0)
        return -1;
    if (res_len != 0) {
        if (res_len > PB_MAX_CARRY) {
            t->res.protocol_errors++;
            conn_close(t, c, "incomplete frame, line or answer too large", 0);
            return -1;
        }
        c->carry = pb_malloc(res_len);
        memcpy(c->carry, t->buf + res_off, res_len);
        c->carry_len = (uint32_t)res_len;
    }
    return 0;
}

static void
on_readable(pb_sub_thread_t *t, pb_conn_t *c)
{
    /* Level-triggered: a few full buffers per event, then let the other connections run. */
    for (int round = 0; round != 4; ++round) {
        size_t carried = c->carry_len;
        if (carried != 0)
            memcpy(t->buf, c->carry, carried);
        ssize_t n = read(c->fd, t->buf + carried, PB_READ_BUF - carried);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_close(t, c, "read", errno);
            return;
        }
        if (n == 0) {
            conn_close(t, c, c->state == CS_OPEN ? "closed by server" : "closed during handshake", 0);
            return;
        }
        if (consume(t, c, carried, carried + (size_t)n) != 0)
            return;
        if ((size_t)n < PB_READ_BUF - carried)
            return;
    }
}

/* The TLS reader: every record OpenSSL holds (one SSL_read returns at most one record) goes
 * into the thread's buffer, which is parsed once per fill, until OpenSSL has nothing left. */
static void
on_tls_readable(pb_sub_thread_t *t, pb_conn_t *c)
{
    for (;;) {
        size_t carried = c->carry_len, len = carried;
        if (carried != 0)
            memcpy(t->buf, c->carry, carried);
        int e = SSL_ERROR_NONE;
        while (len < PB_READ_BUF) {
            size_t room = PB_READ_BUF - len;
            ERR_clear_error();
            int n = SSL_read(c->ssl, t->buf + len, room > INT_MAX ? INT_MAX : (int)room);
            if (n <= 0) {
                e = SSL_get_error(c->ssl, n);
                break;
            }
            len += (size_t)n;
            /* Nothing left inside OpenSSL: what is still in the socket wakes the level-triggered
             * epoll again, so stop here rather than pay a read() that only says EAGAIN. */
            if (!SSL_has_pending(c->ssl)) {
                e = SSL_ERROR_WANT_READ;
                break;
            }
        }
        if (len > carried && consume(t, c, carried, len) != 0)
            return;
        switch (e) {
        case SSL_ERROR_NONE: /* the buffer filled up: there may be more */
            continue;
        case SSL_ERROR_WANT_READ:
            return;
        case SSL_ERROR_ZERO_RETURN:
            conn_close(t, c, c->state == CS_OPEN ? "closed by server" : "closed during handshake", 0);
            return;
        default: {
            char err[256], why[300];
            snprintf(why, sizeof(why), "TLS read: %s", pb_tls_error(err, sizeof(err), e));
            conn_close(t, c, why, 0);
            return;
        }
        }
    }
}

static void
on_event(pb_sub_thread_t *t, pb_conn_t *c, uint32_t events)
{
    if (c->state == CS_CLOSED || c->state == CS_IDLE)
        return;
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t elen = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
            err = errno;
        if (err != 0) {
            conn_close(t, c, "connect", err);
            return;
        }
        on_connected(t, c);
        return;
    }
    (void)events; /* errors and hang-ups surface through read() (or the handshake) */
    if (c->state == CS_TLS)
        tls_step(t, c);
    else if (c->ssl != NULL)
        on_tls_readable(t, c);
    else
        on_readable(t, c);
}

/* ---- the loop -------------------------------------------------------------------------------- */

static void
end_connect_phase(pb_sub_thread_t *t, int timed_out)
{
    uint32_t never = t->nconns - t->next_start, stuck = t->pending;
    for (uint32_t i = 0; i != t->next_start; ++i)
        if (is_pending(&t->conns[i]))
            conn_close(t, &t->conns[i], NULL, 0);
    if (never != 0)
        atomic_fetch_add_explicit(&t->shared->failed, never, memory_order_relaxed);
    if (timed_out)
        fprintf(stderr, "pushedge-bench: thread %u: connect timeout, %u connections not ready\n", t->idx, never + stuck);
    for (uint32_t i = 0; i != t->nconns; ++i)
        if ((t->conns[i].flags & CF_READY) && t->conns[i].state != CS_CLOSED)
            atomic_fetch_add_explicit(&pb_ready_per_channel[t->conns[i].channel], 1, memory_order_relaxed);
    t->connect_phase = 0;
    atomic_store(&t->shared->connect_done, 1);
}

static void
connect_step(pb_sub_thread_t *t)
{
    uint64_t now = pb_now_ns();
    double rate = pb_cfg->connect_rate / pb_cfg->threads;
    uint64_t due = (uint64_t)((double)(now - t->phase_start_ns) / 1e9 * rate) + 1;
    while (t->next_start < t->nconns && t->next_start < due && t->pending < MAX_PENDING)
        conn_start(t, &t->conns[t->next_start++]);
    if (t->next_start == t->nconns && t->pending == 0)
        end_connect_phase(t, 0);
    else if (now >= t->deadline_ns)
        end_connect_phase(t, 1);
}

static uint64_t
churn_lifetime(pb_sub_thread_t *t)
{
    double u = (double)(rng_next(&t->rng) >> 11) * 0x1p-53;
    return (uint64_t)(pb_cfg->churn * (0.5 + u) * 1e9);
}

/* Closes the open connections whose lifetime is over and reconnects them with their position,
 * and restarts the dropped ones whose retry is due. Churn stops once the publishing is over, so
 * the drain can converge; retries go on (a dropped subscriber must still catch up). */
static void
churn_step(pb_sub_thread_t *t, uint64_t now)
{
    int closing = !atomic_load(&pb_pub.done);
    for (uint32_t i = 0; i != t->nconns; ++i) {
        pb_conn_t *c = &t->conns[i];
        if (c->state == CS_OPEN && closing) {
            if (c->due_ns == 0) {
                c->due_ns = now + churn_lifetime(t);
            } else if (now >= c->due_ns) {
                conn_release(t, c);
                c->state = CS_IDLE;
                t->res.churned++;
                conn_start(t, c);
            }
        } else if (c->state == CS_IDLE && c->due_ns != 0 && now >= c->due_ns) {
            c->due_ns = 0;
            conn_start(t, c);
        }
    }
}

static void *
sub_main(void *arg)
{
    pb_sub_thread_t *t = arg;
    struct epoll_event ev[MAX_EVENTS];
    t->phase_start_ns = pb_now_ns();
    t->deadline_ns = t->phase_start_ns + (uint64_t)(pb_cfg->connect_timeout * 1e9);
    t->connect_phase = 1;
    if (t->nconns == 0)
        end_connect_phase(t, 0);
    while (!atomic_load_explicit(&pb_stop, memory_order_relaxed)) {
        if (t->connect_phase)
            connect_step(t);
        else if (pb_cfg->churn > 0 && pb_now_ns() >= t->next_churn_scan) {
            t->next_churn_scan = pb_now_ns() + 20000000u;
            churn_step(t, pb_now_ns());
        }
        int n = epoll_wait(t->ep, ev, MAX_EVENTS, t->connect_phase ? 1 : 100);
        for (int i = 0; i < n; ++i)
            on_event(t, ev[i].data.ptr, ev[i].events);
        atomic_store_explicit(&t->shared->unique, t->res.unique, memory_order_relaxed);
        atomic_store_explicit(&t->shared->last_rx_ns, t->last_rx, memory_order_relaxed);
        atomic_store_explicit(&t->shared->reconnected, t->res.reconnected, memory_order_relaxed);
    }
    return NULL;
}

pb_sub_thread_t *
pb_sub_start(uint32_t idx, pb_shared_t *shared)
{
    pb_sub_thread_t *t = pb_malloc(sizeof(*t));
    memset(t, 0, sizeof(*t));
    t->idx = idx;
    t->shared = shared;
    t->rng = ((uint64_t)pb_cfg->run_id << 20) ^ idx;
    t->nconns = idx < pb_cfg->connections ? (pb_cfg->connections - idx + pb_cfg->threads - 1) / pb_cfg->threads : 0;
    t->conns = calloc(t->nconns != 0 ? t->nconns : 1, sizeof(pb_conn_t));
    t->buf = pb_malloc(PB_READ_BUF);
    if (pb_cfg->seq_hists != 0 && (t->res.seq_hist = calloc(pb_cfg->seq_hists, sizeof(pb_hist_t))) == NULL)
        pb_die("out of memory");
    if (t->conns == NULL)
        pb_die("out of memory");
    if (pb_cfg->tls)
        t->tls_ctx = pb_tls_ctx_new();
    for (uint32_t i = 0; i != t->nconns; ++i) {
        t->conns[i].fd = -1;
        t->conns[i].channel = (idx + i * pb_cfg->threads) % pb_cfg->channels;
    }
    if ((t->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        pb_die("epoll_create1: %s", strerror(errno));
    int r = pthread_create(&t->tid, NULL, sub_main, t);
    if (r != 0)
        pb_die("pthread_create: %s", strerror(r));
    return t;
}

void
pb_sub_join(pb_sub_thread_t *t, pb_result_t *res)
{
    pthread_join(t->tid, NULL);
    for (uint32_t i = 0; i != t->nconns; ++i) {
        pb_conn_t *c = &t->conns[i];
        if (c->flags & CF_READY) {
            uint64_t expected = atomic_load(&pb_pub.ok_per_channel[c->channel]);
            if (expected > c->unique)
                t->res.lost += expected - c->unique;
            else
                t->res.extra += c->unique - expected;
        }
        if (c->ssl != NULL)
            SSL_free(c->ssl);
        if (c->fd >= 0)
            close(c->fd);
        free(c->carry);
        free(c->frag);
        free(c->cursor);
    }
    *res = t->res;
    close(t->ep);
    if (t->z_ok)
        inflateEnd(&t->z);
    free(t->infl);
    free(t->buf);
    free(t->conns);
    pb_tls_ctx_free(t->tls_ctx);
    free(t);
}

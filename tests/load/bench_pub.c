/*
 * bench_pub.c: the publisher thread of pushedge-bench. It waits for the main thread's go (every
 * subscriber ready, RSS measured), then sends --messages POSTs at --rate per second over
 * --publishers HTTP/1.1 keep-alive connections, one request in flight per connection (no
 * pipelining: one in flight per connection bounds how far the server's storage order can differ
 * from the send order to the number of connections, which the subscribers' window relies on).
 *
 * Pacing. Message i is due at start + i / rate. When no connection is free the message waits,
 * so an overloaded server shows up as a lower achieved rate (publish_seconds), not as an
 * unbounded queue inside the generator. The send timestamp is taken when the request is built,
 * just before its write, so latency includes the server's publish path.
 *
 * Accounting. Only a 2xx answer counts a message as published: ok_per_channel is what every
 * subscriber of that channel is expected to receive.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "bench.h"

typedef struct st_pub_conn_t {
    int fd;           /* -1: broken and not reconnectable */
    int busy;         /* a request is in flight */
    uint32_t channel; /* of the request in flight */
    char *out;        /* the request: out_off of out_len bytes written */
    size_t out_len, out_off;
    char *in; /* the answer so far */
    size_t in_len, in_cap;
    uint64_t idle_since_ns; /* connected or last answered */
} pub_conn_t;

/* A paced publisher leaves its spare connections idle. A server closes an idle keep-alive
 * connection after a while (h2o: 10 s), and a POST sent just as it does is reset unanswered: a
 * failed publish that says nothing about the server. Browsers avoid it the same way, with a
 * shorter idle limit of their own. */
#define IDLE_REOPEN_NS (5 * 1000000000ull)

static pub_conn_t *conns;
static uint32_t nconns;
static int ep;
static uint32_t *next_seq; /* [channels]: the next seq per channel */
static unsigned logged;

static void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
log_error(const char *fmt, ...)
{
    if (logged++ >= 5 && !pb_cfg->verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("pushedge-bench: publish: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int
pub_connect(pub_conn_t *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Blocking connect: on loopback it completes or fails at once. */
    const struct sockaddr_in *to = pb_cfg->publish_redis ? &pb_cfg->redis_addr : &pb_cfg->target;
    if (connect(c->fd, (const struct sockaddr *)to, sizeof(*to)) != 0) {
        log_error("connect: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->idle_since_ns = pb_now_ns();
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Ends the request in flight (if any) as failed and opens a fresh connection. */
static void
pub_reset(pub_conn_t *c, const char *why)
{
    if (c->busy) {
        atomic_fetch_add(&pb_pub.errors, 1);
        log_error("%s with a request in flight", why);
    }
    c->busy = 0;
    c->in_len = 0;
    if (c->fd >= 0)
        close(c->fd);
    if (pub_connect(c) != 0 && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

static void
pub_flush(pub_conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                return;
            }
            pub_reset(c, "send failed");
            return;
        }
        c->out_off += (size_t)n;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
pub_send(pub_conn_t *c, uint64_t i)
{
    uint32_t ch = pb_cfg->publish_channel >= 0 ? (uint32_t)pb_cfg->publish_channel : (uint32_t)(i % pb_cfg->channels);
    uint32_t seq = next_seq[ch]++;
    char head[128];
    int hl =
        snprintf(head, sizeof(head), "{\"pe\":\"%u:%llu:%u\",\"pad\":\"", seq, (unsigned long long)pb_now_ns(), pb_cfg->run_id);
    /* Pad so the body is exactly --size bytes when it can be (the marker alone is ~45). */
    size_t pad = pb_cfg->size > (size_t)hl + 2 ? pb_cfg->size - (size_t)hl - 2 : 0;
    size_t body_len = (size_t)hl + pad + 2;
    const char *target = pb_cfg->pub_target[ch];
    size_t cap = strlen(target) + strlen(pb_cfg->host_hdr) + strlen(pb_cfg->channel[ch]) + body_len + 160;
    c->out = pb_realloc(c->out, cap);
    int rl;
    if (pb_cfg->publish_redis) {
        /* FCALL pushedge_publish 1 pe:{NAME} <json>: the function pushedge's own publish calls. */
        const char *name = pb_cfg->channel[ch];
        rl = snprintf(c->out, cap, "*5\r\n$5\r\nFCALL\r\n$16\r\npushedge_publish\r\n$1\r\n1\r\n$%zu\r\npe:{%s}\r\n$%zu\r\n",
                      strlen(name) + 5, name, body_len);
    } else {
        rl = snprintf(c->out, cap, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      target, pb_cfg->host_hdr, body_len);
    }
    char *p = c->out + rl;
    memcpy(p, head, (size_t)hl);
    memset(p + hl, 'x', pad);
    memcpy(p + hl + pad, "\"}", 2);
    c->out_len = (size_t)rl + body_len;
    if (pb_cfg->publish_redis) {
        memcpy(c->out + c->out_len, "\r\n", 2);
        c->out_len += 2;
    }
    c->out_off = 0;
    c->channel = ch;
    c->busy = 1;
    c->in_len = 0;
    atomic_fetch_add(&pb_pub.sent, 1);
    pub_flush(c);
}

/* Returns the length of a complete answer at the start of c->in, 0 if incomplete, -1 if bad. */
/* A RESP reply to FCALL: "$<n>\r\n<id>\r\n" (200) or "-ERR ...\r\n" (500). */
static long
redis_answer_length(pub_conn_t *c, int *status)
{
    const char *eol = pb_find(c->in, c->in_len, "\r\n", 2);
    if (eol == NULL)
        return 0;
    long head = eol + 2 - c->in;
    if (c->in[0] == '$') {
        *status = 200;
        long n = strtol(c->in + 1, NULL, 10);
        if (n < 0)
            return head;
        return (long)c->in_len >= head + n + 2 ? head + n + 2 : 0;
    }
    *status = 500; /* an error, or a reply of another type */
    return head;
}

static long
answer_length(pub_conn_t *c, int *status)
{
    if (pb_cfg->publish_redis)
        return redis_answer_length(c, status);
    long hl = pb_http_head(c->in, c->in_len, status);
    if (hl <= 0)
        return hl;
    size_t vlen;
    const char *v = pb_http_header(c->in, (size_t)hl, "content-length", &vlen);
    if (v != NULL) {
        size_t cl = (size_t)strtoull(v, NULL, 10);
        return c->in_len - (size_t)hl >= cl ? hl + (long)cl : 0;
    }
    v = pb_http_header(c->in, (size_t)hl, "transfer-encoding", &vlen);
    if (v != NULL && pb_find(v, vlen, "chunked", 7) != NULL) {
        /* Publish answers are short: finding the last-chunk marker is enough. */
        const char *body = c->in + hl;
        size_t blen = c->in_len - (size_t)hl;
        if (blen >= 5 && memcmp(body, "0\r\n\r\n", 5) == 0)
            return hl + 5;
        const char *end = pb_find(body, blen, "\r\n0\r\n\r\n", 7);
        return end != NULL ? (long)(end + 7 - c->in) : 0;
    }
    if (*status == 204 || *status == 304)
        return hl;
    /* No length: the body runs to the end of the connection (h2o answers a 413 this way). */
    v = pb_http_header(c->in, (size_t)hl, "connection", &vlen);
    return v != NULL && vlen == 5 && strncasecmp(v, "close", 5) == 0 ? -2 : -1;
}

/* Accounts the answer in c->in[0..alen) to the request in flight. */
static void
answer_done(pub_conn_t *c, int status, size_t alen)
{
    c->busy = 0;
    if (status >= 200 && status < 300) {
        atomic_fetch_add_explicit(&pb_pub.ok_per_channel[c->channel], 1, memory_order_relaxed);
        atomic_fetch_add(&pb_pub.ok, 1);
    } else {
        atomic_fetch_add(&pb_pub.errors, 1);
        long hl = pb_cfg->publish_redis ? 0 : pb_http_head(c->in, c->in_len, &status);
        int blen = (int)alen - (int)hl;
        log_error("status %d: %.*s", status, blen > 200 ? 200 : blen, c->in + hl);
    }
}

static void
pub_readable(pub_conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            c->in_cap = c->in_cap != 0 ? c->in_cap * 2 : 8192;
            if (c->in_cap > (1u << 20)) {
                pub_reset(c, "answer too large");
                return;
            }
            c->in = pb_realloc(c->in, c->in_cap);
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                char why[64];
                snprintf(why, sizeof(why), "read failed (%s)", strerror(errno));
                pub_reset(c, why);
            }
            return;
        }
        if (n == 0) {
            int status = 0;
            if (c->busy && c->in_len != 0 && answer_length(c, &status) == -2)
                answer_done(c, status, c->in_len);
            pub_reset(c, "server closed the connection");
            return;
        }
        c->in_len += (size_t)n;
        int status = 0;
        long alen = answer_length(c, &status);
        if (alen == 0 || alen == -2)
            continue;
        if (alen < 0 || !c->busy) {
            pub_reset(c, alen < 0 ? "bad answer" : "answer without request");
            return;
        }
        answer_done(c, status, (size_t)alen);
        c->idle_since_ns = pb_now_ns();
        size_t vlen;
        const char *v = pb_cfg->publish_redis ? NULL : pb_http_header(c->in, (size_t)alen, "connection", &vlen);
        if (v != NULL && vlen == 5 && strncasecmp(v, "close", 5) == 0)
            pub_reset(c, "connection: close");
        c->in_len = 0;
        return;
    }
}

static void *
pub_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&pb_pub.go))
        if (atomic_load(&pb_stop))
            goto Done;
        else
            usleep(1000);

    for (uint32_t i = 0; i != nconns; ++i)
        if (pub_connect(&conns[i]) != 0)
            pb_die("cannot connect the publisher to %s", pb_cfg->host_hdr);

    uint64_t start = pb_now_ns(), sent = 0, total = pb_cfg->messages;
    uint64_t stop_at = pb_cfg->duration > 0 ? start + (uint64_t)(pb_cfg->duration * 1e9) : UINT64_MAX;
    atomic_store(&pb_pub.start_ns, start);
    struct epoll_event ev[64];
    while (!atomic_load(&pb_stop)) {
        uint64_t now = pb_now_ns();
        if (now >= stop_at && total > sent)
            total = sent; /* --duration is over: publish nothing more, wait for the answers */
        uint64_t due = total;
        if (pb_cfg->rate > 0) {
            double d = (double)(now - start) / 1e9 * pb_cfg->rate + 1;
            due = d < (double)total ? (uint64_t)d : total;
        }
        int busy = 0;
        for (uint32_t i = 0; i != nconns; ++i) {
            pub_conn_t *c = &conns[i];
            if (!c->busy && c->fd >= 0 && sent < due && now - c->idle_since_ns > IDLE_REOPEN_NS)
                pub_reset(c, NULL);
            if (!c->busy && c->fd >= 0 && sent < due)
                pub_send(c, sent++);
            busy += c->busy;
        }
        if (sent == total && busy == 0)
            break;
        int timeout = 100;
        if (sent < due) {
            timeout = 100; /* every connection busy: wait for an answer */
        } else if (pb_cfg->rate > 0 && sent < total) {
            uint64_t next = start + (uint64_t)((double)sent / pb_cfg->rate * 1e9);
            /* Round up: a 0 ms timeout would spin the core the subscribers need. */
            timeout = next > now ? (int)((next - now + 999999) / 1000000) : 0;
            if (timeout > 100)
                timeout = 100;
        }
        int n = epoll_wait(ep, ev, 64, timeout);
        for (int i = 0; i < n; ++i) {
            pub_conn_t *c = ev[i].data.ptr;
            if (c->fd < 0)
                continue;
            if ((ev[i].events & EPOLLOUT) && c->out_off < c->out_len)
                pub_flush(c);
            if (c->fd >= 0 && (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                pub_readable(c);
        }
    }
    atomic_store(&pb_pub.end_ns, pb_now_ns());
Done:
    for (uint32_t i = 0; i != nconns; ++i) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        free(conns[i].out);
        free(conns[i].in);
    }
    atomic_store(&pb_pub.done, 1);
    return NULL;
}

int
pb_pub_start(pthread_t *tid)
{
    nconns = pb_cfg->publishers;
    conns = calloc(nconns, sizeof(*conns));
    next_seq = calloc(pb_cfg->channels, sizeof(*next_seq));
    if (conns == NULL || next_seq == NULL)
        pb_die("out of memory");
    for (uint32_t i = 0; i != nconns; ++i)
        conns[i].fd = -1;
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return -1;
    return pthread_create(tid, NULL, pub_main, NULL);
}

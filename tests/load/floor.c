/*
 * pushedge-floor: the physical floor of fan-out on this machine. It plays the server side of a
 * pushedge-bench run as cheaply as a program can, so that what it costs is what the kernel
 * costs: one write() per subscriber socket per message, nothing else.
 *
 *   taskset -c 0 build-rel/tests/load/pushedge-floor --listen 127.0.0.1:18090 &
 *   taskset -c 1 build-rel/tests/load/pushedge-bench --url http://127.0.0.1:18090 --threads 1 \
 *       --transport ws --connections 10000 --messages 20 --rate 2 --server-pid $!
 *
 * What it speaks, exactly as much as pushedge-bench needs with its default (pushedge) paths:
 *  - GET /ws?channel=X with Upgrade: websocket: a 101 with Sec-WebSocket-Accept (no extensions),
 *    then {"op":"subscribed","channel":"X"} (pushedge's ack, which the bench waits for).
 *    Anything the client sends afterwards (pongs, close) is read and dropped.
 *  - GET /sse?channel=X: 200 text/event-stream (no chunking, the stream ends with the
 *    connection), then "id: 0" + blank line (pushedge's "live" marker).
 *  - POST /api/publish?channel=X with a Content-Length body, keep-alive: the body goes as one
 *    unmasked text frame (or "data: <body>\n\n") to every subscriber of X, one write() each, in
 *    a tight loop; then 200 {"channel":"X","id":"<ms>-<seq>"}.
 *  - GET /healthz: 200.
 * The body is sent as it came: no envelope, no history, no JSON check. A write that does not
 * take the whole frame is counted (stderr, at exit) and the rest dropped: no queues either.
 * Single-threaded, level-triggered epoll; SIGTERM/SIGINT exit at once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQ_MAX (1u << 20) /* largest request (head + body) accepted */
#define NBUCKETS 16384

enum { K_REQ, K_WS, K_SSE }; /* a connection still reading requests, or a subscriber */

typedef struct channel channel_t;

typedef struct conn {
    int fd, kind;
    char *in; /* K_REQ: request bytes so far (heap); NULL for subscribers */
    size_t in_len, in_cap;
    channel_t *ch; /* subscribers: their channel, and their index in ch->subs */
    size_t idx;
} conn_t;

struct channel {
    struct channel *next;
    char *name;
    conn_t **subs;
    size_t nsubs, cap;
};

static channel_t *buckets[NBUCKETS];
static int ep;
static unsigned long long seq, short_writes, dropped_subs, published;
static volatile sig_atomic_t stop;

static void *
xrealloc(void *p, size_t n)
{
    if ((p = realloc(p, n)) == NULL) {
        fputs("pushedge-floor: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static channel_t *
channel_get(const char *name, size_t len, int create)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i != len; ++i)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    channel_t **pp = &buckets[h % NBUCKETS];
    for (channel_t *c = *pp; c != NULL; c = c->next)
        if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
            return c;
    if (!create)
        return NULL;
    channel_t *c = xrealloc(NULL, sizeof(*c));
    *c = (channel_t){.next = *pp, .name = strndup(name, len)};
    *pp = c;
    return c;
}

static void
conn_close(conn_t *c)
{
    if (c->ch != NULL) { /* swap-remove from the channel's array */
        conn_t *last = c->ch->subs[--c->ch->nsubs];
        c->ch->subs[c->idx] = last;
        last->idx = c->idx;
    }
    close(c->fd);
    free(c->in);
    free(c);
}

static void
send_all(int fd, const char *p, size_t len)
{
    /* Answers are small and their socket's buffer is empty: a short write is not worth a queue. */
    if (write(fd, p, len) != (ssize_t)len)
        short_writes++;
}

static void
reply(conn_t *c, const char *status, const char *body)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", status,
                     strlen(body), body);
    send_all(c->fd, buf, (size_t)n);
}

/* The value of header "name" in the head, or NULL; *vlen gets its length. */
static const char *
header(const char *head, size_t hlen, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *p = memchr(head, '\n', hlen); p != NULL && (size_t)(p + 1 - head) < hlen;
         p = memchr(p + 1, '\n', hlen - (size_t)(p + 1 - head))) {
        const char *l = p + 1, *end = memchr(l, '\n', hlen - (size_t)(l - head));
        if (end == NULL || (size_t)(end - l) <= nl || strncasecmp(l, name, nl) != 0 || l[nl] != ':')
            continue;
        const char *v = l + nl + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
            ++v;
        const char *e = end;
        while (e > v && (e[-1] == '\r' || e[-1] == ' '))
            --e;
        *vlen = (size_t)(e - v);
        return v;
    }
    return NULL;
}

/* channel=X from the request target; returns its length (0: absent). */
static size_t
query_channel(const char *target, size_t tlen, const char **out)
{
    for (const char *p = target + 1; p + 8 <= target + tlen; ++p)
        if ((p[-1] == '?' || p[-1] == '&') && memcmp(p, "channel=", 8) == 0) {
            *out = p + 8;
            size_t n = 0;
            while (p + 8 + n < target + tlen && p[8 + n] != '&')
                ++n;
            return n;
        }
    return 0;
}

/* Answers the upgrade or SSE request and makes c a subscriber; returns -1 if it closed c. */
static int
subscribe(conn_t *c, int kind, const char *name, size_t nlen, const char *head, size_t hlen)
{
    char buf[512];
    int n;
    if (kind == K_WS) {
        size_t klen;
        const char *key = header(head, hlen, "sec-websocket-key", &klen);
        if (key == NULL || klen > 64) {
            reply(c, "400 Bad Request", "{\"error\":\"no Sec-WebSocket-Key\"}");
            conn_close(c);
            return -1;
        }
        char cat[128], accept[32];
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen;
        memcpy(cat, key, klen);
        memcpy(cat + klen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
        EVP_Digest(cat, klen + 36, md, &mdlen, EVP_sha1(), NULL);
        EVP_EncodeBlock((unsigned char *)accept, md, (int)mdlen);
        int ack = snprintf(cat, sizeof(cat), "{\"op\":\"subscribed\",\"channel\":\"%.*s\"}", (int)(nlen > 90 ? 90 : nlen), name);
        n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n%c%c%s",
                     accept, 0x81, ack, cat);
    } else {
        n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     "Connection: close\r\n\r\nid: 0\n\n");
    }
    channel_t *ch = channel_get(name, nlen, 1);
    if (ch->nsubs == ch->cap) {
        ch->cap = ch->cap != 0 ? ch->cap * 2 : 16;
        ch->subs = xrealloc(ch->subs, ch->cap * sizeof(*ch->subs));
    }
    c->ch = ch;
    c->idx = ch->nsubs;
    ch->subs[ch->nsubs++] = c;
    c->kind = kind;
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    send_all(c->fd, buf, (size_t)n);
    return 0;
}

/* The fan-out itself: one frame built once, one write() per subscriber. */
static void
publish(conn_t *c, const char *name, size_t nlen, const char *body, size_t blen)
{
    channel_t *ch = channel_get(name, nlen, 0);
    size_t nsubs = ch != NULL ? ch->nsubs : 0;
    if (nsubs != 0) {
        uint8_t hdr[10];
        size_t hl = 2;
        hdr[0] = 0x81;
        if (blen < 126) {
            hdr[1] = (uint8_t)blen;
        } else if (blen < 65536) {
            hdr[1] = 126, hdr[2] = (uint8_t)(blen >> 8), hdr[3] = (uint8_t)blen, hl = 4;
        } else {
            hdr[1] = 127, hl = 10;
            for (int i = 0; i != 8; ++i)
                hdr[2 + i] = (uint8_t)((uint64_t)blen >> (56 - 8 * i));
        }
        char *ws = xrealloc(NULL, hl + blen), *sse = xrealloc(NULL, blen + 8);
        memcpy(ws, hdr, hl);
        memcpy(ws + hl, body, blen);
        memcpy(sse, "data: ", 6);
        memcpy(sse + 6, body, blen);
        memcpy(sse + 6 + blen, "\n\n", 2);
        for (size_t i = 0; i != nsubs; ++i) {
            conn_t *s = ch->subs[i];
            const char *p = s->kind == K_WS ? ws : sse;
            size_t len = s->kind == K_WS ? hl + blen : blen + 8;
            if (write(s->fd, p, len) != (ssize_t)len)
                short_writes++;
        }
        free(ws);
        free(sse);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char out[320];
    snprintf(out, sizeof(out), "{\"channel\":\"%.*s\",\"id\":\"%lld-%llu\"}", (int)(nlen > 200 ? 200 : nlen), name,
             (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, seq++);
    published++;
    reply(c, "200 OK", out);
}

/* Handles every complete request in c->in (pipelined publishes included); stops at a
 * subscription, after which the connection is read no more as requests. */
static void
requests(conn_t *c)
{
    size_t pos = 0;
    while (pos < c->in_len) {
        char *head = c->in + pos, *eoh = NULL;
        size_t avail = c->in_len - pos;
        for (size_t i = 3; i < avail && eoh == NULL; ++i)
            if (memcmp(head + i - 3, "\r\n\r\n", 4) == 0)
                eoh = head + i + 1;
        if (eoh == NULL)
            break;
        size_t hlen = (size_t)(eoh - head), clen = 0, vlen;
        const char *v = header(head, hlen, "content-length", &vlen);
        if (v != NULL)
            clen = strtoul(v, NULL, 10);
        if (clen > REQ_MAX) {
            conn_close(c);
            return;
        }
        if (avail - hlen < clen)
            break;
        const char *sp1 = memchr(head, ' ', hlen), *sp2 = sp1 ? memchr(sp1 + 1, ' ', hlen - (size_t)(sp1 + 1 - head)) : NULL;
        if (sp2 == NULL) {
            conn_close(c);
            return;
        }
        const char *target = sp1 + 1, *name = NULL;
        size_t tlen = (size_t)(sp2 - target), plen = strcspn(target, "? ");
        size_t nlen = query_channel(target, tlen, &name);
        pos += hlen + clen;
        if (strncmp(head, "POST ", 5) == 0 && plen == 12 && memcmp(target, "/api/publish", 12) == 0 && nlen != 0) {
            publish(c, name, nlen, eoh, clen);
        } else if (strncmp(head, "GET ", 4) == 0 && plen == 3 && memcmp(target, "/ws", 3) == 0 && nlen != 0) {
            subscribe(c, K_WS, name, nlen, head, hlen);
            return;
        } else if (strncmp(head, "GET ", 4) == 0 && plen == 4 && memcmp(target, "/sse", 4) == 0 && nlen != 0) {
            subscribe(c, K_SSE, name, nlen, head, hlen);
            return;
        } else if (strncmp(head, "GET ", 4) == 0 && plen == 8 && memcmp(target, "/healthz", 8) == 0) {
            reply(c, "200 OK", "{\"status\":\"ok\"}");
        } else {
            reply(c, "404 Not Found", "{\"error\":\"not_found\"}");
        }
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void
on_readable(conn_t *c)
{
    if (c->kind != K_REQ) {
        char sink[4096]; /* a subscriber's pongs and close frames: dropped */
        ssize_t n = read(c->fd, sink, sizeof(sink));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            dropped_subs++;
            conn_close(c);
        }
        return;
    }
    if (c->in_cap - c->in_len < 4096) {
        c->in_cap = c->in_cap != 0 ? c->in_cap * 2 : 8192;
        if (c->in_cap > 2 * REQ_MAX) {
            conn_close(c);
            return;
        }
        c->in = xrealloc(c->in, c->in_cap);
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    if (n > 0) {
        c->in_len += (size_t)n;
        requests(c);
    }
}

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int
main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:18090";
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_at = argv[++i];
        } else {
            fprintf(stderr, "usage: pushedge-floor [--listen HOST:PORT]  (see tests/load/floor.c)\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    char host[64];
    const char *colon = strrchr(listen_at, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (colon == NULL || (size_t)(colon - listen_at) >= sizeof(host) || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
        fprintf(stderr, "pushedge-floor: invalid value for --listen: %s\n", listen_at);
        return 2;
    }
    memcpy(host, listen_at, (size_t)(colon - listen_at));
    host[colon - listen_at] = '\0';
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "pushedge-floor: invalid value for --listen: %s\n", listen_at);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sig = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGTERM, &sig, NULL);
    sigaction(SIGINT, &sig, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4096) != 0) {
        fprintf(stderr, "pushedge-floor: cannot listen on %s: %s\n", listen_at, strerror(errno));
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "pushedge-floor: listening on %s\n", listen_at);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; ++i) {
            conn_t *c = evs[i].data.ptr;
            if (c != NULL) {
                on_readable(c);
                continue;
            }
            int fd;
            while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                c = xrealloc(NULL, sizeof(*c));
                *c = (conn_t){.fd = fd, .kind = K_REQ};
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
            }
        }
    }
    fprintf(stderr, "pushedge-floor: %llu published, %llu short writes, %llu subscribers closed by peers\n", published,
            short_writes, dropped_subs);
    return 0;
}

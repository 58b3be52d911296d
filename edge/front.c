/*
 * front.c: request heads checked before h2o reads their bodies (docs/security.md).
 *
 * h2o 2.2 calls the handler only once a request's whole body is in memory (HTTP/1: the entity
 * reader of lib/http1.c; HTTP/2: the stream's _req_body, up to max_request_entity_size, 100
 * streams a connection). Refusing a publish without credentials in the handler therefore
 * comes after the memory is spent. This file sits between the event loop and h2o's parsers
 * and refuses, from the head alone, (1) HTTP/1 framing that proxies and h2o could read
 * differently, and (2) any request body whose sender may not publish (pe_auth_check: only the
 * publish endpoints take bodies, so the rule needs no routing).
 *
 * HTTP/1. h2o parses the current request from offset 0 of sock->input and consumes its bytes
 * only after the response (lib/http1.c on_send_complete), and it reads through the socket's
 * read callback, which we wrap: on every read, before h2o sees the new bytes, a complete head
 * at offset 0 is checked once. A refused head is replaced in place by a bodiless request of
 * the same length ("GET /!NN///... HTTP/1.1", NN naming the reason) and the body bytes read so
 * far are dropped, so h2o dispatches at once and pe_front_on_req answers with the JSON error
 * and Connection: close. Keeping the length keeps h2o's incremental parse (it resumes the
 * search for the blank line at its previous length) valid.
 * h2o re-arms its own callback (h2o_socket_read_start) after every response and after
 * "100 Continue", replacing the wrap. The request pool's dispose hook (registered in
 * pe_front_on_req, run inside on_send_complete just before h2o re-arms) schedules a rewrap on
 * the zero timeout, which runs before the loop polls for new input in the usual case. When a
 * complete head is already buffered at rewrap time (pipelining, or a read that slipped
 * through), h2o has parsed it: it is checked at once, and a refused one closes the
 * connection without an answer. pe_front_on_req also re-reads the raw head of every request
 * it dispatches, so a framing fault is answered 400 even if it got past the wrap.
 * Bounds: a refused body costs what one read (at most two around a rewrap) took from the
 * kernel, freed at once.
 *
 * HTTP/2 (prior knowledge; "Upgrade: h2c" is renamed away in the head, so the client stays on
 * HTTP/1.1). After each read h2o has
 * decoded the HEADERS it got; a request still receiving its body at two checks in a row
 * (after two reads, or a read and a sweep) whose sender may not publish closes the connection (h2o's own error path frees every
 * stream's buffer). h2o 2.2 installs no header that reaches a single stream (http2_internal.h needs the uninstalled khash.h), so
 * the stream cannot be reset alone: an honest client publishes with its credentials and is
 * never cut. h2o stops and restarts reading by itself (write back-pressure), dropping the
 * wrap: a 100 ms sweep of the thread's HTTP/2 connections rewraps and checks. Bound: what two
 * reads (or 100 ms) bring, not the 100 streams x --max-message-size a connection may hold.
 * Cost: h2o lists HTTP/2 requests per thread only, so a check walks the thread's HTTP/2
 * requests; it runs after reads that carry DATA or a HEADERS announcing a body, and on the
 * sweep (one walk for all connections).
 *
 * TLS listeners (edge/tls.c): h2o decrypts inside its socket and calls the read callback with
 * the clear bytes in sock->input, so the same wrap applies; tls.c attaches it once the
 * handshake is done and h2o's HTTP/1 or HTTP/2 reader is installed (pe_front_attach_tls).
 *
 * Lifetime: one pe_front_t per accepted socket, found by descriptor (fronts[]), freed by the
 * socket's on_close hook (chained: an earlier hook is called first).
 */
#include <sys/resource.h>
#include "pubsub/alloc.h"
#include "edge/util/log.h"
#include "edge/front.h"
#include "edge/core/thread.h"
#include "edge/core/http.h"
#include "edge/core/auth.h"
#include <h2o/http2.h>

/* picohttpparser, as built into libh2o (h2o 2.2 does not install its header). */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method, size_t *method_len, const char **path, size_t *path_len,
                      int *minor_version, struct phr_header *headers, size_t *num_headers, size_t last_len);

enum { STATE_HEAD, STATE_HEAD_OK, STATE_REFUSED, STATE_DRAIN, STATE_H2 };

struct st_pe_front_t {
    pe_thread_t *thr;
    h2o_socket_t *sock;
    int fd;
    int state;
    h2o_socket_cb h2o_read; /* h2o's callback our wrap forwards to */
    void (*prev_close_cb)(void *data);
    void *prev_close_data;
    h2o_timeout_entry_t rewrap_entry; /* also the idle bound of STATE_DRAIN */
    size_t drained;
    /* HTTP/2 requests without credentials seen waiting for their body at the previous check */
    h2o_req_t *h2_suspects[PE_FRONT_H2_SUSPECTS];
    size_t num_h2_suspects;
    h2o_req_t *h2_next[PE_FRONT_H2_SUSPECTS]; /* the suspects found by the running check */
    size_t num_h2_next;
    unsigned h2_refuse : 1;
    h2o_linklist_t h2_link; /* pe_front_thread_t.h2 */
    unsigned in_callback : 1;
    unsigned closed : 1;
};

/* h2o's HTTP/1 read callback (static in lib/http1.c), learnt from the first accept; read with
 * h1_cb() (any thread may be the first). */
static h2o_socket_cb h1_read_cb;
static pe_front_t **fronts;
static size_t num_fronts;

static h2o_socket_cb
h1_cb(void)
{
    return __atomic_load_n(&h1_read_cb, __ATOMIC_RELAXED);
}

/* ---- the reasons ----------------------------------------------------------------------------- */

/* 400s first, then one per pe_auth_t; the index travels in the rewritten head. */
enum {
    REASON_OK = 0,
    REASON_BARE_LF,
    REASON_OBS_FOLD,
    REASON_CL_TWICE,
    REASON_CL_BAD,
    REASON_TE_TWICE,
    REASON_TE_NOT_CHUNKED,
    REASON_TE_AND_CL,
    REASON_TE_HTTP10,
    REASON_AUTH /* + pe_auth_t */
};
static const char *const framing_messages[REASON_AUTH] = {
    NULL,
    "a header line ends in a bare LF",
    "obsolete line folding (a header line starting with a space)",
    "more than one Content-Length",
    "Content-Length must be digits only",
    "more than one Transfer-Encoding",
    "Transfer-Encoding must be exactly chunked",
    "Content-Length together with Transfer-Encoding",
    "Transfer-Encoding in an HTTP/1.0 request",
};

int
pe_front_check_framing(const char *head, size_t head_len, const void *_headers, size_t num_headers, int minor_version,
                       int *has_body)
{
    const struct phr_header *headers = _headers;
    size_t num_cl = 0, num_te = 0;
    const struct phr_header *cl = NULL, *te = NULL;
    *has_body = 0;
    for (size_t i = 0; i != head_len; ++i)
        if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r'))
            return REASON_BARE_LF;
    for (size_t i = 0; i != num_headers; ++i) {
        const struct phr_header *h = headers + i;
        if (h->name == NULL)
            return REASON_OBS_FOLD;
        if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("content-length"))) {
            ++num_cl;
            cl = h;
        } else if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("transfer-encoding"))) {
            ++num_te;
            te = h;
        }
    }
    if (num_cl > 1)
        return REASON_CL_TWICE;
    if (num_te > 1)
        return REASON_TE_TWICE;
    if (te != NULL) {
        if (cl != NULL)
            return REASON_TE_AND_CL;
        if (minor_version == 0)
            return REASON_TE_HTTP10;
        if (!h2o_lcstris(te->value, te->value_len, H2O_STRLIT("chunked")))
            return REASON_TE_NOT_CHUNKED;
        *has_body = 1;
    }
    if (cl != NULL) {
        if (cl->value_len == 0 || cl->value_len > 19)
            return REASON_CL_BAD;
        int nonzero = 0;
        for (size_t i = 0; i != cl->value_len; ++i) {
            if (cl->value[i] < '0' || cl->value[i] > '9')
                return REASON_CL_BAD;
            nonzero |= cl->value[i] != '0';
        }
        *has_body = nonzero;
    }
    return REASON_OK;
}

/* Parses the head at the start of buf. Returns its length (>0), -1 if h2o will refuse it
 * itself (or it is the HTTP/2 preface), -2 if incomplete; *reason as above. */
static int
check_head(pe_front_t *front, char *buf, size_t len, int *reason, int rename_h2c, int *h2c)
{
    const char *method, *path;
    size_t method_len, path_len, num_headers = H2O_MAX_HEADERS;
    int minor_version, has_body;
    struct phr_header headers[H2O_MAX_HEADERS];
    if (len > H2O_MAX_REQLEN)
        len = H2O_MAX_REQLEN;
    int head_len = phr_parse_request(buf, len, &method, &method_len, &path, &path_len, &minor_version, headers, &num_headers, 0);
    if (head_len <= 0)
        return head_len;
    /* "Upgrade: h2c" (h2o switches on exactly h2c, h2c-14, h2c-16): the HTTP/2 that follows
     * would start in a write callback, out of this file's sight. */
    for (size_t i = 0; i != num_headers; ++i)
        if (headers[i].name != NULL && h2o_lcstris(headers[i].name, headers[i].name_len, H2O_STRLIT("upgrade")) &&
            headers[i].value_len >= 3 && h2o_lcstris(headers[i].value, 3, H2O_STRLIT("h2c"))) {
            /* Renamed in place (same length) before h2o reads it: the client keeps HTTP/1.1. */
            if (rename_h2c)
                memcpy((char *)headers[i].name, "x-h2c-u", 7);
            else
                *h2c = 1;
        }
    *reason = pe_front_check_framing(buf, (size_t)head_len, headers, num_headers, minor_version, &has_body);
    if (*reason != REASON_OK || !has_body)
        return head_len;
    pe_auth_view_t view;
    memset(&view, 0, offsetof(pe_auth_view_t, _buf));
    for (size_t i = 0; i != num_headers; ++i) {
        /* names compare lower-case in pe_auth_view_add; h2o lower-cases them in place later */
        char lc[32];
        if (headers[i].name_len < sizeof(lc)) {
            for (size_t j = 0; j != headers[i].name_len; ++j)
                lc[j] = h2o_tolower(headers[i].name[j]);
            pe_auth_view_add(&view, lc, headers[i].name_len, headers[i].value, headers[i].value_len);
        }
    }
    view.peer_len = h2o_socket_getpeername(front->sock, (struct sockaddr *)&view.peer);
    pe_auth_t r = pe_auth_check_publisher(front->thr->server->cfg, &view);
    if (r != PE_AUTH_OK)
        *reason = REASON_AUTH + r;
    return head_len;
}

/* Replaces the head by "GET /!NN//// HTTP/1.1\r\n\r\n" of the same length and drops the body
 * read so far (see the top). Heads with a fault are longer than the 21-byte minimum. */
static int
rewrite_head(h2o_buffer_t *input, size_t head_len, int reason)
{
    static const char tail[] = " HTTP/1.1\r\n\r\n";
    size_t fixed = 8 + sizeof(tail) - 1;
    if (head_len < fixed)
        return -1;
    char *p = input->bytes;
    memcpy(p, "GET /!", 6);
    p[6] = (char)('0' + reason / 10);
    p[7] = (char)('0' + reason % 10);
    memset(p + 8, '/', head_len - fixed);
    memcpy(p + head_len - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    input->size = head_len;
    return 0;
}

/* ---- the wrap -------------------------------------------------------------------------------- */

static void on_read(h2o_socket_t *sock, const char *err);
static void drain(pe_front_t *front, const char *err);
static void h2_check(pe_front_t *front);
static int h2_input_may_carry_body(h2o_socket_t *sock);

static pe_front_t *
front_of(h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock);
    if (fd < 0 || (size_t)fd >= num_fronts)
        return NULL;
    pe_front_t *front = __atomic_load_n(&fronts[fd], __ATOMIC_ACQUIRE);
    return front != NULL && front->sock == sock ? front : NULL;
}

static void
front_free(pe_front_t *front)
{
    if (h2o_timeout_is_linked(&front->rewrap_entry))
        h2o_timeout_unlink(&front->rewrap_entry);
    if (h2o_linklist_is_linked(&front->h2_link))
        h2o_linklist_unlink(&front->h2_link);
    pe_front_t *expected = front;
    __atomic_compare_exchange_n(&fronts[front->fd], &expected, NULL, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    pe_free(front);
}

static void
on_socket_close(void *data)
{
    pe_front_t *front = data;
    if (front->prev_close_cb != NULL)
        front->prev_close_cb(front->prev_close_data);
    front->sock = NULL;
    if (front->in_callback)
        front->closed = 1; /* freed when the callback returns */
    else
        front_free(front);
}

/* Calls h2o's callback; returns -1 if the socket was closed inside (front is freed). */
static int
forward(pe_front_t *front, h2o_socket_cb cb, const char *err)
{
    front->in_callback = 1;
    cb(front->sock, err);
    front->in_callback = 0;
    if (front->closed) {
        front_free(front);
        return -1;
    }
    return 0;
}

static void
wrap(pe_front_t *front)
{
    front->h2o_read = front->sock->_cb.read;
    front->sock->_cb.read = on_read;
}

static void
schedule_h2_sweep(pe_thread_t *thr)
{
    if (!h2o_timeout_is_linked(&thr->front.sweep_entry))
        h2o_timeout_link(thr->loop, &thr->ctx.hundred_ms_timeout, &thr->front.sweep_entry);
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    pe_front_t *front = front_of(sock);
    assert(front != NULL);
    h2o_socket_cb cb = front->h2o_read;

    if (front->state == STATE_DRAIN) {
        drain(front, err);
        return;
    }
    if (front->state == STATE_H2) {
        int check = err == NULL && (front->num_h2_suspects != 0 || h2_input_may_carry_body(sock));
        if (forward(front, cb, err) == 0 && check)
            h2_check(front);
        return;
    }
    if (err == NULL && front->state == STATE_HEAD) {
        int reason = REASON_OK, h2c = 0, head_len = check_head(front, sock->input->bytes, sock->input->size, &reason, 1, &h2c);
        if (head_len > 0) {
            if (reason == REASON_OK) {
                front->state = STATE_HEAD_OK;
            } else if (rewrite_head(sock->input, (size_t)head_len, reason) == 0) {
                front->state = STATE_REFUSED;
                PE_STAT_ADD(front->thr->stats.front_refused, 1);
            } else {
                err = "pushedge: refused request head";
            }
        }
    }
    if (forward(front, cb, err) != 0)
        return;
    /* h2o switched to HTTP/2 on the preface ("PRI * HTTP/2.0"): the only other protocol an
     * HTTP/1 read can lead to (h2c upgrades are renamed away, and WebSocket and SSE take the
     * socket over in write callbacks). */
    h2o_socket_cb now = front->sock->_cb.read;
    if (now != NULL && now != on_read && now != h1_cb()) {
        front->state = STATE_H2;
        wrap(front);
        h2o_linklist_insert(&front->thr->front.h2, &front->h2_link);
        schedule_h2_sweep(front->thr);
        h2_check(front);
    }
}

static void
on_drain_idle(h2o_timeout_entry_t *entry)
{
    pe_front_t *front = H2O_STRUCT_FROM_MEMBER(pe_front_t, rewrap_entry, entry);
    if (front->sock != NULL && front->sock->_cb.read == on_read)
        forward(front, front->h2o_read, "pushedge: refused request drained");
}

/*
 * A refused request's answer is out; its body may still be on its way. Closing now would make
 * the kernel reset the connection (unread data), and a reset can destroy the answer before the
 * client reads it. So the input is read and dropped, never parsed, until the peer is quiet
 * for a second, ends, or sends PE_FRONT_DRAIN_BYTES; then h2o closes. h2o's request timeout
 * (10 s) bounds the time.
 */
static void
drain(pe_front_t *front, const char *err)
{
    h2o_socket_t *sock = front->sock;
    front->drained += sock->input->size;
    /* Dropped and given back: a read may have grown the buffer to a megabyte. */
    pe_socket_release_input(sock, 1);
    if (err != NULL || front->drained > PE_FRONT_DRAIN_BYTES) {
        forward(front, front->h2o_read, err != NULL ? err : "pushedge: refused request drained");
        return;
    }
    if (h2o_timeout_is_linked(&front->rewrap_entry))
        h2o_timeout_unlink(&front->rewrap_entry);
    front->rewrap_entry.cb = on_drain_idle;
    h2o_timeout_link(front->thr->loop, &front->thr->ctx.one_sec_timeout, &front->rewrap_entry);
}

static void
start_drain(pe_front_t *front)
{
    front->state = STATE_DRAIN;
    drain(front, NULL);
}

/* Runs on the zero timeout after a request was disposed: h2o has re-armed its callback. */
static void
on_rewrap(h2o_timeout_entry_t *entry)
{
    pe_front_t *front = H2O_STRUCT_FROM_MEMBER(pe_front_t, rewrap_entry, entry);
    h2o_socket_t *sock = front->sock;
    if (sock == NULL || sock->_cb.read != h1_cb())
        return; /* closed, dispatched again (the next dispose rewraps), or taken over (WebSocket) */
    wrap(front);
    if (front->state == STATE_REFUSED) {
        start_drain(front);
        return;
    }
    front->state = STATE_HEAD;
    int reason = REASON_OK, h2c = 0;
    if (check_head(front, sock->input->bytes, sock->input->size, &reason, 0, &h2c) <= 0)
        return; /* h2o has not seen a complete head yet: the wrap sees it first */
    /* h2o parsed this head already and may be reading its body: too late for an answer, the
     * input is dropped from now on (the answers before it still reach the client). */
    front->state = STATE_HEAD_OK;
    if (reason != REASON_OK || h2c) {
        PE_STAT_ADD(front->thr->stats.front_refused, 1);
        start_drain(front);
    }
}

static void
on_req_dispose(void *p)
{
    pe_front_t *front = *(pe_front_t **)p;
    if (front->sock == NULL || front->state == STATE_H2 || front->state == STATE_DRAIN ||
        h2o_timeout_is_linked(&front->rewrap_entry))
        return;
    front->rewrap_entry.cb = on_rewrap;
    h2o_timeout_link(front->thr->loop, &front->thr->ctx.zero_timeout, &front->rewrap_entry);
}

/* ---- HTTP/2 ---------------------------------------------------------------------------------- */

/* Whether the unprocessed input holds a DATA frame or a HEADERS frame that announces a body
 * (no END_STREAM): only then can a read start buffering a body, and the (thread-wide) scan
 * below is worth running. */
static int
h2_input_may_carry_body(h2o_socket_t *sock)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const unsigned char *p = (const unsigned char *)sock->input->bytes, *end = p + sock->input->size;
    if ((size_t)(end - p) >= sizeof(preface) - 1 && memcmp(p, preface, sizeof(preface) - 1) == 0)
        p += sizeof(preface) - 1;
    while (end - p >= 9) {
        size_t len = ((size_t)p[0] << 16) | ((size_t)p[1] << 8) | p[2];
        unsigned type = p[3], flags = p[4];
        if (type == 0 || (type == 1 && (flags & 1) == 0))
            return 1;
        if ((size_t)(end - p) - 9 < len)
            break;
        p += 9 + len;
    }
    return 0;
}

typedef struct st_h2_scan_t {
    pe_front_t *only; /* NULL: every connection of the thread */
} h2_scan_t;

static int
on_h2_request(h2o_req_t *req, void *data)
{
    h2_scan_t *scan = data;
    /* Headers decoded, body still arriving: not dispatched (no pathconf) and no entity yet. */
    if (req->input.method.base == NULL || req->pathconf != NULL || req->entity.base != NULL)
        return 0;
    if (scan->only != NULL && req->conn != (h2o_conn_t *)scan->only->sock->data)
        return 0;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    pe_front_t *front = sock != NULL ? front_of(sock) : NULL;
    if (front == NULL || front->state != STATE_H2 || front->h2_refuse)
        return 0;
    pe_auth_view_t view;
    pe_auth_view_from_req(req, &view);
    if (pe_auth_check_publisher(front->thr->server->cfg, &view) == PE_AUTH_OK)
        return 0;
    /* A first sighting may be an empty body on its way (clients often send END_STREAM in a
     * DATA frame of its own): it gets the handler's JSON answer if it completes by the next
     * check; still waiting then, it is a body being sent. */
    for (size_t i = 0; i != front->num_h2_suspects; ++i)
        if (front->h2_suspects[i] == req)
            front->h2_refuse = 1;
    if (!front->h2_refuse) {
        if (front->num_h2_next == PE_FRONT_H2_SUSPECTS)
            front->h2_refuse = 1;
        else
            front->h2_next[front->num_h2_next++] = req;
    }
    return 0;
}

/* Applies the scan's outcome to one connection: the suspects for the next check, or closing
 * (h2o's read callback closes the connection and frees its streams on an error). */
static void
h2_commit(pe_front_t *front)
{
    if (!front->h2_refuse) {
        memcpy(front->h2_suspects, front->h2_next, front->num_h2_next * sizeof(front->h2_next[0]));
        front->num_h2_suspects = front->num_h2_next;
        return;
    }
    PE_STAT_ADD(front->thr->stats.front_refused, 1);
    h2o_socket_cb cb = front->sock->_cb.read == on_read ? front->h2o_read : front->sock->_cb.read;
    if (cb != NULL)
        forward(front, cb, "pushedge: request body without publish credentials");
    /* else reading is paused (nothing more arrives); the next sweep closes it */
}

/* h2o 2.2 lists HTTP/2 requests per context only (foreach_request; the per-connection stream
 * table needs the uninstalled khash.h), so a check walks the thread's HTTP/2 requests once. */
static void
h2_check(pe_front_t *front)
{
    h2_scan_t scan = {front};
    front->num_h2_next = 0;
    front->h2_refuse = 0;
    H2O_HTTP2_CALLBACKS.foreach_request(&front->thr->ctx, on_h2_request, &scan);
    h2_commit(front);
}

static void
on_h2_sweep(h2o_timeout_entry_t *entry)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, front.sweep_entry, entry);
    for (h2o_linklist_t *node = thr->front.h2.next; node != &thr->front.h2; node = node->next) {
        pe_front_t *front = H2O_STRUCT_FROM_MEMBER(pe_front_t, h2_link, node);
        if (front->sock->_cb.read == front->h2o_read)
            wrap(front);
        front->num_h2_next = 0;
        front->h2_refuse = 0;
    }
    h2_scan_t scan = {NULL};
    H2O_HTTP2_CALLBACKS.foreach_request(&thr->ctx, on_h2_request, &scan);
    h2o_linklist_t *node = thr->front.h2.next;
    while (node != &thr->front.h2) {
        h2o_linklist_t *next = node->next; /* h2_commit may free the front */
        h2_commit(H2O_STRUCT_FROM_MEMBER(pe_front_t, h2_link, node));
        node = next;
    }
    if (!h2o_linklist_is_empty(&thr->front.h2))
        schedule_h2_sweep(thr);
}

/* ---- the hooks ------------------------------------------------------------------------------- */

int
pe_front_init(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    num_fronts = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > PE_FRONT_MAX_FDS ? PE_FRONT_MAX_FDS : (size_t)rl.rlim_cur;
    fronts = pe_calloc(num_fronts, sizeof(*fronts));
    return 0;
}

void
pe_front_thread_init(pe_thread_t *thr)
{
    h2o_linklist_init_anchor(&thr->front.h2);
    thr->front.sweep_entry.cb = on_h2_sweep;
}

static pe_front_t *
front_new(pe_thread_t *thr, h2o_socket_t *sock, int fd, int state)
{
    pe_front_t *front = pe_calloc(1, sizeof(*front));
    front->thr = thr;
    front->sock = sock;
    front->fd = fd;
    front->state = state;
    front->rewrap_entry.cb = on_rewrap;
    front->prev_close_cb = sock->on_close.cb;
    front->prev_close_data = sock->on_close.data;
    sock->on_close.cb = on_socket_close;
    sock->on_close.data = front;
    __atomic_store_n(&fronts[fd], front, __ATOMIC_RELEASE);
    wrap(front);
    return front;
}

/* Follows an HTTP/1 socket whose reader is h2o's HTTP/1 one (learnt from the first socket). */
static void
attach_h1(pe_thread_t *thr, h2o_socket_t *sock, int fd)
{
    if (h1_cb() == NULL)
        __atomic_store_n(&h1_read_cb, sock->_cb.read, __ATOMIC_RELAXED);
    if (sock->_cb.read != h1_cb())
        return;
    front_new(thr, sock, fd, STATE_HEAD);
}

void
pe_front_attach(pe_thread_t *thr, h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock);
    if (sock->ssl != NULL || fd < 0 || (size_t)fd >= num_fronts || sock->_cb.read == NULL)
        return;
    attach_h1(thr, sock, fd);
}

void
pe_front_attach_tls(pe_thread_t *thr, h2o_socket_t *sock, int h2)
{
    int fd = h2o_socket_get_fd(sock);
    if (fd < 0 || (size_t)fd >= num_fronts || sock->_cb.read == NULL)
        return;
    if (h2) {
        pe_front_t *front = front_new(thr, sock, fd, STATE_H2);
        h2o_linklist_insert(&thr->front.h2, &front->h2_link);
        schedule_h2_sweep(thr);
        return;
    }
    /* h2o_http1_accept installed its reader: the same callback as on clear-text sockets. */
    attach_h1(thr, sock, fd);
}

int
pe_front_on_req(h2o_req_t *req)
{
    if (req->version >= 0x200)
        return -1;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    pe_front_t *front = sock != NULL ? front_of(sock) : NULL;
    int reason = REASON_OK;
    /* A head the wrap rewrote: "/!NN" names the reason. */
    if (req->path.len >= 4 && req->path.base[1] == '!' && req->path.base[2] >= '0' && req->path.base[2] <= '9' &&
        req->path.base[3] >= '0' && req->path.base[3] <= '9')
        reason = (req->path.base[2] - '0') * 10 + (req->path.base[3] - '0');
    else if (front != NULL)
        check_head(front, sock->input->bytes, sock->input->size, &reason, 0, &(int){0});
    if (front != NULL) {
        pe_front_t **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), on_req_dispose);
        *holder = front;
    }
    if (reason == REASON_OK || reason == REASON_AUTH + PE_AUTH_OK || reason >= REASON_AUTH + PE_AUTH_MAX)
        return -1;
    req->http1_is_persistent = 0;
    PE_STAT_ADD(pe_thread_of(req)->stats.front_refused, front != NULL && front->state == STATE_REFUSED ? 0 : 1);
    if (reason < REASON_AUTH)
        pe_http_error(req, 400, "Bad Request", "bad_framing", framing_messages[reason]);
    else
        pe_auth_refuse(req, (pe_auth_t)(reason - REASON_AUTH));
    /* The head said "Connection: close" (written synchronously above). A rewritten head left
     * nothing else in the input, so h2o may keep the connection for the drain (see drain());
     * a fault found only here leaves h2o's idea of the request in the input: closed at once. */
    if (front != NULL && front->state == STATE_REFUSED)
        req->http1_is_persistent = 1;
    return 0;
}

/*
 * conn_limit.c: how many connections (and held long-polls) a node takes, counted where they
 * start and where their socket is closed, and the answer to the ones past the limits.
 *
 * Counting. Every accepted socket carries h2o's own close hook (sock->on_close, called by
 * h2o 2.2's dispose_socket after it closed the descriptor, on the socket's loop thread). h2o
 * sets it only for the client sockets of its socket pool, never for accepted ones, and keeps it
 * across h2o_http1_upgrade (the WebSocket and HTTP/2-upgrade paths hand over the same socket
 * struct), so a counter incremented at accept and decremented there matches the descriptors
 * the node holds for clients, whatever transport the connection became and whoever closed it.
 * Alternatives rejected: counting requests or streams (an idle keep-alive connection holds a
 * descriptor too), and using the descriptor number as a proxy (h2o and hiredis open others).
 *
 * The limits. The default connection limit keeps descriptors in reserve (PE_FD_RESERVE and
 * PE_FD_RESERVE_PER_THREAD below RLIMIT_NOFILE) and leaves room above itself for the refused:
 *   - up to max_connections: served;
 *   - up to max_connections + slack: accepted and marked; the router answers their requests
 *     with 503 + Retry-After and a JSON error, and HTTP/1 closes after the answer;
 *   - past that: closed right after accept(2) (a fast reset, never a hang).
 * With the per-address limit on (off by default), a connection past it is marked in the same
 * way with its own error code; addresses are counted in one table shared by the threads (a
 * mutex: an accept and a close per connection, no per-message cost).
 *
 * Why marked connections instead of writing a canned 503 at accept: the request has not
 * arrived yet then, and closing a socket with its request unread resets the connection, which
 * can destroy the answer before the client reads it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include "pubsub/alloc.h"
#include "edge/util/log.h"
#include "edge/core/conn_limit.h"
#include "edge/core/http.h"

const char *const pe_reject_names[PE_REJECT_MAX] = {"connections", "connections_per_ip", "held_polls"};

struct st_pe_ip_entry_t {
    pe_ip_entry_t *next;
    pe_limits_t *limits;
    uint8_t addr[16]; /* IPv6, or IPv4 mapped into it */
    size_t count;     /* connections from this address, guarded by limits->ip_lock */
};

static pe_log_rate_t full_log, per_ip_log, closed_log;

static size_t
clamp(size_t v, size_t lo, size_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void
pe_limits_init(pe_limits_t *limits, const pe_config_t *cfg, unsigned threads)
{
    memset(limits, 0, sizeof(*limits));
    struct rlimit rl;
    size_t nofile = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        nofile = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 30) ? (1u << 30) : (size_t)rl.rlim_cur;
    size_t reserve = PE_FD_RESERVE + (size_t)threads * (PE_FD_RESERVE_PER_THREAD + cfg->num_listen);
    size_t room = nofile > reserve + 2 ? nofile - reserve : 2;
    if (cfg->max_connections != 0) {
        limits->max_connections = cfg->max_connections;
        limits->slack = clamp(limits->max_connections / 16, PE_CONN_SLACK_MIN, PE_CONN_SLACK_MAX);
        if (limits->max_connections + limits->slack > room)
            pe_log(PE_LOG_WARN, "edge",
                   "--max-connections %zu needs about %zu descriptors but the limit is %zu: accept(2) will fail before the "
                   "connection limit is reached (raise the descriptor limit, e.g. LimitNOFILE=)",
                   limits->max_connections, limits->max_connections + limits->slack + reserve, nofile);
    } else {
        limits->slack = clamp(room / 16, PE_CONN_SLACK_MIN, PE_CONN_SLACK_MAX);
        limits->max_connections = room > limits->slack + 1 ? room - limits->slack : 1;
    }
    for (int i = 0; i != PE_REJECT_MAX; ++i)
        limits->refusals[i] = (pe_refusal_t){limits, (pe_reject_t)i};
    limits->max_per_ip = cfg->max_connections_per_ip;
    limits->max_held_polls = cfg->max_held_polls != 0 ? cfg->max_held_polls : limits->max_connections;
    if (limits->max_per_ip != 0) {
        pthread_mutex_init(&limits->ip_lock, NULL);
        limits->ip_buckets = pe_calloc(PE_PER_IP_BUCKETS, sizeof(*limits->ip_buckets));
    }
    pe_log(PE_LOG_INFO, "edge", "limits: %zu connections (descriptor limit %zu), %zu held polls, %s per address",
           limits->max_connections, nofile, limits->max_held_polls, limits->max_per_ip != 0 ? "limited" : "unlimited");
}

/* ---- close hooks (run by h2o's dispose_socket on the socket's loop thread) ------------------- */

static void
on_close(void *data)
{
    pe_limits_t *limits = data;
    __atomic_fetch_sub(&limits->open, 1, __ATOMIC_RELAXED);
}

static void
on_close_ip(void *data)
{
    pe_ip_entry_t *e = data;
    pe_limits_t *limits = e->limits;
    pthread_mutex_lock(&limits->ip_lock);
    if (--e->count == 0) {
        uint32_t h;
        memcpy(&h, e->addr + 12, sizeof(h));
        pe_ip_entry_t **pp = &limits->ip_buckets[(h ^ e->addr[7]) % PE_PER_IP_BUCKETS];
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
        pe_free(e);
    }
    pthread_mutex_unlock(&limits->ip_lock);
    __atomic_fetch_sub(&limits->open, 1, __ATOMIC_RELAXED);
}

/* Refused connections are marked by this hook, with data pointing at limits->refusals[reason]
 * (the router reads the reason back from the socket). */
static void
on_close_refused(void *data)
{
    pe_refusal_t *r = data;
    __atomic_fetch_sub(&r->limits->open, 1, __ATOMIC_RELAXED);
}

static void
mark_refused(pe_limits_t *limits, h2o_socket_t *sock, pe_reject_t reason)
{
    sock->on_close.cb = on_close_refused;
    sock->on_close.data = &limits->refusals[reason];
}

/* ---- accept ---------------------------------------------------------------------------------- */

/* The peer's address as 16 bytes; 0 if it has none (a Unix socket). */
static int
peer_key(h2o_socket_t *sock, uint8_t key[16])
{
    struct sockaddr_storage ss;
    socklen_t len = h2o_socket_getpeername(sock, (struct sockaddr *)&ss);
    if (len == 0)
        return 0;
    if (ss.ss_family == AF_INET) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(key, mapped, 12);
        memcpy(key + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 1;
    }
    if (ss.ss_family == AF_INET6) {
        memcpy(key, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

/* Counts a connection from the address; returns its entry, or NULL if the address is full. */
static pe_ip_entry_t *
ip_acquire(pe_limits_t *limits, const uint8_t key[16])
{
    uint32_t h;
    memcpy(&h, key + 12, sizeof(h));
    pe_ip_entry_t *found = NULL, **bucket = &limits->ip_buckets[(h ^ key[7]) % PE_PER_IP_BUCKETS];
    pthread_mutex_lock(&limits->ip_lock);
    for (pe_ip_entry_t *e = *bucket; e != NULL; e = e->next) {
        if (memcmp(e->addr, key, 16) == 0) {
            found = e;
            break;
        }
    }
    if (found == NULL) {
        found = pe_calloc(1, sizeof(*found));
        found->limits = limits;
        memcpy(found->addr, key, 16);
        found->next = *bucket;
        *bucket = found;
    } else if (found->count >= limits->max_per_ip) {
        found = NULL;
    }
    if (found != NULL)
        ++found->count;
    pthread_mutex_unlock(&limits->ip_lock);
    return found;
}

int
pe_limits_on_accept(pe_limits_t *limits, h2o_socket_t *sock)
{
    size_t open = __atomic_add_fetch(&limits->open, 1, __ATOMIC_RELAXED);
    if (open > limits->max_connections + limits->slack) {
        __atomic_fetch_sub(&limits->open, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&limits->rejected[PE_REJECT_CONNECTIONS], 1, __ATOMIC_RELAXED);
        pe_log_ratelimited(&closed_log, PE_LOG_WARN, "edge",
                           "connection limit: %zu open, past --max-connections %zu and its %zu answered refusals: "
                           "closing new connections at once",
                           open - 1, limits->max_connections, limits->slack);
        return -1;
    }
    if (open > limits->max_connections) {
        __atomic_fetch_add(&limits->rejected[PE_REJECT_CONNECTIONS], 1, __ATOMIC_RELAXED);
        pe_log_ratelimited(&full_log, PE_LOG_WARN, "edge",
                           "connection limit: %zu open, --max-connections %zu: answering new requests 503", open,
                           limits->max_connections);
        mark_refused(limits, sock, PE_REJECT_CONNECTIONS);
        return 1;
    }
    uint8_t key[16];
    if (limits->max_per_ip != 0 && peer_key(sock, key)) {
        pe_ip_entry_t *e = ip_acquire(limits, key);
        if (e == NULL) {
            __atomic_fetch_add(&limits->rejected[PE_REJECT_CONNECTIONS_PER_IP], 1, __ATOMIC_RELAXED);
            char text[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, key, text, sizeof(text));
            pe_log_ratelimited(&per_ip_log, PE_LOG_WARN, "edge",
                               "per-address limit: %s has --max-connections-per-ip %zu open: answering its new requests 503", text,
                               limits->max_per_ip);
            mark_refused(limits, sock, PE_REJECT_CONNECTIONS_PER_IP);
            return 1;
        }
        sock->on_close.cb = on_close_ip;
        sock->on_close.data = e;
        return 0;
    }
    sock->on_close.cb = on_close;
    sock->on_close.data = limits;
    return 0;
}

int
pe_limits_refuse_request(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || sock->on_close.cb != on_close_refused)
        return 0;
    int per_ip = ((pe_refusal_t *)sock->on_close.data)->reason == PE_REJECT_CONNECTIONS_PER_IP;
    /* HTTP/1 closes after the answer, which gives the descriptor back at once. */
    req->http1_is_persistent = 0;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT(H2O_TO_STR(PE_RETRY_AFTER_FULL)));
    if (per_ip)
        pe_http_error(req, 503, "Service Unavailable", "too_many_connections_from_address",
                      "too many connections from this address; retry later");
    else
        pe_http_error(req, 503, "Service Unavailable", "too_many_connections",
                      "this node is at its connection limit; retry later or elsewhere");
    return 1;
}

/* ---- held long-polls ------------------------------------------------------------------------- */

int
pe_limits_hold_poll(pe_limits_t *limits)
{
    size_t held = __atomic_add_fetch(&limits->held_polls, 1, __ATOMIC_RELAXED);
    if (held > limits->max_held_polls) {
        __atomic_fetch_sub(&limits->held_polls, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&limits->rejected[PE_REJECT_HELD_POLLS], 1, __ATOMIC_RELAXED);
        static pe_log_rate_t polls_log;
        pe_log_ratelimited(&polls_log, PE_LOG_WARN, "fallback/poll",
                           "held long-poll limit: %zu held (--max-held-polls): answering 503", held - 1);
        return -1;
    }
    return 0;
}

void
pe_limits_release_poll(pe_limits_t *limits)
{
    __atomic_fetch_sub(&limits->held_polls, 1, __ATOMIC_RELAXED);
}

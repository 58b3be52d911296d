/*
 * redis_link.c: one thread's connections to Redis (redis_link.h): connect and set up, pipeline
 * and route commands, time out, reconnect.
 *
 * Connections. A link has a command connection per master (conns[0] is the seed; a cluster
 * adds one per master from CLUSTER SLOTS) and one subscriber connection on the seed (a cluster
 * forwards PUBLISH to every node), all driven by the owner's loop (redis_evloop.c): no thread
 * hop per command and no lock. Commands are pipelined: hiredis queues them until the socket is
 * connected, so a connection's setup (AUTH, SELECT, FUNCTION LOAD) is simply its first commands.
 *
 * Up. The link is up once the seed said whether it is a cluster (and every master it named is
 * connected) and each command connection has the library loaded; on_up then tells the owner.
 *
 * Failure. A command unanswered for PE_REDIS_TIMEOUT_MS, a protocol error, a refused setup or a
 * closed socket tears every connection down: on_down first, then every command in flight gets
 * its callback with a NULL reply (replies on a connection are strictly ordered, so one hung
 * command cannot be cancelled alone). The link reconnects after a backoff with full jitter over
 * [0, min(cap, base * 2^attempt)], trying the next seed after each failed attempt.
 *
 * Cluster routing. A command about a key goes to the master of its slot (CRC16 of the hash tag);
 * MOVED updates the slot map and sends the command there, ASK sends it there once after ASKING,
 * at most PE_REDIS_MAX_REDIRECTS times per command. Redirections to a master not yet connected
 * open (and set up) a connection to it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <h2o.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include "alloc.h"
#include "redis_evloop.h"
#include "redis_link.h"
#include "redis_reply.h"

/* Reconnect backoff: full jitter over [0, min(cap, base * 2^attempt)]. */
#define PE_REDIS_BACKOFF_BASE_MS 100
#define PE_REDIS_BACKOFF_CAP_MS 5000
/* The timer that checks deadlines (command timeouts, reconnect). */
#define PE_REDIS_TICK_MS 100
/* Redis Cluster: masters one thread talks to, redirections per command. */
#define PE_REDIS_MAX_CONNS 16
#define PE_REDIS_MAX_REDIRECTS 5

static const char err_timeout[] = "the Redis engine did not answer in time";

/* One connection of a link: to a master (commands) or the subscriber connection. The struct
 * outlives its hiredis context (ac->data points here; a stale context is recognised by
 * conn->ac != ac) and is freed with the link. */
typedef struct st_redis_conn_t {
    pe_redis_link_t *link;
    redisAsyncContext *ac; /* NULL while down */
    int ready;             /* its setup (AUTH, SELECT, FUNCTION LOAD) was answered */
    pe_redis_addr_t addr;
} redis_conn_t;

typedef enum en_link_state_t { LINK_DOWN, LINK_CONNECTING, LINK_UP } link_state_t;

/* A command in flight, oldest first: replies come in order, so the head's age is the link's
 * wait. */
typedef struct st_cmd_t {
    h2o_linklist_t link; /* in link->pending */
    pe_redis_link_t *owner;
    redis_conn_t *conn;
    char *buf; /* the formatted command, kept to follow a MOVED or ASK redirection */
    size_t len;
    unsigned redirects;
    uint64_t sent_at;
    pe_redis_reply_cb cb; /* reply NULL: the link failed */
    void *ctx;
} cmd_t;

struct st_pe_redis_link_t {
    const pe_redis_link_config_t *cfg;
    const pe_redis_link_callbacks_t *cb;
    void *ctx;
    h2o_evloop_t *loop;
    link_state_t state;
    redis_conn_t *conns[PE_REDIS_MAX_CONNS]; /* [0]: the seed; more for the masters of a cluster */
    size_t nconns;
    redis_conn_t sub; /* subscriptions, on the seed */
    uint8_t *slots;   /* cluster: slot -> index in conns (0xff: unknown, ask the seed) */
    int cluster;
    int slots_known;        /* the seed answered CLUSTER SLOTS (or said it is no cluster) */
    int keyspace_events;    /* the seed's notify-keyspace-events covers streams */
    unsigned seed;          /* index in cfg->seeds of the current seed */
    unsigned attempts;      /* failed connects in a row */
    uint64_t reconnect_at;  /* loop ms, while DOWN */
    h2o_linklist_t pending; /* cmd_t */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick_entry;
    unsigned started : 1;    /* the first connect attempt returned: failures are reported */
    unsigned destroying : 1; /* pe_redis_link_destroy is closing the connections */
    unsigned reloading : 1;  /* a FUNCTION LOAD for an outdated library is in flight */
};

static void link_fail(pe_redis_link_t *link, const char *why);
static void on_cluster_slots(void *ctx, redisReply *reply);

void
pe_redis_logf(void (*log)(int level, const char *text), int level, const char *fmt, ...)
{
    if (log == NULL)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log(level, buf);
}

#define llog(link, ...) pe_redis_logf((link)->cfg->log, __VA_ARGS__)

/* ---- commands ------------------------------------------------------------------------------ */

/* CRC16-XMODEM of the key's hash tag (the part between the first { and the next }, if not
 * empty), modulo 16384: Redis Cluster's key slot. */
static unsigned
key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close != NULL && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    uint16_t crc = 0;
    for (size_t i = 0; i != len; ++i) {
        crc ^= (uint16_t)((uint8_t)key[i] << 8);
        for (int b = 0; b != 8; ++b)
            crc = (crc & 0x8000) != 0 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc & (PE_REDIS_SLOTS - 1);
}

static int follow_redirect(pe_redis_link_t *link, cmd_t *c, const pe_redis_redirect_t *to);

static void
on_cmd_reply(redisAsyncContext *ac, void *_reply, void *privdata)
{
    cmd_t *c = privdata;
    pe_redis_link_t *link = c->owner;
    redisReply *reply = _reply;
    pe_redis_redirect_t redirect;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && c->redirects < PE_REDIS_MAX_REDIRECTS && link->state != LINK_DOWN &&
        pe_redis_parse_redirect(reply->str, reply->len, &redirect) == 0 && follow_redirect(link, c, &redirect) == 0)
        return; /* sent again; its callback runs with the final answer */
    h2o_linklist_unlink(&c->link);
    c->cb(c->ctx, reply);
    redisFreeCommand(c->buf);
    pe_free(c);
}

/* Sends a command on conn. Returns 0; or -1 when conn is down (cb not called). */
static int
send_cmd_on(redis_conn_t *conn, pe_redis_reply_cb cb, void *ctx, int argc, const char **argv, const size_t *argvlen)
{
    if (conn == NULL || conn->ac == NULL)
        return -1;
    cmd_t *c = pe_calloc(1, sizeof(*c));
    c->owner = conn->link;
    c->conn = conn;
    c->cb = cb;
    c->ctx = ctx;
    c->sent_at = h2o_now(conn->link->loop);
    int n = redisFormatCommandArgv(&c->buf, argc, argv, argvlen);
    if (n < 0 || redisAsyncFormattedCommand(conn->ac, on_cmd_reply, c, c->buf, (size_t)n) != REDIS_OK) {
        if (n >= 0)
            redisFreeCommand(c->buf);
        pe_free(c);
        return -1;
    }
    c->len = (size_t)n;
    h2o_linklist_insert(&conn->link->pending, &c->link);
    return 0;
}

int
pe_redis_link_command(pe_redis_link_t *link, const char *key, size_t key_len, pe_redis_reply_cb cb, void *ctx, int argc,
                      const char **argv, const size_t *argvlen)
{
    redis_conn_t *conn = link->conns[0];
    if (link->cluster && link->slots != NULL) {
        uint8_t i = link->slots[key_slot(key, key_len)];
        if (i < link->nconns)
            conn = link->conns[i];
    }
    return send_cmd_on(conn, cb, ctx, argc, argv, argvlen);
}

int
pe_redis_link_is_up(pe_redis_link_t *link)
{
    return link->state == LINK_UP;
}

/* ---- the subscriber connection ------------------------------------------------------------- */

/* hiredis calls this for the SUBSCRIBE and UNSUBSCRIBE confirmations and for every message. */
static void
on_sub_reply(redisAsyncContext *ac, void *_reply, void *privdata)
{
    pe_redis_link_t *link = privdata;
    redisReply *reply = _reply;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    const char *chan = reply->element[1]->str;
    size_t chan_len = reply->element[1]->len;
    if (strcmp(kind, "subscribe") == 0) {
        link->cb->on_sub(link->ctx, PE_REDIS_SUBSCRIBED, chan, chan_len, NULL, 0);
    } else if (strcmp(kind, "unsubscribe") == 0) {
        link->cb->on_sub(link->ctx, PE_REDIS_UNSUBSCRIBED, chan, chan_len, NULL, 0);
    } else if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
        link->cb->on_sub(link->ctx, PE_REDIS_MESSAGE, chan, chan_len, reply->element[2]->str, reply->element[2]->len);
    }
}

void
pe_redis_link_subscribe(pe_redis_link_t *link, const char *verb, const char *chan, size_t chan_len)
{
    const char *argv[] = {verb, chan};
    size_t argvlen[] = {strlen(verb), chan_len};
    if (link->sub.ac != NULL)
        redisAsyncCommandArgv(link->sub.ac, on_sub_reply, link, 2, argv, argvlen);
}

/* ---- the function library ------------------------------------------------------------------ */

static void
on_library_reloaded(void *ctx, redisReply *reply)
{
    pe_redis_link_t *link = ctx;
    link->reloading = 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        llog(link, 1, "redis: reloading the function library failed: %.200s", reply->str);
}

int
pe_redis_link_reload_library(pe_redis_link_t *link)
{
    if (link->reloading)
        return -1;
    const char *lib = link->cfg->library;
    const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", lib};
    size_t argvlen[] = {8, 4, 7, strlen(lib)};
    for (size_t i = 0; i != link->nconns; ++i)
        if (send_cmd_on(link->conns[i], on_library_reloaded, link, 4, argv, argvlen) == 0)
            link->reloading = 1;
    return 0;
}

/* ---- connecting ------------------------------------------------------------------------------ */

static void
on_keyspace_config(void *ctx, redisReply *reply)
{
    pe_redis_link_t *link = ctx;
    int on = 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        const char *v = reply->element[1]->str;
        on = strchr(v, 'K') != NULL && (strchr(v, 't') != NULL || strchr(v, 'A') != NULL);
    }
    link->keyspace_events = on;
}

/* The link is up once the seed told whether it is a cluster and every connection it needs has
 * the library loaded. */
static void
check_up(pe_redis_link_t *link)
{
    if (link->state != LINK_CONNECTING || !link->slots_known)
        return;
    for (size_t i = 0; i != link->nconns; ++i)
        if (link->conns[i]->ac != NULL && !link->conns[i]->ready)
            return;
    link->state = LINK_UP;
    link->attempts = 0;
    pe_redis_link_info_t info = {.seed = &link->conns[0]->addr,
                                 .num_masters = link->nconns,
                                 .cluster = link->cluster,
                                 .keyspace_events = link->keyspace_events};
    link->cb->on_up(link->ctx, &info);
}

/* The last reply of a connection's setup: Redis answers and has the library. */
static void
on_library_loaded(void *ctx, redisReply *reply)
{
    redis_conn_t *conn = ctx;
    pe_redis_link_t *link = conn->link;
    if (reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        llog(link, 0, "redis: FUNCTION LOAD on %s:%u failed (Redis 7 is needed): %.200s", conn->addr.ip, conn->addr.port,
             reply->str);
        link_fail(link, "FUNCTION LOAD failed");
        return;
    }
    conn->ready = 1;
    check_up(link);
}

/* AUTH and SELECT on a command connection: a refusal is fatal to the attempt. */
static void
setup_refused(pe_redis_link_t *link, const char *what, redisReply *reply)
{
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        llog(link, 0, "redis: %s refused: %.200s", what, reply->str);
        link_fail(link, "AUTH or SELECT refused");
    }
}

static void
on_auth_reply(void *ctx, redisReply *reply)
{
    setup_refused(ctx, "AUTH", reply);
}

static void
on_select_reply(void *ctx, redisReply *reply)
{
    setup_refused(ctx, "SELECT", reply);
}

static void
on_sub_auth(redisAsyncContext *ac, void *_reply, void *privdata)
{
    redisReply *reply = _reply;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        link_fail(privdata, "AUTH refused");
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    redis_conn_t *conn = ac->data;
    if (status != REDIS_OK && conn->ac == ac) {
        conn->ac = NULL; /* hiredis frees ac after this returns */
        link_fail(conn->link, ac->errstr);
    }
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    redis_conn_t *conn = ac->data;
    if (conn->ac != ac)
        return; /* a context the link already gave up */
    conn->ac = NULL;
    if (!conn->link->destroying)
        link_fail(conn->link, status == REDIS_OK ? "closed" : ac->errstr);
}

static int
conn_connect(redis_conn_t *conn)
{
    pe_redis_link_t *link = conn->link;
    redisAsyncContext *ac = redisAsyncConnect(conn->addr.ip, (int)conn->addr.port);
    if (ac == NULL)
        return -1;
    if (ac->err) {
        llog(link, 1, "redis: connect to %s:%u: %s", conn->addr.ip, conn->addr.port, ac->errstr);
        redisAsyncFree(ac);
        return -1;
    }
    ac->data = conn;
    conn->ac = ac;
    conn->ready = 0;
    pe_redis_evloop_attach(ac, link->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return 0;
}

/* Connects a command connection and pipelines its setup (hiredis queues it until the socket is
 * connected); the seed also learns the keyspace setting and the cluster's slots. */
static int
conn_open(redis_conn_t *conn, int is_seed)
{
    pe_redis_link_t *link = conn->link;
    const pe_redis_link_config_t *cfg = link->cfg;
    if (conn_connect(conn) != 0)
        return -1;
    if (cfg->password != NULL) {
        const char *argv[] = {"AUTH", cfg->password};
        size_t argvlen[] = {4, strlen(cfg->password)};
        send_cmd_on(conn, on_auth_reply, link, 2, argv, argvlen);
    }
    if (cfg->db != 0) {
        char db[16];
        int n = snprintf(db, sizeof(db), "%u", cfg->db);
        const char *argv[] = {"SELECT", db};
        size_t argvlen[] = {6, (size_t)n};
        send_cmd_on(conn, on_select_reply, link, 2, argv, argvlen);
    }
    if (is_seed) {
        const char *argv[] = {"CONFIG", "GET", "notify-keyspace-events"};
        size_t argvlen[] = {6, 3, 22};
        send_cmd_on(conn, on_keyspace_config, link, 3, argv, argvlen);
        const char *argv2[] = {"CLUSTER", "SLOTS"};
        size_t argvlen2[] = {7, 5};
        send_cmd_on(conn, on_cluster_slots, link, 2, argv2, argvlen2);
    }
    const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", cfg->library};
    size_t argvlen[] = {8, 4, 7, strlen(cfg->library)};
    send_cmd_on(conn, on_library_loaded, conn, 4, argv, argvlen);
    return 0;
}

/* The connection to ip:port, opened (with its setup) if it is not; NULL if there is no room or
 * it cannot be opened. *index receives its index in conns. */
static redis_conn_t *
conn_get(pe_redis_link_t *link, const char *ip, unsigned port, size_t *index)
{
    size_t i;
    for (i = 0; i != link->nconns; ++i)
        if (link->conns[i]->addr.port == port && strcmp(link->conns[i]->addr.ip, ip) == 0)
            break;
    if (i == link->nconns) {
        if (link->nconns == PE_REDIS_MAX_CONNS)
            return NULL;
        redis_conn_t *conn = pe_calloc(1, sizeof(*conn));
        conn->link = link;
        snprintf(conn->addr.ip, sizeof(conn->addr.ip), "%s", ip);
        conn->addr.port = port;
        link->conns[link->nconns++] = conn;
    }
    redis_conn_t *conn = link->conns[i];
    if (conn->ac == NULL && conn_open(conn, 0) != 0)
        return NULL;
    *index = i;
    return conn;
}

/* CLUSTER SLOTS: [[start, end, [ip, port, id], replicas...], ...]; an error means no cluster. */
static void
on_cluster_slots(void *ctx, redisReply *reply)
{
    pe_redis_link_t *link = ctx;
    if (reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY) {
        link->cluster = 0;
    } else {
        link->cluster = 1;
        if (link->slots == NULL)
            link->slots = pe_malloc(PE_REDIS_SLOTS);
        memset(link->slots, 0xff, PE_REDIS_SLOTS);
        for (size_t i = 0; i != reply->elements; ++i) {
            unsigned from, to, port;
            const char *ip;
            int k = pe_redis_slot_range(reply->element[i], &from, &to, &ip, &port);
            if (k == 0)
                continue;
            if (k > 0 && *ip == '\0')
                ip = link->conns[0]->addr.ip; /* "the node you asked" */
            size_t idx;
            if (k < 0 || conn_get(link, ip, port, &idx) == NULL) {
                link_fail(link, "a cluster master cannot be reached");
                return;
            }
            memset(link->slots + from, (int)idx, to - from + 1);
        }
    }
    link->slots_known = 1;
    check_up(link);
}

static void
on_asking(void *ctx, redisReply *reply)
{
}

/* A MOVED or ASK redirection (pe_redis_parse_redirect): send the command to that master (after
 * ASKING for ASK); MOVED also updates the slot map. An empty host is the node that answered.
 * Returns 0 if the command was sent again, -1 to hand the error to its callback. */
static int
follow_redirect(pe_redis_link_t *link, cmd_t *c, const pe_redis_redirect_t *r)
{
    int ask = r->ask;
    const char *ip = r->host[0] != '\0' ? r->host : c->conn->addr.ip;
    size_t idx;
    redis_conn_t *to = conn_get(link, ip, r->port, &idx);
    if (to == NULL)
        return -1;
    if (!ask && link->slots != NULL)
        link->slots[r->slot] = (uint8_t)idx;
    if (ask) {
        const char *argv[] = {"ASKING"};
        size_t argvlen[] = {6};
        send_cmd_on(to, on_asking, NULL, 1, argv, argvlen);
    }
    if (redisAsyncFormattedCommand(to->ac, on_cmd_reply, c, c->buf, c->len) != REDIS_OK)
        return -1;
    c->conn = to;
    ++c->redirects;
    return 0;
}

static void
link_connect(pe_redis_link_t *link)
{
    const pe_redis_link_config_t *cfg = link->cfg;
    link->state = LINK_CONNECTING;
    link->keyspace_events = 0;
    link->slots_known = 0;
    /* The seed is conns[0]; the other connections are opened from the slot map. */
    redis_conn_t *seed = link->conns[0];
    seed->addr = cfg->seeds[link->seed];
    link->sub.addr = seed->addr;
    if (conn_open(seed, 1) != 0 || conn_connect(&link->sub) != 0) {
        link_fail(link, "cannot connect");
        return;
    }
    if (cfg->password != NULL) {
        const char *argv[] = {"AUTH", cfg->password};
        size_t argvlen[] = {4, strlen(cfg->password)};
        redisAsyncCommandArgv(link->sub.ac, on_sub_auth, link, 2, argv, argvlen);
    }
}

/* Closes every connection of the link; pending callbacks run now with a NULL reply. */
static void
close_conns(pe_redis_link_t *link)
{
    for (size_t i = 0; i <= link->nconns; ++i) {
        redis_conn_t *conn = i == link->nconns ? &link->sub : link->conns[i];
        redisAsyncContext *ac = conn->ac;
        conn->ac = NULL;
        conn->ready = 0;
        if (ac != NULL)
            redisAsyncFree(ac); /* deferred by hiredis if its callback is running */
    }
}

/* Tears the connections down and schedules a reconnect. Safe from inside hiredis callbacks. */
static void
link_fail(pe_redis_link_t *link, const char *why)
{
    if (link->state == LINK_DOWN)
        return;
    int was_up = link->state == LINK_UP;
    if (was_up) {
        llog(link, 1, "redis: thread %u lost the connection (%s); reconnecting", link->cfg->index, why != NULL ? why : "error");
    } else {
        if (link->attempts == 0)
            llog(link, 1, "redis: thread %u cannot connect to %s:%u (%s); retrying", link->cfg->index, link->conns[0]->addr.ip,
                 link->conns[0]->addr.port, why != NULL ? why : "error");
        link->seed = (link->seed + 1) % link->cfg->num_seeds; /* try the next seed */
    }
    link->state = LINK_DOWN;
    if (link->started)
        link->cb->on_down(link->ctx, was_up);
    close_conns(link);
    uint64_t window = PE_REDIS_BACKOFF_BASE_MS << (link->attempts < 10 ? link->attempts : 10);
    if (window > PE_REDIS_BACKOFF_CAP_MS)
        window = PE_REDIS_BACKOFF_CAP_MS;
    ++link->attempts;
    link->reconnect_at = h2o_now(link->loop) + (uint64_t)(rand() % (int)window) + 1;
}

static void
on_tick(h2o_timeout_entry_t *entry)
{
    pe_redis_link_t *link = H2O_STRUCT_FROM_MEMBER(pe_redis_link_t, tick_entry, entry);
    uint64_t now = h2o_now(link->loop);
    if (link->state == LINK_DOWN && now >= link->reconnect_at) {
        link_connect(link);
    } else if (link->state != LINK_DOWN && !h2o_linklist_is_empty(&link->pending)) {
        cmd_t *oldest = H2O_STRUCT_FROM_MEMBER(cmd_t, link, link->pending.next);
        if (now - oldest->sent_at > PE_REDIS_TIMEOUT_MS)
            link_fail(link, err_timeout);
    }
    h2o_timeout_link(link->loop, &link->tick_timeout, &link->tick_entry);
}

/* ---- creation ------------------------------------------------------------------------------- */

pe_redis_link_t *
pe_redis_link_create(const pe_redis_link_config_t *cfg, h2o_evloop_t *loop, const pe_redis_link_callbacks_t *cb, void *ctx)
{
    pe_redis_link_t *link = pe_calloc(1, sizeof(*link));
    link->cfg = cfg;
    link->cb = cb;
    link->ctx = ctx;
    link->loop = loop;
    h2o_linklist_init_anchor(&link->pending);
    h2o_timeout_init(loop, &link->tick_timeout, PE_REDIS_TICK_MS);
    link->tick_entry.cb = on_tick;
    h2o_timeout_link(loop, &link->tick_timeout, &link->tick_entry);
    link->conns[link->nconns++] = pe_calloc(1, sizeof(redis_conn_t));
    link->conns[0]->link = link;
    link->sub.link = link;
    link_connect(link);
    link->started = 1;
    return link;
}

void
pe_redis_link_destroy(pe_redis_link_t *link)
{
    link->destroying = 1;
    link->state = LINK_DOWN;
    close_conns(link);
    for (size_t i = 0; i != link->nconns; ++i)
        pe_free(link->conns[i]);
    pe_free(link->slots);
    if (h2o_timeout_is_linked(&link->tick_entry))
        h2o_timeout_unlink(&link->tick_entry);
    h2o_timeout_dispose(link->loop, &link->tick_timeout);
    pe_free(link);
}

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
 *
 * Sentinel (cfg->sentinel_master set; the seeds are sentinels). A third kind of connection, the
 * watch, goes to one sentinel and pipelines SENTINEL get-master-addr-by-name and SUBSCRIBE
 * +switch-master in one write: Redis runs both in one go, so no failover can fall between the
 * answer and the subscription. The master it names is connected like a seed, with ROLE first
 * (a stale sentinel may name a demoted master). Then:
 *   - +switch-master for our master: the link goes down and reconnects to the new address at
 *     once (no backoff: this is news, not a failure);
 *   - the master connection fails: the link goes down and reconnects with the backoff, to the
 *     address the watch holds (the watch stays subscribed while the link is down, so the
 *     failover's +switch-master cuts the backoff short);
 *   - ROLE says replica, or a command answers READONLY (a master demoted under us, as in
 *     SENTINEL FAILOVER): the watch is dropped and the next sentinel asked, as after every
 *     third failed attempt in a row (a sentinel cut off from the others keeps naming the old
 *     master);
 *   - a sentinel that does not know the master, does not answer or cannot be reached: the next
 *     one is asked at once; when each has been asked, the attempt failed (backoff). A watch lost
 *     while the link is up is opened again on the next sentinel after
 *     PE_REDIS_SENTINEL_RETRY_MS, and a different answer then makes the link reconnect.
 * The sentinels are offered the URL's password (AUTH, its refusal ignored: a sentinel without
 * requirepass refuses AUTH, one with the same password takes it).
 *
 * READONLY (any mode): the connection reaches a replica (a demoted master); the command was not
 * run. Its callback gets the error, then the link reconnects (through the sentinels, or to the
 * next seed).
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
#include "stream_id.h"

/* Reconnect backoff: full jitter over [0, min(cap, base * 2^attempt)]. */
#define PE_REDIS_BACKOFF_BASE_MS 100
#define PE_REDIS_BACKOFF_CAP_MS 5000
/* The timer that checks deadlines (command timeouts, reconnect). */
#define PE_REDIS_TICK_MS 100
/* Redis Cluster: masters one thread talks to, redirections per command. */
#define PE_REDIS_MAX_CONNS 16
#define PE_REDIS_MAX_REDIRECTS 5
/* Sentinel: how long before a watch lost while the link is up is opened again (ms); and after
 * how many failed attempts in a row the next sentinel is asked even though this one answers. */
#define PE_REDIS_SENTINEL_RETRY_MS 1000
#define PE_REDIS_SENTINEL_ROTATE 3

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

/* The sentinel watch: closed, asked for the master (its answer not in yet), or answered and
 * subscribed to +switch-master (link->master is then what that sentinel believes). */
typedef enum en_watch_state_t { WATCH_NONE, WATCH_ASKING, WATCH_ON } watch_state_t;

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
    /* Sentinel mode only. */
    redis_conn_t watch; /* to cfg->seeds[sentinel]: the master's address, then +switch-master */
    watch_state_t watch_state;
    pe_redis_addr_t master;   /* the master the watch named last */
    unsigned sentinel;        /* index in cfg->seeds of the sentinel asked */
    unsigned sentinels_tried; /* sentinels that failed in this attempt */
    uint64_t rewatch_at;      /* loop ms: when an up link without a watch opens one */
    redis_conn_t *replying;   /* the connection whose reply is being handed to its callback */
    uint8_t *slots;           /* cluster: slot -> index in conns (0xff: unknown, ask the seed) */
    int cluster;
    int slots_known;        /* the seed answered CLUSTER SLOTS (or said it is no cluster) */
    int keyspace_events;    /* the seed's notify-keyspace-events covers streams */
    unsigned seed;          /* index in cfg->seeds of the current seed */
    unsigned attempts;      /* failed connects in a row */
    uint64_t reconnect_at;  /* loop ms, while DOWN */
    h2o_linklist_t pending; /* cmd_t */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick_entry;
    unsigned started : 1;     /* the first connect attempt returned: failures are reported */
    unsigned destroying : 1;  /* pe_redis_link_destroy is closing the connections */
    unsigned reloading : 1;   /* a FUNCTION LOAD for an outdated library is in flight */
    unsigned blame_watch : 1; /* link_fail also drops the watch and moves to the next sentinel */
};

static void link_fail(pe_redis_link_t *link, const char *why);
static void on_cluster_slots(void *ctx, redisReply *reply);
static void next_sentinel(pe_redis_link_t *link, const char *why);

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
    /* A replica (a master demoted under us) refuses writes; after the callback the link looks
     * for the master again. */
    int readonly = reply != NULL && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "READONLY", 8) == 0;
    h2o_linklist_unlink(&c->link);
    redis_conn_t *outer = link->replying;
    link->replying = reply != NULL ? c->conn : NULL;
    c->cb(c->ctx, reply);
    link->replying = outer;
    redisFreeCommand(c->buf);
    pe_free(c);
    if (readonly && link->state != LINK_DOWN) {
        link->blame_watch = 1;
        link_fail(link, "READONLY: the master became a replica");
    }
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
pe_redis_link_command_same_conn(pe_redis_link_t *link, pe_redis_reply_cb cb, void *ctx, int argc, const char **argv,
                                const size_t *argvlen)
{
    return send_cmd_on(link->replying, cb, ctx, argc, argv, argvlen);
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
        if (conn == &conn->link->watch)
            next_sentinel(conn->link, ac->errstr);
        else
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
    if (conn->link->destroying)
        return;
    if (conn == &conn->link->watch)
        next_sentinel(conn->link, status == REDIS_OK ? "closed" : ac->errstr);
    else
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

/* ROLE on the master a sentinel named: anything but "master" means that sentinel is behind. */
static void
on_role_reply(void *ctx, redisReply *reply)
{
    pe_redis_link_t *link = ctx;
    if (reply == NULL || link->state != LINK_CONNECTING)
        return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 && reply->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(reply->element[0]->str, "master") == 0)
        return;
    const char *role = reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 && reply->element[0]->type == REDIS_REPLY_STRING
                           ? reply->element[0]->str
                       : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                          : "?";
    llog(link, 1, "redis: thread %u: %s:%u, which sentinel %s:%u names master of %s, is not one (ROLE: %.40s); asking the next",
         link->cfg->index, link->master.ip, link->master.port, link->watch.addr.ip, link->watch.addr.port,
         link->cfg->sentinel_master, role);
    link->blame_watch = 1;
    link_fail(link, "not a master");
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
    if (is_seed && cfg->sentinel_master != NULL) {
        /* Before FUNCTION LOAD, which a replica would refuse with a misleading error. */
        const char *argv[] = {"ROLE"};
        size_t argvlen[] = {4};
        send_cmd_on(conn, on_role_reply, link, 1, argv, argvlen);
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

/* Opens the seed's command connection and the subscriber connection to addr. */
static void
connect_master(pe_redis_link_t *link, const pe_redis_addr_t *addr)
{
    const pe_redis_link_config_t *cfg = link->cfg;
    /* The seed is conns[0]; the other connections are opened from the slot map. */
    redis_conn_t *seed = link->conns[0];
    seed->addr = *addr;
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

/* ---- the sentinel watch ---------------------------------------------------------------------- */

static void
watch_close(pe_redis_link_t *link)
{
    redisAsyncContext *ac = link->watch.ac;
    link->watch.ac = NULL;
    link->watch_state = WATCH_NONE;
    if (ac != NULL)
        redisAsyncFree(ac); /* deferred by hiredis if its callback is running; callbacks get NULL */
}

static void
on_ignored(redisAsyncContext *ac, void *reply, void *privdata)
{
}

/* An address from two reply strings (an IP, or a host name hiredis then resolves: docs). */
static int
addr_from(const char *ip, size_t ip_len, const char *port, size_t port_len, pe_redis_addr_t *out)
{
    uint64_t v;
    if (ip_len == 0 || ip_len >= sizeof(out->ip) || memchr(ip, '\0', ip_len) != NULL ||
        pe_digits_parse(port, port_len, 10, 65535, &v) != 0 || v == 0)
        return -1;
    memcpy(out->ip, ip, ip_len);
    out->ip[ip_len] = '\0';
    out->port = (unsigned)v;
    return 0;
}

/* SENTINEL get-master-addr-by-name: [ip, port], or nil for a master it does not monitor. */
static void
on_master_addr(void *ctx, redisReply *reply)
{
    pe_redis_link_t *link = ctx;
    if (reply == NULL)
        return;
    pe_redis_addr_t addr;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        addr_from(reply->element[0]->str, reply->element[0]->len, reply->element[1]->str, reply->element[1]->len, &addr) != 0) {
        next_sentinel(link, reply->type == REDIS_REPLY_ERROR ? reply->str
                            : reply->type == REDIS_REPLY_NIL ? "does not monitor a master of that name"
                                                             : "odd answer to SENTINEL get-master-addr-by-name");
        return;
    }
    int moved = strcmp(addr.ip, link->master.ip) != 0 || addr.port != link->master.port;
    link->watch_state = WATCH_ON;
    link->master = addr;
    link->sentinels_tried = 0;
    if (link->state == LINK_CONNECTING && link->conns[0]->ac == NULL) {
        connect_master(link, &link->master);
    } else if (link->state != LINK_DOWN && moved) {
        /* A watch opened again while up (or while connecting) names another master. */
        llog(link, 1, "redis: thread %u: sentinel %s:%u names %s:%u master of %s: reconnecting", link->cfg->index,
             link->watch.addr.ip, link->watch.addr.port, addr.ip, addr.port, link->cfg->sentinel_master);
        link_fail(link, "the sentinel names another master");
    }
}

/* The words of s[0..len) separated by single spaces: at most max; returns how many. */
static size_t
split_words(const char *s, size_t len, const char **w, size_t *wl, size_t max)
{
    size_t n = 0;
    const char *end = s + len;
    while (s < end && n != max) {
        const char *sp = memchr(s, ' ', (size_t)(end - s)), *e = sp != NULL ? sp : end;
        w[n] = s;
        wl[n++] = (size_t)(e - s);
        s = sp != NULL ? sp + 1 : end;
    }
    return s == end ? n : max + 1;
}

/* The watch's subscription: "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>". */
static void
on_watch_event(redisAsyncContext *ac, void *_reply, void *privdata)
{
    pe_redis_link_t *link = privdata;
    redisReply *reply = _reply;
    if (reply == NULL || ac != link->watch.ac || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *w[5];
    size_t wl[5];
    pe_redis_addr_t addr;
    const char *name = link->cfg->sentinel_master;
    if (split_words(reply->element[2]->str, reply->element[2]->len, w, wl, 5) != 5 || wl[0] != strlen(name) ||
        memcmp(w[0], name, wl[0]) != 0 || addr_from(w[3], wl[3], w[4], wl[4], &addr) != 0)
        return; /* another master's failover, or nothing we understand */
    llog(link, 2, "redis: thread %u: sentinel %s:%u: failover of %s to %s:%u", link->cfg->index, link->watch.addr.ip,
         link->watch.addr.port, name, addr.ip, addr.port);
    link->master = addr;
    link->attempts = 0; /* not a failed attempt: link_fail must keep the watch that told us */
    if (link->state != LINK_DOWN)
        link_fail(link, "failover (+switch-master)");
    /* Reconnect now (within 50 ms, spread over the threads): the new master is ready. */
    link->attempts = 0;
    link->reconnect_at = h2o_now(link->loop) + (uint64_t)(rand() % 50);
}

/* Opens the watch on the current sentinel: AUTH (refusal ignored), the master's address, then
 * the subscription, in one write. */
static void
watch_open(pe_redis_link_t *link)
{
    const pe_redis_link_config_t *cfg = link->cfg;
    watch_close(link);
    link->watch.addr = cfg->seeds[link->sentinel];
    if (conn_connect(&link->watch) != 0) {
        next_sentinel(link, "cannot connect");
        return;
    }
    link->watch_state = WATCH_ASKING;
    if (cfg->password != NULL) {
        const char *argv[] = {"AUTH", cfg->password};
        size_t argvlen[] = {4, strlen(cfg->password)};
        redisAsyncCommandArgv(link->watch.ac, on_ignored, NULL, 2, argv, argvlen);
    }
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", cfg->sentinel_master};
    size_t argvlen[] = {8, 23, strlen(cfg->sentinel_master)};
    send_cmd_on(&link->watch, on_master_addr, link, 3, argv, argvlen);
    const char *argv2[] = {"SUBSCRIBE", "+switch-master"};
    size_t argvlen2[] = {9, 14};
    redisAsyncCommandArgv(link->watch.ac, on_watch_event, link, 2, argv2, argvlen2);
}

/* The current sentinel failed us (why): drop its watch and ask the next one. While connecting,
 * at once, until every sentinel has failed this attempt (then the attempt failed); otherwise
 * after PE_REDIS_SENTINEL_RETRY_MS (an up link), or at the next attempt (a down one). */
static void
next_sentinel(pe_redis_link_t *link, const char *why)
{
    const pe_redis_link_config_t *cfg = link->cfg;
    llog(link, link->attempts == 0 ? 1 : 3, "redis: thread %u: sentinel %s:%u: %.200s", cfg->index, link->watch.addr.ip,
         link->watch.addr.port, why != NULL ? why : "error");
    watch_close(link);
    link->sentinel = (link->sentinel + 1) % cfg->num_seeds;
    if (link->state != LINK_CONNECTING || link->conns[0]->ac != NULL) {
        link->rewatch_at = h2o_now(link->loop) + PE_REDIS_SENTINEL_RETRY_MS;
        return;
    }
    if (++link->sentinels_tried < cfg->num_seeds) {
        watch_open(link);
        return;
    }
    link->sentinels_tried = 0;
    link_fail(link, "no sentinel named the master");
}

static void
link_connect(pe_redis_link_t *link)
{
    const pe_redis_link_config_t *cfg = link->cfg;
    link->state = LINK_CONNECTING;
    link->keyspace_events = 0;
    link->slots_known = 0;
    if (cfg->sentinel_master == NULL) {
        connect_master(link, &cfg->seeds[link->seed]);
    } else if (link->watch_state == WATCH_ON) {
        /* The watch named the master and has heard of no failover since. */
        connect_master(link, &link->master);
    } else if (link->watch_state == WATCH_ASKING) {
        /* Opened while down: its answer connects (on_master_addr). */
    } else {
        link->sentinels_tried = 0;
        watch_open(link);
    }
}

/* Closes every connection of the link but the watch; pending callbacks run now with a NULL
 * reply. */
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
    const pe_redis_link_config_t *cfg = link->cfg;
    if (was_up) {
        llog(link, 1, "redis: thread %u lost the connection (%s); reconnecting", cfg->index, why != NULL ? why : "error");
    } else {
        if (link->attempts == 0 && cfg->sentinel_master != NULL)
            llog(link, 1, "redis: thread %u cannot reach the master of %s (%s); retrying", cfg->index, cfg->sentinel_master,
                 why != NULL ? why : "error");
        else if (link->attempts == 0)
            llog(link, 1, "redis: thread %u cannot connect to %s:%u (%s); retrying", cfg->index, link->conns[0]->addr.ip,
                 link->conns[0]->addr.port, why != NULL ? why : "error");
        if (cfg->sentinel_master == NULL)
            link->seed = (link->seed + 1) % cfg->num_seeds; /* try the next seed */
        else if (link->attempts % PE_REDIS_SENTINEL_ROTATE == PE_REDIS_SENTINEL_ROTATE - 1)
            link->blame_watch = 1; /* this sentinel keeps naming a master we cannot use */
    }
    link->state = LINK_DOWN;
    if (link->started)
        link->cb->on_down(link->ctx, was_up);
    close_conns(link);
    if (link->blame_watch) {
        link->blame_watch = 0;
        watch_close(link);
        link->sentinel = (link->sentinel + 1) % cfg->num_seeds;
    }
    /* Down with no watch: open one now rather than at the next attempt, so that the failover's
     * +switch-master, which may come during the backoff, is heard (a sentinel that fails here
     * is passed over at the next attempt). */
    if (cfg->sentinel_master != NULL && link->watch_state == WATCH_NONE && !link->destroying) {
        link->sentinels_tried = 0;
        watch_open(link);
    }
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
    } else if (!h2o_linklist_is_empty(&link->pending)) {
        /* Only the watch has commands while down. */
        cmd_t *oldest = H2O_STRUCT_FROM_MEMBER(cmd_t, link, link->pending.next);
        if (now - oldest->sent_at > PE_REDIS_TIMEOUT_MS + link->cfg->slack_ms) {
            if (oldest->conn == &link->watch)
                next_sentinel(link, "no answer in time");
            else if (link->state != LINK_DOWN)
                link_fail(link, err_timeout);
        }
    }
    if (link->state == LINK_UP && link->cfg->sentinel_master != NULL && link->watch_state == WATCH_NONE && now >= link->rewatch_at)
        watch_open(link);
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
    link->watch.link = link;
    /* Threads start on different sentinels: the watches spread over them. */
    link->sentinel = cfg->index % cfg->num_seeds;
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
    watch_close(link);
    for (size_t i = 0; i != link->nconns; ++i)
        pe_free(link->conns[i]);
    pe_free(link->slots);
    if (h2o_timeout_is_linked(&link->tick_entry))
        h2o_timeout_unlink(&link->tick_entry);
    h2o_timeout_dispose(link->loop, &link->tick_timeout);
    pe_free(link);
}

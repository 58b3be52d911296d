/*
 * engine_redis.c: the Redis Streams engine (--redis URL). Several pushedge processes share
 * channels and history through one Redis; a cursor from any of them resumes on any other.
 *
 * Storage and publishing live in Redis, in the function library of redis_lib.h: a channel is
 * the stream pe:{NAME}; pushedge_publish appends, trims and PUBLISHes the entry on the pub/sub
 * channel of the same name in one atomic step; pushedge_read answers a history read (gap, base,
 * a page of entries) in one round trip. A keyed publish passes the key's record
 * (pe:{NAME}:idem:KEY, same hash tag, so same Cluster slot) as a second key: the function checks
 * it, appends and records the ID with the window as its expiry in the same call, so the key is
 * honoured atomically and on every node sharing the Redis.
 *
 * Live path. Each node (event-loop thread) SUBSCRIBEs to the pub/sub channel of every channel
 * it has local subscribers for, once, whatever their number, and fans out locally (node.c).
 * Redis's cost per message is one PUBLISH to the nodes that listen, independent of how many
 * channels a node serves; XREAD BLOCK over every watched key would be re-issued per message
 * and grow with the channel count (docs/architecture.md).
 *
 * Connections. Each node has its own two connections, driven by its own loop
 * (redis_evloop.c): `cmd` for publishing and reads, pipelined, and `sub` in subscribe mode. No
 * thread hop per message and no lock: the per-node state below is touched by its thread only.
 * Shared connections would need a lock or a hop per command; a few connections per core is
 * nothing for Redis.
 *
 * The catch-up/live seam. node.c watches a channel, then reads its history, and relies on the
 * live feed covering everything after the read. With two connections a read could be served
 * before the SUBSCRIBE is in effect, and a message published in between would be in neither.
 * So reads of a channel wait until Redis has confirmed its subscription.
 *
 * Failure. A command unanswered for PE_REDIS_TIMEOUT_MS, a protocol error or a closed socket
 * tears both connections of the node down: every pending publish fails (the API answers 503,
 * never a false 200), reads fail (node.c retries them), and the node reconnects with
 * exponential backoff and full jitter. Once a channel is subscribed again, the node re-reads
 * it for every local subscriber from the position it had delivered (pe_ps_node__resync), so
 * what was published during the outage reaches everyone once, in order, or as a gap.
 *
 * Plain XADD producers. When Redis has keyspace notifications for streams on
 * (notify-keyspace-events containing K and t, or K and A), each node also subscribes to the
 * keyspace channel of its channels and fetches new entries with XRANGE after an "xadd" event
 * that no PUBLISH accounted for.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <h2o.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include "alloc.h"
#include "engine.h"
#include "json_text.h"
#include "redis_evloop.h"
#include "redis_lib.h"
#include "redis_reply.h"
#include "redis_url.h"
#include "strmap.h"

#define MAX_NODES 64
/* A command unanswered this long means a Redis that hangs: the connections are torn down. */
#define PE_REDIS_TIMEOUT_MS 3000
/* Reconnect backoff: full jitter over [0, min(cap, base * 2^attempt)]. */
#define PE_REDIS_BACKOFF_BASE_MS 100
#define PE_REDIS_BACKOFF_CAP_MS 5000
/* The timer that checks deadlines (command timeouts, reconnect). */
#define PE_REDIS_TICK_MS 100
/* Entries per XRANGE of the plain-XADD path. */
#define PE_REDIS_FETCH_PAGE 128
/* How long a channel without local subscribers stays subscribed (flapping clients). */
#define PE_REDIS_IDLE_MS 5000
/* Redis Cluster: masters one thread talks to, seeds in --redis, redirections per command. */
#define PE_REDIS_MAX_CONNS 16
#define PE_REDIS_MAX_SEEDS PE_REDIS_URL_MAX_SEEDS
#define PE_REDIS_MAX_REDIRECTS 5

const char pe_ps_err_redis_timeout[] = "the Redis engine did not answer in time";
const char pe_ps_err_redis_reply[] = "the Redis engine answered with an error";

typedef struct st_redis_engine_t redis_engine_t;
typedef struct st_redis_link_t redis_link_t;

/* One connection of a link: to a master (commands) or the subscriber connection. The struct
 * outlives its hiredis context (ac->data points here; a stale context is recognised by
 * conn->ac != ac) and is freed with the link. */
typedef struct st_redis_conn_t {
    redis_link_t *rl;
    redisAsyncContext *ac; /* NULL while down */
    int ready;             /* its setup (AUTH, SELECT, FUNCTION LOAD) was answered */
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
} redis_conn_t;

typedef enum en_link_state_t { LINK_DOWN, LINK_CONNECTING, LINK_UP } link_state_t;
typedef enum en_rchan_state_t { RCHAN_SUBSCRIBING, RCHAN_PRIMING, RCHAN_SUBSCRIBED, RCHAN_UNSUBSCRIBING } rchan_state_t;

/* A read waiting for its channel's subscription, or in flight. */
typedef struct st_read_t {
    h2o_linklist_t link; /* in rchan->waiting while queued */
    redis_link_t *rl;
    pe_start_t start;
    size_t max;
    pe_ps_read_cb cb;
    void *ctx;
    pe_ps_deferred_t d; /* for failures reported without a round trip */
    pe_ps_read_result_t result;
    size_t name_len;
    char name[PE_CHANNEL_MAXLEN + 1];
} read_t;

/* A channel this node subscribes to. Owned by the link (map and list) until rchan_remove. */
typedef struct st_rchan_t {
    h2o_linklist_t link; /* in rl->rchans */
    rchan_state_t state;
    unsigned watched : 1;   /* the node has local subscribers; else idle since idle_since */
    unsigned dead : 1;      /* removed from the link: freed when busy drops to 0 */
    unsigned unsub_pending; /* UNSUBSCRIBE confirmations still expected */
    unsigned busy;          /* commands and deferred calls that refer to the record */
    uint64_t idle_since;    /* loop ms */
    h2o_linklist_t waiting; /* read_t */
    pe_id_t last_posted;    /* newest entry handed to the node (the plain-XADD path's position) */
    uint64_t xadd_events;   /* keyspace "xadd" events and PUBLISHed entries since the last fetch */
    uint64_t published_seen;
    unsigned resync : 1;       /* re-read every local subscriber once subscribed (after a reconnect) */
    unsigned fetching : 1;     /* an XRANGE of the plain-XADD path is in flight */
    unsigned fetch_queued : 1; /* run_fetch is deferred on the node */
    unsigned refetch : 1;      /* an entry may be in the stream that no fetch has seen yet */
    pe_ps_deferred_t fetch_d;
    redis_link_t *rl;
    size_t key_len; /* "pe:{" NAME "}" */
    char key[PE_CHANNEL_MAXLEN + 6];
    size_t name_len;
    char name[PE_CHANNEL_MAXLEN + 1];
} rchan_t;

/* A command in flight on cmd, oldest first: replies come in order, so the head's age is the
 * link's wait. */
typedef struct st_cmd_t {
    h2o_linklist_t link;
    redis_link_t *rl;
    redis_conn_t *conn;
    char *buf; /* the formatted command, kept to follow a MOVED or ASK redirection */
    size_t len;
    unsigned redirects;
    uint64_t sent_at;
    void (*cb)(redis_link_t *rl, redisReply *reply, void *ctx); /* reply NULL: the link failed */
    void *ctx;
} cmd_t;

/* One node's connections and watched channels; touched by that node's thread only. */
struct st_redis_link_t {
    redis_engine_t *engine;
    pe_ps_node_t *node;
    h2o_evloop_t *loop;
    unsigned index;
    link_state_t state;
    redis_conn_t *conns[PE_REDIS_MAX_CONNS]; /* [0]: the seed; more for the masters of a cluster */
    size_t nconns;
    redis_conn_t sub; /* subscriptions, on the seed (a cluster forwards PUBLISH to every node) */
    uint8_t *slots;   /* cluster: slot -> index in conns (0xff: unknown, ask the seed) */
    int cluster;
    int slots_known;        /* the seed answered CLUSTER SLOTS (or said it is no cluster) */
    unsigned seed;          /* index in engine->seeds of the current seed */
    unsigned attempts;      /* failed connects in a row */
    uint64_t reconnect_at;  /* loop ms, while DOWN */
    int keyspace;           /* Redis sends keyspace events for streams */
    h2o_linklist_t pending; /* cmd_t */
    pe_strmap_t chans;      /* name -> rchan_t */
    h2o_linklist_t rchans;
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick_entry;
    int destroying;
    int reloading; /* a FUNCTION LOAD for an outdated library is in flight (reload_library) */
};

struct st_redis_engine_t {
    pe_ps_engine_t super;
    struct {
        char ip[INET6_ADDRSTRLEN];
        unsigned port;
    } seeds[PE_REDIS_MAX_SEEDS];
    unsigned nseeds;
    char *password;
    unsigned db;
    char *library;            /* the function library text */
    char maxlen[24], ttl[24]; /* our retention, passed with every publish and read */
    char window[24];          /* the idempotency window (ms), passed with every keyed publish */
    void (*log)(int level, const char *text);
    redis_link_t *links[MAX_NODES];
    unsigned up_links;   /* atomic */
    int warned_keyspace; /* atomic: the plain-XADD warning was logged */
};

static void link_fail(redis_link_t *rl, const char *why);
static void link_connect(redis_link_t *rl);
static void subscribe_chan(redis_link_t *rl, rchan_t *rc);

static void elog(redis_engine_t *e, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void
elog(redis_engine_t *e, int level, const char *fmt, ...)
{
    if (e->log == NULL)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    e->log(level, buf);
}

/* ---- messages from Redis --------------------------------------------------------------------- */

/* A message from the text Redis holds. Entries written by pushedge_publish are JSON; a plain XADD
 * may hold anything, and a value that is not JSON is delivered as a JSON string rather than
 * dropped or passed on broken. */
static pe_msg_t *
make_msg(pe_id_t id, const char *name, size_t name_len, const char *data, size_t len)
{
    json_error_t jerr;
    json_t *v = pe_json_load_untrusted(data, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    if (v != NULL) {
        json_decref(v);
        return pe_msg_new(id, name, name_len, data, len);
    }
    json_t *s = json_stringn(data, len);
    char *text = s != NULL ? json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(s);
    pe_msg_t *msg = pe_msg_new(id, name, name_len, text != NULL ? text : "null", text != NULL ? strlen(text) : 4);
    free(text);
    return msg;
}

/* "pe:{NAME}" -> NAME; returns 0 or -1. */
static int
name_of_key(const char *key, size_t len, const char **name, size_t *name_len)
{
    if (len < 6 || memcmp(key, "pe:{", 4) != 0 || key[len - 1] != '}')
        return -1;
    *name = key + 4;
    *name_len = len - 5;
    return 0;
}

static void
post(redis_link_t *rl, rchan_t *rc, pe_msg_t *msg)
{
    if (pe_id_cmp(msg->id, rc->last_posted) > 0)
        rc->last_posted = msg->id;
    pe_ps_node__deliver_live(rl->node, msg);
}

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

static int follow_redirect(redis_link_t *rl, cmd_t *c, const pe_redis_redirect_t *to);

static void
on_cmd_reply(redisAsyncContext *ac, void *_reply, void *privdata)
{
    cmd_t *c = privdata;
    redis_link_t *rl = c->rl;
    redisReply *reply = _reply;
    pe_redis_redirect_t redirect;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && c->redirects < PE_REDIS_MAX_REDIRECTS && rl->state != LINK_DOWN &&
        pe_redis_parse_redirect(reply->str, reply->len, &redirect) == 0 && follow_redirect(rl, c, &redirect) == 0)
        return; /* sent again; its callback runs with the final answer */
    h2o_linklist_unlink(&c->link);
    c->cb(rl, reply, c->ctx);
    redisFreeCommand(c->buf);
    pe_free(c);
}

/* Sends a command on conn. Returns 0; or -1 when conn is down (cb not called). */
static int
send_cmd_on(redis_conn_t *conn, void (*cb)(redis_link_t *, redisReply *, void *), void *ctx, int argc, const char **argv,
            const size_t *argvlen)
{
    if (conn == NULL || conn->ac == NULL)
        return -1;
    cmd_t *c = pe_calloc(1, sizeof(*c));
    c->rl = conn->rl;
    c->conn = conn;
    c->cb = cb;
    c->ctx = ctx;
    c->sent_at = h2o_now(conn->rl->loop);
    int n = redisFormatCommandArgv(&c->buf, argc, argv, argvlen);
    if (n < 0 || redisAsyncFormattedCommand(conn->ac, on_cmd_reply, c, c->buf, (size_t)n) != REDIS_OK) {
        if (n >= 0)
            redisFreeCommand(c->buf);
        pe_free(c);
        return -1;
    }
    c->len = (size_t)n;
    h2o_linklist_insert(&conn->rl->pending, &c->link);
    return 0;
}

/* Sends a command about key (routed to the slot's master in a cluster). Returns 0, or -1 when
 * the link cannot send it (cb not called). */
static int
send_cmd(redis_link_t *rl, const char *key, size_t key_len, void (*cb)(redis_link_t *, redisReply *, void *), void *ctx, int argc,
         const char **argv, const size_t *argvlen)
{
    redis_conn_t *conn = rl->conns[0];
    if (rl->cluster && rl->slots != NULL) {
        uint8_t i = rl->slots[key_slot(key, key_len)];
        if (i < rl->nconns)
            conn = rl->conns[i];
    }
    return send_cmd_on(conn, cb, ctx, argc, argv, argvlen);
}

/* ---- publishing ------------------------------------------------------------------------------ */

typedef struct st_publish_t {
    pe_ps_publish_cb cb;
    void *ctx;
    int keyed;
} publish_t;

static void
on_library_reloaded(redis_link_t *rl, redisReply *reply, void *ctx)
{
    rl->reloading = 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        elog(rl->engine, 1, "redis: reloading the function library failed: %.200s", reply->str);
}

/*
 * A keyed publish answered with a bare ID: the library in Redis predates keys (a node of an
 * older version connected after us and loaded its own, as every node does on connect), so the
 * key was not recorded. Load ours again on every master of this link; the publishes in between
 * are stored but not deduplicated (logged).
 */
static void
reload_library(redis_link_t *rl)
{
    if (rl->reloading)
        return;
    elog(rl->engine, 1, "redis: the function library in Redis ignores idempotency keys (an older pushedge loaded it): reloading");
    const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", rl->engine->library};
    size_t argvlen[] = {8, 4, 7, strlen(rl->engine->library)};
    for (size_t i = 0; i != rl->nconns; ++i)
        if (send_cmd_on(rl->conns[i], on_library_reloaded, NULL, 4, argv, argvlen) == 0)
            rl->reloading = 1;
}

static void
on_published(redis_link_t *rl, redisReply *reply, void *ctx)
{
    publish_t *p = ctx;
    pe_id_t id;
    redisReply *rid = reply;
    int replayed = 0;
    /* The keyed form answers {ID, replayed} (redis_lib.h). */
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_INTEGER) {
        rid = reply->element[0];
        replayed = reply->element[1]->integer != 0;
    }
    if (reply == NULL) {
        /* Sent, then the link failed (timeout, closed socket): Redis may have run it, or may
         * still run it when a hung server resumes and reads what we wrote. */
        p->cb(p->ctx, pe_ps_err_unconfirmed, NULL, 0);
    } else if (rid->type == REDIS_REPLY_STRING && pe_id_parse(rid->str, rid->len, &id) == 0) {
        if (p->keyed && rid == reply)
            reload_library(rl);
        if (replayed)
            pe_ps_node__count_replayed(rl->node);
        else
            pe_ps_node__count_published(rl->node);
        p->cb(p->ctx, NULL, &id, replayed);
    } else {
        elog(rl->engine, 1, "redis: pushedge_publish failed: %.200s", reply->type == REDIS_REPLY_ERROR ? reply->str : "odd reply");
        p->cb(p->ctx, pe_ps_err_unavailable, NULL, 0);
    }
    pe_free(p);
}

static const char *
do_publish(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t channel_len, const char *ikey, size_t ikey_len,
           const char *data, size_t data_len, pe_ps_publish_cb cb, void *ctx)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    redis_link_t *rl = self->links[pe_ps_node__index(node)];
    if (rl == NULL || rl->state != LINK_UP)
        return pe_ps_err_unavailable;
    char key[PE_CHANNEL_MAXLEN + 6];
    int klen = snprintf(key, sizeof(key), "pe:{%.*s}", (int)channel_len, channel);
    publish_t *p = pe_malloc(sizeof(*p));
    p->cb = cb;
    p->ctx = ctx;
    p->keyed = ikey != NULL;
    int ret;
    if (ikey == NULL) {
        const char *argv[] = {"FCALL", "pushedge_publish", "1", key, data, self->maxlen, self->ttl};
        size_t argvlen[] = {5, 16, 1, (size_t)klen, data_len, strlen(self->maxlen), strlen(self->ttl)};
        ret = send_cmd(rl, key, (size_t)klen, on_published, p, 7, argv, argvlen);
    } else {
        /* The record's name starts with the stream's, hash tag included: same Cluster slot. */
        char rec[PE_CHANNEL_MAXLEN + 6 + 6 + PE_PS_KEY_MAXLEN + 1];
        int rlen = snprintf(rec, sizeof(rec), "%s:idem:%.*s", key, (int)ikey_len, ikey);
        const char *argv[] = {"FCALL", "pushedge_publish", "2", key, rec, data, self->maxlen, self->ttl, self->window};
        size_t argvlen[] = {
            5, 16, 1, (size_t)klen, (size_t)rlen, data_len, strlen(self->maxlen), strlen(self->ttl), strlen(self->window)};
        ret = send_cmd(rl, key, (size_t)klen, on_published, p, 9, argv, argvlen);
    }
    if (ret != 0) {
        pe_free(p);
        return pe_ps_err_unavailable;
    }
    return NULL;
}

/* ---- reads ----------------------------------------------------------------------------------- */

static void
on_read_failed(pe_ps_deferred_t *d)
{
    read_t *r = H2O_STRUCT_FROM_MEMBER(read_t, d, d);
    r->cb(r->ctx, &r->result);
    pe_free(r);
}

static void
fail_read(redis_link_t *rl, read_t *r, const char *err)
{
    r->result = (pe_ps_read_result_t){.err = err};
    r->d.cb = on_read_failed;
    pe_ps_node__defer(rl->node, &r->d);
}

static void
on_read_reply(redis_link_t *rl, redisReply *reply, void *ctx)
{
    read_t *r = ctx;
    pe_ps_read_result_t *res = &r->result;
    *res = (pe_ps_read_result_t){0};
    if (reply == NULL) {
        res->err = pe_ps_err_unavailable;
        goto Done;
    }
    int gap, reached_end;
    size_t n;
    if (pe_redis_parse_read(reply, &gap, &res->base, &reached_end, &n) != 0) {
        elog(rl->engine, 1, "redis: pushedge_read failed: %.200s", reply->type == REDIS_REPLY_ERROR ? reply->str : "odd reply");
        res->err = pe_ps_err_redis_reply;
        goto Done;
    }
    res->gap = gap;
    res->reached_end = reached_end;
    if (n != 0)
        res->msgs = pe_malloc(n * sizeof(*res->msgs));
    for (size_t i = 0; i != n; ++i) {
        pe_id_t id;
        const char *data;
        size_t data_len;
        if (pe_redis_read_entry(reply, i, &id, &data, &data_len) != 0)
            continue;
        res->msgs[res->num_msgs++] = make_msg(id, r->name, r->name_len, data, data_len);
    }
Done:
    r->cb(r->ctx, res);
    pe_free(r);
}

static void
issue_read(redis_link_t *rl, read_t *r)
{
    char key[PE_CHANNEL_MAXLEN + 6], after[PE_ID_MAXLEN + 1], count[24];
    int klen = snprintf(key, sizeof(key), "pe:{%s}", r->name);
    const char *kind = r->start.kind == PE_START_NEW ? "new" : r->start.kind == PE_START_OLDEST ? "oldest" : "after";
    size_t alen = pe_id_format(r->start.after, after);
    int clen = snprintf(count, sizeof(count), "%zu", r->max);
    const char *ttl = rl->engine->ttl;
    const char *argv[] = {"FCALL_RO", "pushedge_read", "1", key, kind, after, r->start.strict ? "1" : "0", count, ttl};
    size_t argvlen[] = {8, 13, 1, (size_t)klen, strlen(kind), alen, 1, (size_t)clen, strlen(ttl)};
    if (send_cmd(rl, key, (size_t)klen, on_read_reply, r, 9, argv, argvlen) != 0)
        fail_read(rl, r, pe_ps_err_unavailable);
}

static void
do_read(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t channel_len, pe_start_t start, size_t max,
        pe_ps_read_cb cb, void *ctx)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    redis_link_t *rl = self->links[pe_ps_node__index(node)];
    read_t *r = pe_calloc(1, sizeof(*r));
    *r = (read_t){.rl = rl, .start = start, .max = max, .cb = cb, .ctx = ctx, .name_len = channel_len};
    memcpy(r->name, channel, channel_len);
    if (rl->state != LINK_UP) {
        fail_read(rl, r, pe_ps_err_unavailable);
        return;
    }
    rchan_t *rc = pe_strmap_get(&rl->chans, channel, channel_len);
    if (rc != NULL && rc->state != RCHAN_SUBSCRIBED) {
        h2o_linklist_insert(&rc->waiting, &r->link); /* the seam: after the subscription */
        return;
    }
    issue_read(rl, r);
}

/* ---- channel records ------------------------------------------------------------------------- */

/* A record is freed only when no command or deferred call refers to it (busy == 0); until then a
 * removed record is marked dead and the last completion frees it. */
static void
rchan_release(rchan_t *rc)
{
    if (--rc->busy == 0 && rc->dead)
        pe_free(rc);
}

static void
fail_waiting(redis_link_t *rl, rchan_t *rc)
{
    while (!h2o_linklist_is_empty(&rc->waiting)) {
        read_t *r = H2O_STRUCT_FROM_MEMBER(read_t, link, rc->waiting.next);
        h2o_linklist_unlink(&r->link);
        fail_read(rl, r, pe_ps_err_unavailable);
    }
}

/* Removes the record from the link (map, list) and frees it, now or at its last completion. */
static void
rchan_remove(redis_link_t *rl, rchan_t *rc)
{
    fail_waiting(rl, rc);
    pe_strmap_remove(&rl->chans, rc->name, rc->name_len);
    h2o_linklist_unlink(&rc->link);
    rc->dead = 1;
    if (rc->busy == 0)
        pe_free(rc);
}

static size_t
keyspace_name(redis_link_t *rl, rchan_t *rc, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "__keyspace@%u__:%s", rl->engine->db, rc->key);
}

/* ---- the plain-XADD path --------------------------------------------------------------------- */

static void schedule_fetch(rchan_t *rc);

static void
on_fetch_reply(redis_link_t *rl, redisReply *reply, void *ctx)
{
    rchan_t *rc = ctx;
    rc->fetching = 0;
    if (rc->dead || reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        rchan_release(rc);
        return;
    }
    for (size_t i = 0; i != reply->elements; ++i) {
        pe_id_t id;
        const char *data;
        size_t data_len;
        if (pe_redis_stream_entry(reply->element[i], &id, &data, &data_len) != 0 || pe_id_cmp(id, rc->last_posted) <= 0)
            continue;
        pe_msg_t *msg = make_msg(id, rc->name, rc->name_len, data, data_len);
        post(rl, rc, msg);
        pe_msg_release(msg);
    }
    /* A full page: more may follow; fetch again. Entries announced while this one was in
     * flight too (refetch). */
    if ((reply->elements == PE_REDIS_FETCH_PAGE || rc->refetch) && rl->state == LINK_UP) {
        rc->refetch = 1;
        schedule_fetch(rc);
    }
    rchan_release(rc);
}

static void
run_fetch(pe_ps_deferred_t *d)
{
    rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, fetch_d, d);
    rc->fetch_queued = 0;
    if (rc->dead) {
        rchan_release(rc);
        return;
    }
    redis_link_t *rl = rc->rl;
    if (rc->fetching) {
        /* The XRANGE in flight may have been answered before the entries that asked for this
         * one: its reply fetches again. */
        rc->refetch = 1;
        rchan_release(rc);
        return;
    }
    /* PUBLISHed entries arrive right after their keyspace event: only events no PUBLISH
     * accounted for are plain XADDs worth a round trip. */
    int needed = rc->xadd_events > rc->published_seen || rc->refetch;
    rc->xadd_events = rc->published_seen = 0;
    rc->refetch = 0;
    if (needed && !rc->fetching && rl->state == LINK_UP && rc->state == RCHAN_SUBSCRIBED) {
        char start[PE_ID_MAXLEN + 2], count[24];
        start[0] = '(';
        size_t slen = 1 + pe_id_format(rc->last_posted, start + 1);
        int clen = snprintf(count, sizeof(count), "%d", PE_REDIS_FETCH_PAGE);
        const char *argv[] = {"XRANGE", rc->key, start, "+", "COUNT", count};
        size_t argvlen[] = {6, rc->key_len, slen, 1, 5, (size_t)clen};
        if (send_cmd(rl, rc->key, rc->key_len, on_fetch_reply, rc, 6, argv, argvlen) == 0) {
            rc->fetching = 1;
            ++rc->busy;
        }
    }
    rchan_release(rc);
}

static void
schedule_fetch(rchan_t *rc)
{
    if (!rc->fetch_queued) {
        rc->fetch_queued = 1;
        ++rc->busy;
        pe_ps_node__defer(rc->rl->node, &rc->fetch_d);
    }
}

/* ---- subscriptions on sub -------------------------------------------------------------------- */

static void
release_waiting(redis_link_t *rl, rchan_t *rc)
{
    while (!h2o_linklist_is_empty(&rc->waiting)) {
        read_t *r = H2O_STRUCT_FROM_MEMBER(read_t, link, rc->waiting.next);
        h2o_linklist_unlink(&r->link);
        issue_read(rl, r);
    }
}

/* The seam is safe: release the reads that waited, and after a reconnect re-read every local
 * subscriber from its position. */
static void
set_subscribed(redis_link_t *rl, rchan_t *rc)
{
    rc->state = RCHAN_SUBSCRIBED;
    release_waiting(rl, rc);
    if (rc->resync) {
        rc->resync = 0;
        if (rc->watched)
            pe_ps_node__resync(rl->node, rc->name, rc->name_len);
    }
}

static void
on_primed(redis_link_t *rl, redisReply *reply, void *ctx)
{
    rchan_t *rc = ctx;
    if (!rc->dead && reply != NULL && rc->state == RCHAN_PRIMING) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_STRING) {
            pe_id_t base;
            if (pe_id_parse(reply->element[1]->str, reply->element[1]->len, &base) == 0 && pe_id_cmp(base, rc->last_posted) > 0)
                rc->last_posted = base;
        }
        set_subscribed(rl, rc);
    }
    rchan_release(rc);
}

/* Every subscription of the channel is in effect. On the plain-XADD path, first learn the
 * stream's newest ID (the fetch position); then release the reads that waited for the seam. */
static void
on_subscribed(redis_link_t *rl, rchan_t *rc)
{
    if (!rl->keyspace) {
        set_subscribed(rl, rc);
        return;
    }
    rc->state = RCHAN_PRIMING;
    const char *argv[] = {"FCALL_RO", "pushedge_read", "1", rc->key, "new", "0-0", "0", "0"};
    size_t argvlen[] = {8, 13, 1, rc->key_len, 3, 3, 1, 1};
    if (send_cmd(rl, rc->key, rc->key_len, on_primed, rc, 8, argv, argvlen) == 0)
        ++rc->busy;
    else
        rc->state = RCHAN_SUBSCRIBING; /* the link failed: it subscribes again on reconnect */
}

static void send_sub(redis_link_t *rl, const char *verb, const char *chan, size_t len);

static void
subscribe_chan(redis_link_t *rl, rchan_t *rc)
{
    rc->state = RCHAN_SUBSCRIBING;
    if (rl->state != LINK_UP)
        return; /* on connect */
    send_sub(rl, "SUBSCRIBE", rc->key, rc->key_len);
    if (rl->keyspace) {
        char ks[PE_CHANNEL_MAXLEN + 40];
        send_sub(rl, "SUBSCRIBE", ks, keyspace_name(rl, rc, ks, sizeof(ks)));
    }
}

static void
unsubscribe_chan(redis_link_t *rl, rchan_t *rc)
{
    rc->state = RCHAN_UNSUBSCRIBING;
    rc->unsub_pending = 1;
    send_sub(rl, "UNSUBSCRIBE", rc->key, rc->key_len);
    if (rl->keyspace) {
        char ks[PE_CHANNEL_MAXLEN + 40];
        send_sub(rl, "UNSUBSCRIBE", ks, keyspace_name(rl, rc, ks, sizeof(ks)));
        rc->unsub_pending = 2;
    }
}

/* hiredis calls this for the SUBSCRIBE and UNSUBSCRIBE confirmations and for every message;
 * privdata is the link, channels are looked up by name. hiredis 0.14 drops a channel's callback
 * when an UNSUBSCRIBE reply arrives, even if a SUBSCRIBE was sent after it: a channel is never
 * subscribed again before its unsubscription is confirmed (RCHAN_UNSUBSCRIBING). */
static void
on_sub_event(redisAsyncContext *ac, void *_reply, void *privdata)
{
    redis_link_t *rl = privdata;
    redisReply *reply = _reply;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str, *chan = reply->element[1]->str;
    size_t chan_len = reply->element[1]->len;
    int keyspace = strncmp(chan, "__keyspace@", 11) == 0;
    if (keyspace) {
        const char *colon = memchr(chan, ':', chan_len);
        if (colon == NULL)
            return;
        chan_len -= (size_t)(colon + 1 - chan);
        chan = colon + 1;
    }
    const char *name;
    size_t name_len;
    if (name_of_key(chan, chan_len, &name, &name_len) != 0)
        return;
    rchan_t *rc = pe_strmap_get(&rl->chans, name, name_len);
    if (rc == NULL)
        return;

    if (strcmp(kind, "subscribe") == 0) {
        /* With keyspace events the channel has two subscriptions; the second confirms both. */
        if (rc->state == RCHAN_SUBSCRIBING && (!rl->keyspace || keyspace))
            on_subscribed(rl, rc);
        return;
    }
    if (strcmp(kind, "unsubscribe") == 0) {
        if (rc->state == RCHAN_UNSUBSCRIBING && --rc->unsub_pending == 0) {
            if (rc->watched)
                subscribe_chan(rl, rc); /* watched again meanwhile */
            else
                rchan_remove(rl, rc);
        }
        return;
    }
    if (strcmp(kind, "message") != 0 || reply->element[2]->type != REDIS_REPLY_STRING || !rc->watched)
        return;
    const char *payload = reply->element[2]->str;
    size_t len = reply->element[2]->len;
    if (keyspace) {
        if (len == 4 && memcmp(payload, "xadd", 4) == 0 && rc->state == RCHAN_SUBSCRIBED) {
            ++rc->xadd_events;
            schedule_fetch(rc);
        }
        return;
    }
    /* "<id> <json>" from pushedge_publish */
    pe_id_t id;
    const char *json;
    size_t json_len;
    if (pe_redis_parse_announcement(payload, len, &id, &json, &json_len) != 0)
        return;
    ++rc->published_seen;
    if (rc->state != RCHAN_SUBSCRIBED || pe_id_cmp(id, rc->last_posted) <= 0)
        return; /* not live yet: the reads after the subscription cover it */
    if (rc->fetching || rc->xadd_events > rc->published_seen) {
        /* A plain XADD came before this entry (its event is not accounted for), or a fetch is
         * in flight: posting this one now would put it ahead of entries the fetch is still to
         * post, and they would then be dropped as older than the channel's position. Let the
         * fetch post it, in stream order. */
        rc->refetch = 1;
        schedule_fetch(rc);
        return;
    }
    pe_msg_t *msg = make_msg(id, rc->name, rc->name_len, json, json_len);
    post(rl, rc, msg);
    pe_msg_release(msg);
}

static void
send_sub(redis_link_t *rl, const char *verb, const char *chan, size_t len)
{
    const char *argv[] = {verb, chan};
    size_t argvlen[] = {strlen(verb), len};
    if (rl->sub.ac != NULL)
        redisAsyncCommandArgv(rl->sub.ac, on_sub_event, rl, 2, argv, argvlen);
}

static void
do_watch(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t len)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    redis_link_t *rl = self->links[pe_ps_node__index(node)];
    rchan_t *rc = pe_strmap_get(&rl->chans, channel, len);
    if (rc != NULL) {
        /* Idle (kept subscribed for a grace period) or being unsubscribed: take it back. */
        rc->watched = 1;
        return;
    }
    rc = pe_calloc(1, sizeof(*rc));
    rc->rl = rl;
    rc->watched = 1;
    h2o_linklist_init_anchor(&rc->waiting);
    rc->fetch_d.cb = run_fetch;
    memcpy(rc->name, channel, len);
    rc->name_len = len;
    rc->key_len = (size_t)snprintf(rc->key, sizeof(rc->key), "pe:{%.*s}", (int)len, channel);
    pe_strmap_set(&rl->chans, rc->name, len, rc);
    h2o_linklist_insert(&rl->rchans, &rc->link);
    subscribe_chan(rl, rc);
}

static void
do_unwatch(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t len)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    redis_link_t *rl = self->links[pe_ps_node__index(node)];
    rchan_t *rc = pe_strmap_get(&rl->chans, channel, len);
    if (rc == NULL)
        return;
    /* Kept subscribed for PE_REDIS_IDLE_MS (the tick unsubscribes): a channel whose only
     * subscriber reconnects costs no SUBSCRIBE round trip and no seam. */
    rc->watched = 0;
    rc->idle_since = h2o_now(rl->loop);
    fail_waiting(rl, rc);
}

/* The tick's sweep: unsubscribe channels idle for the grace period. */
static void
sweep_idle(redis_link_t *rl, uint64_t now)
{
    for (h2o_linklist_t *l = rl->rchans.next, *next; l != &rl->rchans; l = next) {
        next = l->next;
        rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, link, l);
        if (rc->watched || rc->state == RCHAN_UNSUBSCRIBING || now - rc->idle_since < PE_REDIS_IDLE_MS)
            continue;
        if (rl->state == LINK_UP && rc->state == RCHAN_SUBSCRIBED)
            unsubscribe_chan(rl, rc);
        else if (rl->state != LINK_UP)
            rchan_remove(rl, rc);
    }
}

/* ---- connecting ------------------------------------------------------------------------------ */

static void
on_keyspace_config(redis_link_t *rl, redisReply *reply, void *ctx)
{
    int on = 0;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        const char *v = reply->element[1]->str;
        on = strchr(v, 'K') != NULL && (strchr(v, 't') != NULL || strchr(v, 'A') != NULL);
    }
    rl->keyspace = on;
    /* Once per process: a backend that XADDs by hand would otherwise see its entries reach
     * subscribers only when they next read history, with nothing saying why. */
    if (!on && reply != NULL && !__atomic_exchange_n(&rl->engine->warned_keyspace, 1, __ATOMIC_RELAXED))
        elog(rl->engine, 1,
             "redis: notify-keyspace-events has no K and t: entries added with a plain XADD are not delivered live "
             "(publish through pushedge or FCALL pushedge_publish, or set notify-keyspace-events Kt)");
}

/* The link is up once the seed told whether it is a cluster and every connection it needs has
 * our functions loaded. */
static void
check_up(redis_link_t *rl)
{
    if (rl->state != LINK_CONNECTING || !rl->slots_known)
        return;
    for (size_t i = 0; i != rl->nconns; ++i)
        if (rl->conns[i]->ac != NULL && !rl->conns[i]->ready)
            return;
    rl->state = LINK_UP;
    rl->attempts = 0;
    if (rl->cluster)
        rl->keyspace = 0; /* keyspace events are local to each cluster node: not followed */
    __atomic_add_fetch(&rl->engine->up_links, 1, __ATOMIC_RELAXED);
    char masters[48] = "";
    if (rl->cluster)
        snprintf(masters, sizeof(masters), " (a cluster: %zu masters)", rl->nconns);
    elog(rl->engine, 2, "redis: thread %u connected to %s:%u%s%s", rl->index, rl->conns[0]->ip, rl->conns[0]->port, masters,
         rl->keyspace ? " (keyspace events on: plain XADD producers are delivered)" : "");
    for (h2o_linklist_t *l = rl->rchans.next; l != &rl->rchans; l = l->next) {
        rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, link, l);
        /* Re-read each local subscriber once subscribed: what was published while the link was
         * down, and reads that failed meanwhile, are caught up at once. */
        rc->resync = 1;
        subscribe_chan(rl, rc);
    }
    pe_ps_node__engine_state(rl->node, 1);
}

/* The last reply of a connection's setup: Redis answers and has our functions. */
static void
on_library_loaded(redis_link_t *rl, redisReply *reply, void *ctx)
{
    redis_conn_t *conn = ctx;
    if (reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        elog(rl->engine, 0, "redis: FUNCTION LOAD on %s:%u failed (Redis 7 is needed): %.200s", conn->ip, conn->port, reply->str);
        link_fail(rl, "FUNCTION LOAD failed");
        return;
    }
    conn->ready = 1;
    check_up(rl);
}

static void
on_auth_reply(redis_link_t *rl, redisReply *reply, void *ctx)
{
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        elog(rl->engine, 0, "redis: %s refused: %.200s", (const char *)ctx, reply->str);
        link_fail(rl, "AUTH or SELECT refused");
    }
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
        link_fail(conn->rl, ac->errstr);
    }
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    redis_conn_t *conn = ac->data;
    if (conn->ac != ac)
        return; /* a context the link already gave up */
    conn->ac = NULL;
    if (!conn->rl->destroying)
        link_fail(conn->rl, status == REDIS_OK ? "closed" : ac->errstr);
}

static int
conn_connect(redis_conn_t *conn)
{
    redis_link_t *rl = conn->rl;
    redisAsyncContext *ac = redisAsyncConnect(conn->ip, (int)conn->port);
    if (ac == NULL)
        return -1;
    if (ac->err) {
        elog(rl->engine, 1, "redis: connect to %s:%u: %s", conn->ip, conn->port, ac->errstr);
        redisAsyncFree(ac);
        return -1;
    }
    ac->data = conn;
    conn->ac = ac;
    conn->ready = 0;
    pe_redis_evloop_attach(ac, rl->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return 0;
}

static void on_cluster_slots(redis_link_t *rl, redisReply *reply, void *ctx);

/* Connects a command connection and pipelines its setup (hiredis queues it until the socket is
 * connected); the seed also learns the keyspace setting and the cluster's slots. */
static int
conn_open(redis_conn_t *conn, int is_seed)
{
    redis_link_t *rl = conn->rl;
    redis_engine_t *e = rl->engine;
    if (conn_connect(conn) != 0)
        return -1;
    if (e->password != NULL) {
        const char *argv[] = {"AUTH", e->password};
        size_t argvlen[] = {4, strlen(e->password)};
        send_cmd_on(conn, on_auth_reply, "AUTH", 2, argv, argvlen);
    }
    if (e->db != 0) {
        char db[16];
        int n = snprintf(db, sizeof(db), "%u", e->db);
        const char *argv[] = {"SELECT", db};
        size_t argvlen[] = {6, (size_t)n};
        send_cmd_on(conn, on_auth_reply, "SELECT", 2, argv, argvlen);
    }
    if (is_seed) {
        const char *argv[] = {"CONFIG", "GET", "notify-keyspace-events"};
        size_t argvlen[] = {6, 3, 22};
        send_cmd_on(conn, on_keyspace_config, NULL, 3, argv, argvlen);
        const char *argv2[] = {"CLUSTER", "SLOTS"};
        size_t argvlen2[] = {7, 5};
        send_cmd_on(conn, on_cluster_slots, NULL, 2, argv2, argvlen2);
    }
    const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", e->library};
    size_t argvlen[] = {8, 4, 7, strlen(e->library)};
    send_cmd_on(conn, on_library_loaded, conn, 4, argv, argvlen);
    return 0;
}

/* The connection to ip:port, opened (with its setup) if it is not; NULL if there is no room or
 * it cannot be opened. *index receives its index in conns. */
static redis_conn_t *
conn_get(redis_link_t *rl, const char *ip, unsigned port, size_t *index)
{
    size_t i;
    for (i = 0; i != rl->nconns; ++i)
        if (rl->conns[i]->port == port && strcmp(rl->conns[i]->ip, ip) == 0)
            break;
    if (i == rl->nconns) {
        if (rl->nconns == PE_REDIS_MAX_CONNS)
            return NULL;
        redis_conn_t *conn = pe_calloc(1, sizeof(*conn));
        conn->rl = rl;
        snprintf(conn->ip, sizeof(conn->ip), "%s", ip);
        conn->port = port;
        rl->conns[rl->nconns++] = conn;
    }
    redis_conn_t *conn = rl->conns[i];
    if (conn->ac == NULL && conn_open(conn, 0) != 0)
        return NULL;
    *index = i;
    return conn;
}

/* CLUSTER SLOTS: [[start, end, [ip, port, id], replicas...], ...]; an error means no cluster. */
static void
on_cluster_slots(redis_link_t *rl, redisReply *reply, void *ctx)
{
    if (reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY) {
        rl->cluster = 0;
    } else {
        rl->cluster = 1;
        if (rl->slots == NULL)
            rl->slots = pe_malloc(PE_REDIS_SLOTS);
        memset(rl->slots, 0xff, PE_REDIS_SLOTS);
        for (size_t i = 0; i != reply->elements; ++i) {
            unsigned from, to, port;
            const char *ip;
            int k = pe_redis_slot_range(reply->element[i], &from, &to, &ip, &port);
            if (k == 0)
                continue;
            if (k > 0 && *ip == '\0')
                ip = rl->conns[0]->ip; /* "the node you asked" */
            size_t idx;
            if (k < 0 || conn_get(rl, ip, port, &idx) == NULL) {
                link_fail(rl, "a cluster master cannot be reached");
                return;
            }
            memset(rl->slots + from, (int)idx, to - from + 1);
        }
    }
    rl->slots_known = 1;
    check_up(rl);
}

static void
on_asking(redis_link_t *rl, redisReply *reply, void *ctx)
{
}

/* A MOVED or ASK redirection (pe_redis_parse_redirect): send the command to that master (after
 * ASKING for ASK); MOVED also updates the slot map. An empty host is the node that answered.
 * Returns 0 if the command was sent again, -1 to hand the error to its callback. */
static int
follow_redirect(redis_link_t *rl, cmd_t *c, const pe_redis_redirect_t *r)
{
    int ask = r->ask;
    const char *ip = r->host[0] != '\0' ? r->host : c->conn->ip;
    size_t idx;
    redis_conn_t *to = conn_get(rl, ip, r->port, &idx);
    if (to == NULL)
        return -1;
    if (!ask && rl->slots != NULL)
        rl->slots[r->slot] = (uint8_t)idx;
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
link_connect(redis_link_t *rl)
{
    redis_engine_t *e = rl->engine;
    rl->state = LINK_CONNECTING;
    rl->keyspace = 0;
    rl->slots_known = 0;
    /* The seed is conns[0]; the other connections are opened from the slot map. */
    redis_conn_t *seed = rl->conns[0];
    snprintf(seed->ip, sizeof(seed->ip), "%s", e->seeds[rl->seed].ip);
    seed->port = e->seeds[rl->seed].port;
    snprintf(rl->sub.ip, sizeof(rl->sub.ip), "%s", seed->ip);
    rl->sub.port = seed->port;
    if (conn_open(seed, 1) != 0 || conn_connect(&rl->sub) != 0) {
        link_fail(rl, "cannot connect");
        return;
    }
    if (e->password != NULL) {
        const char *argv[] = {"AUTH", e->password};
        size_t argvlen[] = {4, strlen(e->password)};
        redisAsyncCommandArgv(rl->sub.ac, on_sub_auth, rl, 2, argv, argvlen);
    }
}

/* Closes every connection of the link; pending callbacks run now with a NULL reply. */
static void
close_conns(redis_link_t *rl)
{
    for (size_t i = 0; i <= rl->nconns; ++i) {
        redis_conn_t *conn = i == rl->nconns ? &rl->sub : rl->conns[i];
        redisAsyncContext *ac = conn->ac;
        conn->ac = NULL;
        conn->ready = 0;
        if (ac != NULL)
            redisAsyncFree(ac); /* deferred by hiredis if its callback is running */
    }
}

/* Tears the connections down and schedules a reconnect. Safe from inside hiredis callbacks. */
static void
link_fail(redis_link_t *rl, const char *why)
{
    if (rl->state == LINK_DOWN)
        return;
    if (rl->state == LINK_UP) {
        __atomic_sub_fetch(&rl->engine->up_links, 1, __ATOMIC_RELAXED);
        elog(rl->engine, 1, "redis: thread %u lost the connection (%s); reconnecting", rl->index, why != NULL ? why : "error");
        pe_ps_node__engine_state(rl->node, 0);
    } else {
        if (rl->attempts == 0)
            elog(rl->engine, 1, "redis: thread %u cannot connect to %s:%u (%s); retrying", rl->index, rl->conns[0]->ip,
                 rl->conns[0]->port, why != NULL ? why : "error");
        rl->seed = (rl->seed + 1) % rl->engine->nseeds; /* try the next seed */
    }
    rl->state = LINK_DOWN;
    close_conns(rl);
    /* Watched channels subscribe again on reconnect; the others are dropped. */
    for (h2o_linklist_t *l = rl->rchans.next, *next; l != &rl->rchans; l = next) {
        next = l->next;
        rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, link, l);
        if (rc->watched)
            rc->state = RCHAN_SUBSCRIBING;
        else
            rchan_remove(rl, rc);
    }
    uint64_t window = PE_REDIS_BACKOFF_BASE_MS << (rl->attempts < 10 ? rl->attempts : 10);
    if (window > PE_REDIS_BACKOFF_CAP_MS)
        window = PE_REDIS_BACKOFF_CAP_MS;
    ++rl->attempts;
    rl->reconnect_at = h2o_now(rl->loop) + (uint64_t)(rand() % (int)window) + 1;
}

static void
on_tick(h2o_timeout_entry_t *entry)
{
    redis_link_t *rl = H2O_STRUCT_FROM_MEMBER(redis_link_t, tick_entry, entry);
    uint64_t now = h2o_now(rl->loop);
    sweep_idle(rl, now);
    if (rl->state == LINK_DOWN && now >= rl->reconnect_at) {
        link_connect(rl);
    } else if (rl->state != LINK_DOWN && !h2o_linklist_is_empty(&rl->pending)) {
        cmd_t *oldest = H2O_STRUCT_FROM_MEMBER(cmd_t, link, rl->pending.next);
        if (now - oldest->sent_at > PE_REDIS_TIMEOUT_MS)
            link_fail(rl, pe_ps_err_redis_timeout);
    }
    h2o_timeout_link(rl->loop, &rl->tick_timeout, &rl->tick_entry);
}

/* ---- nodes ----------------------------------------------------------------------------------- */

static void
do_attach(pe_ps_engine_t *_self, pe_ps_node_t *node, unsigned index)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    if (index >= MAX_NODES)
        return;
    redis_link_t *rl = pe_calloc(1, sizeof(*rl));
    rl->engine = self;
    rl->node = node;
    rl->loop = pe_ps_node__loop(node);
    rl->index = index;
    h2o_linklist_init_anchor(&rl->pending);
    h2o_linklist_init_anchor(&rl->rchans);
    pe_strmap_init(&rl->chans);
    h2o_timeout_init(rl->loop, &rl->tick_timeout, PE_REDIS_TICK_MS);
    rl->tick_entry.cb = on_tick;
    h2o_timeout_link(rl->loop, &rl->tick_timeout, &rl->tick_entry);
    rl->conns[rl->nconns++] = pe_calloc(1, sizeof(redis_conn_t));
    rl->conns[0]->rl = rl;
    rl->sub.rl = rl;
    __atomic_store_n(&self->links[index], rl, __ATOMIC_RELEASE);
    link_connect(rl);
}

static void
do_detach(pe_ps_engine_t *_self, pe_ps_node_t *node, unsigned index)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    redis_link_t *rl = index < MAX_NODES ? self->links[index] : NULL;
    if (rl == NULL)
        return;
    rl->destroying = 1;
    if (rl->state == LINK_UP)
        __atomic_sub_fetch(&self->up_links, 1, __ATOMIC_RELAXED);
    rl->state = LINK_DOWN;
    close_conns(rl);
    for (size_t i = 0; i != rl->nconns; ++i)
        pe_free(rl->conns[i]);
    pe_free(rl->slots);
    /* A record with a deferred fetch stays allocated until the node runs it (as a no-op). */
    while (!h2o_linklist_is_empty(&rl->rchans))
        rchan_remove(rl, H2O_STRUCT_FROM_MEMBER(rchan_t, link, rl->rchans.next));
    pe_strmap_dispose(&rl->chans);
    if (h2o_timeout_is_linked(&rl->tick_entry))
        h2o_timeout_unlink(&rl->tick_entry);
    h2o_timeout_dispose(rl->loop, &rl->tick_timeout);
    __atomic_store_n(&self->links[index], NULL, __ATOMIC_RELEASE);
    pe_free(rl);
}

static int
do_is_ready(pe_ps_engine_t *_self)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    /* Every thread publishes through its own link: ready only when all of them are, so a load
     * balancer never sends a publish to a thread that would refuse it. */
    unsigned attached = 0;
    for (unsigned i = 0; i != MAX_NODES; ++i)
        attached += __atomic_load_n(&self->links[i], __ATOMIC_RELAXED) != NULL;
    return attached != 0 && __atomic_load_n(&self->up_links, __ATOMIC_RELAXED) == attached;
}

static void
do_destroy(pe_ps_engine_t *_self)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    pe_free(self->password);
    pe_free(self->library);
    pe_free(self);
}

static const pe_ps_engine_ops_t redis_ops = {
    .publish = do_publish,
    .watch = do_watch,
    .unwatch = do_unwatch,
    .read = do_read,
    .attach = do_attach,
    .detach = do_detach,
    .is_ready = do_is_ready,
    .destroy = do_destroy,
};

/* ---- creation -------------------------------------------------------------------------------- */

/* Resolves each seed of the URL (once, here at start: hiredis would resolve synchronously on
 * every reconnect) and takes its password and database. */
static int
parse_url(redis_engine_t *self, const char *url, char *err, size_t errlen)
{
    pe_redis_url_t u;
    const char *why = pe_redis_url_parse(url, &u);
    if (why != NULL) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    for (size_t i = 0; i != u.num_seeds; ++i) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
        int r = getaddrinfo(u.seeds[i].host, NULL, &hints, &res);
        if (r != 0) {
            snprintf(err, errlen, "%s: %s", u.seeds[i].host, gai_strerror(r));
            return -1;
        }
        const void *addr = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                                      : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, addr, self->seeds[self->nseeds].ip, sizeof(self->seeds[0].ip));
        freeaddrinfo(res);
        self->seeds[self->nseeds++].port = u.seeds[i].port;
    }
    if (u.password != NULL)
        self->password = pe_strndup(u.password, u.password_len);
    self->db = u.db;
    return 0;
}

pe_ps_engine_t *
pe_ps_engine_create_redis(const pe_ps_options_t *opts, const char *url, char *err, size_t errlen)
{
    redis_engine_t *self = pe_calloc(1, sizeof(*self));
    self->super.ops = &redis_ops;
    self->super.name = "redis";
    self->super.opts = *opts;
    self->log = opts->log;
    if (parse_url(self, url, err, errlen) != 0) {
        do_destroy(&self->super);
        return NULL;
    }
    unsigned long long size = opts->history_size == 0 ? 1 : opts->history_size;
    snprintf(self->maxlen, sizeof(self->maxlen), "%llu", size);
    snprintf(self->ttl, sizeof(self->ttl), "%llu", (unsigned long long)opts->history_ttl_ms);
    unsigned long long window = pe_ps__idempotency_window_ms(opts);
    snprintf(self->window, sizeof(self->window), "%llu", window);
    self->library = pe_redis_lib_build(size, (unsigned long long)opts->history_ttl_ms, window);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    return &self->super;
}

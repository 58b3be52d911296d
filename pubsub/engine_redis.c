/*
 * engine_redis.c: the Redis Streams engine (--redis URL): the engine's ops (engine.h) and each
 * node's channel state machine, on top of one Redis link per node (redis_link.c). Several
 * pushedge processes share channels and history through one Redis; a cursor from any of them
 * resumes on any other.
 *
 * Storage and publishing live in Redis, in the function library (redis_lib.lua): a channel is
 * the stream pe:{NAME}; pushedge_publish appends, trims and PUBLISHes the entry on the pub/sub
 * channel of the same name in one atomic step; pushedge_read answers a history read (gap, base,
 * a page of entries) in one round trip. A keyed publish passes the key's record
 * (pe:{NAME}:idem:KEY, same hash tag, so same Cluster slot) as a second key: the function checks
 * it, appends and records the ID with the window as its expiry in the same call, so the key is
 * honoured atomically and on every node sharing the Redis. A node gathers the publishes of one
 * loop iteration per channel and sends several as one pushedge_publish_batch call, announced
 * to the subscribing nodes a few KiB per PUBLISH (or, with --redis-batch-announce 0, as
 * pushedge_publish_many, one PUBLISH per message, what older versions read): redis_publish.c,
 * docs/architecture.md "Publishing through Redis".
 *
 * Live path. Each node (event-loop thread) SUBSCRIBEs to the pub/sub channel of every channel
 * it has local subscribers for, once, whatever their number, and fans out locally (node.c).
 * Redis's cost per message is one PUBLISH to the nodes that listen, independent of how many
 * channels a node serves; XREAD BLOCK over every watched key would be re-issued per message
 * and grow with the channel count (docs/architecture.md).
 *
 * Links. Each node has its own link (its command and subscriber connections), driven by its
 * own loop: no thread hop per message and no lock; the per-node state below is touched by its
 * thread only. The link reports up and down and hands over replies and pub/sub events through
 * callbacks; the channel records are this file's alone.
 *
 * The catch-up/live seam. node.c watches a channel, then reads its history, and relies on the
 * live feed covering everything after the read. With two connections a read could be served
 * before the SUBSCRIBE is in effect, and a message published in between would be in neither.
 * So reads of a channel wait until Redis has confirmed its subscription.
 *
 * Failure. When the link goes down every pending publish fails (the API answers 503, never a
 * false 200), reads fail (node.c retries them), and the link reconnects. Once a channel is
 * subscribed again, the node re-reads it for every local subscriber from the position it had
 * delivered (pe_ps_node__resync), so what was published during the outage reaches everyone
 * once, in order, or as a gap.
 *
 * Control messages (pe_ps_control_publish: revocation, edge/core/revoke.c). Every thread's link
 * also SUBSCRIBEs to PE_REDIS_CONTROL (no braces: never a stream's key), on every connect; a
 * control message is PUBLISHed there as "<instance> <text>", where the instance is random per
 * process, so each thread of every process gets it once on its own connection and the sender's
 * threads skip their own (the edge hands it to its own threads directly).
 *
 * Presence and the user registry (docs/architecture.md "Presence and the user registry"): a
 * thread sends its connections' registrations on its own link and keeps them to send again when
 * the link comes back (or when the node learns it was swept as dead); thread 0 beats for the
 * node every second (pushedge_beat) and sweeps the nodes that stopped beating.
 *
 * Sentinel and WAIT. With a redis+sentinel:// URL the link finds the master through the
 * sentinels and follows failovers (redis_link.c); to this file a failover is a link down and up
 * again, and the resync above brings every subscriber back from its own position. Replication
 * is asynchronous: a publish Redis acknowledged may not have reached a replica when the master
 * dies, and the promoted replica then never had it. With redis_wait_replicas, each publish is
 * followed by WAIT on the connection that stored it (WAIT counts that connection's writes); the
 * 200 waits for it, and too few acknowledgements answer pe_ps_err_not_replicated (stored on the
 * master, not confirmed durable). Publishes sent on one connection while a WAIT blocks it queue
 * behind it and are then covered by one replication round trip together.
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
#include <unistd.h>
#include <h2o.h>
#include <hiredis/hiredis.h>
#include "alloc.h"
#include "engine.h"
#include "json_text.h"
#include "recent.h"
#include "redis_engine.h"
#include "redis_lib.h"
#include "redis_link.h"
#include "redis_reply.h"
#include "redis_url.h"
#include "strmap.h"

/* Entries per XRANGE of the plain-XADD path. */
#define PE_REDIS_FETCH_PAGE 128
/* Room for a registry key or a node-set entry: a user id (at most 256 bytes, edge/identity) or
 * a channel name, a connection id and a few bytes of prefix. */
#define PE_REDIS_REG_KEY_MAX 400
/* How long a channel without local subscribers stays subscribed (flapping clients). */
#define PE_REDIS_IDLE_MS 5000
/* How often idle channels are looked for. */
#define PE_REDIS_SWEEP_MS 100
const char pe_ps_err_redis_reply[] = "the Redis engine answered with an error";

typedef enum en_rchan_state_t { RCHAN_SUBSCRIBING, RCHAN_PRIMING, RCHAN_SUBSCRIBED, RCHAN_UNSUBSCRIBING } rchan_state_t;

/* A read waiting for its channel's subscription, or in flight, or waiting for another's answer. */
typedef struct st_read_t {
    h2o_linklist_t link; /* in rchan->waiting while queued, or in its leader's joined */
    rnode_t *rn;
    /* A leader (the read sent to Redis for its channel): the channel, counted in its busy, whose
     * cache absorbs the answer, and the reads that asked meanwhile (answered from it). */
    struct st_rchan_t *rc;
    h2o_linklist_t joined;
    unsigned epoch;    /* the channel cache's epoch when sent */
    uint64_t live_seq; /* the channel's live_seq when asked (a joiner) or sent (a leader) */
    pe_start_t start;
    size_t max;
    pe_ps_read_cb cb;
    void *ctx;
    pe_ps_deferred_t d; /* for failures reported without a round trip */
    pe_ps_read_result_t result;
    size_t name_len;
    char name[PE_CHANNEL_MAXLEN + 1];
} read_t;

/* A channel this node subscribes to. Owned by the node's rnode (map and list) until
 * rchan_remove. */
typedef struct st_rchan_t {
    h2o_linklist_t link; /* in rn->rchans */
    rchan_state_t state;
    unsigned watched : 1;      /* the node has local subscribers; else idle since idle_since */
    unsigned dead : 1;         /* removed from the node: freed when busy drops to 0 */
    unsigned unsub_pending;    /* UNSUBSCRIBE confirmations still expected */
    unsigned busy;             /* commands and deferred calls that refer to the record */
    uint64_t idle_since;       /* loop ms */
    h2o_linklist_t waiting;    /* read_t */
    pe_id_t last_posted;       /* newest entry handed to the node (the plain-XADD path's position) */
    uint64_t xadd_events;      /* keyspace "xadd" events and PUBLISHed entries since the last fetch */
    uint64_t published_seen;   /* (only those whose event counted: count_announced) */
    unsigned resync : 1;       /* re-read every local subscriber once subscribed (after a reconnect) */
    unsigned fetching : 1;     /* an XRANGE of the plain-XADD path is in flight */
    unsigned fetch_queued : 1; /* run_fetch is deferred on the node */
    unsigned refetch : 1;      /* an entry may be in the stream that no fetch has seen yet */
    pe_ps_deferred_t fetch_d;
    /* Catch-up (recent.c): the channel's recent live messages, the read sent to Redis for it
     * (others asking meanwhile join it; NULL when none, or when the cache's epoch changed since)
     * and the number of live messages posted so far (a joiner's freshness). */
    pe_recent_t recent;
    struct st_read_t *leader;
    uint64_t live_seq;
    rnode_t *rn;
    size_t key_len; /* "pe:{" NAME "}" */
    char key[PE_CHANNEL_MAXLEN + 6];
    size_t name_len;
    char name[PE_CHANNEL_MAXLEN + 1];
} rchan_t;

/* How often thread 0 beats and looks for dead nodes (ms). */
#define PE_REDIS_BEAT_MS 1000

static void subscribe_chan(rnode_t *rn, rchan_t *rc);
static void rchan_remove(rnode_t *rn, rchan_t *rc);
static void register_all(rnode_t *rn);
static void send_beat(rnode_t *rn);

/* ---- messages from Redis --------------------------------------------------------------------- */

/* A message from the text Redis holds (an announcement, a read's entry). Entries written by
 * pushedge_publish are JSON; a plain XADD may hold anything, and a value that is not JSON is
 * delivered as a JSON string rather than dropped or passed on broken. */
static pe_msg_t *
make_msg(pe_id_t id, const char *name, size_t name_len, const char *data, size_t len)
{
    /* A presence event (redis_lib.lua "append"): \x1e, j or l, then the event's JSON. */
    if (len > 2 && data[0] == '\x1e' && (data[1] == 'j' || data[1] == 'l'))
        return pe_ps__msg_new_kind(id, name, name_len, data + 2, len - 2, data[1] == 'j' ? PE_MSG_JOIN : PE_MSG_LEAVE);
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

/* Every entry posted here is live (the node fans it out at once). Its acceptance is known only
 * as its ID's millisecond, Redis's clock at the XADD (the announcement format is shared by every
 * pushedge version and carries nothing more): the middle of that millisecond, never later than
 * now, so the delivery-latency histogram is exact to +-0.5 ms when Redis and this host agree on
 * the time (the same host, or NTP). An entry added with an explicit ID has no such meaning: one
 * from the future counts from now. */
static void
stamp_accepted(pe_msg_t *msg)
{
    uint64_t now = pe_msg_clock_us(), at = msg->id.ms * 1000 + 500;
    msg->accepted_us = msg->id.ms != 0 && msg->id.ms < UINT64_MAX / 1000 - 1 && at < now ? at : now;
}

static void
post(rnode_t *rn, rchan_t *rc, pe_msg_t *msg)
{
    stamp_accepted(msg);
    if (pe_id_cmp(msg->id, rc->last_posted) > 0)
        rc->last_posted = msg->id;
    /* Into the cache first: a catch-up answered from it later holds everything fanned out. */
    pe_recent_push(&rc->recent, msg);
    ++rc->live_seq;
    pe_ps_node__deliver_live(rn->node, msg);
}

/* ---- reads ----------------------------------------------------------------------------------- */

/*
 * A node's history read goes, in this order, to: the channel's cache (recent.c), answered on
 * the next turn of the loop; the channel's read in flight (its leader), answered from the
 * leader's reply; or Redis, as the channel's new leader. Reads that wait for the subscription
 * are released together, the earliest start first, so the others can share its reply. A storm
 * of catch-ups of one channel thus costs one FCALL, then none once the cache is anchored.
 */

static void route_read(rnode_t *rn, rchan_t *rc, read_t *r);

/* Hands r its answer (r->result, whose messages the callback takes) and frees it. */
static void
finish_read(read_t *r)
{
    r->cb(r->ctx, &r->result);
    pe_free(r);
}

static void
on_read_deferred(pe_ps_deferred_t *d)
{
    finish_read(H2O_STRUCT_FROM_MEMBER(read_t, d, d));
}

static void
fail_read(rnode_t *rn, read_t *r, const char *err)
{
    r->result = (pe_ps_read_result_t){.err = err};
    r->d.cb = on_read_deferred;
    pe_ps_node__defer(rn->node, &r->d);
}

/* Fills r->result from the channel's cache if it can answer (returns 1). */
static int
serve_from_cache(rnode_t *rn, rchan_t *rc, read_t *r)
{
    uint64_t ttl = rn->engine->super.opts.history_ttl_ms, now = pe_ps__now_ms();
    /* Entries past the age limit count as removed for Redis's read: not answered from here. */
    if (ttl != 0 && now > ttl)
        pe_recent_expire(&rc->recent, now - ttl);
    if (!pe_recent_serve(&rc->recent, r->start, r->max, &r->result))
        return 0;
    pe_ps_node__count_read(rn->node, PE_PS_READ_CACHE);
    return 1;
}

/* Routes every read of list, the earliest start first (it may become the leader the others are
 * answered from). */
static void
route_reads(rnode_t *rn, rchan_t *rc, h2o_linklist_t *list)
{
    read_t *first = NULL;
    for (h2o_linklist_t *l = list->next; l != list; l = l->next) {
        read_t *r = H2O_STRUCT_FROM_MEMBER(read_t, link, l);
        if (first == NULL || pe_recent_start_cmp(r->start, first->start) < 0)
            first = r;
    }
    if (first == NULL)
        return;
    h2o_linklist_unlink(&first->link);
    route_read(rn, rc, first);
    while (!h2o_linklist_is_empty(list)) {
        read_t *r = H2O_STRUCT_FROM_MEMBER(read_t, link, list->next);
        h2o_linklist_unlink(&r->link);
        route_read(rn, rc, r);
    }
}

/* Answers the reads that joined leader from its reply res (borrowed; the leader's own messages
 * stay with it); those it cannot answer are routed again. */
static void
answer_joined(read_t *leader, const pe_ps_read_result_t *res)
{
    rnode_t *rn = leader->rn;
    rchan_t *rc = leader->rc;
    int usable = rc != NULL && !rc->dead;
    h2o_linklist_t again;
    h2o_linklist_init_anchor(&again);
    while (!h2o_linklist_is_empty(&leader->joined)) {
        read_t *j = H2O_STRUCT_FROM_MEMBER(read_t, link, leader->joined.next);
        h2o_linklist_unlink(&j->link);
        if (res->err != NULL) {
            j->result = (pe_ps_read_result_t){.err = res->err};
            finish_read(j);
            continue;
        }
        if (usable && serve_from_cache(rn, rc, j)) {
            finish_read(j);
            continue;
        }
        /* Fresh: nothing was posted live between the leader's sending and this read's asking,
         * so what the leader's read saw as the end is the end for this one too. */
        int fresh = j->live_seq <= leader->live_seq;
        if (pe_recent_share(res, leader->start, leader->max, fresh, j->start, j->max, &j->result)) {
            pe_ps_node__count_read(rn->node, PE_PS_READ_SHARED);
            finish_read(j);
            continue;
        }
        h2o_linklist_insert(&again, &j->link);
    }
    if (usable) {
        route_reads(rn, rc, &again);
    } else {
        while (!h2o_linklist_is_empty(&again)) {
            read_t *j = H2O_STRUCT_FROM_MEMBER(read_t, link, again.next);
            h2o_linklist_unlink(&j->link);
            fail_read(rn, j, pe_ps_err_unavailable);
        }
    }
}

static void rchan_release(rchan_t *rc);

static void
on_read_reply(void *ctx, redisReply *reply)
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
        elog(r->rn->engine, 1, "redis: pushedge_read failed: %.200s", reply->type == REDIS_REPLY_ERROR ? reply->str : "odd reply");
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
Done:;
    rchan_t *rc = r->rc;
    if (rc != NULL) {
        if (rc->leader == r)
            rc->leader = NULL;
        if (!rc->dead) {
            pe_recent_absorb(&rc->recent, r->epoch, res);
            /* A quiet channel's position: the next subscribers without a cursor are answered
             * from the cache (recent.c). */
            if (r->start.kind == PE_START_NEW && res->err == NULL && !res->gap)
                pe_recent_learn_newest(&rc->recent, r->epoch, res->base);
        }
    }
    /* The joined reads first: the leader's callback takes its messages. */
    answer_joined(r, res);
    finish_read(r);
    if (rc != NULL)
        rchan_release(rc);
}

static void
issue_read(rnode_t *rn, read_t *r)
{
    char key[PE_CHANNEL_MAXLEN + 6], after[PE_ID_MAXLEN + 1], count[24];
    int klen = snprintf(key, sizeof(key), "pe:{%s}", r->name);
    const char *kind = r->start.kind == PE_START_NEW ? "new" : r->start.kind == PE_START_OLDEST ? "oldest" : "after";
    size_t alen = pe_id_format(r->start.after, after);
    int clen = snprintf(count, sizeof(count), "%zu", r->max);
    const char *ttl = rn->engine->ttl;
    const char *argv[] = {"FCALL_RO", "pushedge_read", "1", key, kind, after, r->start.strict ? "1" : "0", count, ttl};
    size_t argvlen[] = {8, 13, 1, (size_t)klen, strlen(kind), alen, 1, (size_t)clen, strlen(ttl)};
    pe_ps_node__count_read(rn->node, PE_PS_READ_ENGINE);
    if (pe_redis_link_command(rn->link, key, (size_t)klen, on_read_reply, r, 9, argv, argvlen) != 0) {
        /* Not sent (nothing joined it yet): no longer the channel's leader; fails later. */
        rchan_t *rc = r->rc;
        if (rc != NULL) {
            if (rc->leader == r)
                rc->leader = NULL;
            r->rc = NULL;
            rchan_release(rc);
        }
        fail_read(rn, r, pe_ps_err_unavailable);
    }
}

/* Sends r to its channel's cache, its read in flight, or Redis (above). */
static void
route_read(rnode_t *rn, rchan_t *rc, read_t *r)
{
    if (!pe_redis_link_is_up(rn->link)) {
        fail_read(rn, r, pe_ps_err_unavailable);
        return;
    }
    if (rc != NULL && rc->state != RCHAN_SUBSCRIBED) {
        h2o_linklist_insert(&rc->waiting, &r->link); /* the seam: after the subscription */
        return;
    }
    if (rc != NULL && rn->engine->recent_cap != 0) {
        if (serve_from_cache(rn, rc, r)) {
            /* A snapshot of now: what is posted later reaches the subscriber's entry live. */
            r->d.cb = on_read_deferred;
            pe_ps_node__defer(rn->node, &r->d);
            return;
        }
        if (rc->leader != NULL) {
            h2o_linklist_insert(&rc->leader->joined, &r->link);
            return;
        }
        rc->leader = r;
        r->rc = rc;
        ++rc->busy;
        r->epoch = pe_recent_epoch(&rc->recent);
        r->live_seq = rc->live_seq;
    }
    issue_read(rn, r);
}

static void
do_read(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t channel_len, pe_start_t start, size_t max,
        pe_ps_read_cb cb, void *ctx)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    read_t *r = pe_calloc(1, sizeof(*r));
    *r = (read_t){.rn = rn, .start = start, .max = max, .cb = cb, .ctx = ctx, .name_len = channel_len};
    h2o_linklist_init_anchor(&r->joined);
    memcpy(r->name, channel, channel_len);
    rchan_t *rc = pe_strmap_get(&rn->chans, channel, channel_len);
    if (rc != NULL)
        r->live_seq = rc->live_seq; /* when it asked: see answer_joined */
    route_read(rn, rc, r);
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

/* The live feed starts, stops or may have missed an entry: the cache starts a new epoch, and
 * the read in flight (from the old one) takes no more joiners. */
static void
reset_recent(rchan_t *rc)
{
    pe_recent_reset(&rc->recent);
    rc->leader = NULL;
}

static void
fail_waiting(rnode_t *rn, rchan_t *rc)
{
    while (!h2o_linklist_is_empty(&rc->waiting)) {
        read_t *r = H2O_STRUCT_FROM_MEMBER(read_t, link, rc->waiting.next);
        h2o_linklist_unlink(&r->link);
        fail_read(rn, r, pe_ps_err_unavailable);
    }
}

/* Removes the record from the node (map, list) and frees it, now or at its last completion. */
static void
rchan_remove(rnode_t *rn, rchan_t *rc)
{
    fail_waiting(rn, rc);
    reset_recent(rc);
    pe_recent_dispose(&rc->recent);
    pe_strmap_remove(&rn->chans, rc->name, rc->name_len);
    h2o_linklist_unlink(&rc->link);
    rc->dead = 1;
    if (rc->busy == 0)
        pe_free(rc);
}

static size_t
keyspace_name(rnode_t *rn, rchan_t *rc, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "__keyspace@%u__:%s", rn->engine->link_cfg.db, rc->key);
}

/* ---- the plain-XADD path --------------------------------------------------------------------- */

static void schedule_fetch(rchan_t *rc);

static void
on_fetch_reply(void *ctx, redisReply *reply)
{
    rchan_t *rc = ctx;
    rnode_t *rn = rc->rn;
    rc->fetching = 0;
    int gap, reached_end;
    pe_id_t base;
    size_t n;
    if (rc->dead || reply == NULL || pe_redis_parse_read(reply, &gap, &base, &reached_end, &n) != 0) {
        rchan_release(rc);
        return;
    }
    for (size_t i = 0; i != n; ++i) {
        pe_id_t id;
        const char *data;
        size_t data_len;
        if (pe_redis_read_entry(reply, i, &id, &data, &data_len) != 0 || pe_id_cmp(id, rc->last_posted) <= 0)
            continue;
        if (gap) {
            base = id; /* (the page's newest, once the loop is done) */
            continue;
        }
        pe_msg_t *msg = make_msg(id, rc->name, rc->name_len, data, data_len);
        post(rn, rc, msg);
        pe_msg_release(msg);
    }
    if (gap) {
        /* Entries after the position were trimmed before this read could take them (a burst of
         * plain XADDs past a small --history-size): the live feed missed them. Every subscriber
         * reads again from its own position, and is told of the gap there; the cache starts a
         * new epoch. */
        if (pe_id_cmp(base, rc->last_posted) > 0)
            rc->last_posted = base;
        reset_recent(rc);
        pe_ps_node__resync(rn->node, rc->name, rc->name_len);
    }
    /* A page that did not reach the end: more follow; fetch again. Entries announced while this
     * one was in flight too (refetch). */
    if ((!reached_end || rc->refetch) && pe_redis_link_is_up(rn->link)) {
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
    rnode_t *rn = rc->rn;
    if (rc->fetching) {
        /* The XRANGE in flight may have been answered before the entries that asked for this
         * one: its reply fetches again. */
        rc->refetch = 1;
        rchan_release(rc);
        return;
    }
    /* PUBLISHed entries arrive right after their keyspace event: only events no PUBLISH
     * accounted for are plain XADDs worth a round trip (or an entry whose event was missed:
     * count_announced sets refetch). */
    int needed = rc->xadd_events > rc->published_seen || rc->refetch;
    rc->xadd_events = rc->published_seen = 0;
    rc->refetch = 0;
    if (needed && !rc->fetching && pe_redis_link_is_up(rn->link) && rc->state == RCHAN_SUBSCRIBED) {
        /* A history read from the position, not a bare XRANGE: it tells a gap (entries trimmed
         * before it ran) and presence events as every read does. */
        char after[PE_ID_MAXLEN + 1], count[24];
        size_t alen = pe_id_format(rc->last_posted, after);
        int clen = snprintf(count, sizeof(count), "%d", PE_REDIS_FETCH_PAGE);
        const char *ttl = rn->engine->ttl;
        const char *argv[] = {"FCALL_RO", "pushedge_read", "1", rc->key, "after", after, "1", count, ttl};
        size_t argvlen[] = {8, 13, 1, rc->key_len, 5, alen, 1, (size_t)clen, strlen(ttl)};
        if (pe_redis_link_command(rn->link, rc->key, rc->key_len, on_fetch_reply, rc, 9, argv, argvlen) == 0) {
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
        pe_ps_node__defer(rc->rn->node, &rc->fetch_d);
    }
}

/* ---- subscriptions ------------------------------------------------------------------------- */

static void
release_waiting(rnode_t *rn, rchan_t *rc)
{
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, &rc->waiting);
    route_reads(rn, rc, &list);
}

/* The seam is safe: release the reads that waited, and after a reconnect re-read every local
 * subscriber from its position. */
static void
set_subscribed(rnode_t *rn, rchan_t *rc)
{
    rc->state = RCHAN_SUBSCRIBED;
    /* The position is the subscription's read: nothing counted before it stands for anything. */
    rc->xadd_events = rc->published_seen = 0;
    release_waiting(rn, rc);
    if (rc->resync) {
        rc->resync = 0;
        if (rc->watched)
            pe_ps_node__resync(rn->node, rc->name, rc->name_len);
    }
}

static void
on_primed(void *ctx, redisReply *reply)
{
    rchan_t *rc = ctx;
    if (!rc->dead && reply != NULL && rc->state == RCHAN_PRIMING) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_STRING) {
            pe_id_t base;
            if (pe_id_parse(reply->element[1]->str, reply->element[1]->len, &base) == 0 && pe_id_cmp(base, rc->last_posted) > 0)
                rc->last_posted = base;
        }
        set_subscribed(rc->rn, rc);
    }
    rchan_release(rc);
}

/* Every subscription of the channel is in effect. On the plain-XADD path, first learn the
 * stream's newest ID (the fetch position); then release the reads that waited for the seam. */
static void
on_subscribed(rnode_t *rn, rchan_t *rc)
{
    if (!rn->keyspace) {
        set_subscribed(rn, rc);
        return;
    }
    rc->state = RCHAN_PRIMING;
    const char *argv[] = {"FCALL_RO", "pushedge_read", "1", rc->key, "new", "0-0", "0", "0"};
    size_t argvlen[] = {8, 13, 1, rc->key_len, 3, 3, 1, 1};
    if (pe_redis_link_command(rn->link, rc->key, rc->key_len, on_primed, rc, 8, argv, argvlen) == 0)
        ++rc->busy;
    else
        rc->state = RCHAN_SUBSCRIBING; /* the link failed: it subscribes again on reconnect */
}

static void
subscribe_chan(rnode_t *rn, rchan_t *rc)
{
    rc->state = RCHAN_SUBSCRIBING;
    reset_recent(rc); /* the epoch starts when the subscription is confirmed (nothing is posted before) */
    if (!pe_redis_link_is_up(rn->link))
        return; /* on connect */
    pe_redis_link_subscribe(rn->link, "SUBSCRIBE", rc->key, rc->key_len);
    if (rn->keyspace) {
        char ks[PE_CHANNEL_MAXLEN + 40];
        pe_redis_link_subscribe(rn->link, "SUBSCRIBE", ks, keyspace_name(rn, rc, ks, sizeof(ks)));
    }
}

static void
unsubscribe_chan(rnode_t *rn, rchan_t *rc)
{
    rc->state = RCHAN_UNSUBSCRIBING;
    rc->unsub_pending = 1;
    pe_redis_link_subscribe(rn->link, "UNSUBSCRIBE", rc->key, rc->key_len);
    if (rn->keyspace) {
        char ks[PE_CHANNEL_MAXLEN + 40];
        pe_redis_link_subscribe(rn->link, "UNSUBSCRIBE", ks, keyspace_name(rn, rc, ks, sizeof(ks)));
        rc->unsub_pending = 2;
    }
}

/* Counts an announced entry against the keyspace events (published_seen) on the plain-XADD
 * path: only while the channel is live, and only an entry not posted yet (a repeat, or one a
 * fetch already posted, has no event of its own left). Events and announcements come in script
 * order on one connection, so an entry whose event counted finds more events than
 * announcements. One that finds them even had its event missed (it came while the channel was
 * priming or unwatched, or before the last fetch reset the counts): counted, it would stand for
 * the next plain XADD's event, even in the same read, before the fetch decides. It is not
 * counted, and the fetch runs whatever the counts say (refetch), so it posts this entry and
 * anything after it in stream order. */
static void
count_announced(rnode_t *rn, rchan_t *rc, pe_id_t id)
{
    if (!rn->keyspace || rc->state != RCHAN_SUBSCRIBED || pe_id_cmp(id, rc->last_posted) <= 0)
        return;
    if (rc->published_seen < rc->xadd_events) {
        ++rc->published_seen;
        return;
    }
    rc->refetch = 1;
    schedule_fetch(rc);
}

/* One entry announced on a channel's pub/sub channel (alone or in a batch; already counted by
 * count_announced): posted live, unless the reads after the subscription cover it or the
 * plain-XADD path must post it in stream order. */
static void
on_announced(rnode_t *rn, rchan_t *rc, pe_id_t id, const char *json, size_t json_len)
{
    if (rc->state != RCHAN_SUBSCRIBED || pe_id_cmp(id, rc->last_posted) <= 0)
        return; /* not live yet: the reads after the subscription cover it */
    if (rc->fetching || rc->refetch || rc->xadd_events > rc->published_seen) {
        /* A plain XADD came before this entry (its event is not accounted for), or a fetch is
         * in flight or decided on (an earlier entry was left to it: the counts may have evened
         * out since, e.g. by an entry announced twice): posting this one now would put it ahead
         * of entries the fetch is still to post, and they would then be dropped as older than
         * the channel's position. Let the fetch post it, in stream order. */
        rc->refetch = 1;
        schedule_fetch(rc);
        return;
    }
    pe_msg_t *msg = make_msg(id, rc->name, rc->name_len, json, json_len);
    post(rn, rc, msg);
    pe_msg_release(msg);
}

/* The link's subscriber connection: SUBSCRIBE and UNSUBSCRIBE confirmations and messages;
 * channels are looked up by name. hiredis 0.14 drops a channel's callback when an UNSUBSCRIBE
 * reply arrives, even if a SUBSCRIBE was sent after it: a channel is never subscribed again
 * before its unsubscription is confirmed (RCHAN_UNSUBSCRIBING). */
static void
on_link_sub(void *ctx, pe_redis_sub_event_t ev, const char *chan, size_t chan_len, const char *payload, size_t len)
{
    rnode_t *rn = ctx;
    if (chan_len == sizeof(PE_REDIS_CONTROL) - 1 && memcmp(chan, PE_REDIS_CONTROL, chan_len) == 0) {
        /* "<instance> <text>" from another process (our own went to our threads directly). */
        if (ev == PE_REDIS_MESSAGE && len > PE_REDIS_INSTANCE_LEN + 1 && payload[PE_REDIS_INSTANCE_LEN] == ' ' &&
            memcmp(payload, rn->engine->instance, PE_REDIS_INSTANCE_LEN) != 0)
            pe_ps_node__control(rn->node, payload + PE_REDIS_INSTANCE_LEN + 1, len - PE_REDIS_INSTANCE_LEN - 1);
        return;
    }
    int keyspace = chan_len >= 11 && memcmp(chan, "__keyspace@", 11) == 0;
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
    rchan_t *rc = pe_strmap_get(&rn->chans, name, name_len);
    if (rc == NULL)
        return;

    switch (ev) {
    case PE_REDIS_SUBSCRIBED:
        /* With keyspace events the channel has two subscriptions; the second confirms both. */
        if (rc->state == RCHAN_SUBSCRIBING && (!rn->keyspace || keyspace))
            on_subscribed(rn, rc);
        return;
    case PE_REDIS_UNSUBSCRIBED:
        if (rc->state == RCHAN_UNSUBSCRIBING && --rc->unsub_pending == 0) {
            if (rc->watched)
                subscribe_chan(rn, rc); /* watched again meanwhile */
            else
                rchan_remove(rn, rc);
        }
        return;
    case PE_REDIS_MESSAGE:
        break;
    }
    if (!rc->watched)
        return;
    if (keyspace) {
        if (len == 4 && memcmp(payload, "xadd", 4) == 0 && rc->state == RCHAN_SUBSCRIBED) {
            ++rc->xadd_events;
            schedule_fetch(rc);
        }
        return;
    }
    pe_id_t id;
    const char *json;
    size_t json_len;
    if (len != 0 && payload[0] == PE_REDIS_BATCH_MARK) {
        /* A batch from pushedge_publish_batch: checked whole first (a malformed one is dropped
         * whole, as a malformed single is), then each entry as if announced alone, in order. Its
         * XADDs' keyspace events all came before it: every entry counts as seen first. */
        size_t pos = 0;
        int r;
        while ((r = pe_redis_batch_next(payload, len, &pos, &id, &json, &json_len)) == 1)
            ;
        if (r != 0)
            return;
        /* Counted before any is posted: posting moves the channel's position. */
        pos = 0;
        while (pe_redis_batch_next(payload, len, &pos, &id, &json, &json_len) == 1)
            count_announced(rn, rc, id);
        pos = 0;
        while (pe_redis_batch_next(payload, len, &pos, &id, &json, &json_len) == 1)
            on_announced(rn, rc, id, json, json_len);
        return;
    }
    /* "<id> <json>" from pushedge_publish (and pushedge_publish_many) */
    if (pe_redis_parse_announcement(payload, len, &id, &json, &json_len) != 0)
        return;
    count_announced(rn, rc, id);
    on_announced(rn, rc, id, json, json_len);
}

static void
do_watch(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t len)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    rchan_t *rc = pe_strmap_get(&rn->chans, channel, len);
    if (rc != NULL) {
        /* Idle (kept subscribed for a grace period) or being unsubscribed: take it back. Live
         * messages were not posted meanwhile: the cache starts again. */
        rc->watched = 1;
        reset_recent(rc);
        return;
    }
    rc = pe_calloc(1, sizeof(*rc));
    rc->rn = rn;
    rc->watched = 1;
    h2o_linklist_init_anchor(&rc->waiting);
    rc->fetch_d.cb = run_fetch;
    pe_recent_init(&rc->recent, &rn->recent_budget, self->recent_cap);
    memcpy(rc->name, channel, len);
    rc->name_len = len;
    rc->key_len = (size_t)snprintf(rc->key, sizeof(rc->key), "pe:{%.*s}", (int)len, channel);
    pe_strmap_set(&rn->chans, rc->name, len, rc);
    h2o_linklist_insert(&rn->rchans, &rc->link);
    subscribe_chan(rn, rc);
}

static void
do_unwatch(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t len)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    rchan_t *rc = pe_strmap_get(&rn->chans, channel, len);
    if (rc == NULL)
        return;
    /* Kept subscribed for PE_REDIS_IDLE_MS (the sweep unsubscribes): a channel whose only
     * subscriber reconnects costs no SUBSCRIBE round trip and no seam. */
    rc->watched = 0;
    rc->idle_since = h2o_now(rn->loop);
    fail_waiting(rn, rc);
    reset_recent(rc); /* nothing is posted while unwatched */
}

/* The sweep: unsubscribe channels idle for the grace period. */
static void
on_sweep(h2o_timeout_entry_t *entry)
{
    rnode_t *rn = H2O_STRUCT_FROM_MEMBER(rnode_t, sweep_entry, entry);
    uint64_t now = h2o_now(rn->loop);
    int up = pe_redis_link_is_up(rn->link);
    for (h2o_linklist_t *l = rn->rchans.next, *next; l != &rn->rchans; l = next) {
        next = l->next;
        rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, link, l);
        if (rc->watched || rc->state == RCHAN_UNSUBSCRIBING || now - rc->idle_since < PE_REDIS_IDLE_MS)
            continue;
        if (up && rc->state == RCHAN_SUBSCRIBED)
            unsubscribe_chan(rn, rc);
        else if (!up)
            rchan_remove(rn, rc);
    }
    /* The node was swept as dead while alive (a heartbeat noticed): register everything again. */
    if (up && rn->reg_epoch != __atomic_load_n(&rn->engine->reg_epoch, __ATOMIC_RELAXED))
        register_all(rn);
    h2o_timeout_link(rn->loop, &rn->sweep_timeout, &rn->sweep_entry);
}

/* ---- the registry (presence and users' connections) ------------------------------------------ */

static void
on_registry_reply(void *ctx, redisReply *reply)
{
    rnode_t *rn = ctx;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        elog(rn->engine, 1, "redis: a presence registry command failed: %.200s", reply->str);
}

/* The key of a registration: the channel's members hash, or the user's connections hash. */
static size_t
registry_key(const pe_ps_member_t *m, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, m->kind == PE_PS_MEMBER_PRESENCE ? "pe:{%s}:members" : "pe:user:{%s}", m->key);
}

/* Sends the registration (add) or its removal, and its entry in the node's set. A presence
 * registration goes through pushedge_presence, which also stores the join or leave. */
static void
send_member(rnode_t *rn, const pe_ps_member_t *m, int add)
{
    redis_engine_t *e = rn->engine;
    char hkey[PE_REDIS_REG_KEY_MAX], entry[PE_REDIS_REG_KEY_MAX];
    size_t hlen = registry_key(m, hkey, sizeof(hkey));
    if (m->kind == PE_PS_MEMBER_PRESENCE) {
        char key[PE_CHANNEL_MAXLEN + 6];
        int klen = snprintf(key, sizeof(key), "pe:{%s}", m->key);
        const char *argv[] = {
            "FCALL",        "pushedge_presence", "2",   key, hkey, add ? "join" : "leave", m->client, add ? m->json : "",
            e->max_members, e->maxlen,           e->ttl};
        size_t argvlen[] = {5,
                            17,
                            1,
                            (size_t)klen,
                            hlen,
                            add ? 4 : 5,
                            m->client_len,
                            add ? m->json_len : 0,
                            strlen(e->max_members),
                            strlen(e->maxlen),
                            strlen(e->ttl)};
        pe_redis_link_command(rn->link, key, (size_t)klen, on_registry_reply, rn, 11, argv, argvlen);
    } else if (add) {
        const char *argv[] = {"HSET", hkey, m->client, m->json};
        size_t argvlen[] = {4, hlen, m->client_len, m->json_len};
        pe_redis_link_command(rn->link, hkey, hlen, on_registry_reply, rn, 4, argv, argvlen);
    } else {
        const char *argv[] = {"HDEL", hkey, m->client};
        size_t argvlen[] = {4, hlen, m->client_len};
        pe_redis_link_command(rn->link, hkey, hlen, on_registry_reply, rn, 3, argv, argvlen);
    }
    /* "c <client> <channel>" or "u <client> <user>": what a sweep of this node needs. */
    int elen = snprintf(entry, sizeof(entry), "%c %s %s", m->kind == PE_PS_MEMBER_PRESENCE ? 'c' : 'u', m->client, m->key);
    const char *argv[] = {add ? "SADD" : "SREM", e->node_key, entry};
    size_t argvlen[] = {4, strlen(e->node_key), (size_t)elen};
    pe_redis_link_command(rn->link, e->node_key, strlen(e->node_key), on_registry_reply, rn, 3, argv, argvlen);
}

/* Sends the removals made while the link was down, then every registration (HSET of an entry
 * Redis still has changes nothing and stores no second join). */
static void
register_all(rnode_t *rn)
{
    rn->reg_epoch = __atomic_load_n(&rn->engine->reg_epoch, __ATOMIC_RELAXED);
    while (!h2o_linklist_is_empty(&rn->removals)) {
        pe_ps_member_t *m = H2O_STRUCT_FROM_MEMBER(pe_ps_member_t, _link, rn->removals.next);
        h2o_linklist_unlink(&m->_link);
        send_member(rn, m, 0);
        pe_ps__member_free(m);
    }
    for (h2o_linklist_t *l = rn->members.next; l != &rn->members; l = l->next)
        send_member(rn, H2O_STRUCT_FROM_MEMBER(pe_ps_member_t, _link, l), 1);
}

static void
do_member_add(pe_ps_engine_t *_self, pe_ps_node_t *node, pe_ps_member_t *m)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    h2o_linklist_insert(&rn->members, &m->_link);
    if (pe_redis_link_is_up(rn->link))
        send_member(rn, m, 1);
}

static void
do_member_remove(pe_ps_engine_t *_self, pe_ps_node_t *node, pe_ps_member_t *m)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    h2o_linklist_unlink(&m->_link);
    if (pe_redis_link_is_up(rn->link)) {
        send_member(rn, m, 0);
        pe_ps__member_free(m);
    } else {
        h2o_linklist_insert(&rn->removals, &m->_link);
    }
}

typedef struct st_rquery_t {
    rnode_t *rn;
    pe_ps_query_t q;
} rquery_t;

static void
on_query_reply(void *ctx, redisReply *reply)
{
    rquery_t *rq = ctx;
    if (reply == NULL || (reply->type != REDIS_REPLY_INTEGER && reply->type != REDIS_REPLY_ARRAY)) {
        if (reply != NULL)
            elog(rq->rn->engine, 1, "redis: a presence query failed: %.200s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "odd reply");
        rq->q.cb(rq->q.ctx, pe_ps_err_unavailable, 0, NULL, 0);
    } else if (reply->type == REDIS_REPLY_INTEGER) {
        rq->q.cb(rq->q.ctx, NULL, (uint64_t)reply->integer, NULL, 0);
    } else {
        /* HVALS: each value is a member's JSON, written by pushedge (send_member). */
        size_t total = 2;
        for (size_t i = 0; i != reply->elements; ++i)
            total += reply->element[i]->len + 1;
        char *s = pe_malloc(total + 1), *p = s;
        *p++ = '[';
        for (size_t i = 0; i != reply->elements; ++i) {
            if (reply->element[i]->type != REDIS_REPLY_STRING)
                continue;
            if (p != s + 1)
                *p++ = ',';
            memcpy(p, reply->element[i]->str, reply->element[i]->len);
            p += reply->element[i]->len;
        }
        *p++ = ']';
        *p = '\0';
        rq->q.cb(rq->q.ctx, NULL, reply->elements, s, (size_t)(p - s));
        pe_free(s);
    }
    pe_free(rq);
}

static const char *
do_query(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *key, size_t key_len, const pe_ps_query_t *q)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    if (rn == NULL || !pe_redis_link_is_up(rn->link))
        return pe_ps_err_unavailable;
    char hkey[PE_REDIS_REG_KEY_MAX];
    int hlen =
        snprintf(hkey, sizeof(hkey), q->kind == PE_PS_MEMBER_PRESENCE ? "pe:{%.*s}:members" : "pe:user:{%.*s}", (int)key_len, key);
    if (hlen < 0 || (size_t)hlen >= sizeof(hkey))
        return pe_ps_err_bad_channel;
    rquery_t *rq = pe_malloc(sizeof(*rq));
    *rq = (rquery_t){rn, *q};
    const char *argv[] = {q->with_members ? "HVALS" : "HLEN", hkey};
    size_t argvlen[] = {q->with_members ? 5 : 4, (size_t)hlen};
    if (pe_redis_link_command(rn->link, hkey, (size_t)hlen, on_query_reply, rq, 2, argv, argvlen) != 0) {
        pe_free(rq);
        return pe_ps_err_unavailable;
    }
    return NULL;
}

/* ---- heartbeats and the sweep of dead nodes (thread 0) ------------------------------------- */

typedef struct st_sweep_t {
    rnode_t *rn;
    size_t id_len;
    char id[64];
} sweep_t;

/* The dead node's registrations: remove each (a presence member's leave is stored as usual),
 * then its set and its heartbeat entry. */
static void
on_dead_members(void *ctx, redisReply *reply)
{
    sweep_t *sw = ctx;
    rnode_t *rn = sw->rn;
    redis_engine_t *e = rn->engine;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && pe_redis_link_is_up(rn->link)) {
        for (size_t i = 0; i != reply->elements; ++i) {
            redisReply *el = reply->element[i];
            if (el->type != REDIS_REPLY_STRING || el->len < 4 || el->str[1] != ' ')
                continue;
            const char *client = el->str + 2, *sp = memchr(client, ' ', el->len - 2);
            if (sp == NULL || (size_t)(sp - client) > PE_PS_CLIENT_MAXLEN)
                continue;
            pe_ps_member_t m = {.kind = el->str[0] == 'c' ? PE_PS_MEMBER_PRESENCE : PE_PS_MEMBER_USER};
            m.client_len = (size_t)(sp - client);
            memcpy(m.client, client, m.client_len);
            m.client[m.client_len] = '\0';
            m.key_len = el->len - (size_t)(sp + 1 - el->str);
            if (m.key_len == 0 || m.key_len >= PE_REDIS_REG_KEY_MAX - 20)
                continue;
            char keybuf[PE_REDIS_REG_KEY_MAX];
            memcpy(keybuf, sp + 1, m.key_len);
            keybuf[m.key_len] = '\0';
            m.key = keybuf;
            /* The removal only (the set goes whole below): send_member's SREM is harmless. */
            send_member(rn, &m, 0);
        }
        char nkey[96];
        int nlen = snprintf(nkey, sizeof(nkey), "pe:node:{%s}", sw->id);
        const char *del[] = {"DEL", nkey};
        size_t dellen[] = {3, (size_t)nlen};
        pe_redis_link_command(rn->link, nkey, (size_t)nlen, on_registry_reply, rn, 2, del, dellen);
        const char *zrem[] = {"ZREM", "pe:nodes", sw->id};
        size_t zremlen[] = {4, 8, sw->id_len};
        pe_redis_link_command(rn->link, "pe:nodes", 8, on_registry_reply, rn, 3, zrem, zremlen);
        elog(e, 2, "redis: node %s missed its heartbeats for %s ms: its %zu registrations were removed", sw->id, e->node_timeout,
             reply->elements);
    }
    pe_free(sw);
}

static void
on_beat_reply(void *ctx, redisReply *reply)
{
    rnode_t *rn = ctx;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 || !pe_redis_link_is_up(rn->link)) {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            elog(rn->engine, 1, "redis: pushedge_beat failed: %.200s", reply->str);
        return;
    }
    /* Unlisted: our first beat, or we were swept as dead (our link was down past the deadline):
     * every thread registers its connections again. */
    if (reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[0]->integer == 1)
        __atomic_add_fetch(&rn->engine->reg_epoch, 1, __ATOMIC_RELAXED);
    for (size_t i = 1; i != reply->elements; ++i) {
        redisReply *el = reply->element[i];
        if (el->type != REDIS_REPLY_STRING || el->len == 0 || el->len >= sizeof(((sweep_t *)NULL)->id))
            continue;
        sweep_t *sw = pe_calloc(1, sizeof(*sw));
        sw->rn = rn;
        memcpy(sw->id, el->str, el->len);
        sw->id_len = el->len;
        char nkey[96];
        int nlen = snprintf(nkey, sizeof(nkey), "pe:node:{%s}", sw->id);
        const char *argv[] = {"SMEMBERS", nkey};
        size_t argvlen[] = {8, (size_t)nlen};
        if (pe_redis_link_command(rn->link, nkey, (size_t)nlen, on_dead_members, sw, 2, argv, argvlen) != 0)
            pe_free(sw);
    }
}

static void
send_beat(rnode_t *rn)
{
    redis_engine_t *e = rn->engine;
    const char *argv[] = {"FCALL", "pushedge_beat", "1", "pe:nodes", e->super.node_id, e->node_timeout};
    size_t argvlen[] = {5, 13, 1, 8, strlen(e->super.node_id), strlen(e->node_timeout)};
    pe_redis_link_command(rn->link, "pe:nodes", 8, on_beat_reply, rn, 6, argv, argvlen);
}

static void
on_beat(h2o_timeout_entry_t *entry)
{
    rnode_t *rn = H2O_STRUCT_FROM_MEMBER(rnode_t, beat_entry, entry);
    if (pe_redis_link_is_up(rn->link))
        send_beat(rn);
    h2o_timeout_link(rn->loop, &rn->beat_timeout, &rn->beat_entry);
}

/* ---- the link's state ------------------------------------------------------------------------ */

static void
on_link_up(void *ctx, const pe_redis_link_info_t *info)
{
    rnode_t *rn = ctx;
    redis_engine_t *e = rn->engine;
    /* Keyspace events are local to each cluster node: not followed in a cluster. */
    rn->keyspace = info->keyspace_events && !info->cluster;
    /* Once per process: a backend that XADDs by hand would otherwise see its entries reach
     * subscribers only when they next read history, with nothing saying why. */
    if (!info->keyspace_events && !__atomic_exchange_n(&e->warned_keyspace, 1, __ATOMIC_RELAXED))
        elog(e, 1,
             "redis: notify-keyspace-events has no K and t: entries added with a plain XADD are not delivered live "
             "(publish through pushedge or FCALL pushedge_publish, or set notify-keyspace-events Kt)");
    __atomic_add_fetch(&e->up_links, 1, __ATOMIC_RELAXED);
    char masters[80] = "";
    if (info->cluster)
        snprintf(masters, sizeof(masters), " (a cluster: %zu masters)", info->num_masters);
    if (e->sentinel_master != NULL)
        snprintf(masters, sizeof(masters), " (master %.20s, through the sentinels)", e->sentinel_master);
    elog(e, 2, "redis: thread %u connected to %s:%u%s%s", rn->index, info->seed->ip, info->seed->port, masters,
         rn->keyspace ? " (keyspace events on: plain XADD producers are delivered)" : "");
    /* Subscriptions do not outlive a connection: the control channel is subscribed at every connect. */
    pe_redis_link_subscribe(rn->link, "SUBSCRIBE", PE_REDIS_CONTROL, sizeof(PE_REDIS_CONTROL) - 1);
    for (h2o_linklist_t *l = rn->rchans.next; l != &rn->rchans; l = l->next) {
        rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, link, l);
        /* Re-read each local subscriber once subscribed: what was published while the link was
         * down, and reads that failed meanwhile, are caught up at once. */
        rc->resync = 1;
        subscribe_chan(rn, rc);
    }
    /* Every thread beats once when its link comes up, before its first registration on the
     * same connection: the node is listed (so a sweep can find it) before anything of it is. */
    send_beat(rn);
    register_all(rn);
    pe_ps_node__engine_state(rn->node, 1);
}

static void
on_link_down(void *ctx, int was_up)
{
    rnode_t *rn = ctx;
    if (was_up) {
        __atomic_sub_fetch(&rn->engine->up_links, 1, __ATOMIC_RELAXED);
        pe_ps_node__engine_state(rn->node, 0);
    }
    /* Watched channels subscribe again on reconnect; the others are dropped. */
    for (h2o_linklist_t *l = rn->rchans.next, *next; l != &rn->rchans; l = next) {
        next = l->next;
        rchan_t *rc = H2O_STRUCT_FROM_MEMBER(rchan_t, link, l);
        reset_recent(rc); /* what is published until the new subscription is not posted */
        if (rc->watched)
            rc->state = RCHAN_SUBSCRIBING;
        else
            rchan_remove(rn, rc);
    }
}

static const pe_redis_link_callbacks_t link_callbacks = {
    .on_up = on_link_up,
    .on_down = on_link_down,
    .on_sub = on_link_sub,
};

/* ---- nodes ----------------------------------------------------------------------------------- */

static void
do_attach(pe_ps_engine_t *_self, pe_ps_node_t *node, unsigned index)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    if (index >= MAX_NODES)
        return;
    rnode_t *rn = pe_calloc(1, sizeof(*rn));
    rn->engine = self;
    rn->node = node;
    rn->loop = pe_ps_node__loop(node);
    rn->index = index;
    rn->link_cfg = self->link_cfg;
    rn->link_cfg.index = index;
    h2o_linklist_init_anchor(&rn->rchans);
    pe_strmap_init(&rn->chans);
    rn->recent_budget.max_bytes = PE_RECENT_NODE_BYTES;
    h2o_timeout_init(rn->loop, &rn->sweep_timeout, PE_REDIS_SWEEP_MS);
    rn->sweep_entry.cb = on_sweep;
    h2o_timeout_link(rn->loop, &rn->sweep_timeout, &rn->sweep_entry);
    h2o_linklist_init_anchor(&rn->members);
    h2o_linklist_init_anchor(&rn->removals);
    pe_redis_pub_init(rn);
    h2o_timeout_init(rn->loop, &rn->beat_timeout, PE_REDIS_BEAT_MS);
    rn->beat_entry.cb = on_beat;
    if (index == 0)
        h2o_timeout_link(rn->loop, &rn->beat_timeout, &rn->beat_entry);
    rn->link = pe_redis_link_create(&rn->link_cfg, rn->loop, &link_callbacks, rn);
    __atomic_store_n(&self->nodes[index], rn, __ATOMIC_RELEASE);
}

static void
do_detach(pe_ps_engine_t *_self, pe_ps_node_t *node, unsigned index)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = index < MAX_NODES ? self->nodes[index] : NULL;
    if (rn == NULL)
        return;
    if (pe_redis_link_is_up(rn->link))
        __atomic_sub_fetch(&self->up_links, 1, __ATOMIC_RELAXED);
    /* Publishes not sent yet fail as unsent; commands in flight get their callbacks (NULL
     * reply) from inside pe_redis_link_destroy. */
    pe_redis_pub_dispose(rn);
    pe_redis_link_destroy(rn->link);
    rn->link = NULL;
    /* A record with a deferred fetch stays allocated until the node runs it (as a no-op). */
    while (!h2o_linklist_is_empty(&rn->rchans))
        rchan_remove(rn, H2O_STRUCT_FROM_MEMBER(rchan_t, link, rn->rchans.next));
    pe_strmap_dispose(&rn->chans);
    if (h2o_timeout_is_linked(&rn->sweep_entry))
        h2o_timeout_unlink(&rn->sweep_entry);
    h2o_timeout_dispose(rn->loop, &rn->sweep_timeout);
    if (h2o_timeout_is_linked(&rn->beat_entry))
        h2o_timeout_unlink(&rn->beat_entry);
    h2o_timeout_dispose(rn->loop, &rn->beat_timeout);
    /* Removals never sent (the link was down): the node is swept as dead instead. Members are
     * all removed by now (every subscriber was disposed before the node). */
    while (!h2o_linklist_is_empty(&rn->removals)) {
        pe_ps_member_t *m = H2O_STRUCT_FROM_MEMBER(pe_ps_member_t, _link, rn->removals.next);
        h2o_linklist_unlink(&m->_link);
        pe_ps__member_free(m);
    }
    while (!h2o_linklist_is_empty(&rn->members))
        h2o_linklist_unlink(rn->members.next);
    __atomic_store_n(&self->nodes[index], NULL, __ATOMIC_RELEASE);
    pe_free(rn);
}

static int
do_is_ready(pe_ps_engine_t *_self)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    /* Every thread publishes through its own link: ready only when all of them are, so a load
     * balancer never sends a publish to a thread that would refuse it. */
    unsigned attached = 0;
    for (unsigned i = 0; i != MAX_NODES; ++i)
        attached += __atomic_load_n(&self->nodes[i], __ATOMIC_RELAXED) != NULL;
    return attached != 0 && __atomic_load_n(&self->up_links, __ATOMIC_RELAXED) == attached;
}

static void
do_destroy(pe_ps_engine_t *_self)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    pe_free(self->password);
    pe_free(self->library);
    pe_free(self->sentinel_master);
    pe_free(self);
}

static void
on_control_published(void *ctx, redisReply *reply)
{
    /* Nothing waits: a PUBLISH that failed with the link is reported when the link goes down. */
}

static const char *
do_control_publish(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *text, size_t len)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    if (rn == NULL || !pe_redis_link_is_up(rn->link))
        return pe_ps_err_unavailable;
    char *payload = pe_malloc(PE_REDIS_INSTANCE_LEN + 1 + len);
    memcpy(payload, self->instance, PE_REDIS_INSTANCE_LEN);
    payload[PE_REDIS_INSTANCE_LEN] = ' ';
    memcpy(payload + PE_REDIS_INSTANCE_LEN + 1, text, len);
    const char *argv[] = {"PUBLISH", PE_REDIS_CONTROL, payload};
    size_t argvlen[] = {7, sizeof(PE_REDIS_CONTROL) - 1, PE_REDIS_INSTANCE_LEN + 1 + len};
    int r = pe_redis_link_command(rn->link, PE_REDIS_CONTROL, sizeof(PE_REDIS_CONTROL) - 1, on_control_published, NULL, 3, argv,
                                  argvlen);
    pe_free(payload);
    return r == 0 ? NULL : pe_ps_err_unavailable;
}

static const pe_ps_engine_ops_t redis_ops = {
    .control_publish = do_control_publish,
    .publish = pe_redis_pub_publish,
    .watch = do_watch,
    .unwatch = do_unwatch,
    .read = do_read,
    .attach = do_attach,
    .detach = do_detach,
    .is_ready = do_is_ready,
    .destroy = do_destroy,
    .member_add = do_member_add,
    .member_remove = do_member_remove,
    .query = do_query,
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
        pe_redis_addr_t *seed = &self->link_cfg.seeds[self->link_cfg.num_seeds++];
        inet_ntop(res->ai_family, addr, seed->ip, sizeof(seed->ip));
        freeaddrinfo(res);
        seed->port = u.seeds[i].port;
    }
    if (u.password != NULL)
        self->password = pe_strndup(u.password, u.password_len);
    self->link_cfg.password = self->password;
    self->link_cfg.db = u.db;
    if (u.sentinel) {
        self->sentinel_master = pe_strndup(u.master, strlen(u.master));
        self->link_cfg.sentinel_master = self->sentinel_master;
    }
    return 0;
}

pe_ps_engine_t *
pe_ps_engine_create_redis(const pe_ps_options_t *opts, const char *url, char *err, size_t errlen)
{
    redis_engine_t *self = pe_calloc(1, sizeof(*self));
    pe_ps__engine_init(&self->super, &redis_ops, "redis", opts);
    self->log = opts->log;
    self->announce_singly = opts->redis_announce_singly;
    snprintf(self->node_key, sizeof(self->node_key), "pe:node:{%s}", self->super.node_id);
    snprintf(self->max_members, sizeof(self->max_members), "%zu", opts->presence_max_members);
    snprintf(
        self->node_timeout, sizeof(self->node_timeout), "%llu",
        (unsigned long long)(opts->presence_node_timeout_ms != 0 ? opts->presence_node_timeout_ms : PE_PS_DEFAULT_NODE_TIMEOUT_MS));
    if (parse_url(self, url, err, errlen) != 0) {
        do_destroy(&self->super);
        return NULL;
    }
    unsigned long long size = opts->history_size == 0 ? 1 : opts->history_size;
    snprintf(self->maxlen, sizeof(self->maxlen), "%llu", size);
    snprintf(self->ttl, sizeof(self->ttl), "%llu", (unsigned long long)opts->history_ttl_ms);
    /* The cache never holds more than the stream retains (recent.c: no gap hidden). */
    self->recent_cap = opts->catchup_cache < size ? opts->catchup_cache : (size_t)size;
    unsigned long long window = pe_ps__idempotency_window_ms(opts);
    snprintf(self->window, sizeof(self->window), "%llu", window);
    self->library = pe_redis_lib_build(size, (unsigned long long)opts->history_ttl_ms, window);
    self->link_cfg.library = self->library;
    self->link_cfg.log = opts->log;
    if (opts->redis_wait_replicas != 0) {
        unsigned timeout_ms = opts->redis_wait_timeout_ms != 0 ? opts->redis_wait_timeout_ms : 1; /* WAIT 0 would block forever */
        self->wait_replicas = opts->redis_wait_replicas;
        snprintf(self->wait_args[0], sizeof(self->wait_args[0]), "%u", opts->redis_wait_replicas);
        snprintf(self->wait_args[1], sizeof(self->wait_args[1]), "%u", timeout_ms);
        /* Commands queue behind a WAIT for up to its timeout: not a hung Redis. */
        self->link_cfg.slack_ms = timeout_ms;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    /* Unique enough among the processes of one Redis (64 random bits): not a secret. */
    unsigned char rnd[PE_REDIS_INSTANCE_LEN / 2];
    if (getentropy(rnd, sizeof(rnd)) != 0)
        for (size_t i = 0; i != sizeof(rnd); ++i)
            rnd[i] = (unsigned char)rand();
    for (size_t i = 0; i != sizeof(rnd); ++i)
        snprintf(self->instance + 2 * i, 3, "%02x", rnd[i]);
    return &self->super;
}

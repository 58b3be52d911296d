/*
 * redis_publish.c: the Redis engine's publish path. A node gathers the publishes of one loop
 * iteration per channel (pe_redis_pub_publish: a batch per channel, in the order of each
 * channel's first publish) and sends them when the iteration's timeouts run (on_flush):
 * one message as FCALL pushedge_publish, several as one pushedge_publish_batch (or, with
 * --redis-batch-announce 0, pushedge_publish_many), many calls in flight on the thread's link.
 * Answers go back to each publish's callback in order; with --redis-wait-replicas, each publish
 * goes singly and is followed by WAIT on the connection that stored it. Why it batches and what
 * each step costs Redis: docs/architecture.md, "Publishing through Redis" and "Cost of a
 * publish in Redis".
 */
#include <stdio.h>
#include <string.h>
#include <h2o.h>
#include <hiredis/hiredis.h>
#include "alloc.h"
#include "engine.h"
#include "redis_engine.h"
#include "redis_link.h"
#include "redis_reply.h"
#include "strmap.h"

/* Publishes to one channel gathered into one pushedge_publish_batch (_many) call (the loop iteration's
 * batch): at most this many messages and about this many bytes of them; past either the
 * channel's batch is sent and a new one started. Bounds the command's size (and its arguments:
 * 4 + 3 + 3 per message at most) and the time Redis spends in one call (~1-2 us per message). */
#define PE_REDIS_PUBLISH_BATCH_MAX 128
#define PE_REDIS_PUBLISH_BATCH_BYTES (256u * 1024)

const char pe_ps_err_not_replicated[] =
    "the message was stored on the Redis master but not confirmed by enough replicas in time (--redis-wait-replicas): a failover "
    "may lose it (retry with the same idempotency key)";

typedef struct st_publish_t {
    h2o_linklist_t link; /* in its pub_batch_t while batched */
    rnode_t *rn;
    pe_ps_publish_cb cb;
    void *ctx;
    int keyed;
    /* Kept for the WAIT that follows the publish (e->wait_replicas). */
    pe_id_t id;
    int replayed;
    size_t rec_len;
    char rec[PE_CHANNEL_MAXLEN + 6 + 6 + PE_PS_KEY_MAXLEN + 1]; /* the key's record, when keyed */
    /* Batched publishes keep a copy of their message until the batch is sent. */
    size_t data_len;
    char data[];
} publish_t;

/* One channel's publishes of this loop iteration (rn->pub_map), then the one command that
 * carries them, until its reply is handed out. */
typedef struct st_pub_batch_t {
    h2o_linklist_t link; /* in rn->pub_batches until sent */
    rnode_t *rn;
    h2o_linklist_t pubs; /* publish_t, in call order */
    size_t count, bytes, keyed;
    size_t key_len;
    char key[PE_CHANNEL_MAXLEN + 6];
} pub_batch_t;

/*
 * A keyed publish answered with a bare ID: the library in Redis predates keys (a node of an
 * older version connected after us and loaded its own, as every node does on connect), so the
 * key was not recorded. Load ours again on every master of this link; the publishes in between
 * are stored but not deduplicated (logged).
 */
static void
reload_library(rnode_t *rn)
{
    if (pe_redis_link_reload_library(rn->link) == 0)
        elog(rn->engine, 1,
             "redis: the function library in Redis ignores idempotency keys (an older pushedge loaded it): reloading");
}

static void
on_set_again(void *ctx, redisReply *reply)
{
}

/* WAIT's answer: the number of replicas that have every write of the connection. */
static void
on_waited(void *ctx, redisReply *reply)
{
    publish_t *p = ctx;
    redis_engine_t *e = p->rn->engine;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer >= (long long)e->wait_replicas) {
        p->cb(p->ctx, NULL, &p->id, p->replayed);
    } else {
        if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
            elog(e, 1, "redis: WAIT failed: %.200s", reply->str);
        p->cb(p->ctx, pe_ps_err_not_replicated, NULL, 0);
    }
    pe_free(p);
}

/* Sends WAIT on the connection that just answered the publish (from inside its callback).
 * Returns 0 (on_waited answers), or -1 when the connection is gone. */
static int
start_wait(publish_t *p)
{
    redis_engine_t *e = p->rn->engine;
    pe_redis_link_t *link = p->rn->link;
    if (p->replayed) {
        /* The first publish with this key may have been stored through another connection,
         * after this one's last write: WAIT would not cover it. Writing the record again
         * (unchanged, its expiry kept) puts a write of ours behind it in the replication
         * stream. */
        char id[PE_ID_MAXLEN + 1];
        size_t id_len = pe_id_format(p->id, id);
        const char *argv[] = {"SET", p->rec, id, "XX", "KEEPTTL"};
        size_t argvlen[] = {3, p->rec_len, id_len, 2, 7};
        if (pe_redis_link_command_same_conn(link, on_set_again, NULL, 5, argv, argvlen) != 0)
            return -1;
    }
    const char *argv[] = {"WAIT", e->wait_args[0], e->wait_args[1]};
    size_t argvlen[] = {4, strlen(e->wait_args[0]), strlen(e->wait_args[1])};
    return pe_redis_link_command_same_conn(link, on_waited, p, 3, argv, argvlen);
}

static void
on_published(void *ctx, redisReply *reply)
{
    publish_t *p = ctx;
    rnode_t *rn = p->rn;
    pe_id_t id;
    redisReply *rid = reply;
    int replayed = 0;
    /* The keyed form answers {ID, replayed} (redis_lib.lua). */
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
            reload_library(rn);
        if (replayed)
            pe_ps_node__count_replayed(rn->node);
        else
            pe_ps_node__count_published(rn->node);
        if (rn->engine->wait_replicas != 0) {
            p->id = id;
            p->replayed = replayed;
            if (start_wait(p) == 0)
                return; /* p lives on until on_waited */
            p->cb(p->ctx, pe_ps_err_not_replicated, NULL, 0);
        } else {
            p->cb(p->ctx, NULL, &id, replayed);
        }
    } else {
        elog(rn->engine, 1, "redis: pushedge_publish failed: %.200s", reply->type == REDIS_REPLY_ERROR ? reply->str : "odd reply");
        p->cb(p->ctx, pe_ps_err_unavailable, NULL, 0);
    }
    pe_free(p);
}

/* Sends one publish as pushedge_publish (the batch path's single message, and every publish
 * with --redis-wait-replicas, whose WAIT follows each one on its connection). Returns 0 (cb
 * later), or -1 (nothing sent; p still the caller's). */
static int
send_single(rnode_t *rn, const char *key, size_t key_len, publish_t *p, const char *data, size_t data_len)
{
    redis_engine_t *self = rn->engine;
    if (!p->keyed) {
        const char *argv[] = {"FCALL", "pushedge_publish", "1", key, data, self->maxlen, self->ttl};
        size_t argvlen[] = {5, 16, 1, key_len, data_len, strlen(self->maxlen), strlen(self->ttl)};
        return pe_redis_link_command(rn->link, key, key_len, on_published, p, 7, argv, argvlen);
    }
    const char *argv[] = {"FCALL", "pushedge_publish", "2", key, p->rec, data, self->maxlen, self->ttl, self->window};
    size_t argvlen[] = {5, 16, 1, key_len, p->rec_len, data_len, strlen(self->maxlen), strlen(self->ttl), strlen(self->window)};
    return pe_redis_link_command(rn->link, key, key_len, on_published, p, 9, argv, argvlen);
}

static void
free_batch(pub_batch_t *b)
{
    while (!h2o_linklist_is_empty(&b->pubs)) {
        publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, b->pubs.next);
        h2o_linklist_unlink(&p->link);
        pe_free(p);
    }
    pe_free(b);
}

/* Hands err to every publish of the batch, and frees it. */
static void
fail_batch(pub_batch_t *b, const char *err)
{
    for (h2o_linklist_t *l = b->pubs.next; l != &b->pubs; l = l->next) {
        publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, l);
        p->cb(p->ctx, err, NULL, 0);
    }
    free_batch(b);
}

/* A batch's command was refused before it ran (the library in Redis has no
 * pushedge_publish_batch or _many: an older pushedge loaded its own): nothing was stored. Ours is
 * loaded again and each publish answered unavailable (503: nothing stored, retry). Sending them
 * again singly here would store them behind publishes of the channel that left after this batch
 * and ran first (the pipeline holds several calls per channel), breaking per-channel order. */
static void
refuse_batch(pub_batch_t *b)
{
    rnode_t *rn = b->rn;
    if (pe_redis_link_reload_library(rn->link) == 0)
        elog(rn->engine, 1,
             "redis: the function library in Redis has no pushedge_publish_batch/_many (an older pushedge loaded it): "
             "reloading; the batch's publishes are answered unavailable (nothing was stored)");
    fail_batch(b, pe_ps_err_unavailable);
}

/* One publish of a batch stored (or replayed from its key) under id: counted and answered. */
static void
answer_stored(rnode_t *rn, publish_t *p, const pe_id_t *id, int replayed)
{
    if (replayed)
        pe_ps_node__count_replayed(rn->node);
    else
        pe_ps_node__count_published(rn->node);
    p->cb(p->ctx, NULL, id, replayed);
}

/* The answer of pushedge_publish_batch, "<id1> <id2> ..." (a replayed one "=<id>"), or of
 * pushedge_publish_many, {id1, replayed1, id2, replayed2, ...}: one ID per publish of the batch,
 * in order. */
static void
on_published_many(void *ctx, redisReply *reply)
{
    pub_batch_t *b = ctx;
    rnode_t *rn = b->rn;
    if (reply == NULL) {
        /* Sent, then the link failed: Redis may have run it (as for a single publish). */
        fail_batch(b, pe_ps_err_unconfirmed);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "Function not found") != NULL) {
        refuse_batch(b);
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        /* Checked whole first: a malformed or short answer hands nothing out as stored. */
        size_t pos = 0, n = 0;
        pe_id_t id;
        int replayed, r;
        while ((r = pe_redis_batch_reply_next(reply->str, reply->len, &pos, &id, &replayed)) == 1)
            ++n;
        if (r == 0 && n == b->count) {
            pos = 0;
            for (h2o_linklist_t *l = b->pubs.next; l != &b->pubs; l = l->next) {
                publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, l);
                pe_redis_batch_reply_next(reply->str, reply->len, &pos, &id, &replayed);
                answer_stored(rn, p, &id, replayed);
            }
            free_batch(b);
            return;
        }
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 * b->count) {
        /* An error inside the call may come after some messages were stored. */
        elog(rn->engine, 1, "redis: pushedge_publish_batch failed: %.200s",
             reply->type == REDIS_REPLY_ERROR ? reply->str : "odd reply");
        fail_batch(b, pe_ps_err_unconfirmed);
        return;
    }
    size_t i = 0;
    for (h2o_linklist_t *l = b->pubs.next; l != &b->pubs; l = l->next, i += 2) {
        publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, l);
        redisReply *rid = reply->element[i], *rrep = reply->element[i + 1];
        pe_id_t id;
        if (rid->type != REDIS_REPLY_STRING || pe_id_parse(rid->str, rid->len, &id) != 0 || rrep->type != REDIS_REPLY_INTEGER) {
            p->cb(p->ctx, pe_ps_err_unconfirmed, NULL, 0);
            continue;
        }
        answer_stored(rn, p, &id, rrep->integer != 0);
    }
    free_batch(b);
}

/* Sends a channel's batch (already out of the queue): one message as pushedge_publish, several
 * as one pushedge_publish_batch (or _many). Callbacks run later, with the reply; a batch the link cannot
 * take fails here, through pe_ps_err_unavailable (only ever from the flush: never inside
 * pe_redis_pub_publish). */
static void
send_batch(pub_batch_t *b)
{
    rnode_t *rn = b->rn;
    redis_engine_t *self = rn->engine;
    if (b->count == 1) {
        publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, b->pubs.next);
        h2o_linklist_unlink(&p->link);
        if (send_single(rn, b->key, b->key_len, p, p->data, p->data_len) != 0) {
            p->cb(p->ctx, pe_ps_err_unavailable, NULL, 0);
            pe_free(p);
        }
        pe_free(b);
        return;
    }
    enum { MAX_ARGS = 4 + PE_REDIS_PUBLISH_BATCH_MAX + 3 + 2 * PE_REDIS_PUBLISH_BATCH_MAX };
    const char *argv[MAX_ARGS];
    size_t argvlen[MAX_ARGS];
    char numkeys[24];
    size_t argc = 0;
    argv[argc] = "FCALL", argvlen[argc++] = 5;
    if (self->announce_singly)
        argv[argc] = "pushedge_publish_many", argvlen[argc++] = 21;
    else
        argv[argc] = "pushedge_publish_batch", argvlen[argc++] = 22;
    argv[argc] = numkeys, argvlen[argc++] = (size_t)snprintf(numkeys, sizeof(numkeys), "%zu", 1 + b->keyed);
    argv[argc] = b->key, argvlen[argc++] = b->key_len;
    for (h2o_linklist_t *l = b->pubs.next; l != &b->pubs; l = l->next) {
        publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, l);
        if (p->keyed)
            argv[argc] = p->rec, argvlen[argc++] = p->rec_len;
    }
    argv[argc] = self->maxlen, argvlen[argc++] = strlen(self->maxlen);
    argv[argc] = self->ttl, argvlen[argc++] = strlen(self->ttl);
    argv[argc] = self->window, argvlen[argc++] = strlen(self->window);
    for (h2o_linklist_t *l = b->pubs.next; l != &b->pubs; l = l->next) {
        publish_t *p = H2O_STRUCT_FROM_MEMBER(publish_t, link, l);
        argv[argc] = p->keyed ? "1" : "0", argvlen[argc++] = 1;
        argv[argc] = p->data, argvlen[argc++] = p->data_len;
    }
    if (pe_redis_link_command(rn->link, b->key, b->key_len, on_published_many, b, (int)argc, argv, argvlen) != 0)
        fail_batch(b, pe_ps_err_unavailable);
}

/* Takes a batch out of the queue (it is about to be sent or failed); the map names only a
 * channel's newest batch. */
static void
unqueue_batch(rnode_t *rn, pub_batch_t *b)
{
    if (pe_strmap_get(&rn->pub_map, b->key, b->key_len) == b)
        pe_strmap_remove(&rn->pub_map, b->key, b->key_len);
    h2o_linklist_unlink(&b->link);
}

/* The loop iteration's timeouts: every batch goes out, in the order they were started (a
 * channel's full batches before its newer ones); hiredis writes them to Redis in one write when
 * the socket is next writable. */
static void
on_flush(h2o_timeout_entry_t *entry)
{
    rnode_t *rn = H2O_STRUCT_FROM_MEMBER(rnode_t, flush_entry, entry);
    while (!h2o_linklist_is_empty(&rn->pub_batches)) {
        pub_batch_t *b = H2O_STRUCT_FROM_MEMBER(pub_batch_t, link, rn->pub_batches.next);
        unqueue_batch(rn, b);
        send_batch(b);
    }
}

/* Fails every batch not sent yet (the node is detached). */
static void
fail_queued(rnode_t *rn, const char *err)
{
    while (!h2o_linklist_is_empty(&rn->pub_batches)) {
        pub_batch_t *b = H2O_STRUCT_FROM_MEMBER(pub_batch_t, link, rn->pub_batches.next);
        unqueue_batch(rn, b);
        fail_batch(b, err);
    }
    if (h2o_timeout_is_linked(&rn->flush_entry))
        h2o_timeout_unlink(&rn->flush_entry);
}

const char *
pe_redis_pub_publish(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t channel_len, const char *ikey,
                     size_t ikey_len, const char *data, size_t data_len, pe_ps_publish_cb cb, void *ctx)
{
    redis_engine_t *self = (redis_engine_t *)_self;
    rnode_t *rn = self->nodes[pe_ps_node__index(node)];
    if (rn == NULL || !pe_redis_link_is_up(rn->link))
        return pe_ps_err_unavailable;
    /* pe_ps_publish checked the channel and the key (at most PE_CHANNEL_MAXLEN and
     * PE_PS_KEY_MAXLEN bytes); the names are copied, not printed: the printf family was about 5 %
     * of a node's CPU under HTTP/2 publishes through Redis (perf; its callers not resolved), and
     * these ran once or twice per publish. */
    if (channel_len > PE_CHANNEL_MAXLEN || (ikey != NULL && ikey_len > PE_PS_KEY_MAXLEN))
        return pe_ps_err_unavailable;
    char key[PE_CHANNEL_MAXLEN + 6];
    memcpy(key, "pe:{", 4);
    memcpy(key + 4, channel, channel_len);
    memcpy(key + 4 + channel_len, "}", 2);
    size_t klen = channel_len + 5;
    int batched = self->wait_replicas == 0;
    publish_t *p = pe_malloc(sizeof(*p) + (batched ? data_len : 0));
    p->link = (h2o_linklist_t){NULL, NULL};
    p->rn = rn;
    p->cb = cb;
    p->ctx = ctx;
    p->keyed = ikey != NULL;
    p->rec_len = 0;
    p->data_len = data_len;
    /* The record's name starts with the stream's, hash tag included: same Cluster slot. */
    if (p->keyed) {
        memcpy(p->rec, key, klen);
        memcpy(p->rec + klen, ":idem:", 6);
        memcpy(p->rec + klen + 6, ikey, ikey_len);
        p->rec_len = klen + 6 + ikey_len;
        p->rec[p->rec_len] = '\0';
    }
    if (!batched) {
        if (send_single(rn, key, (size_t)klen, p, data, data_len) != 0) {
            pe_free(p);
            return pe_ps_err_unavailable;
        }
        return NULL;
    }
    memcpy(p->data, data, data_len);
    pub_batch_t *b = pe_strmap_get(&rn->pub_map, key, (size_t)klen);
    if (b != NULL && (b->count == PE_REDIS_PUBLISH_BATCH_MAX || b->bytes + data_len > PE_REDIS_PUBLISH_BATCH_BYTES)) {
        /* Full: it stays queued, ahead of the channel's new batch, and leaves with the flush
         * (sending it now could fail it, and run callbacks inside this call). */
        pe_strmap_remove(&rn->pub_map, key, (size_t)klen);
        b = NULL;
    }
    if (b == NULL) {
        b = pe_malloc(sizeof(*b));
        b->link = (h2o_linklist_t){NULL, NULL};
        b->rn = rn;
        h2o_linklist_init_anchor(&b->pubs);
        b->count = b->bytes = b->keyed = 0;
        b->key_len = (size_t)klen;
        memcpy(b->key, key, (size_t)klen + 1);
        pe_strmap_set(&rn->pub_map, key, (size_t)klen, b);
        h2o_linklist_insert(&rn->pub_batches, &b->link);
    }
    h2o_linklist_insert(&b->pubs, &p->link);
    ++b->count;
    b->bytes += data_len;
    b->keyed += p->keyed;
    if (!h2o_timeout_is_linked(&rn->flush_entry))
        h2o_timeout_link(rn->loop, &rn->flush_timeout, &rn->flush_entry);
    return NULL;
}

void
pe_redis_pub_init(rnode_t *rn)
{
    pe_strmap_init(&rn->pub_map);
    h2o_linklist_init_anchor(&rn->pub_batches);
    h2o_timeout_init(rn->loop, &rn->flush_timeout, 0);
    rn->flush_entry.cb = on_flush;
}

void
pe_redis_pub_dispose(rnode_t *rn)
{
    fail_queued(rn, pe_ps_err_unavailable);
    pe_strmap_dispose(&rn->pub_map);
    h2o_timeout_dispose(rn->loop, &rn->flush_timeout);
}

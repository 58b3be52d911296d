/*
 * redis_engine.h: what the Redis engine's files share, and nothing else may use: the engine
 * (redis_engine_t, made and owned by engine_redis.c) and each node's share of it (rnode_t, made
 * at attach and freed at detach by engine_redis.c, touched by that node's thread only). The
 * publish path (redis_publish.c) owns the rnode's publish fields (pub_map, pub_batches,
 * flush_*) between pe_redis_pub_init and pe_redis_pub_dispose.
 */
#ifndef PE_REDIS_ENGINE_H
#define PE_REDIS_ENGINE_H

#include <h2o.h>
#include "engine.h"
#include "recent.h"
#include "redis_link.h"
#include "strmap.h"

/* The pub/sub channel of control messages, and the length of an instance id in it. */
#define PE_REDIS_CONTROL "pe:control"
#define PE_REDIS_INSTANCE_LEN 16

typedef struct st_redis_engine_t redis_engine_t;
typedef struct st_rnode_t rnode_t;

/* One node's share of the engine: its link and the channels it subscribes to; touched by that
 * node's thread only. */
struct st_rnode_t {
    redis_engine_t *engine;
    pe_ps_node_t *node;
    h2o_evloop_t *loop;
    unsigned index;
    pe_redis_link_config_t link_cfg; /* the engine's, with this node's index */
    pe_redis_link_t *link;
    int keyspace;      /* Redis sends keyspace events for streams, and this is no cluster */
    pe_strmap_t chans; /* name -> rchan_t */
    h2o_linklist_t rchans;
    h2o_timeout_t sweep_timeout;
    h2o_timeout_entry_t sweep_entry;
    /* Publishes of this loop iteration not sent yet, one batch per channel (pub_batch_t), in
     * the order of each channel's first publish; sent together when the iteration's timeouts
     * run (flush_timeout, 0 ms), so that what arrived in one iteration is one command per
     * channel and one write to Redis. */
    pe_strmap_t pub_map; /* key -> pub_batch_t */
    h2o_linklist_t pub_batches;
    h2o_timeout_t flush_timeout;
    h2o_timeout_entry_t flush_entry;
    /* The registry (presence members and users' connections) this thread's connections hold:
     * registered again whenever the link comes up or the node learns it was swept as dead;
     * removals made while the link was down wait in `removals` (owned) until it is up. */
    h2o_linklist_t members, removals; /* pe_ps_member_t._link */
    unsigned reg_epoch;               /* the engine's reg_epoch when this thread last registered */
    /* Thread 0 only: the node's heartbeat and the sweep of dead nodes. */
    h2o_timeout_t beat_timeout;
    h2o_timeout_entry_t beat_entry;
    pe_recent_budget_t recent_budget; /* the bytes this thread's channel caches hold */
};

struct st_redis_engine_t {
    pe_ps_engine_t super;
    pe_redis_link_config_t link_cfg; /* seeds, password, db, library; index set per node */
    char *password;
    char *library;            /* the function library text */
    char maxlen[24], ttl[24]; /* our retention, passed with every publish and read */
    char window[24];          /* the idempotency window (ms), passed with every keyed publish */
    char *sentinel_master;    /* redis+sentinel://: the master's name (link_cfg points here) */
    unsigned wait_replicas;   /* WAIT after each publish for this many replicas; 0: no WAIT */
    char wait_args[2][24];    /* WAIT's arguments: replicas, timeout (ms) */
    void (*log)(int level, const char *text);
    rnode_t *nodes[MAX_NODES];
    unsigned up_links;                        /* atomic */
    int warned_keyspace;                      /* atomic: the plain-XADD warning was logged */
    char instance[PE_REDIS_INSTANCE_LEN + 1]; /* this process on the control channel (random hex) */
    /* Presence: this node's set of registrations (pe:node:{ID}, for the sweep of a dead node),
     * the event bound and the heartbeat deadline as command arguments, and reg_epoch (atomic),
     * bumped when a heartbeat finds the node unlisted (swept): every thread registers again. */
    char node_key[40];
    char max_members[24], node_timeout[24];
    unsigned reg_epoch;
    size_t recent_cap; /* messages a channel's catch-up cache holds (0: no cache, no coalescing) */
    /* Batches go as pushedge_publish_many (one PUBLISH per message, readable by every version)
     * instead of pushedge_publish_batch (a few KiB per PUBLISH): --redis-batch-announce 0. */
    int announce_singly;
};

#define elog(e, ...) pe_redis_logf((e)->log, __VA_ARGS__)

/* The publish path (redis_publish.c). */
/* Sets up rn's publish batches (at attach). */
void pe_redis_pub_init(rnode_t *rn);
/* Fails every publish not sent yet (unavailable) and releases rn's publish state (at detach,
 * before the link is destroyed: commands in flight get their callbacks from that). */
void pe_redis_pub_dispose(rnode_t *rn);
/* The engine's publish op (engine.h). */
const char *pe_redis_pub_publish(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *channel, size_t channel_len,
                                 const char *ikey, size_t ikey_len, const char *data, size_t data_len, pe_ps_publish_cb cb,
                                 void *ctx);

#endif

/*
 * redis_link.h: one event-loop thread's connections to Redis (a standalone server or the
 * masters of a cluster), for the Redis engine (engine_redis.c). Private to pubsub/.
 *
 * The link connects, runs each connection's setup (AUTH, SELECT, FUNCTION LOAD of the engine's
 * library; on the seed also CONFIG GET notify-keyspace-events and CLUSTER SLOTS), pipelines
 * commands and routes each to the master of its key's slot (following MOVED and ASK), times
 * out a Redis that hangs, and reconnects with exponential backoff and full jitter, trying the
 * seeds in turn. A second connection in subscribe mode carries SUBSCRIBE/UNSUBSCRIBE and the
 * messages. It knows nothing of channels: it reports up and down, replies and pub/sub events to
 * its owner through the callbacks it is given.
 *
 * With Sentinel (redis+sentinel://) the seeds are sentinels: the link asks one for the master's
 * address, checks it with ROLE, and follows failovers (+switch-master on the sentinel, READONLY
 * or a lost master connection); the owner sees only down and up again.
 *
 * Threading: a link is created, used and destroyed on its loop's thread only.
 */
#ifndef PE_REDIS_LINK_H
#define PE_REDIS_LINK_H

#include <stddef.h>
#include "redis_url.h"

struct redisReply;
struct st_h2o_evloop_t;

typedef struct st_pe_redis_link_t pe_redis_link_t;

/* A command's whole wait for its reply before the link gives Redis up as hung (ms). */
#define PE_REDIS_TIMEOUT_MS 3000

/** A resolved Redis address. */
typedef struct st_pe_redis_addr_t {
    char ip[46]; /* INET6_ADDRSTRLEN */
    unsigned port;
} pe_redis_addr_t;

/** What every link of an engine shares; read-only, owned by the caller, outlives the links. */
typedef struct st_pe_redis_link_config_t {
    pe_redis_addr_t seeds[PE_REDIS_URL_MAX_SEEDS];
    unsigned num_seeds;
    const char *password;                     /* NULL: no AUTH */
    unsigned db;                              /* 0: no SELECT */
    const char *library;                      /* loaded with FUNCTION LOAD REPLACE on every master before the link is up */
    const char *sentinel_master;              /* non-NULL: the seeds are sentinels, and this is the master's name */
    unsigned slack_ms;                        /* added to PE_REDIS_TIMEOUT_MS: a command may queue behind a WAIT this long */
    unsigned index;                           /* the thread's number, for logs */
    void (*log)(int level, const char *text); /* may be NULL */
} pe_redis_link_config_t;

/** What the link found when it came up (borrowed for the duration of on_up). */
typedef struct st_pe_redis_link_info_t {
    const pe_redis_addr_t *seed; /* the seed it connected through */
    size_t num_masters;          /* command connections (1 unless a cluster) */
    int cluster;                 /* the seed answered CLUSTER SLOTS */
    int keyspace_events;         /* the seed's notify-keyspace-events has K and t (or K and A) */
} pe_redis_link_info_t;

/** pe_redis_link_subscribe's events, in the order Redis sends them on the subscriber connection. */
typedef enum en_pe_redis_sub_event_t {
    PE_REDIS_SUBSCRIBED,   /* a SUBSCRIBE is in effect */
    PE_REDIS_UNSUBSCRIBED, /* an UNSUBSCRIBE is */
    PE_REDIS_MESSAGE       /* a message on a subscribed channel (payload set) */
} pe_redis_sub_event_t;

typedef struct st_pe_redis_link_callbacks_t {
    /** Every connection is set up: commands may be sent. */
    void (*on_up)(void *ctx, const pe_redis_link_info_t *info);
    /**
     * The link failed (was_up 1) or a connect attempt did (was_up 0), and is going down: it is
     * already not up (commands are refused). Right after this returns, every command in flight
     * gets its callback with a NULL reply and every subscription is gone; then it reconnects.
     */
    void (*on_down)(void *ctx, int was_up);
    /** An event of the subscriber connection (channel and payload borrowed for the call). */
    void (*on_sub)(void *ctx, pe_redis_sub_event_t ev, const char *chan, size_t chan_len, const char *payload, size_t payload_len);
} pe_redis_link_callbacks_t;

/** A command's callback: reply is borrowed for the call, NULL when the link failed first. */
typedef void (*pe_redis_reply_cb)(void *ctx, struct redisReply *reply);

/**
 * Creates the link and starts connecting. cfg, cb and ctx must outlive it. No callback runs
 * before this returns (a connect that fails at once is retried after the backoff).
 */
pe_redis_link_t *pe_redis_link_create(const pe_redis_link_config_t *cfg, struct st_h2o_evloop_t *loop,
                                      const pe_redis_link_callbacks_t *cb, void *ctx);
/**
 * Closes every connection and frees the link: commands in flight get their callbacks with a
 * NULL reply from inside this call; on_down is not called.
 */
void pe_redis_link_destroy(pe_redis_link_t *link);
/** 1 if the link is up (between on_up and on_down), else 0. */
int pe_redis_link_is_up(pe_redis_link_t *link);
/**
 * Sends a command about key (in a cluster, to the master of the key's slot; a MOVED or ASK
 * redirection is followed, and cb gets the final answer). Returns 0 and calls cb exactly once
 * later, or -1 (cb never called) when the link cannot send it.
 */
int pe_redis_link_command(pe_redis_link_t *link, const char *key, size_t key_len, pe_redis_reply_cb cb, void *ctx, int argc,
                          const char **argv, const size_t *argvlen);
/**
 * Sends a command on the connection whose reply is being handled: only from inside a
 * pe_redis_link_command callback, for commands that must share its connection (WAIT counts
 * the writes of the connection that made them). Returns 0 and calls cb exactly once later, or
 * -1 (cb never called) when that connection is gone.
 */
int pe_redis_link_command_same_conn(pe_redis_link_t *link, pe_redis_reply_cb cb, void *ctx, int argc, const char **argv,
                                    const size_t *argvlen);
/**
 * Sends SUBSCRIBE or UNSUBSCRIBE (verb) for one channel on the subscriber connection; the
 * confirmation and the messages arrive through on_sub. Nothing is sent while it is down.
 */
void pe_redis_link_subscribe(pe_redis_link_t *link, const char *verb, const char *chan, size_t chan_len);
/**
 * Loads the library again on every master (FUNCTION LOAD REPLACE), for when another process
 * replaced it with an older one. Returns -1 (nothing done) while such a reload is in flight,
 * else 0 (sent wherever a master connection can take it).
 */
int pe_redis_link_reload_library(pe_redis_link_t *link);

/* Formats a line of at most 511 bytes and hands it to log (nothing when log is NULL): the link
 * and the engine log through the same sink. */
void pe_redis_logf(void (*log)(int level, const char *text), int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif

/*
 * engine.h: the interface between nodes (node.c) and engines (engine_memory.c, later the Redis
 * Streams engine). Private to pubsub/.
 *
 * An engine answers three questions for a node, all asynchronously (results arrive on the
 * node's loop through pe_ps_node__defer / pe_ps_node__post_live, never inside the call):
 *   - publish: store a message, return its ID;
 *   - watch/unwatch: feed the node each new message of a channel once, in ID order;
 *   - read: a page of a channel's history after a position, with gap detection.
 * The node does the rest (per-subscriber positions, the catch-up/live seam, fan-out).
 *
 * Checklist when adding an engine: implement every op below, set engine->ops and name, create it
 * from edge/main.c, and run the e2e suite against it.
 */
#ifndef PE_ENGINE_H
#define PE_ENGINE_H

#include <h2o/linklist.h>
#include "pubsub.h"

/* Nodes an engine serves at most (pe_ps_options_t.max_nodes is 1..MAX_NODES); engines keep a
 * slot per node index. */
#define MAX_NODES 64

typedef struct st_pe_ps_read_result_t {
    const char *err; /* NULL, or why the read failed (the node retries later) */
    int gap;         /* 1 if messages after the requested position were lost */
    pe_id_t base;    /* the position before msgs[0]: where the subscriber stands after the gap */
    pe_msg_t **msgs; /* owned references, in ID order */
    size_t num_msgs;
    int reached_end; /* 1 if msgs end with the channel's newest message at the time of the read */
} pe_ps_read_result_t;

typedef void (*pe_ps_read_cb)(void *ctx, pe_ps_read_result_t *result);

/** A deferred call on a node's loop; embedded in whatever needs one. */
typedef struct st_pe_ps_deferred_t {
    struct st_pe_ps_deferred_t *_next;
    void (*cb)(struct st_pe_ps_deferred_t *d);
} pe_ps_deferred_t;

/* What a registration is. */
typedef enum en_pe_ps_member_kind_t { PE_PS_MEMBER_PRESENCE = 0, PE_PS_MEMBER_USER } pe_ps_member_kind_t;

/*
 * A registration: a presence member of a channel, or a user's connection. Built by the node
 * (pe_ps__member_new), handed to the engine by member_add; after member_remove the engine owns
 * it and frees it (pe_ps__member_free) when it no longer needs it. Immutable but for _link.
 */
struct st_pe_ps_member_t {
    h2o_linklist_t _link; /* the engine's (Redis: the node's registrations, replayed on reconnect) */
    pe_ps_member_kind_t kind;
    char *key; /* the channel name (presence) or the user id; NUL-terminated */
    size_t key_len;
    char client[PE_PS_CLIENT_MAXLEN + 1]; /* the connection id */
    size_t client_len;
    /* {"client":..,"user":..,"node":..[,"info":{..}],"transport":..,"since":..}: what the
     * registry lists. The layout matters: the event is this text up to ,"transport": (the last
     * one: info may hold that text), and redis_lib.lua cuts it the same way. */
    char *json;
    size_t json_len;
    size_t event_len; /* json[0..event_len) is the event's fields: {"client":..,..,"info":{..} */
    char *user_json;  /* the user as JSON: "sub" (escaped) or null */
};

/* The ways a registry is queried (engine op query). */
typedef struct st_pe_ps_query_t {
    pe_ps_member_kind_t kind;
    int with_members;
    pe_ps_registry_cb cb;
    void *ctx;
} pe_ps_query_t;

typedef struct st_pe_ps_engine_ops_t {
    /* key: NULL, or a valid idempotency key (pubsub.h pe_ps_publish). */
    const char *(*publish)(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *channel, size_t channel_len, const char *key,
                           size_t key_len, const char *data, size_t data_len, pe_ps_publish_cb cb, void *ctx);
    void (*watch)(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *channel, size_t channel_len);
    void (*unwatch)(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *channel, size_t channel_len);
    /* Reads at most max messages after start; max == 0 only reports the position (base). */
    void (*read)(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *channel, size_t channel_len, pe_start_t start, size_t max,
                 pe_ps_read_cb cb, void *ctx);
    void (*attach)(pe_ps_engine_t *engine, pe_ps_node_t *node, unsigned index);
    void (*detach)(pe_ps_engine_t *engine, pe_ps_node_t *node, unsigned index);
    int (*is_ready)(pe_ps_engine_t *engine);
    void (*destroy)(pe_ps_engine_t *engine);
    /* The registry (presence members, users' connections). member_add: m is registered (for a
     * presence member, its join stored, within the channel's --presence-max-members); the node
     * keeps m until member_remove, which hands it back to the engine (and stores the leave). */
    void (*member_add)(pe_ps_engine_t *engine, pe_ps_node_t *node, pe_ps_member_t *m);
    void (*member_remove)(pe_ps_engine_t *engine, pe_ps_node_t *node, pe_ps_member_t *m);
    /* Answers q (the channel's or the user's registrations) with q->cb later, or returns an error. */
    const char *(*query)(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *key, size_t key_len, const pe_ps_query_t *q);
    /* Optional (NULL: -1): the key table's state, for engines that keep one in process. */
    int (*idempotency_stats)(pe_ps_engine_t *engine, uint64_t *keys, uint64_t *evictions);
    /* Optional (NULL: nothing to send): broadcasts a control message to the other processes
     * sharing the engine (pubsub.h pe_ps_control_publish), which get it via pe_ps_node__control. */
    const char *(*control_publish)(pe_ps_engine_t *engine, pe_ps_node_t *node, const char *text, size_t len);
} pe_ps_engine_ops_t;

struct st_pe_ps_engine_t {
    const pe_ps_engine_ops_t *ops;
    const char *name;
    pe_ps_options_t opts;
    size_t num_channels;       /* atomic: channels the engine itself holds (memory engine) */
    size_t num_local_channels; /* atomic: local channel entries summed over the nodes */
    char node_id[17];          /* pe_ps_engine_node_id: set at creation (pe_ps__engine_init) */
};

/** Sets what every engine shares (ops, name, options, node id). */
void pe_ps__engine_init(pe_ps_engine_t *engine, const pe_ps_engine_ops_t *ops, const char *name, const pe_ps_options_t *opts);
void pe_ps__member_free(pe_ps_member_t *m);
/**
 * The data of m's join or leave event in channel (m->key):
 * {"channel":..,"client":..,"user":..,"node":..[,"info":{..}]},
 * pe_malloc'd, NUL-terminated; *len its length.
 */
char *pe_ps__presence_event(const pe_ps_member_t *m, size_t *len);
/** A message of kind (PE_MSG_JOIN / PE_MSG_LEAVE / PE_MSG_DATA) for data (valid JSON). */
pe_msg_t *pe_ps__msg_new_kind(pe_id_t id, const char *channel, size_t channel_len, const char *data, size_t data_len, uint8_t kind);

/* Node services for engines (node.c). */

/** Runs d->cb on the node's loop after the current event (only from the node's own thread). */
void pe_ps_node__defer(pe_ps_node_t *node, pe_ps_deferred_t *d);
/**
 * Hands a new message of a watched channel to the node; may be called from any thread. Takes
 * over one reference of msg. Messages of one channel must be posted in ID order.
 */
void pe_ps_node__post_live(pe_ps_node_t *node, pe_msg_t *msg);
/**
 * Hands a new message of a watched channel to the node's subscribers now (msg is borrowed);
 * only from the node's own thread, outside any subscriber callback.
 */
void pe_ps_node__deliver_live(pe_ps_node_t *node, pe_msg_t *msg);
/**
 * The engine may have missed messages of the channel (its live feed was interrupted): every
 * local subscriber of it reads history again from its own position. Node's thread only.
 */
void pe_ps_node__resync(pe_ps_node_t *node, const char *channel, size_t len);
/** Tells the node's subscribers that the engine went down (0) or came back (1). */
void pe_ps_node__engine_state(pe_ps_node_t *node, int up);
/** A control message from another process, for the node's control callback (node's thread only). */
void pe_ps_node__control(pe_ps_node_t *node, const char *text, size_t len);
unsigned pe_ps_node__index(pe_ps_node_t *node);
struct st_h2o_evloop_t *pe_ps_node__loop(pe_ps_node_t *node);
/** Counts a stored message in the node's statistics. */
void pe_ps_node__count_published(pe_ps_node_t *node);
/** Counts a history read answered by source (PE_PS_READ_*: pubsub.h). */
void pe_ps_node__count_read(pe_ps_node_t *node, unsigned source);
/** Counts a keyed publish answered with an earlier ID (nothing stored). */
void pe_ps_node__count_replayed(pe_ps_node_t *node);
/** The idempotency window in effect (the option, or the default when it is 0), in ms. */
uint64_t pe_ps__idempotency_window_ms(const pe_ps_options_t *opts);
/** The engine's clock in milliseconds since the epoch (overridable in unit tests). */
extern uint64_t (*pe_ps__now_ms)(void);

#endif

/*
 * pubsub.h: the subscription layer's interface: engines, nodes and subscribers. edge/ and
 * fallback/ also include pubsub's pure helpers (alloc.h, stats.h, json_text.h, cursor.h,
 * stream_id.h, redis_url.h); nothing else of pubsub/ is theirs to use.
 *
 * Three objects:
 *   - an engine (process-wide, thread-safe): stores each channel's history and assigns IDs. The
 *     memory engine is the zero-setup default; the Redis Streams engine implements the same ops.
 *   - a node (one per event-loop thread, share-nothing): keeps that thread's subscribers per
 *     channel, receives each channel's new messages once from the engine, and fans them out.
 *   - a subscriber (pe_sub_t, embedded in a transport's connection object): a set of channels,
 *     each with a position (the last message ID delivered); its positions form its cursor.
 *
 * Delivery rule: every subscriber sees, per channel, every message after its start position
 * exactly once and in ID order, or a gap callback first when history no longer reaches back.
 * Catch-up from history is read in pages and paced by the transport (on_message returns
 * PE_SUB_PAUSE when its queue is full; pe_sub_resume continues), then the channel goes live.
 *
 * Threading: everything except pe_ps_engine_* creation and destruction runs on the node's own
 * loop thread. Callbacks are never invoked from inside the call that caused them.
 */
#ifndef PE_PUBSUB_H
#define PE_PUBSUB_H

#include <stddef.h>
#include <stdint.h>
#include "stream_id.h"
#include "cursor.h"

struct st_h2o_evloop_t;
struct st_pe_ps_who_t;

/* Errors crossing the pubsub boundary, compared by address. */
extern const char pe_ps_err_unavailable[]; /* the engine cannot be reached: nothing was stored */
/* The publish reached the engine but was not confirmed in time (a hung or lost connection): it
 * may have been stored, now or later. Only a retry with the same key tells (pe_ps_publish). */
extern const char pe_ps_err_unconfirmed[];
/* pe_ps_err_bad_channel (stream_id.h): a channel name outside the rule. */
extern const char pe_ps_err_channel_limit[]; /* --max-channels reached: no new channel now */
extern const char pe_ps_err_too_many[];      /* more than PE_CURSOR_MAX_ENTRIES channels in one subscriber */
extern const char pe_ps_err_duplicate[];     /* the subscriber already has that channel */
extern const char pe_ps_err_exhausted[];     /* the channel's ID space is exhausted */
extern const char pe_ps_err_bad_key[];       /* idempotency key outside the rule (docs/protocol.md "Publish") */
/* Redis engine with a WAIT (pe_ps_options_t.redis_wait_replicas): the message was stored on the
 * master, but fewer replicas confirmed it in time, so a failover may lose it. A retry with the
 * same key answers its ID (and waits again); without a key a retry stores a second copy. */
extern const char pe_ps_err_not_replicated[];

/* ---- messages ---------------------------------------------------------------------------- */

/* Cache slots for the encodings the layer above builds from a message and shares among its
 * subscribers; pubsub only stores and frees them (edge/wire/wire.h names the slots). */
#define PE_MSG_NUM_ENCODINGS 3

typedef struct st_pe_msg_encoding_t {
    size_t len;
    char data[];
} pe_msg_encoding_t;

/**
 * An immutable, reference-counted message: its fields and its envelope, the JSON every transport
 * carries. Transport encodings are built from the envelope once per message into the cache slots
 * (pe_msg_encoding) and shared by every subscriber on every thread (no per-subscriber copy).
 * Fields are read-only; the reference count is atomic so threads may share a message.
 */
typedef struct st_pe_msg_t {
    pe_id_t id;
    const char *channel; /* NUL-terminated */
    size_t channel_len;
    const char *data; /* the published JSON value, minified to one line */
    size_t data_len;
    const char *envelope; /* {"channel":"..","id":"..","data":..} */
    size_t envelope_len;
    char id_str[PE_ID_MAXLEN + 1];
    size_t id_len;
    /* When the publish was accepted (pe_msg_clock_us), or 0 if unknown: set by the engine before
     * the message is shared, for the delivery-latency histogram. The memory engine stamps its own
     * acceptance; the Redis engine the stream ID's millisecond (Redis's clock, see engine_redis.c). */
    uint64_t accepted_us;
    /* PE_MSG_DATA for a published message; PE_MSG_JOIN / PE_MSG_LEAVE for a presence event, an
     * entry of the channel's own history that only the engine writes (never a publish), whose
     * data is {"channel":..,"client":..,"user":..} (docs/protocol.md "Presence"). Set by the
     * engine before the message is shared. */
    uint8_t kind;
    void *_encodings[PE_MSG_NUM_ENCODINGS]; /* pe_msg_encoding_t *, built lazily, atomically set */
    size_t _refcnt;                         /* only through __atomic builtins: threads share messages */
} pe_msg_t;

/* pe_msg_t.kind */
#define PE_MSG_DATA 0
#define PE_MSG_JOIN 1
#define PE_MSG_LEAVE 2
/* A member count (docs/protocol.md "Large channels"): live only, never stored, no ID (id 0-0),
 * data {"channel":..,"count":N}; it moves no position and is not part of any cursor. */
#define PE_MSG_COUNT 3

/** Creates a message with one reference. data must be valid JSON (it is minified here). */
pe_msg_t *pe_msg_new(pe_id_t id, const char *channel, size_t channel_len, const char *data, size_t data_len);
static inline void
pe_msg_retain(pe_msg_t *msg)
{
    __atomic_add_fetch(&msg->_refcnt, 1, __ATOMIC_RELAXED);
}
/** Drops one reference; frees the message with the last one. */
void pe_msg_release(pe_msg_t *msg);
/** The wall clock in microseconds (CLOCK_REALTIME): the clock of accepted_us, comparable across
 * processes and hosts as far as their clocks agree. */
uint64_t pe_msg_clock_us(void);
/**
 * Returns the message's encoding in `slot`, calling build (which returns a pe_malloc'd encoding)
 * the first time it is needed. Any thread may call it; when two race, one result is kept and the
 * other freed, so every caller gets the same bytes. Valid while the caller holds a reference.
 */
const pe_msg_encoding_t *pe_msg_encoding(pe_msg_t *msg, unsigned slot, pe_msg_encoding_t *(*build)(const pe_msg_t *msg));

/* ---- engine -------------------------------------------------------------------------------- */

typedef struct st_pe_ps_engine_t pe_ps_engine_t;

typedef struct st_pe_ps_options_t {
    size_t history_size;     /* messages retained per channel (>= 1) */
    uint64_t history_ttl_ms; /* maximum age of a retained message */
    unsigned max_nodes;      /* number of nodes (threads) that will attach, 1..64 */
    /* Upper bound on channels (0: none): distinct channels with local subscribers, summed over
     * the nodes, and for the memory engine also the channels it stores. */
    size_t max_channels;
    /* How long a publish's idempotency key is remembered (0: the default, 300 s). */
    uint64_t idempotency_window_ms;
    /* Presence (docs/architecture.md "Presence"): past this many members of a channel its join
     * and leave events are no longer stored (the registry still lists every member); 0: none. */
    size_t presence_max_members;
    /* The Redis engine: a node whose heartbeat is older than this is dead and its members are
     * swept (0: the default, PE_PS_DEFAULT_NODE_TIMEOUT_MS). */
    uint64_t presence_node_timeout_ms;
    /* Presence counts (docs/protocol.md "Large channels"): each node asks the engine for the
     * member count of its channels with presence subscribers this often, and past
     * presence_max_members hands a PE_MSG_COUNT to those whose last count differs (0: the
     * default, PE_PS_DEFAULT_COUNT_INTERVAL_MS). */
    uint64_t presence_count_interval_ms;
    /* Redis engine: after each publish, WAIT for this many replicas (0: no WAIT) for at most
     * redis_wait_timeout_ms (1 or more); fewer answer pe_ps_err_not_replicated. */
    unsigned redis_wait_replicas;
    unsigned redis_wait_timeout_ms;
    /* Redis engine: messages of each channel a thread keeps for catch-ups (--catchup-cache,
     * pubsub/recent.c), at most history_size; 0 turns the cache and read coalescing off. */
    size_t catchup_cache;
    /* Redis engine: announce the messages of a batch one PUBLISH each (pushedge_publish_many),
     * as versions before pushedge_publish_batch did, instead of a few KiB per PUBLISH, which
     * those versions cannot read (--redis-batch-announce 0, for a rolling upgrade from them). */
    int redis_announce_singly;
    /* Where engines report state changes (0 error .. 3 debug), from any thread; may be NULL. */
    void (*log)(int level, const char *text);
} pe_ps_options_t;

/** The embedded in-memory engine. Never fails (aborts on out-of-memory). */
pe_ps_engine_t *pe_ps_engine_create_memory(const pe_ps_options_t *opts);
/**
 * The Redis Streams engine for url (redis://[:password@]host:port[/db], or
 * redis+sentinel://[:password@]host:port[,...]/MASTER[/db]: redis_url.h; the hosts are resolved
 * here, once). Connects from each node's loop when the node is created, and keeps reconnecting;
 * never blocks. Returns NULL with a message in err if the URL cannot be used.
 */
pe_ps_engine_t *pe_ps_engine_create_redis(const pe_ps_options_t *opts, const char *url, char *err, size_t errlen);
/** Destroys the engine; every node must have been destroyed first. */
void pe_ps_engine_destroy(pe_ps_engine_t *engine);
/** 1 if the engine can store and read messages now (thread-safe), else 0. */
int pe_ps_engine_is_ready(pe_ps_engine_t *engine);
/** Channels the engine holds in this process (the memory engine's map; 0 for Redis). */
size_t pe_ps_engine_num_channels(pe_ps_engine_t *engine);
/**
 * 1 if subscribing to `adding` more channels on top of what the nodes have would pass
 * --max-channels (transports check before they subscribe; any thread).
 */
int pe_ps_engine_channels_full(pe_ps_engine_t *engine, size_t adding);
/**
 * This process's node id (16 lower-case hex digits, random at each start: a restarted process
 * is a new node, so the registry never confuses it with its previous life). Any thread.
 */
const char *pe_ps_engine_node_id(pe_ps_engine_t *engine);
/** A short name for logs and metrics ("memory", "redis"). */
const char *pe_ps_engine_name(pe_ps_engine_t *engine);

/* ---- nodes --------------------------------------------------------------------------------- */

typedef struct st_pe_ps_node_t pe_ps_node_t;

/** Counters of one node; each is written by its own thread only and read with relaxed loads. */
typedef struct st_pe_ps_node_stats_t {
    uint64_t published;   /* messages stored through this node */
    uint64_t replayed;    /* keyed publishes answered with an earlier ID (nothing stored) */
    uint64_t delivered;   /* messages handed to subscribers (catch-up and live) */
    uint64_t gaps;        /* gap callbacks */
    uint64_t subscribers; /* current subscribers (gauge) */
    uint64_t channels;    /* channels with at least one local subscriber (gauge) */
    /* History reads (catch-ups) by how they were answered: PE_PS_READ_ENGINE (an engine read:
     * a Redis FCALL, or the memory engine's ring), _CACHE (the Redis engine's channel cache),
     * _SHARED (the reply of an identical or covering read in flight). */
    uint64_t reads[3];
} pe_ps_node_stats_t;

#define PE_PS_READ_ENGINE 0
#define PE_PS_READ_CACHE 1
#define PE_PS_READ_SHARED 2

/**
 * Creates the node of thread `index` (0 .. max_nodes-1) on its loop; call on that thread.
 * The node owns its engine attachment; destroy it on the same thread after every subscriber
 * was disposed.
 */
pe_ps_node_t *pe_ps_node_create(pe_ps_engine_t *engine, struct st_h2o_evloop_t *loop, unsigned index);
void pe_ps_node_destroy(pe_ps_node_t *node);
/** Copies the node's counters (may be called from any thread). */
void pe_ps_node_get_stats(pe_ps_node_t *node, pe_ps_node_stats_t *out);
pe_ps_engine_t *pe_ps_node_engine(pe_ps_node_t *node);

/* ---- publishing ---------------------------------------------------------------------------- */

/* Idempotency keys: 1-PE_PS_KEY_MAXLEN characters of A-Z a-z 0-9 _ - . : (docs/protocol.md "Publish"). */
#define PE_PS_KEY_MAXLEN 64
/** 1 if key[0..len) is a valid idempotency key, else 0. */
int pe_ps_key_is_valid(const char *key, size_t len);

/**
 * Called once the message is stored (err == NULL, *id its ID) or was not (err set, id NULL).
 * replayed is 1 when a keyed publish found its key already recorded: nothing new was stored and
 * *id is the ID the first publish with that key got.
 */
typedef void (*pe_ps_publish_cb)(void *ctx, const char *err, const pe_id_t *id, int replayed);

/**
 * Stores data (valid JSON text) as the next message of the channel. Returns NULL and calls cb
 * exactly once later, or returns an error constant (cb never called). The caller must keep ctx
 * valid until cb runs (use a weak-pointer holder for request-scoped callers).
 *
 * With a key (key != NULL; pe_ps_err_bad_key unless valid), a publish repeated with the same key
 * on the same channel within the engine's idempotency window stores nothing and reports the
 * first one's ID, on every node of the engine; the check and the append are one atomic step.
 * Errors: returned here, or passed to cb as pe_ps_err_unavailable, nothing was stored; passed
 * to cb as pe_ps_err_unconfirmed, the message may have been stored (or be stored later, when a
 * hung engine resumes): a retry with the same key answers its ID, or stores it once.
 */
const char *pe_ps_publish(pe_ps_node_t *node, const char *channel, size_t channel_len, const char *key, size_t key_len,
                          const char *data, size_t data_len, pe_ps_publish_cb cb, void *ctx);

/**
 * The memory engine's key table: keys held now and keys forgotten before their window ended
 * because the table was full. Returns 0, or -1 when the engine keeps its keys elsewhere (Redis).
 */
int pe_ps_engine_idempotency_stats(pe_ps_engine_t *engine, uint64_t *keys, uint64_t *evictions);

/* ---- control messages ---------------------------------------------------------------------- */

/**
 * Receives a control message another process sharing the engine broadcast
 * (pe_ps_control_publish), on the node's loop; text is borrowed for the call. Runs inside the
 * engine's callback: it should only copy and defer (no subscriber calls from here).
 */
typedef void (*pe_ps_control_cb)(void *ctx, const char *text, size_t len);
/** Sets the node's control callback (NULL: control messages are dropped). Node's thread only. */
void pe_ps_node_set_control(pe_ps_node_t *node, pe_ps_control_cb cb, void *ctx);
/**
 * Broadcasts text to every other process sharing the engine, where every node receives it once
 * (the Redis engine: PUBLISH on the channel pe:control, which every thread's link subscribes to;
 * the memory engine has no other process and sends nothing). Not to this process's own nodes.
 * Returns NULL if sent (or there was nowhere to send it), else pe_ps_err_unavailable.
 */
const char *pe_ps_control_publish(pe_ps_node_t *node, const char *text, size_t len);

/* ---- subscribers --------------------------------------------------------------------------- */

typedef struct st_pe_sub_t pe_sub_t;
typedef struct st_pe_sub_chan_t pe_sub_chan_t;

/** Where a channel's delivery starts. */
typedef enum en_pe_start_kind_t {
    PE_START_NEW,    /* only messages published from now on */
    PE_START_OLDEST, /* from the oldest retained message, without a gap */
    PE_START_AFTER   /* after `after`: gap if history no longer reaches back to it */
} pe_start_kind_t;

typedef struct st_pe_start_t {
    pe_start_kind_t kind;
    pe_id_t after;
    /* 1 if `after` is this channel's own position, so a position beyond the channel's newest
     * message means the engine lost data (gap); 0 if it is a time shared by several channels. */
    int strict;
} pe_start_t;

#define PE_SUB_CONTINUE 0
#define PE_SUB_PAUSE 1

typedef struct st_pe_sub_callbacks_t {
    /**
     * A message (borrowed: retain it to keep it). Return PE_SUB_PAUSE when the transport's queue
     * is full: catch-up stops until pe_sub_resume(). Live messages are always pushed: a
     * transport whose queue overflows its hard bound ends the subscriber as a slow consumer.
     */
    int (*on_message)(pe_sub_t *sub, pe_msg_t *msg);
    /**
     * History no longer reaches back to the channel's position (docs/protocol.md "Gaps"). The
     * position moves to where the retained history starts, which can be below messages already
     * delivered when the engine lost them (a failover): messages after a gap are ordered only
     * among themselves. During the call the position already stands there.
     * Return PE_SUB_CONTINUE to take the gap, or PE_SUB_PAUSE to take it later: the position
     * goes back to the last message delivered, nothing more of the channel is delivered, and
     * catch-up stops until pe_sub_resume(), which offers the same gap first. A transport whose
     * output cannot put a gap after messages of the same channel (a long-poll batch lists its
     * gaps before its messages) pauses here and ends its batch: a subscriber resuming from the
     * position is told the gap again by the engine.
     */
    int (*on_gap)(pe_sub_t *sub, const char *channel, size_t channel_len);
    /** Every channel has caught up and is live (called each time this becomes true). */
    void (*on_live)(pe_sub_t *sub);
    /**
     * The engine became unreachable (up == 0) or reachable again (1); optional (may be NULL).
     * Called once per change per subscriber; nothing is lost meanwhile (the subscriber catches
     * up when it is back).
     */
    void (*on_engine)(pe_sub_t *sub, int up);
    /**
     * The channel's start position is established (its first history read answered); called
     * once per pe_sub_add, before its gap and messages. From here on nothing published to the
     * channel is missed: a transport confirms the subscription now. Optional (may be NULL).
     */
    void (*on_ready)(pe_sub_t *sub, const char *channel, size_t channel_len);
    /**
     * Who the subscriber is, for the presence registry: fills *out (strings borrowed for the
     * call). Required for channels added with PE_SUB_PRESENCE_MEMBER, else may be NULL.
     */
    void (*who)(pe_sub_t *sub, struct st_pe_ps_who_t *out);
} pe_sub_callbacks_t;

/**
 * A subscriber. Embed it in the transport's connection object; fields are private except cb.
 * The transport owns it and must call pe_sub_dispose() before freeing it, and never from inside
 * one of its callbacks (defer that to the loop).
 */
struct st_pe_sub_t {
    const pe_sub_callbacks_t *cb;
    pe_ps_node_t *_node;
    pe_sub_chan_t **_chans; /* in the order they were added: the cursor's order */
    size_t _num_chans;
    size_t _capacity;
    struct st_pe_sub_t *_sched_prev, *_sched_next; /* the node's run queue, while _scheduled */
    unsigned _scheduled : 1;
    unsigned _paused : 1;
    unsigned _live_announced : 1;
    unsigned _dispatching : 1;
    unsigned _engine_down : 1;   /* the last on_engine said 0 */
    unsigned _live_dispatch : 1; /* inside on_message for a live message (not catch-up) */
};

/** Initialises a subscriber with no channels. */
void pe_sub_init(pe_sub_t *sub, pe_ps_node_t *node, const pe_sub_callbacks_t *cb);
/**
 * Adds a channel from `start`. Returns NULL (delivery begins on a later loop iteration) or an
 * error constant (pe_ps_err_bad_channel, _too_many, _duplicate).
 */
const char *pe_sub_add(pe_sub_t *sub, const char *channel, size_t channel_len, pe_start_t start);
/* pe_sub_add_flags flags */
#define PE_SUB_PRESENCE_EVENTS 1 /* deliver the channel's join/leave events (else they are skipped) */
#define PE_SUB_PRESENCE_MEMBER 2 /* list the subscriber as a member of the channel while it has it */
/**
 * pe_sub_add with flags. A member is registered (and its join stored) at once; it leaves when
 * the channel is removed or the subscriber disposed.
 */
const char *pe_sub_add_flags(pe_sub_t *sub, const char *channel, size_t channel_len, pe_start_t start, unsigned flags);
/** Removes a channel; returns 0, or -1 if the subscriber does not have it. No callback follows. */
int pe_sub_remove(pe_sub_t *sub, const char *channel, size_t channel_len);
/** The transport's queue drained below its low-water mark: continue a paused catch-up. */
void pe_sub_resume(pe_sub_t *sub);
/** Removes every channel and frees what the subscriber holds; no callback follows. */
void pe_sub_dispose(pe_sub_t *sub);
/** Number of channels. */
static inline size_t
pe_sub_num_channels(const pe_sub_t *sub)
{
    return sub->_num_chans;
}
/** The name of channel i (0 .. pe_sub_num_channels - 1, in the order added), *len its length; valid until it is removed. */
const char *pe_sub_channel(const pe_sub_t *sub, size_t i, size_t *len);
/** 1 if the subscriber has the channel. */
int pe_sub_has(const pe_sub_t *sub, const char *channel, size_t channel_len);
/**
 * Writes the subscriber's cursor (pe_cursor_format of its positions, in channel order) into buf
 * of capacity cap (PE_CURSOR_MAXLEN + 1 always suffices). Returns its length (0 if no channels).
 */
size_t pe_sub_cursor(const pe_sub_t *sub, char *buf, size_t cap);
/**
 * The channel's position (the last message delivered, or where delivery starts): a one-channel
 * cursor from which nothing is missed. Returns 0, or -1 if the subscriber lacks the channel.
 */
int pe_sub_position(const pe_sub_t *sub, const char *channel, size_t len, pe_id_t *out);
/**
 * Inside on_message: 1 if the message comes from the live feed (published just now), 0 if from
 * history (catch-up). The delivery-latency histogram counts live messages only: a catch-up
 * replays messages accepted long ago.
 */
static inline int
pe_sub_delivering_live(const pe_sub_t *sub)
{
    return sub->_live_dispatch;
}
/** 1 if every channel is live (caught up), else 0. */
int pe_sub_is_live(const pe_sub_t *sub);

/* ---- presence and the user registry -------------------------------------------------------- */

/* A connection id: "<node id>.<thread>.<serial>" (node id: pe_ps_engine_node_id). */
#define PE_PS_CLIENT_MAXLEN 63
/* The default heartbeat deadline of a node (pe_ps_options_t.presence_node_timeout_ms). */
#define PE_PS_DEFAULT_NODE_TIMEOUT_MS 5000
/* The default interval of presence counts (pe_ps_options_t.presence_count_interval_ms). */
#define PE_PS_DEFAULT_COUNT_INTERVAL_MS 1000

/** Who a connection is, as the registry lists it. */
typedef struct st_pe_ps_who_t {
    char client[PE_PS_CLIENT_MAXLEN + 1]; /* NUL-terminated connection id */
    const char *user;                     /* the token's subject, NULL: anonymous */
    size_t user_len;
    const char *transport; /* "ws", "sse" */
    uint64_t since_ms;     /* when the connection opened (wall clock, ms since the epoch) */
    const char *node;      /* the node id (pe_ps_engine_node_id), NUL-terminated */
    const char *info;      /* the token's "info" claim: a minified JSON object, or NULL */
    size_t info_len;
} pe_ps_who_t;

/** A registration (a presence member or a user's connection); owned by pubsub. */
typedef struct st_pe_ps_member_t pe_ps_member_t;

/**
 * Lists the connection `who` (who->user set) under its user on every node sharing the engine,
 * until pe_ps_user_unregister. Never fails (a Redis engine that is down registers it when it
 * is back).
 */
pe_ps_member_t *pe_ps_user_register(pe_ps_node_t *node, const pe_ps_who_t *who);
/** Removes the registration and frees m. */
void pe_ps_user_unregister(pe_ps_node_t *node, pe_ps_member_t *m);

/**
 * Answer of a registry query: err NULL and count, with members (if asked) the JSON array text
 * [{"client","user","node"[,"info"],"transport","since"},...] (borrowed for the call; NULL when not asked).
 */
typedef void (*pe_ps_registry_cb)(void *ctx, const char *err, uint64_t count, const char *members, size_t members_len);
/**
 * The members of a channel (with_members 0: only their count), on every node sharing the
 * engine. Returns NULL and calls cb once later, or an error constant (cb never called).
 */
const char *pe_ps_presence_query(pe_ps_node_t *node, const char *channel, size_t len, int with_members, pe_ps_registry_cb cb,
                                 void *ctx);
/** The connections of a user on every node, as pe_ps_presence_query. */
const char *pe_ps_user_query(pe_ps_node_t *node, const char *user, size_t len, pe_ps_registry_cb cb, void *ctx);

/** Builds the start of a channel from a parsed cursor (docs/protocol.md "The cursor"). */
pe_start_t pe_start_from_cursor(const pe_cursor_t *cursor, const char *channel, size_t channel_len, size_t num_channels);

#endif

/*
 * recent.h: a node's cache of one channel's recent messages, for catch-ups answered without an
 * engine read (pubsub/recent.c has the design). Private to pubsub/. Not thread-safe: one cache
 * belongs to one node (event-loop thread) and is touched by that thread only.
 */
#ifndef PE_RECENT_H
#define PE_RECENT_H

#include "engine.h"

/* Messages a channel's cache holds at most when the option says nothing else (--catchup-cache),
 * and never more than --history-size (recent.c: the cache must not outlive retention). */
#define PE_RECENT_DEFAULT_MSGS 256
/* Bytes the caches of one node hold at most, summed over its channels (the cost of a message is
 * PE_RECENT_COST): past it a channel's cache gives back its oldest messages, then all of them. */
#define PE_RECENT_NODE_BYTES (16u << 20)

/** What a cached message is charged: its allocation and room for its built wire formats. */
#define PE_RECENT_COST(m) (sizeof(pe_msg_t) + (m)->channel_len + (m)->data_len + 3 * (m)->envelope_len + 64)

/** The byte budget shared by one node's caches. */
typedef struct st_pe_recent_budget_t {
    size_t bytes;     /* charged now */
    size_t max_bytes; /* PE_RECENT_NODE_BYTES, smaller in tests */
} pe_recent_budget_t;

/*
 * One channel's cache: a ring of message references, oldest first, in ID order. Anchored (from
 * the start of each epoch), it holds every entry of the stream with an ID from its first message
 * up to `newest` (or, empty, knows that `newest` is the stream's newest): a cursor in
 * [first, newest] is answered from it. Unanchored (after an inconsistency), it buffers the live
 * messages until a read joins them.
 */
typedef struct st_pe_recent_t {
    pe_recent_budget_t *budget;
    /* The references: a circular buffer of `slots` (8, doubled as messages come, at most cap;
     * NULL until the first message and again once the cache is cleared). A node may watch a
     * million channels and the budget counts messages only: one holding a message or two must
     * not cost cap slots. */
    pe_msg_t **ring;
    size_t cap, slots, head, len;
    size_t bytes;    /* charged to budget */
    pe_id_t newest;  /* the newest message pushed or absorbed in this epoch (valid with have_newest) */
    pe_id_t dropped; /* unanchored: the newest live message not kept since (0-0: none) */
    unsigned epoch;  /* bumped by pe_recent_reset */
    unsigned anchored : 1;
    unsigned have_newest : 1;
} pe_recent_t;

/** Initialises an empty cache of at most cap messages (0: disabled, never serves). */
void pe_recent_init(pe_recent_t *r, pe_recent_budget_t *budget, size_t cap);
/** Releases every reference (the cache can be initialised again). */
void pe_recent_dispose(pe_recent_t *r);
/**
 * Starts a new epoch: forgets everything. Call whenever the live feed starts (a subscription
 * is confirmed) or stops or may have missed an entry (link down, unwatched). Reads issued in
 * an earlier epoch are not absorbed (pe_recent_absorb checks the epoch they carry).
 */
void pe_recent_reset(pe_recent_t *r);
/** The current epoch: a read records it when it is sent. */
static inline unsigned
pe_recent_epoch(const pe_recent_t *r)
{
    return r->epoch;
}
/**
 * A live message of the channel, posted in ID order after the epoch started (takes a new
 * reference). Messages at or below the newest are ignored.
 */
void pe_recent_push(pe_recent_t *r, pe_msg_t *msg);
/**
 * An engine read's successful answer, for a read sent in `epoch` (res is borrowed): checks it
 * against the cache (an entry one of them lacks empties and unanchors the cache: the live feed
 * missed something), raises the cache's first message past a gap's boundary, adds the read's
 * entries right below the first cached message (or fills a cache to which nothing was posted yet,
 * if the read reached the end), and anchors an unanchored cache when the read reached the end
 * past every live message the cache dropped.
 */
void pe_recent_absorb(pe_recent_t *r, unsigned epoch, const pe_ps_read_result_t *res);
/**
 * The answer of a NEW read sent in `epoch` (the stream's last ID when the read ran): if nothing
 * was posted live in the epoch yet, it becomes the cache's newest, so that later NEW reads (a
 * subscriber without a cursor) and cursors at it are answered here instead of each costing a
 * read of a quiet channel. Sound because the read ran after the epoch's subscription took
 * effect: every later entry is posted live above it, and a post of an entry the read already
 * saw arrives later (another connection) and is ignored as at or below the newest. Only NEW
 * reads: a cursor's read reports the cursor as its base, which may lie above the stream's end.
 */
void pe_recent_learn_newest(pe_recent_t *r, unsigned epoch, pe_id_t newest);
/** Drops the messages older than cutoff_ms (their ID's millisecond; the history TTL). */
void pe_recent_expire(pe_recent_t *r, uint64_t cutoff_ms);
/**
 * Answers a read of at most max messages from start if the cache can: returns 1 and fills out
 * (msgs are new references in a pe_malloc'd array; never a gap), or returns 0 (out untouched).
 * Answers NEW (base: the newest) and AFTER a position from the first cached message to the
 * newest; never OLDEST.
 */
int pe_recent_serve(pe_recent_t *r, pe_start_t start, size_t max, pe_ps_read_result_t *out);

/**
 * Answers a read from another read's answer (src, borrowed) when it can: start AFTER a position
 * within [src's first entry, its last], or identical to src's own start (src_start, src_max).
 * src_fresh: nothing was posted live between src's sending and this read's asking, so src's
 * reached_end holds for this read too; else the answer never claims the end. Returns 1 with out
 * filled (new references), or 0.
 */
int pe_recent_share(const pe_ps_read_result_t *src, pe_start_t src_start, size_t src_max, int src_fresh, pe_start_t start,
                    size_t max, pe_ps_read_result_t *out);

/** Orders read starts: OLDEST, then AFTER by position, then NEW (-1, 0, 1). */
int pe_recent_start_cmp(pe_start_t a, pe_start_t b);

#endif

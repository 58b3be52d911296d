/*
 * recent.c: a node's cache of a channel's recent messages, so that a storm of catch-ups (a
 * node restarted or drained, its subscribers coming back with cursors a few messages behind)
 * costs the engine a read or two per channel instead of one per subscriber.
 *
 * What is cached. The Redis engine posts each live message of a watched channel to the node
 * (engine_redis.c post()); the same reference-counted pe_msg_t, whose wire formats are built
 * once and shared, is also pushed here. A catch-up answered from the cache delivers those very
 * objects: no message is rebuilt, no frame encoded again.
 *
 * What the cache knows. The hard part is never to hide a gap nor invent one: an answer from the
 * cache must be the answer the engine's read would give. The cache claims, while anchored, that
 * it holds every entry of the stream from its first message to `newest`, in order, and that
 * `newest` is the newest entry the live feed has posted. It gets there as follows:
 *   - An epoch starts when the live feed starts (the channel's subscription is confirmed) and
 *     ends when it stops or may have missed something (link down, channel unwatched):
 *     pe_recent_reset. From the epoch's start every entry published reaches the cache live, in
 *     ID order (Redis PUBLISHes from inside the function that appends, one connection delivers
 *     in order, and stream IDs grow with every append). So the live messages alone are
 *     contiguous from the first one posted: an entry with a higher ID was appended after it,
 *     hence announced after it. The cache is anchored from the epoch's start.
 *   - An engine read's answer holds every entry of its range (base, E] (the range the stream
 *     retained when it ran). Where it reaches the cache's first message, its entries below it
 *     are prepended (as far as the capacity allows); when nothing was posted yet in the epoch
 *     and it reached the end (it ran after the epoch started), it fills the cache, and live
 *     messages continue it.
 *   - Every read's answer is also checked against the cache where they overlap: an entry in one
 *     and not the other (a plain XADD the live feed never announced, an entry deleted by hand)
 *     empties the cache and unanchors it; only a read that reached the end, past every live
 *     message the cache dropped meanwhile, anchors it again (with the buffered live messages
 *     above its end). A gap reported at a boundary inside the cache moves the cache's first
 *     message past it.
 * A cursor C is answered only when first <= C <= newest. Then no gap is possible: the engine's
 * gap boundary (its newest removed entry) lies below the first cached message, since that
 * message is still retained, which the cache ensures by holding at most --history-size
 * messages (the count limit removes the oldest first) and by dropping messages older than
 * --history-ttl before it answers (pe_recent_expire; the engine's read treats entries past the
 * age limit as removed). A strict cursor above the channel's newest (a gap) is above `newest`,
 * so never answered here. NEW answers with `newest` as the position. OLDEST is never answered
 * (the cache does not know where history begins). On a quiet channel (nothing posted in the
 * epoch yet) the first NEW read's answer gives the cache its newest (pe_recent_learn_newest):
 * without it, every subscriber arriving without a cursor cost a Redis read unless it joined one
 * in flight: 86,719 reads for 100,000 subscribers (docs/benchmarks.md "Scale-out").
 *
 * Node restarts need nothing: the cache lives in memory and starts empty. A Redis restart or
 * failover drops the link, which resets every cache; the re-anchoring read then sees the new
 * history. What the cache cannot see: another node with a smaller --history-size trimming
 * entries the cache still holds (a cursor between the two boundaries gets the messages instead
 * of the gap Redis would report, until a read shows the boundary), and, without keyspace
 * events, entries appended by plain XADD (not delivered live either; caught at the next read
 * that covers them). docs/architecture.md "Catch-up cache".
 *
 * Bounds: per channel the ring's capacity (--catchup-cache, at most --history-size); per node
 * the budget's bytes (PE_RECENT_NODE_BYTES): a push past it gives back the channel's oldest
 * messages, down to none. The ring itself grows with what it holds (8 slots, doubling up to the
 * capacity) and is freed when the cache empties, so its memory follows the messages the budget
 * bounds rather than the number of channels times the capacity.
 *
 * Rejected: caching in the engine process-wide (the Redis engine builds messages per thread;
 * sharing them would need locks on the hot path), and buffering the whole history (the engine
 * has it; storms are within a few messages of the end).
 */
#include <string.h>
#include "alloc.h"
#include "recent.h"

static pe_msg_t *
at(const pe_recent_t *r, size_t i)
{
    return r->ring[(r->head + i) % r->slots];
}

/* Makes room for one more message: the ring doubles (from 8, at most cap), oldest first again. */
static void
reserve_one(pe_recent_t *r)
{
    if (r->len < r->slots)
        return;
    size_t slots = r->slots == 0 ? 8 : 2 * r->slots;
    if (slots > r->cap)
        slots = r->cap;
    pe_msg_t **ring = pe_malloc(slots * sizeof(*ring));
    for (size_t i = 0; i != r->len; ++i)
        ring[i] = at(r, i);
    pe_free(r->ring);
    r->ring = ring;
    r->slots = slots;
    r->head = 0;
}

static void
evict_front(pe_recent_t *r)
{
    pe_msg_t *m = r->ring[r->head];
    if (!r->anchored)
        r->dropped = m->id; /* IDs grow: the last evicted is the newest dropped */
    size_t cost = PE_RECENT_COST(m);
    r->bytes -= cost;
    r->budget->bytes -= cost;
    pe_msg_release(m);
    r->head = (r->head + 1) % r->slots;
    --r->len;
}

/* An emptied cache gives its ring back (clear() does too), so that the slots held follow the
 * messages the budget bounds. Not inside evict_front: at cap 1 each push would free and allocate. */
static void
release_if_empty(pe_recent_t *r)
{
    if (r->len != 0)
        return;
    pe_free(r->ring);
    r->ring = NULL;
    r->slots = 0;
    r->head = 0;
}

/* Appends msg (its reference is the cache's), evicting the oldest past the bounds. */
static void
push_back(pe_recent_t *r, pe_msg_t *msg)
{
    if (r->len == r->cap)
        evict_front(r);
    reserve_one(r);
    size_t cost = PE_RECENT_COST(msg);
    r->ring[(r->head + r->len) % r->slots] = msg;
    ++r->len;
    r->bytes += cost;
    r->budget->bytes += cost;
    while (r->budget->bytes > r->budget->max_bytes && r->len != 0)
        evict_front(r);
    release_if_empty(r);
    r->newest = msg->id;
    r->have_newest = 1;
}

/* Releases every message, and the ring with them. */
static void
clear(pe_recent_t *r)
{
    while (r->len != 0)
        evict_front(r);
    release_if_empty(r);
}

void
pe_recent_init(pe_recent_t *r, pe_recent_budget_t *budget, size_t cap)
{
    *r = (pe_recent_t){.budget = budget, .cap = cap, .anchored = 1};
}

void
pe_recent_dispose(pe_recent_t *r)
{
    clear(r);
}

void
pe_recent_reset(pe_recent_t *r)
{
    if (r->cap != 0)
        clear(r);
    r->anchored = 1; /* the live feed is contiguous from its first message (above) */
    r->have_newest = 0;
    r->dropped = PE_ID_ZERO;
    r->newest = PE_ID_ZERO;
    ++r->epoch;
}

/* Forgets the cached messages but stays in the epoch: only a read that reaches past everything
 * seen so far may anchor again. */
static void
invalidate(pe_recent_t *r)
{
    r->anchored = 0;
    clear(r);
    if (r->have_newest)
        r->dropped = r->newest;
}

void
pe_recent_push(pe_recent_t *r, pe_msg_t *msg)
{
    if (r->cap == 0 || (r->have_newest && pe_id_cmp(msg->id, r->newest) <= 0))
        return;
    pe_msg_retain(msg);
    push_back(r, msg);
}

void
pe_recent_learn_newest(pe_recent_t *r, unsigned epoch, pe_id_t newest)
{
    /* Unanchored, the cache claims nothing until a read reaches past what it dropped (absorb). */
    if (r->cap == 0 || epoch != r->epoch || !r->anchored || r->have_newest)
        return;
    r->newest = newest;
    r->have_newest = 1;
}

/* The index of the first cached message above id (len if none). */
static size_t
index_above(const pe_recent_t *r, pe_id_t id)
{
    size_t lo = 0, hi = r->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pe_id_cmp(at(r, mid)->id, id) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* 1 if the cache and msgs hold the same IDs within [low, high]. */
static int
agree(const pe_recent_t *r, pe_msg_t *const *msgs, size_t n, pe_id_t low, pe_id_t high)
{
    size_t i = 0, j = index_above(r, low);
    /* index_above skips low itself: step back onto it if it is cached */
    if (j != 0 && pe_id_cmp(at(r, j - 1)->id, low) == 0)
        --j;
    while (i < n && pe_id_cmp(msgs[i]->id, low) < 0)
        ++i;
    for (;;) {
        int in_msgs = i < n && pe_id_cmp(msgs[i]->id, high) <= 0;
        int in_cache = j < r->len && pe_id_cmp(at(r, j)->id, high) <= 0;
        if (!in_msgs && !in_cache)
            return 1;
        if (in_msgs != in_cache || pe_id_cmp(msgs[i]->id, at(r, j)->id) != 0)
            return 0;
        ++i;
        ++j;
    }
}

static pe_id_t
max_id(pe_id_t a, pe_id_t b)
{
    return pe_id_cmp(a, b) >= 0 ? a : b;
}

static pe_id_t
min_id(pe_id_t a, pe_id_t b)
{
    return pe_id_cmp(a, b) <= 0 ? a : b;
}

void
pe_recent_absorb(pe_recent_t *r, unsigned epoch, const pe_ps_read_result_t *res)
{
    if (r->cap == 0 || epoch != r->epoch || res->err != NULL)
        return;
    size_t n = res->num_msgs;

    if (r->anchored) {
        /* Where both know the stream, they must agree. */
        if (n != 0 && r->len != 0) {
            pe_id_t low = max_id(at(r, 0)->id, res->msgs[0]->id), high = min_id(r->newest, res->msgs[n - 1]->id);
            if (pe_id_cmp(low, high) <= 0 && !agree(r, res->msgs, n, low, high)) {
                invalidate(r);
                return;
            }
        }
        /* Removed up to base: a cursor at or below it must get the engine's gap. A boundary
         * above the newest (the stream was deleted and started again) leaves nothing to claim. */
        if (res->gap) {
            if (pe_id_cmp(res->base, r->newest) > 0) {
                invalidate(r);
                return;
            }
            while (r->len != 0 && pe_id_cmp(at(r, 0)->id, res->base) <= 0)
                evict_front(r);
            release_if_empty(r);
        }
        if (n == 0)
            return;
        pe_id_t end = res->msgs[n - 1]->id;
        if (!r->have_newest) {
            /* Nothing posted yet: a read that reached the end is where the live feed goes on. */
            if (res->reached_end)
                for (size_t i = n > r->cap ? n - r->cap : 0; i != n; ++i) {
                    pe_msg_retain(res->msgs[i]);
                    push_back(r, res->msgs[i]);
                }
            return;
        }
        /* The read reaches the first cached message: its entries below are the ones right before
         * it. (An empty cache knows only its newest, which may have aged out: nothing to add.) */
        if (r->len == 0)
            return;
        pe_id_t first = at(r, 0)->id;
        if (pe_id_cmp(end, first) < 0)
            return;
        size_t i = n;
        while (i != 0 && pe_id_cmp(res->msgs[i - 1]->id, first) >= 0)
            --i;
        while (i != 0 && r->len < r->cap) {
            pe_msg_t *m = res->msgs[--i];
            size_t cost = PE_RECENT_COST(m);
            if (r->budget->bytes + cost > r->budget->max_bytes)
                break;
            reserve_one(r);
            pe_msg_retain(m);
            r->head = (r->head + r->slots - 1) % r->slots;
            r->ring[r->head] = m;
            ++r->len;
            r->bytes += cost;
            r->budget->bytes += cost;
        }
        return;
    }

    if (!res->reached_end || n == 0)
        return;
    pe_id_t end = res->msgs[n - 1]->id;
    if (pe_id_cmp(r->dropped, end) > 0)
        return; /* a live message above the read's end is missing from the buffer */
    if (r->len != 0) {
        pe_id_t low = max_id(at(r, 0)->id, res->msgs[0]->id), high = min_id(r->newest, end);
        if (pe_id_cmp(low, high) <= 0 && !agree(r, res->msgs, n, low, high))
            return;
    }
    /* The read's entries, then the live messages above its end. */
    size_t above = index_above(r, end), k = 0, total = n + (r->len - above);
    pe_msg_t **tmp = pe_malloc(total * sizeof(*tmp));
    for (size_t i = 0; i != n; ++i) {
        pe_msg_retain(res->msgs[i]);
        tmp[k++] = res->msgs[i];
    }
    for (size_t i = above; i != r->len; ++i) {
        pe_msg_retain(at(r, i));
        tmp[k++] = at(r, i);
    }
    clear(r);
    r->anchored = 1;
    r->dropped = PE_ID_ZERO;
    for (size_t i = 0; i != total; ++i)
        push_back(r, tmp[i]);
    pe_free(tmp);
}

void
pe_recent_expire(pe_recent_t *r, uint64_t cutoff_ms)
{
    while (r->len != 0 && at(r, 0)->id.ms < cutoff_ms)
        evict_front(r);
    release_if_empty(r);
}

/* Copies the cached messages [from, from + k) as new references. */
static pe_msg_t **
copy_range(const pe_recent_t *r, size_t from, size_t k)
{
    if (k == 0)
        return NULL;
    pe_msg_t **msgs = pe_malloc(k * sizeof(*msgs));
    for (size_t i = 0; i != k; ++i) {
        msgs[i] = at(r, from + i);
        pe_msg_retain(msgs[i]);
    }
    return msgs;
}

int
pe_recent_serve(pe_recent_t *r, pe_start_t start, size_t max, pe_ps_read_result_t *out)
{
    if (r->cap == 0 || !r->anchored || !r->have_newest)
        return 0;
    switch (start.kind) {
    case PE_START_NEW:
        *out = (pe_ps_read_result_t){.base = r->newest, .reached_end = 1};
        return 1;
    case PE_START_OLDEST:
        return 0;
    case PE_START_AFTER:
        break;
    }
    pe_id_t first = r->len != 0 ? at(r, 0)->id : r->newest;
    if (pe_id_cmp(start.after, first) < 0 || pe_id_cmp(start.after, r->newest) > 0)
        return 0;
    size_t from = index_above(r, start.after), k = r->len - from;
    if (k > max)
        k = max;
    /* A read of 0 messages only reports the position, and says it reached the end (as the
     * engine's does). */
    *out = (pe_ps_read_result_t){
        .base = start.after, .msgs = copy_range(r, from, k), .num_msgs = k, .reached_end = max == 0 || from + k == r->len};
    return 1;
}

int
pe_recent_start_cmp(pe_start_t a, pe_start_t b)
{
    static const int rank[] = {[PE_START_OLDEST] = 0, [PE_START_AFTER] = 1, [PE_START_NEW] = 2};
    if (a.kind != b.kind)
        return rank[a.kind] < rank[b.kind] ? -1 : 1;
    return a.kind == PE_START_AFTER ? pe_id_cmp(a.after, b.after) : 0;
}

static int
same_start(pe_start_t a, pe_start_t b)
{
    if (a.kind != b.kind)
        return 0;
    return a.kind != PE_START_AFTER || (pe_id_cmp(a.after, b.after) == 0 && a.strict == b.strict);
}

int
pe_recent_share(const pe_ps_read_result_t *src, pe_start_t src_start, size_t src_max, int src_fresh, pe_start_t start, size_t max,
                pe_ps_read_result_t *out)
{
    if (src->err != NULL)
        return 0;
    size_t n = src->num_msgs, from, k;
    if (same_start(src_start, start) && src_max == max) {
        from = 0;
        k = n;
        *out = (pe_ps_read_result_t){.gap = src->gap, .base = src->base, .reached_end = src->reached_end && src_fresh};
    } else if (start.kind == PE_START_AFTER && n != 0 && pe_id_cmp(src->msgs[0]->id, start.after) <= 0 &&
               pe_id_cmp(start.after, src->msgs[n - 1]->id) <= 0) {
        /* Within the answer's entries: the first one was retained, so the boundary lies below
         * it and below the cursor, and the last one is at most the newest (no gap either way). */
        for (from = 0; from != n && pe_id_cmp(src->msgs[from]->id, start.after) <= 0; ++from)
            ;
        k = n - from < max ? n - from : max;
        *out = (pe_ps_read_result_t){.base = start.after, .reached_end = src_fresh && src->reached_end && from + k == n};
    } else {
        return 0;
    }
    if (k != 0) {
        out->msgs = pe_malloc(k * sizeof(*out->msgs));
        for (size_t i = 0; i != k; ++i) {
            out->msgs[i] = src->msgs[from + i];
            pe_msg_retain(out->msgs[i]);
        }
    }
    out->num_msgs = k;
    return 1;
}

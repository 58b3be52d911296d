/*
 * deadline.h: per-thread deadlines at arbitrary times, one second apart at most: a token's
 * expiry notice and end, the WebSocket auth deadline, a held long-poll cut at its token's notice
 * (docs/auth.md "Expiry"). h2o 2.2's timeouts are lists of one fixed duration each, which fits
 * heartbeats but not a time each connection's token decides.
 *
 * A wheel of PE_DEADLINE_SLOTS one-second slots per thread (pe_thread_t.deadline_*), ticked by
 * the context's one-second timeout while it holds entries: each tick walks the slots of the
 * seconds that passed and fires the entries that are due; an entry further away than a turn of
 * the wheel stays in its slot and is skipped until its turn. A deadline fires within about a
 * second after it is due. Owned by the thread: set, cancel and fire on its loop only.
 */
#ifndef PE_DEADLINE_H
#define PE_DEADLINE_H

#include <stdint.h>
#include "edge/core/thread.h"

/** A deadline, embedded in its owner; zero-initialised it is not set. */
typedef struct st_pe_deadline_t {
    h2o_linklist_t _link;
    uint64_t due_ms; /* loop ms (h2o_now: ms since the epoch) */
    /* Called once when due, on the thread's loop, outside any other callback of the owner; the
     * deadline is not set any more and may be set again from here. */
    void (*cb)(struct st_pe_deadline_t *d);
} pe_deadline_t;

/** Sets up thr's wheel; on the thread's loop, before any deadline is set. */
void pe_deadline_thread_init(pe_thread_t *thr);
/** Sets (or moves) d to due_ms; d->cb must be set. A time already past fires at the next tick. */
void pe_deadline_set(pe_thread_t *thr, pe_deadline_t *d, uint64_t due_ms);
/** Cancels d if set; harmless otherwise. Every owner calls it in its dispose path. */
void pe_deadline_cancel(pe_thread_t *thr, pe_deadline_t *d);
static inline int
pe_deadline_is_set(pe_deadline_t *d)
{
    return h2o_linklist_is_linked(&d->_link);
}

#endif

/*
 * deadline.c: the per-thread wheel of deadlines (deadline.h).
 *
 * Why a wheel of one-second slots and not a heap: setting and cancelling are O(1) list links
 * (a refresh moves a connection's deadline, a connection's end cancels it), and a tick costs the
 * entries of the seconds that passed; an exact order within a second is not needed. Why not a
 * walk over every connection each second: a node with 100,000 idle connections would pay for
 * all of them to find the few that are due.
 */
#include "edge/core/deadline.h"

static void on_tick(h2o_timeout_entry_t *entry);

void
pe_deadline_thread_init(pe_thread_t *thr)
{
    for (size_t i = 0; i != PE_DEADLINE_SLOTS; ++i)
        h2o_linklist_init_anchor(&thr->deadline_slots[i]);
    thr->deadline_tick.cb = on_tick;
    thr->deadline_count = 0;
}

/* The slot of second s. */
static h2o_linklist_t *
slot_of(pe_thread_t *thr, uint64_t s)
{
    return &thr->deadline_slots[s % PE_DEADLINE_SLOTS];
}

void
pe_deadline_set(pe_thread_t *thr, pe_deadline_t *d, uint64_t due_ms)
{
    pe_deadline_cancel(thr, d);
    if (thr->deadline_count == 0) {
        /* The wheel was idle: its walk starts at this second. */
        thr->deadline_cursor_s = h2o_now(thr->loop) / 1000;
        if (!h2o_timeout_is_linked(&thr->deadline_tick))
            h2o_timeout_link(thr->loop, &thr->ctx.one_sec_timeout, &thr->deadline_tick);
    }
    d->due_ms = due_ms;
    uint64_t s = due_ms / 1000;
    /* A time already past goes into the slot the next tick walks first. */
    h2o_linklist_insert(slot_of(thr, s < thr->deadline_cursor_s ? thr->deadline_cursor_s : s), &d->_link);
    ++thr->deadline_count;
}

void
pe_deadline_cancel(pe_thread_t *thr, pe_deadline_t *d)
{
    if (!h2o_linklist_is_linked(&d->_link))
        return;
    h2o_linklist_unlink(&d->_link);
    --thr->deadline_count;
}

static void
on_tick(h2o_timeout_entry_t *entry)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, deadline_tick, entry);
    uint64_t now = h2o_now(thr->loop), now_s = now / 1000;
    /* The due entries move to a list of their own before any fires: a callback may set or
     * cancel deadlines, its own and others', in the slots being walked. */
    h2o_linklist_t due;
    h2o_linklist_init_anchor(&due);
    uint64_t from = thr->deadline_cursor_s, steps = now_s >= from ? now_s - from + 1 : 1;
    if (steps > PE_DEADLINE_SLOTS)
        steps = PE_DEADLINE_SLOTS; /* the loop stalled for a whole turn: every slot once */
    for (uint64_t i = 0; i != steps; ++i) {
        h2o_linklist_t *slot = slot_of(thr, from + i);
        for (h2o_linklist_t *l = slot->next, *next; l != slot; l = next) {
            next = l->next;
            pe_deadline_t *d = H2O_STRUCT_FROM_MEMBER(pe_deadline_t, _link, l);
            if (d->due_ms <= now) {
                h2o_linklist_unlink(&d->_link);
                h2o_linklist_insert(&due, &d->_link);
            }
        }
    }
    /* This second's slot may still hold entries due later in it: the next tick walks it again. */
    thr->deadline_cursor_s = now_s;
    while (!h2o_linklist_is_empty(&due)) {
        pe_deadline_t *d = H2O_STRUCT_FROM_MEMBER(pe_deadline_t, _link, due.next);
        h2o_linklist_unlink(&d->_link);
        --thr->deadline_count;
        d->cb(d);
    }
    if (thr->deadline_count != 0 && !h2o_timeout_is_linked(&thr->deadline_tick))
        h2o_timeout_link(thr->loop, &thr->ctx.one_sec_timeout, &thr->deadline_tick);
}

/*
 * Unit tests for pubsub/recent.c, the per-channel cache of recent messages: buffering before
 * the anchor, the join of a read with the live messages above it, refusal when the buffer
 * dropped one above the read's end, epochs, the check of later reads (an entry one side lacks
 * empties the cache; a gap boundary inside it raises the first message), age expiry, the count
 * and byte bounds, every kind of start (AFTER below/at/inside/at the end/above, NEW, OLDEST,
 * max 0 and truncated pages), a NEW read teaching a quiet channel's position, sharing a read's reply (identical start with its gap,
 * a cursor within its entries, freshness), and a randomized comparison with a model stream trimmed by count: whenever the cache
 * answers, its answer equals the stream's own read.
 *
 * Not covered here: the Redis engine's routing of reads (e2e: storm.test.mjs), and the clock
 * skew between this host and Redis for the age limit (documented in recent.c).
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tap.h"
#include "alloc.h"
#include "recent.h"

static pe_msg_t *
msg(uint64_t ms, uint64_t seq)
{
    return pe_msg_new((pe_id_t){ms, seq}, "c", 1, "1", 1);
}

static pe_id_t
id(uint64_t ms)
{
    return (pe_id_t){ms, 0};
}

static pe_start_t
after(uint64_t ms)
{
    return (pe_start_t){PE_START_AFTER, id(ms), 1};
}

/* A read's answer holding messages ms from..to (step 1), with reached_end. */
static pe_ps_read_result_t
answer(uint64_t from, uint64_t to, int reached_end)
{
    pe_ps_read_result_t res = {.base = id(from - 1), .reached_end = reached_end};
    res.num_msgs = (size_t)(to - from + 1);
    res.msgs = pe_malloc(res.num_msgs * sizeof(*res.msgs));
    for (uint64_t i = from; i <= to; ++i)
        res.msgs[i - from] = msg(i, 0);
    return res;
}

static void
release(pe_ps_read_result_t *res)
{
    for (size_t i = 0; i != res->num_msgs; ++i)
        pe_msg_release(res->msgs[i]);
    pe_free(res->msgs);
    *res = (pe_ps_read_result_t){0};
}

static void
push_ms(pe_recent_t *r, uint64_t ms)
{
    pe_msg_t *m = msg(ms, 0);
    pe_recent_push(r, m);
    pe_msg_release(m);
}

/* Serves start; returns -1 if not answered, else the number of messages (first in *first). */
static int
serve(pe_recent_t *r, pe_start_t start, size_t max, uint64_t *first, int *reached_end, pe_id_t *base)
{
    pe_ps_read_result_t out;
    if (!pe_recent_serve(r, start, max, &out))
        return -1;
    int n = (int)out.num_msgs;
    if (first != NULL)
        *first = n != 0 ? out.msgs[0]->id.ms : 0;
    if (reached_end != NULL)
        *reached_end = out.reached_end;
    if (base != NULL)
        *base = out.base;
    TAP_EQ_INT(out.gap, 0, "never a gap from the cache");
    for (int i = 1; i < n; ++i)
        if (pe_id_cmp(out.msgs[i - 1]->id, out.msgs[i]->id) >= 0)
            TAP_OK(0, "answer in ID order");
    release(&out);
    return n;
}

static void
test_disabled(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 0);
    push_ms(&r, 1);
    pe_ps_read_result_t res = answer(1, 3, 1);
    pe_recent_absorb(&r, pe_recent_epoch(&r), &res);
    TAP_EQ_INT(serve(&r, after(1), 128, NULL, NULL, NULL), -1, "a cache of 0 never answers");
    TAP_EQ_UINT(b.bytes, 0, "and holds nothing");
    release(&res);
    pe_recent_dispose(&r);
}

static void
test_anchor(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 16);
    pe_recent_reset(&r);
    unsigned ep = pe_recent_epoch(&r);
    TAP_EQ_INT(serve(&r, after(6), 128, NULL, NULL, NULL), -1, "nothing posted yet: no answer");
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, NULL), -1, "not even NEW (the newest is unknown)");
    /* live 6, 7: contiguous from 6 (the epoch's first) */
    push_ms(&r, 6);
    push_ms(&r, 7);
    uint64_t first;
    int end;
    pe_id_t base;
    TAP_EQ_INT(serve(&r, after(6), 128, &first, &end, NULL), 1, "the live feed alone answers from its first message: 7");
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, NULL, NULL), -1, "but not below it");

    pe_ps_read_result_t res = answer(3, 6, 0);
    pe_recent_absorb(&r, ep + 1, &res);
    TAP_EQ_INT(serve(&r, after(3), 128, NULL, NULL, NULL), -1, "a read of another epoch adds nothing");
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(3), 128, &first, &end, &base), 4, "a read reaching 6 adds 4, 5 below it: after 3, 4..7");
    TAP_EQ_UINT(first, 4, "from 4");
    TAP_EQ_INT(end, 1, "to the end");
    TAP_EQ_UINT(base.ms, 3, "base is the cursor");
    TAP_EQ_INT(serve(&r, after(2), 128, NULL, NULL, NULL), -1, "below the first cached: to the engine");
    res = answer(1, 2, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(1), 128, NULL, NULL, NULL), -1, "a read ending below the first adds nothing");
    TAP_EQ_INT(serve(&r, after(5), 128, &first, &end, NULL), 2, "inside: 6, 7");
    TAP_EQ_INT(serve(&r, after(5), 1, &first, &end, NULL), 1, "a page of 1");
    TAP_EQ_INT(end, 0, "does not reach the end");
    TAP_EQ_INT(serve(&r, after(5), 0, NULL, &end, NULL), 0, "max 0: the position only");
    TAP_EQ_INT(end, 1, "and the end, as the engine says");
    TAP_EQ_INT(serve(&r, after(7), 128, NULL, &end, NULL), 0, "at the newest: nothing, the end");
    TAP_EQ_INT(end, 1, "reached");
    TAP_EQ_INT(serve(&r, after(8), 128, NULL, NULL, NULL), -1, "above the newest: to the engine (a strict one is a gap)");
    pe_start_t between = {PE_START_AFTER, {5, 3}, 0};
    TAP_EQ_INT(serve(&r, between, 128, &first, NULL, NULL), 2, "a point in time between entries");
    TAP_EQ_UINT(first, 6, "from the next entry");
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, &end, &base), 0, "NEW");
    TAP_EQ_UINT(base.ms, 7, "at the newest");
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_OLDEST}, 128, NULL, NULL, NULL), -1, "OLDEST: to the engine");

    push_ms(&r, 7);
    push_ms(&r, 5);
    push_ms(&r, 8);
    TAP_EQ_INT(serve(&r, after(6), 128, NULL, NULL, NULL), 2, "a repeated or older live message is ignored: 7, 8");

    pe_recent_reset(&r);
    TAP_EQ_INT(serve(&r, after(6), 128, NULL, NULL, NULL), -1, "reset: nothing answered");
    TAP_EQ_UINT(b.bytes, 0, "and nothing charged");
    ep = pe_recent_epoch(&r);
    res = answer(10, 12, 0);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(10), 128, NULL, NULL, NULL), -1, "nothing posted: a read short of the end does not fill");
    res = answer(10, 12, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(10), 128, NULL, NULL, NULL), 2, "one that reached the end does: 11, 12");
    push_ms(&r, 12);
    push_ms(&r, 13);
    TAP_EQ_INT(serve(&r, after(10), 128, NULL, NULL, NULL), 3, "and the live feed goes on from it: 11..13");
    pe_recent_dispose(&r);
}

/* A NEW read's answer on a quiet channel (pe_recent_learn_newest): the cache then answers NEW
 * and cursors at that position, the live feed goes on from it, a late post of an entry the read
 * saw is ignored, and it never moves the newest back, crosses an epoch or anchors a cache that
 * is unanchored. */
static void
test_learn_newest(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 16);
    pe_recent_reset(&r);
    unsigned ep = pe_recent_epoch(&r);
    int end;
    pe_id_t base;
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, NULL), -1, "quiet channel: NEW goes to the engine");
    pe_recent_learn_newest(&r, ep + 1, id(5));
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, NULL), -1, "an answer of another epoch teaches nothing");
    pe_recent_learn_newest(&r, ep, id(5));
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, &end, &base), 0, "then NEW is answered here");
    TAP_EQ_UINT(base.ms, 5, "at the engine's newest");
    TAP_EQ_INT(end, 1, "reaching the end");
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, &end, NULL), 0, "a cursor at it: nothing, the end");
    TAP_EQ_INT(serve(&r, after(4), 128, NULL, NULL, NULL), -1, "below it: to the engine");
    TAP_EQ_INT(serve(&r, after(6), 128, NULL, NULL, NULL), -1, "above it: to the engine");
    push_ms(&r, 5);
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, NULL, NULL), 0, "the post of an entry the read saw, arriving late, is ignored");
    push_ms(&r, 6);
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, &base), 0, "the live feed goes on from it");
    TAP_EQ_UINT(base.ms, 6, "NEW at 6");
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, NULL, NULL), -1, "a cursor below the first cached message: to the engine, as before");
    pe_recent_learn_newest(&r, ep, id(4));
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, &base), 0, "a later NEW answer");
    TAP_EQ_UINT(base.ms, 6, "never moves the newest back");

    /* A NEW read sent before a live post and answered after it: the post already set the newest. */
    pe_recent_reset(&r);
    ep = pe_recent_epoch(&r);
    push_ms(&r, 9);
    pe_recent_learn_newest(&r, ep, id(8));
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, &base), 0, "posted first");
    TAP_EQ_UINT(base.ms, 9, "the live newest stands");

    /* Unanchored (the check found an entry the feed missed): nothing learnt. */
    pe_recent_reset(&r);
    ep = pe_recent_epoch(&r);
    push_ms(&r, 20);
    push_ms(&r, 22);
    pe_ps_read_result_t res = answer(20, 22, 1); /* holds 21, which the feed never posted */
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(20), 128, NULL, NULL, NULL), -1, "unanchored");
    pe_recent_learn_newest(&r, ep, id(22));
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, NULL), -1, "stays unanchored: NEW to the engine");
    pe_recent_dispose(&r);
    TAP_EQ_UINT(b.bytes, 0, "everything given back");
}

static void
test_dropped(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 4);
    unsigned ep = pe_recent_epoch(&r);
    for (uint64_t i = 10; i != 17; ++i)
        push_ms(&r, i); /* keeps 13..16 */
    uint64_t first;
    TAP_EQ_INT(serve(&r, after(13), 128, &first, NULL, NULL), 3, "capacity 4: 14..16 after 13");
    TAP_EQ_INT(serve(&r, after(12), 128, NULL, NULL, NULL), -1, "12 is below the first");
    pe_ps_read_result_t res = answer(9, 14, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(12), 128, NULL, NULL, NULL), -1, "full: a read adds nothing below");
    /* A read showing an entry the feed missed (15.5): unanchored. */
    res = answer(14, 16, 1);
    pe_msg_t *extra = msg(15, 5);
    res.msgs = pe_realloc(res.msgs, 4 * sizeof(*res.msgs));
    res.msgs[3] = res.msgs[2];
    res.msgs[2] = extra;
    res.num_msgs = 4;
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(15), 128, NULL, NULL, NULL), -1, "an entry the feed missed: nothing answered");
    for (uint64_t i = 17; i != 24; ++i)
        push_ms(&r, i); /* buffers 20..23, dropped 19 */
    TAP_EQ_INT(serve(&r, after(21), 128, NULL, NULL, NULL), -1, "unanchored: the buffer is not answered");
    res = answer(15, 18, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(21), 128, NULL, NULL, NULL), -1, "a read to 18 does not reach the dropped 19");
    res = answer(17, 19, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(20), 128, &first, NULL, NULL), 3, "a read to 19 joins 20..23");
    TAP_EQ_UINT(first, 21, "after 20: from 21");
    push_ms(&r, 24);
    TAP_EQ_INT(serve(&r, after(20), 128, NULL, NULL, NULL), -1, "anchored eviction moves the first up");
    TAP_EQ_INT(serve(&r, after(21), 128, &first, NULL, NULL), 3, "22..24");
    pe_recent_dispose(&r);
}

static void
test_check(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 16);
    unsigned ep = pe_recent_epoch(&r);
    pe_ps_read_result_t res = answer(1, 5, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    push_ms(&r, 7); /* the live feed never showed 6 */
    push_ms(&r, 8);
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, NULL, NULL), 2, "answers before it knows");
    res = answer(4, 8, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, NULL, NULL), -1, "a read showing 6 empties the cache");
    res = answer(5, 7, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(6), 128, NULL, NULL, NULL), -1, "a read below what was seen (8) does not anchor again");
    res = answer(5, 8, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(5), 128, NULL, NULL, NULL), 3, "one reaching 8 does: 6, 7, 8");

    /* A gap reported at 6: cursors at or below it go to the engine. */
    res = answer(7, 8, 1);
    res.gap = 1;
    res.base = id(6);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(6), 128, NULL, NULL, NULL), -1, "the boundary 6 is below the first now");
    TAP_EQ_INT(serve(&r, after(7), 128, NULL, NULL, NULL), 1, "7 is still answered");

    /* An entry the read lacks (deleted by hand): emptied too. */
    res = answer(9, 9, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    push_ms(&r, 10);
    push_ms(&r, 11);
    pe_ps_read_result_t del = answer(9, 11, 1);
    pe_msg_release(del.msgs[1]); /* 10 is gone */
    del.msgs[1] = del.msgs[2];
    del.num_msgs = 2;
    pe_recent_absorb(&r, ep, &del);
    release(&del);
    TAP_EQ_INT(serve(&r, after(9), 128, NULL, NULL, NULL), -1, "an entry the read lacks empties the cache");
    res = answer(9, 11, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(9), 128, NULL, NULL, NULL), 2, "anchored again at 9..11");
    /* A boundary above the newest (the stream started again): nothing answered. */
    res = answer(20, 21, 1);
    res.gap = 1;
    res.base = id(19);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(11), 128, NULL, NULL, NULL), -1, "a boundary above the newest empties the cache");
    TAP_EQ_INT(serve(&r, (pe_start_t){PE_START_NEW}, 128, NULL, NULL, NULL), -1, "not even NEW");
    res = answer(20, 21, 1);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(20), 128, NULL, NULL, NULL), 1, "the next read anchors it again");

    pe_recent_dispose(&r);
}

static void
test_expire_and_budget(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 16);
    pe_ps_read_result_t res = answer(100, 105, 1);
    pe_recent_absorb(&r, pe_recent_epoch(&r), &res);
    release(&res);
    pe_recent_expire(&r, 103);
    TAP_EQ_INT(serve(&r, after(102), 128, NULL, NULL, NULL), -1, "aged 100..102: 102 is below the first");
    TAP_EQ_INT(serve(&r, after(103), 128, NULL, NULL, NULL), 2, "103 answered: 104, 105");
    pe_recent_expire(&r, 1000);
    TAP_EQ_INT(serve(&r, after(104), 128, NULL, NULL, NULL), -1, "all aged: only the newest is known");
    int end;
    TAP_EQ_INT(serve(&r, after(105), 128, NULL, &end, NULL), 0, "the newest: nothing after it");
    TAP_EQ_UINT(b.bytes, 0, "nothing charged");
    pe_recent_dispose(&r);

    /* Two channels share 10 messages' worth of bytes. */
    pe_msg_t *probe = msg(1, 0);
    pe_recent_budget_t small = {0, 10 * PE_RECENT_COST(probe)};
    pe_msg_release(probe);
    pe_recent_t a, c;
    pe_recent_init(&a, &small, 100);
    pe_recent_init(&c, &small, 100);
    res = answer(1, 8, 1);
    pe_recent_absorb(&a, pe_recent_epoch(&a), &res);
    release(&res);
    res = answer(1, 8, 1);
    pe_recent_absorb(&c, pe_recent_epoch(&c), &res);
    release(&res);
    TAP_OK(small.bytes <= small.max_bytes, "within the node's bytes (%zu of %zu)", small.bytes, small.max_bytes);
    TAP_EQ_INT(serve(&a, after(7), 128, NULL, NULL, NULL), 1, "the first channel keeps its 8");
    TAP_EQ_INT(serve(&c, after(7), 128, NULL, NULL, NULL), 1, "the second keeps what fits: 7, 8");
    TAP_EQ_INT(serve(&c, after(6), 128, NULL, NULL, NULL), -1, "not 6");
    for (uint64_t i = 9; i != 40; ++i) {
        push_ms(&a, i);
        push_ms(&c, i);
        if (small.bytes > small.max_bytes)
            TAP_OK(0, "over the bytes at %llu", (unsigned long long)i);
    }
    TAP_EQ_INT(serve(&c, after(39), 128, NULL, NULL, NULL), 0, "still answering at the end");
    pe_recent_dispose(&a);
    pe_recent_dispose(&c);
    TAP_EQ_UINT(small.bytes, 0, "all given back");
}

static void
test_share(void)
{
    pe_ps_read_result_t src = answer(4, 8, 1), out;
    pe_start_t s = after(3);
    /* A shorter page than the stream's own read would give is right as long as it does not claim
     * the end (test_model checks that against a stream). */
    TAP_OK(pe_recent_share(&src, s, 128, 1, after(3), 128, &out), "identical start");
    TAP_EQ_UINT(out.num_msgs, 5, "the same five");
    TAP_EQ_INT(out.reached_end, 1, "fresh: the end");
    release(&out);
    TAP_OK(pe_recent_share(&src, s, 128, 0, after(3), 128, &out), "identical, not fresh");
    TAP_EQ_INT(out.reached_end, 0, "never claims the end");
    release(&out);
    TAP_OK(!pe_recent_share(&src, s, 128, 1, after(3), 64, &out), "another max is not identical (and 3 is below 4)");
    TAP_OK(pe_recent_share(&src, s, 128, 1, after(6), 128, &out), "a cursor within the entries");
    TAP_EQ_UINT(out.num_msgs, 2, "7, 8");
    TAP_EQ_UINT(out.msgs[0]->id.ms, 7, "from 7");
    TAP_EQ_INT(out.gap, 0, "no gap");
    TAP_EQ_INT(out.reached_end, 1, "the end");
    release(&out);
    TAP_OK(pe_recent_share(&src, s, 128, 1, after(4), 2, &out), "a shorter page");
    TAP_EQ_INT(out.reached_end, 0, "not the end");
    release(&out);
    TAP_OK(!pe_recent_share(&src, s, 128, 1, after(9), 128, &out), "above the last entry: no");
    TAP_OK(!pe_recent_share(&src, s, 128, 1, (pe_start_t){PE_START_NEW}, 128, &out), "NEW from an AFTER read: no");

    src.gap = 1;
    src.base = id(3);
    pe_start_t old = after(1);
    TAP_OK(pe_recent_share(&src, old, 128, 1, after(1), 128, &out), "identical to a read with a gap");
    TAP_EQ_INT(out.gap, 1, "the same gap");
    TAP_EQ_UINT(out.base.ms, 3, "the same base");
    release(&out);
    TAP_OK(!pe_recent_share(&src, old, 128, 1, after(2), 128, &out), "another cursor below the entries: to the engine");
    release(&src);
    TAP_OK(pe_recent_start_cmp((pe_start_t){PE_START_OLDEST}, after(1)) < 0, "OLDEST first");
    TAP_OK(pe_recent_start_cmp(after(1), after(2)) < 0, "then by position");
    TAP_OK(pe_recent_start_cmp((pe_start_t){PE_START_NEW}, after(9)) > 0, "NEW last");
}

/* The ring of message references grows with what the cache holds, not with its capacity: a
 * node's caches are bounded in bytes (the budget counts messages), and a node may watch a
 * million channels, each with a cache of --catchup-cache (256) slots per thread. */
static void
test_ring_size(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    pe_recent_t r;
    pe_recent_init(&r, &b, 256);
    push_ms(&r, 1);
    TAP_OK(r.ring != NULL && malloc_usable_size(r.ring) <= 16 * sizeof(*r.ring), "one message: a small ring (%zu bytes)",
           r.ring != NULL ? malloc_usable_size(r.ring) : 0);
    for (uint64_t i = 2; i <= 100; ++i)
        push_ms(&r, i);
    TAP_OK(malloc_usable_size(r.ring) <= 2 * 100 * sizeof(*r.ring) + 64, "100 messages: at most twice their slots (%zu bytes)",
           malloc_usable_size(r.ring));
    uint64_t first;
    int end;
    TAP_EQ_INT(serve(&r, after(1), 128, &first, &end, NULL), 99, "every one kept, in order: 2..100");
    TAP_EQ_UINT(first, 2, "from 2");
    for (uint64_t i = 101; i <= 400; ++i)
        push_ms(&r, i);
    TAP_EQ_INT(serve(&r, after(145), 512, &first, NULL, NULL), 255, "past the capacity: the newest 256 (145..400)");
    TAP_EQ_UINT(first, 146, "after 145: from 146");
    TAP_EQ_INT(serve(&r, after(144), 512, NULL, NULL, NULL), -1, "144 is gone");
    TAP_OK(malloc_usable_size(r.ring) <= 256 * sizeof(*r.ring) + 64, "never more slots than the capacity (%zu bytes)",
           malloc_usable_size(r.ring));
    pe_recent_reset(&r);
    TAP_OK(r.ring == NULL, "an emptied cache gives its ring back");
    /* Entries added below the first (a read reaching it) grow the ring at its front. */
    unsigned ep = pe_recent_epoch(&r);
    push_ms(&r, 50);
    pe_ps_read_result_t res = answer(30, 50, 0);
    pe_recent_absorb(&r, ep, &res);
    release(&res);
    TAP_EQ_INT(serve(&r, after(30), 128, &first, NULL, NULL), 20, "30..50 held after a read below the live 50");
    TAP_EQ_UINT(first, 31, "after 30: from 31");
    /* Emptied by age (--history-ttl) rather than reset: the ring goes back too. */
    pe_recent_expire(&r, 51);
    TAP_OK(r.len == 0 && r.ring == NULL, "a cache emptied by expiry gives its ring back");
    push_ms(&r, 60);
    TAP_OK(r.len == 1 && r.ring != NULL && r.ring[r.head]->id.ms == 60, "and takes a new one for the next message");
    /* Emptied by the node's byte budget: the same. */
    pe_recent_budget_t tiny = {0, 1};
    pe_recent_t t;
    pe_recent_init(&t, &tiny, 256);
    push_ms(&t, 1);
    TAP_OK(t.len == 0 && t.ring == NULL, "a message over the budget leaves no ring behind");
    pe_recent_dispose(&t);
    pe_recent_dispose(&r);
    TAP_EQ_UINT(b.bytes, 0, "everything given back");
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t
rng(void)
{
    return tap_rng(&rng_state);
}

/* A stream of IDs 1..last retaining `keep` (trimmed: the newest removed), and its read. */
typedef struct {
    uint64_t last, trimmed, keep;
} model_t;

static pe_ps_read_result_t
model_read(const model_t *m, uint64_t cursor, size_t max)
{
    pe_ps_read_result_t res = {.base = id(cursor)};
    if (cursor < m->trimmed) {
        res.gap = 1;
        res.base = id(m->trimmed);
        cursor = m->trimmed;
    }
    uint64_t n = m->last > cursor ? m->last - cursor : 0;
    res.reached_end = n <= max;
    if (n > max)
        n = max;
    if (n != 0) {
        res.msgs = pe_malloc(n * sizeof(*res.msgs));
        for (uint64_t i = 0; i != n; ++i)
            res.msgs[i] = msg(cursor + 1 + i, 0);
    }
    res.num_msgs = n;
    return res;
}

static void
test_model(void)
{
    pe_recent_budget_t b = {0, 1 << 20};
    int answered = 0, shared = 0, mismatches = 0, answered_new = 0;
    for (int round = 0; round != 200; ++round) {
        model_t m = {.keep = 5 + rng() % 40};
        pe_recent_t r;
        pe_recent_init(&r, &b, 1 + rng() % m.keep); /* at most the retention, as the engine sets it */
        /* The stream has history before the feed starts; the feed stops (unwatched, link down)
         * and starts again now and then, with publishes it never sees in between. */
        int feeding = 1;
        m.last = rng() % 30;
        m.trimmed = m.last > m.keep ? m.last - m.keep : 0;
        pe_recent_reset(&r);
        /* A read sent before a reset and answered after it (its epoch is stale). */
        pe_ps_read_result_t stale = {0};
        unsigned stale_ep = 0;
        for (int step = 0; step != 300; ++step) {
            unsigned op = rng() % 10;
            if (rng() % 40 == 0) { /* the feed stops or starts: a new epoch either way */
                feeding = !feeding;
                release(&stale);
                stale = model_read(&m, m.last > 10 ? m.last - 10 : 0, 64);
                stale_ep = pe_recent_epoch(&r);
                pe_recent_reset(&r);
            }
            if (op < 5) { /* publish: appended, trimmed, announced while the feed runs */
                ++m.last;
                if (m.last - m.trimmed > m.keep)
                    m.trimmed = m.last - m.keep;
                /* Now and then a NEW read runs after the append and is answered before its post
                 * (another connection). */
                if (feeding && rng() % 8 == 0)
                    pe_recent_learn_newest(&r, pe_recent_epoch(&r), id(m.last));
                if (feeding)
                    push_ms(&r, m.last);
            } else if (op < 7 && feeding) { /* an engine read from somewhere (the stale one too) */
                uint64_t c = m.last > 60 ? m.last - rng() % 60 : rng() % (m.last + 1);
                pe_ps_read_result_t res = model_read(&m, c, 1 + rng() % 64);
                pe_recent_absorb(&r, pe_recent_epoch(&r), &res);
                release(&res);
                pe_recent_absorb(&r, stale_ep, &stale);
                /* A NEW read (a subscriber without a cursor), and one of an older epoch. */
                if (rng() % 3 == 0) {
                    pe_recent_learn_newest(&r, pe_recent_epoch(&r), id(m.last));
                    pe_recent_learn_newest(&r, stale_ep, id(m.last > 10 ? m.last - 10 : 0));
                }
                pe_ps_read_result_t got;
                if (pe_recent_serve(&r, (pe_start_t){PE_START_NEW}, 128, &got)) {
                    ++answered_new;
                    if ((pe_id_cmp(got.base, id(m.last)) != 0 || got.num_msgs != 0) && mismatches++ < 5)
                        TAP_OK(0, "round %d step %d: NEW answered at %llu, the stream's newest is %llu", round, step,
                               (unsigned long long)got.base.ms, (unsigned long long)m.last);
                    release(&got);
                }
            } else if (op == 7) { /* a read sharing another's reply, nothing published between */
                uint64_t c1 = m.last > 60 ? m.last - rng() % 60 : rng() % (m.last + 1);
                uint64_t c2 = m.last > 60 ? m.last - rng() % 60 : rng() % (m.last + 1);
                size_t max = 1 + rng() % 64;
                pe_ps_read_result_t src = model_read(&m, c1, max), got, want = model_read(&m, c2, max);
                if (pe_recent_share(&src, after(c1), max, 1, after(c2), max, &got)) {
                    ++shared;
                    /* A shorter page is fine (the node reads on from its end) if it never claims an end
                     * the stream's read would not. */
                    int same = got.gap == want.gap && got.num_msgs <= want.num_msgs && pe_id_cmp(got.base, want.base) == 0 &&
                               (!got.reached_end || (want.reached_end && got.num_msgs == want.num_msgs));
                    for (size_t i = 0; same && i != got.num_msgs; ++i)
                        same = pe_id_cmp(got.msgs[i]->id, want.msgs[i]->id) == 0;
                    if (!same && mismatches++ < 5)
                        TAP_OK(0, "round %d step %d: shared %llu from %llu differs", round, step, (unsigned long long)c2,
                               (unsigned long long)c1);
                    release(&got);
                }
                release(&src);
                release(&want);
            } else { /* a catch-up: if the cache answers, it must say what the stream says */
                uint64_t c = m.last > 60 ? m.last - rng() % 60 : rng() % (m.last + 1);
                size_t max = 1 + rng() % 64;
                pe_ps_read_result_t got, want = model_read(&m, c, max);
                if (pe_recent_serve(&r, after(c), max, &got)) {
                    ++answered;
                    int same = got.gap == want.gap && got.num_msgs == want.num_msgs && got.reached_end == want.reached_end &&
                               pe_id_cmp(got.base, want.base) == 0;
                    for (size_t i = 0; same && i != got.num_msgs; ++i)
                        same = pe_id_cmp(got.msgs[i]->id, want.msgs[i]->id) == 0;
                    if (!same && mismatches++ < 5)
                        TAP_OK(0, "round %d step %d cursor %llu: cache %zu msgs gap %d end %d, stream %zu msgs gap %d end %d",
                               round, step, (unsigned long long)c, got.num_msgs, got.gap, got.reached_end, want.num_msgs, want.gap,
                               want.reached_end);
                    release(&got);
                }
                release(&want);
            }
        }
        release(&stale);
        pe_recent_dispose(&r);
    }
    TAP_EQ_INT(mismatches, 0, "every answer of the cache is the stream's (%d answered)", answered);
    TAP_OK(answered > 1000, "and it answered many catch-ups (%d)", answered);
    TAP_OK(shared > 1000, "shared replies too (%d)", shared);
    TAP_OK(answered_new > 100, "and NEW reads (%d)", answered_new);
    TAP_EQ_UINT(b.bytes, 0, "everything given back");
}

int
main(void)
{
    tap_subtest("disabled", test_disabled);
    tap_subtest("anchor", test_anchor);
    tap_subtest("learn newest", test_learn_newest);
    tap_subtest("dropped", test_dropped);
    tap_subtest("check", test_check);
    tap_subtest("expire and budget", test_expire_and_budget);
    tap_subtest("share", test_share);
    tap_subtest("ring size", test_ring_size);
    tap_subtest("model", test_model);
    return tap_done();
}

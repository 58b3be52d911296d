/*
 * outq.c: the double-buffered output queue (outq.h).
 */
#include "pubsub/alloc.h"
#include "edge/core/outq.h"

void
pe_outq_text(pe_outq_t *q, const void *s, size_t len)
{
    pe_outq_batch_t *b = &q->queue;
    if (len == 0)
        return; /* s may be NULL then, which memcpy must not see */
    if (b->text_len + len > b->text_cap) {
        b->text_cap = (b->text_len + len) * 2 < 256 ? 256 : (b->text_len + len) * 2;
        b->text = pe_realloc(b->text, b->text_cap);
    }
    memcpy(b->text + b->text_len, s, len);
    b->text_len += len;
}

void
pe_outq_push(pe_outq_t *q, size_t text_len, pe_msg_t *msg, const char *shared, size_t shared_len)
{
    pe_outq_batch_t *b = &q->queue;
    if (b->len == b->cap) {
        b->cap = b->cap == 0 ? 16 : b->cap * 2;
        b->entries = pe_realloc(b->entries, b->cap * sizeof(*b->entries));
    }
    pe_outq_entry_t *e = &b->entries[b->len++];
    *e = (pe_outq_entry_t){msg, shared, shared_len, b->text_len - text_len, text_len, 0};
    if (msg != NULL)
        pe_msg_retain(msg);
    b->bytes += text_len + shared_len;
}

void
pe_outq_push_text(pe_outq_t *q, const void *s, size_t len)
{
    pe_outq_text(q, s, len);
    pe_outq_push(q, len, NULL, NULL, 0);
}

static void
batch_clear(pe_outq_batch_t *b)
{
    for (size_t i = 0; i != b->len; ++i)
        if (b->entries[i].msg != NULL)
            pe_msg_release(b->entries[i].msg);
    b->len = b->text_len = b->bytes = b->stamped = 0;
}

static void
batch_free(pe_outq_batch_t *b)
{
    batch_clear(b);
    pe_free(b->entries);
    pe_free(b->text);
    *b = (pe_outq_batch_t){0};
}

void
pe_outq_drop_queued(pe_outq_t *q)
{
    batch_clear(&q->queue);
}

size_t
pe_outq_next_chunk(pe_outq_t *q, size_t max_entries, h2o_iovec_t **iov)
{
    if (q->inflight_sent == q->inflight.len) {
        /* The writer is done with the in-flight batch: release it and take the queue. */
        batch_clear(&q->inflight);
        q->inflight_sent = 0;
        if (q->queue.len == 0)
            return 0;
        pe_outq_batch_t tmp = q->inflight;
        q->inflight = q->queue;
        q->queue = tmp;
    }
    size_t from = q->inflight_sent, n = q->inflight.len - from;
    if (n > max_entries)
        n = max_entries;
    if (q->iov_cap < 2 * n) {
        q->iov_cap = 2 * n;
        q->iov = pe_realloc(q->iov, q->iov_cap * sizeof(*q->iov));
    }
    size_t niov = 0, bytes = 0;
    for (size_t i = from; i != from + n; ++i) {
        pe_outq_entry_t *e = &q->inflight.entries[i];
        if (e->text_len != 0)
            q->iov[niov++] = h2o_iovec_init(q->inflight.text + e->text_off, e->text_len);
        if (e->shared_len != 0)
            q->iov[niov++] = h2o_iovec_init(e->shared, e->shared_len);
        bytes += e->text_len + e->shared_len;
    }
    q->chunk_from = from;
    q->chunk_bytes = bytes;
    q->inflight_sent = from + n;
    *iov = q->iov;
    return niov;
}

void
pe_outq_each_stamp(pe_outq_t *q, void (*seen)(void *ctx, uint64_t accepted_us), void *ctx)
{
    if (q->inflight.stamped == 0)
        return;
    for (size_t i = q->chunk_from; i < q->inflight_sent; ++i)
        if (q->inflight.entries[i].accepted_us != 0)
            seen(ctx, q->inflight.entries[i].accepted_us);
}

void
pe_outq_written(pe_outq_t *q)
{
    if (q->inflight_sent == q->inflight.len) {
        batch_clear(&q->inflight);
        q->inflight_sent = 0;
    }
}

void
pe_outq_trim(pe_outq_t *q)
{
    if (!pe_outq_is_empty(q) || q->inflight_sent != 0)
        return;
    batch_free(&q->queue);
    batch_free(&q->inflight);
    pe_free(q->iov);
    *q = (pe_outq_t){0};
}

void
pe_outq_dispose(pe_outq_t *q)
{
    batch_free(&q->queue);
    batch_free(&q->inflight);
    pe_free(q->iov);
    *q = (pe_outq_t){0};
}

/*
 * outq.h: a transport's output queue, double-buffered for h2o's one-write-in-flight rule.
 *
 * Entries are appended to `queue` by pubsub callbacks and control paths; a flush swaps the
 * queue into `inflight` and builds an iovec array over it. An entry is a piece of per-stream
 * text (copied into the batch's own buffer: cursor lines, control frames) followed by a shared
 * piece of a message (a range of bytes the message owns: its SSE frame, its WebSocket frame),
 * held by a reference to the message and never copied. The in-flight batch stays untouched
 * until the write completes, so the iovecs stay valid.
 */
#ifndef PE_OUTQ_H
#define PE_OUTQ_H

#include <stddef.h>
#include <h2o.h>
#include "pubsub/pubsub.h"

typedef struct st_pe_outq_entry_t {
    pe_msg_t *msg;      /* owned reference keeping `shared` alive, or NULL */
    const char *shared; /* bytes owned by msg */
    size_t shared_len;
    size_t text_off; /* per-stream text in the batch's buffer */
    size_t text_len;
    uint64_t accepted_us; /* a live message's acceptance (pe_outq_stamp), for the latency histogram; 0: none */
} pe_outq_entry_t;

typedef struct st_pe_outq_batch_t {
    pe_outq_entry_t *entries;
    size_t len, cap;
    char *text;
    size_t text_len, text_cap;
    size_t bytes;   /* what the batch puts on the wire */
    size_t stamped; /* entries with accepted_us set: none, and the written batch is not walked */
} pe_outq_batch_t;

typedef struct st_pe_outq_t {
    pe_outq_batch_t queue;    /* being filled */
    pe_outq_batch_t inflight; /* handed to h2o, in chunks */
    size_t inflight_sent;     /* entries of inflight already handed over */
    size_t chunk_from;        /* the last chunk: entries [chunk_from, inflight_sent) of inflight */
    size_t chunk_bytes;       /* and its bytes */
    h2o_iovec_t *iov;         /* reused for every chunk */
    size_t iov_cap;
} pe_outq_t;

/** Appends text to the queue's buffer without an entry (pe_outq_push ends the piece). */
void pe_outq_text(pe_outq_t *q, const void *s, size_t len);
/**
 * Appends an entry: the last `text_len` bytes given to pe_outq_text, then shared[0..len) of msg
 * (msg may be NULL with len 0). Retains msg.
 */
void pe_outq_push(pe_outq_t *q, size_t text_len, pe_msg_t *msg, const char *shared, size_t shared_len);
/** Marks the entry just pushed as a live message accepted at accepted_us (non-zero). */
static inline void
pe_outq_stamp(pe_outq_t *q, uint64_t accepted_us)
{
    q->queue.entries[q->queue.len - 1].accepted_us = accepted_us;
    ++q->queue.stamped;
}
/**
 * The last chunk was written (call before pe_outq_written): calls seen(ctx, accepted_us) for
 * each stamped entry in it. Costs nothing when the batch holds none.
 */
void pe_outq_each_stamp(pe_outq_t *q, void (*seen)(void *ctx, uint64_t accepted_us), void *ctx);
/** Text-only shortcut: pe_outq_text + pe_outq_push. */
void pe_outq_push_text(pe_outq_t *q, const void *s, size_t len);
/** Bytes queued and in flight. */
static inline size_t
pe_outq_bytes(const pe_outq_t *q)
{
    return q->queue.bytes + q->inflight.bytes;
}
/** 1 if nothing is queued or in flight. */
static inline int
pe_outq_is_empty(const pe_outq_t *q)
{
    return q->queue.len == 0 && q->inflight_sent == q->inflight.len;
}
/** Frees the buffers of an empty queue (idle connections keep no capacity); no-op otherwise. */
void pe_outq_trim(pe_outq_t *q);
/** Drops what is queued (not what is in flight). */
void pe_outq_drop_queued(pe_outq_t *q);
/**
 * Takes the next chunk to write: at most max_entries entries, as iovecs in *iov (valid until the
 * next call). Releases the previous in-flight batch first if it was fully handed over. Returns
 * the number of iovecs, 0 if there is nothing to write.
 */
size_t pe_outq_next_chunk(pe_outq_t *q, size_t max_entries, h2o_iovec_t **iov);
/** The last chunk was written: releases the in-flight batch once all of it was handed over. */
void pe_outq_written(pe_outq_t *q);
/** Frees everything. */
void pe_outq_dispose(pe_outq_t *q);

#endif

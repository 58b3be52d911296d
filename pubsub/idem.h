/*
 * idem.h: the memory engine's table of idempotency keys (docs/protocol.md, idempotency keys):
 * which (channel, key) pairs were published in the last window, and the ID each one got.
 * Private to pubsub/ (the Redis engine keeps its keys in Redis, next to the stream).
 *
 * Thread-safe. The table is split into stripes, each with its own lock, so keyed publishes on
 * different keys rarely contend. A keyed publish holds its stripe's lock from the lookup until
 * the new ID is recorded (pe_idem_begin .. pe_idem_end), around the append: two publishes with
 * the same key, on any threads, store one message. Lock order: a stripe, then a channel.
 *
 * Bounded: at most max_keys entries in all (max_keys / PE_IDEM_STRIPES per stripe). A key is
 * forgotten when its window ends or, when its stripe is full, earlier: the oldest key of the
 * stripe makes room for the new one (counted in evictions). Memory per key is about 64 bytes
 * plus the channel name and the key.
 */
#ifndef PE_IDEM_H
#define PE_IDEM_H

#include <stddef.h>
#include <stdint.h>
#include "stream_id.h"

#define PE_IDEM_STRIPES 64

typedef struct st_pe_idem_table_t pe_idem_table_t;
struct st_pe_idem_stripe_t;

/** A lookup in progress: the stripe stays locked until pe_idem_end. Fields are private. */
typedef struct st_pe_idem_txn_t {
    pe_idem_table_t *_table;
    struct st_pe_idem_stripe_t *_stripe;
    uint64_t _hash;
    uint64_t _now_ms;
    const char *_channel, *_key;
    size_t _channel_len, _key_len;
} pe_idem_txn_t;

/** Creates a table whose keys live window_ms, at most max_keys of them (>= PE_IDEM_STRIPES). */
pe_idem_table_t *pe_idem_create(uint64_t window_ms, size_t max_keys);
void pe_idem_destroy(pe_idem_table_t *table);
/**
 * Locks the stripe of (channel, key), drops its expired keys, and looks the pair up. Returns 1
 * with *id set when the key was recorded less than the window ago, else 0. In both cases the
 * caller must finish with pe_idem_end (after pe_idem_record when it stored a message); the
 * strings must stay valid until then.
 */
int pe_idem_begin(pe_idem_table_t *table, const char *channel, size_t channel_len, const char *key, size_t key_len, uint64_t now_ms,
                  pe_id_t *id, pe_idem_txn_t *txn);
/** Records the ID the message got (only after pe_idem_begin returned 0). */
void pe_idem_record(pe_idem_txn_t *txn, pe_id_t id);
/** Unlocks the stripe. */
void pe_idem_end(pe_idem_txn_t *txn);
/** Current number of keys and keys forgotten before their window ended (any thread). */
void pe_idem_stats(pe_idem_table_t *table, uint64_t *keys, uint64_t *evictions);

#endif

/*
 * idem.c: the memory engine's idempotency keys (idem.h), and the key syntax shared by both
 * engines (pe_ps_key_is_valid).
 *
 * Each stripe is a chained hash table of entries plus a FIFO of the same entries in the order
 * they were recorded. Every key lives the same window, so that order is also the order of
 * expiry: expired keys are always at the head, and dropping them costs O(1) each, paid by the
 * publishes that touch the stripe (no timer, no sweeper thread). A clock that steps back only
 * delays expiry: the head is kept until it is due.
 *
 * Rejected: one table under one lock (every keyed publish on every thread would serialise on
 * it); a table per channel (the memory engine's channels are being freed when idle, and a key
 * table would keep them alive or need its own lifetime rules).
 */
#include <pthread.h>
#include "alloc.h"
#include "idem.h"
#include "pubsub.h"

#define INITIAL_BUCKETS 16

typedef struct st_idem_entry_t {
    struct st_idem_entry_t *hnext; /* hash chain */
    struct st_idem_entry_t *fnext; /* FIFO, oldest first */
    uint64_t hash;
    uint64_t expires_ms;
    pe_id_t id;
    size_t channel_len, key_len;
    char text[]; /* channel then key, not terminated */
} idem_entry_t;

typedef struct st_pe_idem_stripe_t {
    pthread_mutex_t lock;
    idem_entry_t **buckets; /* power of two */
    size_t num_buckets;
    size_t count;
    idem_entry_t *fhead, *ftail;
} idem_stripe_t;

struct st_pe_idem_table_t {
    uint64_t window_ms;
    size_t max_per_stripe;
    uint64_t keys;      /* atomic: sum of the stripes' counts */
    uint64_t evictions; /* atomic */
    idem_stripe_t stripes[PE_IDEM_STRIPES];
};

int
pe_ps_key_is_valid(const char *key, size_t len)
{
    if (key == NULL || len == 0 || len > PE_PS_KEY_MAXLEN)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
              c == ':'))
            return 0;
    }
    return 1;
}

/* FNV-1a over channel, a separator byte no channel or key contains, and key. */
static uint64_t
hash_pair(const char *channel, size_t channel_len, const char *key, size_t key_len)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i != channel_len; ++i)
        h = (h ^ (uint8_t)channel[i]) * UINT64_C(1099511628211);
    h = (h ^ (uint8_t)' ') * UINT64_C(1099511628211);
    for (size_t i = 0; i != key_len; ++i)
        h = (h ^ (uint8_t)key[i]) * UINT64_C(1099511628211);
    return h;
}

pe_idem_table_t *
pe_idem_create(uint64_t window_ms, size_t max_keys)
{
    pe_idem_table_t *t = pe_calloc(1, sizeof(*t));
    t->window_ms = window_ms;
    t->max_per_stripe = max_keys / PE_IDEM_STRIPES;
    if (t->max_per_stripe == 0)
        t->max_per_stripe = 1;
    for (size_t i = 0; i != PE_IDEM_STRIPES; ++i)
        pthread_mutex_init(&t->stripes[i].lock, NULL);
    return t;
}

void
pe_idem_destroy(pe_idem_table_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i != PE_IDEM_STRIPES; ++i) {
        idem_stripe_t *s = &t->stripes[i];
        for (idem_entry_t *e = s->fhead, *next; e != NULL; e = next) {
            next = e->fnext;
            pe_free(e);
        }
        pe_free(s->buckets);
        pthread_mutex_destroy(&s->lock);
    }
    pe_free(t);
}

/* Unlinks the FIFO head from its hash chain and frees it. */
static void
drop_head(pe_idem_table_t *t, idem_stripe_t *s)
{
    idem_entry_t *e = s->fhead;
    idem_entry_t **p = &s->buckets[e->hash & (s->num_buckets - 1)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    s->fhead = e->fnext;
    if (s->fhead == NULL)
        s->ftail = NULL;
    --s->count;
    __atomic_sub_fetch(&t->keys, 1, __ATOMIC_RELAXED);
    pe_free(e);
}

static void
grow(idem_stripe_t *s)
{
    size_t n = s->num_buckets == 0 ? INITIAL_BUCKETS : s->num_buckets * 2;
    idem_entry_t **b = pe_calloc(n, sizeof(*b));
    for (size_t i = 0; i != s->num_buckets; ++i) {
        for (idem_entry_t *e = s->buckets[i], *next; e != NULL; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    pe_free(s->buckets);
    s->buckets = b;
    s->num_buckets = n;
}

int
pe_idem_begin(pe_idem_table_t *t, const char *channel, size_t channel_len, const char *key, size_t key_len, uint64_t now_ms,
              pe_id_t *id, pe_idem_txn_t *txn)
{
    uint64_t h = hash_pair(channel, channel_len, key, key_len);
    /* The top bits pick the stripe, the low bits the bucket: independent enough for FNV. */
    idem_stripe_t *s = &t->stripes[h >> 58];
    *txn = (pe_idem_txn_t){t, s, h, now_ms, channel, key, channel_len, key_len};
    pthread_mutex_lock(&s->lock);
    while (s->fhead != NULL && s->fhead->expires_ms <= now_ms)
        drop_head(t, s);
    if (s->num_buckets == 0)
        return 0;
    for (idem_entry_t *e = s->buckets[h & (s->num_buckets - 1)]; e != NULL; e = e->hnext) {
        if (e->hash == h && e->channel_len == channel_len && e->key_len == key_len && memcmp(e->text, channel, channel_len) == 0 &&
            memcmp(e->text + channel_len, key, key_len) == 0 && e->expires_ms > now_ms) {
            *id = e->id;
            return 1;
        }
    }
    return 0;
}

void
pe_idem_record(pe_idem_txn_t *txn, pe_id_t id)
{
    pe_idem_table_t *t = txn->_table;
    idem_stripe_t *s = txn->_stripe;
    if (s->count >= t->max_per_stripe) {
        drop_head(t, s);
        __atomic_add_fetch(&t->evictions, 1, __ATOMIC_RELAXED);
    }
    if (s->count >= s->num_buckets)
        grow(s);
    idem_entry_t *e = pe_malloc(sizeof(*e) + txn->_channel_len + txn->_key_len);
    e->hash = txn->_hash;
    e->expires_ms = txn->_now_ms + t->window_ms;
    e->id = id;
    e->channel_len = txn->_channel_len;
    e->key_len = txn->_key_len;
    memcpy(e->text, txn->_channel, txn->_channel_len);
    memcpy(e->text + txn->_channel_len, txn->_key, txn->_key_len);
    size_t b = e->hash & (s->num_buckets - 1);
    e->hnext = s->buckets[b];
    s->buckets[b] = e;
    e->fnext = NULL;
    if (s->ftail != NULL)
        s->ftail->fnext = e;
    else
        s->fhead = e;
    s->ftail = e;
    ++s->count;
    __atomic_add_fetch(&t->keys, 1, __ATOMIC_RELAXED);
}

void
pe_idem_end(pe_idem_txn_t *txn)
{
    pthread_mutex_unlock(&txn->_stripe->lock);
    txn->_stripe = NULL;
}

void
pe_idem_stats(pe_idem_table_t *t, uint64_t *keys, uint64_t *evictions)
{
    *keys = __atomic_load_n(&t->keys, __ATOMIC_RELAXED);
    *evictions = __atomic_load_n(&t->evictions, __ATOMIC_RELAXED);
}

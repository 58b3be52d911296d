/*
 * engine_memory.c: the embedded engine. Each channel is a ring buffer of message references
 * with Redis-form IDs, retention by count and age, and a bit mask of the nodes that watch it.
 *
 * Locking: a process-wide rwlock guards the name -> channel map only; each channel has its own
 * mutex for its ring, IDs and watcher mask. Publishing appends and posts the message to every
 * watching node while holding the channel mutex, so each node's queue receives a channel's
 * messages in ID order, and a node that starts watching under the same mutex either is posted
 * a message or finds it in history (node.c dedupes by ID): there is no seam where one is lost.
 * Nothing on the per-subscriber path takes a lock: fan-out happens on each node's own thread.
 *
 * Channels are created on first publish or watch and freed as soon as they hold neither watchers
 * nor messages (at unwatch, or when a sweep finds their history expired): anyone can make a name
 * exist by subscribing to it, so names must not outlive their use. A channel pointer is valid
 * only while its mutex is held and was taken under the map lock (lock order: map, then
 * channel); the freer holds the map's write lock and the channel's mutex and checks again.
 *
 * Epochs. Messages live in this process only, so a restart loses them all, and a freed channel
 * loses its history marks. Every channel is born with trimmed = last = the mark: the later of
 * this engine's start and now minus --history-ttl. Whatever a channel held before (in an earlier
 * process, or in an incarnation freed since) has an ID below the mark: an earlier process's IDs
 * are older than this start, and a freed channel held nothing younger than the TTL. So a cursor
 * below the mark reads as a gap, a cursor above it loses nothing, and new IDs stay above every
 * ID issued before. A channel that does not exist reads as if born now.
 *
 * Presence (docs/architecture.md "Presence"): a channel's members are a list in the channel
 * under its mutex, and their joins and leaves are entries of its ring like messages (kind
 * PE_MSG_JOIN / PE_MSG_LEAVE), so they are ordered with the messages, replayed from history and
 * posted to the watching nodes by the same path. Users' connections are a map under their own
 * mutex, touched when an authenticated connection opens or closes.
 *
 * Keyed publishes (idempotency) go through the engine's key table (idem.h), whose stripe lock
 * is held around the append (publish_keyed; lock order: stripe, map, channel); unkeyed
 * publishes never touch it.
 */
#include <pthread.h>
#include <time.h>
#include "alloc.h"
#include "engine.h"
#include "idem.h"
#include "strmap.h"

#define INITIAL_RING 16
/* Idempotency keys held in all (idem.h): about 20-40 MB with typical channel names and UUID
 * keys, and the default window of 300 s at up to ~800 keyed publishes per second. Past it the
 * oldest keys are forgotten early (pushedge_idempotency_evictions_total). */
#define PE_MEM_IDEM_MAX_KEYS 250000

typedef struct st_mem_channel_t {
    pthread_mutex_t lock;
    pe_msg_t **ring; /* cap slots, count used from head, oldest first */
    size_t cap, head, count;
    pe_id_t last_id;   /* newest ID ever assigned (0-0: none yet) */
    pe_id_t trimmed;   /* newest ID ever removed from history (0-0: none) */
    uint64_t watchers; /* bit i: node i has local subscribers */
    /* Presence members (borrowed: each is owned by its node until member_remove, which runs
     * under this mutex), in join order. A channel with members is never freed. */
    pe_ps_member_t **members;
    size_t num_members, cap_members;
    size_t name_len;
    char name[];
} mem_channel_t;

typedef struct st_mem_engine_t {
    pe_ps_engine_t super;
    pthread_rwlock_t map_lock;
    pe_strmap_t channels; /* name -> mem_channel_t (owned) */
    uint64_t start_ms;    /* this engine's start: see "Epochs" above */
    uint64_t next_sweep;  /* atomic: engine ms after which the next publish sweeps expired channels */
    pe_ps_node_t *nodes[MAX_NODES];
    pe_idem_table_t *idem; /* keys of keyed publishes (publish_keyed) */
    /* The user registry: user id -> user_conns_t (owned), under users_lock (taken when an
     * authenticated connection opens or closes and by queries; never on the message path). */
    pthread_mutex_t users_lock;
    pe_strmap_t users;
} mem_engine_t;

/* A user's connections (borrowed members, as in mem_channel_t). */
typedef struct st_user_conns_t {
    pe_ps_member_t **items;
    size_t num, cap;
} user_conns_t;

/* How often publishing sweeps the map for channels whose history expired (ms). */
#define SWEEP_INTERVAL_MS 10000

typedef struct st_publish_done_t {
    pe_ps_deferred_t d;
    pe_ps_publish_cb cb;
    void *ctx;
    const char *err;
    pe_id_t id;
    int replayed;
} publish_done_t;

typedef struct st_read_done_t {
    pe_ps_deferred_t d;
    pe_ps_read_cb cb;
    void *ctx;
    pe_ps_read_result_t result;
} read_done_t;

static uint64_t
real_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t (*pe_ps__now_ms)(void) = real_now_ms;

/* The position a channel born at `now` starts from (see "Epochs"). */
static pe_id_t
epoch_mark(mem_engine_t *self, uint64_t now)
{
    uint64_t ttl = self->super.opts.history_ttl_ms, ms = now > ttl ? now - ttl : 0;
    return (pe_id_t){ms > self->start_ms ? ms : self->start_ms, 0};
}

/*
 * Returns the channel locked (its mutex held), or NULL. With create, a missing channel is made
 * unless the map holds max_channels already (*full is then set).
 */
static mem_channel_t *
lock_channel(mem_engine_t *self, const char *name, size_t len, int create, int *full)
{
    pthread_rwlock_rdlock(&self->map_lock);
    mem_channel_t *ch = pe_strmap_get(&self->channels, name, len);
    if (ch != NULL)
        pthread_mutex_lock(&ch->lock);
    pthread_rwlock_unlock(&self->map_lock);
    if (ch != NULL || !create)
        return ch;

    pthread_rwlock_wrlock(&self->map_lock);
    if ((ch = pe_strmap_get(&self->channels, name, len)) == NULL) {
        if (self->super.opts.max_channels != 0 && self->channels.size >= self->super.opts.max_channels) {
            pthread_rwlock_unlock(&self->map_lock);
            *full = 1;
            return NULL;
        }
        ch = pe_calloc(1, sizeof(*ch) + len + 1);
        pthread_mutex_init(&ch->lock, NULL);
        memcpy(ch->name, name, len);
        ch->name_len = len;
        ch->last_id = ch->trimmed = epoch_mark(self, pe_ps__now_ms());
        pe_strmap_set(&self->channels, name, len, ch);
        __atomic_store_n(&self->super.num_channels, self->channels.size, __ATOMIC_RELAXED);
    }
    pthread_mutex_lock(&ch->lock);
    pthread_rwlock_unlock(&self->map_lock);
    return ch;
}

static void free_channel_locked(mem_engine_t *self, mem_channel_t *ch);

/* Frees the channel if it is still unused. Call without any channel mutex held. */
static void
collect_channel(mem_engine_t *self, const char *name, size_t len)
{
    pthread_rwlock_wrlock(&self->map_lock);
    mem_channel_t *ch = pe_strmap_get(&self->channels, name, len);
    if (ch != NULL) {
        pthread_mutex_lock(&ch->lock);
        if (ch->watchers == 0 && ch->count == 0 && ch->num_members == 0) {
            pe_strmap_remove(&self->channels, ch->name, ch->name_len);
            free_channel_locked(self, ch);
        } else {
            pthread_mutex_unlock(&ch->lock);
        }
        __atomic_store_n(&self->super.num_channels, self->channels.size, __ATOMIC_RELAXED);
    }
    pthread_rwlock_unlock(&self->map_lock);
}

static pe_msg_t **
ring_at(mem_channel_t *ch, size_t i)
{
    return &ch->ring[(ch->head + i) % ch->cap];
}

static void
drop_oldest(mem_channel_t *ch)
{
    pe_msg_t **slot = ring_at(ch, 0);
    ch->trimmed = (*slot)->id;
    pe_msg_release(*slot);
    *slot = NULL;
    ch->head = (ch->head + 1) % ch->cap;
    --ch->count;
}

/* Drops messages older than the TTL. Called with ch->lock held. */
static void
expire(mem_engine_t *self, mem_channel_t *ch, uint64_t now)
{
    while (ch->count != 0) {
        uint64_t ms = (*ring_at(ch, 0))->id.ms;
        /* A message stamped in the future (the clock stepped back) is not expired. */
        if (ms >= now || now - ms <= self->super.opts.history_ttl_ms)
            break;
        drop_oldest(ch);
    }
}

/* Appends msg (taking its reference), trimming to history_size. Called with ch->lock held. */
static void
append(mem_engine_t *self, mem_channel_t *ch, pe_msg_t *msg)
{
    size_t limit = self->super.opts.history_size;
    if (ch->count == limit)
        drop_oldest(ch);
    if (ch->count == ch->cap) {
        /* Grow by doubling up to the retention count, so quiet channels stay small. */
        size_t ncap = ch->cap == 0 ? INITIAL_RING : ch->cap * 2;
        if (ncap > limit)
            ncap = limit;
        pe_msg_t **nring = pe_calloc(ncap, sizeof(*nring));
        for (size_t i = 0; i != ch->count; ++i)
            nring[i] = *ring_at(ch, i);
        pe_free(ch->ring);
        ch->ring = nring;
        ch->cap = ncap;
        ch->head = 0;
    }
    *ring_at(ch, ch->count++) = msg;
}

/* Index of the first retained message with an ID after pos. Called with ch->lock held. */
static size_t
first_after(mem_channel_t *ch, pe_id_t pos)
{
    size_t lo = 0, hi = ch->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pe_id_cmp((*ring_at(ch, mid))->id, pos) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

typedef struct st_sweep_ctx_t {
    mem_engine_t *self;
    uint64_t now;
} sweep_ctx_t;

static int
sweep_one(const char *key, size_t len, void *value, void *arg)
{
    sweep_ctx_t *ctx = arg;
    mem_channel_t *ch = value;
    pthread_mutex_lock(&ch->lock);
    expire(ctx->self, ch, ctx->now);
    if (ch->watchers == 0 && ch->count == 0 && ch->num_members == 0) {
        free_channel_locked(ctx->self, ch);
        return 1;
    }
    pthread_mutex_unlock(&ch->lock);
    return 0;
}

/* Frees every channel whose history expired and that nobody watches: a channel published once
 * and never again would otherwise keep its name forever. At most once per SWEEP_INTERVAL_MS,
 * from whichever thread publishes when it is due; O(channels) under the map's write lock. */
static void
maybe_sweep(mem_engine_t *self, uint64_t now)
{
    uint64_t due = __atomic_load_n(&self->next_sweep, __ATOMIC_RELAXED);
    if (now < due ||
        !__atomic_compare_exchange_n(&self->next_sweep, &due, now + SWEEP_INTERVAL_MS, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    sweep_ctx_t ctx = {self, now};
    pthread_rwlock_wrlock(&self->map_lock);
    pe_strmap_foreach(&self->channels, sweep_one, &ctx);
    __atomic_store_n(&self->super.num_channels, self->channels.size, __ATOMIC_RELAXED);
    pthread_rwlock_unlock(&self->map_lock);
}

static void
on_publish_done(pe_ps_deferred_t *d)
{
    publish_done_t *done = (publish_done_t *)d;
    done->cb(done->ctx, done->err, done->err == NULL ? &done->id : NULL, done->replayed);
    pe_free(done);
}

/* Appends an entry of kind to the channel's history and posts it to the watching nodes; *id
 * receives its ID. Returns 0, or -1 when the channel's IDs are exhausted. Called with ch->lock
 * held: every entry of a channel, message or presence event, is ordered by this mutex. */
static int
add_entry_locked(mem_engine_t *self, mem_channel_t *ch, uint64_t now, const char *data, size_t data_len, uint8_t kind, pe_id_t *id)
{
    if (pe_id_next(ch->last_id, now, id) != 0)
        return -1;
    expire(self, ch, now);
    pe_msg_t *msg = pe_ps__msg_new_kind(*id, ch->name, ch->name_len, data, data_len, kind);
    msg->accepted_us = pe_msg_clock_us();
    ch->last_id = *id;
    for (uint64_t w = ch->watchers; w != 0; w &= w - 1) {
        pe_msg_retain(msg);
        pe_ps_node__post_live(self->nodes[__builtin_ctzll(w)], msg);
    }
    append(self, ch, msg);
    return 0;
}

/* Stores the message and posts it to the watching nodes; done->id receives its ID. Returns
 * NULL or an error constant (nothing stored). */
static const char *
store(mem_engine_t *self, pe_ps_node_t *node, const char *channel, size_t channel_len, const char *data, size_t data_len,
      publish_done_t *done)
{
    uint64_t now = pe_ps__now_ms();
    maybe_sweep(self, now);
    int full = 0;
    mem_channel_t *ch = lock_channel(self, channel, channel_len, 1, &full);
    if (ch == NULL)
        return pe_ps_err_channel_limit;

    if (add_entry_locked(self, ch, now, data, data_len, PE_MSG_DATA, &done->id) != 0) {
        pthread_mutex_unlock(&ch->lock);
        return pe_ps_err_exhausted;
    }
    pthread_mutex_unlock(&ch->lock);
    pe_ps_node__count_published(node);
    return NULL;
}

/* A keyed publish: the key's stripe stays locked from the lookup until the new ID is recorded,
 * so the same key published at once on two threads stores one message (idem.h). */
static const char *
publish_keyed(mem_engine_t *self, pe_ps_node_t *node, const char *channel, size_t channel_len, const char *key, size_t key_len,
              const char *data, size_t data_len, publish_done_t *done)
{
    pe_idem_txn_t txn;
    const char *err = NULL;
    if (pe_idem_begin(self->idem, channel, channel_len, key, key_len, pe_ps__now_ms(), &done->id, &txn)) {
        done->replayed = 1;
        pe_ps_node__count_replayed(node);
    } else if ((err = store(self, node, channel, channel_len, data, data_len, done)) == NULL) {
        pe_idem_record(&txn, done->id);
    }
    pe_idem_end(&txn);
    return err;
}

static const char *
do_publish(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t channel_len, const char *key, size_t key_len,
           const char *data, size_t data_len, pe_ps_publish_cb cb, void *ctx)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    publish_done_t *done = pe_calloc(1, sizeof(*done));
    done->d.cb = on_publish_done;
    done->cb = cb;
    done->ctx = ctx;
    const char *err = key != NULL ? publish_keyed(self, node, channel, channel_len, key, key_len, data, data_len, done)
                                  : store(self, node, channel, channel_len, data, data_len, done);
    if (err != NULL) {
        pe_free(done);
        return err;
    }
    pe_ps_node__defer(node, &done->d);
    return NULL;
}

static void
set_watch(mem_engine_t *self, pe_ps_node_t *node, const char *channel, size_t len, int on)
{
    /* The node's own index, not a search of self->nodes: other nodes' slots are written by
     * their attach/detach on their own threads, and nothing orders those with this read. */
    unsigned index = pe_ps_node__index(node);
    if (index >= MAX_NODES)
        return;
    /* A watch is never refused here: the node counted the channel against --max-channels. */
    int full = 0;
    mem_channel_t *ch = lock_channel(self, channel, len, on, &full);
    if (ch == NULL)
        return;
    if (on)
        ch->watchers |= UINT64_C(1) << index;
    else
        ch->watchers &= ~(UINT64_C(1) << index);
    int unused = ch->watchers == 0 && ch->count == 0 && ch->num_members == 0;
    pthread_mutex_unlock(&ch->lock);
    if (unused)
        collect_channel(self, channel, len);
}

static void
do_watch(pe_ps_engine_t *self, pe_ps_node_t *node, const char *channel, size_t len)
{
    set_watch((mem_engine_t *)self, node, channel, len, 1);
}

static void
do_unwatch(pe_ps_engine_t *self, pe_ps_node_t *node, const char *channel, size_t len)
{
    set_watch((mem_engine_t *)self, node, channel, len, 0);
}

static void
on_read_done(pe_ps_deferred_t *d)
{
    read_done_t *done = (read_done_t *)d;
    done->cb(done->ctx, &done->result);
    pe_free(done);
}

/* Computes a read into r. Called with ch->lock held; ch may be NULL (no such channel: its
 * newest and trimmed positions are then both `floor`). */
static void
read_locked(mem_engine_t *self, mem_channel_t *ch, pe_id_t floor, pe_start_t start, size_t max, pe_ps_read_result_t *r)
{
    pe_id_t last = ch != NULL ? ch->last_id : floor, trimmed = ch != NULL ? ch->trimmed : floor;

    switch (start.kind) {
    case PE_START_NEW:
        r->base = last;
        break;
    case PE_START_OLDEST:
        r->base = trimmed;
        break;
    case PE_START_AFTER:
        if (pe_id_cmp(start.after, trimmed) < 0) {
            r->gap = 1;
            r->base = trimmed;
        } else if (start.strict && pe_id_cmp(start.after, last) > 0) {
            /* A position past the newest message: the history it came from is gone. */
            r->gap = 1;
            r->base = trimmed;
        } else {
            r->base = start.after;
        }
        break;
    }
    r->reached_end = 1;
    if (ch == NULL || start.kind == PE_START_NEW || max == 0)
        return;

    size_t from = first_after(ch, r->base), n = ch->count - from;
    if (n > max) {
        n = max;
        r->reached_end = 0;
    }
    if (n != 0) {
        r->msgs = pe_malloc(n * sizeof(*r->msgs));
        for (size_t i = 0; i != n; ++i) {
            r->msgs[i] = *ring_at(ch, from + i);
            pe_msg_retain(r->msgs[i]);
        }
        r->num_msgs = n;
    }
}

static void
do_read(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *channel, size_t len, pe_start_t start, size_t max, pe_ps_read_cb cb,
        void *ctx)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    /* History is in this process already: no cache, and every read is an engine read. */
    pe_ps_node__count_read(node, PE_PS_READ_ENGINE);
    read_done_t *done = pe_calloc(1, sizeof(*done));
    done->d.cb = on_read_done;
    done->cb = cb;
    done->ctx = ctx;

    mem_channel_t *ch = lock_channel(self, channel, len, 0, NULL);
    if (ch != NULL) {
        expire(self, ch, pe_ps__now_ms());
        read_locked(self, ch, PE_ID_ZERO, start, max, &done->result);
        pthread_mutex_unlock(&ch->lock);
    } else {
        /* Never used, or freed: it reads as if born now. */
        read_locked(self, NULL, epoch_mark(self, pe_ps__now_ms()), start, max, &done->result);
    }
    pe_ps_node__defer(node, &done->d);
}

/* ---- the registry ---------------------------------------------------------------------------- */

static void
members_push(pe_ps_member_t ***items, size_t *num, size_t *cap, pe_ps_member_t *m)
{
    if (*num == *cap) {
        *cap = *cap == 0 ? 4 : *cap * 2;
        *items = pe_realloc(*items, *cap * sizeof(**items));
    }
    (*items)[(*num)++] = m;
}

/* Removes m keeping the join order (the listing's order); returns 1 if it was there. */
static int
members_remove(pe_ps_member_t **items, size_t *num, pe_ps_member_t *m)
{
    for (size_t i = 0; i != *num; ++i) {
        if (items[i] == m) {
            memmove(items + i, items + i + 1, (*num - i - 1) * sizeof(*items));
            --*num;
            return 1;
        }
    }
    return 0;
}

/* The join or leave of m, when the channel is within the bound. Called with ch->lock held. */
static void
store_presence_locked(mem_engine_t *self, mem_channel_t *ch, pe_ps_member_t *m, uint8_t kind)
{
    size_t len;
    char *data = pe_ps__presence_event(m, &len);
    pe_id_t id;
    add_entry_locked(self, ch, pe_ps__now_ms(), data, len, kind, &id); /* exhausted IDs: no event */
    pe_free(data);
}

static void
do_member_add(pe_ps_engine_t *_self, pe_ps_node_t *node, pe_ps_member_t *m)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    if (m->kind == PE_PS_MEMBER_USER) {
        pthread_mutex_lock(&self->users_lock);
        user_conns_t *u = pe_strmap_get(&self->users, m->key, m->key_len);
        if (u == NULL) {
            u = pe_calloc(1, sizeof(*u));
            pe_strmap_set(&self->users, m->key, m->key_len, u);
        }
        members_push(&u->items, &u->num, &u->cap, m);
        pthread_mutex_unlock(&self->users_lock);
        return;
    }
    /* The node watches the channel already (the subscriber holds it), so it normally exists; if
     * the map was full when the watch came, the member is simply not listed. */
    int full = 0;
    mem_channel_t *ch = lock_channel(self, m->key, m->key_len, 1, &full);
    if (ch == NULL)
        return;
    members_push(&ch->members, &ch->num_members, &ch->cap_members, m);
    if (ch->num_members <= self->super.opts.presence_max_members)
        store_presence_locked(self, ch, m, PE_MSG_JOIN);
    pthread_mutex_unlock(&ch->lock);
}

static void
do_member_remove(pe_ps_engine_t *_self, pe_ps_node_t *node, pe_ps_member_t *m)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    if (m->kind == PE_PS_MEMBER_USER) {
        pthread_mutex_lock(&self->users_lock);
        user_conns_t *u = pe_strmap_get(&self->users, m->key, m->key_len);
        if (u != NULL) {
            members_remove(u->items, &u->num, m);
            if (u->num == 0) {
                pe_strmap_remove(&self->users, m->key, m->key_len);
                pe_free(u->items);
                pe_free(u);
            }
        }
        pthread_mutex_unlock(&self->users_lock);
        pe_ps__member_free(m);
        return;
    }
    mem_channel_t *ch = lock_channel(self, m->key, m->key_len, 0, NULL);
    if (ch != NULL) {
        size_t before = ch->num_members;
        if (members_remove(ch->members, &ch->num_members, m) && before <= self->super.opts.presence_max_members)
            store_presence_locked(self, ch, m, PE_MSG_LEAVE);
        pthread_mutex_unlock(&ch->lock);
    }
    pe_ps__member_free(m);
}

typedef struct st_query_done_t {
    pe_ps_deferred_t d;
    pe_ps_registry_cb cb;
    void *ctx;
    uint64_t count;
    char *members; /* NULL when not asked */
    size_t members_len;
} query_done_t;

static void
on_query_done(pe_ps_deferred_t *d)
{
    query_done_t *done = (query_done_t *)d;
    done->cb(done->ctx, NULL, done->count, done->members, done->members_len);
    pe_free(done->members);
    pe_free(done);
}

/* "[json,json,...]" of the members, pe_malloc'd. Called under the lock that guards them. */
static char *
members_json(pe_ps_member_t *const *items, size_t num, size_t *len)
{
    size_t total = 2;
    for (size_t i = 0; i != num; ++i)
        total += items[i]->json_len + 1;
    char *s = pe_malloc(total + 1), *p = s;
    *p++ = '[';
    for (size_t i = 0; i != num; ++i) {
        if (i != 0)
            *p++ = ',';
        memcpy(p, items[i]->json, items[i]->json_len);
        p += items[i]->json_len;
    }
    *p++ = ']';
    *p = '\0';
    *len = (size_t)(p - s);
    return s;
}

static const char *
do_query(pe_ps_engine_t *_self, pe_ps_node_t *node, const char *key, size_t key_len, const pe_ps_query_t *q)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    query_done_t *done = pe_calloc(1, sizeof(*done));
    done->d.cb = on_query_done;
    done->cb = q->cb;
    done->ctx = q->ctx;
    if (q->kind == PE_PS_MEMBER_USER) {
        pthread_mutex_lock(&self->users_lock);
        user_conns_t *u = pe_strmap_get(&self->users, key, key_len);
        done->count = u != NULL ? u->num : 0;
        done->members = members_json(u != NULL ? u->items : NULL, u != NULL ? u->num : 0, &done->members_len);
        pthread_mutex_unlock(&self->users_lock);
    } else {
        mem_channel_t *ch = lock_channel(self, key, key_len, 0, NULL);
        done->count = ch != NULL ? ch->num_members : 0;
        if (q->with_members)
            done->members = members_json(ch != NULL ? ch->members : NULL, ch != NULL ? ch->num_members : 0, &done->members_len);
        if (ch != NULL)
            pthread_mutex_unlock(&ch->lock);
    }
    pe_ps_node__defer(node, &done->d);
    return NULL;
}

static void
do_attach(pe_ps_engine_t *_self, pe_ps_node_t *node, unsigned index)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    if (index < MAX_NODES)
        self->nodes[index] = node;
}

static void
do_detach(pe_ps_engine_t *_self, pe_ps_node_t *node, unsigned index)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    if (index < MAX_NODES && self->nodes[index] == node)
        self->nodes[index] = NULL;
}

static int
do_is_ready(pe_ps_engine_t *self)
{
    return 1;
}

/* Frees a channel already removed from the map (or being removed by a walk). Called with the
 * map's write lock and ch->lock held; unlocks and destroys ch->lock. */
static void
free_channel_locked(mem_engine_t *self, mem_channel_t *ch)
{
    while (ch->count != 0)
        drop_oldest(ch);
    pe_free(ch->ring);
    pe_free(ch->members);
    pthread_mutex_unlock(&ch->lock);
    pthread_mutex_destroy(&ch->lock);
    pe_free(ch);
}

static int
free_channel(const char *key, size_t len, void *value, void *arg)
{
    mem_channel_t *ch = value;
    pthread_mutex_lock(&ch->lock);
    free_channel_locked(arg, ch);
    return 1;
}

static void
do_destroy(pe_ps_engine_t *_self)
{
    mem_engine_t *self = (mem_engine_t *)_self;
    pe_strmap_foreach(&self->channels, free_channel, self);
    pe_strmap_dispose(&self->channels);
    pthread_rwlock_destroy(&self->map_lock);
    pe_idem_destroy(self->idem);
    pe_strmap_dispose(&self->users); /* empty: every connection unregistered before the nodes went */
    pthread_mutex_destroy(&self->users_lock);
    pe_free(self);
}

static int
do_idempotency_stats(pe_ps_engine_t *_self, uint64_t *keys, uint64_t *evictions)
{
    pe_idem_stats(((mem_engine_t *)_self)->idem, keys, evictions);
    return 0;
}

static const pe_ps_engine_ops_t memory_ops = {
    .publish = do_publish,
    .watch = do_watch,
    .unwatch = do_unwatch,
    .read = do_read,
    .attach = do_attach,
    .detach = do_detach,
    .is_ready = do_is_ready,
    .destroy = do_destroy,
    .idempotency_stats = do_idempotency_stats,
    .member_add = do_member_add,
    .member_remove = do_member_remove,
    .query = do_query,
};

pe_ps_engine_t *
pe_ps_engine_create_memory(const pe_ps_options_t *opts)
{
    mem_engine_t *self = pe_calloc(1, sizeof(*self));
    pe_ps__engine_init(&self->super, &memory_ops, "memory", opts);
    pthread_mutex_init(&self->users_lock, NULL);
    pe_strmap_init(&self->users);
    if (self->super.opts.history_size == 0)
        self->super.opts.history_size = 1;
    pthread_rwlock_init(&self->map_lock, NULL);
    pe_strmap_init(&self->channels);
    /* This start's epoch: every ID issued from here on is above it (see "Epochs"). */
    self->start_ms = pe_ps__now_ms();
    self->next_sweep = self->start_ms + SWEEP_INTERVAL_MS;
    self->idem = pe_idem_create(pe_ps__idempotency_window_ms(opts), PE_MEM_IDEM_MAX_KEYS);
    return &self->super;
}

/*
 * Unit tests for idempotency keys: the key syntax (pe_ps_key_is_valid), the memory engine's key
 * table (pubsub/idem.c) on its own, and keyed publishing through the memory engine and a node
 * (pe_ps_publish with a key), with the engine's clock replaced through pe_ps__now_ms.
 *
 * Covered:
 *   - the key rule at its edges: 1 and 64 characters, 0 and 65, every allowed class, and
 *     characters just outside it (space, '/', '{', '}', '"', NUL, a byte >= 0x80);
 *   - the table: a recorded key is found with its ID until window_ms has passed, and not from
 *     then on; the same key on another channel and another key on the same channel are
 *     independent; the bound (a small table receiving 2000 keys holds at most its bound, counts
 *     the rest as evictions, keeps the newest and forgets the oldest); four threads racing on
 *     the same 200 keys record each exactly once (the begin/record/end step is atomic);
 *   - keyed publishing: the repeat answers the first ID with replayed = 1 and stores nothing
 *     (a subscriber from the oldest message sees one message), the node counts one published and
 *     one replayed, another channel with the same key stores anew, after the window the key
 *     stores anew, an invalid key is refused without a callback, and the engine's statistics.
 *
 * Not covered here: the Redis engine's keys (tests/e2e/idempotency.test.mjs), the transports.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <h2o.h>
#include "tap.h"
#include "pubsub.h"
#include "engine.h"
#include "idem.h"

#define MAX_ITER 20000

/* h2o 2.2.5 never frees the queue of h2o_multithread_destroy_queue (see test_engine.c). */
const char *__lsan_default_suppressions(void);
__attribute__((used)) const char *
__lsan_default_suppressions(void)
{
    return "leak:h2o_multithread_create_queue\n";
}

static h2o_evloop_t *loop;
static uint64_t fake_ms = 1000000;

static uint64_t
fake_now(void)
{
    return __atomic_load_n(&fake_ms, __ATOMIC_RELAXED);
}

#define RUN_UNTIL(cond)                                                                                                            \
    ({                                                                                                                             \
        for (int run_i_ = 0; run_i_ != MAX_ITER && !(cond); ++run_i_)                                                              \
            h2o_evloop_run(loop, 0);                                                                                               \
        !!(cond);                                                                                                                  \
    })

/* ---- the key rule ---------------------------------------------------------------------------- */

static void
test_key_rule(void)
{
    char k[70];
    memset(k, 'a', sizeof(k));
    TAP_EQ_INT(pe_ps_key_is_valid(k, 1), 1, "1 character");
    TAP_EQ_INT(pe_ps_key_is_valid(k, 64), 1, "64 characters");
    TAP_EQ_INT(pe_ps_key_is_valid(k, 65), 0, "65 characters");
    TAP_EQ_INT(pe_ps_key_is_valid(k, 0), 0, "empty");
    TAP_EQ_INT(pe_ps_key_is_valid(NULL, 0), 0, "NULL");
    const char *ok = "AZaz09_-.:";
    TAP_EQ_INT(pe_ps_key_is_valid(ok, strlen(ok)), 1, "every allowed class");
    TAP_EQ_INT(pe_ps_key_is_valid("550e8400-e29b-41d4-a716-446655440000", 36), 1, "a UUID");
    static const char *bad[] = {"a b", "a/b", "a{b", "a}b", "a\"b", "a@b", "a\xc3\xa9", "a,b", "a+b", "a\tb"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        TAP_EQ_INT(pe_ps_key_is_valid(bad[i], strlen(bad[i])), 0, "refused: %s", bad[i]);
    TAP_EQ_INT(pe_ps_key_is_valid("a\0b", 3), 0, "refused: NUL");
}

/* ---- the table -------------------------------------------------------------------------------- */

/* One begin/end; returns 1 and *id if found, else records rec (when rec != NULL) and returns 0. */
static int
lookup(pe_idem_table_t *t, const char *ch, const char *key, uint64_t now, pe_id_t *id, const pe_id_t *rec)
{
    pe_idem_txn_t txn;
    int found = pe_idem_begin(t, ch, strlen(ch), key, strlen(key), now, id, &txn);
    if (!found && rec != NULL)
        pe_idem_record(&txn, *rec);
    pe_idem_end(&txn);
    return found;
}

static void
test_table(void)
{
    pe_idem_table_t *t = pe_idem_create(1000, 10000);
    pe_id_t id = PE_ID_ZERO, a = {5, 1}, b = {6, 0};
    TAP_EQ_INT(lookup(t, "c", "k", 100, &id, &a), 0, "a new key is not found (and is recorded)");
    TAP_EQ_INT(lookup(t, "c", "k", 100, &id, NULL), 1, "found at once");
    TAP_OK(pe_id_cmp(id, a) == 0, "with its ID");
    TAP_EQ_INT(lookup(t, "c", "k", 1099, &id, NULL), 1, "found just before the window ends");
    TAP_EQ_INT(lookup(t, "d", "k", 100, &id, &b), 0, "the same key on another channel is independent");
    TAP_EQ_INT(lookup(t, "c", "k2", 100, &id, &b), 0, "another key on the same channel is independent");
    TAP_EQ_INT(lookup(t, "cx", "", 100, &id, NULL), 0, "channel+key are not merely concatenated");
    TAP_EQ_INT(lookup(t, "c", "k", 1100, &id, NULL), 0, "gone when the window has passed");
    uint64_t keys, ev;
    pe_idem_stats(t, &keys, &ev);
    TAP_EQ_UINT(keys, 2, "expired keys are dropped from the count (k on d, k2 on c remain)");
    TAP_EQ_UINT(ev, 0, "no evictions");
    pe_idem_destroy(t);

    /* The bound: 128 keys in all, 2 per stripe. */
    t = pe_idem_create(1000000, 2 * PE_IDEM_STRIPES);
    char key[32];
    for (int i = 0; i != 2000; ++i) {
        snprintf(key, sizeof(key), "key-%d", i);
        pe_id_t rec = {(uint64_t)i + 1, 0};
        lookup(t, "bound", key, 100, &id, &rec);
    }
    pe_idem_stats(t, &keys, &ev);
    TAP_OK(keys <= 2 * PE_IDEM_STRIPES, "at most the bound held (%llu)", (unsigned long long)keys);
    TAP_EQ_UINT(keys + ev, 2000, "every key is held or counted as evicted");
    TAP_EQ_INT(lookup(t, "bound", "key-1999", 100, &id, NULL), 1, "the newest key is held");
    TAP_EQ_INT(lookup(t, "bound", "key-0", 100, &id, NULL), 0, "the oldest was forgotten");
    pe_idem_destroy(t);
}

/* Four threads race to record the same keys; each key must be recorded once. */
#define RACE_THREADS 4
#define RACE_KEYS 200
#define RACE_ROUNDS 5

typedef struct {
    pe_idem_table_t *t;
    int recorded; /* lookups that missed and recorded */
} race_t;

static void *
race_main(void *arg)
{
    race_t *r = arg;
    char key[32];
    for (int round = 0; round != RACE_ROUNDS; ++round) {
        for (int i = 0; i != RACE_KEYS; ++i) {
            snprintf(key, sizeof(key), "k%d", i);
            pe_id_t id, rec = {(uint64_t)i + 1, 0};
            pe_idem_txn_t txn;
            if (!pe_idem_begin(r->t, "race", 4, key, strlen(key), 100, &id, &txn)) {
                pe_idem_record(&txn, rec);
                ++r->recorded;
            }
            pe_idem_end(&txn);
        }
    }
    return NULL;
}

static void
test_race(void)
{
    pe_idem_table_t *t = pe_idem_create(1000000, 100000);
    pthread_t th[RACE_THREADS];
    race_t r[RACE_THREADS];
    for (int i = 0; i != RACE_THREADS; ++i) {
        r[i] = (race_t){t, 0};
        pthread_create(&th[i], NULL, race_main, &r[i]);
    }
    int total = 0;
    for (int i = 0; i != RACE_THREADS; ++i) {
        pthread_join(th[i], NULL);
        total += r[i].recorded;
    }
    TAP_EQ_INT(total, RACE_KEYS, "each key recorded once over %d threads", RACE_THREADS);
    pe_idem_destroy(t);
}

/* ---- keyed publishing through the memory engine ---------------------------------------------- */

typedef struct {
    int calls;
    const char *err;
    pe_id_t id;
    int replayed;
} pub_t;

static void
on_published(void *ctx, const char *err, const pe_id_t *id, int replayed)
{
    pub_t *p = ctx;
    ++p->calls;
    p->err = err;
    if (id != NULL)
        p->id = *id;
    p->replayed = replayed;
}

static pub_t
publish_keyed(pe_ps_node_t *node, const char *ch, const char *key, const char *data)
{
    pub_t p = {0};
    const char *err = pe_ps_publish(node, ch, strlen(ch), key, key != NULL ? strlen(key) : 0, data, strlen(data), on_published, &p);
    if (err != NULL) {
        p.err = err;
        return p;
    }
    TAP_OK(p.calls == 0, "no callback from inside pe_ps_publish");
    TAP_OK(RUN_UNTIL(p.calls != 0), "the publish completes");
    return p;
}

typedef struct {
    pe_sub_t sub;
    int msgs;
} counter_t;

static int
on_message(pe_sub_t *sub, pe_msg_t *msg)
{
    ++((counter_t *)sub)->msgs;
    return PE_SUB_CONTINUE;
}
static int
on_gap(pe_sub_t *sub, const char *ch, size_t len)
{
    return PE_SUB_CONTINUE;
}
static void
on_live(pe_sub_t *sub)
{
}
static const pe_sub_callbacks_t counter_cb = {.on_message = on_message, .on_gap = on_gap, .on_live = on_live};

static void
test_keyed_publish(void)
{
    pe_ps_options_t opts = {
        .history_size = 100, .history_ttl_ms = UINT64_C(1) << 40, .max_nodes = 1, .idempotency_window_ms = 5000};
    pe_ps_engine_t *engine = pe_ps_engine_create_memory(&opts);
    pe_ps_node_t *node = pe_ps_node_create(engine, loop, 0);
    char a[PE_ID_MAXLEN + 1], b[PE_ID_MAXLEN + 1];

    pub_t p1 = publish_keyed(node, "orders", "k-1", "{\"n\":1}");
    TAP_EQ_PTR(p1.err, NULL, "first keyed publish stored");
    TAP_EQ_INT(p1.replayed, 0, "not a replay");
    __atomic_store_n(&fake_ms, fake_ms + 1, __ATOMIC_RELAXED);
    pub_t p2 = publish_keyed(node, "orders", "k-1", "{\"n\":2}");
    TAP_EQ_PTR(p2.err, NULL, "the repeat succeeds");
    TAP_EQ_INT(p2.replayed, 1, "the repeat is a replay");
    pe_id_format(p1.id, a);
    pe_id_format(p2.id, b);
    TAP_EQ_STR(b, a, "the repeat answers the first ID");
    pub_t p3 = publish_keyed(node, "orders2", "k-1", "{\"n\":3}");
    TAP_EQ_INT(p3.replayed, 0, "same key, another channel: stored");
    pub_t p4 = publish_keyed(node, "orders", NULL, "{\"n\":4}");
    TAP_EQ_INT(p4.replayed, 0, "no key: stored");
    TAP_OK(pe_id_cmp(p4.id, p1.id) > 0, "and gets a new ID");
    uint64_t keys, ev;
    TAP_EQ_INT(pe_ps_engine_idempotency_stats(engine, &keys, &ev), 0, "the memory engine reports its table");
    TAP_EQ_UINT(keys, 2, "two keys held (k-1 on orders and on orders2)");
    TAP_EQ_UINT(ev, 0, "none evicted");

    counter_t c = {0};
    pe_sub_init(&c.sub, node, &counter_cb);
    pe_sub_add(&c.sub, "orders", 6, (pe_start_t){PE_START_OLDEST, PE_ID_ZERO, 0});
    TAP_OK(RUN_UNTIL(pe_sub_is_live(&c.sub)), "subscriber live");
    TAP_EQ_INT(c.msgs, 2, "the channel holds the first keyed message and the unkeyed one, not the repeat");

    __atomic_store_n(&fake_ms, fake_ms + 5000, __ATOMIC_RELAXED);
    pub_t p5 = publish_keyed(node, "orders", "k-1", "{\"n\":5}");
    TAP_EQ_INT(p5.replayed, 0, "after the window the key stores anew");
    TAP_OK(pe_id_cmp(p5.id, p4.id) > 0, "with a new ID");
    TAP_OK(RUN_UNTIL(c.msgs == 3), "the subscriber receives it");

    pub_t bad = publish_keyed(node, "orders", "bad key", "1");
    TAP_EQ_PTR(bad.err, pe_ps_err_bad_key, "an invalid key is refused");
    TAP_EQ_INT(bad.calls, 0, "without a callback");

    pe_ps_node_stats_t st;
    pe_ps_node_get_stats(node, &st);
    TAP_EQ_UINT(st.published, 4, "node: 4 stored");
    TAP_EQ_UINT(st.replayed, 1, "node: 1 replayed");

    pe_sub_dispose(&c.sub);
    pe_ps_node_destroy(node);
    pe_ps_engine_destroy(engine);
}

int
main(void)
{
    pe_ps__now_ms = fake_now;
    loop = h2o_evloop_create();
    tap_subtest("key rule", test_key_rule);
    tap_subtest("table", test_table);
    tap_subtest("race", test_race);
    tap_subtest("keyed publish", test_keyed_publish);
    for (int i = 0; i != 2; ++i)
        h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
    return tap_done();
}

/*
 * Unit tests for pubsub/strmap.c: lookups on a map that never allocated, set/get/replace and the
 * returned previous value, keys copied (the caller's buffer may change afterwards), keys that
 * differ only in length or contain NUL bytes, the empty key, growth through many doublings with
 * every key still found, remove (present, absent, twice), foreach visiting each entry once,
 * removal from inside foreach (some entries, every entry, in one bucket chain and across
 * buckets), and dispose followed by reuse. Run under ASan/LSan, a leaked or doubly freed entry
 * fails the test.
 *
 * Not covered: hash quality or adversarial collisions (strmap.c states its hash is unkeyed).
 */
#include <stdio.h>
#include <string.h>
#include "tap.h"
#include "strmap.h"

/* Distinct, stable value pointers for integer keys. */
static int values[20000];

static size_t
key_of(char *buf, int i)
{
    return (size_t)snprintf(buf, 32, "key-%d", i);
}

static void
test_empty(void)
{
    pe_strmap_t map;

    pe_strmap_init(&map);
    TAP_EQ_UINT(map.size, 0, "new map is empty");
    TAP_EQ_PTR(pe_strmap_get(&map, "a", 1), NULL, "get on a map that never allocated");
    TAP_EQ_PTR(pe_strmap_remove(&map, "a", 1), NULL, "remove on a map that never allocated");
    pe_strmap_dispose(&map);
    TAP_EQ_UINT(map.size, 0, "dispose of an empty map");
    pe_strmap_dispose(&map);
    TAP_OK(1, "dispose twice is harmless");
}

static void
test_set_get(void)
{
    pe_strmap_t map;
    int a, b, c;
    char key[8] = "channel";

    pe_strmap_init(&map);
    TAP_EQ_PTR(pe_strmap_set(&map, key, 7, &a), NULL, "first set returns NULL");
    TAP_EQ_UINT(map.size, 1, "size 1");
    key[0] = 'X'; /* the map holds its own copy */
    TAP_EQ_PTR(pe_strmap_get(&map, "channel", 7), &a, "key was copied");
    TAP_EQ_PTR(pe_strmap_get(&map, key, 7), NULL, "the changed caller buffer is another key");
    TAP_EQ_PTR(pe_strmap_set(&map, "channel", 7, &b), &a, "replace returns the previous value");
    TAP_EQ_UINT(map.size, 1, "replace keeps size");
    TAP_EQ_PTR(pe_strmap_get(&map, "channel", 7), &b, "replace stores the new value");

    TAP_EQ_PTR(pe_strmap_set(&map, "chan", 4, &c), NULL, "a prefix is another key");
    TAP_EQ_PTR(pe_strmap_get(&map, "channelx", 7), &b, "only len bytes of the key are read");
    TAP_EQ_PTR(pe_strmap_get(&map, "chan", 4), &c, "prefix key found");
    TAP_EQ_PTR(pe_strmap_get(&map, "channel", 4), &c, "same bytes, shorter len, is the prefix key");
    TAP_EQ_PTR(pe_strmap_get(&map, "chann", 5), NULL, "unrelated length");

    TAP_EQ_PTR(pe_strmap_set(&map, "", 0, &a), NULL, "empty key");
    TAP_EQ_PTR(pe_strmap_get(&map, "", 0), &a, "empty key found");
    TAP_EQ_PTR(pe_strmap_set(&map, "a\0b", 3, &a), NULL, "key with NUL");
    TAP_EQ_PTR(pe_strmap_set(&map, "a\0c", 3, &b), NULL, "key differing after NUL");
    TAP_EQ_PTR(pe_strmap_get(&map, "a\0b", 3), &a, "NUL key 1");
    TAP_EQ_PTR(pe_strmap_get(&map, "a\0c", 3), &b, "NUL key 2");
    TAP_EQ_PTR(pe_strmap_get(&map, "a", 1), NULL, "the part before NUL is not a key");
    TAP_EQ_UINT(map.size, 5, "size 5");

    TAP_EQ_PTR(pe_strmap_remove(&map, "chan", 4), &c, "remove returns the value");
    TAP_EQ_PTR(pe_strmap_remove(&map, "chan", 4), NULL, "second remove finds nothing");
    TAP_EQ_PTR(pe_strmap_get(&map, "channel", 7), &b, "other key survives");
    TAP_EQ_UINT(map.size, 4, "size 4");
    pe_strmap_dispose(&map);
    TAP_EQ_UINT(map.size, 0, "disposed");
}

static void
test_grow(void)
{
    pe_strmap_t map;
    const int n = (int)(sizeof(values) / sizeof(values[0]));
    int bad = 0;
    char key[32];

    pe_strmap_init(&map);
    for (int i = 0; i != n; ++i) {
        size_t len = key_of(key, i);
        bad += pe_strmap_set(&map, key, len, values + i) != NULL;
        /* load factor 1: the table doubles before size exceeds it */
        bad += map.size > map._num_buckets || (map._num_buckets & (map._num_buckets - 1)) != 0;
    }
    TAP_EQ_INT(bad, 0, "%d inserts: new keys, table a power of two no smaller than size", n);
    TAP_EQ_UINT(map.size, (unsigned)n, "size after inserts");

    bad = 0;
    for (int i = 0; i != n; ++i) {
        size_t len = key_of(key, i);
        bad += pe_strmap_get(&map, key, len) != values + i;
    }
    TAP_EQ_INT(bad, 0, "every key found after growth");

    bad = 0;
    for (int i = 0; i < n; i += 2) {
        size_t len = key_of(key, i);
        bad += pe_strmap_remove(&map, key, len) != values + i;
    }
    TAP_EQ_INT(bad, 0, "remove the even keys");
    TAP_EQ_UINT(map.size, (unsigned)n / 2, "half left");
    bad = 0;
    for (int i = 0; i != n; ++i) {
        size_t len = key_of(key, i);
        bad += pe_strmap_get(&map, key, len) != (i % 2 == 0 ? NULL : values + i);
    }
    TAP_EQ_INT(bad, 0, "even keys gone, odd keys found");

    bad = 0;
    for (int i = 0; i != n; ++i) {
        size_t len = key_of(key, i);
        bad += pe_strmap_set(&map, key, len, values + (n - 1 - i)) != (i % 2 == 0 ? NULL : values + i);
    }
    TAP_EQ_INT(bad, 0, "re-insert evens, replace odds");
    TAP_EQ_UINT(map.size, (unsigned)n, "full again");
    pe_strmap_dispose(&map);
}

struct visit {
    int seen[20000]; /* visits per key index */
    int bad;         /* key not NUL-terminated or not matching its value */
    int remove_mod;  /* remove entries whose index % remove_mod == 0; 0: none */
};

static int
on_entry(const char *key, size_t len, void *value, void *arg)
{
    struct visit *v = arg;
    int i = (int)((int *)value - values);
    char want[32];

    if (i < 0 || i >= (int)(sizeof(values) / sizeof(values[0])) || key[len] != '\0' || key_of(want, i) != len ||
        memcmp(want, key, len) != 0) {
        ++v->bad;
        return 0;
    }
    ++v->seen[i];
    return v->remove_mod != 0 && i % v->remove_mod == 0;
}

static void
check_visits(struct visit *v, int n, int (*expect)(int i), const char *what)
{
    int bad = v->bad;
    for (int i = 0; i != n; ++i)
        bad += v->seen[i] != expect(i);
    TAP_EQ_INT(bad, 0, "%s", what);
    memset(v->seen, 0, sizeof(v->seen));
}

static int
once(int i)
{
    (void)i;
    return 1;
}

static int
odd_not_div3(int i)
{
    return i % 2 != 0 && i % 3 != 0;
}

static int
not_div3(int i)
{
    return i % 3 != 0;
}

static void
test_foreach(void)
{
    static struct visit v;
    pe_strmap_t map;
    const int n = 5000;
    char key[32];

    pe_strmap_init(&map);
    memset(&v, 0, sizeof(v));
    pe_strmap_foreach(&map, on_entry, &v);
    TAP_EQ_INT(v.bad, 0, "foreach on an empty map calls nothing");

    for (int i = 0; i != n; ++i) {
        size_t len = key_of(key, i);
        pe_strmap_set(&map, key, len, values + i);
    }
    pe_strmap_foreach(&map, on_entry, &v);
    check_visits(&v, n, once, "each entry visited once");

    /* Removing every third entry while walking: the rest is still visited exactly once. */
    v.remove_mod = 3;
    pe_strmap_foreach(&map, on_entry, &v);
    check_visits(&v, n, once, "removing during foreach visits each entry once");
    TAP_EQ_UINT(map.size, (unsigned)(n - (n + 2) / 3), "size counts the removals");
    v.remove_mod = 0;
    pe_strmap_foreach(&map, on_entry, &v);
    check_visits(&v, n, not_div3, "removed entries are gone, others remain");

    v.remove_mod = 2;
    pe_strmap_foreach(&map, on_entry, &v);
    check_visits(&v, n, not_div3, "second removal pass");
    v.remove_mod = 0;
    pe_strmap_foreach(&map, on_entry, &v);
    check_visits(&v, n, odd_not_div3, "after two passes");

    /* Removing everything, including whole chains. */
    v.remove_mod = 1;
    pe_strmap_foreach(&map, on_entry, &v);
    TAP_EQ_UINT(map.size, 0, "foreach removing all empties the map");
    memset(v.seen, 0, sizeof(v.seen));
    v.remove_mod = 0;
    pe_strmap_foreach(&map, on_entry, &v);
    TAP_EQ_INT(v.seen[1], 0, "nothing left to visit");
    for (int i = 0; i != 4; ++i) {
        size_t len = key_of(key, i);
        TAP_EQ_PTR(pe_strmap_set(&map, key, len, values + i), NULL, "the emptied map takes %s again", key);
    }
    TAP_EQ_UINT(map.size, 4, "four entries after reuse");
    pe_strmap_dispose(&map);

    /* Reuse after dispose. */
    pe_strmap_init(&map);
    TAP_EQ_PTR(pe_strmap_set(&map, "x", 1, values), NULL, "set after dispose and init");
    TAP_EQ_PTR(pe_strmap_get(&map, "x", 1), values, "get after dispose and init");
    pe_strmap_dispose(&map);
}

int
main(void)
{
    tap_subtest("empty", test_empty);
    tap_subtest("set get", test_set_get);
    tap_subtest("grow", test_grow);
    tap_subtest("foreach", test_foreach);
    return tap_done();
}

/*
 * String-keyed hash map: separate chaining over a power-of-two bucket array that doubles when
 * the entry count would exceed the bucket count (load factor 1). Each entry is one allocation
 * holding the link, the cached hash, the value and the key bytes (plus a NUL, so callbacks can
 * treat the key as a C string), so a lookup touches one cache line per chain link and a remove
 * frees one block.
 *
 * The table never shrinks: the maps it serves (channels per node, subscribers per channel) grow
 * to a working size and stay there, and a shrink policy would add rehash storms on churn.
 *
 * The hash is 64-bit FNV-1a with a final avalanche (the MurmurHash3 fmix64 constants) so that
 * the low bits used as the bucket index depend on every input byte. It is not keyed: keys that
 * a peer chooses (channel names) could be crafted to collide. Channel names are bounded (200
 * bytes) and so are channels per subscription, which limits the damage; a keyed hash (SipHash)
 * is the fix if that ever shows up in profiles.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "alloc.h"
#include "strmap.h"

/* First table size: small maps (one subscriber's channels) stay in one allocation of 8 links. */
#define INITIAL_BUCKETS 8

struct st_pe_strmap_entry_t {
    pe_strmap_entry_t *next; /* chain link */
    size_t hash;             /* full hash of the key, compared before the key bytes */
    size_t len;              /* key length in bytes, without the NUL */
    void *value;             /* borrowed from the caller; never NULL */
    char key[];              /* len bytes + NUL, owned by the entry */
};

static size_t
hash_key(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037u;

    for (size_t i = 0; i != len; ++i) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211u;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return (size_t)h;
}

/*
 * Returns the link that points at the entry for key (so the caller can unlink it), or the link
 * at the end of its chain if absent (*result == NULL then). The map must have buckets.
 */
static pe_strmap_entry_t **
find_link(const pe_strmap_t *map, const char *key, size_t len, size_t hash)
{
    pe_strmap_entry_t **link = map->_buckets + (hash & (map->_num_buckets - 1));

    for (; *link != NULL; link = &(*link)->next) {
        pe_strmap_entry_t *e = *link;
        if (e->hash == hash && e->len == len && memcmp(e->key, key, len) == 0)
            break;
    }
    return link;
}

static void
grow(pe_strmap_t *map)
{
    size_t new_num = map->_num_buckets == 0 ? INITIAL_BUCKETS : map->_num_buckets * 2;
    pe_strmap_entry_t **new_buckets = pe_calloc(new_num, sizeof(*new_buckets));

    for (size_t i = 0; i != map->_num_buckets; ++i) {
        pe_strmap_entry_t *e = map->_buckets[i], *next;
        for (; e != NULL; e = next) {
            pe_strmap_entry_t **head = new_buckets + (e->hash & (new_num - 1));
            next = e->next;
            e->next = *head;
            *head = e;
        }
    }
    pe_free(map->_buckets);
    map->_buckets = new_buckets;
    map->_num_buckets = new_num;
}

void
pe_strmap_init(pe_strmap_t *map)
{
    *map = (pe_strmap_t){NULL, 0, 0};
}

void
pe_strmap_dispose(pe_strmap_t *map)
{
    for (size_t i = 0; i != map->_num_buckets; ++i) {
        pe_strmap_entry_t *e = map->_buckets[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            pe_free(e);
        }
    }
    pe_free(map->_buckets);
    pe_strmap_init(map);
}

void *
pe_strmap_get(const pe_strmap_t *map, const char *key, size_t len)
{
    pe_strmap_entry_t *e;

    if (map->size == 0)
        return NULL;
    e = *find_link(map, key, len, hash_key(key, len));
    return e != NULL ? e->value : NULL;
}

void *
pe_strmap_set(pe_strmap_t *map, const char *key, size_t len, void *value)
{
    size_t hash = hash_key(key, len);
    pe_strmap_entry_t **link, *e;

    if (map->_num_buckets != 0) {
        link = find_link(map, key, len, hash);
        if ((e = *link) != NULL) {
            void *old = e->value;
            e->value = value;
            return old;
        }
    }

    if (map->size + 1 > map->_num_buckets)
        grow(map);
    e = pe_malloc(offsetof(pe_strmap_entry_t, key) + len + 1);
    e->hash = hash;
    e->len = len;
    e->value = value;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    /* Insert at the head of the chain: the link found above may be stale after grow(). */
    link = map->_buckets + (hash & (map->_num_buckets - 1));
    e->next = *link;
    *link = e;
    ++map->size;
    return NULL;
}

void *
pe_strmap_remove(pe_strmap_t *map, const char *key, size_t len)
{
    pe_strmap_entry_t **link, *e;
    void *value;

    if (map->size == 0)
        return NULL;
    link = find_link(map, key, len, hash_key(key, len));
    if ((e = *link) == NULL)
        return NULL;
    *link = e->next;
    value = e->value;
    pe_free(e);
    --map->size;
    return value;
}

void
pe_strmap_foreach(pe_strmap_t *map, int (*cb)(const char *key, size_t len, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i != map->_num_buckets; ++i) {
        pe_strmap_entry_t **link = map->_buckets + i;
        while (*link != NULL) {
            pe_strmap_entry_t *e = *link;
            if (cb(e->key, e->len, e->value, arg)) {
                /* Unlink before freeing; *link then already names the next entry. */
                *link = e->next;
                pe_free(e);
                --map->size;
            } else {
                link = &e->next;
            }
        }
    }
}

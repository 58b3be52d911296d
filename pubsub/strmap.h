/*
 * A string-keyed hash map (separate chaining, power-of-two table that doubles at load 1).
 * Not thread-safe: each owner (an engine under its lock, or one event-loop thread) has its own.
 * The map owns a copy of each key; values are borrowed pointers the caller manages.
 */
#ifndef PE_STRMAP_H
#define PE_STRMAP_H

#include <stddef.h>

typedef struct st_pe_strmap_entry_t pe_strmap_entry_t;

typedef struct st_pe_strmap_t {
    pe_strmap_entry_t **_buckets;
    size_t _num_buckets; /* power of two, or 0 before the first insert */
    size_t size;         /* read-only: number of entries */
} pe_strmap_t;

/** Initialises an empty map (no allocation until the first insert). */
void pe_strmap_init(pe_strmap_t *map);
/** Frees the table and the key copies (not the values). The map may be re-initialised. */
void pe_strmap_dispose(pe_strmap_t *map);
/** Returns the value stored under key[0..len), or NULL. */
void *pe_strmap_get(const pe_strmap_t *map, const char *key, size_t len);
/**
 * Stores value (non-NULL) under key[0..len), replacing any previous value. Returns the previous
 * value or NULL. Aborts on out-of-memory (allocation wrappers die, STYLE 3.4.9).
 */
void *pe_strmap_set(pe_strmap_t *map, const char *key, size_t len, void *value);
/** Removes key[0..len); returns the value it held, or NULL if absent. */
void *pe_strmap_remove(pe_strmap_t *map, const char *key, size_t len);
/**
 * Calls cb for every entry, in no particular order. cb must not insert; it may return 1 to
 * remove the entry it was given (the value is not freed), else 0. cb must not call
 * pe_strmap_set or pe_strmap_remove on this map either: the walk holds a link into the chain
 * that either could free. key is NUL-terminated and valid until the entry is removed.
 */
void pe_strmap_foreach(pe_strmap_t *map, int (*cb)(const char *key, size_t len, void *value, void *arg), void *arg);

#endif

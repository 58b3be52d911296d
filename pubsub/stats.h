/*
 * stats.h: the counter macros of every layer (pubsub's node counters, the edge's per-thread
 * counters). A counter is written by its owning thread only and read from any thread (the
 * metrics endpoint), so a relaxed load and store is enough: no read-modify-write atomics.
 */
#ifndef PE_STATS_H
#define PE_STATS_H

#define PE_STAT_ADD(field, n) __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define PE_STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define PE_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

#endif

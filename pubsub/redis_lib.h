/*
 * redis_lib.h: the Redis function library `pushedge` (its source is pubsub/redis_lib.lua, which
 * documents the functions and the key layout), as the text the engine loads with FUNCTION LOAD
 * REPLACE. The .lua file is embedded at build time (pubsub/embed_lua.py); this module writes
 * the node's own retention and idempotency window into the library's defaults. Private to
 * pubsub/.
 */
#ifndef PE_REDIS_LIB_H
#define PE_REDIS_LIB_H

/**
 * Returns the library text (pe_malloc'd, NUL-terminated; the caller frees it) with maxlen
 * (messages per channel), ttl_ms (their maximum age) and window_ms (the idempotency window) as
 * the defaults a caller of the functions gets when it passes none.
 */
char *pe_redis_lib_build(unsigned long long maxlen, unsigned long long ttl_ms, unsigned long long window_ms);

#endif

/*
 * redis_lib.c: assembles the function library's text from the parts embedded at build time
 * (redis_lib_lua.h, generated from redis_lib.lua) and this node's values for its defaults.
 */
#include <stdio.h>
#include <string.h>
#include "alloc.h"
#include "redis_lib.h"
#include "redis_lib_lua.h"

#define NUM_PARAMS (sizeof(pe_redis_lib_params) / sizeof(pe_redis_lib_params[0]))

char *
pe_redis_lib_build(unsigned long long maxlen, unsigned long long ttl_ms, unsigned long long window_ms)
{
    _Static_assert(NUM_PARAMS == 3, "MAXLEN, TTL_MS and WINDOW_MS (pubsub/meson.build)");
    _Static_assert(sizeof(pe_redis_lib_parts) / sizeof(pe_redis_lib_parts[0]) == NUM_PARAMS + 1, "one part around each value");
    char values[NUM_PARAMS][24];
    size_t len = strlen(pe_redis_lib_parts[0]);
    for (size_t i = 0; i != NUM_PARAMS; ++i) {
        const char *name = pe_redis_lib_params[i];
        unsigned long long v = strcmp(name, "MAXLEN") == 0 ? maxlen : strcmp(name, "TTL_MS") == 0 ? ttl_ms : window_ms;
        snprintf(values[i], sizeof(values[i]), "%llu", v);
        len += strlen(values[i]) + strlen(pe_redis_lib_parts[i + 1]);
    }
    char *text = pe_malloc(len + 1), *p = text;
    for (size_t i = 0;; ++i) {
        size_t n = strlen(pe_redis_lib_parts[i]);
        memcpy(p, pe_redis_lib_parts[i], n);
        p += n;
        if (i == NUM_PARAMS)
            break;
        n = strlen(values[i]);
        memcpy(p, values[i], n);
        p += n;
    }
    *p = '\0';
    return text;
}

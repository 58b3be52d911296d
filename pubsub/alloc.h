/*
 * Allocation wrappers: every heap allocation in pushedge goes through these. Out-of-memory is
 * not a recoverable state for a push edge (the kernel's OOM killer gets there first), so they
 * abort with a message instead of returning NULL (h2o's "or die" policy, STYLE 3.4.9).
 */
#ifndef PE_ALLOC_H
#define PE_ALLOC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noreturn)) static inline void
pe__oom(size_t sz)
{
    fprintf(stderr, "pushedge: out of memory allocating %zu bytes\n", sz);
    abort();
}

static inline void *
pe_malloc(size_t sz)
{
    void *p = malloc(sz == 0 ? 1 : sz);
    if (p == NULL)
        pe__oom(sz);
    return p;
}

static inline void *
pe_calloc(size_t n, size_t sz)
{
    void *p = calloc(n == 0 ? 1 : n, sz == 0 ? 1 : sz);
    if (p == NULL)
        pe__oom(n * sz);
    return p;
}

static inline void *
pe_realloc(void *old, size_t sz)
{
    void *p = realloc(old, sz == 0 ? 1 : sz);
    if (p == NULL)
        pe__oom(sz);
    return p;
}

/** A NUL-terminated copy of s[0..len). */
static inline char *
pe_strndup(const char *s, size_t len)
{
    char *p = pe_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static inline void
pe_free(void *p)
{
    free(p);
}

#endif

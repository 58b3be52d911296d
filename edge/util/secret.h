/*
 * secret.h: comparing secrets (the API key, a key in a bearer header) in time that does not
 * depend on where they differ. Any thread; no state.
 */
#ifndef PE_SECRET_H
#define PE_SECRET_H

#include <stddef.h>

/** 1 if a[0..alen) equals b[0..blen) and blen != 0; the time reveals the lengths at most. */
int pe_secret_equals(const char *a, size_t alen, const char *b, size_t blen);

#endif

/* secret.c: constant-time comparison of secrets (secret.h). */
#include "edge/util/secret.h"

int
pe_secret_equals(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Every byte of a is visited whatever matched, so the time reveals the lengths at most. */
    unsigned char diff = alen != blen;
    for (size_t i = 0; i != alen; ++i)
        diff |= (unsigned char)(a[i] ^ b[i % (blen == 0 ? 1 : blen)]);
    return diff == 0 && blen != 0;
}

/*
 * b64url.c: strict base64url decoding (b64url.h). A token is signed over its text, so a lax
 * decoder would let two texts carry one payload; rejecting the non-canonical forms keeps the
 * mapping one to one and the parser's input small.
 */
#include "edge/identity/b64url.h"

/* The value of a base64url character, or -1. */
static int
value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long
pe_b64url_decode(const char *s, size_t len, unsigned char *out)
{
    /* A single character in the last group carries 6 bits: not a whole byte. */
    if (len % 4 == 1)
        return -1;
    unsigned long acc = 0;
    unsigned bits = 0;
    long n = 0;
    for (size_t i = 0; i != len; ++i) {
        int v = value_of((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1ul << bits) - 1;
        }
    }
    /* The 2 or 4 bits left over must be zero, or another text decodes to the same bytes. */
    if (acc != 0)
        return -1;
    return n;
}

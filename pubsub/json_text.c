/*
 * JSON text helpers. pe_json_minify exists so that a published body can be embedded in the
 * envelope and in an SSE "data:" line exactly as the publisher wrote its tokens: re-encoding
 * through jansson would re-print numbers (1.0 becomes 1.0 or 1, big integers lose precision
 * beyond json_int_t) and re-escape strings, and a subscriber should receive what was sent.
 *
 * The input has already been validated by jansson, so a two-state scanner is enough: outside a
 * string, drop the four JSON white-space bytes (RFC 8259 section 2); inside, copy everything and
 * remember whether the previous byte was an unescaped backslash, so that \" does not end the
 * string. Invalid input does not overrun anything (the output is never longer than the input),
 * it just yields unspecified text.
 */
#include <stdio.h>
#include <string.h>
#include "json_text.h"

json_t *
pe_json_load_untrusted(const char *text, size_t len, size_t flags, json_error_t *err)
{
    const char *nul = memchr(text, '\0', len);
    if (nul != NULL) {
        if (err != NULL) {
            memset(err, 0, sizeof(*err));
            err->position = (int)(nul - text);
            snprintf(err->text, sizeof(err->text), "a NUL byte at offset %zu is not JSON", (size_t)(nul - text));
        }
        return NULL;
    }
    return json_loadb(text, len, flags, err);
}

size_t
pe_json_minify(const char *in, size_t len, char *out)
{
    size_t n = 0;
    int in_string = 0, escaped = 0;

    for (size_t i = 0; i != len; ++i) {
        char c = in[i];
        if (in_string) {
            if (escaped) {
                escaped = 0;
            } else if (c == '\\') {
                escaped = 1;
            } else if (c == '"') {
                in_string = 0;
            }
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        } else if (c == '"') {
            in_string = 1;
        }
        out[n++] = c;
    }
    return n;
}

static size_t
skip_ws(const char *in, size_t len, size_t i)
{
    while (i < len && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r'))
        ++i;
    return i;
}

/* Returns the index just past the string starting at in[i] == '"'. */
static size_t
skip_string(const char *in, size_t len, size_t i)
{
    for (++i; i < len; ++i) {
        if (in[i] == '\\')
            ++i;
        else if (in[i] == '"')
            return i + 1;
    }
    return len;
}

/* Returns the index just past the value starting at in[i]. */
static size_t
skip_value(const char *in, size_t len, size_t i)
{
    if (i >= len)
        return len;
    if (in[i] == '"')
        return skip_string(in, len, i);
    if (in[i] == '{' || in[i] == '[') {
        size_t depth = 0;
        for (; i < len; ++i) {
            char c = in[i];
            if (c == '"') {
                i = skip_string(in, len, i) - 1;
            } else if (c == '{' || c == '[') {
                ++depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return len;
    }
    /* a number or a literal: up to the next delimiter */
    while (i < len && in[i] != ',' && in[i] != '}' && in[i] != ']' && in[i] != ' ' && in[i] != '\t' && in[i] != '\n' &&
           in[i] != '\r')
        ++i;
    return i;
}

/* Returns the value of the four hex digits at in[i..i+4), or -1. */
static long
hex4(const char *in, size_t len, size_t i)
{
    long v = 0;
    if (len < 4 || i > len - 4)
        return -1;
    for (size_t j = i; j != i + 4; ++j) {
        char c = in[j];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Writes the UTF-8 form of code point cp (at most 0x10FFFF) to buf; returns its length. A lone
 * surrogate gets the 3-byte form: jansson refuses it, so it never has to match anything. */
static size_t
utf8_encode(long cp, unsigned char *buf)
{
    if (cp < 0x80) {
        buf[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (unsigned char)(0xc0 | (cp >> 6));
        buf[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (unsigned char)(0xe0 | (cp >> 12));
        buf[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        buf[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    buf[0] = (unsigned char)(0xf0 | (cp >> 18));
    buf[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    buf[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    buf[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* What a JSON one-character escape (the letter after the backslash) stands for, or -1. */
static int
short_escape(char e)
{
    static const char pairs[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
    for (size_t i = 0; i + 1 < sizeof(pairs); i += 2)
        if (pairs[i] == e)
            return (unsigned char)pairs[i + 1];
    return -1;
}

/*
 * Compares the body of a JSON string, in[i..end) (between the quotes, escapes as written), with
 * key[0..key_len) after decoding its escapes the way jansson does (RFC 8259 section 7: the short
 * escapes, \uXXXX as UTF-8, a surrogate pair as one character). Decoding one character at a
 * time into a 4-byte buffer keeps this free of allocation. Returns 1 if equal; a malformed
 * escape (only in text jansson would refuse) compares unequal.
 */
static int
key_equals(const char *in, size_t i, size_t end, const char *key, size_t key_len)
{
    size_t k = 0;
    while (i < end) {
        unsigned char buf[4];
        size_t n = 1;
        if (in[i] != '\\') {
            buf[0] = (unsigned char)in[i++];
        } else {
            if (i + 1 >= end)
                return 0;
            char e = in[i + 1];
            i += 2;
            int c = short_escape(e);
            if (c >= 0) {
                buf[0] = (unsigned char)c;
            } else if (e == 'u') {
                long cp = hex4(in, end, i);
                if (cp < 0)
                    return 0;
                i += 4;
                if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < end && in[i] == '\\' && in[i + 1] == 'u') {
                    long lo = hex4(in, end, i + 2);
                    if (lo >= 0xdc00 && lo <= 0xdfff) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                }
                n = utf8_encode(cp, buf);
            } else {
                return 0;
            }
        }
        if (n > key_len - k || memcmp(key + k, buf, n) != 0)
            return 0;
        k += n;
    }
    return k == key_len;
}

int
pe_json_find_member(const char *in, size_t len, const char *key, size_t key_len, size_t *value_off, size_t *value_len)
{
    size_t i = skip_ws(in, len, 0);
    if (i >= len || in[i] != '{')
        return 0;
    i = skip_ws(in, len, i + 1);
    while (i < len && in[i] == '"') {
        size_t kstart = i + 1, kend = skip_string(in, len, i);
        /* kend - 1 is the closing quote, or len when the string is unterminated (invalid input). */
        int match = kend > kstart && key_equals(in, kstart, kend - 1, key, key_len);
        i = skip_ws(in, len, kend);
        if (i >= len || in[i] != ':')
            return 0;
        i = skip_ws(in, len, i + 1);
        size_t vend = skip_value(in, len, i);
        if (match) {
            *value_off = i;
            *value_len = vend - i;
            return 1;
        }
        i = skip_ws(in, len, vend);
        if (i >= len || in[i] != ',')
            return 0;
        i = skip_ws(in, len, i + 1);
    }
    return 0;
}

/*
 * Where the next element of the top-level container starts: after its opening `open` ('[' or
 * '{') when pos is 0 (the first call), else after the ',' that follows the element ending at
 * pos. Returns len when that character is not there.
 */
static size_t
next_element(const char *in, size_t len, size_t pos, char open)
{
    size_t i = skip_ws(in, len, pos);
    if (i >= len || in[i] != (pos == 0 ? open : ','))
        return len;
    return skip_ws(in, len, i + 1);
}

int
pe_json_array_next(const char *in, size_t len, size_t *pos, size_t *off, size_t *vlen)
{
    size_t i = next_element(in, len, *pos, '[');
    if (i >= len || (*pos == 0 && in[i] == ']')) {
        *pos = len;
        return 0;
    }
    size_t end = skip_value(in, len, i);
    *off = i;
    *vlen = end - i;
    *pos = end;
    return 1;
}

int
pe_json_object_next(const char *in, size_t len, size_t *pos, size_t *key_off, size_t *key_len, size_t *off, size_t *vlen)
{
    size_t i = next_element(in, len, *pos, '{');
    if (i >= len || in[i] != '"')
        return 0;
    size_t kend = skip_string(in, len, i);
    *key_off = i + 1;
    *key_len = kend - 1 - (i + 1);
    i = skip_ws(in, len, kend);
    if (i >= len || in[i] != ':')
        return 0;
    i = skip_ws(in, len, i + 1);
    size_t end = skip_value(in, len, i);
    *off = i;
    *vlen = end - i;
    *pos = end;
    return 1;
}

int
pe_json_key_equals(const char *raw, size_t raw_len, const char *key, size_t key_len)
{
    return key_equals(raw, 0, raw_len, key, key_len);
}

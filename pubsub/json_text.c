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

/* Skips the four JSON white-space bytes from i. */
static size_t
skip_ws(const char *in, size_t len, size_t i)
{
    while (i < len && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r'))
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

/* A string from s[i] (its opening quote): returns the index after its closing quote, or 0 (not
 * sure it is valid). A \u0000 is refused in a key only (JSON_ALLOW_NUL covers values). */
static size_t
fast_string(const unsigned char *s, size_t len, size_t i, int key)
{
    ++i;
    while (i != len) {
        unsigned c = s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (++i == len)
                return 0;
            c = s[i];
            if (c == 'u') {
                long v = hex4((const char *)s, len, i + 1), w;
                if (v < 0)
                    return 0;
                i += 5;
                if (v >= 0xdc00 && v <= 0xdfff)
                    return 0;
                if (v >= 0xd800 && v <= 0xdbff) {
                    if (len - i < 6 || s[i] != '\\' || s[i + 1] != 'u' || (w = hex4((const char *)s, len, i + 2)) < 0xdc00 ||
                        w > 0xdfff)
                        return 0;
                    i += 6;
                }
                if (v == 0 && key)
                    return 0;
                continue;
            }
            if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' && c != 't')
                return 0;
            ++i;
            continue;
        }
        if (c < 0x80) {
            ++i;
            continue;
        }
        /* Strict UTF-8: no overlong form, no surrogate, nothing above U+10FFFF. */
        size_t n;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return 0;
        }
        if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; ++k)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        i += n + 1;
    }
    return 0;
}

/* A number from s[i]: returns the index after it, or 0 (invalid, or an exponent or more integer
 * digits than a double holds: jansson decides those). */
static size_t
fast_number(const unsigned char *s, size_t len, size_t i)
{
    if (s[i] == '-' && ++i == len)
        return 0;
    size_t start = i;
    if (s[i] == '0') {
        ++i;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i != len && s[i] >= '0' && s[i] <= '9')
            ++i;
        if (i - start > 300)
            return 0;
    } else {
        return 0;
    }
    if (i != len && s[i] == '.') {
        size_t f = ++i;
        while (i != len && s[i] >= '0' && s[i] <= '9')
            ++i;
        if (i == f)
            return 0;
    }
    if (i != len && (s[i] == 'e' || s[i] == 'E'))
        return 0;
    /* "01" or "1x": jansson's lexer reads such a token whole and refuses it. */
    if (i != len && ((s[i] >= '0' && s[i] <= '9') || ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z')))
        return 0;
    return i;
}

int
pe_json_valid_fast(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    /* One bit per open container: 1 an object, 0 an array. */
    unsigned char stack[PE_JSON_FAST_MAX_DEPTH / 8];
    size_t depth = 0, i = skip_ws((const char *)s, len, 0);
    for (;;) {
        /* A value at s[i]. */
        if (i == len)
            return 0;
        switch (s[i]) {
        case '{':
        case '[': {
            int obj = s[i] == '{';
            if (depth == PE_JSON_FAST_MAX_DEPTH)
                return 0;
            if (obj)
                stack[depth / 8] |= (unsigned char)(1u << (depth % 8));
            else
                stack[depth / 8] &= (unsigned char)~(1u << (depth % 8));
            ++depth;
            i = skip_ws((const char *)s, len, i + 1);
            if (i != len && s[i] == (obj ? '}' : ']')) {
                --depth;
                ++i;
                break;
            }
            if (obj) {
                if (i == len || s[i] != '"' || (i = fast_string(s, len, i, 1)) == 0)
                    return 0;
                i = skip_ws((const char *)s, len, i);
                if (i == len || s[i] != ':')
                    return 0;
                i = skip_ws((const char *)s, len, i + 1);
            }
            continue; /* the first value inside */
        }
        case '"':
            if ((i = fast_string(s, len, i, 0)) == 0)
                return 0;
            break;
        case 't':
            if (len - i < 4 || memcmp(s + i, "true", 4) != 0)
                return 0;
            i += 4;
            break;
        case 'f':
            if (len - i < 5 || memcmp(s + i, "false", 5) != 0)
                return 0;
            i += 5;
            break;
        case 'n':
            if (len - i < 4 || memcmp(s + i, "null", 4) != 0)
                return 0;
            i += 4;
            break;
        default:
            if ((i = fast_number(s, len, i)) == 0)
                return 0;
            break;
        }
        /* After a value: close containers, or go on to the next element or member. */
        for (;;) {
            i = skip_ws((const char *)s, len, i);
            if (depth == 0)
                return i == len;
            if (i == len)
                return 0;
            int obj = (stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1;
            if (s[i] == (obj ? '}' : ']')) {
                --depth;
                ++i;
                continue;
            }
            if (s[i] != ',')
                return 0;
            i = skip_ws((const char *)s, len, i + 1);
            if (obj) {
                if (i == len || s[i] != '"' || (i = fast_string(s, len, i, 1)) == 0)
                    return 0;
                i = skip_ws((const char *)s, len, i);
                if (i == len || s[i] != ':')
                    return 0;
                i = skip_ws((const char *)s, len, i + 1);
            }
            break;
        }
    }
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

/* A string value's body when it holds no escape: 1 with its span, else 0. in[off] is its quote. */
static int
plain_string(const char *in, size_t off, size_t vlen, size_t *body_off, size_t *body_len)
{
    if (vlen < 2 || in[off] != '"' || memchr(in + off + 1, '\\', vlen - 2) != NULL)
        return 0;
    *body_off = off + 1;
    *body_len = vlen - 2;
    return 1;
}

int
pe_json_batch_item(const char *in, size_t len, pe_json_batch_item_t *item)
{
    memset(item, 0, sizeof(*item));
    size_t i = skip_ws(in, len, 0);
    if (i >= len || in[i] != '{')
        return 0;
    size_t pos = 0, koff, klen, voff, vlen;
    while (pe_json_object_next(in, len, &pos, &koff, &klen, &voff, &vlen)) {
        const char *k = in + koff;
        if (memchr(k, '\\', klen) != NULL)
            return 0;
        if (klen == 7 && memcmp(k, "channel", 7) == 0) {
            if (item->channel.present)
                return 0;
            item->channel.present = 1;
            if (vlen != 0 && in[voff] == '"') {
                if (!plain_string(in, voff, vlen, &item->channel.off, &item->channel.len))
                    return 0;
                item->channel.is_string = 1;
            }
        } else if (klen == 4 && memcmp(k, "data", 4) == 0) {
            if (item->data.present)
                return 0;
            item->data.present = 1;
            item->data.off = voff;
            item->data.len = vlen;
        } else if (klen == 3 && memcmp(k, "key", 3) == 0) {
            if (item->key.present)
                return 0;
            item->key.present = 1;
            if (vlen != 0 && in[voff] == '"') {
                if (!plain_string(in, voff, vlen, &item->key.off, &item->key.len))
                    return 0;
                item->key.is_string = 1;
            }
        }
    }
    return 1;
}

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
#include <string.h>
#include "json_text.h"

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

int
pe_json_find_member(const char *in, size_t len, const char *key, size_t key_len, size_t *value_off, size_t *value_len)
{
    size_t i = skip_ws(in, len, 0);
    if (i >= len || in[i] != '{')
        return 0;
    i = skip_ws(in, len, i + 1);
    while (i < len && in[i] == '"') {
        size_t kstart = i + 1, kend = skip_string(in, len, i);
        int match = kend - 1 - kstart == key_len && memcmp(in + kstart, key, key_len) == 0;
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

int
pe_json_array_next(const char *in, size_t len, size_t *pos, size_t *off, size_t *vlen)
{
    size_t i;
    if (*pos == 0) {
        i = skip_ws(in, len, 0);
        if (i >= len || in[i] != '[')
            return 0;
        i = skip_ws(in, len, i + 1);
        if (i >= len || in[i] == ']') {
            *pos = len;
            return 0;
        }
    } else {
        i = skip_ws(in, len, *pos);
        if (i >= len || in[i] != ',')
            return 0;
        i = skip_ws(in, len, i + 1);
        if (i >= len)
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
    size_t i;
    if (*pos == 0) {
        i = skip_ws(in, len, 0);
        if (i >= len || in[i] != '{')
            return 0;
        i = skip_ws(in, len, i + 1);
    } else {
        i = skip_ws(in, len, *pos);
        if (i >= len || in[i] != ',')
            return 0;
        i = skip_ws(in, len, i + 1);
    }
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

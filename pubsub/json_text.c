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

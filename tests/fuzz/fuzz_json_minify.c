/*
 * libFuzzer driver for pe_json_minify and the raw iterators of json_text.h.
 *
 * The function's contract is "valid JSON in", so only inputs that jansson accepts
 * (json_loadb with JSON_DECODE_ANY, the flags the publish path uses) are minified. The output
 * goes to an exact-size heap buffer (ASan catches a longer write) and must: parse again,
 * json_equal() the original, contain no CR or LF (it is embedded in SSE "data:" lines), and be a
 * fixed point (minifying it again changes nothing).
 *
 * The same valid inputs drive the raw iterators: pe_json_array_next must yield exactly the
 * elements jansson sees, each of which parses to the json_equal() element; pe_json_object_next
 * must yield as many members as the text has (jansson keeps one per key: at least that many),
 * each value parsing to a value jansson would accept. Every span lies inside the input.
 *
 * Every input also checks pe_json_valid_fast against jansson with the publish endpoint's flags
 * (pe_json_load_untrusted): the fast check may be unsure of valid text, never sure of invalid.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "json_text.h"
#include "fuzz.h"

static volatile size_t sink;

/* Like assert, but never compiled out, and names the broken property in the crash report. */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *orig = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL), *again;
    char *out, *out2;
    size_t n, n2;

    if (pe_json_valid_fast((const char *)data, size)) {
        json_t *v =
            pe_json_load_untrusted((const char *)data, size, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
        CHECK(v != NULL);
        json_decref(v);
    }
    if (orig == NULL)
        return 0;

    out = malloc(size);
    CHECK(out != NULL);
    n = pe_json_minify((const char *)data, size, out);
    CHECK(n != 0 && n <= size);
    CHECK(memchr(out, '\n', n) == NULL && memchr(out, '\r', n) == NULL);

    again = json_loadb(out, n, JSON_DECODE_ANY, NULL);
    CHECK(again != NULL && json_equal(orig, again));

    out2 = malloc(n);
    CHECK(out2 != NULL);
    n2 = pe_json_minify(out, n, out2);
    CHECK(n2 == n && memcmp(out, out2, n) == 0);

    /* The raw iterators (/api/batch). */
    size_t pos = 0, off, len, count = 0;
    while (pe_json_array_next((const char *)data, size, &pos, &off, &len)) {
        CHECK(off + len <= size && len != 0);
        json_t *elem = json_loadb((const char *)data + off, len, JSON_DECODE_ANY, NULL);
        CHECK(elem != NULL && count < json_array_size(orig) && json_equal(elem, json_array_get(orig, count)));
        json_decref(elem);
        ++count;
    }
    CHECK(json_is_array(orig) ? count == json_array_size(orig) : count == 0);
    size_t koff, klen;
    pos = count = 0;
    while (pe_json_object_next((const char *)data, size, &pos, &koff, &klen, &off, &len)) {
        CHECK(koff + klen <= size && off + len <= size && len != 0);
        json_t *value = json_loadb((const char *)data + off, len, JSON_DECODE_ANY, NULL);
        CHECK(value != NULL);
        json_decref(value);
        ++count;
    }
    CHECK(json_is_object(orig) ? count >= json_object_size(orig) : count == 0);

    sink += n + (size_t)out[0];
    json_decref(again);
    json_decref(orig);
    free(out2);
    free(out);
    return 0;
}

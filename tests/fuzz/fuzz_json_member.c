/*
 * libFuzzer driver for pe_json_find_member, with jansson as the oracle.
 *
 * The WebSocket op path (edge/ws/ws.c handle_op) validates an op with jansson and then takes "ref"
 * and "data" from the raw text with the scanner, so the two must agree on every text jansson
 * accepts with the flags handle_op uses. The property checked, for an input `in`:
 *
 *   1. Any input (valid or not): for each probe key, a reported value lies within in[0..size)
 *      (ASan also catches any read past the exact-size input buffer).
 * "jansson accepts" means pe_json_load_untrusted, the loader handle_op uses (jansson, after
 * refusing raw NUL bytes: this target found that jansson 2.14 accepts "2<NUL>").
 *
 *   2. If jansson accepts `in` as an object with JSON_REJECT_DUPLICATES: for every member (k, v)
 *      the scanner finds k, and its value text is exactly one JSON value (it parses on its own,
 *      with no white space around it) that json_equal()s v; for every probe key q, the scanner
 *      finds q if and only if jansson has q. Probes: "ref", "data", "op", each member's key with
 *      a byte appended, with its last byte removed, and with its first byte changed.
 *   3. If jansson accepts `in` as an object only without JSON_REJECT_DUPLICATES (duplicate keys;
 *      jansson keeps the last value, the scanner returns the first, and handle_op refuses such
 *      ops before looking): every key of the object is still found, and its value text is one
 *      JSON value.
 *   4. pe_json_batch_item (POST /api/batch's raw reading of an item, issue 17): on any input its
 *      spans lie within in[0..size); if jansson accepts `in` (any value, the batch endpoint's
 *      flags) and the raw reading says it is sure, then `in` is an object and "channel", "data"
 *      and "key" are present exactly when jansson has them, channel and key are strings exactly
 *      when jansson's are, with the same bytes, and data's text parses to jansson's value.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "json_text.h"
#include "fuzz.h"

/* handle_op's flags: the scanner must agree with jansson as the server configures it. */
#define OP_FLAGS (JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)
/* Probe keys derived from member keys are built in a buffer of this size; longer keys are
 * probed only as themselves. */
#define PROBE_MAX 256

/* Returns 1 and the value range if the scanner finds key, checking that the range is in bounds. */
static int
find(const char *in, size_t size, const char *key, size_t key_len, size_t *off, size_t *len)
{
    if (!pe_json_find_member(in, size, key, key_len, off, len))
        return 0;
    CHECK(*off <= size && *len <= size - *off);
    return 1;
}

/* The value text must be exactly one JSON value; returns it parsed (new reference). */
static json_t *
parse_value_text(const char *text, size_t len)
{
    CHECK(len != 0);
    CHECK(memchr(" \t\r\n", text[0], 4) == NULL && memchr(" \t\r\n", text[len - 1], 4) == NULL);
    json_t *v = pe_json_load_untrusted(text, len, JSON_DECODE_ANY | OP_FLAGS, NULL);
    CHECK(v != NULL);
    return v;
}

/* Property 2's probe: found by the scanner exactly when jansson has the key. */
static void
probe(const char *in, size_t size, json_t *obj, const char *key, size_t key_len)
{
    size_t off, len;
    int found = find(in, size, key, key_len, &off, &len);
    CHECK(found == (json_object_getn(obj, key, key_len) != NULL));
}

/* Property 4: the batch item reading against jansson. */
static void
check_batch_item(const char *in, size_t size)
{
    pe_json_batch_item_t it;
    int sure = pe_json_batch_item(in, size, &it);
    CHECK(it.channel.off <= size && it.channel.len <= size - it.channel.off);
    CHECK(it.data.off <= size && it.data.len <= size - it.data.off);
    CHECK(it.key.off <= size && it.key.len <= size - it.key.off);
    json_t *v = pe_json_load_untrusted(in, size, JSON_DECODE_ANY | OP_FLAGS, NULL);
    if (v == NULL || !sure) {
        json_decref(v);
        return;
    }
    CHECK(json_is_object(v));
    json_t *ch = json_object_get(v, "channel"), *d = json_object_get(v, "data"), *k = json_object_get(v, "key");
    CHECK(it.channel.present == (ch != NULL) && it.data.present == (d != NULL) && it.key.present == (k != NULL));
    CHECK(it.channel.is_string == (ch != NULL && json_is_string(ch)));
    CHECK(it.key.is_string == (k != NULL && json_is_string(k)));
    if (it.channel.is_string)
        CHECK(it.channel.len == json_string_length(ch) && memcmp(in + it.channel.off, json_string_value(ch), it.channel.len) == 0);
    if (it.key.is_string)
        CHECK(it.key.len == json_string_length(k) && memcmp(in + it.key.off, json_string_value(k), it.key.len) == 0);
    if (d != NULL) {
        json_t *found = parse_value_text(in + it.data.off, it.data.len);
        CHECK(json_equal(found, d));
        json_decref(found);
    }
    json_decref(v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    static const char *const fixed[] = {"ref", "data", "op"};
    size_t off, len;

    check_batch_item(in, size);

    /* 1: memory safety and bounds on anything. */
    for (size_t i = 0; i != sizeof(fixed) / sizeof(fixed[0]); ++i)
        find(in, size, fixed[i], strlen(fixed[i]), &off, &len);

    json_t *obj = pe_json_load_untrusted(in, size, JSON_REJECT_DUPLICATES | OP_FLAGS, NULL);
    int has_duplicates = 0;
    if (obj == NULL) {
        obj = pe_json_load_untrusted(in, size, OP_FLAGS, NULL);
        has_duplicates = 1;
    }
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        return 0;
    }

    const char *key;
    size_t key_len;
    json_t *value;
    json_object_keylen_foreach(obj, key, key_len, value)
    {
        CHECK(find(in, size, key, key_len, &off, &len));
        json_t *found = parse_value_text(in + off, len);
        if (!has_duplicates)
            CHECK(json_equal(found, value));
        json_decref(found);

        if (has_duplicates || key_len + 1 > PROBE_MAX)
            continue;
        char buf[PROBE_MAX];
        memcpy(buf, key, key_len);
        buf[key_len] = 'x';
        probe(in, size, obj, buf, key_len + 1);
        if (key_len != 0) {
            probe(in, size, obj, buf, key_len - 1);
            buf[0] ^= 0x20;
            probe(in, size, obj, buf, key_len);
        }
    }
    if (!has_duplicates) {
        for (size_t i = 0; i != sizeof(fixed) / sizeof(fixed[0]); ++i)
            probe(in, size, obj, fixed[i], strlen(fixed[i]));
    }
    json_decref(obj);
    return 0;
}

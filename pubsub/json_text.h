/*
 * Helpers for JSON text from peers: validation, and reading text that was already validated
 * (pure, no allocation).
 */
#ifndef PE_JSON_TEXT_H
#define PE_JSON_TEXT_H

#include <stddef.h>
#include <jansson.h>

/**
 * json_loadb for text from a peer: refuses text holding a raw NUL byte (never valid JSON, RFC
 * 8259: not white space, and control characters inside strings must be escaped), which jansson
 * 2.14 accepts after a number or a literal ("2<NUL>" loads as 2). The text is forwarded as
 * written (pe_json_minify, pe_json_find_member), so a NUL would reach subscribers inside their
 * JSON. Returns a new reference, or NULL with err filled (err may be NULL).
 */
json_t *pe_json_load_untrusted(const char *text, size_t len, size_t flags, json_error_t *err);

/**
 * A fast check that jansson would accept text[0..len) as pe_json_load_untrusted does with
 * JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, without building the value (the
 * publish endpoint only validates: the text is stored as sent). Returns 1 only when it is sure:
 * RFC 8259 grammar, strict UTF-8, valid escapes and surrogate pairs, no raw control byte, at most
 * PE_JSON_FAST_MAX_DEPTH levels, and numbers jansson cannot overflow (no exponent, at most 300
 * integer digits). Returns 0 otherwise, invalid or merely unsure (an exponent, \u0000 in a key,
 * deeper nesting): the caller then asks jansson, which also words the error. Allocation-free,
 * never reads past text[len).
 */
#define PE_JSON_FAST_MAX_DEPTH 512
int pe_json_valid_fast(const char *text, size_t len);

/**
 * Copies the JSON text in[0..len) to out without insignificant white space (outside strings),
 * keeping every token byte for byte (numbers are not re-printed, strings not re-escaped). The
 * input must be valid JSON; out must have room for len bytes (the result is never longer).
 * Returns the output length. Because valid JSON strings cannot contain raw control characters,
 * the output is a single line: safe inside an SSE "data:" field.
 */
size_t pe_json_minify(const char *in, size_t len, char *out);

/**
 * Finds the member `key` of the top-level object in the valid JSON text in[0..len), and returns
 * 1 with the offset and length of its value's text (for a transport that forwards a value as it
 * was sent, without re-printing it); 0 if the text is not an object or has no such key. Keys are
 * compared after decoding their escapes, as jansson reads them ("r\u0065f" is the key "ref";
 * key[0..key_len) is taken as decoded UTF-8, never unescaped itself). With duplicate keys the
 * first is found (callers reject duplicates when validating). Allocation-free; on invalid input
 * it returns 0 or a range within in[0..len), never reading past it.
 */
int pe_json_find_member(const char *in, size_t len, const char *key, size_t key_len, size_t *value_off, size_t *value_len);

/**
 * Iterates the elements of the top-level array of the valid JSON text in[0..len): set *pos to
 * 0 before the first call; each call returns 1 with the next element's offset and length (its
 * text as written), or 0 after the last one (or when the text is not an array).
 */
int pe_json_array_next(const char *in, size_t len, size_t *pos, size_t *off, size_t *vlen);
/**
 * The same over the members of the top-level object: the key's raw text (between its quotes,
 * escapes left as written) and the value's text.
 */
int pe_json_object_next(const char *in, size_t len, size_t *pos, size_t *key_off, size_t *key_len, size_t *off, size_t *vlen);

/**
 * Compares a key's raw text raw[0..raw_len) (between its quotes, as pe_json_object_next gives
 * it) with key[0..key_len) after decoding its escapes, as jansson reads keys ("d\u0061ta" is
 * "data"). Returns 1 if equal. Allocation-free.
 */
int pe_json_key_equals(const char *raw, size_t raw_len, const char *key, size_t key_len);

/**
 * One item of a POST /api/batch body, read from its raw text without building a value: the
 * members "channel", "data" and "key" of the top-level object. For each, present is 1 when the
 * object has the member; for "channel" and "key", is_string is 1 when its value is a string, and
 * then off/len is the string's body (between its quotes) holding no escape, so the text is the
 * decoded value; for "data", off/len is the value's text as written.
 */
typedef struct st_pe_json_batch_item_t {
    struct {
        unsigned present : 1;
        unsigned is_string : 1;
        size_t off, len;
    } channel, data, key;
} pe_json_batch_item_t;

/**
 * Fills *item from the valid JSON text in[0..len) (one element of a batch array, validated by
 * pe_json_valid_fast or jansson) and returns 1 when the raw reading is sure to be what jansson
 * reads: the text is an object, no member name holds an escape (which could spell one of the
 * three names), none of the three names appears twice (jansson keeps the last, callers refuse
 * duplicates), and "channel" and "key", when strings, hold no escape. Returns 0 otherwise: the
 * caller then parses the item with jansson. Allocation-free, never reads past in[len).
 */
int pe_json_batch_item(const char *in, size_t len, pe_json_batch_item_t *item);

#endif

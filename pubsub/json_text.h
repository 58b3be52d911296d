/*
 * Helpers for JSON text that was already validated (by jansson): pure, no allocation.
 */
#ifndef PE_JSON_TEXT_H
#define PE_JSON_TEXT_H

#include <stddef.h>

/**
 * Copies the JSON text in[0..len) to out without insignificant white space (outside strings),
 * keeping every token byte for byte (numbers are not re-printed, strings not re-escaped). The
 * input must be valid JSON; out must have room for len bytes (the result is never longer).
 * Returns the output length. Because valid JSON strings cannot contain raw control characters,
 * the output is a single line: safe inside an SSE "data:" field.
 */
size_t pe_json_minify(const char *in, size_t len, char *out);

#endif

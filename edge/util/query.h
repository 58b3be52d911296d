/*
 * query.h: pure parsing of the subscription request shared by /sse, /poll and the WebSocket
 * query: percent-decoding, the repeated `channel` parameter, `since`, and flags.
 * No allocation: decoded strings live in an arena the caller provides. Fuzzed.
 */
#ifndef PE_QUERY_H
#define PE_QUERY_H

#include <stddef.h>
#include "pubsub/cursor.h"

typedef struct st_pe_sub_query_t {
    size_t num_channels;
    struct {
        const char *name; /* into the arena, not NUL-terminated */
        size_t len;
    } channels[PE_CURSOR_MAX_ENTRIES];
    int has_since;
    pe_cursor_t since;
    int padding;  /* ?padding=1 */
    int presence; /* ?presence=1: join/leave events (and a listing) for the channels */
} pe_sub_query_t;

/**
 * Decodes application/x-www-form-urlencoded s[0..len) into out ('+' is a space, %XX a byte).
 * out needs len bytes. Returns the decoded length, or -1 on a malformed escape.
 */
long pe_query_decode(const char *s, size_t len, char *out);

/**
 * Finds the first parameter `name` in the query string qs[0..len) and decodes its value into
 * out (len bytes). Returns the decoded length, -1 if absent, -2 if malformed.
 */
long pe_query_get(const char *qs, size_t len, const char *name, char *out);

/**
 * Copies the request target path[0..len) into out (capacity cap >= 1, NUL-terminated, cut at
 * cap - 1 bytes) without any query parameter whose decoded name is `token` (a JWT must never
 * reach a log), and without a '?' left empty. Returns the length written.
 */
size_t pe_query_redact(const char *path, size_t len, char *out, size_t cap);

/**
 * Parses a subscription query. arena must have room for len bytes. Returns 0, or -1 with *err
 * set to a static message and *code to a snake_case error code ("bad_channel", "bad_cursor",
 * "missing_channel", "too_many_channels", "bad_query"). Duplicate channels are folded into one.
 */
int pe_sub_query_parse(const char *qs, size_t len, pe_sub_query_t *out, char *arena, const char **code, const char **err);

#endif

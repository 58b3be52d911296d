/*
 * The cursor codec: a subscriber's position over its set of channels, in a form that every
 * transport accepts (a query parameter, an SSE id, a long-poll field, a WebSocket op field).
 * Pure: no allocation, no I/O. docs/protocol.md is the normative description of the format.
 *
 * Forms:
 *   - "0"                     the special cursor: from the oldest retained message of every channel
 *   - "<ms>-<seq>"            one position, for a one-channel set (it is the message ID itself),
 *                             applied to every channel when a set has several
 *   - "<tag>.<ms>.<seq>" entries joined by "_"
 *                             one position per channel; tag is the channel's 32-bit FNV-1a hash,
 *                             tag, ms and seq in lower-case base 36 without leading zeros
 *                             ("0" for zero). Only unreserved URL characters, so it needs no
 *                             escaping anywhere, and it never contains CR, LF or NUL.
 */
#ifndef PE_CURSOR_H
#define PE_CURSOR_H

#include <stddef.h>
#include <stdint.h>
#include "stream_id.h"

/* Most channels in one subscription set, and so in one cursor (edge/util/bounds.h repeats the why). */
#define PE_CURSOR_MAX_ENTRIES 64
/* Longest encoded cursor: 64 entries of tag (7) + ms (13) + seq (13) + 3 separators. */
#define PE_CURSOR_MAXLEN (PE_CURSOR_MAX_ENTRIES * 36)

typedef enum en_pe_cursor_kind_t {
    PE_CURSOR_NONE = 0, /* no cursor: only new messages */
    PE_CURSOR_OLDEST,   /* "0" */
    PE_CURSOR_ID,       /* a single ID, applied to every channel */
    PE_CURSOR_MULTI     /* per-channel positions */
} pe_cursor_kind_t;

typedef struct st_pe_cursor_entry_t {
    uint32_t tag; /* pe_cursor_tag() of the channel name */
    pe_id_t pos;  /* last message ID the subscriber has seen on that channel */
} pe_cursor_entry_t;

typedef struct st_pe_cursor_t {
    pe_cursor_kind_t kind;
    pe_id_t id;         /* PE_CURSOR_ID only */
    size_t num_entries; /* PE_CURSOR_MULTI only: 1..PE_CURSOR_MAX_ENTRIES */
    pe_cursor_entry_t entries[PE_CURSOR_MAX_ENTRIES];
} pe_cursor_t;

/** The channel tag: 32-bit FNV-1a over the name's bytes. */
uint32_t pe_cursor_tag(const char *name, size_t len);

/**
 * Parses s[0..len). An empty string is PE_CURSOR_NONE. Returns 0 on success; -1 if malformed,
 * with *err (if err is not NULL) set to a static, human-readable reason (e.g. "cursor entry 3
 * has an invalid sequence"). Duplicate tags in one cursor are malformed. On failure *out may
 * have been partly written and must not be used; *err is left alone on success.
 */
int pe_cursor_parse(const char *s, size_t len, pe_cursor_t *out, const char **err);

/**
 * The position a cursor gives to the channel named name[0..len): for PE_CURSOR_ID the ID, for
 * PE_CURSOR_MULTI the entry with the channel's tag. Returns 1 and fills *pos if the cursor
 * names a position for the channel; 0 for NONE, OLDEST, or a MULTI cursor without that channel.
 */
int pe_cursor_position(const pe_cursor_t *c, const char *name, size_t len, pe_id_t *pos);

/**
 * Encodes n positions (n >= 1) into buf of capacity cap, NUL-terminated. With n == 1 the result
 * is the plain ID "<ms>-<seq>" (the tag is not needed); otherwise the multi form, in the order
 * given. An entry whose tag equals an earlier entry's is left out (the parser refuses duplicate
 * tags; docs/protocol.md "Hash collisions"), and the multi form is kept even if only one entry
 * remains. Returns the length without the NUL, or 0 if cap is too small, n == 0 or
 * n > PE_CURSOR_MAX_ENTRIES; buf is then "" if cap > 0. PE_CURSOR_MAXLEN + 1 bytes always
 * suffice. The result always parses with pe_cursor_parse.
 */
size_t pe_cursor_format(const pe_cursor_entry_t *entries, size_t n, char *buf, size_t cap);

#endif

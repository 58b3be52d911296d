/*
 * Message IDs in the Redis Stream form "<ms>-<seq>" (both unsigned 64-bit decimals), and the
 * channel-name rule that every engine and transport shares. Pure: no allocation, no I/O.
 */
#ifndef PE_STREAM_ID_H
#define PE_STREAM_ID_H

#include <stddef.h>
#include <stdint.h>

/* Longest formatted ID: two 20-digit numbers and the dash. */
#define PE_ID_MAXLEN 41
/* Channel names: 1..200 characters of A-Z a-z 0-9 _ - . : @ (docs/protocol.md "Names and IDs"). */
#define PE_CHANNEL_MAXLEN 200

typedef struct st_pe_id_t {
    uint64_t ms;
    uint64_t seq;
} pe_id_t;

#define PE_ID_ZERO ((pe_id_t){0, 0})

/**
 * Parses exactly `len` bytes as "<ms>-<seq>": decimal digits only, no sign, no spaces, each part
 * 1..20 digits and within uint64 range. Returns 0 and fills *out, or -1 if invalid.
 */
int pe_id_parse(const char *s, size_t len, pe_id_t *out);

/**
 * Writes the ID as "<ms>-<seq>" into buf (at least PE_ID_MAXLEN + 1 bytes), NUL-terminated.
 * Returns the length without the NUL.
 */
size_t pe_id_format(pe_id_t id, char *buf);

/** Returns <0, 0, >0 as a is before, equal to, or after b. */
static inline int
pe_id_cmp(pe_id_t a, pe_id_t b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

/**
 * The ID a new entry gets when the newest one is `last` and the clock reads now_ms: the Redis
 * rule (the clock if it moved forward, else last.ms with seq + 1), so IDs strictly increase even
 * when the clock steps back. Returns -1 only if the ID space is exhausted (seq overflow at
 * UINT64_MAX ms), else 0.
 */
int pe_id_next(pe_id_t last, uint64_t now_ms, pe_id_t *out);

/**
 * Parses s[0..len) as digits of `base` (2..36; 0-9 then lower-case a-z) with a value no greater
 * than max. Returns 0 and fills *out, or -1 on an empty string, a character outside the base or
 * a value above max. Leading zeros pass: callers that need a canonical form check it.
 */
int pe_digits_parse(const char *s, size_t len, unsigned base, uint64_t max, uint64_t *out);

/** Writes v in `base` (2..36, lower-case) to buf, no NUL; returns the number of digits (1..64). */
size_t pe_digits_format(uint64_t v, unsigned base, char *buf);

/** Returns 1 if name[0..len) is a valid channel name, else 0. */
int pe_channel_is_valid(const char *name, size_t len);
/* The rule in words: the message of every bad_channel answer, compared by address as a pubsub
 * error (pubsub.h). */
extern const char pe_ps_err_bad_channel[];

#endif

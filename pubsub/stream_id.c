/*
 * Message IDs ("<ms>-<seq>") and channel names: the two identifiers that cross every boundary
 * (HTTP query, SSE id field, WebSocket ops, Redis commands), so both are parsed strictly here
 * and nowhere else.
 *
 * Parsing is stricter than Redis on purpose: Redis accepts "<ms>" alone and fills in the
 * sequence, but a cursor that a client echoes back must name one exact entry, so the
 * sequence is required. Leading zeros are accepted (they are still decimal digits and Redis
 * accepts them), but each part is limited to 20 digits so that an overlong input is rejected
 * before any arithmetic. strtoull() was rejected: it skips white space, accepts a sign and
 * reads past `len` on input that is not NUL-terminated.
 */
#include <string.h>
#include "stream_id.h"

/* UINT64_MAX has 20 decimal digits. */
#define MAX_DECIMAL_DIGITS 20

static const char digit_chars[] = "0123456789abcdefghijklmnopqrstuvwxyz";

int
pe_digits_parse(const char *s, size_t len, unsigned base, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0)
        return -1;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'z')
            d = c - 'a' + 10;
        else
            return -1;
        /* v * base + d <= max, without a division per digit (a parse of every ID in every
         * Redis reply: the division was 3.6% of a node's CPU publishing through Redis). */
        uint64_t next;
        if (d >= base || __builtin_mul_overflow(v, (uint64_t)base, &next) || __builtin_add_overflow(next, (uint64_t)d, &next) ||
            next > max)
            return -1;
        v = next;
    }
    *out = v;
    return 0;
}

size_t
pe_digits_format(uint64_t v, unsigned base, char *buf)
{
    char tmp[64];
    size_t n = 0;

    /* Base 10 (every ID, twice per publish) divides by a constant: a multiplication, not a
     * division instruction per digit (a division by a variable was 12% of a batch's profile). */
    if (base == 10) {
        do {
            tmp[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
    } else {
        do {
            tmp[n++] = digit_chars[v % base];
            v /= base;
        } while (v != 0);
    }
    for (size_t i = 0; i != n; ++i)
        buf[i] = tmp[n - 1 - i];
    return n;
}

/* A decimal part of an ID: 1..20 digits (leading zeros allowed), within uint64. */
static int
parse_u64(const char *s, size_t len, uint64_t *out)
{
    return len > MAX_DECIMAL_DIGITS ? -1 : pe_digits_parse(s, len, 10, UINT64_MAX, out);
}

int
pe_id_parse(const char *s, size_t len, pe_id_t *out)
{
    const char *dash = len != 0 ? memchr(s, '-', len) : NULL;
    pe_id_t id;

    if (dash == NULL)
        return -1;
    /* A second dash, or a sign on the sequence ("1--2"), fails the digit check in parse_u64. */
    if (parse_u64(s, (size_t)(dash - s), &id.ms) != 0 || parse_u64(dash + 1, len - (size_t)(dash - s) - 1, &id.seq) != 0)
        return -1;
    *out = id;
    return 0;
}

size_t
pe_id_format(pe_id_t id, char *buf)
{
    size_t n = pe_digits_format(id.ms, 10, buf);
    buf[n++] = '-';
    n += pe_digits_format(id.seq, 10, buf + n);
    buf[n] = '\0';
    return n;
}

int
pe_id_next(pe_id_t last, uint64_t now_ms, pe_id_t *out)
{
    if (now_ms > last.ms) {
        *out = (pe_id_t){now_ms, 0};
    } else if (last.seq != UINT64_MAX) {
        /* Same millisecond, or the clock stepped back: stay on last.ms so the order holds. */
        *out = (pe_id_t){last.ms, last.seq + 1};
    } else if (last.ms != UINT64_MAX) {
        /* 2^64 entries in one millisecond cannot happen in practice, but Redis moves on to the
         * next millisecond here (streamIncrID), and so do we. */
        *out = (pe_id_t){last.ms + 1, 0};
    } else {
        return -1;
    }
    return 0;
}

/* The one statement of the channel-name rule every way in answers with (docs/protocol.md
 * "Names and IDs"). */
const char pe_ps_err_bad_channel[] = "channel names are 1-200 characters of A-Z a-z 0-9 _ - . : @";

int
pe_channel_is_valid(const char *name, size_t len)
{
    if (len == 0 || len > PE_CHANNEL_MAXLEN)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
              c == ':' || c == '@'))
            return 0;
    }
    return 1;
}

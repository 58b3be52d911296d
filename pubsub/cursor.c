/*
 * The cursor codec (format in cursor.h and docs/protocol.md).
 *
 * Parsing is a single left-to-right pass over the bytes with no allocation and no copy: the
 * cursor arrives from untrusted peers on every transport, so the parser bounds the length first,
 * then the entry count, and checks each base-36 field against its range with overflow-safe
 * arithmetic. The canonical form has exactly one spelling per cursor (no leading zeros, lower
 * case only), which is what lets the multi form double as an SSE id that the browser echoes
 * back byte for byte; a decoder that accepted variants would make two different strings mean
 * the same position, so variants are errors.
 *
 * Errors are static strings that name the entry and the field ("cursor entry 3 has an invalid
 * sequence"), so a transport can put them straight into a 400 body or a WebSocket error op.
 * The entry number is baked into per-entry string tables built by the preprocessor below,
 * instead of being formatted at run time, to keep the parser free of buffers and printf.
 *
 * Rejected alternatives: a generic separator-splitting helper (it cannot tell "a__b" from
 * "a_b" without extra state, and the error has to name the entry anyway), and strtoull(..., 36)
 * (accepts upper case, signs, spaces and leading zeros, and needs a NUL terminator).
 */
#include <string.h>
#include "cursor.h"

/* Longest base-36 field: UINT64_MAX is "3w5e11264sgsf" (13 digits), UINT32_MAX "1z141z3" (7). */
#define B36_MAX_DIGITS 13
/* Longest multi-form entry with its trailing "_": 7 + 13 + 13 + 3. */
#define ENTRY_MAXLEN 36

/*
 * Per-entry error tables. Checklist: when PE_CURSOR_MAX_ENTRIES changes, extend ENTRY_NUMBERS
 * (the _Static_asserts below catch a mismatch).
 */
/* clang-format off */
#define ENTRY_NUMBERS(X) \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) \
    X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) \
    X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) \
    X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32) \
    X(33) X(34) X(35) X(36) X(37) X(38) X(39) X(40) \
    X(41) X(42) X(43) X(44) X(45) X(46) X(47) X(48) \
    X(49) X(50) X(51) X(52) X(53) X(54) X(55) X(56) \
    X(57) X(58) X(59) X(60) X(61) X(62) X(63) X(64)
/* clang-format on */

#define ERR_EMPTY(n) "cursor entry " #n " is empty",
#define ERR_FIELDS(n) "cursor entry " #n " is not <tag>.<ms>.<seq>",
#define ERR_TAG(n) "cursor entry " #n " has an invalid tag",
#define ERR_MS(n) "cursor entry " #n " has an invalid time",
#define ERR_SEQ(n) "cursor entry " #n " has an invalid sequence",
#define ERR_DUP(n) "cursor entry " #n " repeats the tag of an earlier entry",

static const char *const err_empty[] = {ENTRY_NUMBERS(ERR_EMPTY)};
static const char *const err_fields[] = {ENTRY_NUMBERS(ERR_FIELDS)};
static const char *const err_tag[] = {ENTRY_NUMBERS(ERR_TAG)};
static const char *const err_ms[] = {ENTRY_NUMBERS(ERR_MS)};
static const char *const err_seq[] = {ENTRY_NUMBERS(ERR_SEQ)};
static const char *const err_dup[] = {ENTRY_NUMBERS(ERR_DUP)};

#define NUM_OF(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(NUM_OF(err_empty) == PE_CURSOR_MAX_ENTRIES, "ENTRY_NUMBERS must list 1..PE_CURSOR_MAX_ENTRIES");
_Static_assert(NUM_OF(err_fields) == PE_CURSOR_MAX_ENTRIES, "ENTRY_NUMBERS must list 1..PE_CURSOR_MAX_ENTRIES");
_Static_assert(NUM_OF(err_tag) == PE_CURSOR_MAX_ENTRIES, "ENTRY_NUMBERS must list 1..PE_CURSOR_MAX_ENTRIES");
_Static_assert(NUM_OF(err_ms) == PE_CURSOR_MAX_ENTRIES, "ENTRY_NUMBERS must list 1..PE_CURSOR_MAX_ENTRIES");
_Static_assert(NUM_OF(err_seq) == PE_CURSOR_MAX_ENTRIES, "ENTRY_NUMBERS must list 1..PE_CURSOR_MAX_ENTRIES");
_Static_assert(NUM_OF(err_dup) == PE_CURSOR_MAX_ENTRIES, "ENTRY_NUMBERS must list 1..PE_CURSOR_MAX_ENTRIES");
/* The length bound must admit the longest cursor pe_cursor_format can produce (no final "_"). */
_Static_assert(PE_CURSOR_MAXLEN >= PE_CURSOR_MAX_ENTRIES * ENTRY_MAXLEN - 1, "PE_CURSOR_MAXLEN too small");

static const char err_too_long[] = "cursor is too long";
static const char err_too_many[] = "cursor has too many entries";
static const char err_not_id[] = "cursor is not 0, a message ID or a list of <tag>.<ms>.<seq> entries";

/*
 * Parses s[0..len) as canonical lower-case base 36 no greater than max: at least one digit, no
 * leading zero unless the value is 0. Returns 0 and fills *out, or -1.
 */
static int
parse_b36(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len > B36_MAX_DIGITS || (len > 1 && s[0] == '0'))
        return -1;
    return pe_digits_parse(s, len, 36, max, out);
}

/*
 * Parses one multi-form entry s[0..len) (without its "_") as entry number idx (0-based) into *e.
 * Returns NULL on success, else the error string.
 */
static const char *
parse_entry(const char *s, size_t len, size_t idx, pe_cursor_entry_t *e)
{
    const char *end = s + len, *dot1, *dot2;
    uint64_t tag;

    if (len == 0)
        return err_empty[idx];
    if ((dot1 = memchr(s, '.', len)) == NULL || (dot2 = memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1))) == NULL ||
        memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) != NULL)
        return err_fields[idx];
    if (parse_b36(s, (size_t)(dot1 - s), UINT32_MAX, &tag) != 0)
        return err_tag[idx];
    if (parse_b36(dot1 + 1, (size_t)(dot2 - dot1 - 1), UINT64_MAX, &e->pos.ms) != 0)
        return err_ms[idx];
    if (parse_b36(dot2 + 1, (size_t)(end - dot2 - 1), UINT64_MAX, &e->pos.seq) != 0)
        return err_seq[idx];
    e->tag = (uint32_t)tag;
    return NULL;
}

static const char *
parse_multi(const char *s, size_t len, pe_cursor_t *out)
{
    const char *p = s, *end = s + len, *err;
    size_t n = 0;

    for (;;) {
        const char *sep = memchr(p, '_', (size_t)(end - p));
        const char *entry_end = sep != NULL ? sep : end;
        if (n == PE_CURSOR_MAX_ENTRIES)
            return err_too_many;
        if ((err = parse_entry(p, (size_t)(entry_end - p), n, out->entries + n)) != NULL)
            return err;
        /* At most 64 entries, so the quadratic check costs less than hashing would. */
        for (size_t i = 0; i != n; ++i)
            if (out->entries[i].tag == out->entries[n].tag)
                return err_dup[n];
        ++n;
        if (sep == NULL)
            break;
        /* A trailing "_" leaves p == end: the next round reports an empty entry. */
        p = sep + 1;
    }
    out->kind = PE_CURSOR_MULTI;
    out->id = PE_ID_ZERO;
    out->num_entries = n;
    return NULL;
}

/*
 * 1 if an entry before entries[i] has its tag. Two channels of one subscription whose names
 * collide under FNV-1a cannot both be written (the parser refuses duplicate tags, since a lookup
 * could only ever find the first), so the formatter keeps the first and drops the others: the
 * colliding channel then resumes from the first one's position (docs/protocol.md, "Hash
 * collisions"). Quadratic, but over at most 64 entries.
 */
static int
has_earlier_tag(const pe_cursor_entry_t *entries, size_t i)
{
    for (size_t j = 0; j != i; ++j)
        if (entries[j].tag == entries[i].tag)
            return 1;
    return 0;
}

uint32_t
pe_cursor_tag(const char *name, size_t len)
{
    /* FNV-1a, 32-bit: offset basis and prime from the FNV reference. */
    uint32_t h = 2166136261u;

    for (size_t i = 0; i != len; ++i) {
        h ^= (unsigned char)name[i];
        h *= 16777619u;
    }
    return h;
}

int
pe_cursor_parse(const char *s, size_t len, pe_cursor_t *out, const char **err)
{
    const char *e = NULL;

    if (len > PE_CURSOR_MAXLEN) {
        e = err_too_long;
    } else if (len == 0) {
        *out = (pe_cursor_t){.kind = PE_CURSOR_NONE};
    } else if (memchr(s, '.', len) != NULL) {
        /* IDs and "0" never contain a dot, so a dot alone selects the multi form. */
        e = parse_multi(s, len, out);
    } else if (len == 1 && s[0] == '0') {
        *out = (pe_cursor_t){.kind = PE_CURSOR_OLDEST};
    } else {
        pe_id_t id;
        if (pe_id_parse(s, len, &id) == 0) {
            out->kind = PE_CURSOR_ID;
            out->id = id;
            out->num_entries = 0;
        } else {
            e = err_not_id;
        }
    }

    if (e != NULL) {
        if (err != NULL)
            *err = e;
        return -1;
    }
    return 0;
}

int
pe_cursor_position(const pe_cursor_t *c, const char *name, size_t len, pe_id_t *pos)
{
    switch (c->kind) {
    case PE_CURSOR_ID:
        *pos = c->id;
        return 1;
    case PE_CURSOR_MULTI: {
        uint32_t tag = pe_cursor_tag(name, len);
        for (size_t i = 0; i != c->num_entries; ++i) {
            if (c->entries[i].tag == tag) {
                *pos = c->entries[i].pos;
                return 1;
            }
        }
        return 0;
    }
    default:
        return 0;
    }
}

size_t
pe_cursor_format(const pe_cursor_entry_t *entries, size_t n, char *buf, size_t cap)
{
    char tmp[PE_ID_MAXLEN + 1 > ENTRY_MAXLEN ? PE_ID_MAXLEN + 1 : ENTRY_MAXLEN];
    size_t off = 0;

    /* Refuse what pe_cursor_parse would refuse, so that every cursor we hand out comes back. */
    if (n == 0 || n > PE_CURSOR_MAX_ENTRIES)
        goto Error;

    if (n == 1) {
        off = pe_id_format(entries[0].pos, tmp);
        if (off >= cap)
            goto Error;
        memcpy(buf, tmp, off + 1);
        return off;
    }

    for (size_t i = 0; i != n; ++i) {
        size_t l = 0;
        if (has_earlier_tag(entries, i))
            continue;
        if (off != 0)
            tmp[l++] = '_';
        l += pe_digits_format(entries[i].tag, 36, tmp + l);
        tmp[l++] = '.';
        l += pe_digits_format(entries[i].pos.ms, 36, tmp + l);
        tmp[l++] = '.';
        l += pe_digits_format(entries[i].pos.seq, 36, tmp + l);
        /* Keep one byte for the NUL. */
        if (l >= cap - off)
            goto Error;
        memcpy(buf + off, tmp, l);
        off += l;
    }
    buf[off] = '\0';
    return off;

Error:
    if (cap != 0)
        buf[0] = '\0';
    return 0;
}

/*
 * Unit tests for pubsub/cursor.c: the channel tag (FNV-1a reference vectors), every cursor kind,
 * position lookup per kind, base-36 boundaries (UINT32_MAX tags, UINT64_MAX positions, one
 * past each, leading zeros, upper case), every error path with its exact message, the entry and
 * length limits at and one past their bound, format into too-small buffers (each capacity from
 * 0 up, against a guard page so a write past cap faults), colliding tags in format, random
 * format/parse round trips, and
 * parsing every prefix and suffix of valid cursors from guarded buffers so an overread faults.
 *
 * Not covered here: which cursor a transport hands out after a delivery (edge tests), and what
 * the engines do with a position older than their retention (engine tests).
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tap.h"
#include "cursor.h"

static uint64_t rng_state = 0x2545f4914f6cdd1du;

static uint64_t
rng(void)
{
    return tap_rng(&rng_state);
}

/* Parses s[0..len) from a copy that ends at a guard page. */
static int
parse_guarded(const char *s, size_t len, pe_cursor_t *out, const char **err)
{
    char *p = tap_guard_copy(s, len);
    int ret = pe_cursor_parse(p, len, out, err);
    tap_guard_free(p, len);
    return ret;
}

/* Asserts that s is rejected with exactly the message want. */
static void
expect_error_len(const char *s, size_t len, const char *want)
{
    pe_cursor_t c;
    const char *err = NULL;
    int ret = parse_guarded(s, len, &c, &err);

    TAP_EQ_INT(ret, -1, "rejects \"%.*s\"", len > 60 ? 60 : (int)len, s);
    TAP_EQ_STR(err, want, "\"%.*s\": message", len > 60 ? 60 : (int)len, s);
}

static void
expect_error(const char *s, const char *want)
{
    expect_error_len(s, strlen(s), want);
}

/* The longest cursor: 64 entries with 7-digit tags and 13-digit positions. */
static size_t
make_max_cursor(pe_cursor_entry_t *entries, char *buf, size_t cap)
{
    for (size_t i = 0; i != PE_CURSOR_MAX_ENTRIES; ++i)
        entries[i] = (pe_cursor_entry_t){UINT32_MAX - (uint32_t)i, {UINT64_MAX - i, UINT64_MAX - 2 * i}};
    return pe_cursor_format(entries, PE_CURSOR_MAX_ENTRIES, buf, cap);
}

static void
test_tag(void)
{
    /* FNV-1a 32-bit reference values. */
    TAP_EQ_UINT(pe_cursor_tag("", 0), 0x811c9dc5u, "empty string is the offset basis");
    TAP_EQ_UINT(pe_cursor_tag("a", 1), 0xe40c292cu, "\"a\"");
    TAP_EQ_UINT(pe_cursor_tag("foobar", 6), 0xbf9cf968u, "\"foobar\"");
    TAP_OK(pe_cursor_tag("news", 4) != pe_cursor_tag("newt", 4), "neighbouring names differ");
    TAP_EQ_UINT(pe_cursor_tag("\xff\x80", 2), pe_cursor_tag("\xff\x80", 2), "high bytes are hashed as unsigned");
}

static void
test_kinds(void)
{
    pe_cursor_t c;
    const char *err = "untouched";

    memset(&c, 0xa5, sizeof(c));
    TAP_EQ_INT(pe_cursor_parse("", 0, &c, &err), 0, "empty string parses");
    TAP_EQ_INT(c.kind, PE_CURSOR_NONE, "empty string is NONE");
    TAP_EQ_STR(err, "untouched", "*err is left alone on success");

    TAP_EQ_INT(parse_guarded("0", 1, &c, NULL), 0, "\"0\" parses");
    TAP_EQ_INT(c.kind, PE_CURSOR_OLDEST, "\"0\" is OLDEST");

    TAP_EQ_INT(parse_guarded("1526919030474-55", 16, &c, NULL), 0, "an ID parses");
    TAP_EQ_INT(c.kind, PE_CURSOR_ID, "an ID is ID");
    TAP_OK(c.id.ms == 1526919030474u && c.id.seq == 55, "ID value");

    TAP_EQ_INT(parse_guarded("0-0", 3, &c, NULL), 0, "\"0-0\" parses");
    TAP_EQ_INT(c.kind, PE_CURSOR_ID, "\"0-0\" is an ID, not OLDEST");

    TAP_EQ_INT(parse_guarded("0.0.0", 5, &c, NULL), 0, "\"0.0.0\" parses");
    TAP_EQ_INT(c.kind, PE_CURSOR_MULTI, "\"0.0.0\" is MULTI with one entry");
    TAP_EQ_UINT(c.num_entries, 1, "one entry");

    TAP_EQ_INT(parse_guarded("z.10.0_1z141z3.3w5e11264sgsf.1", 30, &c, NULL), 0, "two entries parse");
    TAP_EQ_INT(c.kind, PE_CURSOR_MULTI, "two entries are MULTI");
    TAP_EQ_UINT(c.num_entries, 2, "two entries");
    TAP_EQ_UINT(c.entries[0].tag, 35, "z is 35");
    TAP_EQ_UINT(c.entries[0].pos.ms, 36, "10 is 36");
    TAP_EQ_UINT(c.entries[0].pos.seq, 0, "0 is 0");
    TAP_EQ_UINT(c.entries[1].tag, UINT32_MAX, "1z141z3 is UINT32_MAX");
    TAP_EQ_UINT(c.entries[1].pos.ms, UINT64_MAX, "3w5e11264sgsf is UINT64_MAX");
    TAP_EQ_UINT(c.entries[1].pos.seq, 1, "1 is 1");
}

static void
test_position(void)
{
    static const char *names[] = {"news", "sport", "weather"};
    pe_cursor_entry_t entries[2] = {{pe_cursor_tag("news", 4), {100, 1}}, {pe_cursor_tag("sport", 5), {200, 2}}};
    char buf[PE_CURSOR_MAXLEN + 1];
    size_t len = pe_cursor_format(entries, 2, buf, sizeof(buf));
    pe_cursor_t c;
    pe_id_t pos;

    TAP_OK(len != 0, "multi cursor formats: %s", buf);
    TAP_EQ_INT(parse_guarded(buf, len, &c, NULL), 0, "and parses");
    pos = (pe_id_t){9, 9};
    TAP_EQ_INT(pe_cursor_position(&c, names[0], 4, &pos), 1, "news has a position");
    TAP_OK(pos.ms == 100 && pos.seq == 1, "news is at 100-1");
    TAP_EQ_INT(pe_cursor_position(&c, names[1], 5, &pos), 1, "sport has a position");
    TAP_OK(pos.ms == 200 && pos.seq == 2, "sport is at 200-2");
    pos = (pe_id_t){9, 9};
    TAP_EQ_INT(pe_cursor_position(&c, names[2], 7, &pos), 0, "weather is not in the cursor");
    TAP_OK(pos.ms == 9 && pos.seq == 9, "absent channel leaves *pos alone");

    TAP_EQ_INT(parse_guarded("5-6", 3, &c, NULL), 0, "ID cursor");
    for (size_t i = 0; i != 3; ++i) {
        pos = PE_ID_ZERO;
        TAP_EQ_INT(pe_cursor_position(&c, names[i], strlen(names[i]), &pos), 1, "ID applies to %s", names[i]);
        TAP_OK(pos.ms == 5 && pos.seq == 6, "%s is at 5-6", names[i]);
    }

    TAP_EQ_INT(parse_guarded("0", 1, &c, NULL), 0, "OLDEST cursor");
    TAP_EQ_INT(pe_cursor_position(&c, "news", 4, &pos), 0, "OLDEST names no position");
    TAP_EQ_INT(parse_guarded("", 0, &c, NULL), 0, "NONE cursor");
    TAP_EQ_INT(pe_cursor_position(&c, "news", 4, &pos), 0, "NONE names no position");

    /* A one-entry MULTI cursor applies to its own channel only, unlike an ID. */
    len = (size_t)snprintf(buf, sizeof(buf), "%s", "0.1.2");
    TAP_EQ_INT(parse_guarded(buf, len, &c, NULL), 0, "one-entry MULTI with tag 0");
    TAP_EQ_INT(pe_cursor_position(&c, "news", 4, &pos), 0, "does not apply to news");
}

static void
test_base36(void)
{
    pe_cursor_t c;

    TAP_EQ_INT(parse_guarded("1z141z3.0.0", 11, &c, NULL), 0, "tag UINT32_MAX");
    expect_error("1z141z4.0.0", "cursor entry 1 has an invalid tag");
    expect_error("zzzzzzz.0.0", "cursor entry 1 has an invalid tag");
    expect_error("10000000.0.0", "cursor entry 1 has an invalid tag");
    TAP_EQ_INT(parse_guarded("0.3w5e11264sgsf.3w5e11264sgsf", 29, &c, NULL), 0, "ms and seq UINT64_MAX");
    expect_error("0.3w5e11264sgsg.0", "cursor entry 1 has an invalid time");
    expect_error("0.0.3w5e11264sgsg", "cursor entry 1 has an invalid sequence");
    expect_error("0.zzzzzzzzzzzzz.0", "cursor entry 1 has an invalid time");
    expect_error("0.10000000000000.0", "cursor entry 1 has an invalid time");
    expect_error("0.0.10000000000000", "cursor entry 1 has an invalid sequence");
    expect_error("0.0.100000000000000000000000000000000000000", "cursor entry 1 has an invalid sequence");
    expect_error("00.0.0", "cursor entry 1 has an invalid tag");
    expect_error("01.0.0", "cursor entry 1 has an invalid tag");
    expect_error("0.00.0", "cursor entry 1 has an invalid time");
    expect_error("0.0.01", "cursor entry 1 has an invalid sequence");
    expect_error("A.0.0", "cursor entry 1 has an invalid tag");
    expect_error("0.Z.0", "cursor entry 1 has an invalid time");
    expect_error("0.0.aB", "cursor entry 1 has an invalid sequence");
    /* The bytes around the digit ranges: '/' ':' '`' '{' and '@' '[' for the upper-case range. */
    expect_error("/.0.0", "cursor entry 1 has an invalid tag");
    expect_error(":.0.0", "cursor entry 1 has an invalid tag");
    expect_error("`.0.0", "cursor entry 1 has an invalid tag");
    expect_error("{.0.0", "cursor entry 1 has an invalid tag");
    expect_error("-1.0.0", "cursor entry 1 has an invalid tag");
    expect_error("+1.0.0", "cursor entry 1 has an invalid tag");
    expect_error(" 1.0.0", "cursor entry 1 has an invalid tag");
    expect_error("1.0.0 ", "cursor entry 1 has an invalid sequence");
    expect_error_len("1.0\0.0", 6, "cursor entry 1 has an invalid time");

    /* format spells the same values the parser accepts. */
    {
        pe_cursor_entry_t e[3] = {{0, {0, 0}}, {35, {36, 1295}}, {UINT32_MAX, {UINT64_MAX, 1296}}};
        char buf[128];
        size_t len = pe_cursor_format(e, 3, buf, sizeof(buf));
        TAP_EQ_STR(buf, "0.0.0_z.10.zz_1z141z3.3w5e11264sgsf.100", "format spells canonical base 36");
        TAP_EQ_UINT(len, strlen(buf), "and returns its length");
    }
}

static void
test_errors(void)
{
    /* Not a multi form (no dot): "0" or an ID, else this message. */
    static const char not_id[] = "cursor is not 0, a message ID or a list of <tag>.<ms>.<seq> entries";
    static const char *not_ids[] = {"00", "1", "-", "0-", "-0", "1-2-3", " 0", "0 ", "abc", "_", "__", "1-2_3-4", "+0"};
    for (size_t i = 0; i != sizeof(not_ids) / sizeof(not_ids[0]); ++i)
        expect_error(not_ids[i], not_id);
    expect_error_len("0\0", 2, not_id);

    /* Separators in the wrong place. */
    expect_error("_0.0.0", "cursor entry 1 is empty");
    expect_error("0.0.0_", "cursor entry 2 is empty");
    expect_error("0.0.0__1.0.0", "cursor entry 2 is empty");
    expect_error("0.0.0_1.0.0_", "cursor entry 3 is empty");
    expect_error("_", not_id);
    expect_error(".", "cursor entry 1 is not <tag>.<ms>.<seq>");
    expect_error("..", "cursor entry 1 has an invalid tag");
    expect_error("...", "cursor entry 1 is not <tag>.<ms>.<seq>");
    expect_error("1.2", "cursor entry 1 is not <tag>.<ms>.<seq>");
    expect_error("1.2.3.4", "cursor entry 1 is not <tag>.<ms>.<seq>");
    expect_error("1.2.3_4.5", "cursor entry 2 is not <tag>.<ms>.<seq>");
    expect_error("1.2.3_4", "cursor entry 2 is not <tag>.<ms>.<seq>");
    expect_error("1.2.3_4-5", "cursor entry 2 is not <tag>.<ms>.<seq>");
    expect_error(".1.2", "cursor entry 1 has an invalid tag");
    expect_error("1..2", "cursor entry 1 has an invalid time");
    expect_error("1.2.", "cursor entry 1 has an invalid sequence");
    expect_error("1.2.3_.4.5", "cursor entry 2 has an invalid tag");
    expect_error("1-2.3.4", "cursor entry 1 has an invalid tag");

    /* Duplicates. */
    expect_error("1.0.0_1.0.0", "cursor entry 2 repeats the tag of an earlier entry");
    expect_error("1.0.0_2.0.0_1.5.5", "cursor entry 3 repeats the tag of an earlier entry");

    /* A NULL err is allowed. */
    {
        pe_cursor_t c;
        TAP_EQ_INT(pe_cursor_parse("1.2", 3, &c, NULL), -1, "NULL err on failure");
    }
}

static void
test_limits(void)
{
    pe_cursor_entry_t entries[PE_CURSOR_MAX_ENTRIES];
    char buf[PE_CURSOR_MAXLEN + 16];
    size_t len = make_max_cursor(entries, buf, PE_CURSOR_MAXLEN + 1);
    pe_cursor_t c;
    const char *err = NULL;
    int same = 1;

    TAP_EQ_UINT(len, PE_CURSOR_MAX_ENTRIES * 36 - 1, "the longest cursor is 64 * 36 - 1 bytes");
    TAP_OK(len <= PE_CURSOR_MAXLEN, "and fits PE_CURSOR_MAXLEN");
    TAP_EQ_INT(parse_guarded(buf, len, &c, &err), 0, "the longest cursor parses");
    TAP_EQ_UINT(c.num_entries, PE_CURSOR_MAX_ENTRIES, "with PE_CURSOR_MAX_ENTRIES entries");
    for (size_t i = 0; i != PE_CURSOR_MAX_ENTRIES; ++i)
        if (c.entries[i].tag != entries[i].tag || pe_id_cmp(c.entries[i].pos, entries[i].pos) != 0)
            same = 0;
    TAP_OK(same, "every entry comes back");

    /* One byte more reaches PE_CURSOR_MAXLEN: it is parsed (and fails on the 14-digit sequence). */
    buf[len] = '0';
    expect_error_len(buf, len + 1, "cursor entry 64 has an invalid sequence");
    /* Two bytes more is over the limit, whatever the content. */
    buf[len + 1] = '0';
    expect_error_len(buf, len + 2, "cursor is too long");
    memset(buf, '0', PE_CURSOR_MAXLEN + 1);
    expect_error_len(buf, PE_CURSOR_MAXLEN + 1, "cursor is too long");

    /* Entry count: 64 pass, 65 do not, and entry 64's errors carry its number. */
    {
        size_t off = 0;
        for (int i = 0; i != PE_CURSOR_MAX_ENTRIES; ++i)
            off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%x.0.0", i == 0 ? "" : "_", i);
        TAP_EQ_INT(parse_guarded(buf, off, &c, NULL), 0, "64 short entries parse");
        TAP_EQ_UINT(c.num_entries, 64, "64 entries");
        expect_error_len(buf, off - 1, "cursor entry 64 has an invalid sequence");
        snprintf(buf + off, sizeof(buf) - off, "_zz.0.0");
        expect_error_len(buf, off + 7, "cursor has too many entries");
        snprintf(buf + off, sizeof(buf) - off, "_");
        expect_error_len(buf, off + 1, "cursor has too many entries");
        snprintf(buf + off - 7, sizeof(buf) - off + 7, "_0.0.0");
        expect_error(buf, "cursor entry 64 repeats the tag of an earlier entry");
    }
}

static void
test_format_small(void)
{
    pe_cursor_entry_t entries[3] = {{1, {2, 3}}, {40, {1700000000000u, 7}}, {UINT32_MAX, {UINT64_MAX, UINT64_MAX}}};
    char full[PE_CURSOR_MAXLEN + 1];
    size_t n_ok[] = {1, 3};

    for (size_t k = 0; k != 2; ++k) {
        size_t n = n_ok[k], len = pe_cursor_format(entries, n, full, sizeof(full)), bad = 0;
        TAP_OK(len != 0, "%zu entries format: %s", n, full);
        for (size_t cap = 0; cap <= len + 1; ++cap) {
            /* The buffer ends at a guard page: writing one byte past cap faults. */
            char *b = tap_guard_copy(full, cap);
            size_t got = pe_cursor_format(entries, n, b, cap);
            size_t want = cap > len ? len : 0;
            if (got != want || (got != 0 && memcmp(b, full, len + 1) != 0) || (got == 0 && cap != 0 && b[0] != '\0'))
                ++bad;
            tap_guard_free(b, cap);
        }
        TAP_EQ_UINT(bad, 0, "%zu entries: every capacity below len + 1 gives 0 and \"\", len + 1 gives the cursor", n);
    }
    TAP_EQ_STR(full, "1.2.3_14.loyw3v28.7_1z141z3.3w5e11264sgsf.3w5e11264sgsf", "three entries spelled out");

    {
        char buf[64] = "x";
        TAP_EQ_UINT(pe_cursor_format(entries, 1, buf, sizeof(buf)), 3, "one entry is the plain ID");
        TAP_EQ_STR(buf, "2-3", "one entry: \"<ms>-<seq>\", no tag");
        TAP_EQ_UINT(pe_cursor_format(entries + 2, 1, buf, sizeof(buf)), PE_ID_MAXLEN, "one entry at UINT64_MAX");
    }

    /* Counts parse would refuse are refused. */
    {
        pe_cursor_entry_t many[PE_CURSOR_MAX_ENTRIES + 1];
        char buf[PE_CURSOR_MAXLEN * 2] = "x";
        TAP_EQ_UINT(pe_cursor_format(many, 0, buf, sizeof(buf)), 0, "no entries");
        TAP_EQ_STR(buf, "", "no entries: empty string");
        for (size_t i = 0; i != PE_CURSOR_MAX_ENTRIES + 1; ++i)
            many[i] = (pe_cursor_entry_t){(uint32_t)i, {0, 0}};
        TAP_EQ_UINT(pe_cursor_format(many, PE_CURSOR_MAX_ENTRIES + 1, buf, sizeof(buf)), 0, "PE_CURSOR_MAX_ENTRIES + 1 entries");
        TAP_OK(pe_cursor_format(many, PE_CURSOR_MAX_ENTRIES, buf, sizeof(buf)) != 0, "PE_CURSOR_MAX_ENTRIES entries");
    }
}

/* Channels whose tags collide: the first entry is written, later ones are left out. */
static void
test_collisions(void)
{
    pe_cursor_entry_t dup[4] = {{1, {10, 0}}, {2, {20, 0}}, {1, {30, 0}}, {2, {40, 0}}};
    char buf[PE_CURSOR_MAXLEN + 1];
    pe_cursor_t c;
    size_t len;

    len = pe_cursor_format(dup, 4, buf, sizeof(buf));
    TAP_EQ_STR(buf, "1.a.0_2.k.0", "later entries with a seen tag are left out");
    TAP_EQ_INT(parse_guarded(buf, len, &c, NULL), 0, "and the result parses");
    TAP_EQ_UINT(c.num_entries, 2, "with the first two entries");

    len = pe_cursor_format(dup, 3, buf, 12);
    TAP_EQ_UINT(len, 11, "capacity counts only what is written");

    len = pe_cursor_format((pe_cursor_entry_t[]){{7, {1, 2}}, {7, {3, 4}}}, 2, buf, sizeof(buf));
    TAP_EQ_STR(buf, "7.1.2", "two entries with one tag keep the multi form");
    TAP_EQ_INT(parse_guarded(buf, len, &c, NULL), 0, "which parses");
    TAP_EQ_INT(c.kind, PE_CURSOR_MULTI, "as MULTI (not an ID applied to every channel)");
    TAP_EQ_UINT(c.num_entries, 1, "with one entry");
}

static void
test_round_trip(void)
{
    int bad = 0;

    for (int iter = 0; iter != 20000; ++iter) {
        pe_cursor_entry_t e[PE_CURSOR_MAX_ENTRIES];
        size_t n = 1 + rng() % PE_CURSOR_MAX_ENTRIES;
        char buf[PE_CURSOR_MAXLEN + 1], again[PE_CURSOR_MAXLEN + 1];
        pe_cursor_t c;
        size_t len;

        for (size_t i = 0; i != n; ++i) {
            uint64_t r = rng();
            int unique;
            do {
                /* Shifted values exercise every digit count, including 0. */
                e[i].tag = (uint32_t)(rng() >> (32 + rng() % 32));
                unique = 1;
                for (size_t j = 0; j != i; ++j)
                    unique &= e[j].tag != e[i].tag;
            } while (!unique);
            e[i].pos = (pe_id_t){rng() >> ((r >> 8) & 63), rng() >> ((r >> 16) & 63)};
        }
        len = pe_cursor_format(e, n, buf, sizeof(buf));
        if (len == 0 || parse_guarded(buf, len, &c, NULL) != 0) {
            ++bad;
            continue;
        }
        if (n == 1) {
            bad += c.kind != PE_CURSOR_ID || pe_id_cmp(c.id, e[0].pos) != 0;
            continue;
        }
        bad += c.kind != PE_CURSOR_MULTI || c.num_entries != n;
        for (size_t i = 0; i != n && i != c.num_entries; ++i)
            bad += c.entries[i].tag != e[i].tag || pe_id_cmp(c.entries[i].pos, e[i].pos) != 0;
        /* The canonical form is unique: formatting the parsed cursor gives the same bytes. */
        bad += pe_cursor_format(c.entries, c.num_entries, again, sizeof(again)) != len || memcmp(again, buf, len) != 0;
    }
    TAP_EQ_INT(bad, 0, "20000 random cursors of 1..64 entries survive format then parse");
}

/* Every prefix and suffix of a valid cursor, each from a guarded buffer: no overread, and any
 * failure carries a message. */
static void
check_slices(const char *s, size_t len)
{
    int bad = 0, ok = 0;

    for (size_t i = 0; i <= len; ++i) {
        const char *starts[2] = {s, s + len - i};
        for (int k = 0; k != 2; ++k) {
            pe_cursor_t c;
            const char *err = NULL;
            if (parse_guarded(starts[k], i, &c, &err) == 0) {
                ++ok;
                bad += c.kind == PE_CURSOR_MULTI && (c.num_entries == 0 || c.num_entries > PE_CURSOR_MAX_ENTRIES);
            } else {
                bad += err == NULL || strncmp(err, "cursor ", 7) != 0;
            }
        }
    }
    TAP_EQ_INT(bad, 0, "%zu prefixes and suffixes of a %zu-byte cursor: %d parse, all others fail with a message", 2 * (len + 1),
               len, ok);
}

static void
test_slices(void)
{
    pe_cursor_entry_t entries[PE_CURSOR_MAX_ENTRIES];
    char buf[PE_CURSOR_MAXLEN + 1];
    size_t len;

    check_slices("1526919030474-55", 16);
    check_slices("a.b.c_10.1z.0_zz.3w5e11264sgsf.1", 32);
    len = make_max_cursor(entries, buf, sizeof(buf));
    check_slices(buf, len);
}

static void
test_hostile(void)
{
    int bad = 0;

    /* Every one- and two-byte string. */
    for (int a = 0; a != 256; ++a) {
        for (int b = -1; b != 256; ++b) {
            char s[2] = {(char)a, (char)b};
            size_t len = b < 0 ? 1 : 2;
            pe_cursor_t c;
            const char *err = NULL;
            int ret = parse_guarded(s, len, &c, &err);
            int want_ok = len == 1 && a == '0';
            bad += (ret == 0) != want_ok || (ret != 0 && err == NULL);
        }
    }
    TAP_EQ_INT(bad, 0, "of all 1- and 2-byte strings only \"0\" parses");

    /* Random strings over the cursor alphabet. */
    {
        static const char alphabet[] = "0123456789az._-AZ\0";
        int parsed = 0;
        bad = 0;
        for (int iter = 0; iter != 100000; ++iter) {
            char s[64];
            size_t len = rng() % sizeof(s);
            pe_cursor_t c;
            const char *err = NULL;
            for (size_t i = 0; i != len; ++i)
                s[i] = alphabet[rng() % (sizeof(alphabet) - 1)];
            if (parse_guarded(s, len, &c, &err) == 0)
                ++parsed;
            else
                bad += err == NULL;
        }
        TAP_EQ_INT(bad, 0, "100000 random strings: every failure has a message (%d parsed)", parsed);
    }
}

int
main(void)
{
    tap_subtest("tag", test_tag);
    tap_subtest("kinds", test_kinds);
    tap_subtest("position", test_position);
    tap_subtest("base36", test_base36);
    tap_subtest("errors", test_errors);
    tap_subtest("limits", test_limits);
    tap_subtest("format into small buffers", test_format_small);
    tap_subtest("tag collisions", test_collisions);
    tap_subtest("round trip", test_round_trip);
    tap_subtest("slices", test_slices);
    tap_subtest("hostile", test_hostile);
    return tap_done();
}

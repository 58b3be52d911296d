/*
 * Unit tests for pubsub/stream_id.c: ID parsing (every rejection rule, 20/21-digit and
 * UINT64_MAX boundaries, inputs placed against a guard page so an overread faults), formatting
 * (longest ID into an exact-size buffer), parse/format round trips, pe_id_cmp, pe_id_next (clock
 * forward, same millisecond, clock backwards, sequence and ID-space overflow) and the channel
 * name rule for every byte value.
 *
 * Not covered here: how engines use pe_id_next under concurrency (engine tests), and the
 * cursor forms built on top of IDs (test_cursor.c).
 */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include "tap.h"
#include "stream_id.h"

/* Parses s[0..len) from a copy that ends at a guard page. */
static int
parse_guarded(const char *s, size_t len, pe_id_t *out)
{
    char *p = tap_guard_copy(s, len);
    int ret = pe_id_parse(p, len, out);
    tap_guard_free(p, len);
    return ret;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t
rng(void)
{
    return tap_rng(&rng_state);
}

static void
test_parse_valid(void)
{
    static const struct {
        const char *s;
        uint64_t ms, seq;
    } cases[] = {
        {"0-0", 0, 0},
        {"0-1", 0, 1},
        {"1-2", 1, 2},
        {"1526919030474-55", 1526919030474u, 55},
        {"18446744073709551615-0", UINT64_MAX, 0},
        {"0-18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551615-18446744073709551615", UINT64_MAX, UINT64_MAX},
        {"18446744073709551614-18446744073709551614", UINT64_MAX - 1, UINT64_MAX - 1},
        {"00000000000000000001-00000000000000000002", 1, 2}, /* 20 digits with leading zeros */
        {"007-010", 7, 10},
        {"9999999999999999999-9", 9999999999999999999u, 9}, /* 19 nines fit */
    };

    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        pe_id_t id = {12345, 67890};
        int ret = parse_guarded(cases[i].s, strlen(cases[i].s), &id);
        TAP_EQ_INT(ret, 0, "\"%s\" parses", cases[i].s);
        TAP_EQ_UINT(id.ms, cases[i].ms, "\"%s\" ms", cases[i].s);
        TAP_EQ_UINT(id.seq, cases[i].seq, "\"%s\" seq", cases[i].s);
    }
}

static void
test_parse_invalid(void)
{
    static const struct {
        const char *s;
        size_t len; /* 0: strlen */
        const char *why;
    } cases[] = {
        {"", 0, "empty"},
        {"-", 0, "dash alone"},
        {"1", 0, "ms alone"},
        {"1526919030474", 0, "ms alone (realistic)"},
        {"1-", 0, "empty seq"},
        {"-1", 0, "empty ms"},
        {"+1-2", 0, "plus sign on ms"},
        {"1-+2", 0, "plus sign on seq"},
        {"-1-2", 0, "minus sign on ms"},
        {"1--2", 0, "minus sign on seq"},
        {"1-2-3", 0, "three parts"},
        {" 1-2", 0, "leading space"},
        {"1-2 ", 0, "trailing space"},
        {"1 -2", 0, "space before dash"},
        {"1- 2", 0, "space after dash"},
        {"\t1-2", 0, "leading tab"},
        {"1-2\n", 0, "trailing newline"},
        {"a-1", 0, "letter in ms"},
        {"1-a", 0, "letter in seq"},
        {"0x1-2", 0, "hex prefix"},
        {"1e3-2", 0, "exponent"},
        {"1.0-2", 0, "decimal point"},
        {"1_2", 0, "underscore instead of dash"},
        {"1:2", 0, "':' (one past '9')"},
        {"1/2", 0, "'/' (one before '0')"},
        {"\xd9\xa1-2", 0, "non-ASCII digit"},
        {"1\0-2", 4, "NUL in ms"},
        {"1-2\0", 4, "trailing NUL counted in len"},
        {"18446744073709551616-0", 0, "ms is UINT64_MAX + 1"},
        {"0-18446744073709551616", 0, "seq is UINT64_MAX + 1"},
        {"99999999999999999999-0", 0, "20 nines overflow"},
        {"000000000000000000001-0", 0, "21 digits in ms, even with a small value"},
        {"0-000000000000000000001", 0, "21 digits in seq"},
        {"184467440737095516150-0", 0, "21 digits overflow"},
        {"-", 0, "lone dash"},
    };

    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        size_t len = cases[i].len != 0 ? cases[i].len : strlen(cases[i].s);
        pe_id_t id = {12345, 67890};
        int ret = parse_guarded(cases[i].s, len, &id);
        TAP_EQ_INT(ret, -1, "rejects %s", cases[i].why);
        TAP_OK(id.ms == 12345 && id.seq == 67890, "%s: *out untouched", cases[i].why);
    }
}

/* The parser reads exactly len bytes: a longer valid string truncated must parse as the prefix. */
static void
test_parse_len(void)
{
    pe_id_t id;

    TAP_EQ_INT(pe_id_parse("1-234", 3, &id), 0, "prefix \"1-2\" of \"1-234\" parses");
    TAP_EQ_UINT(id.seq, 2, "and reads only len bytes");
    TAP_EQ_INT(pe_id_parse("12-3", 2, &id), -1, "prefix \"12\" has no dash");
    TAP_EQ_INT(pe_id_parse(NULL, 0, &id), -1, "NULL with len 0 is empty");

    /* Every prefix of the longest ID: only the full string is valid. */
    {
        const char *full = "18446744073709551615-18446744073709551615";
        size_t full_len = strlen(full);
        int bad = 0;
        for (size_t len = 0; len < full_len; ++len) {
            int expect = len > 21 ? 0 : -1; /* "<20 digits>-<k digits>" with k >= 1 is valid */
            if (parse_guarded(full, len, &id) != expect)
                ++bad;
        }
        TAP_EQ_INT(bad, 0, "every prefix of the longest ID parses iff it has a sequence digit");
    }
}

static void
test_format(void)
{
    static const struct {
        uint64_t ms, seq;
        const char *s;
    } cases[] = {
        {0, 0, "0-0"},
        {1, 2, "1-2"},
        {10, 100, "10-100"},
        {1526919030474u, 55, "1526919030474-55"},
        {UINT64_MAX, UINT64_MAX, "18446744073709551615-18446744073709551615"},
    };

    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char buf[PE_ID_MAXLEN + 1];
        size_t len = pe_id_format((pe_id_t){cases[i].ms, cases[i].seq}, buf);
        TAP_EQ_MEM(buf, len, cases[i].s, strlen(cases[i].s), "formats %s", cases[i].s);
        TAP_EQ_INT(buf[len], '\0', "%s is NUL-terminated", cases[i].s);
    }

    /* The longest ID fills PE_ID_MAXLEN + 1 bytes exactly; one more would hit the guard page. */
    {
        char zero[PE_ID_MAXLEN + 1] = {0};
        char *buf = tap_guard_copy(zero, sizeof(zero));
        size_t len = pe_id_format((pe_id_t){UINT64_MAX, UINT64_MAX}, buf);
        TAP_EQ_UINT(len, PE_ID_MAXLEN, "longest ID is PE_ID_MAXLEN bytes");
        TAP_EQ_INT(buf[PE_ID_MAXLEN], '\0', "and its NUL is the last byte of the buffer");
        tap_guard_free(buf, sizeof(zero));
    }
}

static void
test_round_trip(void)
{
    int bad = 0;

    for (int i = 0; i != 100000; ++i) {
        /* Mix full-range values with small ones and powers of ten, where digit counts change. */
        uint64_t r = rng();
        pe_id_t id = {rng() >> (r & 63), rng() >> ((r >> 6) & 63)}, back = {1, 1};
        char buf[PE_ID_MAXLEN + 1];
        size_t len = pe_id_format(id, buf);
        if (len != strlen(buf) || pe_id_parse(buf, len, &back) != 0 || pe_id_cmp(id, back) != 0) {
            if (bad++ == 0)
                tap_note("first mismatch: %s", buf);
        }
    }
    TAP_EQ_INT(bad, 0, "100000 random IDs survive format then parse");

    bad = 0;
    for (uint64_t p = 1, i = 0; i != 20; ++i, p *= 10) {
        uint64_t vals[] = {p - 1, p, p + 1};
        for (size_t j = 0; j != 3; ++j) {
            pe_id_t id = {vals[j], vals[j]}, back;
            char buf[PE_ID_MAXLEN + 1];
            size_t len = pe_id_format(id, buf);
            if (pe_id_parse(buf, len, &back) != 0 || pe_id_cmp(id, back) != 0)
                ++bad;
        }
    }
    TAP_EQ_INT(bad, 0, "powers of ten and their neighbours survive format then parse");
}

static void
test_cmp(void)
{
    TAP_EQ_INT(pe_id_cmp((pe_id_t){1, 2}, (pe_id_t){1, 2}), 0, "equal");
    TAP_OK(pe_id_cmp((pe_id_t){1, 2}, (pe_id_t){1, 3}) < 0, "seq decides within a millisecond");
    TAP_OK(pe_id_cmp((pe_id_t){2, 0}, (pe_id_t){1, UINT64_MAX}) > 0, "ms decides first");
    TAP_OK(pe_id_cmp(PE_ID_ZERO, (pe_id_t){0, 1}) < 0, "zero is the smallest");
    TAP_OK(pe_id_cmp((pe_id_t){UINT64_MAX, UINT64_MAX}, (pe_id_t){UINT64_MAX, UINT64_MAX - 1}) > 0, "at the top of the range");
}

static void
test_next(void)
{
    pe_id_t out = {7, 7};

    TAP_EQ_INT(pe_id_next((pe_id_t){100, 5}, 200, &out), 0, "clock forward");
    TAP_OK(out.ms == 200 && out.seq == 0, "clock forward: now-0 (got %" PRIu64 "-%" PRIu64 ")", out.ms, out.seq);

    TAP_EQ_INT(pe_id_next((pe_id_t){100, 5}, 100, &out), 0, "same millisecond");
    TAP_OK(out.ms == 100 && out.seq == 6, "same millisecond: seq + 1 (got %" PRIu64 "-%" PRIu64 ")", out.ms, out.seq);

    TAP_EQ_INT(pe_id_next((pe_id_t){100, 5}, 50, &out), 0, "clock backwards");
    TAP_OK(out.ms == 100 && out.seq == 6, "clock backwards: stays on last ms (got %" PRIu64 "-%" PRIu64 ")", out.ms, out.seq);

    TAP_EQ_INT(pe_id_next(PE_ID_ZERO, 0, &out), 0, "from zero at time zero");
    TAP_OK(out.ms == 0 && out.seq == 1, "from zero at time zero: 0-1, never 0-0");

    TAP_EQ_INT(pe_id_next((pe_id_t){100, UINT64_MAX}, 100, &out), 0, "seq overflow");
    TAP_OK(out.ms == 101 && out.seq == 0, "seq overflow moves to the next millisecond");

    TAP_EQ_INT(pe_id_next((pe_id_t){100, UINT64_MAX}, 5, &out), 0, "seq overflow, clock behind");
    TAP_OK(out.ms == 101 && out.seq == 0, "seq overflow, clock behind: next millisecond");

    TAP_EQ_INT(pe_id_next((pe_id_t){5, 9}, UINT64_MAX, &out), 0, "clock at UINT64_MAX");
    TAP_OK(out.ms == UINT64_MAX && out.seq == 0, "clock at UINT64_MAX: UINT64_MAX-0");

    TAP_EQ_INT(pe_id_next((pe_id_t){UINT64_MAX, UINT64_MAX - 1}, 0, &out), 0, "last ID before exhaustion");
    TAP_OK(out.ms == UINT64_MAX && out.seq == UINT64_MAX, "last ID is UINT64_MAX-UINT64_MAX");

    out = (pe_id_t){7, 7};
    TAP_EQ_INT(pe_id_next((pe_id_t){UINT64_MAX, UINT64_MAX}, UINT64_MAX, &out), -1, "ID space exhausted");
    TAP_OK(out.ms == 7 && out.seq == 7, "exhausted: *out untouched");

    /* A jittery clock (steps back and forth) must still give strictly increasing IDs. */
    {
        pe_id_t last = PE_ID_ZERO;
        uint64_t clock = 1000;
        int bad = 0;
        for (int i = 0; i != 100000; ++i) {
            pe_id_t next;
            clock += (rng() % 7) - 3 + (clock < 3 ? 3 : 0);
            if (pe_id_next(last, clock, &next) != 0 || pe_id_cmp(next, last) <= 0 || (clock > last.ms && next.ms != clock))
                ++bad;
            last = next;
        }
        TAP_EQ_INT(bad, 0, "100000 IDs from a jittery clock strictly increase");
    }
}

static int
channel_byte_ok(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
           c == ':' || c == '@';
}

static void
test_channel(void)
{
    char name[PE_CHANNEL_MAXLEN + 2];
    int bad = 0;

    TAP_EQ_INT(pe_channel_is_valid("news", 4), 1, "news");
    TAP_EQ_INT(pe_channel_is_valid("a", 1), 1, "one character");
    TAP_EQ_INT(pe_channel_is_valid("Org_1-a.b:c@d", 13), 1, "every punctuation class");
    TAP_EQ_INT(pe_channel_is_valid("", 0), 0, "empty");
    TAP_EQ_INT(pe_channel_is_valid(NULL, 0), 0, "NULL, empty");
    TAP_EQ_INT(pe_channel_is_valid("news feed", 9), 0, "space");
    TAP_EQ_INT(pe_channel_is_valid("news/feed", 9), 0, "slash");
    TAP_EQ_INT(pe_channel_is_valid("news\0x", 6), 0, "embedded NUL");
    TAP_EQ_INT(pe_channel_is_valid("caf\xc3\xa9", 5), 0, "non-ASCII");

    memset(name, 'x', sizeof(name));
    {
        char *p = tap_guard_copy(name, PE_CHANNEL_MAXLEN);
        TAP_EQ_INT(pe_channel_is_valid(p, PE_CHANNEL_MAXLEN), 1, "PE_CHANNEL_MAXLEN characters");
        tap_guard_free(p, PE_CHANNEL_MAXLEN);
    }
    TAP_EQ_INT(pe_channel_is_valid(name, PE_CHANNEL_MAXLEN + 1), 0, "PE_CHANNEL_MAXLEN + 1 characters");

    for (int c = 0; c != 256; ++c) {
        char one[3] = {'a', (char)c, 'b'};
        if (pe_channel_is_valid(one, 3) != channel_byte_ok(c)) {
            tap_note("byte 0x%02x misclassified", c);
            ++bad;
        }
    }
    TAP_EQ_INT(bad, 0, "all 256 byte values classified by the contract's rule");
}

/* The radix helpers cursor.c shares (base 36) with the ID parser (base 10). */
static void
test_digits(void)
{
    uint64_t v = 1;
    char buf[64];

    TAP_EQ_INT(pe_digits_parse("3w5e11264sgsf", 13, 36, UINT64_MAX, &v), 0, "UINT64_MAX in base 36");
    TAP_OK(v == UINT64_MAX, "value is UINT64_MAX");
    TAP_EQ_INT(pe_digits_parse("3w5e11264sgsg", 13, 36, UINT64_MAX, &v), -1, "UINT64_MAX + 1 in base 36 refused");
    TAP_EQ_INT(pe_digits_parse("1z141z4", 7, 36, UINT32_MAX, &v), -1, "above max refused");
    TAP_EQ_INT(pe_digits_parse("12a", 3, 10, UINT64_MAX, &v), -1, "a letter outside base 10 refused");
    TAP_EQ_INT(pe_digits_parse("Z", 1, 36, UINT64_MAX, &v), -1, "upper case refused");
    TAP_EQ_INT(pe_digits_parse("", 0, 36, UINT64_MAX, &v), -1, "empty refused");
    TAP_EQ_INT(pe_digits_parse("007", 3, 10, UINT64_MAX, &v), 0, "leading zeros pass");
    TAP_OK(v == 7, "007 is 7");
    TAP_EQ_INT((int)pe_digits_format(UINT64_MAX, 36, buf), 13, "UINT64_MAX is 13 base-36 digits");
    TAP_OK(memcmp(buf, "3w5e11264sgsf", 13) == 0, "formatted as 3w5e11264sgsf");
    TAP_EQ_INT((int)pe_digits_format(UINT64_MAX, 2, buf), 64, "UINT64_MAX is 64 binary digits");
    TAP_EQ_INT((int)pe_digits_format(0, 10, buf), 1, "0 is one digit");
}

int
main(void)
{
    tap_subtest("parse valid", test_parse_valid);
    tap_subtest("parse invalid", test_parse_invalid);
    tap_subtest("parse len", test_parse_len);
    tap_subtest("format", test_format);
    tap_subtest("round trip", test_round_trip);
    tap_subtest("cmp", test_cmp);
    tap_subtest("next", test_next);
    tap_subtest("channel", test_channel);
    tap_subtest("digits", test_digits);
    return tap_done();
}

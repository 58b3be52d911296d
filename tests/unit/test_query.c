/*
 * Unit tests for edge/util/query.c: form-urlencoded decoding ('+', %XX in both cases, every kind of
 * truncated or invalid escape), single-parameter lookup (absent, malformed, first occurrence
 * wins, empty values, names without '=', empty pairs), and the subscription query parser: one
 * and many channels, folding of repeated channels, the 64-channel limit and the 65th distinct
 * channel, invalid channel names (including a percent-encoded '/'), a missing channel, every
 * `since` kind (0, an ID, a multi-channel cursor, empty) and malformed cursors, padding, unknown
 * parameters and odd separators. Every input sits at the end of an exact-size heap buffer, so
 * an overread is an ASan error, and the arena is exactly as large as the contract requires.
 *
 * Not covered here: how /sse turns a parsed query into a subscription (e2e tests), and the
 * Last-Event-ID header (edge tests). The fuzz target fuzz_query covers arbitrary bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tap.h"
#include "edge/util/query.h"
#include "pubsub/cursor.h"

/* ---- helpers: inputs copied to the end of exact-size allocations ---------------------------- */

/*
 * Returns an uninitialised allocation of exactly len bytes. With len 0 too: glibc and ASan return
 * a unique pointer with no usable byte, so reading one is an error.
 */
static char *
exact_alloc(size_t len)
{
    char *p = malloc(len);
    if (p == NULL && len != 0)
        abort();
    return p;
}

/* Returns a malloc'd copy of s[0..len) with no terminator. */
static char *
exact_copy(const char *s, size_t len)
{
    char *p = exact_alloc(len);
    memcpy(p, s, len);
    return p;
}

/* Decodes s into a buffer of exactly strlen(s) bytes; the result is copied to out (NUL-ended). */
static long
decode(const char *s, char *out, size_t outcap)
{
    size_t len = strlen(s);
    char *in = exact_copy(s, len), *dst = exact_alloc(len);
    long r = pe_query_decode(in, len, dst);
    if (r >= 0 && (size_t)r < outcap) {
        memcpy(out, dst, (size_t)r);
        out[r] = '\0';
    }
    free(in);
    free(dst);
    return r;
}

static long
get(const char *qs, const char *name, char *out, size_t outcap)
{
    size_t len = strlen(qs);
    char *in = exact_copy(qs, len), *dst = exact_alloc(len);
    long r = pe_query_get(in, len, name, dst);
    if (r >= 0 && (size_t)r < outcap) {
        memcpy(out, dst, (size_t)r);
        out[r] = '\0';
    }
    free(in);
    free(dst);
    return r;
}

/*
 * The result of one pe_sub_query_parse call. The query and arena are kept alive (channel names
 * point into the arena) until parsed_free.
 */
typedef struct {
    int ret;
    pe_sub_query_t q;
    const char *code, *err;
    char *in, *arena;
} parsed_t;

static void
parse_len(parsed_t *p, const char *qs, size_t len)
{
    p->in = exact_copy(qs, len);
    p->arena = exact_alloc(len);
    p->code = p->err = NULL;
    p->ret = pe_sub_query_parse(p->in, len, &p->q, p->arena, &p->code, &p->err);
}

static void
parse(parsed_t *p, const char *qs)
{
    parse_len(p, qs, strlen(qs));
}

static void
parsed_free(parsed_t *p)
{
    free(p->in);
    free(p->arena);
}

/* Asserts that qs is rejected with the given code and a non-empty message. */
static void
expect_reject(const char *qs, const char *code)
{
    parsed_t p;
    parse(&p, qs);
    TAP_EQ_INT(p.ret, -1, "rejects \"%.60s\"", qs);
    TAP_EQ_STR(p.code, code, "\"%.60s\": code", qs);
    TAP_OK(p.err != NULL && p.err[0] != '\0', "\"%.60s\": has a message (%s)", qs, p.err != NULL ? p.err : "NULL");
    parsed_free(&p);
}

/* Asserts that channel i of a parsed query is name. */
static void
expect_channel(const parsed_t *p, size_t i, const char *name)
{
    if (i >= p->q.num_channels) {
        TAP_OK(0, "channel %zu (%s) exists", i, name);
        return;
    }
    TAP_EQ_MEM(p->q.channels[i].name, p->q.channels[i].len, name, strlen(name), "channel %zu is %s", i, name);
}

/* ---- pe_query_decode ------------------------------------------------------------------------- */

static void
test_decode(void)
{
    char out[256];

    TAP_EQ_INT(decode("", out, sizeof(out)), 0, "empty input");
    TAP_EQ_INT(decode("abc", out, sizeof(out)), 3, "plain text length");
    TAP_EQ_STR(out, "abc", "plain text unchanged");
    TAP_EQ_INT(decode("a+b++", out, sizeof(out)), 5, "plus length");
    TAP_EQ_STR(out, "a b  ", "plus is a space");
    TAP_EQ_INT(decode("%41%62%2f%2F", out, sizeof(out)), 4, "escapes length");
    TAP_EQ_STR(out, "Ab//", "upper- and lower-case hex digits");
    TAP_EQ_INT(decode("%aF%Fa", out, sizeof(out)), 2, "mixed-case escape length");
    TAP_EQ_MEM(out, 2, "\xaf\xfa", 2, "mixed-case escapes decode to bytes");
    TAP_EQ_INT(decode("%2B", out, sizeof(out)), 1, "%%2B length");
    TAP_EQ_STR(out, "+", "an escaped '+' stays a plus");
    TAP_EQ_INT(decode("%25", out, sizeof(out)), 1, "%%25 length");
    TAP_EQ_STR(out, "%", "an escaped %% is not decoded twice");
    TAP_EQ_INT(decode("%00", out, sizeof(out)), 1, "%%00 decodes to one NUL byte");
    TAP_EQ_INT(decode("x%41", out, sizeof(out)), 2, "an escape ending the input");
    TAP_EQ_STR(out, "xA", "an escape ending the input decodes");

    /* Truncated escapes at the very end of the buffer: ASan catches a read past it. */
    TAP_EQ_INT(decode("%", out, sizeof(out)), -1, "\"%%\" alone");
    TAP_EQ_INT(decode("%4", out, sizeof(out)), -1, "\"%%4\"");
    TAP_EQ_INT(decode("ab%", out, sizeof(out)), -1, "trailing \"%%\"");
    TAP_EQ_INT(decode("ab%4", out, sizeof(out)), -1, "trailing \"%%4\"");
    TAP_EQ_INT(decode("%zz", out, sizeof(out)), -1, "\"%%zz\"");
    TAP_EQ_INT(decode("%4z", out, sizeof(out)), -1, "\"%%4z\"");
    TAP_EQ_INT(decode("%z4", out, sizeof(out)), -1, "\"%%z4\"");
    TAP_EQ_INT(decode("%+1", out, sizeof(out)), -1, "\"%%+1\"");
    TAP_EQ_INT(decode("%%41", out, sizeof(out)), -1, "\"%%%%41\"");
    TAP_EQ_INT(decode("%g0", out, sizeof(out)), -1, "\"%%g0\" (g is not hex)");
}

/* ---- pe_query_get ---------------------------------------------------------------------------- */

static void
test_get(void)
{
    char out[256];

    TAP_EQ_INT(get("", "a", out, sizeof(out)), -1, "empty query: absent");
    TAP_EQ_INT(get("b=1", "a", out, sizeof(out)), -1, "other name: absent");
    TAP_EQ_INT(get("aa=1&ab=2", "a", out, sizeof(out)), -1, "names are matched whole, not as prefixes");
    TAP_EQ_INT(get("a=1", "aa", out, sizeof(out)), -1, "a shorter name does not match a longer one");
    TAP_EQ_INT(get("a=1", "a", out, sizeof(out)), 1, "single parameter");
    TAP_EQ_STR(out, "1", "single parameter value");
    TAP_EQ_INT(get("x=0&a=hello+w%6Frld&y=2", "a", out, sizeof(out)), 11, "middle parameter");
    TAP_EQ_STR(out, "hello world", "middle parameter value is decoded");
    TAP_EQ_INT(get("a=first&a=second", "a", out, sizeof(out)), 5, "first occurrence wins");
    TAP_EQ_STR(out, "first", "first occurrence value");
    TAP_EQ_INT(get("a=%zz&a=ok", "a", out, sizeof(out)), -2, "a malformed first occurrence wins too");
    TAP_EQ_INT(get("a=ok&a=%zz", "a", out, sizeof(out)), 2, "a malformed later occurrence is not looked at");
    TAP_EQ_INT(get("a=%", "a", out, sizeof(out)), -2, "truncated escape at the end: malformed");
    TAP_EQ_INT(get("a=%4&b=1", "a", out, sizeof(out)), -2, "truncated escape before '&': malformed");
    TAP_EQ_INT(get("b=%zz&a=1", "a", out, sizeof(out)), 1, "another parameter's bad escape is ignored");
    TAP_EQ_INT(get("a=", "a", out, sizeof(out)), 0, "empty value");
    TAP_EQ_INT(get("a", "a", out, sizeof(out)), 0, "a name without '=' has an empty value");
    TAP_EQ_INT(get("b&a&c", "a", out, sizeof(out)), 0, "a name without '=' between others");
    TAP_EQ_INT(get("&&a=1&&", "a", out, sizeof(out)), 1, "empty pairs are skipped");
    TAP_EQ_INT(get("a=b=c", "a", out, sizeof(out)), 3, "the value runs to the next '&', '=' included");
    TAP_EQ_STR(out, "b=c", "value with '='");
    TAP_EQ_INT(get("=1&a=2", "a", out, sizeof(out)), 1, "an empty name does not match");
    TAP_EQ_STR(out, "2", "value after an empty name");
    TAP_EQ_INT(get("a%3D=1", "a=", out, sizeof(out)), -1, "names are compared undecoded");
}

/* ---- pe_sub_query_parse ---------------------------------------------------------------------- */

static void
test_channels(void)
{
    parsed_t p;

    parse(&p, "channel=news");
    TAP_EQ_INT(p.ret, 0, "one channel");
    TAP_EQ_UINT(p.q.num_channels, 1, "one channel: count");
    expect_channel(&p, 0, "news");
    TAP_EQ_INT(p.q.has_since, 0, "no since");
    TAP_EQ_INT(p.q.since.kind, PE_CURSOR_NONE, "no since: kind NONE");
    TAP_EQ_INT(p.q.padding, 0, "no padding");
    parsed_free(&p);

    parse(&p, "channel=a&channel=B.c&channel=x%3Ay%40z&channel=_-.:@09");
    TAP_EQ_INT(p.ret, 0, "many channels");
    TAP_EQ_UINT(p.q.num_channels, 4, "many channels: count");
    expect_channel(&p, 0, "a");
    expect_channel(&p, 1, "B.c");
    expect_channel(&p, 2, "x:y@z");
    expect_channel(&p, 3, "_-.:@09");
    parsed_free(&p);

    parse(&p, "channel=a&channel=b&channel=a&channel=%61&channel=b");
    TAP_EQ_INT(p.ret, 0, "repeated channels");
    TAP_EQ_UINT(p.q.num_channels, 2, "repeated channels are folded (also when spelled with an escape)");
    expect_channel(&p, 0, "a");
    expect_channel(&p, 1, "b");
    parsed_free(&p);

    /* The longest valid name, from an exact-size buffer. */
    char name[PE_CHANNEL_MAXLEN + 1], qs[300];
    memset(name, 'n', PE_CHANNEL_MAXLEN);
    name[PE_CHANNEL_MAXLEN] = '\0';
    snprintf(qs, sizeof(qs), "channel=%s", name);
    parse(&p, qs);
    TAP_EQ_INT(p.ret, 0, "a %d-character name", PE_CHANNEL_MAXLEN);
    expect_channel(&p, 0, name);
    parsed_free(&p);
    snprintf(qs, sizeof(qs), "channel=%sn", name);
    expect_reject(qs, "bad_channel");

    expect_reject("", "missing_channel");
    expect_reject("since=0", "missing_channel");
    expect_reject("chan=a&channels=b", "missing_channel");
    expect_reject("channel=", "bad_channel");
    expect_reject("channel", "bad_channel");
    expect_reject("channel=a/b", "bad_channel");
    expect_reject("channel=a%2Fb", "bad_channel");
    expect_reject("channel=a%2fb", "bad_channel");
    expect_reject("channel=a+b", "bad_channel");
    expect_reject("channel=a%20b", "bad_channel");
    expect_reject("channel=a%00", "bad_channel");
    expect_reject("channel=%C3%A9", "bad_channel");
    expect_reject("channel=ok&channel=b!d", "bad_channel");
    expect_reject("channel=a%zz", "bad_query");
    expect_reject("channel=a%", "bad_query");
    expect_reject("channel=ok&padding=%4", "bad_query");
}

static void
test_channel_limit(void)
{
    char qs[2048];
    size_t off = 0;
    parsed_t p;

    for (int i = 0; i != PE_CURSOR_MAX_ENTRIES; ++i)
        off += (size_t)snprintf(qs + off, sizeof(qs) - off, "%schannel=c%d", i == 0 ? "" : "&", i);
    parse(&p, qs);
    TAP_EQ_INT(p.ret, 0, "%d channels are accepted", PE_CURSOR_MAX_ENTRIES);
    TAP_EQ_UINT(p.q.num_channels, PE_CURSOR_MAX_ENTRIES, "%d channels: count", PE_CURSOR_MAX_ENTRIES);
    expect_channel(&p, 0, "c0");
    expect_channel(&p, PE_CURSOR_MAX_ENTRIES - 1, "c63");
    parsed_free(&p);

    /* A repeat of a known channel after the limit is still folded, not counted. */
    size_t base = off;
    snprintf(qs + base, sizeof(qs) - base, "&channel=c5&channel=c63");
    parse(&p, qs);
    TAP_EQ_INT(p.ret, 0, "repeats after the limit are folded");
    TAP_EQ_UINT(p.q.num_channels, PE_CURSOR_MAX_ENTRIES, "repeats after the limit: count");
    parsed_free(&p);

    snprintf(qs + base, sizeof(qs) - base, "&channel=c64");
    expect_reject(qs, "too_many_channels");
}

static void
test_since(void)
{
    parsed_t p;

    parse(&p, "channel=a&since=0");
    TAP_EQ_INT(p.ret, 0, "since=0");
    TAP_EQ_INT(p.q.has_since, 1, "since=0: has_since");
    TAP_EQ_INT(p.q.since.kind, PE_CURSOR_OLDEST, "since=0: OLDEST");
    parsed_free(&p);

    parse(&p, "since=1700000000000-42&channel=a");
    TAP_EQ_INT(p.ret, 0, "since=ID before the channel");
    TAP_EQ_INT(p.q.since.kind, PE_CURSOR_ID, "since=ID: kind");
    TAP_EQ_UINT(p.q.since.id.ms, 1700000000000u, "since=ID: ms");
    TAP_EQ_UINT(p.q.since.id.seq, 42, "since=ID: seq");
    parsed_free(&p);

    parse(&p, "channel=a&since=5%2D6");
    TAP_EQ_INT(p.ret, 0, "since is percent-decoded");
    TAP_EQ_INT(p.q.since.kind, PE_CURSOR_ID, "escaped since: kind");
    TAP_EQ_UINT(p.q.since.id.ms, 5, "escaped since: ms");
    parsed_free(&p);

    /* A multi-channel cursor as pe_cursor_format writes it. */
    pe_cursor_entry_t entries[2] = {{pe_cursor_tag("a", 1), {1000, 1}}, {pe_cursor_tag("b", 1), {2000, 0}}};
    char cursor[PE_CURSOR_MAXLEN + 1], qs[PE_CURSOR_MAXLEN + 64];
    TAP_OK(pe_cursor_format(entries, 2, cursor, sizeof(cursor)) != 0, "format a two-channel cursor");
    snprintf(qs, sizeof(qs), "channel=a&channel=b&since=%s", cursor);
    parse(&p, qs);
    TAP_EQ_INT(p.ret, 0, "since=multi cursor (%s)", cursor);
    TAP_EQ_INT(p.q.since.kind, PE_CURSOR_MULTI, "multi cursor: kind");
    TAP_EQ_UINT(p.q.since.num_entries, 2, "multi cursor: entries");
    pe_id_t pos = PE_ID_ZERO;
    TAP_EQ_INT(pe_cursor_position(&p.q.since, "b", 1, &pos), 1, "multi cursor: position of b");
    TAP_EQ_UINT(pos.ms, 2000, "multi cursor: b's ms");
    parsed_free(&p);

    parse(&p, "channel=a&since=");
    TAP_EQ_INT(p.ret, 0, "empty since");
    TAP_EQ_INT(p.q.since.kind, PE_CURSOR_NONE, "empty since: kind NONE");
    parsed_free(&p);

    /* Which of two `since` parameters counts is not part of the contract; both must be valid. */
    parse(&p, "channel=a&since=0&since=1-1");
    TAP_EQ_INT(p.ret, 0, "two since parameters");
    parsed_free(&p);
    expect_reject("channel=a&since=0&since=x", "bad_cursor");

    expect_reject("channel=a&since=abc", "bad_cursor");
    expect_reject("channel=a&since=1-", "bad_cursor");
    expect_reject("channel=a&since=-1", "bad_cursor");
    expect_reject("channel=a&since=00", "bad_cursor");
    expect_reject("channel=a&since=1-2-3", "bad_cursor");
    expect_reject("channel=a&since=1.2", "bad_cursor");
    expect_reject("channel=a&since=1.2.3_", "bad_cursor");
    expect_reject("channel=a&since=1.2.3_1.2.4", "bad_cursor");
    expect_reject("channel=a&since=18446744073709551616-0", "bad_cursor");
    expect_reject("channel=a&since=1+-1", "bad_cursor");
    expect_reject("since=zzz&channel=a", "bad_cursor");
    expect_reject("channel=a&since=%", "bad_query");

    /* The message of a bad cursor is the cursor parser's, which names the entry. */
    parse(&p, "channel=a&since=1.2.3_x");
    TAP_EQ_INT(p.ret, -1, "bad second entry");
    TAP_OK(p.err != NULL && strstr(p.err, "entry 2") != NULL, "the message names entry 2 (%s)", p.err != NULL ? p.err : "NULL");
    parsed_free(&p);
}

static void
test_flags_and_separators(void)
{
    parsed_t p;

    parse(&p, "channel=a&presence=1");
    TAP_EQ_INT(p.ret, 0, "presence=1");
    TAP_EQ_INT(p.q.presence, 1, "presence=1 sets presence");
    TAP_EQ_INT(p.q.padding, 0, "and not padding");
    parsed_free(&p);
    parse(&p, "channel=a&presence=true");
    TAP_EQ_INT(p.q.presence, 0, "presence=true is not 1");
    parsed_free(&p);
    parse(&p, "channel=a");
    TAP_EQ_INT(p.q.presence, 0, "no presence by default");
    parsed_free(&p);

    parse(&p, "channel=a&padding=1");
    TAP_EQ_INT(p.ret, 0, "padding=1");
    TAP_EQ_INT(p.q.padding, 1, "padding=1 sets padding");
    parsed_free(&p);

    static const char *const no_padding[] = {"channel=a&padding=0",  "channel=a&padding=",     "channel=a&padding",
                                             "channel=a&padding=11", "channel=a&padding=true", "channel=a&padding=1&padding=0"};
    for (size_t i = 0; i != sizeof(no_padding) / sizeof(no_padding[0]); ++i) {
        parse(&p, no_padding[i]);
        TAP_EQ_INT(p.ret, 0, "%s: accepted", no_padding[i]);
        TAP_EQ_INT(p.q.padding, 0, "%s: no padding", no_padding[i]);
        parsed_free(&p);
    }

    parse(&p, "_=123&channel=a&foo=%zz&bar&Channel=b&CHANNEL=c&channel%3D=d");
    TAP_EQ_INT(p.ret, 0, "unknown parameters are ignored, even malformed ones");
    TAP_EQ_UINT(p.q.num_channels, 1, "names are case-sensitive and compared undecoded");
    expect_channel(&p, 0, "a");
    parsed_free(&p);

    parse(&p, "&&channel=a&&&channel=b&&");
    TAP_EQ_INT(p.ret, 0, "empty pairs");
    TAP_EQ_UINT(p.q.num_channels, 2, "empty pairs: count");
    expect_channel(&p, 1, "b");
    parsed_free(&p);

    parse(&p, "=x&channel=a&=");
    TAP_EQ_INT(p.ret, 0, "pairs with an empty name");
    TAP_EQ_UINT(p.q.num_channels, 1, "pairs with an empty name: count");
    parsed_free(&p);

    parse(&p, "channel=a=b");
    TAP_EQ_INT(p.ret, -1, "'=' inside the value belongs to the value");
    TAP_EQ_STR(p.code, "bad_channel", "'=' inside the value: code");
    parsed_free(&p);

    expect_reject("&&&", "missing_channel");
    expect_reject("&", "missing_channel");
    expect_reject("=", "missing_channel");
}

/* Every prefix of a valid query parses or fails cleanly, with input and arena of exact size. */
static void
test_prefixes(void)
{
    static const char qs[] = "channel=a%3Ab&channel=c+d&since=1.2.3_4.5.6&padding=1&channel=e";
    size_t accepted = 0;

    for (size_t len = 0; len <= sizeof(qs) - 1; ++len) {
        parsed_t p;
        parse_len(&p, qs, len);
        if (p.ret == 0) {
            ++accepted;
            size_t used = 0;
            for (size_t i = 0; i != p.q.num_channels; ++i)
                used += p.q.channels[i].len;
            if (used > len)
                TAP_OK(0, "prefix %zu: channel names fit the arena", len);
        } else if (p.code == NULL || p.err == NULL) {
            TAP_OK(0, "prefix %zu: a rejection sets code and message", len);
        }
        parsed_free(&p);
    }
    TAP_OK(accepted > 0, "some prefixes parse (%zu)", accepted);
}

/* pe_query_redact: every parameter named token (however escaped) leaves the logged URL. */
static void
test_redact(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"/sse?channel=a&token=SECRET", "/sse?channel=a"},
        {"/sse?token=SECRET&channel=a", "/sse?channel=a"},
        {"/sse?token=SECRET", "/sse"},
        {"/sse?t%6Fken=S&%74%6f%6b%65%6e=S&channel=a", "/sse?channel=a"},
        {"/sse?token", "/sse"},
        {"/sse?tokens=1&xtoken=2&token_=3", "/sse?tokens=1&xtoken=2&token_=3"},
        {"/sse?a=1&&b=2&", "/sse?a=1&b=2"},
        {"/sse?", "/sse"},
        {"/healthz", "/healthz"},
        {"/sse?channel=a&token=SECRET&token=AGAIN&since=1-0", "/sse?channel=a&since=1-0"},
        {"/sse?to%zzken=1", "/sse?to%zzken=1"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        char out[128];
        size_t n = pe_query_redact(cases[i].in, strlen(cases[i].in), out, sizeof(out));
        TAP_OK(n == strlen(cases[i].out) && strcmp(out, cases[i].out) == 0, "%s -> %s (got %s)", cases[i].in, cases[i].out, out);
    }
    char small[8];
    size_t n = pe_query_redact("/abcdefghij?token=x", 19, small, sizeof(small));
    TAP_OK(n == 7 && strcmp(small, "/abcdef") == 0, "cut at the capacity, NUL-terminated (%s)", small);
    n = pe_query_redact("/a?b=1&token=SECRET", 19, small, sizeof(small));
    TAP_OK(strstr(small, "SEC") == NULL, "a cut never exposes a token (%s)", small);
}

int
main(void)
{
    tap_subtest("redact", test_redact);
    tap_subtest("decode", test_decode);
    tap_subtest("get", test_get);
    tap_subtest("channels", test_channels);
    tap_subtest("channel limit", test_channel_limit);
    tap_subtest("since", test_since);
    tap_subtest("flags and separators", test_flags_and_separators);
    tap_subtest("prefixes", test_prefixes);
    return tap_done();
}

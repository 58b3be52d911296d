/*
 * Unit tests for pubsub/json_text.c. pe_json_load_untrusted: a raw NUL byte anywhere is refused,
 * an escaped one in a string is not. pe_json_find_member: values of every kind found as written,
 * nested keys skipped, keys compared after decoding their escapes (short escapes, \u escapes
 * of 1 to 3 UTF-8 bytes, surrogate pairs). pe_json_minify: white space between tokens of every kind
 * (space, tab, CR, LF) removed at every nesting level; strings kept byte for byte, including
 * white space, structural characters, escaped quotes, escaped backslashes right before the
 * closing quote ("\\\""), \u escapes and raw UTF-8; numbers and literals untouched; bare
 * scalars. Every case reads its input from a guarded buffer and writes into an exact-size
 * guarded buffer, and is cross-checked with jansson: the output parses and json_equal()s the
 * input, and holds no CR or LF.
 *
 * pe_json_valid_fast: differential against jansson (pe_json_load_untrusted with the publish
 * endpoint's flags): a corpus of valid and invalid texts (every grammar rule, escapes, surrogate
 * pairs, UTF-8 edge cases, numbers near the limits, nesting at the depth bound) and 20,000
 * random mutations of them (bytes changed, inserted, cut); the fast check may say "not sure"
 * (0) for valid text, but never 1 for text jansson refuses; the usual publish bodies pass fast.
 *
 * pe_json_batch_item: differential against jansson on batch items (plain, white space, members
 * in any order, nested "channel"/"data"/"key" names, escapes in names and in channel or key,
 * duplicates, non-string channel and key, non-objects) and 20,000 random mutations of them that
 * jansson accepts: whenever the raw reading says it is sure, it agrees with jansson member for
 * member (presence, string values byte for byte, data's text parsing to the same value); the
 * cases it must leave to jansson (escaped names, duplicates, escaped channel or key, non-objects)
 * return 0, and the usual item is read raw.
 *
 * Not covered: invalid JSON (the contract requires validated input; the fuzz target covers
 * that the function never writes more than len bytes whatever it gets).
 */
#include <string.h>
#include <jansson.h>
#include "tap.h"
#include "json_text.h"

/* Minifies in[0..len) from and into guarded buffers; returns the output length, copied to out. */
static size_t
minify_guarded(const char *in, size_t len, char *out)
{
    char *src = tap_guard_copy(in, len), *dst = tap_guard_copy(in, len);
    size_t n = pe_json_minify(src, len, dst);
    if (n <= len)
        memcpy(out, dst, n);
    tap_guard_free(src, len);
    tap_guard_free(dst, len);
    return n;
}

static void
check(const char *in, const char *want)
{
    size_t len = strlen(in);
    char out[1024];
    size_t n = minify_guarded(in, len, out);
    json_t *a = json_loadb(in, len, JSON_DECODE_ANY, NULL), *b;

    TAP_EQ_MEM(out, n, want, strlen(want), "minify %s", want);
    TAP_OK(a != NULL, "%s: the input is valid JSON (test precondition)", want);
    b = json_loadb(out, n, JSON_DECODE_ANY, NULL);
    TAP_OK(a != NULL && b != NULL && json_equal(a, b), "%s: output parses to the same value", want);
    TAP_OK(memchr(out, '\n', n) == NULL && memchr(out, '\r', n) == NULL, "%s: one line", want);
    json_decref(a);
    json_decref(b);
}

static void
test_structure(void)
{
    check("{ \"a\" : 1 , \"b\" : [ 1 , 2 ] }", "{\"a\":1,\"b\":[1,2]}");
    check("\r\n{\r\n\t\"a\":\t[\n\n true,\tfalse ,null ]\r\n}\r\n", "{\"a\":[true,false,null]}");
    check("[ [ [ [ ] ] ] , { } , { \"k\" : { \"k\" : [ { } ] } } ]", "[[[[]]],{},{\"k\":{\"k\":[{}]}}]");
    check("{}", "{}");
    check("[]", "[]");
    check("  [ ]  ", "[]");
}

static void
test_scalars(void)
{
    check(" 1 ", "1");
    check("\t-1.5e+10\n", "-1.5e+10");
    check("0", "0");
    check(" 1.0 ", "1.0");                                                     /* not re-printed as 1 */
    check(" 1.2345678901234567890123e-300 ", "1.2345678901234567890123e-300"); /* digits kept beyond a double */
    check(" true", "true");
    check("null ", "null");
    check(" \"x\" ", "\"x\"");
    check("\"\"", "\"\"");
}

static void
test_strings(void)
{
    check("[ \" a  b \" ]", "[\" a  b \"]");
    check("{ \"key with spaces\" : \"value , : { } [ ]\" }", "{\"key with spaces\":\"value , : { } [ ]\"}");
    check("[ \"a\\\"b\" , \"c\" ]", "[\"a\\\"b\",\"c\"]");
    check("[ \"a\\\\\" , \"b\" ]", "[\"a\\\\\",\"b\"]");       /* "a\\" then "b" */
    check("[ \"\\\\\\\"\" , 1 ]", "[\"\\\\\\\"\",1]");         /* "\\\"" */
    check("[ \"\\\\\\\\\" , \" \" ]", "[\"\\\\\\\\\",\" \"]"); /* "\\\\" then " " */
    check("[ \"\\\" \\\" \" ]", "[\"\\\" \\\" \"]");           /* spaces after escaped quotes */
    check("[ \"\\t\\n\\r \\/\" ]", "[\"\\t\\n\\r \\/\"]");     /* escapes kept, not decoded */
    check("[ \"\\u0041 \\u00e9\" , \"\\ud83d\\ude00\" ]", "[\"\\u0041 \\u00e9\",\"\\ud83d\\ude00\"]");
    check("[ \"\\u005c\" , \"\\u0022 \" ]", "[\"\\u005c\",\"\\u0022 \"]"); /* escaped backslash and quote */
    check("{ \"caf\xc3\xa9\" : \"\xe2\x82\xac \xf0\x9f\x98\x80\" }", "{\"caf\xc3\xa9\":\"\xe2\x82\xac \xf0\x9f\x98\x80\"}");
    check("{\"a\":\"}\" , \"b\" : \"{\"}", "{\"a\":\"}\",\"b\":\"{\"}");
}

static void
test_empty(void)
{
    char out[1];
    TAP_EQ_UINT(pe_json_minify("", 0, out), 0, "empty input gives empty output");
    TAP_EQ_UINT(minify_guarded(" \t\r\n", 4, out), 0, "white space alone gives empty output");
}

static void
test_no_growth(void)
{
    /* Output never exceeds input, even for text that is not JSON (dst is exactly len bytes and
     * guarded, so a longer write would fault). */
    static const char *junk[] = {"\"", "\\", "\"\\", "\"\\\"", "  \"  ", "]]]", "\"\n\"", "\xff\xfe"};
    int bad = 0;
    for (size_t i = 0; i != sizeof(junk) / sizeof(junk[0]); ++i) {
        char out[16];
        bad += minify_guarded(junk[i], strlen(junk[i]), out) > strlen(junk[i]);
    }
    TAP_EQ_INT(bad, 0, "invalid input: output length stays within input length");
}

/* Returns the value text of `key` in json, or "<none>". */
static const char *
member(const char *json, const char *key)
{
    static char buf[256];
    size_t off, len;
    if (!pe_json_find_member(json, strlen(json), key, strlen(key), &off, &len))
        return "<none>";
    memcpy(buf, json + off, len);
    buf[len] = '\0';
    return buf;
}

static void
test_find_member(void)
{
    TAP_EQ_STR(member("{\"op\":\"publish\",\"data\":{\"x\":0.1}}", "data"), "{\"x\":0.1}", "object value, as written");
    TAP_EQ_STR(member("{\"data\":0.10,\"op\":1}", "data"), "0.10", "a number keeps its digits");
    TAP_EQ_STR(member("{ \"a\" : [1, {\"data\": 2}] , \"data\" : \"s,}\\\"]\" }", "data"), "\"s,}\\\"]\"",
               "nested keys are skipped; strings with delimiters and escapes");
    TAP_EQ_STR(member("{\"data\":null}", "data"), "null", "literal");
    TAP_EQ_STR(member("{\"data\":-1e5}", "data"), "-1e5", "number up to the delimiter");
    TAP_EQ_STR(member("{\"data\":[]}\n", "data"), "[]", "empty array");
    TAP_EQ_STR(member("{\"x\":1}", "data"), "<none>", "absent");
    TAP_EQ_STR(member("[\"data\",1]", "data"), "<none>", "not an object");
    TAP_EQ_STR(member("{}", "data"), "<none>", "empty object");
    TAP_EQ_STR(member("{\"dat\":1,\"datax\":2}", "data"), "<none>", "prefixes do not match");
    TAP_EQ_STR(member("  {\"data\" :\t{\"a\":{\"b\":[1,2,{}]}}}", "data"), "{\"a\":{\"b\":[1,2,{}]}}", "deep nesting");
}

/* The elements of json's top-level array, joined with '|' (from a guarded copy). */
static const char *
elements(const char *json)
{
    static char buf[256];
    size_t n = strlen(json), pos = 0, off, len, w = 0;
    char *src = tap_guard_copy(json, n);
    while (pe_json_array_next(src, n, &pos, &off, &len) && w + len + 1 < sizeof(buf)) {
        if (w != 0)
            buf[w++] = '|';
        memcpy(buf + w, src + off, len);
        w += len;
    }
    buf[w] = '\0';
    tap_guard_free(src, n);
    return buf;
}

/* The members of json's top-level object as key=value joined with '|'. */
static const char *
members(const char *json)
{
    static char buf[256];
    size_t n = strlen(json), pos = 0, koff, klen, off, len, w = 0;
    char *src = tap_guard_copy(json, n);
    while (pe_json_object_next(src, n, &pos, &koff, &klen, &off, &len) && w + klen + len + 2 < sizeof(buf)) {
        if (w != 0)
            buf[w++] = '|';
        memcpy(buf + w, src + koff, klen);
        w += klen;
        buf[w++] = '=';
        memcpy(buf + w, src + off, len);
        w += len;
    }
    buf[w] = '\0';
    tap_guard_free(src, n);
    return buf;
}

static void
test_iterate(void)
{
    TAP_EQ_STR(elements("[1,\"a\",{\"b\":[2,3]},null]"), "1|\"a\"|{\"b\":[2,3]}|null", "array elements as written");
    TAP_EQ_STR(elements(" [ 1.50 ,\t[ ] , \"x,]\\\"\" ]\n"), "1.50|[ ]|\"x,]\\\"\"", "white space around elements");
    TAP_EQ_STR(elements("[]"), "", "empty array");
    TAP_EQ_STR(elements(" [ ] "), "", "empty array with white space");
    TAP_EQ_STR(elements("{\"a\":1}"), "", "not an array");
    TAP_EQ_STR(elements("7"), "", "a scalar");
    TAP_EQ_STR(members("{\"channel\":\"c\",\"data\":{\"data\":1},\"key\":\"k\"}"), "channel=\"c\"|data={\"data\":1}|key=\"k\"",
               "object members; nested keys are not members");
    TAP_EQ_STR(members("{ \"a\" : 1 , \"a\" : 2 }"), "a=1|a=2", "duplicates are both seen");
    TAP_EQ_STR(members("{}"), "", "empty object");
    TAP_EQ_STR(members("[1]"), "", "not an object");
}

/* Keys are compared after decoding their escapes, as jansson reads them (issue 18 item 7: an
 * escaped "ref" was not echoed and an escaped "data" refused a valid publish). */
static void
test_find_member_escaped_keys(void)
{
    TAP_EQ_STR(member("{\"op\":\"ping\",\"r\\u0065f\":1}", "ref"), "1", "\\u0065 in a key");
    TAP_EQ_STR(member("{\"op\":\"publish\",\"channel\":\"a\",\"d\\u0061ta\":{\"x\":1}}", "data"), "{\"x\":1}", "\\u0061 in a key");
    TAP_EQ_STR(member("{\"\\u0064\\u0061\\u0074\\u0061\":2}", "data"), "2", "every character escaped");
    TAP_EQ_STR(member("{\"\\u0044ATA\":2,\"data\":3}", "data"), "3", "hex digits decode, case kept");
    TAP_EQ_STR(member("{\"d\\u0041ta\":2}", "data"), "<none>", "\\u0041 is A, not a");
    TAP_EQ_STR(member("{\"\\u005A\\u005a\":2}", "ZZ"), "2", "upper- and lower-case hex digits");
    TAP_EQ_STR(member("{\"a\\\"b\":4}", "a\"b"), "4", "escaped quote in a key");
    TAP_EQ_STR(member("{\"a\\\\\":5}", "a\\"), "5", "escaped backslash ending a key");
    TAP_EQ_STR(member("{\"a\\/b\\n\\t\\r\\b\\f\":6}", "a/b\n\t\r\b\f"), "6", "the short escapes");
    TAP_EQ_STR(member("{\"caf\\u00e9\":7}", "caf\xc3\xa9"), "7", "\\u00e9 is two bytes of UTF-8");
    TAP_EQ_STR(member("{\"\\u20ac\":8}", "\xe2\x82\xac"), "8", "\\u20ac is three bytes of UTF-8");
    TAP_EQ_STR(member("{\"\\ud83d\\ude00\":9}", "\xf0\x9f\x98\x80"), "9", "a surrogate pair is one 4-byte character");
    TAP_EQ_STR(member("{\"caf\xc3\xa9\":10}", "caf\\u00e9"), "<none>", "the query key is not unescaped");
    TAP_EQ_STR(member("{\"r\\u0065\":1,\"ref\":2}", "ref"), "2", "a decoded prefix does not match");
    TAP_EQ_STR(member("{\"r\\u0065fx\":1}", "ref"), "<none>", "a decoded key longer than the query does not match");
    TAP_OK(pe_json_key_equals("d\\u0061ta", 9, "data", 4), "pe_json_key_equals decodes (batch items)");
    TAP_OK(!pe_json_key_equals("d\\u0061t", 8, "data", 4), "pe_json_key_equals: a prefix is not equal");
    TAP_OK(pe_json_key_equals("", 0, "", 0), "pe_json_key_equals: empty keys");
}

/* jansson 2.14 accepts a raw NUL after a number or literal; the text would be forwarded with the
 * NUL inside (found by tests/fuzz/fuzz_json_member). */
static void
test_load_untrusted(void)
{
    static const struct {
        const char *text;
        size_t len;
    } nul[] = {{"2\0", 2}, {"{\"a\":2\0}", 8}, {"{\"a\":true\0}", 11}, {"[null\0]", 7}, {"\0", 1}, {"\"a\0\"", 4}};
    json_error_t err;
    for (size_t i = 0; i != sizeof(nul) / sizeof(nul[0]); ++i) {
        json_t *v = pe_json_load_untrusted(nul[i].text, nul[i].len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        TAP_OK(v == NULL, "raw NUL refused (case %zu)", i);
        TAP_OK(strstr(err.text, "NUL") != NULL, "the error names the NUL: %s", err.text);
        json_decref(v);
    }
    json_t *v = pe_json_load_untrusted("{\"a\":\"\\u0000\"}", 14, JSON_ALLOW_NUL, NULL);
    TAP_OK(v != NULL, "an escaped NUL in a string is fine");
    json_decref(v);
}

static int
jansson_accepts(const char *in, size_t len)
{
    json_t *v = pe_json_load_untrusted(in, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
    json_decref(v);
    return v != NULL;
}

/* Runs the fast check on a guarded copy (a read past len faults). */
static int
fast_guarded(const char *in, size_t len)
{
    char *g = tap_guard_copy(in, len);
    int r = pe_json_valid_fast(g, len);
    tap_guard_free(g, len);
    return r;
}

static unsigned long long fast_rng = 88172645463325252ull;
static unsigned
fast_rand(void)
{
    fast_rng ^= fast_rng << 13;
    fast_rng ^= fast_rng >> 7;
    fast_rng ^= fast_rng << 17;
    return (unsigned)fast_rng;
}

/* Applies 1 to maxops random edits (replace, insert, delete a byte drawn from alphabet) to
 * buf[0..len), never growing it past cap - 1 bytes; returns the new length. */
static size_t
mutate(char *buf, size_t len, size_t cap, unsigned maxops, const char *alphabet, size_t nalpha)
{
    for (unsigned m = 1 + fast_rand() % maxops; m != 0; --m) {
        unsigned op = fast_rand() % 3;
        size_t at = len == 0 ? 0 : fast_rand() % len;
        char c = alphabet[fast_rand() % nalpha];
        if (op == 0 && len != 0) {
            buf[at] = c;
        } else if (op == 1 && len < cap - 1) {
            memmove(buf + at + 1, buf + at, len - at);
            buf[at] = c;
            ++len;
        } else if (len != 0) {
            memmove(buf + at, buf + at + 1, len - at - 1);
            --len;
        }
    }
    return len;
}

static void
test_valid_fast(void)
{
    static const char *fast_ok[] = {"{}",
                                    "[]",
                                    "0",
                                    "-0",
                                    "1",
                                    "-12.5",
                                    "123456789012345678901234567890",
                                    "\"\"",
                                    "true",
                                    "false",
                                    "null",
                                    " \t\r\n{ } ",
                                    "{\"a\":1,\"b\":[1,2,{\"c\":null}],\"d\":\"x\\\"y\\\\z\\/\\b\\f\\n\\r\\t\"}",
                                    "[\"\\u00e9\\uD83D\\uDE00\\u0000\"]",
                                    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf\xf4\x8f\xbf\xbf\"",
                                    "{\"n\":1,\"text\":\"xxxxxxxxxxxxxxxx\"}",
                                    "[[[[[]]]]]",
                                    "{\"a\":{\"a\":{\"a\":[true,false,null,0.5]}}}",
                                    "{\"dup\":1,\"dup\":2}"};
    static const char *corpus_more[] = {"",
                                        " ",
                                        "{",
                                        "}",
                                        "[",
                                        "]",
                                        "{,}",
                                        "[,]",
                                        "[1,]",
                                        "{\"a\":1,}",
                                        "{\"a\"}",
                                        "{\"a\" 1}",
                                        "{a:1}",
                                        "[1 2]",
                                        "01",
                                        "-",
                                        "1.",
                                        ".5",
                                        "1e5",
                                        "1E-5",
                                        "-1.5e+300",
                                        "1e400",
                                        "tru",
                                        "truex",
                                        "nul",
                                        "nulll",
                                        "\"",
                                        "\"\\\"",
                                        "\"\\x\"",
                                        "\"\\u12\"",
                                        "\"\\uD800\"",
                                        "\"\\uDC00\"",
                                        "\"\\uD800\\u0041\"",
                                        "{\"\\u0000\":1}",
                                        "\"\x80\"",
                                        "\"\xc0\xaf\"",
                                        "\"\xe0\x80\xaf\"",
                                        "\"\xed\xa0\x80\"",
                                        "\"\xf4\x90\x80\x80\"",
                                        "\"\xf5\"",
                                        "\"\x01\"",
                                        "\"a\tb\"",
                                        "[1]x",
                                        "{} {}",
                                        "1 2",
                                        "[\"a\",]",
                                        "[-]",
                                        "[-a]",
                                        "1x",
                                        "0x10",
                                        "+1",
                                        "[1.5.5]",
                                        "[1,,2]",
                                        "{\"a\"::1}",
                                        "\"\xe2\x82\"",
                                        "\"\xf0\x9f\x98\""};
    for (size_t i = 0; i != sizeof(fast_ok) / sizeof(fast_ok[0]); ++i) {
        size_t len = strlen(fast_ok[i]);
        TAP_OK(jansson_accepts(fast_ok[i], len), "jansson accepts corpus #%zu", i);
        TAP_EQ_INT(fast_guarded(fast_ok[i], len), 1, "fast path for %s", fast_ok[i]);
    }
    /* The escaped NUL in a value, and the 300-digit bound. */
    char big[400];
    memset(big, '9', 300);
    TAP_EQ_INT(fast_guarded(big, 300), 1, "300 integer digits pass fast");
    memset(big, '9', 301);
    TAP_EQ_INT(fast_guarded(big, 301), 0, "301 integer digits: jansson decides");
    /* Depth: PE_JSON_FAST_MAX_DEPTH levels pass, one more is left to jansson. */
    char deep[2 * PE_JSON_FAST_MAX_DEPTH + 2];
    for (int d = PE_JSON_FAST_MAX_DEPTH; d <= PE_JSON_FAST_MAX_DEPTH + 1; ++d) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        TAP_EQ_INT(fast_guarded(deep, 2 * (size_t)d), d == PE_JSON_FAST_MAX_DEPTH, "depth %d", d);
    }
    size_t mismatches = 0, fast_refused_valid = 0, checked = 0;
    for (size_t i = 0; i != sizeof(corpus_more) / sizeof(corpus_more[0]); ++i) {
        size_t len = strlen(corpus_more[i]);
        int f = fast_guarded(corpus_more[i], len), j = jansson_accepts(corpus_more[i], len);
        if (f && !j)
            ++mismatches, tap_note("fast accepted what jansson refuses: %s", corpus_more[i]);
        ++checked;
    }
    /* Random mutations of the corpus: never a fast 1 that jansson refuses. */
    static const char alphabet[] = "{}[],:\"\\ \t\n0123456789-+.eEtruefalsnu\x80\xc3\xa9\xed\xf0\x9f\x01";
    size_t nall = sizeof(fast_ok) / sizeof(fast_ok[0]) + sizeof(corpus_more) / sizeof(corpus_more[0]);
    for (int round = 0; round != 20000; ++round) {
        size_t k = fast_rand() % nall;
        const char *src =
            k < sizeof(fast_ok) / sizeof(fast_ok[0]) ? fast_ok[k] : corpus_more[k - sizeof(fast_ok) / sizeof(fast_ok[0])];
        char buf[256];
        size_t len = strlen(src);
        memcpy(buf, src, len);
        len = mutate(buf, len, sizeof(buf), 3, alphabet, sizeof(alphabet) - 1);
        int f = fast_guarded(buf, len), j = jansson_accepts(buf, len);
        if (f && !j) {
            ++mismatches;
            tap_note("fast accepted what jansson refuses: %.*s", (int)len, buf);
        }
        fast_refused_valid += !f && j;
        ++checked;
    }
    TAP_EQ_UINT(mismatches, 0,
                "no text accepted by the fast check is refused by jansson (%zu checked, %zu valid ones left to jansson)", checked,
                fast_refused_valid);
}

/* jansson's reading of a batch item against pe_json_batch_item's; returns a mismatch or NULL. */
static const char *
batch_item_disagrees(const char *text, size_t len, int *sure)
{
    char *g = tap_guard_copy(text, len);
    pe_json_batch_item_t it;
    *sure = pe_json_batch_item(g, len, &it);
    const char *why = NULL;
    json_t *v = pe_json_load_untrusted(text, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
    if (!*sure || v == NULL)
        goto Exit;
    if (!json_is_object(v)) {
        why = "sure of a non-object";
        goto Exit;
    }
    struct {
        const char *name;
        int string_member;
    } names[] = {{"channel", 1}, {"data", 0}, {"key", 1}};
    for (size_t i = 0; i != 3; ++i) {
        json_t *m = json_object_get(v, names[i].name);
        unsigned present = i == 0 ? it.channel.present : i == 1 ? it.data.present : it.key.present;
        if (present != (m != NULL)) {
            why = "presence differs";
            goto Exit;
        }
        if (m == NULL)
            continue;
        if (names[i].string_member) {
            unsigned is_string = i == 0 ? it.channel.is_string : it.key.is_string;
            size_t off = i == 0 ? it.channel.off : it.key.off, l = i == 0 ? it.channel.len : it.key.len;
            if (is_string != json_is_string(m)) {
                why = "string or not differs";
                goto Exit;
            }
            if (is_string &&
                (off > len || l > len - off || l != json_string_length(m) || memcmp(g + off, json_string_value(m), l) != 0)) {
                why = "string value differs";
                goto Exit;
            }
        } else {
            if (it.data.off > len || it.data.len > len - it.data.off) {
                why = "data span out of bounds";
                goto Exit;
            }
            json_t *d = pe_json_load_untrusted(g + it.data.off, it.data.len,
                                               JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, NULL);
            int same = d != NULL && json_equal(d, m);
            json_decref(d);
            if (!same) {
                why = "data text differs";
                goto Exit;
            }
        }
    }
Exit:
    json_decref(v);
    tap_guard_free(g, len);
    return why;
}

static void
test_batch_item(void)
{
    static const char *sure[] = {
        "{\"channel\":\"news\",\"data\":{\"n\":1,\"text\":\"xx\"}}",
        " { \"data\" : [1, 2, {\"channel\":\"x\"}] , \"channel\" : \"a.b:c@d\" , \"key\" : \"k-1\" } ",
        "{\"channel\":\"c\",\"data\":\"a\\\"b\\\\\",\"key\":null}",
        "{\"channel\":7,\"data\":null}",
        "{\"channel\":\"c\"}",
        "{\"data\":1.50e3}",
        "{\"key\":[\"k\"],\"channel\":{\"channel\":\"c\"},\"data\":false}",
        "{\"other\":1,\"other\":2,\"channel\":\"c\",\"data\":-0}",
        "{}",
        "{\"channel\":\"\",\"data\":\"\"}",
        "{\"channel\":\"caf\xc3\xa9\",\"data\":\"\\u0000\"}",
    };
    static const char *unsure[] = {
        "[1]",
        "\"channel\"",
        "7",
        "{\"d\\u0061ta\":1,\"channel\":\"c\"}",
        "{\"channel\":\"c\",\"data\":1,\"data\":2}",
        "{\"channel\":\"a\",\"channel\":\"b\",\"data\":1}",
        "{\"key\":\"a\",\"key\":\"b\",\"data\":1}",
        "{\"channel\":\"\\u0061\",\"data\":1}",
        "{\"channel\":\"c\",\"data\":1,\"key\":\"k\\n\"}",
        "{\"x\\\\\":1,\"channel\":\"c\",\"data\":1}",
    };
    for (size_t i = 0; i != sizeof(sure) / sizeof(sure[0]); ++i) {
        int ok;
        size_t len = strlen(sure[i]);
        TAP_OK(jansson_accepts(sure[i], len), "jansson accepts %s (test precondition)", sure[i]);
        const char *why = batch_item_disagrees(sure[i], len, &ok);
        TAP_EQ_INT(ok, 1, "read raw: %s", sure[i]);
        TAP_OK(why == NULL, "agrees with jansson: %s (%s)", sure[i], why != NULL ? why : "");
    }
    for (size_t i = 0; i != sizeof(unsure) / sizeof(unsure[0]); ++i) {
        int ok;
        size_t len = strlen(unsure[i]);
        TAP_OK(jansson_accepts(unsure[i], len), "jansson accepts %s (test precondition)", unsure[i]);
        batch_item_disagrees(unsure[i], len, &ok);
        TAP_EQ_INT(ok, 0, "left to jansson: %s", unsure[i]);
    }
    /* Mutations that stay valid JSON: whenever the raw reading is sure, jansson agrees. */
    static const char alphabet[] = "{}[],:\"\\ 0123456789-.eEtrufalsnchdkyu\xc3\xa9";
    size_t nsure = sizeof(sure) / sizeof(sure[0]), nall = nsure + sizeof(unsure) / sizeof(unsure[0]);
    size_t checked = 0, raw = 0, mismatches = 0;
    for (int round = 0; round != 20000; ++round) {
        size_t k = fast_rand() % nall;
        const char *src = k < nsure ? sure[k] : unsure[k - nsure];
        char buf[256];
        size_t len = strlen(src);
        memcpy(buf, src, len);
        len = mutate(buf, len, sizeof(buf), 2, alphabet, sizeof(alphabet) - 1);
        if (!jansson_accepts(buf, len))
            continue;
        int ok;
        const char *why = batch_item_disagrees(buf, len, &ok);
        ++checked;
        raw += ok;
        if (why != NULL) {
            ++mismatches;
            tap_note("%s: %.*s", why, (int)len, buf);
        }
    }
    TAP_EQ_UINT(mismatches, 0, "the raw reading agrees with jansson whenever it is sure (%zu valid mutations, %zu read raw)",
                checked, raw);
}

int
main(void)
{
    tap_subtest("batch item", test_batch_item);
    tap_subtest("valid fast", test_valid_fast);
    tap_subtest("iterate", test_iterate);
    tap_subtest("load untrusted", test_load_untrusted);
    tap_subtest("find member", test_find_member);
    tap_subtest("find member: escaped keys", test_find_member_escaped_keys);
    tap_subtest("structure", test_structure);
    tap_subtest("scalars", test_scalars);
    tap_subtest("strings", test_strings);
    tap_subtest("empty", test_empty);
    tap_subtest("no growth", test_no_growth);
    return tap_done();
}

/*
 * Unit tests for pubsub/redis_reply.c: MOVED/ASK redirections (IPv4, IPv6, an empty host, every
 * malformed form refused: bad or out-of-range slot and port, extra spaces, signs, a missing
 * colon, a host too long for an address), stream entries of XRANGE (the "d" or "data" field,
 * else the first; names compared with their length), pushedge_read answers, CLUSTER SLOTS
 * ranges and pub/sub announcements, on reply trees built by hand; batch announcements
 * (pushedge_publish_batch): entries in order, JSON holding spaces, digits and the mark itself,
 * every prefix of a valid batch (refused unless it ends at an entry's end), each malformed form,
 * each read from a buffer of its exact size (ASan catches a read past it), and the single
 * parser refusing a batch (what an older node does with one); pushedge_publish_batch's answer
 * (IDs, replayed ones, prefixes, malformed separators and marks).
 *
 * Not covered: arbitrary trees and error strings (tests/fuzz/fuzz_redis_reply.c); following a
 * redirection (tests/e2e/cluster.test.mjs).
 */
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "tap.h"
#include "redis_reply.h"

static int
redirect(const char *s, pe_redis_redirect_t *r)
{
    return pe_redis_parse_redirect(s, strlen(s), r);
}

static void
test_redirect(void)
{
    pe_redis_redirect_t r;
    TAP_EQ_INT(redirect("MOVED 3999 127.0.0.1:6381", &r), 0, "MOVED");
    TAP_EQ_INT(r.ask, 0, "not ASK");
    TAP_EQ_UINT(r.slot, 3999, "slot");
    TAP_EQ_STR(r.host, "127.0.0.1", "host");
    TAP_EQ_UINT(r.port, 6381, "port");
    TAP_EQ_INT(redirect("ASK 16383 ::1:7000", &r), 0, "ASK with an IPv6 address");
    TAP_EQ_INT(r.ask, 1, "ASK");
    TAP_EQ_STR(r.host, "::1", "the host is up to the last colon");
    TAP_EQ_INT(redirect("MOVED 12 :6380", &r), 0, "an empty host (the node that answered)");
    TAP_EQ_STR(r.host, "", "empty host");

    static const char *bad[] = {
        "MOVED 16384 127.0.0.1:6379", /* slot out of range */
        "MOVED -1 127.0.0.1:6379",
        "MOVED +1 127.0.0.1:6379",
        "MOVED  1 127.0.0.1:6379",
        "MOVED 1  127.0.0.1:6379",
        "MOVED 1 127.0.0.1:99999", /* port out of range (was used truncated) */
        "MOVED 1 127.0.0.1:0",
        "MOVED 1 127.0.0.1:",
        "MOVED 1 127.0.0.1:63x9",
        "MOVED 1 127.0.0.1:6379 ",
        "MOVED 1 127.0.0.1",
        "MOVED 1",
        "MOVED ",
        "ASK",
        "ERR MOVED 1 a:1",
        "moved 1 a:1",
        "MOVED 1 a b:1",
        "MOVED 1 0123456789012345678901234567890123456789012345:1", /* 46 characters: longer than an address */
    };
    int accepted = 0;
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        if (redirect(bad[i], &r) == 0) {
            TAP_OK(0, "refused: %s", bad[i]);
            ++accepted;
        }
    }
    TAP_EQ_INT(accepted, 0, "every malformed redirection refused");
    TAP_EQ_INT(pe_redis_parse_redirect("MOVED 1 a:1\0x", 13, &r), -1, "bytes after the port (a NUL) refused");
}

/* Builders for reply trees on the stack. */
static redisReply
str(const char *s)
{
    return (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
}

static redisReply
num(long long v)
{
    return (redisReply){.type = REDIS_REPLY_INTEGER, .integer = v};
}

static redisReply
arr(redisReply **e, size_t n)
{
    return (redisReply){.type = REDIS_REPLY_ARRAY, .element = e, .elements = n};
}

static void
test_read(void)
{
    redisReply gap = num(1), base = str("3-0"), end = num(0), id = str("4-0"), data = str("[1]"), badid = str("x"), d2 = str("2");
    redisReply *els[] = {&gap, &base, &end, &id, &data, &badid, &d2};
    redisReply r = arr(els, 7);
    int g, e;
    pe_id_t b, eid;
    size_t n, len;
    const char *text;
    TAP_EQ_INT(pe_redis_parse_read(&r, &g, &b, &e, &n), 0, "read answer");
    TAP_EQ_INT(g, 1, "gap");
    TAP_EQ_INT(e, 0, "reached_end");
    TAP_EQ_UINT(b.ms, 3, "base");
    TAP_EQ_UINT(n, 2, "two pairs");
    TAP_EQ_INT(pe_redis_read_entry(&r, 0, &eid, &text, &len), 0, "first entry");
    TAP_EQ_MEM(text, len, "[1]", 3, "its data");
    TAP_EQ_INT(pe_redis_read_entry(&r, 1, &eid, &text, &len), -1, "a bad ID skips the entry");
    r.elements = 6;
    TAP_EQ_INT(pe_redis_parse_read(&r, &g, &b, &e, &n), -1, "an even count is not the shape");
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "ERR x", .len = 5};
    TAP_EQ_INT(pe_redis_parse_read(&err, &g, &b, &e, &n), -1, "an error reply");
}

static void
test_slots(void)
{
    redisReply from = num(0), to = num(16383), ip = str("10.0.0.1"), port = num(7000);
    redisReply *node[] = {&ip, &port};
    redisReply rnode = arr(node, 2);
    redisReply *els[] = {&from, &to, &rnode};
    redisReply r = arr(els, 3);
    unsigned f, t, p;
    const char *host;
    TAP_EQ_INT(pe_redis_slot_range(&r, &f, &t, &host, &p), 1, "a range");
    TAP_EQ_STR(host, "10.0.0.1", "its master");
    TAP_EQ_UINT(p, 7000, "port");
    to = num(16384);
    TAP_EQ_INT(pe_redis_slot_range(&r, &f, &t, &host, &p), -1, "slot 16384 is impossible");
    to = num(5);
    port = num(70000);
    TAP_EQ_INT(pe_redis_slot_range(&r, &f, &t, &host, &p), -1, "port 70000 is impossible");
    port = str("7000");
    TAP_EQ_INT(pe_redis_slot_range(&r, &f, &t, &host, &p), 0, "another shape is skipped");
}

static void
test_announcement(void)
{
    pe_id_t id;
    const char *json;
    size_t len;
    TAP_EQ_INT(pe_redis_parse_announcement("1-2 {\"a\":1}", 11, &id, &json, &len), 0, "announcement");
    TAP_EQ_MEM(json, len, "{\"a\":1}", 7, "its JSON");
    TAP_EQ_INT(pe_redis_parse_announcement("1-2", 3, &id, &json, &len), -1, "no space");
    TAP_EQ_INT(pe_redis_parse_announcement("x 1", 3, &id, &json, &len), -1, "no ID");
}

/* Reads every entry of a batch from a heap copy of exactly len bytes; returns the last result
 * (0: well-formed, -1: refused) and the number of entries read before it. */
static int
batch_walk(const char *text, size_t len, size_t *count)
{
    char *buf = malloc(len != 0 ? len : 1);
    memcpy(buf, text, len);
    size_t pos = 0;
    pe_id_t id;
    const char *json;
    size_t jlen;
    int r;
    *count = 0;
    while ((r = pe_redis_batch_next(buf, len, &pos, &id, &json, &jlen)) == 1) {
        if (json < buf || json + jlen > buf + len)
            r = -2; /* outside the payload: fails the caller's check */
        ++*count;
    }
    free(buf);
    return r;
}

static void
test_batch_announcement(void)
{
    /* Three entries: JSON with spaces and digits, a string holding the mark, an empty-length
     * value (no JSON, but the framing allows it: the engine's make_msg decides). */
    static const char b[] = "\x1d"
                            "1-2 9 {\"a\": 12}"
                            "1-3 5 \"\x1d"
                            "1 \""
                            "18446744073709551615-18446744073709551615 0 ";
    size_t len = sizeof(b) - 1;
    size_t pos = 0;
    pe_id_t id;
    const char *json;
    size_t jlen;
    TAP_EQ_INT(pe_redis_batch_next(b, len, &pos, &id, &json, &jlen), 1, "first entry");
    TAP_EQ_UINT(id.ms, 1, "its ms");
    TAP_EQ_UINT(id.seq, 2, "its seq");
    TAP_EQ_MEM(json, jlen, "{\"a\": 12}", 9, "its JSON");
    size_t end1 = pos;
    TAP_EQ_INT(pe_redis_batch_next(b, len, &pos, &id, &json, &jlen), 1, "second entry");
    TAP_EQ_UINT(id.seq, 3, "its seq");
    TAP_EQ_MEM(json, jlen,
               "\"\x1d"
               "1 \"",
               5, "its JSON, holding the mark and a space");
    size_t end2 = pos;
    TAP_EQ_INT(pe_redis_batch_next(b, len, &pos, &id, &json, &jlen), 1, "third entry");
    TAP_EQ_UINT(id.ms, UINT64_MAX, "the largest ID");
    TAP_EQ_UINT(jlen, 0, "an empty value");
    TAP_EQ_UINT(pos, len, "at the end");
    TAP_EQ_INT(pe_redis_batch_next(b, len, &pos, &id, &json, &jlen), 0, "end");
    TAP_EQ_UINT(pos, len, "pos kept at the end");

    /* Every prefix: well-formed only when it ends at an entry's end (one or two entries). */
    int bad = 0;
    for (size_t k = 0; k < len; ++k) {
        size_t n;
        int r = batch_walk(b, k, &n);
        int want = k == end1 || k == end2 ? 0 : -1;
        if (r != want) {
            ++bad;
            TAP_OK(0, "prefix of %zu bytes: %d, expected %d", k, r, want);
        }
    }
    TAP_EQ_INT(bad, 0, "every prefix of the batch: refused unless it ends at an entry's end");
    size_t n;
    TAP_EQ_INT(batch_walk(b, len, &n), 0, "the whole batch from an exact-size buffer");
    TAP_EQ_UINT(n, 3, "three entries");

    static const struct {
        const char *text;
        const char *why;
    } refused[] = {
        {"", "empty"},
        {"\x1d", "the mark alone"},
        {"1-2 1 x", "no mark (a single announcement)"},
        {"\x1d"
         "1-2 01 x",
         "a leading zero"},
        {"\x1d"
         "1-2 00 ",
         "two zeros"},
        {"\x1d"
         "1-2 12345678901 x",
         "11 digits"},
        {"\x1d"
         "1-2 2 x",
         "longer than the payload"},
        {"\x1d"
         "1-2 1x",
         "no space after the length"},
        {"\x1d"
         "1-2  1 x",
         "two spaces"},
        {"\x1d"
         "1-2 +1 x",
         "a sign"},
        {"\x1d"
         "1-2 -1 x",
         "a negative length"},
        {"\x1d"
         "x-2 1 x",
         "not an ID"},
        {"\x1d"
         "1-2",
         "an ID alone"},
        {"\x1d"
         "1-2 ",
         "no length"},
        {"\x1d"
         "1-2 1 x\x1d"
         "1-3 1 y",
         "the mark again between entries"},
        {"\x1d"
         "1-2 1 xz",
         "a byte after the last entry"},
    };
    for (size_t i = 0; i != sizeof(refused) / sizeof(refused[0]); ++i)
        TAP_EQ_INT(batch_walk(refused[i].text, strlen(refused[i].text), &n), -1, "refused: %s", refused[i].why);
    static const char zero[] = "\x1d"
                               "1-2 0 ";
    TAP_EQ_INT(batch_walk(zero, sizeof(zero) - 1, &n), 0, "a zero length");

    /* What a node of a version before batches does with one: its parser refuses it. */
    TAP_EQ_INT(pe_redis_parse_announcement(b, len, &id, &json, &jlen), -1, "a single announcement's parser refuses a batch");
}

/* Reads a whole pushedge_publish_batch answer from an exact-size copy: the last result, the IDs
 * read before it and how many were replayed. */
static int
reply_walk(const char *text, size_t len, size_t *count, size_t *replays)
{
    char *buf = malloc(len != 0 ? len : 1);
    memcpy(buf, text, len);
    size_t pos = 0;
    pe_id_t id;
    int replayed, r;
    *count = *replays = 0;
    while ((r = pe_redis_batch_reply_next(buf, len, &pos, &id, &replayed)) == 1) {
        ++*count;
        *replays += replayed;
    }
    free(buf);
    return r;
}

static void
test_batch_reply(void)
{
    static const char a[] = "1-2 1-3 =1-2 18446744073709551615-0";
    size_t len = sizeof(a) - 1, pos = 0;
    pe_id_t id;
    int replayed;
    TAP_EQ_INT(pe_redis_batch_reply_next(a, len, &pos, &id, &replayed), 1, "first ID");
    TAP_EQ_UINT(id.seq, 2, "its seq");
    TAP_EQ_INT(replayed, 0, "stored");
    TAP_EQ_INT(pe_redis_batch_reply_next(a, len, &pos, &id, &replayed), 1, "second ID");
    TAP_EQ_UINT(id.seq, 3, "its seq");
    TAP_EQ_INT(pe_redis_batch_reply_next(a, len, &pos, &id, &replayed), 1, "third ID");
    TAP_EQ_UINT(id.seq, 2, "the first one's");
    TAP_EQ_INT(replayed, 1, "replayed");
    TAP_EQ_INT(pe_redis_batch_reply_next(a, len, &pos, &id, &replayed), 1, "fourth ID");
    TAP_EQ_UINT(id.ms, UINT64_MAX, "the largest ms");
    TAP_EQ_INT(pe_redis_batch_reply_next(a, len, &pos, &id, &replayed), 0, "end");
    size_t n, rp;
    TAP_EQ_INT(reply_walk(a, len, &n, &rp), 0, "whole, from an exact-size buffer");
    TAP_EQ_UINT(n, 4, "four IDs");
    TAP_EQ_UINT(rp, 1, "one replayed");
    TAP_EQ_INT(reply_walk("=7-7", 4, &n, &rp), 0, "one replayed ID alone");
    int bad = 0;
    for (size_t k = 0; k < len; ++k) {
        /* A prefix is well-formed where it ends after a whole ID: before a space. */
        int want = k != 0 && a[k] == ' ' && a[k - 1] != ' ' ? 0 : -1;
        /* ... or inside the last ID at a point that is itself an ID ("18446744073709551615-0" cut
         * after its dash is not one; cut inside its digits it may be). */
        int r = reply_walk(a, k, &n, &rp);
        if (want == 0 && r != 0)
            ++bad, TAP_OK(0, "prefix of %zu bytes refused", k);
        if (k != 0 && a[k - 1] == ' ' && r != -1)
            ++bad, TAP_OK(0, "prefix of %zu bytes (a trailing space) accepted", k);
    }
    TAP_EQ_INT(bad, 0, "prefixes: accepted before each separator, refused with a trailing space");
    static const char *const refused[] = {"",      " ",     "1-2 ", " 1-2",  "1-2  1-3", "=",
                                          "1-2 =", "==1-2", "x",    "1-2 x", "1-2,1-3",  "-1-2"};
    for (size_t i = 0; i != sizeof(refused) / sizeof(refused[0]); ++i)
        TAP_EQ_INT(reply_walk(refused[i], strlen(refused[i]), &n, &rp), -1, "refused: \"%s\"", refused[i]);
}

int
main(void)
{
    tap_subtest("redirect", test_redirect);
    tap_subtest("read", test_read);
    tap_subtest("cluster slots", test_slots);
    tap_subtest("announcement", test_announcement);
    tap_subtest("batch announcement", test_batch_announcement);
    tap_subtest("batch answer", test_batch_reply);
    return tap_done();
}

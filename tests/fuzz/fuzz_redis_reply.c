/*
 * libFuzzer driver for pubsub/redis_reply.c: the Redis engine's reading of replies.
 *
 * The first byte picks a driver (modulo 3), the rest is its input.
 *   0  pe_redis_parse_redirect over the bytes as an error string. Checks: an accepted error
 *      starts with "MOVED " or "ASK " (ask set accordingly), slot < 16384, port 1..65535, the
 *      host NUL-terminated with no space; printed back as "<KIND> <slot> <host>:<port>" and
 *      parsed again it gives the same fields (printing is canonical, so an accepted input
 *      without leading zeros is that text exactly). The same bytes as a pub/sub payload: the
 *      batch announcement reader (pe_redis_batch_next) walks them from an exact-size copy.
 *      Checks: it ends (pos strictly grows), every entry's JSON lies inside the payload after
 *      a space and ends the entry, IDs format and parse back, a well-formed end is exactly the
 *      payload's end after at least one entry; a payload that starts with the mark is never
 *      taken for a single announcement. And as pushedge_publish_batch's answer
 *      (pe_redis_batch_reply_next): it ends, each ID ends at a space or the end, IDs format and
 *      parse back, a well-formed end is the text's end after at least one ID.
 *   1  a redirection built from input fields (kind, slot, port, host bytes without ':' NUL or
 *      space, or an IPv6 address with colons) must be accepted with exactly those fields.
 *   2  a synthetic hiredis reply tree decoded from the bytes (types, integers, strings with
 *      any bytes, arrays up to 8 deep and 16 wide) is given to every reply reader, as a whole
 *      and at each of its array elements. Checks: no read outside the tree (ASan), borrowed
 *      pointers inside its strings, IDs that format and parse back, ranges and ports in
 *      bounds, entry indices below the count.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "redis_reply.h"
#include "fuzz.h"

#define MAX_DEPTH 8
#define MAX_WIDTH 16

/* ---- 0, 1: redirections ------------------------------------------------------------------- */

static void check_id(pe_id_t id);

/* A pub/sub payload as a batch announcement (the bytes of driver 0 and every string of a tree). */
static void
check_batch_text(const char *s, size_t len)
{
    char *copy = malloc(len != 0 ? len : 1); /* exact size */
    CHECK(copy != NULL);
    memcpy(copy, s, len);
    size_t pos = 0, last = 0, count = 0;
    pe_id_t id;
    const char *json;
    size_t jlen;
    int r;
    while ((r = pe_redis_batch_next(copy, len, &pos, &id, &json, &jlen)) == 1) {
        CHECK(pos > last && pos <= len);
        /* "<id> <length> <json>": the JSON ends the entry, after a space, past the ID */
        CHECK(json > copy + last + 3 && json + jlen == copy + pos && json[-1] == ' ');
        check_id(id);
        last = pos;
        ++count;
    }
    CHECK(r == 0 || r == -1);
    if (r == 0)
        CHECK(count >= 1 && pos == len);
    /* The same bytes as pushedge_publish_batch's answer. */
    pos = last = count = 0;
    int replayed;
    while ((r = pe_redis_batch_reply_next(copy, len, &pos, &id, &replayed)) == 1) {
        CHECK(pos > last && pos <= len && (replayed == 0 || replayed == 1));
        CHECK(pos == len || copy[pos] == ' ');
        check_id(id);
        last = pos;
        ++count;
    }
    CHECK(r == 0 || r == -1);
    if (r == 0)
        CHECK(count >= 1 && pos == len);
    pe_id_t sid;
    const char *sjson;
    size_t slen;
    if (len != 0 && copy[0] == PE_REDIS_BATCH_MARK)
        CHECK(pe_redis_parse_announcement(copy, len, &sid, &sjson, &slen) != 0);
    free(copy);
}

static void
check_redirect_text(const char *s, size_t len)
{
    pe_redis_redirect_t r, again;
    char *copy = malloc(len + 1); /* exact size (+1 never read by the parser: len is passed) */
    CHECK(copy != NULL);
    memcpy(copy, s, len);
    if (pe_redis_parse_redirect(copy, len, &r) == 0) {
        CHECK(memcmp(copy, r.ask ? "ASK " : "MOVED ", r.ask ? 4 : 6) == 0);
        CHECK(r.slot < PE_REDIS_SLOTS && r.port >= 1 && r.port <= 65535);
        size_t hl = strnlen(r.host, sizeof(r.host));
        CHECK(hl < sizeof(r.host) && memchr(r.host, ' ', hl) == NULL);
        char buf[128];
        int n = snprintf(buf, sizeof(buf), "%s %u %s:%u", r.ask ? "ASK" : "MOVED", r.slot, r.host, r.port);
        CHECK(n > 0 && (size_t)n < sizeof(buf));
        CHECK(pe_redis_parse_redirect(buf, (size_t)n, &again) == 0);
        CHECK(again.ask == r.ask && again.slot == r.slot && again.port == r.port && strcmp(again.host, r.host) == 0);
        CHECK((size_t)n <= len);
    }
    free(copy);
}

static void
check_redirect_built(const uint8_t *d, size_t size)
{
    if (size < 5)
        return;
    int ask = d[0] & 1, ipv6 = d[0] & 2;
    unsigned slot = ((unsigned)d[1] << 8 | d[2]) % PE_REDIS_SLOTS, port = ((unsigned)d[3] << 8 | d[4]);
    if (port == 0)
        port = 6379;
    char host[PE_REDIS_HOST_MAX];
    size_t hl = 0;
    for (size_t i = 5; i != size && hl + 1 < sizeof(host); ++i) {
        char c = (char)d[i];
        if (c == ' ' || c == '\0' || (c == ':' && !ipv6))
            continue;
        host[hl++] = c;
    }
    host[hl] = '\0';
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "%s %u %s:%u", ask ? "ASK" : "MOVED", slot, host, port);
    pe_redis_redirect_t r;
    CHECK(pe_redis_parse_redirect(buf, (size_t)n, &r) == 0);
    CHECK(r.ask == ask && r.slot == slot && r.port == port && strcmp(r.host, host) == 0);
}

/* ---- 2: reply trees -------------------------------------------------------------------------- */

typedef struct st_input_t {
    const uint8_t *p, *end;
} input_t;

static unsigned
take(input_t *in)
{
    return in->p != in->end ? *in->p++ : 0;
}

/* Decodes one reply; NULL at the end of the input for an array element (the array is cut). */
static redisReply *
decode(input_t *in, int depth)
{
    if (in->p == in->end)
        return NULL;
    redisReply *r = calloc(1, sizeof(*r));
    CHECK(r != NULL);
    unsigned t = take(in) % 6;
    switch (t) {
    case 0:
    case 1:
    case 2: {
        /* string, error or status: a length byte, then that many bytes; NUL-terminated like
         * hiredis, and allocated at exactly len + 1 so a read past the NUL is caught */
        static const int types[] = {REDIS_REPLY_STRING, REDIS_REPLY_ERROR, REDIS_REPLY_STATUS};
        r->type = types[t];
        size_t len = take(in);
        if (len > (size_t)(in->end - in->p))
            len = (size_t)(in->end - in->p);
        r->str = malloc(len + 1);
        CHECK(r->str != NULL);
        memcpy(r->str, in->p, len);
        r->str[len] = '\0';
        r->len = len;
        in->p += len;
    } break;
    case 3: {
        r->type = REDIS_REPLY_INTEGER;
        /* small values are the interesting ones (slots, ports, flags); a marker byte makes the
         * next eight bytes a full 64-bit value */
        unsigned b = take(in);
        if (b == 0xff) {
            uint64_t v = 0;
            for (int i = 0; i != 8; ++i)
                v = v << 8 | take(in);
            r->integer = (long long)v;
        } else {
            r->integer = (long long)b * 257 - 128;
        }
    } break;
    case 4:
        r->type = REDIS_REPLY_NIL;
        break;
    default: {
        r->type = REDIS_REPLY_ARRAY;
        size_t n = depth < MAX_DEPTH ? take(in) % (MAX_WIDTH + 1) : 0;
        r->element = n != 0 ? calloc(n, sizeof(*r->element)) : NULL;
        for (size_t i = 0; i != n; ++i) {
            redisReply *e = decode(in, depth + 1);
            if (e == NULL) {
                n = i;
                break;
            }
            r->element[i] = e;
        }
        r->elements = n;
    } break;
    }
    return r;
}

static void
release(redisReply *r)
{
    for (size_t i = 0; i != r->elements; ++i)
        release(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* 1 if p[0..len) lies inside one string of the tree. */
static int
borrowed_from(const redisReply *r, const char *p, size_t len)
{
    if (r->str != NULL && p >= r->str && p <= r->str + r->len && len <= (size_t)(r->str + r->len - p))
        return 1;
    for (size_t i = 0; i != r->elements; ++i)
        if (borrowed_from(r->element[i], p, len))
            return 1;
    return 0;
}

static void
check_id(pe_id_t id)
{
    char buf[PE_ID_MAXLEN + 1];
    pe_id_t again;
    size_t n = pe_id_format(id, buf);
    CHECK(n <= PE_ID_MAXLEN && pe_id_parse(buf, n, &again) == 0 && pe_id_cmp(id, again) == 0);
}

static void
check_tree(const redisReply *root, const redisReply *r)
{
    pe_id_t id;
    const char *data;
    size_t len, n;
    int gap, reached_end;

    if (pe_redis_parse_read(r, &gap, &id, &reached_end, &n) == 0) {
        CHECK(r->type == REDIS_REPLY_ARRAY && 3 + 2 * n == r->elements);
        CHECK((gap == 0 || gap == 1) && (reached_end == 0 || reached_end == 1));
        check_id(id);
        for (size_t i = 0; i != n; ++i) {
            if (pe_redis_read_entry(r, i, &id, &data, &len) == 0) {
                check_id(id);
                CHECK(borrowed_from(root, data, len));
            }
        }
    }
    unsigned from, to, port;
    const char *host;
    int k = pe_redis_slot_range(r, &from, &to, &host, &port);
    CHECK(k >= -1 && k <= 1);
    if (k == 1) {
        CHECK(from <= to && to < PE_REDIS_SLOTS && port >= 1 && port <= 65535);
        CHECK(strlen(host) < PE_REDIS_HOST_MAX && borrowed_from(r, host, strlen(host)));
    }
    if (r->type == REDIS_REPLY_STRING) {
        check_batch_text(r->str, r->len);
        if (pe_redis_parse_announcement(r->str, r->len, &id, &data, &len) == 0) {
            check_id(id);
            CHECK(data > r->str && data + len == r->str + r->len && data[-1] == ' ');
        }
    }
    if (r->type == REDIS_REPLY_ERROR)
        check_redirect_text(r->str, r->len);
    for (size_t i = 0; i != r->elements; ++i)
        check_tree(root, r->element[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        check_redirect_text((const char *)data + 1, size - 1);
        check_batch_text((const char *)data + 1, size - 1);
        break;
    case 1:
        check_redirect_built(data + 1, size - 1);
        break;
    default: {
        input_t in = {data + 1, data + size};
        redisReply *r = decode(&in, 0);
        if (r != NULL) {
            check_tree(r, r);
            release(r);
        }
    } break;
    }
    return 0;
}

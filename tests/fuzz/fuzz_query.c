/*
 * libFuzzer target for edge/util/query.c: pe_sub_query_parse and pe_query_get over arbitrary bytes,
 * each given exact-size heap buffers (input, arena, output) so that any read or write past
 * them is an ASan error. Beyond "no crash", it checks what a caller relies on:
 *   - a success has 1..64 valid, distinct channel names that lie inside the arena and fit in it;
 *   - a failure sets both the code (one of the documented five) and the message;
 *   - on success, pe_query_get(qs, "channel") decodes the first channel exactly;
 *   - a parsed multi-channel cursor formats back to a cursor that parses to the same entries;
 *   - the decoders never produce more bytes than they were given;
 *   - pe_query_redact (the logged request target) stays within its buffer, is NUL-terminated,
 *     never grows the input, and leaves no parameter whose name decodes to "token".
 * Built with edge/util/query.c, pubsub/cursor.c and pubsub/stream_id.c compiled in (no loop needed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edge/util/query.h"
#include "pubsub/cursor.h"
#include "pubsub/stream_id.h"
#include "fuzz.h"

/* An invariant that must hold for every input; abort() makes libFuzzer keep the input. */

static const char *const known_codes[] = {"bad_channel", "bad_cursor", "missing_channel", "too_many_channels", "bad_query"};

static int
is_known_code(const char *code)
{
    for (size_t i = 0; i != sizeof(known_codes) / sizeof(known_codes[0]); ++i)
        if (strcmp(code, known_codes[i]) == 0)
            return 1;
    return 0;
}

static void
check_parsed(const pe_sub_query_t *q, const char *arena, size_t len)
{
    size_t used = 0;

    CHECK(q->num_channels >= 1 && q->num_channels <= PE_CURSOR_MAX_ENTRIES);
    for (size_t i = 0; i != q->num_channels; ++i) {
        const char *name = q->channels[i].name;
        size_t nl = q->channels[i].len;
        CHECK(pe_channel_is_valid(name, nl));
        CHECK(name >= arena && nl <= len && (size_t)(name - arena) <= len - nl);
        for (size_t j = 0; j != i; ++j)
            CHECK(q->channels[j].len != nl || memcmp(q->channels[j].name, name, nl) != 0);
        used += nl;
    }
    CHECK(used <= len);
    CHECK(q->padding == 0 || q->padding == 1);

    if (!q->has_since) {
        CHECK(q->since.kind == PE_CURSOR_NONE);
    } else if (q->since.kind == PE_CURSOR_MULTI) {
        char buf[PE_CURSOR_MAXLEN + 1];
        pe_cursor_t again;
        CHECK(q->since.num_entries >= 1 && q->since.num_entries <= PE_CURSOR_MAX_ENTRIES);
        size_t n = pe_cursor_format(q->since.entries, q->since.num_entries, buf, sizeof(buf));
        CHECK(n != 0);
        CHECK(pe_cursor_parse(buf, n, &again, NULL) == 0);
        CHECK(again.num_entries == q->since.num_entries || q->since.num_entries == 1);
        for (size_t i = 0; i != q->since.num_entries; ++i) {
            pe_id_t pos;
            if (again.kind == PE_CURSOR_MULTI) {
                CHECK(again.entries[i].tag == q->since.entries[i].tag);
                pos = again.entries[i].pos;
            } else {
                /* One entry formats as the plain ID. */
                CHECK(again.kind == PE_CURSOR_ID);
                pos = again.id;
            }
            CHECK(pe_id_cmp(pos, q->since.entries[i].pos) == 0);
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact sizes: malloc(0) still returns a unique pointer with no usable byte. */
    char *qs = malloc(size), *arena = malloc(size), *out = malloc(size);
    if (size != 0 && (qs == NULL || arena == NULL || out == NULL))
        abort();
    if (size != 0)
        memcpy(qs, data, size);

    pe_sub_query_t q;
    const char *code = NULL, *err = NULL;
    int ret = pe_sub_query_parse(qs, size, &q, arena, &code, &err);
    if (ret == 0) {
        check_parsed(&q, arena, size);
    } else {
        CHECK(ret == -1);
        CHECK(code != NULL && is_known_code(code));
        CHECK(err != NULL && err[0] != '\0');
    }

    long got = pe_query_get(qs, size, "channel", out);
    CHECK(got >= -2 && got <= (long)size);
    if (ret == 0) {
        /* The first channel parameter is the first channel (later repeats are folded). */
        CHECK(got >= 0 && (size_t)got == q.channels[0].len && memcmp(out, q.channels[0].name, (size_t)got) == 0);
    }
    got = pe_query_get(qs, size, "since", out);
    CHECK(got >= -2 && got <= (long)size);
    long decoded = pe_query_decode(qs, size, out);
    CHECK(decoded >= -1 && decoded <= (long)size);

    /* As a request target: "/p?" + the input. */
    char *target = malloc(size + 3), *logged = malloc(size + 4);
    if (target == NULL || logged == NULL)
        abort();
    memcpy(target, "/p?", 3);
    if (size != 0)
        memcpy(target + 3, data, size);
    size_t rl = pe_query_redact(target, size + 3, logged, size + 4);
    CHECK(rl <= size + 3 && logged[rl] == '\0');
    const char *params = memchr(logged, '?', rl);
    for (const char *p = params != NULL ? params + 1 : logged + rl; p < logged + rl;) {
        const char *amp = memchr(p, '&', (size_t)(logged + rl - p)), *pe = amp != NULL ? amp : logged + rl;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        size_t nl = (size_t)((eq != NULL ? eq : pe) - p);
        char name[16];
        long dl = nl < sizeof(name) ? pe_query_decode(p, nl, name) : -1;
        CHECK(!(dl == 5 && memcmp(name, "token", 5) == 0));
        p = pe + 1;
    }
    free(target);
    free(logged);

    free(qs);
    free(arena);
    free(out);
    return 0;
}

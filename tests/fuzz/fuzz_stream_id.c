/*
 * libFuzzer driver for pubsub/stream_id.c.
 *
 * pe_id_parse is compared with an independent oracle written from the rule text (one dash; each
 * side 1..20 ASCII digits; a 20-digit side compared as a string against UINT64_MAX, which works
 * because equal-length digit strings order like their values). A parsed ID must format to at
 * most the input's length (leading zeros drop), to exactly the input when it has none, and
 * parse back to itself. pe_id_next on the parsed ID, with clocks behind, at and ahead of it and
 * one taken from the input, must give the larger of the ID's successor and now-0, or report
 * exhaustion exactly at UINT64_MAX-UINT64_MAX. pe_channel_is_valid is compared with its own oracle. Results feed a
 * volatile sink so nothing is optimised away.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "stream_id.h"
#include "fuzz.h"

static volatile size_t sink;

/* Like assert, but never compiled out, and names the broken property in the crash report. */

static int
oracle_part(const char *s, size_t len)
{
    if (len < 1 || len > 20)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return len < 20 || memcmp(s, "18446744073709551615", 20) <= 0;
}

static int
oracle_id(const char *s, size_t len)
{
    size_t dashes = 0, at = 0;

    for (size_t i = 0; i != len; ++i) {
        if (s[i] == '-') {
            ++dashes;
            at = i;
        }
    }
    return dashes == 1 && oracle_part(s, at) && oracle_part(s + at + 1, len - at - 1);
}

static int
oracle_channel(const char *s, size_t len)
{
    static const char allowed[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@";

    if (len < 1 || len > PE_CHANNEL_MAXLEN)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (s[i] == '\0' || strchr(allowed, s[i]) == NULL)
            return 0;
    return 1;
}

/*
 * The Redis rule restated as an order property: the next ID is the larger of last's successor
 * and now-0, and only MAX-MAX has no successor.
 */
static void
check_next(pe_id_t last, uint64_t now)
{
    pe_id_t next = {0, 0}, succ, clock = {now, 0};
    int ret = pe_id_next(last, now, &next);

    if (last.ms == UINT64_MAX && last.seq == UINT64_MAX) {
        CHECK(ret == -1);
        return;
    }
    succ = last.seq != UINT64_MAX ? (pe_id_t){last.ms, last.seq + 1} : (pe_id_t){last.ms + 1, 0};
    CHECK(ret == 0);
    CHECK(pe_id_cmp(next, pe_id_cmp(succ, clock) > 0 ? succ : clock) == 0);
    sink += (size_t)next.seq;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    pe_id_t id = {0, 0}, back = {1, 1};
    char buf[PE_ID_MAXLEN + 1];
    size_t len;
    int ok = pe_id_parse(s, size, &id) == 0, valid = pe_channel_is_valid(s, size);

    CHECK(ok == oracle_id(s, size));
    CHECK(valid == oracle_channel(s, size));
    sink += (size_t)valid;
    if (!ok)
        return 0;

    len = pe_id_format(id, buf);
    CHECK(len == strlen(buf) && len <= PE_ID_MAXLEN && len <= size);
    {
        /* Without leading zeros the input is the canonical spelling, and format gives it back. */
        const char *dash = memchr(s, '-', size);
        size_t ms_len = (size_t)(dash - s), seq_len = size - ms_len - 1;
        if (!(ms_len > 1 && s[0] == '0') && !(seq_len > 1 && dash[1] == '0'))
            CHECK(len == size && memcmp(buf, s, size) == 0);
    }
    CHECK(pe_id_parse(buf, len, &back) == 0 && pe_id_cmp(back, id) == 0);

    check_next(id, 0);
    check_next(id, id.ms);
    check_next(id, id.ms - 1);
    check_next(id, id.ms + 1);
    check_next(id, id.seq);
    check_next(id, UINT64_MAX);
    sink += len;
    return 0;
}

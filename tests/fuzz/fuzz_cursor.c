/*
 * libFuzzer driver for pe_cursor_parse / pe_cursor_format / pe_cursor_position.
 *
 * Every input is parsed. A failure must come with a static message. A success must be
 * consistent with its kind (NONE only for "", OLDEST only for "0"), and must survive format
 * and re-parse: an ID comes back as the same ID; a multi cursor of two or more entries comes
 * back with the same entries *and the same bytes* (the form is canonical, so any second
 * spelling the parser accepted would show up here); a one-entry multi cursor comes back as the
 * plain ID of its position. Formatting is also tried with one byte too little room, into an
 * exact-size heap buffer so ASan sees any write past cap. Position lookup is checked against a
 * linear scan, with a channel name taken from the input. The input is also read as raw entries
 * to format (check_format_raw), which covers values and tag collisions that no valid cursor
 * holds. Results feed a volatile sink so the optimiser keeps every call.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cursor.h"
#include "fuzz.h"

static volatile size_t sink;

/* Like assert, but never compiled out, and names the broken property in the crash report. */

/* Formats n entries into an exact-size heap buffer and returns it (caller frees); also checks
 * that one byte less is refused without a write past cap. */
static char *
format_exact(const pe_cursor_entry_t *entries, size_t n, size_t *len)
{
    char probe[PE_CURSOR_MAXLEN + 1], *buf;

    *len = pe_cursor_format(entries, n, probe, sizeof(probe));
    CHECK(*len != 0 && *len <= PE_CURSOR_MAXLEN && strlen(probe) == *len);
    buf = malloc(*len + 1);
    CHECK(buf != NULL);
    CHECK(pe_cursor_format(entries, n, buf, *len) == 0);
    CHECK(pe_cursor_format(entries, n, buf, *len + 1) == *len);
    CHECK(memcmp(buf, probe, *len + 1) == 0);
    return buf;
}

static void
check_position(const pe_cursor_t *c, const char *name, size_t name_len)
{
    pe_id_t pos = {0, 0};
    int found = pe_cursor_position(c, name, name_len, &pos), want = 0;
    pe_id_t want_pos = {0, 0};

    if (c->kind == PE_CURSOR_ID) {
        want = 1;
        want_pos = c->id;
    } else if (c->kind == PE_CURSOR_MULTI) {
        uint32_t tag = pe_cursor_tag(name, name_len);
        for (size_t i = 0; i != c->num_entries; ++i) {
            if (c->entries[i].tag == tag) {
                want = 1;
                want_pos = c->entries[i].pos;
                break;
            }
        }
    }
    CHECK(found == want);
    CHECK(!found || pe_id_cmp(pos, want_pos) == 0);
    sink += (size_t)found + (size_t)pos.ms;
}

/*
 * The same bytes read as raw entries (a 1-byte tag below 0x80, so that collisions are common,
 * else a 4-byte one; then 8-byte ms and seq): whatever the entries, format must succeed and
 * produce a cursor that parses, holding exactly the first entry of each distinct tag.
 */
static void
check_format_raw(const uint8_t *data, size_t size)
{
    pe_cursor_entry_t e[PE_CURSOR_MAX_ENTRIES];
    char buf[PE_CURSOR_MAXLEN + 1];
    size_t n = 0, distinct = 0, len;
    pe_cursor_t c;

    while (n != PE_CURSOR_MAX_ENTRIES && size >= 20) {
        if (data[0] < 0x80) {
            e[n].tag = data[0];
            data += 1;
            size -= 1;
        } else {
            memcpy(&e[n].tag, data, 4);
            data += 4;
            size -= 4;
        }
        memcpy(&e[n].pos.ms, data, 8);
        memcpy(&e[n].pos.seq, data + 8, 8);
        data += 16;
        size -= 16;
        ++n;
    }
    if (n == 0)
        return;

    len = pe_cursor_format(e, n, buf, sizeof(buf));
    CHECK(len != 0 && len == strlen(buf));
    CHECK(pe_cursor_parse(buf, len, &c, NULL) == 0);
    if (n == 1) {
        CHECK(c.kind == PE_CURSOR_ID && pe_id_cmp(c.id, e[0].pos) == 0);
        return;
    }
    CHECK(c.kind == PE_CURSOR_MULTI);
    for (size_t i = 0; i != n; ++i) {
        size_t first = 0, k;
        while (e[first].tag != e[i].tag)
            ++first;
        distinct += first == i;
        for (k = 0; k != c.num_entries && c.entries[k].tag != e[i].tag; ++k)
            ;
        CHECK(k != c.num_entries && pe_id_cmp(c.entries[k].pos, e[first].pos) == 0);
    }
    CHECK(c.num_entries == distinct);
    sink += len;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *err = NULL;
    pe_cursor_t c, back;
    pe_cursor_entry_t one;
    size_t len;
    char *buf;

    check_format_raw(data, size);

    if (pe_cursor_parse(s, size, &c, &err) != 0) {
        CHECK(err != NULL && strncmp(err, "cursor ", 7) == 0);
        sink += strlen(err);
        return 0;
    }

    check_position(&c, s, size < 16 ? size : 16);
    check_position(&c, "news", 4);

    switch (c.kind) {
    case PE_CURSOR_NONE:
        CHECK(size == 0);
        return 0;
    case PE_CURSOR_OLDEST:
        CHECK(size == 1 && s[0] == '0');
        return 0;
    case PE_CURSOR_ID:
        one = (pe_cursor_entry_t){0, c.id};
        buf = format_exact(&one, 1, &len);
        /* Decimal IDs may carry leading zeros, so the bytes may shrink but never grow. */
        CHECK(len <= size);
        CHECK(pe_cursor_parse(buf, len, &back, NULL) == 0);
        CHECK(back.kind == PE_CURSOR_ID && pe_id_cmp(back.id, c.id) == 0);
        break;
    case PE_CURSOR_MULTI:
        CHECK(c.num_entries >= 1 && c.num_entries <= PE_CURSOR_MAX_ENTRIES);
        for (size_t i = 0; i != c.num_entries; ++i)
            for (size_t j = 0; j != i; ++j)
                CHECK(c.entries[i].tag != c.entries[j].tag);
        buf = format_exact(c.entries, c.num_entries, &len);
        CHECK(pe_cursor_parse(buf, len, &back, NULL) == 0);
        if (c.num_entries == 1) {
            CHECK(back.kind == PE_CURSOR_ID && pe_id_cmp(back.id, c.entries[0].pos) == 0);
        } else {
            CHECK(len == size && memcmp(buf, s, size) == 0);
            CHECK(back.kind == PE_CURSOR_MULTI && back.num_entries == c.num_entries);
            for (size_t i = 0; i != c.num_entries; ++i)
                CHECK(back.entries[i].tag == c.entries[i].tag && pe_id_cmp(back.entries[i].pos, c.entries[i].pos) == 0);
        }
        break;
    default:
        abort();
    }
    sink += len + (size_t)buf[0];
    free(buf);
    return 0;
}

/*
 * Unit tests for edge/wire/ws_frame.c, the RFC 6455 frame reader, the UTF-8 validator and the frame
 * header and close payload encoders.
 *
 * Reader vectors: the RFC 6455 5.7 examples (masked "Hello", a masked pong; the unmasked ones
 * must be rejected), fragmented "Hel" + "lo", a ping, 256-byte and 64 KiB binary messages with
 * 16- and 64-bit lengths, empty frames and messages, fragmentation with pings and pongs
 * interleaved, close frames (no body, code + reason, every valid and invalid code class, reason
 * UTF-8, 1-byte body), every reserved-bit and opcode rule, continuation and interleaving rules,
 * control frame limits, the 64-bit length high bit, non-minimal lengths, the message size limit
 * (1009 as soon as the header announces it, across fragments), UTF-8 across fragments split
 * inside a code point, fail-fast 1007 on a frame that never completes, and an incomplete
 * sequence at message end. Each vector is fed whole (also from a guard-paged buffer), split in
 * two at every offset, and one byte at a time, every chunk at the end of an exact-size malloc'd
 * buffer; all must give the same events, and an error at the same stream offset (the byte that
 * decides it). After an error the driver checks that the reader stays failed.
 *
 * UTF-8: a Markus Kuhn style table (boundaries, overlongs, surrogates, 5/6-byte forms, stray
 * continuation bytes, truncations) whole and split at every byte, with the exact byte where
 * each invalid sequence must fail; an ASCII run with one bad byte at every offset (the word-at-
 * a-time fast path); and a comparison with a decoder-based oracle over every 1- and 2-byte
 * sequence, every 3-byte one that does not start with a stray continuation byte, and every 4-byte
 * one with a lead byte F0-FF, any continuation second byte and boundary values after it.
 *
 * Not covered here: permessage-deflate (ws_deflate.c) and the socket glue (edge/ws/ws.c); the fuzz
 * target fuzz_ws_frame covers arbitrary input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tap.h"
#include "edge/wire/ws_frame.h"

/* ---- building inputs ----------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void
buf_add(buf_t *b, const void *s, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    if (len != 0)
        memcpy(b->p + b->len, s, len);
    b->len += len;
}

static void
buf_byte(buf_t *b, uint8_t c)
{
    buf_add(b, &c, 1);
}

/* The RFC 6455 5.7 key; frames built here rotate through it and two others. */
static const uint8_t keys[3][4] = {{0x37, 0xfa, 0x21, 0x3d}, {0x00, 0x00, 0x00, 0x00}, {0xde, 0xad, 0xbe, 0xef}};
static unsigned key_next;

/* Appends a client frame: byte 0 as given, masked, shortest length form. */
static void
buf_frame(buf_t *b, uint8_t b0, const void *payload, size_t len)
{
    const uint8_t *key = keys[key_next++ % 3], *s = payload;

    buf_byte(b, b0);
    if (len < 126) {
        buf_byte(b, (uint8_t)(0x80 | len));
    } else if (len <= 0xffff) {
        buf_byte(b, 0x80 | 126);
        buf_byte(b, (uint8_t)(len >> 8));
        buf_byte(b, (uint8_t)len);
    } else {
        buf_byte(b, 0x80 | 127);
        for (int i = 0; i != 8; ++i)
            buf_byte(b, (uint8_t)((uint64_t)len >> (56 - 8 * i)));
    }
    buf_add(b, key, 4);
    for (size_t i = 0; i != len; ++i)
        buf_byte(b, s[i] ^ key[i % 4]);
}

static void
buf_frame_str(buf_t *b, uint8_t b0, const char *s)
{
    buf_frame(b, b0, s, strlen(s));
}

/* A close frame with a code and a reason. */
static void
buf_close(buf_t *b, unsigned code, const char *reason)
{
    uint8_t body[125];
    size_t rlen = strlen(reason);

    body[0] = (uint8_t)(code >> 8);
    body[1] = (uint8_t)code;
    memcpy(body + 2, reason, rlen);
    buf_frame(b, 0x88, body, 2 + rlen);
}

/* ---- running the reader -------------------------------------------------------------------- */

typedef struct {
    pe_ws_event_kind_t kind;
    int opcode, compressed, code;
    uint8_t *payload;
    size_t payload_len;
    size_t at; /* stream offset after the bytes consumed for this event */
} rec_t;

#define MAX_EVENTS 64

typedef struct {
    rec_t ev[MAX_EVENTS];
    size_t n;
    const char *broken; /* the first broken contract of pe_ws_reader_feed seen, or NULL */
} trace_t;

static void
trace_clear(trace_t *t)
{
    for (size_t i = 0; i != t->n; ++i)
        free(t->ev[i].payload);
    t->n = 0;
    t->broken = NULL;
}

/* Records ev (copying its payload, which the next call invalidates). Returns 0 once an error ended the stream. */
static int
trace_add(trace_t *t, const pe_ws_event_t *ev, size_t at)
{
    rec_t *rec;

    if (t->n == MAX_EVENTS) {
        t->broken = "too many events";
        return 0;
    }
    rec = &t->ev[t->n++];
    rec->kind = ev->kind;
    rec->opcode = ev->kind == PE_WS_EV_MESSAGE ? ev->opcode : 0;
    rec->compressed = ev->kind == PE_WS_EV_MESSAGE ? ev->compressed : 0;
    rec->code = ev->kind == PE_WS_EV_CLOSE || ev->kind == PE_WS_EV_ERROR ? ev->code : 0;
    rec->payload_len = ev->kind == PE_WS_EV_ERROR ? 0 : ev->payload_len;
    rec->payload = malloc(rec->payload_len + 1);
    rec->at = at;
    if (rec->payload_len != 0) {
        if (ev->payload == NULL) {
            t->broken = "NULL payload";
            return 0;
        }
        memcpy(rec->payload, ev->payload, rec->payload_len);
    }
    if (ev->kind == PE_WS_EV_ERROR && ev->reason == NULL)
        t->broken = "error without a reason";
    if (ev->kind != PE_WS_EV_ERROR && ev->reason != NULL)
        t->broken = "reason set on a non-error event";
    return ev->kind != PE_WS_EV_ERROR;
}

/*
 * Feeds in[0..len) to a fresh reader in chunks ending at cuts[0..ncuts) (increasing, inside the
 * input) and at len, each chunk copied to the end of an exact-size malloc'd buffer (or, with
 * guard, of a guard-paged one). Records every event; checks the feed contract on the way.
 */
static void
trace_run(trace_t *t, const uint8_t *in, size_t len, const size_t *cuts, size_t ncuts, size_t max_message, int allow_rsv1,
          int guard)
{
    pe_ws_reader_t r;
    size_t from = 0;

    trace_clear(t);
    pe_ws_reader_init(&r, max_message, allow_rsv1);
    for (size_t c = 0; c <= ncuts; ++c) {
        size_t to = c < ncuts ? cuts[c] : len, chunk_len = to - from, off = 0;
        uint8_t *chunk = guard ? (uint8_t *)tap_guard_copy(in + from, chunk_len) : malloc(chunk_len);
        int go_on = 1;

        if (!guard && chunk_len != 0)
            memcpy(chunk, in + from, chunk_len);
        while (go_on) {
            pe_ws_event_t ev;
            size_t n = pe_ws_reader_feed(&r, chunk + off, chunk_len - off, &ev);
            if (n > chunk_len - off) {
                t->broken = "consumed more than given";
                break;
            }
            off += n;
            if (ev.kind == PE_WS_EV_NONE) {
                if (off != chunk_len)
                    t->broken = "NONE before the input was used up";
                break;
            }
            go_on = trace_add(t, &ev, from + off);
            if (pe_ws_reader_buffered(&r) > max_message || r._msg_cap > max_message)
                t->broken = "buffer above max_message";
        }
        if (guard)
            tap_guard_free((char *)chunk, chunk_len);
        else
            free(chunk);
        if (!go_on)
            break;
        from = to;
    }
    /* A failed reader stays failed: the same error, nothing consumed. */
    if (t->n != 0 && t->ev[t->n - 1].kind == PE_WS_EV_ERROR) {
        pe_ws_event_t ev;
        uint8_t more[3] = {0x81, 0x80, 0};
        if (pe_ws_reader_feed(&r, more, sizeof(more), &ev) != 0 || ev.kind != PE_WS_EV_ERROR || ev.code != t->ev[t->n - 1].code)
            t->broken = "error not sticky";
    }
    pe_ws_reader_dispose(&r);
}

/* ---- vectors: input, settings, expected events ---------------------------------------------- */

typedef struct {
    buf_t in;
    size_t max_message;
    int allow_rsv1;
    rec_t want[MAX_EVENTS];
    size_t nwant;
} vec_t;

static vec_t vec;

static void
vec_begin(size_t max_message, int allow_rsv1)
{
    free(vec.in.p);
    memset(&vec, 0, sizeof(vec));
    vec.max_message = max_message;
    vec.allow_rsv1 = allow_rsv1;
}

static void
want(pe_ws_event_kind_t kind, int opcode_or_code, const void *payload, size_t len)
{
    rec_t *w = &vec.want[vec.nwant++];

    w->kind = kind;
    if (kind == PE_WS_EV_MESSAGE)
        w->opcode = opcode_or_code;
    else
        w->code = opcode_or_code;
    w->payload = (uint8_t *)payload;
    w->payload_len = len;
    w->at = vec.in.len; /* events complete at the end of the input built so far */
}

static void
want_str(pe_ws_event_kind_t kind, int opcode_or_code, const char *s)
{
    want(kind, opcode_or_code, s, strlen(s));
}

/* The next expected event is an error with `code`, decided by the last byte built so far. */
static void
want_error(int code)
{
    want(PE_WS_EV_ERROR, code, NULL, 0);
}

static const char *
kind_name(pe_ws_event_kind_t k)
{
    static const char *names[] = {"NONE", "MESSAGE", "PING", "PONG", "CLOSE", "ERROR"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

/* Returns 1 if t matches the vector's expectations, else notes the first difference. */
static int
trace_matches(const trace_t *t)
{
    if (t->broken != NULL) {
        tap_note("  feed contract broken: %s", t->broken);
        return 0;
    }
    for (size_t i = 0; i != t->n || i != vec.nwant; ++i) {
        const rec_t *g = i < t->n ? &t->ev[i] : NULL, *w = i < vec.nwant ? &vec.want[i] : NULL;
        if (g == NULL || w == NULL) {
            tap_note("  event %zu: got %s, expected %s", i, g != NULL ? kind_name(g->kind) : "nothing more",
                     w != NULL ? kind_name(w->kind) : "nothing more");
            return 0;
        }
        if (g->kind != w->kind || g->opcode != w->opcode || g->compressed != w->compressed || g->code != w->code ||
            g->payload_len != w->payload_len || (w->payload_len != 0 && memcmp(g->payload, w->payload, w->payload_len) != 0) ||
            g->at != w->at) {
            tap_note("  event %zu: got %s opcode %d compressed %d code %d len %zu at %zu", i, kind_name(g->kind), g->opcode,
                     g->compressed, g->code, g->payload_len, g->at);
            tap_note("  expected  %s opcode %d compressed %d code %d len %zu at %zu", kind_name(w->kind), w->opcode, w->compressed,
                     w->code, w->payload_len, w->at);
            return 0;
        }
    }
    return 1;
}

/*
 * Runs the vector whole, from a guard page, split in two at every offset (a sample of them for
 * inputs over 1 KiB, whose one-byte run already crosses every boundary), and one byte at a time.
 */
static void
vec_run(const char *name)
{
    trace_t t = {0};
    size_t len = vec.in.len, *cuts = malloc((len + 1) * sizeof(*cuts));
    int ok;

    trace_run(&t, vec.in.p, len, NULL, 0, vec.max_message, vec.allow_rsv1, 0);
    TAP_OK(trace_matches(&t), "%s: whole", name);
    trace_run(&t, vec.in.p, len, NULL, 0, vec.max_message, vec.allow_rsv1, 1);
    TAP_OK(trace_matches(&t), "%s: whole, at a guard page", name);

    ok = 1;
    for (size_t k = 1; k < len && ok; ++k) {
        if (len > 1024 && k > 32 && k + 32 < len && k % 997 != 0)
            continue;
        trace_run(&t, vec.in.p, len, &k, 1, vec.max_message, vec.allow_rsv1, 0);
        if (!trace_matches(&t)) {
            tap_note("  split at %zu", k);
            ok = 0;
        }
    }
    TAP_OK(ok, "%s: split in two at every offset", name);

    for (size_t k = 1; k < len; ++k)
        cuts[k - 1] = k;
    trace_run(&t, vec.in.p, len, cuts, len != 0 ? len - 1 : 0, vec.max_message, vec.allow_rsv1, 0);
    TAP_OK(trace_matches(&t), "%s: one byte at a time", name);

    trace_clear(&t);
    free(cuts);
}

/* ---- reader: valid streams ------------------------------------------------------------------ */

static const uint8_t rfc_hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
static const uint8_t rfc_pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
/* RFC 6455 5.7, unmasked: a server must reject these (they are what a server sends). */
static const uint8_t rfc_unmasked_hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
static const uint8_t rfc_unmasked_frag[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
static const uint8_t rfc_unmasked_ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};

static const char kosme[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"; /* "κόσμε", 11 bytes */

static void
test_rfc_vectors(void)
{
    static uint8_t data[65536];
    buf_t *in = &vec.in;

    vec_begin(1 << 20, 0);
    buf_add(in, rfc_hello, sizeof(rfc_hello));
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "Hello");
    vec_run("RFC 5.7 masked Hello");

    vec_begin(1 << 20, 0);
    buf_add(in, rfc_pong, sizeof(rfc_pong));
    want_str(PE_WS_EV_PONG, 0, "Hello");
    vec_run("RFC 5.7 masked pong Hello");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x89, "Hello");
    want_str(PE_WS_EV_PING, 0, "Hello");
    vec_run("masked ping Hello");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x01, "Hel");
    buf_frame_str(in, 0x80, "lo");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "Hello");
    vec_run("fragmented Hel + lo");

    for (size_t i = 0; i != sizeof(data); ++i)
        data[i] = (uint8_t)(i * 7 + 3);
    vec_begin(1 << 20, 0);
    buf_frame(in, 0x82, data, 256);
    TAP_EQ_UINT(in->p[1], 0x80 | 126, "256 bytes use the 16-bit length");
    want(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, data, 256);
    vec_run("binary 256 bytes");

    vec_begin(65536, 0);
    buf_frame(in, 0x82, data, 65536);
    TAP_EQ_UINT(in->p[1], 0x80 | 127, "64 KiB use the 64-bit length");
    want(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, data, 65536);
    vec_run("binary 64 KiB, max_message 64 KiB");

    /* Odd lengths and every key phase: fragments of 1..40 bytes, each with its own key. */
    vec_begin(1 << 20, 0);
    for (size_t n = 1, off = 0; off + n <= 820; off += n, ++n)
        buf_frame(in, off == 0 ? 0x02 : off + n == 820 ? 0x80 : 0x00, data + off, n);
    want(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, data, 820);
    vec_run("binary in 40 fragments of 1..40 bytes");
}

static void
test_fragmentation(void)
{
    buf_t *in = &vec.in;

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x01, "Hel");
    buf_frame_str(in, 0x89, "ping");
    want_str(PE_WS_EV_PING, 0, "ping");
    buf_frame_str(in, 0x00, "");
    buf_frame_str(in, 0x8a, "");
    want_str(PE_WS_EV_PONG, 0, "");
    buf_frame_str(in, 0x89, "");
    want_str(PE_WS_EV_PING, 0, "");
    buf_frame_str(in, 0x80, "lo");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "Hello");
    vec_run("pings and pongs interleaved in a fragmented message");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x81, "");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "");
    buf_frame_str(in, 0x82, "");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, "");
    buf_frame_str(in, 0x01, "");
    buf_frame_str(in, 0x00, "");
    buf_frame_str(in, 0x80, "");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "");
    vec_run("empty messages and empty fragments");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x81, "a");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "a");
    buf_frame_str(in, 0x82, "bc");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, "bc");
    buf_frame_str(in, 0x89, "");
    want_str(PE_WS_EV_PING, 0, "");
    buf_frame_str(in, 0x02, "d");
    buf_frame_str(in, 0x80, "e");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, "de");
    buf_close(in, 1000, "");
    want_str(PE_WS_EV_CLOSE, 1000, "");
    vec_run("several events in one buffer");

    /* UTF-8 is validated across fragment boundaries, even inside a code point. */
    for (size_t k = 0; k <= sizeof(kosme) - 1; ++k) {
        char name[64];
        vec_begin(1 << 20, 0);
        buf_frame(in, 0x01, kosme, k);
        buf_frame(in, 0x80, kosme + k, sizeof(kosme) - 1 - k);
        want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, kosme);
        snprintf(name, sizeof(name), "UTF-8 text fragmented at byte %zu", k);
        vec_run(name);
    }

    vec_begin(1 << 20, 0);
    buf_frame(in, 0x01, kosme, 1);
    buf_frame(in, 0x00, kosme + 1, 2);
    buf_frame_str(in, 0x89, "\xff"); /* control payloads are not text */
    want_str(PE_WS_EV_PING, 0, "\xff");
    buf_frame(in, 0x80, kosme + 3, sizeof(kosme) - 4);
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, kosme);
    vec_run("UTF-8 text in three fragments with a binary ping between");
}

static void
test_close(void)
{
    static const unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                     1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const unsigned invalid[] = {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    buf_t *in = &vec.in;
    int ok;

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x88, "");
    want_str(PE_WS_EV_CLOSE, 1005, "");
    vec_run("close without a body is 1005");

    vec_begin(1 << 20, 0);
    buf_close(in, 1000, "bye");
    want_str(PE_WS_EV_CLOSE, 1000, "bye");
    vec_run("close 1000 bye");

    vec_begin(1 << 20, 0);
    buf_close(in, 1001, kosme);
    want_str(PE_WS_EV_CLOSE, 1001, kosme);
    vec_run("close with a UTF-8 reason");

    vec_begin(1 << 20, 0);
    {
        static char reason[124]; /* outlives the block: the expectation points into it */
        memset(reason, 'r', 123);
        reason[123] = '\0';
        buf_close(in, 4999, reason);
        want_str(PE_WS_EV_CLOSE, 4999, reason);
    }
    vec_run("close with a 125-byte body");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x01, "Hel");
    buf_close(in, 1000, "");
    want_str(PE_WS_EV_CLOSE, 1000, "");
    vec_run("close inside a fragmented message");

    /* The code classes: one short assertion per code, fed whole and one byte at a time. */
    ok = 1;
    for (size_t i = 0; i != sizeof(valid) / sizeof(valid[0]); ++i) {
        trace_t t = {0};
        size_t cuts[16];
        vec_begin(1 << 20, 0);
        buf_close(&vec.in, valid[i], "x");
        want_str(PE_WS_EV_CLOSE, (int)valid[i], "x");
        for (size_t k = 1; k < vec.in.len; ++k)
            cuts[k - 1] = k;
        trace_run(&t, vec.in.p, vec.in.len, NULL, 0, vec.max_message, 0, 0);
        if (!trace_matches(&t))
            ok = 0;
        trace_run(&t, vec.in.p, vec.in.len, cuts, vec.in.len - 1, vec.max_message, 0, 0);
        if (!trace_matches(&t)) {
            tap_note("  code %u", valid[i]);
            ok = 0;
        }
        trace_clear(&t);
    }
    TAP_OK(ok, "close codes 1000-1003, 1007-1014, 3000-4999 are accepted");
    ok = 1;
    for (size_t i = 0; i != sizeof(invalid) / sizeof(invalid[0]); ++i) {
        trace_t t = {0};
        size_t cuts[16];
        vec_begin(1 << 20, 0);
        buf_close(&vec.in, invalid[i], "x");
        want_error(PE_WS_CLOSE_PROTOCOL);
        for (size_t k = 1; k < vec.in.len; ++k)
            cuts[k - 1] = k;
        trace_run(&t, vec.in.p, vec.in.len, NULL, 0, vec.max_message, 0, 0);
        if (!trace_matches(&t))
            ok = 0;
        trace_run(&t, vec.in.p, vec.in.len, cuts, vec.in.len - 1, vec.max_message, 0, 0);
        if (!trace_matches(&t)) {
            tap_note("  code %u", invalid[i]);
            ok = 0;
        }
        trace_clear(&t);
    }
    TAP_OK(ok, "close codes 0-999, 1004-1006, 1015, 1016-2999, 5000+ are 1002");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x88, "\x03");
    in->len = 2; /* decided by the length byte, before the key and the body */
    want_error(PE_WS_CLOSE_PROTOCOL);
    in->len = 2 + 4 + 1;
    vec_run("close body of 1 byte is 1002 at the length byte");

    vec_begin(1 << 20, 0);
    buf_close(in, 1000, "ok\xff");
    want_error(PE_WS_CLOSE_INVALID_DATA);
    vec_run("close reason with invalid UTF-8 is 1007");

    vec_begin(1 << 20, 0);
    buf_close(in, 1000, "\xce");
    want_error(PE_WS_CLOSE_INVALID_DATA);
    vec_run("close reason ending inside a code point is 1007");
}

static void
test_limits(void)
{
    static uint8_t data[65536];
    buf_t *in = &vec.in;

    vec_begin(10, 0);
    buf_frame_str(in, 0x81, "0123456789");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "0123456789");
    buf_frame_str(in, 0x01, "01234");
    buf_frame_str(in, 0x89, "ping does not count");
    want_str(PE_WS_EV_PING, 0, "ping does not count");
    buf_frame_str(in, 0x80, "56789");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "0123456789");
    vec_run("messages of exactly max_message bytes, whole and fragmented");

    vec_begin(0, 0);
    buf_frame_str(in, 0x82, "");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, "");
    vec_run("max_message 0 allows empty messages");

    vec_begin(4, 0);
    buf_frame_str(in, 0x81, "Hello");
    in->len = 2; /* decided by the 7-bit length */
    want_error(PE_WS_CLOSE_TOO_BIG);
    vec_run("1009 at the 7-bit length");

    vec_begin(255, 0);
    buf_frame(in, 0x82, data, 256);
    in->len = 4;
    want_error(PE_WS_CLOSE_TOO_BIG);
    vec_run("1009 at the 16-bit length");

    vec_begin(65535, 0);
    buf_frame(in, 0x82, data, 65536);
    in->len = 10;
    want_error(PE_WS_CLOSE_TOO_BIG);
    in->len = 65536 + 14;
    vec_run("1009 at the 64-bit length");

    vec_begin(5, 0);
    buf_frame_str(in, 0x01, "Hel");
    buf_frame_str(in, 0x80, "lo!");
    in->len -= 3 + 4;
    want_error(PE_WS_CLOSE_TOO_BIG);
    in->len += 3 + 4;
    vec_run("1009 at the header of the fragment that crosses the limit");

    vec_begin(SIZE_MAX, 0);
    {
        static const uint8_t huge[] = {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5};
        buf_add(in, huge, sizeof(huge));
        if (sizeof(size_t) < 8) {
            in->len = 10;
            want_error(PE_WS_CLOSE_TOO_BIG);
            in->len = sizeof(huge);
        }
    }
    vec_run("a 2^63-1 byte frame with no limit waits for its payload");
}

static void
test_compressed(void)
{
    static const uint8_t hello_deflated[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}; /* RFC 7692 7.2.3.1 */
    buf_t *in = &vec.in;

    vec_begin(1 << 20, 1);
    buf_frame(in, 0xc1, hello_deflated, 7);
    want(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, hello_deflated, 7);
    vec.want[0].compressed = 1;
    buf_frame_str(in, 0x42, "\xf2\x48");
    buf_frame_str(in, 0x89, "");
    want_str(PE_WS_EV_PING, 0, "");
    buf_frame(in, 0x80, hello_deflated + 2, 5);
    want(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, hello_deflated, 7);
    vec.want[2].compressed = 1;
    buf_frame_str(in, 0x81, "plain");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "plain");
    vec_run("RSV1 on first frames when negotiated; compressed text is not UTF-8 checked");
}

/* ---- reader: violations --------------------------------------------------------------------- */

static void
test_framing_errors(void)
{
    buf_t *in = &vec.in;

    vec_begin(1 << 20, 0);
    buf_add(in, rfc_unmasked_hello, 2);
    want_error(PE_WS_CLOSE_PROTOCOL);
    buf_add(in, rfc_unmasked_hello + 2, sizeof(rfc_unmasked_hello) - 2);
    vec_run("RFC 5.7 unmasked Hello is 1002 at the mask bit");

    vec_begin(1 << 20, 0);
    buf_add(in, rfc_unmasked_frag, 2);
    want_error(PE_WS_CLOSE_PROTOCOL);
    buf_add(in, rfc_unmasked_frag + 2, sizeof(rfc_unmasked_frag) - 2);
    vec_run("RFC 5.7 unmasked fragments are 1002");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x81, "ok");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "ok");
    buf_add(in, rfc_unmasked_ping, 2);
    want_error(PE_WS_CLOSE_PROTOCOL);
    buf_add(in, rfc_unmasked_ping + 2, sizeof(rfc_unmasked_ping) - 2);
    vec_run("RFC 5.7 unmasked ping after a message is 1002");

    {
        static const struct {
            uint8_t b0;
            int allow_rsv1;
            const char *name;
        } bad_b0[] = {
            {0xa1, 1, "RSV2 on text"},
            {0x91, 1, "RSV3 on text"},
            {0xf1, 1, "RSV1-3 on text"},
            {0xa9, 0, "RSV2 on ping"},
            {0x92, 0, "RSV3 on binary"},
            {0xc1, 0, "RSV1 on text without permessage-deflate"},
            {0xc2, 0, "RSV1 on binary without permessage-deflate"},
            {0xc9, 1, "RSV1 on ping even with permessage-deflate"},
            {0xca, 1, "RSV1 on pong even with permessage-deflate"},
            {0xc8, 1, "RSV1 on close even with permessage-deflate"},
            {0x83, 0, "opcode 3"},
            {0x84, 0, "opcode 4"},
            {0x85, 0, "opcode 5"},
            {0x86, 0, "opcode 6"},
            {0x87, 0, "opcode 7"},
            {0x8b, 0, "opcode B"},
            {0x8c, 0, "opcode C"},
            {0x8d, 0, "opcode D"},
            {0x8e, 0, "opcode E"},
            {0x8f, 0, "opcode F"},
            {0x03, 0, "opcode 3 without FIN"},
            {0x80, 0, "continuation without a message"},
            {0x00, 0, "non-final continuation without a message"},
            {0x09, 0, "ping without FIN"},
            {0x0a, 0, "pong without FIN"},
            {0x08, 0, "close without FIN"},
        };
        for (size_t i = 0; i != sizeof(bad_b0) / sizeof(bad_b0[0]); ++i) {
            char name[96];
            vec_begin(1 << 20, bad_b0[i].allow_rsv1);
            buf_frame_str(in, bad_b0[i].b0, "abc");
            in->len = 1; /* decided by byte 0 */
            want_error(PE_WS_CLOSE_PROTOCOL);
            in->len = 1 + 1 + 4 + 3;
            snprintf(name, sizeof(name), "%s is 1002 at byte 0", bad_b0[i].name);
            vec_run(name);
        }
    }

    vec_begin(1 << 20, 1);
    buf_frame_str(in, 0x41, "a");
    buf_frame_str(in, 0xc0, "b");
    in->len -= 1 + 4 + 1;
    want_error(PE_WS_CLOSE_PROTOCOL);
    in->len += 1 + 4 + 1;
    vec_run("RSV1 on a continuation frame is 1002");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x01, "a");
    buf_frame_str(in, 0x81, "b");
    in->len -= 1 + 4 + 1; /* decided by byte 0 of the second frame */
    want_error(PE_WS_CLOSE_PROTOCOL);
    in->len += 1 + 4 + 1;
    vec_run("text frame inside a fragmented message is 1002");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x02, "a");
    buf_frame_str(in, 0x89, "");
    want_str(PE_WS_EV_PING, 0, "");
    buf_frame_str(in, 0x02, "b");
    in->len -= 1 + 4 + 1;
    want_error(PE_WS_CLOSE_PROTOCOL);
    in->len += 1 + 4 + 1;
    vec_run("binary frame inside a fragmented message (after a ping) is 1002");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x81, "done");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_TEXT, "done");
    buf_frame_str(in, 0x80, "more");
    in->len -= 1 + 4 + 4;
    want_error(PE_WS_CLOSE_PROTOCOL);
    in->len += 1 + 4 + 4;
    vec_run("continuation after a complete message is 1002");

    {
        static uint8_t body[126];
        vec_begin(1 << 20, 0);
        buf_frame(in, 0x89, body, 125);
        want(PE_WS_EV_PING, 0, body, 125);
        vec_run("ping of 125 bytes");

        vec_begin(1 << 20, 0);
        buf_frame(in, 0x89, body, 126);
        in->len = 2;
        want_error(PE_WS_CLOSE_PROTOCOL);
        in->len = 4 + 4 + 126;
        vec_run("ping of 126 bytes is 1002 at the length byte");

        vec_begin(1 << 20, 0);
        buf_frame(in, 0x8a, body, 126);
        in->len = 2;
        want_error(PE_WS_CLOSE_PROTOCOL);
        in->len = 4 + 4 + 126;
        vec_run("pong of 126 bytes is 1002 at the length byte");
    }

    {
        static const uint8_t high_bit[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 0};
        static const uint8_t all_ones[] = {0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
        static const uint8_t long16[] = {0x82, 0xfe, 0x00, 0x7d, 1, 2, 3, 4};
        static const uint8_t long64[] = {0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4};
        static const uint8_t ok16[] = {0x82, 0xfe, 0x00, 0x7e, 1, 2, 3, 4};

        vec_begin(SIZE_MAX, 0);
        buf_add(in, high_bit, 10);
        want_error(PE_WS_CLOSE_PROTOCOL);
        buf_add(in, high_bit + 10, sizeof(high_bit) - 10);
        vec_run("64-bit length with the high bit set is 1002");

        vec_begin(SIZE_MAX, 0);
        buf_add(in, all_ones, 10);
        want_error(PE_WS_CLOSE_PROTOCOL);
        buf_add(in, all_ones + 10, sizeof(all_ones) - 10);
        vec_run("64-bit length of all ones is 1002, not 1009");

        vec_begin(1 << 20, 0);
        buf_add(in, long16, 4);
        want_error(PE_WS_CLOSE_PROTOCOL);
        buf_add(in, long16 + 4, sizeof(long16) - 4);
        vec_run("16-bit length under 126 is 1002");

        vec_begin(1 << 20, 0);
        buf_add(in, long64, 10);
        want_error(PE_WS_CLOSE_PROTOCOL);
        buf_add(in, long64 + 10, sizeof(long64) - 10);
        vec_run("64-bit length under 65536 is 1002");

        vec_begin(1 << 20, 0);
        buf_add(in, ok16, sizeof(ok16));
        vec_run("16-bit length of 126 is valid (waits for the payload)");
    }
}

static void
test_utf8_errors(void)
{
    buf_t *in = &vec.in;
    static const char invalid_tail[] = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
    size_t hdr = 2 + 4;

    /* Autobahn 6.4.1: the close must come at 0x90, before the rest of the frame is sent. */
    vec_begin(1 << 20, 0);
    buf_frame(in, 0x81, invalid_tail, sizeof(invalid_tail) - 1);
    in->len = hdr + 13;
    want_error(PE_WS_CLOSE_INVALID_DATA);
    vec_run("invalid UTF-8 fails fast in a frame that never completes");

    vec_begin(1 << 20, 0);
    buf_frame(in, 0x81, invalid_tail, sizeof(invalid_tail) - 1);
    in->len = hdr + 13;
    want_error(PE_WS_CLOSE_INVALID_DATA);
    in->len = hdr + sizeof(invalid_tail) - 1;
    vec_run("invalid UTF-8 is 1007 at the offending byte of a whole frame");

    vec_begin(1 << 20, 0);
    buf_frame(in, 0x01, kosme, 11);
    buf_frame_str(in, 0x00, "\xf4");
    buf_frame_str(in, 0x80, "\x90\x80\x80");
    in->len -= 2;
    want_error(PE_WS_CLOSE_INVALID_DATA);
    in->len += 2;
    vec_run("invalid UTF-8 across fragments is 1007 in the fragment that has it");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x01, "\xce");
    buf_frame_str(in, 0x80, "A");
    want_error(PE_WS_CLOSE_INVALID_DATA);
    vec_run("a code point cut by an ASCII byte in the next fragment is 1007");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x81, "\xce");
    want_error(PE_WS_CLOSE_INVALID_DATA);
    vec_run("a text message ending inside a code point is 1007");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x01, "ok \xe2\x82");
    buf_frame_str(in, 0x80, "");
    want_error(PE_WS_CLOSE_INVALID_DATA);
    vec_run("an empty final fragment after an incomplete code point is 1007");

    vec_begin(1 << 20, 0);
    buf_frame_str(in, 0x82, "\xff\xfe\xce");
    want_str(PE_WS_EV_MESSAGE, PE_WS_OP_BINARY, "\xff\xfe\xce");
    vec_run("binary messages are not UTF-8 checked");
}

/* ---- reader: memory ------------------------------------------------------------------------- */

/*
 * pe_ws_reader_buffered reports the bytes of a message in progress; the allocation behind them is
 * the private _msg_cap, read here because the bound on it is the point of these tests.
 */
static void
test_memory(void)
{
    static uint8_t data[3000];
    pe_ws_reader_t r;
    pe_ws_event_t ev;
    buf_t in = {0};
    size_t n, off;

    for (size_t i = 0; i != sizeof(data); ++i)
        data[i] = (uint8_t)i;
    pe_ws_reader_init(&r, 1000, 0);
    TAP_EQ_UINT(pe_ws_reader_buffered(&r), 0, "a new reader holds nothing");
    TAP_EQ_UINT(r._msg_cap, 0, "and has allocated nothing");

    buf_frame(&in, 0x02, data, 600);
    buf_frame(&in, 0x80, data + 600, 400);
    buf_frame_str(&in, 0x81, "x");
    buf_frame_str(&in, 0x01, "y");
    off = 0;
    n = pe_ws_reader_feed(&r, in.p, 8 + 600 + 8 + 100, &ev); /* two 8-byte headers */
    off += n;
    TAP_EQ_INT(ev.kind, PE_WS_EV_NONE, "a message in progress");
    TAP_EQ_UINT(pe_ws_reader_buffered(&r), 700, "buffered counts its bytes");
    TAP_EQ_UINT(r._msg_cap, 1000, "the buffer doubled from 256 and stopped at max_message (1000, not 1024)");
    pe_ws_reader_shrink(&r);
    TAP_EQ_UINT(pe_ws_reader_buffered(&r), 700, "shrink keeps a message being assembled");
    n = pe_ws_reader_feed(&r, in.p + off, in.len - off, &ev);
    off += n;
    TAP_EQ_INT(ev.kind, PE_WS_EV_MESSAGE, "the message completes");
    TAP_EQ_MEM(ev.payload, ev.payload_len, data, 1000, "with its bytes");
    TAP_EQ_UINT(pe_ws_reader_buffered(&r), 0, "a delivered message is no longer buffered");
    pe_ws_reader_shrink(&r);
    TAP_EQ_UINT(r._msg_cap, 0, "shrink between messages frees the buffer");
    n = pe_ws_reader_feed(&r, in.p + off, in.len - off, &ev);
    off += n;
    TAP_EQ_INT(ev.kind, PE_WS_EV_MESSAGE, "the reader works after shrink");
    TAP_EQ_MEM(ev.payload, ev.payload_len, "x", 1, "next message");
    TAP_EQ_UINT(r._msg_cap, 256, "small messages take a small buffer");
    n = pe_ws_reader_feed(&r, in.p + off, in.len - off, &ev);
    off += n;
    TAP_EQ_INT(ev.kind, PE_WS_EV_NONE, "a fragment of the next message");
    TAP_EQ_UINT(off, in.len, "all input consumed");
    TAP_EQ_UINT(pe_ws_reader_buffered(&r), 1, "buffered");
    pe_ws_reader_dispose(&r);
    TAP_EQ_UINT(r._msg_cap, 0, "dispose frees the buffer, even mid-message");

    /* A header announcing a large frame costs nothing until its payload arrives. */
    pe_ws_reader_init(&r, 1 << 30, 0);
    in.len = 0;
    buf_frame(&in, 0x82, data, 3000);
    n = pe_ws_reader_feed(&r, in.p, 4 + 4 + 10, &ev);
    TAP_EQ_INT(ev.kind, PE_WS_EV_NONE, "a large frame in progress");
    TAP_EQ_UINT(r._msg_cap, 256, "the buffer follows the bytes received, not the announced length");
    n += pe_ws_reader_feed(&r, in.p + n, in.len - n, &ev);
    TAP_EQ_MEM(ev.payload, ev.payload_len, data, 3000, "then completes");
    TAP_EQ_UINT(r._msg_cap, 4096, "by doubling");
    pe_ws_reader_dispose(&r);
    free(in.p);
}

/* ---- UTF-8 validator ------------------------------------------------------------------------ */

static const struct {
    const char *s;
    size_t len;
    int fail_at; /* index of the byte that makes it invalid; -1: never invalid */
    int complete;
    const char *what;
} utf8_table[] = {
#define S(lit) lit, sizeof(lit) - 1
    {S(""), -1, 1, "empty"},
    {S("hello, world"), -1, 1, "ASCII"},
    {S("\x00\x7f"), -1, 1, "U+0000 and U+007F"},
    {S("\xc2\x80"), -1, 1, "U+0080, first 2-byte"},
    {S("\xdf\xbf"), -1, 1, "U+07FF, last 2-byte"},
    {S("\xe0\xa0\x80"), -1, 1, "U+0800, first 3-byte"},
    {S("\xef\xbf\xbf"), -1, 1, "U+FFFF, last 3-byte (noncharacters are valid UTF-8)"},
    {S("\xef\xbf\xbe"), -1, 1, "U+FFFE"},
    {S("\xef\xbb\xbf"), -1, 1, "U+FEFF BOM"},
    {S("\xed\x9f\xbf"), -1, 1, "U+D7FF, before the surrogates"},
    {S("\xee\x80\x80"), -1, 1, "U+E000, after the surrogates"},
    {S("\xef\xbf\xbd"), -1, 1, "U+FFFD"},
    {S("\xf0\x90\x80\x80"), -1, 1, "U+10000, first 4-byte"},
    {S("\xf4\x8f\xbf\xbf"), -1, 1, "U+10FFFF, last code point"},
    {S("\xf3\xbf\xbf\xbf"), -1, 1, "U+FFFFF"},
    {S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), -1, 1, "kosme"},
    {S("a\xf0\x9f\x98\x80z"), -1, 1, "an emoji between ASCII"},
    {S("\xce"), -1, 0, "truncated 2-byte"},
    {S("\xe0\xa0"), -1, 0, "truncated 3-byte"},
    {S("\xf0\x90\x80"), -1, 0, "truncated 4-byte"},
    {S("ok\xf4"), -1, 0, "lone F4 at the end"},
    {S("\x80"), 0, 0, "lone continuation 80"},
    {S("\xbf"), 0, 0, "lone continuation BF"},
    {S("\x80\xbf\x80\xbf"), 0, 0, "continuation bytes only"},
    {S("abc\x80"), 3, 0, "continuation after ASCII"},
    {S("\xc2\x80\x80"), 2, 0, "one continuation too many"},
    {S("\xef\xbf\xbd\xbf"), 3, 0, "continuation after U+FFFD"},
    {S("\xc0\x80"), 0, 0, "overlong NUL (C0 80)"},
    {S("\xc0\xaf"), 0, 0, "overlong / (C0 AF)"},
    {S("\xc1\xbf"), 0, 0, "overlong U+007F (C1 BF)"},
    {S("\xe0\x80\xaf"), 1, 0, "overlong / in 3 bytes"},
    {S("\xe0\x9f\xbf"), 1, 0, "overlong U+07FF in 3 bytes"},
    {S("\xf0\x80\x80\xaf"), 1, 0, "overlong / in 4 bytes"},
    {S("\xf0\x8f\xbf\xbf"), 1, 0, "overlong U+FFFF in 4 bytes"},
    {S("\xf8\x80\x80\x80\xaf"), 0, 0, "overlong / in 5 bytes"},
    {S("\xfc\x80\x80\x80\x80\xaf"), 0, 0, "overlong / in 6 bytes"},
    {S("\xf8\x88\x80\x80\x80"), 0, 0, "5-byte form (U+200000)"},
    {S("\xfb\xbf\xbf\xbf\xbf"), 0, 0, "5-byte form (U+3FFFFFF)"},
    {S("\xfc\x84\x80\x80\x80\x80"), 0, 0, "6-byte form (U+4000000)"},
    {S("\xfd\xbf\xbf\xbf\xbf\xbf"), 0, 0, "6-byte form (U+7FFFFFFF)"},
    {S("\xfe"), 0, 0, "FE"},
    {S("\xff"), 0, 0, "FF"},
    {S("\xfe\xfe\xff\xff"), 0, 0, "UTF-16 BOM bytes"},
    {S("\xed\xa0\x80"), 1, 0, "surrogate U+D800"},
    {S("\xed\xad\xbf"), 1, 0, "surrogate U+DB7F"},
    {S("\xed\xb0\x80"), 1, 0, "surrogate U+DC00"},
    {S("\xed\xbf\xbf"), 1, 0, "surrogate U+DFFF"},
    {S("\xed\xa0\x80\xed\xb0\x80"), 1, 0, "surrogate pair U+D800 U+DC00"},
    {S("\xf4\x90\x80\x80"), 1, 0, "U+110000"},
    {S("\xf4\xbf\xbf\xbf"), 1, 0, "U+13FFFF"},
    {S("\xf5\x80\x80\x80"), 0, 0, "F5 lead (U+140000)"},
    {S("\xf7\xbf\xbf\xbf"), 0, 0, "F7 lead (U+1FFFFF)"},
    {S("\xc2\x41"), 1, 0, "2-byte cut by ASCII"},
    {S("\xe0\xa0\x41"), 2, 0, "3-byte cut by ASCII"},
    {S("\xf0\x90\x80\x41"), 3, 0, "4-byte cut by ASCII"},
    {S("\xe1\x80\xc2\x80"), 2, 0, "3-byte cut by a lead byte"},
    {S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"), 12, 0, "kosme then a surrogate"},
#undef S
};

/* Feeds s whole or in the two pieces [0,k) and [k,len); returns the validator's verdict. */
static int
utf8_check(const char *s, size_t len, size_t k, int *complete)
{
    pe_utf8_t v;
    char *a = calloc(1, k + 1), *b = calloc(1, len - k + 1); /* +1: malloc(0) and gcc -O2 false alarms */
    int ret;

    memcpy(a, s, k);
    memcpy(b, s + k, len - k);
    pe_utf8_init(&v);
    ret = pe_utf8_feed(&v, (uint8_t *)a, k);
    if (ret == 0)
        ret = pe_utf8_feed(&v, (uint8_t *)b, len - k);
    *complete = ret == 0 && pe_utf8_is_complete(&v);
    free(a);
    free(b);
    return ret;
}

static void
test_utf8_table(void)
{
    for (size_t i = 0; i != sizeof(utf8_table) / sizeof(utf8_table[0]); ++i) {
        const char *s = utf8_table[i].s;
        size_t len = utf8_table[i].len;
        int ok = 1, complete;

        /* Whole and split at every byte: the same verdict. */
        for (size_t k = 0; k <= len; ++k) {
            int ret = utf8_check(s, len, k, &complete);
            if (ret != (utf8_table[i].fail_at >= 0 ? -1 : 0) || complete != utf8_table[i].complete) {
                tap_note("  split at %zu: returned %d, complete %d", k, ret, complete);
                ok = 0;
            }
        }
        /* Fail fast: the prefix before fail_at is fine, the byte at fail_at is not. */
        if (utf8_table[i].fail_at >= 0) {
            size_t at = (size_t)utf8_table[i].fail_at;
            if (utf8_check(s, at, 0, &complete) != 0 || utf8_check(s, at + 1, 0, &complete) != -1) {
                tap_note("  does not fail exactly at byte %zu", at);
                ok = 0;
            }
        }
        TAP_OK(ok, "%s: %s", utf8_table[i].what,
               utf8_table[i].fail_at >= 0 ? "invalid"
               : utf8_table[i].complete   ? "valid"
                                          : "incomplete");
    }
}

static void
test_utf8_fast_path(void)
{
    char s[100];
    int ok = 1, complete;

    /* A stray byte at every offset of an ASCII run, and a valid 3-byte sequence at every offset. */
    for (size_t at = 0; at != sizeof(s); ++at) {
        memset(s, 'a', sizeof(s));
        s[at] = '\x80';
        for (size_t k = 0; k <= sizeof(s); k += 7)
            if (utf8_check(s, sizeof(s), k, &complete) != -1) {
                tap_note("  stray byte at %zu not found (split %zu)", at, k);
                ok = 0;
            }
        if (utf8_check(s, at, 0, &complete) != 0 || !complete) {
            tap_note("  ASCII prefix of %zu rejected", at);
            ok = 0;
        }
    }
    TAP_OK(ok, "a stray byte at any offset of an ASCII run");
    ok = 1;
    for (size_t at = 0; at + 3 <= sizeof(s); ++at) {
        memset(s, 'a', sizeof(s));
        memcpy(s + at, "\xe2\x82\xac", 3);
        for (size_t k = 0; k <= sizeof(s); ++k)
            if (utf8_check(s, sizeof(s), k, &complete) != 0 || !complete) {
                tap_note("  euro sign at %zu rejected (split %zu)", at, k);
                ok = 0;
            }
    }
    TAP_OK(ok, "a 3-byte sequence at any offset of an ASCII run, split anywhere");
}

/*
 * The oracle: decodes by the length the lead byte announces, then checks the value's range
 * (RFC 3629 section 3/4, written independently from the DFA). Returns 1 if s is complete, valid
 * UTF-8.
 */
static int
oracle_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;

    while (i != len) {
        uint8_t b = s[i];
        size_t n;
        uint32_t cp, min;
        if (b < 0x80) {
            ++i;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            n = 2, cp = b & 0x1f, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            n = 3, cp = b & 0x0f, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            n = 4, cp = b & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i < n)
            return 0;
        for (size_t j = 1; j != n; ++j) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n;
    }
    return 1;
}

static int
dfa_utf8(const uint8_t *s, size_t len)
{
    pe_utf8_t v;
    pe_utf8_init(&v);
    return pe_utf8_feed(&v, s, len) == 0 && pe_utf8_is_complete(&v);
}

static void
test_utf8_exhaustive(void)
{
    static const uint8_t edge[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xf0, 0xf4, 0xff};
    uint8_t s[4];
    size_t mismatches = 0, valid = 0;

    for (unsigned a = 0; a != 256; ++a) {
        s[0] = (uint8_t)a;
        mismatches += dfa_utf8(s, 1) != oracle_utf8(s, 1);
        for (unsigned b = 0; b != 256; ++b) {
            s[1] = (uint8_t)b;
            mismatches += dfa_utf8(s, 2) != oracle_utf8(s, 2);
            for (unsigned c = 0; c != 256; ++c) {
                s[2] = (uint8_t)c;
                if (a < 0xc0 && a >= 0x80 && (b != 0x41 || c != 0x41))
                    continue; /* a stray first byte fails at once whatever follows: sample it */
                mismatches += dfa_utf8(s, 3) != oracle_utf8(s, 3);
                valid += oracle_utf8(s, 3);
            }
        }
    }
    TAP_EQ_UINT(mismatches, 0, "every 1-, 2- and 3-byte sequence (stray leads sampled) agrees with the oracle");
    mismatches = 0;
    for (unsigned a = 0xf0; a != 0x100; ++a)
        for (unsigned b = 0x80; b != 0xc0; ++b)
            for (size_t c = 0; c != sizeof(edge); ++c)
                for (size_t d = 0; d != sizeof(edge); ++d) {
                    s[0] = (uint8_t)a, s[1] = (uint8_t)b, s[2] = edge[c], s[3] = edge[d];
                    mismatches += dfa_utf8(s, 4) != oracle_utf8(s, 4);
                }
    TAP_EQ_UINT(mismatches, 0, "4-byte sequences (every lead F0-FF and second byte, boundary tails) agree with the oracle");
    TAP_OK(valid > 1000, "the 3-byte sweep saw valid sequences (%zu)", valid);
}

/* ---- encoders ------------------------------------------------------------------------------- */

static void
test_encode_header(void)
{
    static const struct {
        uint64_t len;
        size_t hlen;
        uint8_t bytes[10];
    } cases[] = {
        {0, 2, {0x82, 0x00}},
        {125, 2, {0x82, 0x7d}},
        {126, 4, {0x82, 0x7e, 0x00, 0x7e}},
        {65535, 4, {0x82, 0x7e, 0xff, 0xff}},
        {65536, 10, {0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}},
        {0x7fffffffffffffffull, 10, {0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
    };
    uint8_t out[PE_WS_MAX_HEADER];

    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        size_t n = pe_ws_encode_header(out, PE_WS_OP_BINARY, 0, cases[i].len);
        TAP_EQ_MEM(out, n, cases[i].bytes, cases[i].hlen, "binary, length %llu", (unsigned long long)cases[i].len);
    }
    TAP_EQ_UINT(pe_ws_encode_header(out, PE_WS_OP_TEXT, 1, 5), 2, "compressed text");
    TAP_EQ_UINT(out[0], 0xc1, "FIN, RSV1, text");
    pe_ws_encode_header(out, PE_WS_OP_CLOSE, 0, 2);
    TAP_EQ_UINT(out[0], 0x88, "close");
    pe_ws_encode_header(out, PE_WS_OP_PONG, 0, 0);
    TAP_EQ_UINT(out[0], 0x8a, "pong");
    TAP_EQ_UINT(out[1], 0x00, "server frames are unmasked");

    /* Round trip: an encoded header with the mask bit and a key added reads back. */
    {
        static const size_t lens[] = {0, 125, 126, 65535, 65536};
        static uint8_t payload[65536];
        int ok = 1;
        for (size_t i = 0; i != sizeof(lens) / sizeof(lens[0]); ++i) {
            pe_ws_reader_t r;
            pe_ws_event_t ev;
            buf_t b = {0};
            size_t n = pe_ws_encode_header(out, PE_WS_OP_BINARY, 0, lens[i]);
            out[1] |= 0x80;
            buf_add(&b, out, n);
            buf_add(&b, "\0\0\0\0", 4);
            buf_add(&b, payload, lens[i]);
            pe_ws_reader_init(&r, 65536, 0);
            n = pe_ws_reader_feed(&r, b.p, b.len, &ev);
            ok &= n == b.len && ev.kind == PE_WS_EV_MESSAGE && ev.payload_len == lens[i];
            pe_ws_reader_dispose(&r);
            free(b.p);
        }
        TAP_OK(ok, "headers for 0, 125, 126, 65535, 65536 bytes read back through the reader");
    }
}

static void
test_encode_close(void)
{
    uint8_t out[125];
    char reason[200];
    size_t n;
    pe_utf8_t v;

    n = pe_ws_encode_close_payload(out, 1000, NULL);
    TAP_EQ_MEM(out, n, "\x03\xe8", 2, "1000 without a reason");
    n = pe_ws_encode_close_payload(out, 1009, "too big");
    TAP_EQ_MEM(out, n, "\x03\xf1too big", 9, "1009 with a reason");
    n = pe_ws_encode_close_payload(out, 4999, "");
    TAP_EQ_MEM(out, n, "\x13\x87", 2, "4999 with an empty reason");
    TAP_EQ_UINT(pe_ws_encode_close_payload(out, 1005, "never"), 0, "1005 is an empty body");

    memset(reason, 'a', 123);
    reason[123] = '\0';
    n = pe_ws_encode_close_payload(out, 1000, reason);
    TAP_EQ_UINT(n, 125, "a 123-byte reason fits exactly");
    memset(reason, 'a', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    n = pe_ws_encode_close_payload(out, 1000, reason);
    TAP_EQ_UINT(n, 125, "a long reason is cut to 123 bytes");

    /* 122 ASCII bytes, then U+00E9 (2 bytes) straddling the cut: the whole sequence goes. */
    memset(reason, 'a', 122);
    memcpy(reason + 122, "\xc3\xa9zz", 5);
    n = pe_ws_encode_close_payload(out, 1000, reason);
    TAP_EQ_UINT(n, 2 + 122, "a code point straddling the cut is dropped whole");
    /* 121 ASCII bytes, then U+20AC (3 bytes) straddling the cut. */
    memset(reason, 'a', 121);
    memcpy(reason + 121, "\xe2\x82\xac", 4);
    n = pe_ws_encode_close_payload(out, 1000, reason);
    TAP_EQ_UINT(n, 2 + 121, "a 3-byte code point straddling the cut is dropped whole");
    pe_utf8_init(&v);
    TAP_OK(pe_utf8_feed(&v, out + 2, n - 2) == 0 && pe_utf8_is_complete(&v), "the cut reason is valid UTF-8");
    /* 120 ASCII bytes, then U+20AC ending exactly at the limit: kept. */
    memset(reason, 'a', 120);
    memcpy(reason + 120, "\xe2\x82\xac", 4);
    n = pe_ws_encode_close_payload(out, 1000, reason);
    TAP_EQ_UINT(n, 125, "a code point ending at the limit is kept");
    {
        /* The reason from a guard page: no read past the 124th byte of a long reason. */
        char *g = tap_guard_copy(reason, 124);
        memset(g, 'b', 124);
        n = pe_ws_encode_close_payload(out, 1000, g);
        TAP_EQ_UINT(n, 125, "an unterminated long reason is read no further than needed");
        tap_guard_free(g, 124);
    }
}

int
main(void)
{
    tap_subtest("rfc vectors", test_rfc_vectors);
    tap_subtest("fragmentation", test_fragmentation);
    tap_subtest("close", test_close);
    tap_subtest("limits", test_limits);
    tap_subtest("compressed", test_compressed);
    tap_subtest("framing errors", test_framing_errors);
    tap_subtest("utf8 errors", test_utf8_errors);
    tap_subtest("memory", test_memory);
    tap_subtest("utf8 table", test_utf8_table);
    tap_subtest("utf8 fast path", test_utf8_fast_path);
    tap_subtest("utf8 exhaustive", test_utf8_exhaustive);
    tap_subtest("encode header", test_encode_header);
    tap_subtest("encode close", test_encode_close);
    vec_begin(0, 0);
    free(vec.in.p);
    return tap_done();
}

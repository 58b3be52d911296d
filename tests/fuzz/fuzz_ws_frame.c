/*
 * libFuzzer driver for edge/wire/ws_frame.c: the RFC 6455 frame reader, the UTF-8 validator and the
 * two encoders.
 *
 * Input layout: byte 0 holds the settings (bit 0: allow_rsv1; bits 1-2: how bytes 1-2 become
 * max_message: 0-255, 0-65535, 16 times that, or no limit), byte 3 seeds the split points, and
 * the rest is the client byte stream.
 *
 * The stream goes through three readers: whole, in random chunks (some empty, each copied to an
 * exact-size allocation, with pe_ws_reader_shrink after some messages), and one byte at a time.
 * Every event is checked on its own (kinds, opcodes, payload_len <= max_message, uncompressed
 * text is valid UTF-8, compressed only when allowed, control payloads <= 125, close codes valid,
 * errors 1002/1007/1009 with a reason and sticky, the feed contract on consumed bytes, the
 * buffer never above max_message), and the three event lists, each with the stream offset it
 * completed at, must equal the one of a model: a whole-buffer parser written straight from the
 * RFC rules, with the same fail-fast positions. The UTF-8 DFA is compared with a decoding oracle,
 * whole and split, including the exact byte where it gives up. The encoders' output is read back.
 * Everything feeds a volatile sink so nothing is optimised away.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "edge/wire/ws_frame.h"
#include "fuzz.h"

static volatile size_t sink;

/* Like assert, but never compiled out, and names the broken property in the crash report. */

/* ---- UTF-8 oracle --------------------------------------------------------------------------- */

/* 1 if s[0..len) is complete, valid UTF-8: decode by the announced length, then check the value. */
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

/*
 * 1 if s[0..len) can be completed to valid UTF-8 by appending at most 3 continuation bytes. One
 * representative of each continuation range that matters (80-8F, 90-9F, A0-BF) is enough.
 */
static int
oracle_utf8_viable(const uint8_t *s, size_t len)
{
    static const uint8_t reps[] = {0x80, 0x90, 0xa0};
    uint8_t *t = malloc(len + 3);
    int ok = oracle_utf8(s, len);

    memcpy(t, s, len);
    for (size_t k = 1; k <= 3 && !ok; ++k) {
        for (unsigned combo = 0; combo != (k == 1 ? 3u : k == 2 ? 9u : 27u) && !ok; ++combo) {
            unsigned c = combo;
            for (size_t j = 0; j != k; ++j, c /= 3)
                t[len + j] = reps[c % 3];
            ok = oracle_utf8(t, len + k);
        }
    }
    free(t);
    return ok;
}

static void
check_utf8(const uint8_t *s, size_t len, size_t split)
{
    pe_utf8_t whole, parts, bytes;
    int ok_whole, ok_parts;
    size_t fail_at = len;

    pe_utf8_init(&whole);
    ok_whole = pe_utf8_feed(&whole, s, len) == 0;
    pe_utf8_init(&parts);
    ok_parts = pe_utf8_feed(&parts, s, split) == 0 && pe_utf8_feed(&parts, s + split, len - split) == 0;
    CHECK(ok_whole == ok_parts);
    CHECK((ok_whole && pe_utf8_is_complete(&whole)) == oracle_utf8(s, len));
    CHECK(!ok_whole || pe_utf8_is_complete(&whole) == pe_utf8_is_complete(&parts));
    /* Fail fast: the DFA gives up at the first byte after which no completion is valid. */
    pe_utf8_init(&bytes);
    for (size_t i = 0; i != len; ++i) {
        if (pe_utf8_feed(&bytes, s + i, 1) != 0) {
            fail_at = i;
            break;
        }
    }
    CHECK((fail_at == len) == ok_whole);
    if (fail_at != len) {
        CHECK(oracle_utf8_viable(s, fail_at));
        CHECK(!oracle_utf8_viable(s, fail_at + 1));
    }
    sink += fail_at;
}

/* ---- event records -------------------------------------------------------------------------- */

typedef struct {
    int kind, opcode, compressed, code;
    size_t len;
    uint64_t hash;
    size_t at; /* stream offset where the event completed */
} rec_t;

typedef struct {
    rec_t *ev;
    size_t n, cap;
} trace_t;

static uint64_t
fnv1a(const uint8_t *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i != len; ++i)
        h = (h ^ s[i]) * 0x100000001b3u;
    return h;
}

static void
trace_add(trace_t *t, int kind, int opcode, int compressed, int code, const uint8_t *payload, size_t len, size_t at)
{
    CHECK(t->n < t->cap);
    t->ev[t->n++] = (rec_t){kind, opcode, compressed, code, len, fnv1a(payload, len), at};
}

static int
valid_close_code(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* ---- the model: a whole-buffer parser straight from the rules ------------------------------ */

static void
model(const uint8_t *in, size_t len, size_t max_message, int allow_rsv1, trace_t *t)
{
    uint8_t *msg = malloc(len + 1), ctl[125];
    size_t pos = 0, msg_len = 0;
    int msg_op = 0, msg_comp = 0;
    pe_utf8_t utf8;

#define MODEL_ERROR(code_, at_)                                                                                                    \
    do {                                                                                                                           \
        trace_add(t, PE_WS_EV_ERROR, 0, 0, code_, NULL, 0, at_);                                                                   \
        goto Exit;                                                                                                                 \
    } while (0)

    pe_utf8_init(&utf8);
    while (pos < len) {
        uint8_t b0 = in[pos], b1;
        int fin = b0 >> 7, rsv1 = (b0 >> 6) & 1, op = b0 & 0xf, ctl_frame = op >= 8;
        uint64_t plen;
        size_t hl, take, cur;
        const uint8_t *key;

        /* Byte 0. */
        if (!(op <= 2 || (op >= 8 && op <= 10)) || (b0 & 0x30) != 0)
            MODEL_ERROR(1002, pos + 1);
        if (ctl_frame && (rsv1 || !fin))
            MODEL_ERROR(1002, pos + 1);
        if (!ctl_frame && ((rsv1 && (!allow_rsv1 || op == 0)) || (op == 0) == (msg_op == 0)))
            MODEL_ERROR(1002, pos + 1);
        /* Byte 1 and the extended length. */
        if (len - pos < 2)
            break;
        b1 = in[pos + 1];
        plen = b1 & 0x7f;
        if ((b1 & 0x80) == 0 || (ctl_frame && plen > 125) || (op == 8 && plen == 1))
            MODEL_ERROR(1002, pos + 2);
        hl = 2;
        if (plen == 126) {
            if (len - pos < 4)
                break;
            plen = (uint64_t)in[pos + 2] << 8 | in[pos + 3];
            hl = 4;
            if (plen < 126)
                MODEL_ERROR(1002, pos + hl);
        } else if (plen == 127) {
            if (len - pos < 10)
                break;
            plen = 0;
            for (int i = 0; i != 8; ++i)
                plen = plen << 8 | in[pos + 2 + i];
            hl = 10;
            if ((plen >> 63) != 0 || plen < 65536)
                MODEL_ERROR(1002, pos + hl);
        }
        cur = op == 0 ? msg_len : 0;
        if (!ctl_frame && plen > max_message - cur)
            MODEL_ERROR(1009, pos + hl);
        /* Key and payload. */
        if (len - pos < hl + 4)
            break;
        key = in + pos + hl;
        pos += hl + 4;
        take = len - pos < plen ? len - pos : (size_t)plen;
        if (!ctl_frame && op != 0) {
            msg_op = op;
            msg_comp = rsv1;
            msg_len = 0;
            pe_utf8_init(&utf8);
        }
        for (size_t i = 0; i != take; ++i) {
            uint8_t c = in[pos + i] ^ key[i % 4];
            if (ctl_frame) {
                ctl[i] = c;
            } else {
                msg[msg_len++] = c;
                if (msg_op == 1 && !msg_comp && pe_utf8_feed(&utf8, &c, 1) != 0)
                    MODEL_ERROR(1007, pos + i + 1);
            }
        }
        if (take < plen)
            break;
        pos += take;
        /* Frame end. */
        if (op == 9 || op == 10) {
            trace_add(t, op == 9 ? PE_WS_EV_PING : PE_WS_EV_PONG, 0, 0, 0, ctl, take, pos);
        } else if (op == 8) {
            int code = take == 0 ? 1005 : ctl[0] << 8 | ctl[1];
            if (take != 0 && !valid_close_code(code))
                MODEL_ERROR(1002, pos);
            if (take != 0 && !oracle_utf8(ctl + 2, take - 2))
                MODEL_ERROR(1007, pos);
            trace_add(t, PE_WS_EV_CLOSE, 0, 0, code, ctl + (take != 0 ? 2 : 0), take != 0 ? take - 2 : 0, pos);
        } else if (fin) {
            if (msg_op == 1 && !msg_comp && !pe_utf8_is_complete(&utf8))
                MODEL_ERROR(1007, pos);
            trace_add(t, PE_WS_EV_MESSAGE, msg_op, msg_comp, 0, msg, msg_len, pos);
            msg_op = 0;
        }
    }
#undef MODEL_ERROR
Exit:
    free(msg);
}

/* ---- the reader under test ------------------------------------------------------------------ */

static uint32_t
rnd(uint32_t *state)
{
    /* xorshift32: any non-zero state works. */
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* Checks one event on its own and records it. Returns 0 once an error ended the stream. */
static int
check_event(pe_ws_reader_t *r, const pe_ws_event_t *ev, size_t at, trace_t *t)
{
    CHECK(ev->payload != NULL || ev->payload_len == 0 || ev->kind == PE_WS_EV_ERROR);
    CHECK((ev->reason != NULL) == (ev->kind == PE_WS_EV_ERROR));
    switch (ev->kind) {
    case PE_WS_EV_MESSAGE:
        CHECK(ev->opcode == PE_WS_OP_TEXT || ev->opcode == PE_WS_OP_BINARY);
        CHECK(ev->payload_len <= r->max_message);
        CHECK(ev->compressed == 0 || (ev->compressed == 1 && r->allow_rsv1));
        if (ev->opcode == PE_WS_OP_TEXT && !ev->compressed)
            CHECK(oracle_utf8(ev->payload, ev->payload_len));
        trace_add(t, ev->kind, ev->opcode, ev->compressed, 0, ev->payload, ev->payload_len, at);
        return 1;
    case PE_WS_EV_PING:
    case PE_WS_EV_PONG:
        CHECK(ev->payload_len <= 125);
        trace_add(t, ev->kind, 0, 0, 0, ev->payload, ev->payload_len, at);
        return 1;
    case PE_WS_EV_CLOSE:
        CHECK(ev->code == 1005 ? ev->payload_len == 0 : valid_close_code(ev->code));
        CHECK(ev->payload_len <= 123 && oracle_utf8(ev->payload, ev->payload_len));
        trace_add(t, ev->kind, 0, 0, ev->code, ev->payload, ev->payload_len, at);
        return 1;
    case PE_WS_EV_ERROR: {
        pe_ws_event_t again;
        static const uint8_t more[] = {0x81, 0x80, 0, 0, 0, 0};
        CHECK(ev->code == PE_WS_CLOSE_PROTOCOL || ev->code == PE_WS_CLOSE_INVALID_DATA || ev->code == PE_WS_CLOSE_TOO_BIG);
        CHECK(strlen(ev->reason) > 0);
        /* Sticky: the same error, nothing consumed. */
        CHECK(pe_ws_reader_feed(r, more, sizeof(more), &again) == 0);
        CHECK(again.kind == PE_WS_EV_ERROR && again.code == ev->code && again.reason == ev->reason);
        trace_add(t, ev->kind, 0, 0, ev->code, NULL, 0, at);
        return 0;
    }
    default:
        CHECK(!"unknown event kind");
        return 0;
    }
}

/*
 * Feeds in[0..len) in chunks: the whole input if seed is 0, one byte at a time if seed is 1, else
 * random sizes (empty ones included) from the seed, then calling shrink after some messages.
 */
static void
run_reader(const uint8_t *in, size_t len, size_t max_message, int allow_rsv1, uint32_t seed, trace_t *t)
{
    pe_ws_reader_t r;
    size_t from = 0;
    int go_on = 1;

    pe_ws_reader_init(&r, max_message, allow_rsv1);
    while (go_on && from < len) {
        size_t chunk_len = len - from, off = 0;
        uint8_t *chunk;
        if (seed == 1) {
            chunk_len = 1;
        } else if (seed != 0) {
            uint32_t x = rnd(&seed);
            size_t want = x % 8 == 0 ? 0 : x % 4 == 0 ? x >> 8 & 255 : (x >> 8 & 7) + 1;
            if (want < chunk_len)
                chunk_len = want;
        }
        /* An exact-size copy: reading past the chunk is an ASan error. */
        chunk = malloc(chunk_len);
        memcpy(chunk, in + from, chunk_len);
        for (;;) {
            pe_ws_event_t ev;
            size_t n = pe_ws_reader_feed(&r, chunk + off, chunk_len - off, &ev);
            CHECK(n <= chunk_len - off);
            off += n;
            /* The bound on memory: the private capacity, read here because it is the point. */
            CHECK(pe_ws_reader_buffered(&r) <= max_message && r._msg_cap <= max_message);
            if (ev.kind == PE_WS_EV_NONE) {
                CHECK(off == chunk_len);
                break;
            }
            CHECK(n > 0); /* the byte that completes an event is consumed by the call that reports it */
            if (!(go_on = check_event(&r, &ev, from + off, t)))
                break;
            if (ev.kind == PE_WS_EV_MESSAGE && seed > 1 && rnd(&seed) % 2 == 0) {
                CHECK(pe_ws_reader_buffered(&r) == 0);
                pe_ws_reader_shrink(&r);
                CHECK(r._msg_cap == 0);
            }
        }
        free(chunk);
        from += chunk_len;
    }
    pe_ws_reader_dispose(&r);
    CHECK(r._msg == NULL && r._msg_cap == 0);
}

static void
check_same(const trace_t *a, const trace_t *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i != a->n; ++i) {
        const rec_t *x = &a->ev[i], *y = &b->ev[i];
        CHECK(x->kind == y->kind && x->opcode == y->opcode && x->compressed == y->compressed && x->code == y->code);
        CHECK(x->len == y->len && x->hash == y->hash && x->at == y->at);
    }
}

/* ---- encoders ------------------------------------------------------------------------------- */

static void
check_encoders(const uint8_t *data, size_t size)
{
    uint8_t hdr[PE_WS_MAX_HEADER], body[125];
    uint64_t len = 0;
    size_t n, rlen;
    char *reason;
    pe_ws_reader_t r;
    pe_ws_event_t ev;
    uint8_t masked[PE_WS_MAX_HEADER + 4];

    /* A header for a length from the input reads back through the reader (mask bit added). */
    for (size_t i = 0; i != 8 && i < size; ++i)
        len = len << 8 | data[i];
    len >>= 1;
    n = pe_ws_encode_header(hdr, PE_WS_OP_BINARY, 0, len);
    CHECK(n == (len < 126 ? 2u : len <= 0xffff ? 4u : 10u));
    memcpy(masked, hdr, n);
    masked[1] |= 0x80;
    memset(masked + n, 0, 4);
    pe_ws_reader_init(&r, SIZE_MAX, 0);
    CHECK(pe_ws_reader_feed(&r, masked, n + 4, &ev) == n + 4);
    CHECK(len == 0 ? ev.kind == PE_WS_EV_MESSAGE && ev.payload_len == 0 : ev.kind == PE_WS_EV_NONE);
    if (len != 0 && len <= sizeof(body)) {
        /* The header announced exactly len bytes: they complete the message. */
        memset(body, 0, sizeof(body));
        CHECK(pe_ws_reader_feed(&r, body, (size_t)len, &ev) == len);
        CHECK(ev.kind == PE_WS_EV_MESSAGE && ev.payload_len == len);
    }
    pe_ws_reader_dispose(&r);

    /* A close payload: at most 125 bytes, a prefix of the reason, cut on a code point boundary. */
    rlen = strnlen((const char *)data, size);
    reason = malloc(rlen + 1);
    memcpy(reason, data, rlen);
    reason[rlen] = '\0';
    n = pe_ws_encode_close_payload(body, 1000, reason);
    CHECK(n >= 2 && n <= 125 && body[0] == 0x03 && body[1] == 0xe8);
    CHECK(memcmp(body + 2, reason, n - 2) == 0);
    CHECK(rlen <= 123 ? n - 2 == rlen : n - 2 >= 120);
    if (oracle_utf8((const uint8_t *)reason, rlen))
        CHECK(oracle_utf8(body + 2, n - 2));
    free(reason);
    sink += n;
}

/* ---- entry ---------------------------------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max_message, len;
    const uint8_t *in;
    int allow_rsv1;
    uint32_t seed;
    trace_t want, whole, chunks, bytes;

    check_encoders(data, size);
    check_utf8(data, size, size != 0 ? data[0] % (size + 1) : 0);
    if (size < 4)
        return 0;
    allow_rsv1 = data[0] & 1;
    switch (data[0] >> 1 & 3) {
    case 0:
        max_message = data[1];
        break;
    case 1:
        max_message = (size_t)data[1] << 8 | data[2];
        break;
    case 2:
        max_message = ((size_t)data[1] << 8 | data[2]) << 4;
        break;
    default:
        max_message = SIZE_MAX;
        break;
    }
    /* Seeds 0 and 1 mean whole and one byte at a time: random splits need 2 and up. */
    seed = ((uint32_t)data[3] << 16 | (uint32_t)size) + 2;
    in = data + 4;
    len = size - 4;

    /* An event completes at a distinct offset, an error takes one byte: len + 1 bounds them. */
    want = whole = chunks = bytes = (trace_t){NULL, 0, len + 1};
    want.ev = malloc((len + 1) * sizeof(rec_t));
    whole.ev = malloc((len + 1) * sizeof(rec_t));
    chunks.ev = malloc((len + 1) * sizeof(rec_t));
    bytes.ev = malloc((len + 1) * sizeof(rec_t));

    model(in, len, max_message, allow_rsv1, &want);
    run_reader(in, len, max_message, allow_rsv1, 0, &whole);
    run_reader(in, len, max_message, allow_rsv1, seed, &chunks);
    run_reader(in, len, max_message, allow_rsv1, 1, &bytes);
    check_same(&want, &whole);
    check_same(&want, &chunks);
    check_same(&want, &bytes);
    sink += want.n + (want.n != 0 ? (size_t)want.ev[want.n - 1].hash : 0);

    free(want.ev);
    free(whole.ev);
    free(chunks.ev);
    free(bytes.ev);
    return 0;
}

/*
 * Unit tests for edge/wire/ws_deflate.c (permessage-deflate, RFC 7692).
 *
 * Covered: negotiation of the offers real clients send (Chromium, node ws, python websockets,
 * Firefox, old WebKit's x-webkit-deflate-frame next to permessage-deflate), window bits in and
 * out of range (8 declined, 08, 0, 16, abc), quoted values and escapes, duplicates, unknown
 * parameters, a second offer after a declined one, whitespace and empty list elements,
 * malformed headers anywhere in the list (-1, *out untouched), a response capacity too small,
 * every prefix of a header at the end of a guard page, and that our response re-negotiates to
 * itself. Compression: every RFC 7692 7.2.3 example, byte-exact output for "Hello" and the empty
 * message, round trips of random and compressible data of 0..256 KiB at every window size
 * 9..15 (checked with an inflater limited to that window, so the negotiated
 * server_max_window_bits is really honoured), the max_out boundary, a 10 MiB zip bomb, corrupt
 * and truncated input, and blocks after a final block. The file includes ws_deflate.c with a
 * counting zlib allocator: it checks that every call releases all zlib memory and prints what
 * one call allocates (quoted in ws_deflate.c's header comment).
 *
 * Not covered here: the wire framing (RSV1, fragments) and the handshake around negotiation;
 * the ws transport's tests and fuzz_ws_deflate do those and arbitrary bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* As ws_deflate.c, which is included below (after zlib.h). */
#define ZLIB_CONST
#include <zlib.h>
#include "tap.h"

/* ---- counting zlib allocator, plugged into ws_deflate.c ------------------------------------- */

static size_t zmem_live, zmem_peak, zmem_calls;

/* Each block carries its size in front, 16 bytes to keep zlib's alignment. */
static voidpf
count_zalloc(voidpf opaque, uInt items, uInt size)
{
    size_t n = (size_t)items * size;
    unsigned char *p = malloc(n + 16);

    (void)opaque;
    if (p == NULL)
        abort();
    memcpy(p, &n, sizeof(n));
    zmem_live += n;
    if (zmem_live > zmem_peak)
        zmem_peak = zmem_live;
    ++zmem_calls;
    return p + 16;
}

static void
count_zfree(voidpf opaque, voidpf ptr)
{
    size_t n;
    unsigned char *p = (unsigned char *)ptr - 16;

    (void)opaque;
    memcpy(&n, p, sizeof(n));
    zmem_live -= n;
    free(p);
}

static void
zmem_reset(void)
{
    zmem_live = zmem_peak = zmem_calls = 0;
}

/*
 * The same for the buffers ws_deflate.c allocates itself through pe_malloc/pe_realloc/pe_free:
 * alloc.h's wrappers are inline, so redirecting malloc/realloc/free while ws_deflate.c (and with
 * it alloc.h) is compiled counts exactly the module's own allocations.
 */
static size_t heap_live, heap_peak;

static void *
heap_realloc(void *old, size_t n)
{
    size_t was = 0;
    unsigned char *p = old != NULL ? (unsigned char *)old - 16 : NULL;

    if (p != NULL)
        memcpy(&was, p, sizeof(was));
    p = realloc(p, n + 16);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof(n));
    heap_live += n - was;
    if (heap_live > heap_peak)
        heap_peak = heap_live;
    return p + 16;
}

static void *
heap_malloc(size_t n)
{
    return heap_realloc(NULL, n);
}

static void *
heap_calloc(size_t n, size_t sz)
{
    void *p = heap_malloc(n * sz);
    if (p != NULL)
        memset(p, 0, n * sz);
    return p;
}

static void
heap_free(void *ptr)
{
    size_t was;

    if (ptr == NULL)
        return;
    memcpy(&was, (unsigned char *)ptr - 16, sizeof(was));
    heap_live -= was;
    free((unsigned char *)ptr - 16);
}

#define PE_WS_DEFLATE_ZALLOC count_zalloc
#define PE_WS_DEFLATE_ZFREE count_zfree
#define malloc heap_malloc
#define calloc heap_calloc
#define realloc heap_realloc
#define free heap_free
#include "edge/wire/ws_deflate.c"
#undef malloc
#undef calloc
#undef realloc
#undef free

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Fills buf with random bytes (kind 0) or JSON-like text with repeats (kind 1). */
static void
fill(uint8_t *buf, size_t len, int kind)
{
    static const char *const words[] = {"{\"id\":", "\"channel\":", "\"news\"", "\"data\":", "[1,2,3]", ",", "}", " ", "hello"};
    size_t i = 0;

    if (kind == 0) {
        for (; i != len; ++i)
            buf[i] = (uint8_t)rng();
        return;
    }
    while (i != len) {
        const char *w = words[rng() % (sizeof(words) / sizeof(words[0]))];
        for (; *w != '\0' && i != len; ++w)
            buf[i++] = (uint8_t)*w;
    }
}

/* Inflates with pe_ws_inflate_message; out is set to NULL on failure (callers free it). */
static int
inflate_buf(const void *in, size_t len, size_t max_out, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    return pe_ws_inflate_message(in, len, max_out, out, out_len);
}

/* Inflates a hex-free byte literal and compares it with want. */
static void
check_inflates(const uint8_t *in, size_t len, const char *want, const char *what)
{
    uint8_t *out;
    size_t out_len;
    char *guarded = tap_guard_copy(in, len);

    TAP_EQ_INT(inflate_buf(guarded, len, 1024, &out, &out_len), 0, "%s: inflates", what);
    TAP_EQ_MEM(out, out_len, want, strlen(want), "%s: to the expected text", what);
    pe_free(out);
    tap_guard_free(guarded, len);
}

/*
 * Independent check of a compressed message with plain zlib and a window of `bits`: a stream
 * that references further back than the window fails with "invalid distance too far back".
 * Returns 1 if it inflates to want[0..want_len).
 */
static int
zlib_inflates_to(const uint8_t *in, size_t len, int bits, const uint8_t *want, size_t want_len)
{
    z_stream zs;
    uint8_t *msg = malloc(len + 4), *out = malloc(want_len + 1);
    int ok;

    memcpy(msg, in, len);
    memcpy(msg + len, "\x00\x00\xff\xff", 4);
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, -bits) != Z_OK)
        abort();
    zs.next_in = msg;
    zs.avail_in = (uInt)(len + 4);
    zs.next_out = out;
    zs.avail_out = (uInt)(want_len + 1);
    int ret = inflate(&zs, Z_SYNC_FLUSH);
    ok = (ret == Z_OK || ret == Z_BUF_ERROR) && zs.avail_in == 0 && zs.total_out == want_len && memcmp(out, want, want_len) == 0;
    inflateEnd(&zs);
    free(msg);
    free(out);
    return ok;
}

/* Raw deflate with plain zlib: flush Z_FINISH (a final block) or Z_SYNC_FLUSH (tail kept). */
static size_t
zlib_deflate(const void *in, size_t len, int flush, uint8_t *out, size_t cap)
{
    z_stream zs;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    zs.next_in = in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int ret = deflate(&zs, flush);
    if (ret != Z_OK && ret != Z_STREAM_END)
        abort();
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    return n;
}

/* ---- RFC 7692 7.2.3 examples ---------------------------------------------------------------- */

static void
test_rfc_examples(void)
{
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    uint8_t *out, *out2;
    size_t out_len, out2_len;

    /* 7.2.3.1: a message compressed into one block. */
    check_inflates(hello, sizeof(hello), "Hello", "7.2.3.1");
    TAP_EQ_INT(pe_ws_deflate_message((const uint8_t *)"Hello", 5, 15, &out, &out_len), 0, "7.2.3.1: deflates");
    TAP_EQ_MEM(out, out_len, hello, sizeof(hello), "7.2.3.1: byte-exact");
    pe_free(out);

    /*
     * 7.2.3.2: with no context takeover, the second "Hello" compresses exactly as the first;
     * the context-takeover form of the second (f2 00 11 00 00) refers back into the previous
     * message, which our fresh inflater does not have.
     */
    TAP_EQ_INT(pe_ws_deflate_message((const uint8_t *)"Hello", 5, 15, &out, &out_len), 0, "7.2.3.2: first message");
    TAP_EQ_INT(pe_ws_deflate_message((const uint8_t *)"Hello", 5, 15, &out2, &out2_len), 0, "7.2.3.2: second message");
    TAP_EQ_MEM(out2, out2_len, out, out_len, "7.2.3.2: no context takeover: the same bytes twice");
    check_inflates(out2, out2_len, "Hello", "7.2.3.2 second");
    pe_free(out);
    pe_free(out2);
    static const uint8_t takeover[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    TAP_EQ_INT(inflate_buf(takeover, sizeof(takeover), 1024, &out, &out_len), -1,
               "7.2.3.2: a back reference into a previous message is invalid here");

    /* 7.2.3.3: a stored (uncompressed) block. */
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00};
    check_inflates(stored, sizeof(stored), "Hello", "7.2.3.3");

    /* 7.2.3.4: a block with BFINAL set, then the empty block header. */
    static const uint8_t bfinal[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    check_inflates(bfinal, sizeof(bfinal), "Hello", "7.2.3.4");
    /* The same without the trailing 00 (a sender that used Z_FINISH): accepted. */
    check_inflates(bfinal, sizeof(bfinal) - 1, "Hello", "7.2.3.4 without the empty block");

    /* 7.2.3.5: two blocks, "He" then "llo", the first ended by a sync flush. */
    static const uint8_t two[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
    check_inflates(two, sizeof(two), "Hello", "7.2.3.5");

    /* 7.2.3.6: an empty message is the single byte 00, also as the last (empty) fragment. */
    check_inflates((const uint8_t *)"\x00", 1, "", "7.2.3.6 empty message");
    static const uint8_t frag[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00};
    check_inflates(frag, sizeof(frag), "Hello", "7.2.3.6 empty last fragment");
    for (int bits = 9; bits <= 15; ++bits) {
        TAP_EQ_INT(pe_ws_deflate_message((const uint8_t *)"", 0, bits, &out, &out_len), 0, "empty message, %d bits: deflates",
                   bits);
        TAP_EQ_MEM(out, out_len, "\x00", 1, "empty message, %d bits: the single byte 00", bits);
        pe_free(out);
    }
    TAP_EQ_INT(pe_ws_deflate_message(NULL, 0, 15, &out, &out_len), 0, "empty message from NULL");
    pe_free(out);
    /* An empty payload (a sender that skips compressing empty messages) is an empty message. */
    TAP_EQ_INT(inflate_buf(NULL, 0, 0, &out, &out_len), 0, "empty payload inflates");
    TAP_EQ_UINT(out_len, 0, "empty payload: to nothing");
    pe_free(out);
}

/* ---- inflate edge cases --------------------------------------------------------------------- */

static void
test_inflate_edges(void)
{
    uint8_t *out, buf[256];
    char *guarded;
    size_t out_len, n;

    /* A final block followed by a whole new stream: both decoded (7.2.3.4 allows blocks after). */
    n = zlib_deflate("Hello", 5, Z_FINISH, buf, sizeof(buf));
    n += zlib_deflate(", world", 7, Z_SYNC_FLUSH, buf + n, sizeof(buf) - n) - 4;
    check_inflates(buf, n, "Hello, world", "a stream after a final block");
    /* Many empty final blocks (03 00: BFINAL, fixed Huffman, end of block) then data. */
    n = 0;
    for (int i = 0; i != 50; ++i) {
        buf[n++] = 0x03;
        buf[n++] = 0x00;
    }
    n += zlib_deflate("x", 1, Z_SYNC_FLUSH, buf + n, sizeof(buf) - n) - 4;
    check_inflates(buf, n, "x", "50 empty final blocks, then data");

    /* Corrupt input: -1, *out untouched. */
    static const struct {
        const char *bytes;
        size_t len;
        const char *what;
    } corrupt[] = {
        {"\x07", 1, "reserved block type 11"},
        {"\xff\xff\xff\xff", 4, "all ones"},
        {"\x00\x05\x00\x05\x00Hello\x00", 11, "stored block with a wrong NLEN"},
        {"\xf2\x00\x11\x00\x00", 5, "distance too far back"},
        {"\xfc\xff", 2, "dynamic block with too many length codes"},
    };
    for (size_t i = 0; i != sizeof(corrupt) / sizeof(corrupt[0]); ++i) {
        guarded = tap_guard_copy(corrupt[i].bytes, corrupt[i].len);
        out = (uint8_t *)"untouched";
        TAP_EQ_INT(pe_ws_inflate_message((uint8_t *)guarded, corrupt[i].len, 1024, &out, &out_len), -1, "corrupt: %s",
                   corrupt[i].what);
        TAP_OK(strcmp((char *)out, "untouched") == 0, "corrupt: %s: *out untouched", corrupt[i].what);
        tap_guard_free(guarded, corrupt[i].len);
    }

    /* max_out 0: only empty messages pass. */
    TAP_EQ_INT(inflate_buf("\x00", 1, 0, &out, &out_len), 0, "max_out 0: empty message");
    pe_free(out);
    TAP_EQ_INT(inflate_buf("\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 0, &out, &out_len), -2, "max_out 0: Hello is too big");
    TAP_EQ_INT(inflate_buf("\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 4, &out, &out_len), -2, "max_out 4: Hello is too big");
    TAP_EQ_INT(inflate_buf("\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 5, &out, &out_len), 0, "max_out 5: Hello fits");
    pe_free(out);
}

static void
test_truncated(void)
{
    size_t len = 20000, clen, out_len;
    uint8_t *msg = malloc(len), *comp, *out;
    int accepted_short = 0, errors = 0, cuts = 0;

    fill(msg, len, 1);
    TAP_EQ_INT(pe_ws_deflate_message(msg, len, 15, &comp, &clen), 0, "deflates 20000 bytes of text");
    /* Cutting the message anywhere never yields the original message. */
    for (size_t cut = 0; cut < clen; cut += cut < 64 || clen - cut < 64 ? 1 : 37) {
        int r = inflate_buf(comp, cut, len * 2, &out, &out_len);
        ++cuts;
        if (r == 0 && out_len == len && memcmp(out, msg, len) == 0)
            ++accepted_short;
        errors += r == -1;
        pe_free(out);
    }
    TAP_EQ_INT(accepted_short, 0, "no truncation of %zu bytes inflates to the original (%d cuts)", clen, cuts);
    tap_note("%d of %d cuts of a %zu-byte message are errors", errors, cuts, clen);
    TAP_OK(errors >= cuts - 3, "truncations are errors (%d of %d; a cut just before the last byte may decode)", errors, cuts);
    /* The middle of a block: definitely -1 (the block continues past the input). */
    TAP_EQ_INT(inflate_buf(comp, clen / 2, len * 2, &out, &out_len), -1, "cut in the middle: -1");
    /*
     * A stored block whose data is cut. (Cut by 4 bytes or fewer it would still decode: the
     * appended tail becomes its data. No inflater can tell; only the text is wrong.)
     */
    TAP_EQ_INT(inflate_buf("\x00\x05\x00\xfa\xff\x48\x65", 7, 1024, &out, &out_len), -1, "stored block cut: -1");
    pe_free(comp);
    free(msg);
}

/* ---- round trips ---------------------------------------------------------------------------- */

static void
test_round_trips(void)
{
    static const size_t sizes[] = {0,    1,    2,     3,     5,     64,    255,   256,    257,   1000,
                                   4095, 4096, 32767, 32768, 65535, 65536, 65537, 100000, 262144};
    size_t max = 262144;
    uint8_t *msg = malloc(max);

    for (int kind = 0; kind != 2; ++kind) {
        for (int bits = 9; bits <= 15; ++bits) {
            int failed = 0, limited = 0;
            for (size_t i = 0; i != sizeof(sizes) / sizeof(sizes[0]); ++i) {
                size_t len = sizes[i], clen, out_len;
                uint8_t *comp, *out;
                fill(msg, len, kind);
                if (pe_ws_deflate_message(msg, len, bits, &comp, &clen) != 0) {
                    ++failed;
                    continue;
                }
                /* Exactly len fits; one byte less is a zip bomb. */
                if (inflate_buf(comp, clen, len, &out, &out_len) != 0 || out_len != len || (len != 0 && memcmp(out, msg, len) != 0))
                    ++failed;
                pe_free(out);
                if (len != 0 && inflate_buf(comp, clen, len - 1, &out, &out_len) != -2)
                    ++failed;
                if (!zlib_inflates_to(comp, clen, bits, msg, len))
                    ++limited;
                pe_free(comp);
            }
            TAP_EQ_INT(failed, 0, "%s data, %d window bits: every size 0..256 KiB round-trips, max_out exact",
                       kind == 0 ? "random" : "text", bits);
            TAP_EQ_INT(limited, 0, "%s data, %d window bits: an inflater with a %d-bit window decodes it",
                       kind == 0 ? "random" : "text", bits, bits);
        }
    }
    /* Text compresses; random data grows by at most a few bytes (stored blocks). */
    size_t clen;
    uint8_t *comp;
    fill(msg, max, 1);
    pe_ws_deflate_message(msg, max, 15, &comp, &clen);
    TAP_OK(clen < max / 3, "256 KiB of text compresses to %zu bytes", clen);
    pe_free(comp);
    fill(msg, max, 0);
    pe_ws_deflate_message(msg, max, 15, &comp, &clen);
    TAP_OK(clen <= max + max / 1000 + 64, "256 KiB of random bytes: %zu bytes", clen);
    pe_free(comp);
    free(msg);

    uint8_t *out = (uint8_t *)"untouched";
    size_t out_len;
    TAP_EQ_INT(pe_ws_deflate_message((const uint8_t *)"x", 1, 8, &out, &out_len), -1, "window bits 8: -1");
    TAP_EQ_INT(pe_ws_deflate_message((const uint8_t *)"x", 1, 16, &out, &out_len), -1, "window bits 16: -1");
    TAP_OK(strcmp((char *)out, "untouched") == 0, "*out untouched on failure");
}

static void
test_zip_bomb(void)
{
    size_t len = 10u << 20, clen, out_len;
    uint8_t *zeros = calloc(1, len), *comp, *out;

    TAP_EQ_INT(pe_ws_deflate_message(zeros, len, 15, &comp, &clen), 0, "10 MiB of zeros deflate");
    tap_note("10 MiB of zeros compress to %zu bytes", clen);
    out = (uint8_t *)"untouched";
    heap_peak = heap_live;
    size_t live_before = heap_live;
    TAP_EQ_INT(pe_ws_inflate_message(comp, clen, 64u << 10, &out, &out_len), -2, "max_out 64 KiB: -2");
    TAP_OK(heap_peak - live_before <= (64u << 10) + 1, "max_out 64 KiB: at most max_out + 1 bytes of output allocated (%zu)",
           heap_peak - live_before);
    TAP_EQ_UINT(heap_live, live_before, "max_out 64 KiB: output buffer released");
    TAP_OK(strcmp((char *)out, "untouched") == 0, "*out untouched on -2");
    TAP_EQ_UINT(zmem_live, 0, "zlib memory released after -2");
    TAP_EQ_INT(inflate_buf(comp, clen, len, &out, &out_len), 0, "max_out 10 MiB: inflates");
    TAP_OK(out_len == len && memcmp(out, zeros, len) == 0, "max_out 10 MiB: 10 MiB of zeros");
    pe_free(out);
    TAP_EQ_INT(inflate_buf(comp, clen, len - 1, &out, &out_len), -2, "max_out 10 MiB - 1: -2");
    pe_free(comp);
    free(zeros);
}

/* ---- zlib memory per call ------------------------------------------------------------------- */

static void
test_zlib_memory(void)
{
    uint8_t msg[1024], *comp, *out;
    size_t clen, out_len, peak9, peak15, calls9, calls15;

    fill(msg, sizeof(msg), 1);
    zmem_reset();
    TAP_EQ_INT(pe_ws_deflate_message(msg, sizeof(msg), 9, &comp, &clen), 0, "deflate, 9 bits");
    peak9 = zmem_peak;
    calls9 = zmem_calls;
    TAP_EQ_UINT(zmem_live, 0, "deflate, 9 bits: zlib memory released");
    pe_free(comp);

    zmem_reset();
    TAP_EQ_INT(pe_ws_deflate_message(msg, sizeof(msg), 15, &comp, &clen), 0, "deflate, 15 bits");
    peak15 = zmem_peak;
    calls15 = zmem_calls;
    TAP_EQ_UINT(zmem_live, 0, "deflate, 15 bits: zlib memory released");

    zmem_reset();
    TAP_EQ_INT(inflate_buf(comp, clen, sizeof(msg), &out, &out_len), 0, "inflate");
    TAP_EQ_UINT(zmem_live, 0, "inflate: zlib memory released");
    tap_note("zlib %s memory per call (memLevel 8): deflate 9 bits %zu bytes in %zu blocks, deflate 15 bits %zu bytes in %zu "
             "blocks, inflate 15 bits %zu bytes in %zu blocks",
             zlibVersion(), peak9, calls9, peak15, calls15, zmem_peak, zmem_calls);
    /* Sanity bounds rather than exact values, which depend on the zlib build. */
    TAP_OK(peak9 > 100000 && peak9 < 160000, "deflate 9 bits: %zu bytes, about 134 KiB", peak9);
    TAP_OK(peak15 > 250000 && peak15 < 290000, "deflate 15 bits: %zu bytes, about 262 KiB", peak15);
    TAP_OK(zmem_peak > 32768 && zmem_peak < 48000, "inflate: %zu bytes, about 39 KiB", zmem_peak);
    pe_free(out);
    pe_free(comp);

    /* Every error path releases zlib's memory too. */
    zmem_reset();
    TAP_EQ_INT(inflate_buf("\x07", 1, 1024, &out, &out_len), -1, "a corrupt message");
    TAP_EQ_INT(inflate_buf("\x00\x05\x00\xfa\xff\x48\x65", 7, 1024, &out, &out_len), -1, "a truncated message");
    TAP_EQ_INT(inflate_buf("\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 2, &out, &out_len), -2, "a message too large");
    TAP_EQ_UINT(zmem_live, 0, "inflate errors: zlib memory released");
}

/* ---- negotiation ---------------------------------------------------------------------------- */

#define BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

/*
 * Negotiates hdr (placed at the end of a guard page) with resp_cap 128. Checks the return value
 * and, on acceptance, the response and both window sizes.
 */
static void
check_neg(const char *hdr, int want, const char *want_resp, int want_server, int want_client)
{
    size_t len = strlen(hdr);
    char *guarded = tap_guard_copy(hdr, len), resp[128];
    pe_ws_pmd_t pmd = {-7, -7};

    memset(resp, 'X', sizeof(resp));
    int r = pe_ws_pmd_negotiate(guarded, len, &pmd, resp, sizeof(resp));
    TAP_EQ_INT(r, want, "[%s]: returns %d", hdr, want);
    if (want == 1) {
        TAP_EQ_STR(resp, want_resp, "[%s]: response", hdr);
        TAP_OK(pmd.server_max_window_bits == want_server && pmd.client_max_window_bits == want_client,
               "[%s]: server %d (want %d), client %d (want %d) bits", hdr, pmd.server_max_window_bits, want_server,
               pmd.client_max_window_bits, want_client);
        /* Our response, read as an offer, is accepted with the same answer. */
        pe_ws_pmd_t again;
        char resp2[128];
        TAP_OK(pe_ws_pmd_negotiate(resp, strlen(resp), &again, resp2, sizeof(resp2)) == 1 && strcmp(resp, resp2) == 0 &&
                   again.server_max_window_bits == pmd.server_max_window_bits,
               "[%s]: the response re-negotiates to itself", hdr);
    } else if (r == want) {
        TAP_OK(resp[0] == '\0' && pmd.server_max_window_bits == -7 && pmd.client_max_window_bits == -7,
               "[%s]: resp empty, *out untouched", hdr);
    }
    tap_guard_free(guarded, len);
}

static void
test_negotiate_clients(void)
{
    /* Chromium, node ws's default and python websockets' default offer. */
    check_neg("permessage-deflate; client_max_window_bits", 1, BASE, 15, 15);
    /* Firefox. */
    check_neg("permessage-deflate", 1, BASE, 15, 15);
    /* Old Safari/WebKit listed its pre-standard extension first; two header lines joined. */
    check_neg("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits", 1, BASE, 15, 15);
    check_neg("x-webkit-deflate-frame", 0, NULL, 0, 0);
    check_neg("x-webkit-deflate-frame; max_window_bits=10; no_context_takeover", 0, NULL, 0, 0);
    /* Autobahn-style offers. */
    check_neg("permessage-deflate; client_no_context_takeover; client_max_window_bits", 1, BASE, 15, 15);
    check_neg("permessage-deflate; server_no_context_takeover", 1, BASE, 15, 15);
    check_neg("permessage-deflate; server_max_window_bits=10", 1, BASE "; server_max_window_bits=10", 10, 15);
    check_neg("permessage-deflate; server_max_window_bits=9", 1, BASE "; server_max_window_bits=9", 9, 15);
    check_neg("permessage-deflate; server_max_window_bits=15", 1, BASE "; server_max_window_bits=15", 15, 15);
    /* An offered client window is never echoed (7.1.2.2 allows that; our inflater takes any). */
    check_neg("permessage-deflate; client_max_window_bits=10", 1, BASE, 15, 10);
    check_neg("permessage-deflate; client_max_window_bits=8", 1, BASE, 15, 8);
    check_neg("permessage-deflate; server_max_window_bits=12; client_max_window_bits=11; client_no_context_takeover; "
              "server_no_context_takeover",
              1, BASE "; server_max_window_bits=12", 12, 11);
    /* The longest response: 101 characters. */
    check_neg("permessage-deflate; server_max_window_bits=15; client_max_window_bits=15", 1, BASE "; server_max_window_bits=15", 15,
              15);
    TAP_EQ_UINT(strlen(BASE "; server_max_window_bits=15"), 101, "the longest response fits 128");
}

static void
test_negotiate_declines(void)
{
    /* An 8-bit server window is accepted (we then never compress), so the first offer wins. */
    check_neg("permessage-deflate; server_max_window_bits=8", 1, BASE "; server_max_window_bits=8", 8, 15);
    check_neg("permessage-deflate; server_max_window_bits=8; client_max_window_bits", 1, BASE "; server_max_window_bits=8", 8, 15);
    check_neg("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9", 1,
              BASE "; server_max_window_bits=8", 8, 15);
    /* Bad values. */
    static const char *const bad[] = {"0", "7",  "16", "08", "010",  "abc",    "100",
                                      "1", "9a", "-9", "+9", "15.0", "\"08\"", "\"abc\""};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        char hdr[128];
        snprintf(hdr, sizeof(hdr), "permessage-deflate; server_max_window_bits=%s", bad[i]);
        check_neg(hdr, 0, NULL, 0, 0);
        snprintf(hdr, sizeof(hdr), "permessage-deflate; client_max_window_bits=%s", bad[i]);
        check_neg(hdr, 0, NULL, 0, 0);
    }
    /* Values where none is allowed, and a missing mandatory value. */
    check_neg("permessage-deflate; server_no_context_takeover=1", 0, NULL, 0, 0);
    check_neg("permessage-deflate; client_no_context_takeover=\"x\"", 0, NULL, 0, 0);
    check_neg("permessage-deflate; server_max_window_bits", 0, NULL, 0, 0);
    /* Duplicates. */
    check_neg("permessage-deflate; client_max_window_bits; client_max_window_bits", 0, NULL, 0, 0);
    check_neg("permessage-deflate; client_max_window_bits=10; client_max_window_bits=10", 0, NULL, 0, 0);
    check_neg("permessage-deflate; server_max_window_bits=10; server_max_window_bits=11", 0, NULL, 0, 0);
    check_neg("permessage-deflate; server_no_context_takeover; server_no_context_takeover", 0, NULL, 0, 0);
    check_neg("permessage-deflate; client_no_context_takeover; client_no_context_takeover", 0, NULL, 0, 0);
    check_neg("permessage-deflate; client_max_window_bits; client_max_window_bits, permessage-deflate", 1, BASE, 15, 15);
    /* Unknown parameters; names are case-sensitive. */
    check_neg("permessage-deflate; foo", 0, NULL, 0, 0);
    check_neg("permessage-deflate; foo=1, permessage-deflate; client_max_window_bits=9", 1, BASE, 15, 9);
    check_neg("permessage-deflate; Client_Max_Window_Bits", 0, NULL, 0, 0);
    check_neg("Permessage-Deflate", 0, NULL, 0, 0);
    check_neg("permessage-deflate-x, x-permessage-deflate", 0, NULL, 0, 0);
    /* No offer at all: empty or only empty list elements. */
    check_neg("", 0, NULL, 0, 0);
    check_neg("   \t ", 0, NULL, 0, 0);
    check_neg(",", 0, NULL, 0, 0);
    check_neg(" , ,, ", 0, NULL, 0, 0);
    check_neg("foo, bar; baz=\"q\\\"\"", -1, NULL, 0, 0); /* an escaped DQUOTE is not a tchar */
    check_neg("foo, bar; baz=\"q\\x\"", 0, NULL, 0, 0);
}

static void
test_negotiate_syntax(void)
{
    /* Quoted values (RFC 6455 9.1: their content must be a token). */
    check_neg("permessage-deflate; server_max_window_bits=\"10\"", 1, BASE "; server_max_window_bits=10", 10, 15);
    check_neg("permessage-deflate; client_max_window_bits=\"12\"", 1, BASE, 15, 12);
    check_neg("permessage-deflate; client_max_window_bits=\"1\\2\"", 1, BASE, 15, 12);
    check_neg("permessage-deflate; client_max_window_bits=\"\"", -1, NULL, 0, 0);
    check_neg("permessage-deflate; client_max_window_bits=\"1 2\"", -1, NULL, 0, 0);
    check_neg("permessage-deflate; client_max_window_bits=\"12", -1, NULL, 0, 0);
    check_neg("permessage-deflate; client_max_window_bits=\"12\\", -1, NULL, 0, 0);
    check_neg("permessage-deflate; client_max_window_bits=1\"2\"", -1, NULL, 0, 0);
    /* Whitespace: none, lots, tabs, around '=' and ',' (RFC 7230 OWS, RFC 6455's implied LWS). */
    check_neg("permessage-deflate;client_max_window_bits", 1, BASE, 15, 15);
    check_neg("  permessage-deflate  ;  client_max_window_bits  ", 1, BASE, 15, 15);
    check_neg("\tpermessage-deflate\t;\tserver_max_window_bits\t=\t11\t", 1, BASE "; server_max_window_bits=11", 11, 15);
    check_neg("permessage-deflate; server_max_window_bits = \"11\" ,x", 1, BASE "; server_max_window_bits=11", 11, 15);
    check_neg(", , permessage-deflate ,, ", 1, BASE, 15, 15);
    /* Malformed: -1 even after an acceptable offer, resp empty, *out untouched. */
    static const char *const malformed[] = {
        ";",
        "permessage-deflate;",
        "permessage-deflate; ",
        "permessage-deflate;;client_max_window_bits",
        "permessage-deflate; =10",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits= ,",
        "permessage-deflate x",
        "permessage-deflate; server_max_window_bits=10 10",
        "permessage-deflate; a=b=c",
        "permessage-deflate, ;",
        "permessage-deflate, foo;",
        "permessage-deflate, foo bar",
        "permessage-deflate\r\n",
        "permessage-deflate; client_max_window_bits\r\n , foo",
        "perm@ssage-deflate",
        "permessage-deflate; client_max_window_bits=(10)",
        "permessage-deflate; client_max_window_bits=1/0",
        "\"permessage-deflate\"",
        "permessage-deflate; \"client_max_window_bits\"",
        "permessage-d\303\251flate",
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits, permessage-deflate; x=\"",
    };
    for (size_t i = 0; i != sizeof(malformed) / sizeof(malformed[0]); ++i)
        check_neg(malformed[i], -1, NULL, 0, 0);

    /* A NUL inside the header (len covers it): malformed, not a terminator. */
    pe_ws_pmd_t pmd;
    char resp[128];
    TAP_EQ_INT(pe_ws_pmd_negotiate("permessage-deflate\0, foo", 24, &pmd, resp, sizeof(resp)), -1, "an embedded NUL is malformed");
    /* Only hdr[0..len) is read. */
    TAP_EQ_INT(pe_ws_pmd_negotiate("permessage-deflate; x", 18, &pmd, resp, sizeof(resp)), 1, "a prefix: only len bytes are read");
    TAP_EQ_INT(pe_ws_pmd_negotiate(NULL, 0, &pmd, resp, sizeof(resp)), 0, "NULL, 0: no offer");

    /* Every prefix of a long header, at the end of a guard page: no overread, a sane verdict. */
    const char *full = " x-foo; a=\"b\\c\" , permessage-deflate ; server_max_window_bits = \"10\" ; client_max_window_bits ,, "
                       "permessage-deflate";
    int bad = 0;
    for (size_t len = 0; len <= strlen(full); ++len) {
        char *g = tap_guard_copy(full, len);
        int r = pe_ws_pmd_negotiate(g, len, &pmd, resp, sizeof(resp));
        bad += r < -1 || r > 1 || (r == 1 && strncmp(resp, BASE, strlen(BASE)) != 0);
        tap_guard_free(g, len);
    }
    TAP_EQ_INT(bad, 0, "every prefix of a long header");
}

static void
test_negotiate_resp_cap(void)
{
    const char *hdr = "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10, permessage-deflate";
    size_t base_len = strlen(BASE), long_len = strlen(BASE "; server_max_window_bits=10");
    pe_ws_pmd_t pmd = {-7, -7};
    char *resp;

    /* Exactly enough for the first answer (its length + NUL). */
    resp = malloc(long_len + 1);
    TAP_EQ_INT(pe_ws_pmd_negotiate(hdr, strlen(hdr), &pmd, resp, long_len + 1), 1, "resp_cap = long answer + 1: first offer");
    TAP_EQ_INT(pmd.server_max_window_bits, 10, "resp_cap = long answer + 1: server 10 bits");
    free(resp);
    /* One byte less: the first offer is declined, the second answered. */
    resp = malloc(long_len);
    TAP_EQ_INT(pe_ws_pmd_negotiate(hdr, strlen(hdr), &pmd, resp, long_len), 1, "resp_cap = long answer: second offer");
    TAP_EQ_STR(resp, BASE, "resp_cap = long answer: the short response");
    TAP_EQ_INT(pmd.server_max_window_bits, 15, "resp_cap = long answer: server 15 bits");
    free(resp);
    /* Too small for any answer: declined, resp "" within its capacity. */
    resp = malloc(base_len);
    pmd.server_max_window_bits = -7;
    TAP_EQ_INT(pe_ws_pmd_negotiate(hdr, strlen(hdr), &pmd, resp, base_len), 0, "resp_cap = short answer: declined");
    TAP_OK(resp[0] == '\0' && pmd.server_max_window_bits == -7, "resp_cap = short answer: resp \"\", *out untouched");
    free(resp);
    resp = malloc(1);
    TAP_EQ_INT(pe_ws_pmd_negotiate(hdr, strlen(hdr), &pmd, resp, 1), 0, "resp_cap 1: declined");
    TAP_EQ_STR(resp, "", "resp_cap 1: resp \"\"");
    free(resp);
    TAP_EQ_INT(pe_ws_pmd_negotiate(hdr, strlen(hdr), &pmd, NULL, 0), 0, "resp_cap 0, resp NULL: declined, nothing written");
    /* A malformed header is still -1 with a tiny capacity. */
    TAP_EQ_INT(pe_ws_pmd_negotiate("x;", 2, &pmd, NULL, 0), -1, "resp_cap 0: malformed is still -1");
}

int
main(void)
{
    tap_subtest("rfc7692 examples", test_rfc_examples);
    tap_subtest("inflate edges", test_inflate_edges);
    tap_subtest("truncated", test_truncated);
    tap_subtest("round trips", test_round_trips);
    tap_subtest("zip bomb", test_zip_bomb);
    tap_subtest("zlib memory", test_zlib_memory);
    tap_subtest("negotiate clients", test_negotiate_clients);
    tap_subtest("negotiate declines", test_negotiate_declines);
    tap_subtest("negotiate syntax", test_negotiate_syntax);
    tap_subtest("negotiate resp_cap", test_negotiate_resp_cap);
    return tap_done();
}

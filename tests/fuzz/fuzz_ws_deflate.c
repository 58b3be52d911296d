/*
 * libFuzzer target for edge/wire/ws_deflate.c. The first input byte picks one of three drivers (its
 * value modulo 3), the rest is their input; every buffer is an exact-size heap allocation so
 * that any read or write past it is an ASan error.
 *
 *   0  pe_ws_pmd_negotiate over arbitrary header bytes, with resp_cap 128 and with a small
 *      capacity derived from the input. Checks: the result is -1, 0 or 1; a small capacity
 *      never changes -1 or 0 and, when the large answer fits it, gives the same answer; an
 *      accepted response is NUL-terminated within resp_cap, is our fixed answer with an
 *      optional server_max_window_bits=8..15, reports window bits in range, and read as an
 *      offer negotiates to itself.
 *   1  pe_ws_inflate_message over arbitrary bytes (byte 1 sets max_out = 64 * byte, 0..16320).
 *      Checks: the output never exceeds max_out, and a 1 MiB cap agrees: same bytes if the
 *      small cap succeeded, the same -1, and for -2 a failure or more than max_out bytes.
 *   2  a deflate -> inflate round trip (byte 1 sets window bits 9..15). Checks: the data comes
 *      back, max_out = len succeeds and len - 1 is -2, and plain zlib limited to that window
 *      decodes it (the negotiated server_max_window_bits is honoured).
 * Seeds: corpus/fuzz_ws_deflate/, names starting with the driver (neg-, inf-, rt-).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define ZLIB_CONST
#include <zlib.h>
#include "edge/wire/ws_deflate.h"
#include "fuzz.h"

/* An invariant that must hold for every input; abort() makes libFuzzer keep the input. */

#define BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

/* Exact-size copy: malloc(0) still returns a unique pointer with no usable byte. */
static char *
exact_copy(const uint8_t *data, size_t size)
{
    char *p = malloc(size);
    if (p == NULL && size != 0)
        abort();
    if (size != 0)
        memcpy(p, data, size);
    return p;
}

/* Our response: BASE, optionally "; server_max_window_bits=N" with N = the reported 8..15. */
static void
check_response(const char *resp, const pe_ws_pmd_t *pmd)
{
    size_t base_len = strlen(BASE);
    char want[64];

    CHECK(pmd->server_max_window_bits >= 8 && pmd->server_max_window_bits <= 15);
    CHECK(pmd->client_max_window_bits >= 8 && pmd->client_max_window_bits <= 15);
    CHECK(strncmp(resp, BASE, base_len) == 0);
    if (resp[base_len] != '\0') {
        snprintf(want, sizeof(want), "; server_max_window_bits=%d", pmd->server_max_window_bits);
        CHECK(strcmp(resp + base_len, want) == 0);
    } else {
        CHECK(pmd->server_max_window_bits == 15);
    }

    /* Read as an offer, the response is accepted with the same answer. */
    pe_ws_pmd_t again;
    char resp2[128];
    CHECK(pe_ws_pmd_negotiate(resp, strlen(resp), &again, resp2, sizeof(resp2)) == 1);
    CHECK(strcmp(resp, resp2) == 0);
    CHECK(again.server_max_window_bits == pmd->server_max_window_bits);
}

static void
fuzz_negotiate(const uint8_t *data, size_t size)
{
    char *hdr = exact_copy(data, size), *resp = malloc(128);
    pe_ws_pmd_t pmd = {-7, -7}, small_pmd = {-7, -7};
    int r = pe_ws_pmd_negotiate(hdr, size, &pmd, resp, 128);

    CHECK(r >= -1 && r <= 1);
    if (r == 1) {
        CHECK(memchr(resp, '\0', 128) != NULL);
        check_response(resp, &pmd);
    } else {
        CHECK(resp[0] == '\0' && pmd.server_max_window_bits == -7 && pmd.client_max_window_bits == -7);
    }

    /* A small capacity (0..105 bytes: around the lengths of our two answers). */
    size_t cap = size % 106;
    char *small = cap != 0 ? malloc(cap) : NULL;
    int rs = pe_ws_pmd_negotiate(hdr, size, &small_pmd, small, cap);
    if (r != 1) {
        CHECK(rs == r);
    } else if (strlen(resp) < cap) {
        CHECK(rs == 1 && strcmp(small, resp) == 0);
        CHECK(small_pmd.server_max_window_bits == pmd.server_max_window_bits);
        CHECK(small_pmd.client_max_window_bits == pmd.client_max_window_bits);
    } else {
        /* A later offer may still fit; none at all means "" if there is room for it. */
        CHECK(rs == 0 || rs == 1);
        if (rs == 1) {
            CHECK(memchr(small, '\0', cap) != NULL);
            check_response(small, &small_pmd);
        } else if (cap != 0) {
            CHECK(small[0] == '\0');
        }
    }
    free(small);
    free(resp);
    free(hdr);
}

static void
fuzz_inflate(const uint8_t *data, size_t size)
{
    size_t max_out, out_len = 0, big_len = 0;
    uint8_t *in, *out = NULL, *big = NULL;

    if (size < 1)
        return;
    max_out = (size_t)data[0] * 64;
    in = (uint8_t *)exact_copy(data + 1, size - 1);
    int r = pe_ws_inflate_message(in, size - 1, max_out, &out, &out_len);
    CHECK(r == 0 || r == -1 || r == -2);
    CHECK(r == 0 || out == NULL);
    if (r == 0)
        CHECK(out != NULL && out_len <= max_out);

    int rb = pe_ws_inflate_message(in, size - 1, 1u << 20, &big, &big_len);
    CHECK(rb == 0 || rb == -1 || rb == -2);
    if (r == 0)
        CHECK(rb == 0 && big_len == out_len && (out_len == 0 || memcmp(big, out, out_len) == 0));
    else if (r == -1)
        CHECK(rb == -1);
    else
        CHECK(rb != 0 || big_len > max_out);
    free(big);
    free(out);
    free(in);
}

/* Plain zlib with a `bits` window: a reference further back than the window is an error. */
static int
zlib_inflates_to(const uint8_t *in, size_t len, int bits, const uint8_t *want, size_t want_len)
{
    z_stream zs;
    uint8_t *msg = malloc(len + 4), *out = malloc(want_len + 1);
    int ok;

    memcpy(msg, in, len);
    memcpy(msg + len, "\x00\x00\xff\xff", 4);
    memset(&zs, 0, sizeof(zs));
    CHECK(inflateInit2(&zs, -bits) == Z_OK);
    zs.next_in = msg;
    zs.avail_in = (uInt)(len + 4);
    zs.next_out = out;
    zs.avail_out = (uInt)(want_len + 1);
    int ret = inflate(&zs, Z_SYNC_FLUSH);
    ok = (ret == Z_OK || ret == Z_BUF_ERROR) && zs.avail_in == 0 && zs.total_out == want_len &&
         (want_len == 0 || memcmp(out, want, want_len) == 0);
    inflateEnd(&zs);
    free(msg);
    free(out);
    return ok;
}

static void
fuzz_round_trip(const uint8_t *data, size_t size)
{
    uint8_t *in, *comp = NULL, *out = NULL;
    size_t len, clen = 0, out_len = 0;
    int bits;

    if (size < 1)
        return;
    bits = 9 + data[0] % 7;
    len = size - 1;
    in = (uint8_t *)exact_copy(data + 1, len);
    CHECK(pe_ws_deflate_message(in, len, bits, &comp, &clen) == 0);
    CHECK(clen >= 1);
    CHECK(pe_ws_inflate_message(comp, clen, len, &out, &out_len) == 0);
    CHECK(out_len == len && (len == 0 || memcmp(out, in, len) == 0));
    free(out);
    out = NULL;
    if (len != 0)
        CHECK(pe_ws_inflate_message(comp, clen, len - 1, &out, &out_len) == -2);
    CHECK(zlib_inflates_to(comp, clen, bits, in, len));
    free(comp);
    free(in);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_negotiate(data + 1, size - 1);
        break;
    case 1:
        fuzz_inflate(data + 1, size - 1);
        break;
    default:
        fuzz_round_trip(data + 1, size - 1);
        break;
    }
    return 0;
}

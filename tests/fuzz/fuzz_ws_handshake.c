/*
 * libFuzzer driver for the WebSocket handshake headers: pe_ws_handshake_check (edge/ws/ws_handshake.c)
 * and, on the same request, pe_ws_pmd_negotiate for Sec-WebSocket-Extensions, as edge/ws/ws.c
 * calls them.
 *
 * Input: a presence byte (bit i: header i is present), then the values of Upgrade,
 * Sec-WebSocket-Version, Sec-WebSocket-Key, Sec-WebSocket-Protocol and Sec-WebSocket-Extensions
 * separated by '\n' (every value in its own exact-size buffer, so ASan sees any overread).
 * Checks, with an independent reading of the headers as the oracle:
 *   - the result is 0, 400 or 426 with a code and message on refusal, and it is the first
 *     failing check in the documented order: Upgrade without the token "websocket" (426
 *     upgrade_required), version not exactly "13" (426 bad_version), key not 22 base64
 *     characters and "==" (400 bad_key; also checked against OpenSSL's base64 decoder: 16
 *     bytes), a protocol header without the token "pushedge.v1" (400 unsupported_protocol);
 *     tokens are the comma-separated elements with spaces and tabs trimmed, compared without
 *     case;
 *   - on acceptance, the accept value is 28 base64 characters decoding to 20 bytes, and
 *     pushedge.v1 is selected exactly when a protocol header was sent;
 *   - the extension negotiation returns -1, 0 or 1, and an accepted answer read as an offer
 *     negotiates to itself.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include "edge/wire/ws_deflate.h"
#include "edge/ws/ws_handshake.h"
#include "fuzz.h"

enum { H_UPGRADE, H_VERSION, H_KEY, H_PROTOCOL, H_EXTENSIONS, NUM_HEADERS };

/* The oracle's token list: comma-separated, SP/HTAB trimmed, case-insensitive (RFC 7230 7). */
static int
has_token(pe_ws_hdr_t h, const char *tok)
{
    if (h.base == NULL)
        return 0;
    size_t tl = strlen(tok);
    const char *p = h.base, *end = h.base + h.len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma != NULL ? comma : end;
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t'))
            ++s;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            --t;
        if ((size_t)(t - s) == tl && strncasecmp(s, tok, tl) == 0)
            return 1;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

static int
is_b64(char c)
{
    return isalnum((unsigned char)c) || c == '+' || c == '/';
}

static int
key_ok(pe_ws_hdr_t k)
{
    if (k.base == NULL || k.len != 24 || k.base[22] != '=' || k.base[23] != '=')
        return 0;
    for (size_t i = 0; i != 22; ++i)
        if (!is_b64(k.base[i]) || (unsigned char)k.base[i] >= 0x80)
            return 0;
    /* OpenSSL agrees: 24 characters are 18 bytes, the last two padding. */
    unsigned char out[24];
    CHECK(EVP_DecodeBlock(out, (const unsigned char *)k.base, 24) == 18);
    return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned present = data[0];
    char *bufs[NUM_HEADERS] = {NULL};
    pe_ws_hdr_t h[NUM_HEADERS];
    const uint8_t *p = data + 1, *end = data + size;
    for (int i = 0; i != NUM_HEADERS; ++i) {
        const uint8_t *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL, *e = nl != NULL ? nl : end;
        size_t len = p < end ? (size_t)(e - p) : 0;
        if (present & (1u << i)) {
            bufs[i] = malloc(len != 0 ? len : 1);
            CHECK(bufs[i] != NULL);
            if (len != 0)
                memcpy(bufs[i], p, len);
            h[i] = (pe_ws_hdr_t){bufs[i], len};
        } else {
            h[i] = (pe_ws_hdr_t){NULL, 0};
        }
        p = nl != NULL ? nl + 1 : end;
    }

    pe_ws_handshake_req_t req = {h[H_UPGRADE], h[H_VERSION], h[H_KEY], h[H_PROTOCOL]};
    pe_ws_handshake_t out;
    int status = pe_ws_handshake_check(&req, &out);

    int want_status = 0;
    const char *want_code = NULL;
    if (!has_token(h[H_UPGRADE], "websocket"))
        want_status = 426, want_code = "upgrade_required";
    else if (h[H_VERSION].base == NULL || h[H_VERSION].len != 2 || memcmp(h[H_VERSION].base, "13", 2) != 0)
        want_status = 426, want_code = "bad_version";
    else if (!key_ok(h[H_KEY]))
        want_status = 400, want_code = "bad_key";
    else if (h[H_PROTOCOL].base != NULL && !has_token(h[H_PROTOCOL], "pushedge.v1"))
        want_status = 400, want_code = "unsupported_protocol";
    CHECK(status == want_status);
    if (status != 0) {
        CHECK(out.code != NULL && strcmp(out.code, want_code) == 0 && out.message != NULL && out.message[0] != '\0');
    } else {
        unsigned char digest[32];
        CHECK(strlen(out.accept) == 28 && out.accept[27] == '=');
        for (size_t i = 0; i != 27; ++i)
            CHECK(is_b64(out.accept[i]));
        CHECK(EVP_DecodeBlock(digest, (const unsigned char *)out.accept, 28) == 21); /* 20 bytes + 1 of padding */
        CHECK(out.select_protocol == (h[H_PROTOCOL].base != NULL));
    }

    pe_ws_pmd_t pmd, pmd2;
    char resp[128], resp2[128];
    int r = pe_ws_pmd_negotiate(h[H_EXTENSIONS].base, h[H_EXTENSIONS].len, &pmd, resp, sizeof(resp));
    CHECK(r >= -1 && r <= 1);
    if (r == 1) {
        CHECK(pe_ws_pmd_negotiate(resp, strlen(resp), &pmd2, resp2, sizeof(resp2)) == 1);
        CHECK(strcmp(resp, resp2) == 0 && pmd.server_max_window_bits == pmd2.server_max_window_bits);
    }
    for (int i = 0; i != NUM_HEADERS; ++i)
        free(bufs[i]);
    return 0;
}

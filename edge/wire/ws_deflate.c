/*
 * ws_deflate.c: permessage-deflate (RFC 7692), see ws_deflate.h.
 *
 * Negotiation. pe_ws_pmd_negotiate is a pure, single-pass scanner of the extension list grammar
 * (RFC 6455 9.1 with RFC 7230 lists: OWS around ',', ';' and '=', empty list elements ignored).
 * The whole header is scanned even after an offer was accepted, so that the verdict on a
 * malformed header (-1) does not depend on where the error sits. Only permessage-deflate offers
 * are evaluated; other extensions are syntax-checked and ignored. We always answer with both
 * *_no_context_takeover parameters: our compressed bytes are then independent of the
 * connection (built once per message, shared by every subscriber), and no connection keeps a
 * zlib state between messages.
 *
 * Compression. One fresh deflate state per message, Z_SYNC_FLUSH, the 00 00 ff ff tail removed
 * (RFC 7692 7.2.1). Raw deflate with an 8-bit window is refused by zlib >= 1.2.9 (it silently
 * used 9 bits before, which would break a peer that asked for 8). An offer of
 * server_max_window_bits=8 is still accepted: the limit binds only what we compress, and a
 * connection with an 8-bit window simply gets every message uncompressed (RSV1 clear), which
 * RFC 7692 allows per message. Declining it would leave such clients (Autobahn 13.3, 13.5)
 * without the extension at all.
 *
 * Decompression. One fresh inflate state per message (client_no_context_takeover), the tail fed
 * after the payload without copying it. The output buffer grows by doubling up to max_out + 1
 * bytes: one byte over the limit proves a zip bomb, so nothing larger is ever allocated. inflate
 * runs with Z_BLOCK so that it stops at block boundaries: a message must end on one (after the
 * appended empty stored block), otherwise it was truncated (most inflaters would deliver the
 * prefix; a truncated message is a sender bug we report as 1007 rather than pass on). A block
 * with BFINAL set ends a DEFLATE stream; RFC 7692 7.2.3.4 lets more blocks follow it in the same
 * message, so the inflater is reset and continues. inflateReset is O(1), so a message of many
 * tiny final blocks costs time linear in its size only. (Carrying the window across a reset with
 * inflateGetDictionary was rejected: 32 KiB of copying per reset is a CPU amplifier, and DEFLATE
 * streams are independent of each other anyway.)
 *
 * zlib memory, measured with a counting allocator (test_ws_deflate.c prints it; zlib 1.2.13,
 * x86-64, memLevel 8, peak bytes live): one deflate call holds 139,072 bytes with window bits
 * 9 and 268,096 bytes with window bits 15 (the hash heads and the pending buffer, 64 KiB each
 * at memLevel 8, dominate small windows); one inflate call holds 39,928 bytes (its state plus
 * the 32 KiB window, allocated once output appears). All of it is released before the call
 * returns, so it is per message in flight, never per connection.
 */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
/* next_in becomes const (zlib >= 1.2.5.2): no casting away of const on our inputs. */
#define ZLIB_CONST
#include <zlib.h>
#include "pubsub/alloc.h"
#include "edge/wire/ws_deflate.h"

/* ---- zlib allocation ------------------------------------------------------------------------ */

/*
 * zlib allocates through pe_malloc, so an out-of-memory aborts here as everywhere else
 * (allocation failure aborts) instead of surfacing as Z_MEM_ERROR. test_ws_deflate.c includes this file with
 * PE_WS_DEFLATE_ZALLOC/ZFREE defined to a counting allocator, to measure zlib's memory.
 */
#ifndef PE_WS_DEFLATE_ZALLOC
#define PE_WS_DEFLATE_ZALLOC on_zalloc
#define PE_WS_DEFLATE_ZFREE on_zfree

static voidpf
on_zalloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    /* Both are 32-bit, so the product cannot overflow a 64-bit size_t; check for 32-bit hosts. */
    if (size != 0 && items > SIZE_MAX / size)
        return Z_NULL;
    return pe_malloc((size_t)items * size);
}

static void
on_zfree(voidpf opaque, voidpf p)
{
    (void)opaque;
    pe_free(p);
}
#endif

/* ---- Sec-WebSocket-Extensions --------------------------------------------------------------- */

#define PMD_NAME "permessage-deflate"
#define PMD_BASE PMD_NAME "; server_no_context_takeover; client_no_context_takeover"
/*
 * Our longest response, PMD_BASE "; server_max_window_bits=15", is 101 bytes plus the NUL:
 * within the 128 the header promises. Echoing client_max_window_bits too would need 129.
 */
#define PMD_RESP_MAX 128

/* RFC 7230 3.2.6 tchar. */
static int
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static const char *
skip_ows(const char *p, const char *end)
{
    while (p != end && (*p == ' ' || *p == '\t'))
        ++p;
    return p;
}

static const char *
skip_token(const char *p, const char *end)
{
    while (p != end && is_tchar((unsigned char)*p))
        ++p;
    return p;
}

/*
 * Scans a quoted-string starting at the opening DQUOTE (RFC 7230 3.2.6). RFC 6455 9.1 requires
 * the unescaped content to be a token, so it must be non-empty and every character (escaped or
 * not) a tchar. Returns the position after the closing DQUOTE, or NULL if malformed.
 */
static const char *
skip_quoted_token(const char *p, const char *end)
{
    size_t n = 0;

    for (++p; p != end; ++p) {
        if (*p == '"')
            return n != 0 ? p + 1 : NULL;
        if (*p == '\\' && ++p == end)
            return NULL;
        if (!is_tchar((unsigned char)*p))
            return NULL;
        ++n;
    }
    return NULL;
}

/*
 * The value of a *_max_window_bits parameter: v[0..vlen) is a token, or the inside of a quoted
 * string when quoted (escapes already validated). RFC 7692 7.1.2: a decimal integer without
 * leading zeroes, 8..15. Returns the number or -1.
 */
static int
window_bits_value(const char *v, size_t vlen, int quoted)
{
    int n = 0, digits = 0;

    for (size_t i = 0; i != vlen; ++i) {
        char c = v[i];
        if (quoted && c == '\\')
            c = v[++i]; /* skip_quoted_token guarantees a character follows */
        if (c < '0' || c > '9' || (digits == 0 && c == '0') || ++digits > 2)
            return -1;
        n = n * 10 + (c - '0');
    }
    return n >= 8 && n <= 15 ? n : -1;
}

/* What one permessage-deflate offer asked for. */
typedef struct {
    unsigned seen;   /* PARAM_* bits of the parameters met so far (duplicates decline) */
    int acceptable;  /* cleared by an unknown, duplicate or invalid parameter */
    int server_bits; /* server_max_window_bits: 0 absent, else 8..15 */
    int client_bits; /* client_max_window_bits: 0 absent, -1 without a value, else 8..15 */
} offer_t;

enum { PARAM_SERVER_NCT = 1, PARAM_CLIENT_NCT = 2, PARAM_SERVER_BITS = 4, PARAM_CLIENT_BITS = 8 };

static int
name_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/*
 * Applies one parameter of a permessage-deflate offer (RFC 7692 7.1). val is NULL for a
 * parameter without a value. Names compare case-sensitively, as other implementations do:
 * RFC 7692 defines them in lower case only.
 */
static void
offer_param(offer_t *o, const char *name, size_t nlen, const char *val, size_t vlen, int quoted)
{
    unsigned bit;
    int ok;

    if (name_is(name, nlen, "server_no_context_takeover")) {
        bit = PARAM_SERVER_NCT;
        ok = val == NULL;
    } else if (name_is(name, nlen, "client_no_context_takeover")) {
        bit = PARAM_CLIENT_NCT;
        ok = val == NULL;
    } else if (name_is(name, nlen, "server_max_window_bits")) {
        /* 7.1.2.1: the value is mandatory in an offer. */
        bit = PARAM_SERVER_BITS;
        o->server_bits = val != NULL ? window_bits_value(val, vlen, quoted) : -1;
        ok = o->server_bits > 0;
    } else if (name_is(name, nlen, "client_max_window_bits")) {
        /* 7.1.2.2: without a value it only says the client supports the parameter. */
        bit = PARAM_CLIENT_BITS;
        o->client_bits = val != NULL ? window_bits_value(val, vlen, quoted) : -1;
        ok = val == NULL || o->client_bits > 0;
    } else {
        bit = 0;
        ok = 0; /* 7.1: an unknown parameter declines the offer */
    }
    if (!ok || (o->seen & bit) != 0)
        o->acceptable = 0;
    o->seen |= bit;
}

/*
 * Builds our response to an acceptable offer into buf (PMD_RESP_MAX bytes). Returns its length,
 * or 0 if we decline the offer.
 */
static size_t
offer_accept(const offer_t *o, pe_ws_pmd_t *pmd, char *buf)
{
    size_t len = sizeof(PMD_BASE) - 1;

    memcpy(buf, PMD_BASE, len + 1);
    /* 7.1.2.1: a server accepting server_max_window_bits must echo it (same or smaller). */
    if (o->server_bits > 0)
        len += (size_t)snprintf(buf + len, PMD_RESP_MAX - len, "; server_max_window_bits=%d", o->server_bits);
    assert(len < PMD_RESP_MAX);
    /*
     * 7.1.2.2: the server MAY answer client_max_window_bits (only if offered). We never do:
     * without a value in the offer the client then keeps 15 bits, with a value the client has
     * promised not to exceed it whether or not we echo it. Our inflater uses a 15-bit window,
     * which decodes any smaller one, so there is nothing to ask for, and the response stays
     * within the 128 bytes the header promises.
     */
    pmd->server_max_window_bits = o->server_bits > 0 ? o->server_bits : 15;
    pmd->client_max_window_bits = o->client_bits > 0 ? o->client_bits : 15;
    return len;
}

int
pe_ws_pmd_negotiate(const char *hdr, size_t len, pe_ws_pmd_t *out, char *resp, size_t resp_cap)
{
    /* hdr may be NULL with len 0: no arithmetic on a null pointer (it is undefined). */
    const char *p = hdr, *end = len != 0 ? hdr + len : hdr;
    char buf[PMD_RESP_MAX];
    size_t resp_len = 0;
    pe_ws_pmd_t chosen = {0, 0};

    if (resp_cap != 0)
        resp[0] = '\0';

    while (1) {
        /* One list element: OWS, then an extension or nothing (RFC 7230 7: empty elements). */
        p = skip_ows(p, end);
        if (p == end)
            break;
        if (*p == ',') {
            ++p;
            continue;
        }
        const char *name = p;
        if ((p = skip_token(p, end)) == name)
            return -1;
        int is_pmd = resp_len == 0 && name_is(name, (size_t)(p - name), PMD_NAME);
        offer_t offer = {0, 1, 0, 0};

        /* Its parameters: *( OWS ";" OWS name [ OWS "=" OWS ( token / quoted-string ) ] ). */
        while ((p = skip_ows(p, end)) != end && *p == ';') {
            const char *pname = skip_ows(p + 1, end), *val = NULL;
            int quoted = 0;
            if ((p = skip_token(pname, end)) == pname)
                return -1;
            size_t pname_len = (size_t)(p - pname), vlen = 0;
            const char *q = skip_ows(p, end);
            if (q != end && *q == '=') {
                val = skip_ows(q + 1, end);
                if (val != end && *val == '"') {
                    if ((p = skip_quoted_token(val, end)) == NULL)
                        return -1;
                    quoted = 1;
                    vlen = (size_t)(p - val) - 2;
                    ++val;
                } else {
                    if ((p = skip_token(val, end)) == val)
                        return -1;
                    vlen = (size_t)(p - val);
                }
            }
            if (is_pmd && offer.acceptable)
                offer_param(&offer, pname, pname_len, val, vlen, quoted);
        }
        if (p != end && *p != ',')
            return -1;

        /* The first acceptable offer wins; a response that does not fit declines the offer. */
        if (is_pmd && offer.acceptable) {
            size_t n = offer_accept(&offer, &chosen, buf);
            if (n != 0 && n < resp_cap)
                resp_len = n;
        }
    }

    if (resp_len == 0)
        return 0;
    memcpy(resp, buf, resp_len + 1);
    *out = chosen;
    return 1;
}

/* ---- deflate / inflate ---------------------------------------------------------------------- */

static const uint8_t sync_tail[4] = {0x00, 0x00, 0xff, 0xff};

/*
 * zlib counts in uInt: inputs and buffers above 4 GiB are handed over in slices.
 */
static uInt
clamp_uint(size_t n)
{
    return n > (uInt)-1 ? (uInt)-1 : (uInt)n;
}

int
pe_ws_deflate_message(const uint8_t *in, size_t len, int window_bits, uint8_t **out, size_t *out_len)
{
    z_stream zs;
    uint8_t *buf;
    size_t cap, used = 0, in_off = 0;
    int ret;

    if (window_bits < 9 || window_bits > 15)
        return -1;
    memset(&zs, 0, sizeof(zs));
    zs.zalloc = PE_WS_DEFLATE_ZALLOC;
    zs.zfree = PE_WS_DEFLATE_ZFREE;
    /* Negative window bits: raw deflate, no zlib header or checksum (RFC 7692 7.2.1). */
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    /*
     * deflateBound assumes Z_FINISH; the sync flush adds an empty stored block (up to 5 bytes
     * plus the bits still pending). The slack usually avoids a second pass; the loop copes
     * anyway.
     */
    cap = deflateBound(&zs, len) + 16;
    buf = pe_malloc(cap);

    while (1) {
        if (zs.avail_in == 0 && in_off != len) {
            zs.next_in = (z_const Bytef *)(in + in_off);
            zs.avail_in = clamp_uint(len - in_off);
            in_off += zs.avail_in;
        }
        int flush = in_off == len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        if (used == cap)
            buf = pe_realloc(buf, cap *= 2);
        zs.next_out = buf + used;
        zs.avail_out = clamp_uint(cap - used);
        uInt avail_before = zs.avail_out;
        ret = deflate(&zs, flush);
        used += avail_before - zs.avail_out;
        /* Z_BUF_ERROR only means no progress this time; the loop supplies what was missing. */
        if (ret != Z_OK && ret != Z_BUF_ERROR)
            goto Error;
        /* The flush is complete once deflate returns with output space to spare. */
        if (flush == Z_SYNC_FLUSH && zs.avail_in == 0 && zs.avail_out != 0)
            break;
    }
    deflateEnd(&zs);

    /* RFC 7692 7.2.1: remove the 00 00 ff ff that the sync flush's empty stored block ends with. */
    if (used < sizeof(sync_tail) || memcmp(buf + used - sizeof(sync_tail), sync_tail, sizeof(sync_tail)) != 0) {
        pe_free(buf);
        return -1;
    }
    used -= sizeof(sync_tail);
    /* The result is shared and may live long: return the deflateBound slack. */
    *out = pe_realloc(buf, used);
    *out_len = used;
    return 0;

Error:
    deflateEnd(&zs);
    pe_free(buf);
    return -1;
}

int
pe_ws_inflate_message(const uint8_t *in, size_t len, size_t max_out, uint8_t **out, size_t *out_len)
{
    /* The input is the payload followed by the tail, handed over without concatenating them. */
    const uint8_t *seg[2] = {in, sync_tail};
    size_t seg_len[2] = {len, sizeof(sync_tail)}, seg_off = 0;
    int si = 0;
    /* One byte beyond max_out is enough to prove the message too large. */
    size_t limit = max_out < SIZE_MAX ? max_out + 1 : SIZE_MAX;
    size_t cap, used = 0;
    int rv = -1, ret, at_boundary = 0, pending = 0;
    uint8_t *buf;
    z_stream zs;

    /*
     * An empty payload plus the tail is an incomplete stored block header, yet the decompression
     * procedure of 7.2.2 yields an empty message from it without an error, and senders that
     * skip compressing empty messages rely on that.
     */
    if (len == 0) {
        *out = pe_malloc(0);
        *out_len = 0;
        return 0;
    }
    memset(&zs, 0, sizeof(zs));
    zs.zalloc = PE_WS_DEFLATE_ZALLOC;
    zs.zfree = PE_WS_DEFLATE_ZFREE;
    if (inflateInit2(&zs, -15) != Z_OK)
        return -1;
    /* A first guess at 4:1 (JSON often does better), grown by doubling, never beyond limit. */
    cap = len < (SIZE_MAX - 1024) / 4 ? len * 4 + 1024 : SIZE_MAX;
    if (cap > limit)
        cap = limit;
    buf = pe_malloc(cap);

    while (1) {
        /* Step 1: input. Empty segments (an empty payload) are skipped. */
        if (zs.avail_in == 0) {
            while (si != 2 && seg_off == seg_len[si]) {
                ++si;
                seg_off = 0;
            }
            if (si != 2) {
                zs.next_in = (z_const Bytef *)(seg[si] + seg_off);
                zs.avail_in = clamp_uint(seg_len[si] - seg_off);
                seg_off += zs.avail_in;
            }
        }
        /* With all input given, continue only while inflate may still hold output. */
        if (zs.avail_in == 0 && !pending)
            break;

        /* Step 2: output space. */
        if (used == cap) {
            cap = cap > limit / 2 ? limit : cap * 2;
            buf = pe_realloc(buf, cap);
        }
        zs.next_out = buf + used;
        zs.avail_out = clamp_uint(cap - used);

        /* Step 3: inflate up to the next block boundary at most. */
        uInt avail_before = zs.avail_out;
        ret = inflate(&zs, Z_BLOCK);
        used += avail_before - zs.avail_out;
        if (used > max_out) {
            rv = -2;
            goto Exit;
        }
        if (ret == Z_STREAM_END) {
            /*
             * A block with BFINAL set ended the stream. If payload bytes follow, they start a new
             * stream (7.2.3.4). If only our tail is left, the message is complete: the sender
             * should have added an empty stored block after the final one (7.2.1), but the
             * data is all there, so accept it as most inflaters do.
             */
            if (si != 0 || (zs.avail_in == 0 && seg_off == len)) {
                at_boundary = 1;
                break;
            }
            if (inflateReset(&zs) != Z_OK)
                goto Exit;
            at_boundary = pending = 0;
            continue;
        }
        if (ret != Z_OK && ret != Z_BUF_ERROR)
            goto Exit; /* Z_DATA_ERROR: corrupt input; Z_MEM_ERROR cannot happen (pe_malloc) */
        /*
         * Bit 7 of data_type: inflate stopped right after a block (zlib.h, inflate). All of that
         * block's output has then been written, so nothing is pending even if the buffer filled.
         */
        at_boundary = (zs.data_type & 128) != 0;
        pending = zs.avail_out == 0 && !at_boundary;
    }
    /* The message must end on a block boundary; anything else is a truncated block. */
    if (!at_boundary)
        goto Exit;
    rv = 0;

Exit:
    inflateEnd(&zs);
    if (rv != 0) {
        pe_free(buf);
        return rv;
    }
    *out = buf;
    *out_len = used;
    return 0;
}

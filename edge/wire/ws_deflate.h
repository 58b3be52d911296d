/*
 * ws_deflate.h: permessage-deflate (RFC 7692) for the WebSocket transport: negotiation of the
 * extension header (pure), compression of a whole message once (shared by every subscriber),
 * and a bounded inflater for client messages.
 *
 * The server always answers with server_no_context_takeover: each message is compressed with a
 * fresh deflate state, so the compressed bytes are the same for every connection and are built
 * once per message. It also answers with client_no_context_takeover (RFC 7692 7.1.1.1 lets a
 * server add it), so no inflate window is kept between a client's messages: an idle compressed
 * connection holds no zlib memory at all.
 */
#ifndef PE_WS_DEFLATE_H
#define PE_WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct st_pe_ws_pmd_t {
    int server_max_window_bits; /* 8..15: the most our deflate may use (8: we never compress) */
    int client_max_window_bits; /* 8..15: the largest window the client's deflate may use */
} pe_ws_pmd_t;

/**
 * Parses the Sec-WebSocket-Extensions request header value hdr[0..len) (several header lines
 * joined with ", "), and accepts the first permessage-deflate offer whose parameters we can
 * honour (unknown parameters, duplicates or invalid values decline that offer, and the next
 * offer is considered). server_max_window_bits=8 is accepted, although zlib cannot deflate with
 * an 8-bit window: callers then send every message uncompressed. Names compare case-sensitively; empty list elements are ignored.
 *
 * Returns 1 on acceptance: *out is filled and resp holds the response header value,
 * NUL-terminated (at most 101 bytes plus the NUL, so resp_cap >= 128 always suffices; an offer
 * whose response would not fit in resp_cap is declined, never truncated). The response always
 * has both *_no_context_takeover parameters, server_max_window_bits if the offer had it, and
 * never client_max_window_bits (RFC 7692 7.1.2.2 lets us omit it; our inflater takes any
 * window). Returns 0 if no offer is acceptable (no extension is used), and -1 if the header is
 * malformed anywhere, even after an acceptable offer (RFC 6455 9.1 / RFC 7230 tokens and quoted
 * strings; the handshake then fails with 400). On 0 and -1, *out is untouched and resp is "" when resp_cap > 0. Pure and
 * re-entrant; hdr may be NULL when len is 0.
 */
int pe_ws_pmd_negotiate(const char *hdr, size_t len, pe_ws_pmd_t *out, char *resp, size_t resp_cap);

/**
 * Compresses in[0..len) as one permessage-deflate message (raw deflate, fresh state, window
 * bits `window_bits` (9..15), Z_SYNC_FLUSH, the trailing 00 00 ff ff removed; an empty message
 * becomes the single byte 00, RFC 7692 7.2.3.6). Returns 0 with a buffer in *out that the
 * caller owns and releases with pe_free, and its length in *out_len; or -1 (window_bits out of
 * range, or a zlib failure) with *out untouched. zlib's state (about 136 KiB at 9 bits, 262 KiB
 * at 15) lives only for the duration of the call. Re-entrant.
 */
int pe_ws_deflate_message(const uint8_t *in, size_t len, int window_bits, uint8_t **out, size_t *out_len);

/**
 * Inflates one compressed client message in[0..len) (the 00 00 ff ff tail is appended
 * internally) with a window of up to 15 bits. The output is capped at max_out bytes: a zip bomb
 * returns -2 (close with 1009) without allocating more than max_out + 1 bytes of output.
 * Corrupt input returns -1 (close with 1007), and so does input that stops inside a DEFLATE
 * block (a truncated message). An empty payload is an empty message; blocks may follow a block
 * with BFINAL set (RFC 7692 7.2.3.4). On success returns 0 with *out (owned by the caller,
 * released with pe_free) and *out_len; on failure *out is untouched. The zlib state (about
 * 39 KiB) lives only for the duration of the call (client_no_context_takeover). Re-entrant.
 */
int pe_ws_inflate_message(const uint8_t *in, size_t len, size_t max_out, uint8_t **out, size_t *out_len);

#endif

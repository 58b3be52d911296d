/*
 * ws_handshake.c: the request-header checks of the WebSocket opening handshake, moved out of
 * ws.c unchanged so that they can be fuzzed (tests/fuzz/fuzz_ws_handshake.c). The token lists
 * are read with h2o's own tokenizer, the one its HTTP/1 parser uses for Connection, so a header
 * reads the same here as anywhere else in the server.
 */
#include <string.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <h2o/string_.h>
#include "edge/ws/ws_handshake.h"

/* A Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455 4.1): 22 characters and "==". */
static int
key_is_valid(pe_ws_hdr_t key)
{
    if (key.len != 24 || key.base[22] != '=' || key.base[23] != '=')
        return 0;
    for (size_t i = 0; i != 22; ++i) {
        char c = key.base[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

static int
refuse(pe_ws_handshake_t *out, int status, const char *code, const char *message)
{
    out->code = code;
    out->message = message;
    return status;
}

int
pe_ws_handshake_check(const pe_ws_handshake_req_t *req, pe_ws_handshake_t *out)
{
    memset(out, 0, sizeof(*out));
    if (req->upgrade.base == NULL || !h2o_contains_token(req->upgrade.base, req->upgrade.len, H2O_STRLIT("websocket"), ','))
        return refuse(out, 426, "upgrade_required", "this endpoint speaks WebSocket: send an Upgrade request");
    if (!h2o_memis(req->version.base, req->version.len, H2O_STRLIT("13")))
        return refuse(out, 426, "bad_version", "Sec-WebSocket-Version must be 13");
    if (!key_is_valid(req->key))
        return refuse(out, 400, "bad_key", "Sec-WebSocket-Key must be the base64 of 16 bytes");
    /* Subprotocol: pushedge.v1 if offered; an offer without it is refused (docs/protocol.md "WebSocket"). */
    if (req->protocols.base != NULL) {
        if (!h2o_contains_token(req->protocols.base, req->protocols.len, H2O_STRLIT("pushedge.v1"), ','))
            return refuse(out, 400, "unsupported_protocol", "no offered subprotocol is supported (pushedge.v1 is)");
        out->select_protocol = 1;
    }

    /* Sec-WebSocket-Accept = base64(SHA-1(key + GUID)) (RFC 6455 4.2.2) */
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[SHA_DIGEST_LENGTH], buf[24 + sizeof(guid)];
    memcpy(buf, req->key.base, 24);
    memcpy(buf + 24, guid, sizeof(guid) - 1);
    SHA1(buf, 24 + sizeof(guid) - 1, digest);
    EVP_EncodeBlock((unsigned char *)out->accept, digest, SHA_DIGEST_LENGTH);
    return 0;
}

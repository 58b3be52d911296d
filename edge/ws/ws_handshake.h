/*
 * ws_handshake.h: the request-header checks of the WebSocket opening handshake (RFC 6455 4.2.1),
 * as a pure function: edge/ws/ws.c gathers the header values from the h2o request and answers with
 * what this decides. Kept apart so that the checks are unit-tested and fuzzed without a loop.
 * Sec-WebSocket-Extensions is negotiated by pe_ws_pmd_negotiate (ws_deflate.h), the query
 * string by pe_sub_query_parse (query.h).
 */
#ifndef PE_WS_HANDSHAKE_H
#define PE_WS_HANDSHAKE_H

#include <stddef.h>

/* One header value as received; base == NULL when the header is absent. */
typedef struct st_pe_ws_hdr_t {
    const char *base;
    size_t len;
} pe_ws_hdr_t;

typedef struct st_pe_ws_handshake_req_t {
    pe_ws_hdr_t upgrade;   /* Upgrade (h2o moves it out of the headers when Connection lists it) */
    pe_ws_hdr_t version;   /* Sec-WebSocket-Version (the first line) */
    pe_ws_hdr_t key;       /* Sec-WebSocket-Key (the first line) */
    pe_ws_hdr_t protocols; /* Sec-WebSocket-Protocol, every line joined with ", " */
} pe_ws_handshake_req_t;

typedef struct st_pe_ws_handshake_t {
    /* On refusal: the JSON error's code and message (static strings). */
    const char *code;
    const char *message;
    int select_protocol; /* answer with Sec-WebSocket-Protocol: pushedge.v1 */
    char accept[29];     /* Sec-WebSocket-Accept, NUL-terminated (28 base64 characters) */
} pe_ws_handshake_t;

/**
 * Checks the headers in the order the server answers them: an Upgrade listing the token
 * "websocket" (426 upgrade_required), version exactly "13" (426 bad_version), a key that is the
 * base64 of 16 bytes (400 bad_key), and, if Sec-WebSocket-Protocol is present, the token
 * "pushedge.v1" in it (400 unsupported_protocol). Tokens are comma-separated, compared without
 * case, white space around them ignored (h2o_contains_token). Returns 0 with out->accept and
 * out->select_protocol filled, or the HTTP status of the refusal with out->code and
 * out->message set. Pure and re-entrant.
 */
int pe_ws_handshake_check(const pe_ws_handshake_req_t *req, pe_ws_handshake_t *out);

#endif

/*
 * ws_frame.h: the pure half of the WebSocket transport (RFC 6455): an incremental reader that
 * turns the bytes a client sends into complete messages and control frames, and the encoder of
 * server frame headers. No socket, no allocation outside the reader's own bounded buffer, so it
 * is unit-tested byte by byte and fuzzed.
 *
 * The reader enforces everything a server must check on input: masking (5.1), reserved bits
 * (5.2; RSV1 only when permessage-deflate was negotiated, only on the first frame of a data
 * message), opcodes (5.2), fragmentation with control frames interleaved (5.4), control frame
 * rules (5.5: FIN set, payload <= 125), close frame payloads (5.5.1, 7.4: length 1 invalid,
 * valid codes only, UTF-8 reason), incremental UTF-8 validation of text messages across
 * fragments (8.1) unless the message is compressed (validated after inflating, by the caller
 * through pe_utf8_*), and the message size limit (by bytes, not fragment count).
 */
#ifndef PE_WS_FRAME_H
#define PE_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    PE_WS_OP_CONT = 0x0,
    PE_WS_OP_TEXT = 0x1,
    PE_WS_OP_BINARY = 0x2,
    PE_WS_OP_CLOSE = 0x8,
    PE_WS_OP_PING = 0x9,
    PE_WS_OP_PONG = 0xA
};

/* Close codes (RFC 6455 7.4.1) the server sends (a peer's own close is answered with its code). */
enum {
    PE_WS_CLOSE_PROTOCOL = 1002,
    PE_WS_CLOSE_INVALID_DATA = 1007, /* invalid UTF-8, or a compressed payload that does not inflate */
    PE_WS_CLOSE_TOO_BIG = 1009,
    PE_WS_CLOSE_RESTART = 1012,   /* the node drains */
    PE_WS_CLOSE_TRY_AGAIN = 1013, /* slow consumer */
    /* Application codes (RFC 6455 7.4.2: 4000-4999 are private use; docs/protocol.md): */
    PE_WS_CLOSE_TOKEN_EXPIRED = 4001, /* the token expired, or none came in time: get one and reconnect */
    PE_WS_CLOSE_REVOKED = 4003        /* POST /api/disconnect ended the user's access */
};

/* ---- UTF-8 (incremental, rejects overlongs, surrogates, > U+10FFFF) ------------------------- */

typedef struct st_pe_utf8_t {
    uint32_t state; /* 0: at a code point boundary */
} pe_utf8_t;

static inline void
pe_utf8_init(pe_utf8_t *v)
{
    v->state = 0;
}
/**
 * Feeds bytes; returns 0 if valid so far, -1 if invalid. Fails at the first byte after which no
 * continuation could be valid (an overlong form, a surrogate or a value above U+10FFFF is caught
 * at its second byte at the latest). Once invalid, every later call returns -1.
 */
int pe_utf8_feed(pe_utf8_t *v, const uint8_t *s, size_t len);
/** 1 if the bytes fed so far end on a code point boundary. */
static inline int
pe_utf8_is_complete(const pe_utf8_t *v)
{
    return v->state == 0;
}

/* ---- the reader ------------------------------------------------------------------------------ */

typedef enum en_pe_ws_event_kind_t {
    PE_WS_EV_NONE = 0, /* more input needed */
    PE_WS_EV_MESSAGE,  /* a complete data message: opcode TEXT or BINARY, payload, compressed */
    PE_WS_EV_PING,     /* payload: the ping's application data (answer with a pong) */
    PE_WS_EV_PONG,
    PE_WS_EV_CLOSE, /* the peer's close: code (1005 if none); payload is the reason only (UTF-8) */
    PE_WS_EV_ERROR  /* a violation: close with `code`; `reason` says why (static string) */
} pe_ws_event_kind_t;

typedef struct st_pe_ws_event_t {
    pe_ws_event_kind_t kind;
    int opcode;             /* MESSAGE: PE_WS_OP_TEXT or PE_WS_OP_BINARY */
    int compressed;         /* MESSAGE: RSV1 was set on its first frame (payload is deflated) */
    const uint8_t *payload; /* unmasked; valid until the next pe_ws_reader_* call */
    size_t payload_len;
    int code;           /* CLOSE: the peer's code; ERROR: the code to close with */
    const char *reason; /* ERROR only */
} pe_ws_event_t;

typedef struct st_pe_ws_reader_t {
    /* settings (public, set before use) */
    size_t max_message; /* largest data message in bytes (before inflating); over it: 1009 */
    int allow_rsv1;     /* permessage-deflate was negotiated */
    /* private */
    uint8_t _hdr[14];
    size_t _hdr_len;
    int _in_frame; /* reading a frame's payload */
    int _fin, _rsv1, _opcode;
    uint8_t _mask[4];
    uint64_t _remaining; /* payload bytes left in the current frame */
    uint64_t _frame_off; /* payload bytes of the current frame read so far (mask phase) */
    int _msg_opcode;     /* opcode of the data message being assembled, 0 if none */
    int _msg_compressed;
    pe_utf8_t _utf8;
    uint8_t *_msg; /* assembled data message (malloc'd, grows to max_message) */
    size_t _msg_len, _msg_cap;
    uint8_t _ctl[125]; /* the control frame being read */
    size_t _ctl_len;
    int _failed; /* 0, or 1 + the index of the error in ws_frame.c's table (repeated on every call) */
} pe_ws_reader_t;

void pe_ws_reader_init(pe_ws_reader_t *r, size_t max_message, int allow_rsv1);
void pe_ws_reader_dispose(pe_ws_reader_t *r);
/**
 * Consumes input from buf[0..len) until one event is complete or the input is used up; stores
 * the event in *ev and returns the number of bytes consumed (which may be less than len: call
 * again with the rest). ev->kind == PE_WS_EV_NONE means all input was consumed and more is
 * needed. Every rule is checked at the byte that decides it, so a PE_WS_EV_ERROR comes as soon
 * as that byte arrives (before the rest of the frame) and the bytes consumed end just after it:
 * the events, and where they complete in the stream, do not depend on how the input is split.
 * After PE_WS_EV_ERROR the reader stays failed (every later call returns the same error and
 * consumes nothing). After PE_WS_EV_CLOSE the reader would go on parsing; the caller stops
 * feeding (RFC 6455 5.5.1: nothing follows a close). Never reads outside buf; no callbacks.
 */
size_t pe_ws_reader_feed(pe_ws_reader_t *r, const uint8_t *buf, size_t len, pe_ws_event_t *ev);
/**
 * Bytes of the data message being assembled (for memory accounting); 0 between messages, right
 * after a MESSAGE event included. The buffer behind them holds at most twice that (from 256
 * bytes) and never more than max_message.
 */
size_t pe_ws_reader_buffered(const pe_ws_reader_t *r);
/**
 * Frees the assembly buffer between messages (idle connections hold nothing); does nothing
 * while a message is being assembled. Like any pe_ws_reader_* call, ends the validity of the
 * last event's payload.
 */
void pe_ws_reader_shrink(pe_ws_reader_t *r);

/* ---- the writer ------------------------------------------------------------------------------ */

#define PE_WS_MAX_HEADER 10 /* server frames are never masked: 2 + 8 bytes at most */

/**
 * Writes a server frame header (FIN set, unmasked, the shortest length form) into out
 * (PE_WS_MAX_HEADER bytes); returns its length (2, 4 or 10). payload_len must be below 2^63.
 */
size_t pe_ws_encode_header(uint8_t *out, int opcode, int rsv1, uint64_t payload_len);
/**
 * Writes a close frame's payload (code + reason, reason truncated to keep the payload <= 125
 * bytes on a UTF-8 boundary) into out (125 bytes); returns its length. reason is a NUL-terminated
 * UTF-8 string, or NULL for the code alone. Code 1005 (or 0), "no status code", is never sent
 * (RFC 6455 7.4.1): it gives an empty payload, which is how a close without a code is echoed.
 */
size_t pe_ws_encode_close_payload(uint8_t *out, int code, const char *reason);

#endif

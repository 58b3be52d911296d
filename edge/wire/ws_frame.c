/*
 * ws_frame.c: the receive side of our RFC 6455 server framing (ws_frame.h), plus the two small
 * encoders the send side needs.
 *
 * Data flow. pe_ws_reader_feed takes whatever bytes the socket delivered and runs them through
 * three phases per frame: the header (2 to 14 bytes, collected in _hdr one byte at a time and
 * checked as each byte arrives), the payload (unmasked straight from the caller's buffer into
 * the message buffer _msg for data frames or into the fixed _ctl array for control frames), and
 * the frame end (which completes a control frame or, with FIN, a message). It returns as soon as
 * one event is complete, so the caller handles events one at a time and the payload pointer can
 * borrow the reader's buffers until the next call.
 *
 * Fail fast. Every rule is checked at the earliest byte that decides it: reserved bits, opcode
 * and fragmentation state at header byte 0; mask bit and control frame length at byte 1; the
 * extended length (and the message size limit, 1009) as soon as its last byte arrives, before
 * the mask key and long before the payload; UTF-8 of an uncompressed text message on every
 * payload chunk as it arrives (Autobahn 6.4.x sends an invalid sequence and then waits: the
 * close must come before the rest of the frame). Because each check looks only at bytes already
 * seen, the events, error codes included, are the same however the input is split.
 *
 * Memory. The message buffer starts at 256 bytes and doubles as payload actually arrives (not as
 * headers announce it: a peer that announces max_message and sends one byte costs 256 bytes),
 * capped at max_message; pe_ws_reader_shrink frees it between messages. Control frames never
 * touch the heap. Payloads are unmasked eight bytes at a time (unmask()).
 *
 * Rejected alternatives: wslay (its event API hands over whole messages and leaves UTF-8 to the
 * application, so fail-fast validation would mean rebuilding message assembly on its frame
 * chunk callbacks anyway), and reserving a whole frame's payload when its header arrives (a slow
 * peer would pin max_message per connection for the price of a header).
 */
#include <assert.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "edge/wire/ws_frame.h"

/* ---- UTF-8 --------------------------------------------------------------------------------- */

/*
 * The validator is a DFA over bytes. State 0 is a code point boundary; the others say how many
 * continuation bytes are still due and, right after the lead bytes E0, ED, F0 and F4, narrow the
 * range of the next byte (Unicode 15, table 3-7 "Well-Formed UTF-8 Byte Sequences"): that is what
 * rejects overlong forms (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code points above
 * U+10FFFF (F4 90..BF) at the very byte that makes them impossible. C0, C1 and F5..FF never start
 * a sequence (overlong, or 5/6-byte forms and values above U+10FFFF), and a continuation byte
 * 80..BF at a boundary is stray.
 */
enum {
    UTF8_ACCEPT = 0,
    UTF8_NEED1,  /* one more continuation byte, 80..BF */
    UTF8_NEED2,  /* two more, the next 80..BF */
    UTF8_NEED3,  /* three more, the next 80..BF */
    UTF8_E0,     /* after E0: A0..BF (below is an overlong 3-byte form) */
    UTF8_ED,     /* after ED: 80..9F (above is a UTF-16 surrogate D800..DFFF) */
    UTF8_F0,     /* after F0: 90..BF (below is an overlong 4-byte form) */
    UTF8_F4,     /* after F4: 80..8F (above is beyond U+10FFFF) */
    UTF8_REJECT, /* sticky: pe_utf8_feed keeps returning -1 */
};

/* For each state after a lead byte: the range the next byte must be in and the state after it. */
static const struct {
    uint8_t lo, hi, next;
} utf8_cont[UTF8_REJECT] = {
    [UTF8_NEED1] = {0x80, 0xbf, UTF8_ACCEPT}, [UTF8_NEED2] = {0x80, 0xbf, UTF8_NEED1}, [UTF8_NEED3] = {0x80, 0xbf, UTF8_NEED2},
    [UTF8_E0] = {0xa0, 0xbf, UTF8_NEED1},     [UTF8_ED] = {0x80, 0x9f, UTF8_NEED1},    [UTF8_F0] = {0x90, 0xbf, UTF8_NEED2},
    [UTF8_F4] = {0x80, 0x8f, UTF8_NEED2},
};

/* The state after byte b at a code point boundary. */
static uint32_t
utf8_lead(uint8_t b)
{
    if (b < 0x80)
        return UTF8_ACCEPT;
    if (b < 0xc2) /* stray continuation byte, or C0/C1 (overlong 2-byte forms of ASCII) */
        return UTF8_REJECT;
    if (b < 0xe0)
        return UTF8_NEED1;
    if (b == 0xe0)
        return UTF8_E0;
    if (b == 0xed)
        return UTF8_ED;
    if (b < 0xf0)
        return UTF8_NEED2;
    if (b == 0xf0)
        return UTF8_F0;
    if (b < 0xf4)
        return UTF8_NEED3;
    if (b == 0xf4)
        return UTF8_F4;
    return UTF8_REJECT; /* F5..FF: beyond U+10FFFF, or the 5- and 6-byte forms of old */
}

int
pe_utf8_feed(pe_utf8_t *v, const uint8_t *s, size_t len)
{
    uint32_t state = v->state;
    size_t i = 0;

    while (i != len) {
        if (state == UTF8_ACCEPT) {
            /* Fast path: skip ASCII eight bytes at a time; most text is mostly ASCII. */
            for (; len - i >= 8; i += 8) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if ((w & 0x8080808080808080u) != 0)
                    break;
            }
            while (i != len && s[i] < 0x80)
                ++i;
            if (i == len)
                break;
            state = utf8_lead(s[i++]);
        } else if (state == UTF8_REJECT) {
            break;
        } else {
            uint8_t b = s[i++];
            state = b >= utf8_cont[state].lo && b <= utf8_cont[state].hi ? utf8_cont[state].next : UTF8_REJECT;
        }
    }
    v->state = state;
    return state == UTF8_REJECT ? -1 : 0;
}

/* ---- the reader: errors -------------------------------------------------------------------- */

/*
 * Every violation the reader detects, with its close code and reason. A failed reader stores the
 * index + 1 in _failed, so later calls can repeat the very same event.
 * Checklist when adding one: a row here, and a vector in tests/unit/test_ws_frame.c.
 */
enum {
    ERR_NOT_MASKED,
    ERR_RSV23,
    ERR_RSV1_NOT_NEGOTIATED,
    ERR_RSV1_CONTINUATION,
    ERR_RSV1_CONTROL,
    ERR_OPCODE,
    ERR_CONT_WITHOUT_MESSAGE,
    ERR_DATA_IN_MESSAGE,
    ERR_CONTROL_FRAGMENTED,
    ERR_CONTROL_TOO_LONG,
    ERR_CLOSE_LEN1,
    ERR_LEN_HIGH_BIT,
    ERR_LEN_NOT_MINIMAL,
    ERR_CLOSE_CODE,
    ERR_TOO_BIG,
    ERR_UTF8,
    ERR_UTF8_TRUNCATED,
    ERR_CLOSE_REASON_UTF8,
};

static const struct {
    int code;
    const char *reason;
} errors[] = {
    [ERR_NOT_MASKED] = {PE_WS_CLOSE_PROTOCOL, "client frame not masked"},
    [ERR_RSV23] = {PE_WS_CLOSE_PROTOCOL, "reserved bit RSV2 or RSV3 set"},
    [ERR_RSV1_NOT_NEGOTIATED] = {PE_WS_CLOSE_PROTOCOL, "RSV1 set without permessage-deflate"},
    [ERR_RSV1_CONTINUATION] = {PE_WS_CLOSE_PROTOCOL, "RSV1 set on a continuation frame"},
    [ERR_RSV1_CONTROL] = {PE_WS_CLOSE_PROTOCOL, "RSV1 set on a control frame"},
    [ERR_OPCODE] = {PE_WS_CLOSE_PROTOCOL, "unknown opcode"},
    [ERR_CONT_WITHOUT_MESSAGE] = {PE_WS_CLOSE_PROTOCOL, "continuation frame outside a fragmented message"},
    [ERR_DATA_IN_MESSAGE] = {PE_WS_CLOSE_PROTOCOL, "new data frame inside a fragmented message"},
    [ERR_CONTROL_FRAGMENTED] = {PE_WS_CLOSE_PROTOCOL, "fragmented control frame"},
    [ERR_CONTROL_TOO_LONG] = {PE_WS_CLOSE_PROTOCOL, "control frame payload over 125 bytes"},
    [ERR_CLOSE_LEN1] = {PE_WS_CLOSE_PROTOCOL, "close frame payload of 1 byte"},
    [ERR_LEN_HIGH_BIT] = {PE_WS_CLOSE_PROTOCOL, "64-bit payload length with the high bit set"},
    [ERR_LEN_NOT_MINIMAL] = {PE_WS_CLOSE_PROTOCOL, "payload length not in its shortest form"},
    [ERR_CLOSE_CODE] = {PE_WS_CLOSE_PROTOCOL, "invalid close code"},
    [ERR_TOO_BIG] = {PE_WS_CLOSE_TOO_BIG, "message larger than the limit"},
    [ERR_UTF8] = {PE_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message"},
    [ERR_UTF8_TRUNCATED] = {PE_WS_CLOSE_INVALID_DATA, "text message ends inside a UTF-8 sequence"},
    [ERR_CLOSE_REASON_UTF8] = {PE_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason"},
};

/* Puts the reader in the failed state and returns the event it will repeat from now on. */
static void
fail(pe_ws_reader_t *r, int err, pe_ws_event_t *ev)
{
    r->_failed = err + 1;
    ev->kind = PE_WS_EV_ERROR;
    ev->code = errors[err].code;
    ev->reason = errors[err].reason;
}

/* ---- the reader: header, payload, frame end ------------------------------------------------ */

static const uint8_t empty_payload[1];

static int
is_control(int opcode)
{
    return (opcode & 0x8) != 0;
}

/*
 * RFC 6455 7.4: 1000-1003 and 1007-1014 are the codes defined for use on the wire (1012-1014
 * registered with IANA later); 1004 is reserved, 1005, 1006 and 1015 must never be sent, the rest
 * of 1000-2999 is reserved for future RFCs, 3000-4999 belong to libraries and applications, and
 * nothing outside 1000-4999 is defined.
 */
static int
is_valid_close_code(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* Bytes of the current message so far, counting a new data frame as the start of a new one. */
static size_t
message_len_before_frame(const pe_ws_reader_t *r)
{
    return r->_opcode == PE_WS_OP_CONT ? r->_msg_len : 0;
}

/* Header byte 0: FIN, RSV1-3, opcode. Returns an ERR_* or -1 if the byte is acceptable. */
static int
check_byte0(pe_ws_reader_t *r, uint8_t b)
{
    r->_fin = (b & 0x80) != 0;
    r->_rsv1 = (b & 0x40) != 0;
    r->_opcode = b & 0x0f;

    switch (r->_opcode) {
    case PE_WS_OP_CONT:
    case PE_WS_OP_TEXT:
    case PE_WS_OP_BINARY:
    case PE_WS_OP_CLOSE:
    case PE_WS_OP_PING:
    case PE_WS_OP_PONG:
        break;
    default:
        return ERR_OPCODE;
    }
    if ((b & 0x30) != 0)
        return ERR_RSV23;
    if (is_control(r->_opcode)) {
        if (r->_rsv1)
            return ERR_RSV1_CONTROL;
        if (!r->_fin) /* 5.5: control frames may be interleaved in a message but not fragmented */
            return ERR_CONTROL_FRAGMENTED;
        return -1;
    }
    /* RFC 7692 6: RSV1 marks the first frame of a compressed message, and only that frame. */
    if (r->_rsv1 && !r->allow_rsv1)
        return ERR_RSV1_NOT_NEGOTIATED;
    if (r->_rsv1 && r->_opcode == PE_WS_OP_CONT)
        return ERR_RSV1_CONTINUATION;
    if (r->_opcode == PE_WS_OP_CONT && r->_msg_opcode == 0)
        return ERR_CONT_WITHOUT_MESSAGE;
    if (r->_opcode != PE_WS_OP_CONT && r->_msg_opcode != 0)
        return ERR_DATA_IN_MESSAGE;
    return -1;
}

/* Checks a data frame's payload length (known as soon as the length field is complete). */
static int
check_length(pe_ws_reader_t *r, uint64_t len)
{
    if (is_control(r->_opcode))
        return -1; /* byte 1 already limited it to 125 */
    if (len > r->max_message - message_len_before_frame(r))
        return ERR_TOO_BIG;
    return -1;
}

/* Header byte 1: MASK and the 7-bit length. */
static int
check_byte1(pe_ws_reader_t *r, uint8_t b)
{
    unsigned len7 = b & 0x7f;

    if ((b & 0x80) == 0) /* 5.1: a server must close on an unmasked client frame */
        return ERR_NOT_MASKED;
    if (is_control(r->_opcode) && len7 > 125)
        return ERR_CONTROL_TOO_LONG;
    if (r->_opcode == PE_WS_OP_CLOSE && len7 == 1) /* 5.5.1: a body starts with a 2-byte code */
        return ERR_CLOSE_LEN1;
    return len7 < 126 ? check_length(r, len7) : -1;
}

/* Bytes of the extended length field for the header collected so far (needs _hdr_len >= 2). */
static size_t
ext_len_size(const pe_ws_reader_t *r)
{
    unsigned len7 = r->_hdr[1] & 0x7f;
    return len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
}

/* The extended length field, complete in _hdr[2..]: its value, its form, then the size limit. */
static int
check_ext_len(pe_ws_reader_t *r, uint64_t *len)
{
    size_t n = ext_len_size(r);

    *len = 0;
    for (size_t i = 0; i != n; ++i)
        *len = *len << 8 | r->_hdr[2 + i];
    if (n == 8 && (*len >> 63) != 0) /* 5.2: "the most significant bit MUST be 0" */
        return ERR_LEN_HIGH_BIT;
    /* 5.2: "the minimal number of bytes MUST be used to encode the length". */
    if ((n == 2 && *len < 126) || (n == 8 && *len <= 0xffff))
        return ERR_LEN_NOT_MINIMAL;
    return check_length(r, *len);
}

/*
 * Consumes header bytes from *p, checking each as it arrives. Returns 1 when the header is
 * complete (the frame's fields and mask are set), 0 if the input ran out first, or -1 on a
 * violation, with the ERR_* in *err and *p just past the offending byte.
 */
static int
read_header(pe_ws_reader_t *r, const uint8_t **p, const uint8_t *end, int *err)
{
    while (*p != end) {
        uint8_t b = *(*p)++;
        size_t total;

        r->_hdr[r->_hdr_len++] = b;
        if (r->_hdr_len == 1) {
            *err = check_byte0(r, b);
        } else if (r->_hdr_len == 2) {
            *err = check_byte1(r, b);
            r->_remaining = b & 0x7f; /* replaced below when an extended length follows */
        } else if (r->_hdr_len == 2 + ext_len_size(r) && ext_len_size(r) != 0) {
            *err = check_ext_len(r, &r->_remaining);
        } else {
            *err = -1;
        }
        if (*err >= 0)
            return -1;
        if (r->_hdr_len < 2)
            continue;
        total = 2 + ext_len_size(r) + 4;
        if (r->_hdr_len == total) {
            memcpy(r->_mask, r->_hdr + total - 4, 4);
            return 1;
        }
    }
    return 0;
}

/*
 * XORs src[0..len) with the masking key into dst, starting at payload offset off (5.3: byte i of
 * the payload uses key byte i % 4). Eight bytes at a time with the key rotated to the offset's
 * phase; memcpy keeps the word accesses legal at any alignment (compilers emit plain loads).
 */
static void
unmask(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[4], uint64_t off)
{
    unsigned phase = (unsigned)(off & 3);
    size_t i = 0;

    if (len >= 8) {
        uint8_t rotated[8];
        uint64_t m;
        for (unsigned k = 0; k != 8; ++k)
            rotated[k] = key[(phase + k) & 3];
        memcpy(&m, rotated, 8);
        for (; len - i >= 8; i += 8) {
            uint64_t w;
            memcpy(&w, src + i, 8);
            w ^= m;
            memcpy(dst + i, &w, 8);
        }
    }
    /* i is a multiple of 8 here, so the phase of byte i is still `phase`. */
    for (; i != len; ++i)
        dst[i] = src[i] ^ key[(phase + i) & 3];
}

/* Makes room for `need` bytes in the message buffer: doubling, capped at max_message. */
static void
reserve_message(pe_ws_reader_t *r, size_t need)
{
    size_t cap;

    if (need <= r->_msg_cap)
        return;
    /* check_length guarantees it: the buffer never grows past the limit. */
    assert(need <= r->max_message);
    cap = r->_msg_cap != 0 ? r->_msg_cap : 256;
    while (cap < need)
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : SIZE_MAX;
    if (cap > r->max_message)
        cap = r->max_message;
    r->_msg = pe_realloc(r->_msg, cap);
    r->_msg_cap = cap;
}

/* Sets up the payload phase of a frame whose header just completed. */
static void
start_frame(pe_ws_reader_t *r)
{
    r->_in_frame = 1;
    r->_frame_off = 0;
    if (is_control(r->_opcode)) {
        r->_ctl_len = 0;
    } else if (r->_opcode != PE_WS_OP_CONT) {
        r->_msg_opcode = r->_opcode;
        r->_msg_compressed = r->_rsv1;
        r->_msg_len = 0;
        pe_utf8_init(&r->_utf8);
    }
}

/* Whether the message being assembled gets its UTF-8 checked here (compressed: after inflating). */
static int
validates_utf8(const pe_ws_reader_t *r)
{
    return r->_msg_opcode == PE_WS_OP_TEXT && !r->_msg_compressed;
}

/* Takes up to the rest of the current frame's payload from [*p, end). Returns an ERR_* or -1. */
static int
read_payload(pe_ws_reader_t *r, const uint8_t **p, const uint8_t *end)
{
    size_t n = (size_t)(end - *p);
    uint8_t *dst;

    if (n > r->_remaining)
        n = (size_t)r->_remaining;
    if (is_control(r->_opcode)) {
        dst = r->_ctl + r->_ctl_len;
        r->_ctl_len += n;
    } else {
        reserve_message(r, r->_msg_len + n);
        dst = r->_msg + r->_msg_len;
        r->_msg_len += n;
    }
    unmask(dst, *p, n, r->_mask, r->_frame_off);
    /* Fail fast (Autobahn 6.4.x): check each chunk as it arrives, not at the end of the message. */
    if (!is_control(r->_opcode) && validates_utf8(r)) {
        pe_utf8_t before = r->_utf8;
        if (pe_utf8_feed(&r->_utf8, dst, n) != 0) {
            /* Consume up to the offending byte only, so the error sits at the same stream offset
             * however the input was split (rare path: replaying the chunk costs nothing). */
            size_t bad = 0;
            while (pe_utf8_feed(&before, dst + bad, 1) == 0)
                ++bad;
            *p += bad + 1;
            return ERR_UTF8;
        }
    }
    *p += n;
    r->_frame_off += n;
    r->_remaining -= n;
    return -1;
}

/*
 * The current frame's payload is complete. Fills *ev and returns 1 if that completes an event,
 * 0 if it does not (a non-final data frame), or -1 after fail() on a violation.
 */
static int
end_frame(pe_ws_reader_t *r, pe_ws_event_t *ev)
{
    r->_in_frame = 0;
    r->_hdr_len = 0;

    switch (r->_opcode) {
    case PE_WS_OP_PING:
    case PE_WS_OP_PONG:
        ev->kind = r->_opcode == PE_WS_OP_PING ? PE_WS_EV_PING : PE_WS_EV_PONG;
        ev->payload = r->_ctl;
        ev->payload_len = r->_ctl_len;
        return 1;
    case PE_WS_OP_CLOSE: {
        pe_utf8_t utf8;
        if (r->_ctl_len == 0) { /* 7.1.5: no status code; 1005 stands for it locally */
            ev->kind = PE_WS_EV_CLOSE;
            ev->code = 1005;
            ev->payload = r->_ctl;
            ev->payload_len = 0;
            return 1;
        }
        /* check_byte1 rejected a 1-byte body, so the code is there. */
        ev->code = r->_ctl[0] << 8 | r->_ctl[1];
        if (!is_valid_close_code((unsigned)ev->code)) {
            fail(r, ERR_CLOSE_CODE, ev);
            return -1;
        }
        pe_utf8_init(&utf8);
        if (pe_utf8_feed(&utf8, r->_ctl + 2, r->_ctl_len - 2) != 0 || !pe_utf8_is_complete(&utf8)) {
            fail(r, ERR_CLOSE_REASON_UTF8, ev);
            return -1;
        }
        ev->kind = PE_WS_EV_CLOSE;
        ev->payload = r->_ctl + 2;
        ev->payload_len = r->_ctl_len - 2;
        return 1;
    }
    default:
        break;
    }

    /* A data frame. */
    if (!r->_fin)
        return 0;
    if (validates_utf8(r) && !pe_utf8_is_complete(&r->_utf8)) {
        fail(r, ERR_UTF8_TRUNCATED, ev);
        return -1;
    }
    ev->kind = PE_WS_EV_MESSAGE;
    ev->opcode = r->_msg_opcode;
    ev->compressed = r->_msg_compressed;
    ev->payload = r->_msg != NULL ? r->_msg : empty_payload;
    ev->payload_len = r->_msg_len;
    /* The message is delivered; _msg_len keeps its length (the payload stays readable) until the
     * next data frame starts a new one. */
    r->_msg_opcode = 0;
    r->_msg_compressed = 0;
    return 1;
}

/* ---- the reader: public API ---------------------------------------------------------------- */

void
pe_ws_reader_init(pe_ws_reader_t *r, size_t max_message, int allow_rsv1)
{
    memset(r, 0, sizeof(*r));
    r->max_message = max_message;
    r->allow_rsv1 = allow_rsv1 != 0;
}

void
pe_ws_reader_dispose(pe_ws_reader_t *r)
{
    pe_free(r->_msg);
    r->_msg = NULL;
    r->_msg_len = r->_msg_cap = 0;
}

size_t
pe_ws_reader_feed(pe_ws_reader_t *r, const uint8_t *buf, size_t len, pe_ws_event_t *ev)
{
    const uint8_t *p = buf, *end = buf + len;
    int err;

    *ev = (pe_ws_event_t){.kind = PE_WS_EV_NONE};
    if (r->_failed != 0) {
        fail(r, r->_failed - 1, ev);
        return 0;
    }

    for (;;) {
        /* Header: returns without consuming anything more when the input runs out. */
        if (!r->_in_frame) {
            int ret = read_header(r, &p, end, &err);
            if (ret < 0)
                goto Error;
            if (ret == 0)
                break;
            start_frame(r);
        }
        /* Payload: a zero-length frame goes straight to its end. */
        if (r->_remaining != 0) {
            if (p == end)
                break;
            if ((err = read_payload(r, &p, end)) >= 0)
                goto Error;
            if (r->_remaining != 0)
                break;
        }
        /* Frame end: a non-final data frame reads on; anything else is an event (or an error). */
        if (end_frame(r, ev) != 0)
            return (size_t)(p - buf);
    }
    assert(p == end);
    return len;

Error:
    fail(r, err, ev);
    return (size_t)(p - buf);
}

size_t
pe_ws_reader_buffered(const pe_ws_reader_t *r)
{
    /* After a MESSAGE event _msg_len still holds the delivered length: that message is done. */
    return r->_msg_opcode != 0 ? r->_msg_len : 0;
}

void
pe_ws_reader_shrink(pe_ws_reader_t *r)
{
    /* Only between messages: a message being assembled keeps its bytes. */
    if (r->_msg_opcode != 0)
        return;
    pe_free(r->_msg);
    r->_msg = NULL;
    r->_msg_len = r->_msg_cap = 0;
}

/* ---- the writer ---------------------------------------------------------------------------- */

size_t
pe_ws_encode_header(uint8_t *out, int opcode, int rsv1, uint64_t payload_len)
{
    /* 5.2: a 64-bit length has its high bit clear; nothing we send comes close. */
    assert((payload_len >> 63) == 0);
    out[0] = (uint8_t)(0x80 | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
    /* 5.2: the shortest of the three length forms. */
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i != 8; ++i)
        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

size_t
pe_ws_encode_close_payload(uint8_t *out, int code, const char *reason)
{
    size_t len;

    /* 7.4.1: 1005 ("no status") is never sent; a close without a code has an empty body. */
    if (code == 0 || code == 1005)
        return 0;
    out[0] = (uint8_t)((unsigned)code >> 8);
    out[1] = (uint8_t)code;
    if (reason == NULL)
        return 2;
    /* 5.5: control payloads are at most 125 bytes, so the reason gets 123; strnlen reads at most
     * one byte past that, which is enough to know whether to cut. */
    len = strnlen(reason, 124);
    if (len > 123) {
        len = 123;
        /* Back up to a code point boundary: never cut a multi-byte sequence in half (8.1). A
         * sequence has at most 3 continuation bytes, so text that is not UTF-8 loses no more. */
        for (int i = 0; i != 3 && ((uint8_t)reason[len] & 0xc0) == 0x80; ++i)
            --len;
    }
    memcpy(out + 2, reason, len);
    return 2 + len;
}

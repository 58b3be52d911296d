/*
 * wire.c: the subscriber-facing byte formats (wire.h), each built from the message's one
 * envelope (pubsub/msg.c) so that every transport carries the same JSON.
 *
 * The shared encodings are built lazily into the message's cache slots rather than at publish
 * time: a message only SSE streams receive never costs a WebSocket frame, and one that no
 * subscriber receives (a publish to an empty channel, a history entry never replayed) costs
 * neither. Each is one allocation holding the complete bytes a writev sends (frame header
 * included), so a subscriber's output queue entry is one pointer and one length.
 *
 * Rejected: building the WebSocket op text with jansson (it re-prints numbers, and the data must
 * arrive as published), and a per-connection deflate stream (context takeover): compressing per
 * subscriber would cost fan-out its sharing; server_no_context_takeover makes one compressed
 * form valid for every peer.
 */
#include <stdio.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "edge/wire/wire.h"
#include "edge/wire/ws_deflate.h"
#include "edge/wire/ws_frame.h"

_Static_assert(PE_WIRE_NUM_SLOTS == PE_MSG_NUM_ENCODINGS, "pubsub/pubsub.h's PE_MSG_NUM_ENCODINGS must match pe_wire_slot_t");

uint64_t pe_ws_frames_built[PE_WIRE_WS_KIND_MAX];

/* ---- Server-Sent Events ------------------------------------------------------------------ */

#define SSE_ID "id: "
#define SSE_DATA "\ndata: "
#define SSE_END "\n\n"

#define SSE_JOIN "\nevent: join"
#define SSE_LEAVE "\nevent: leave"

/* "id: <id>[ev]\ndata: <data>\n\n", ev being "" for a message or an event line. */
static pe_msg_encoding_t *
sse_frame(const pe_msg_t *msg, const char *ev, const char *data, size_t data_len)
{
    size_t evlen = strlen(ev);
    size_t len = sizeof(SSE_ID) - 1 + msg->id_len + evlen + sizeof(SSE_DATA) - 1 + data_len + sizeof(SSE_END) - 1;
    pe_msg_encoding_t *enc = pe_malloc(sizeof(*enc) + len);
    char *p = enc->data;
    memcpy(p, SSE_ID, sizeof(SSE_ID) - 1);
    p += sizeof(SSE_ID) - 1;
    memcpy(p, msg->id_str, msg->id_len);
    p += msg->id_len;
    memcpy(p, ev, evlen);
    p += evlen;
    memcpy(p, SSE_DATA, sizeof(SSE_DATA) - 1);
    p += sizeof(SSE_DATA) - 1;
    memcpy(p, data, data_len);
    p += data_len;
    memcpy(p, SSE_END, sizeof(SSE_END) - 1);
    enc->len = len;
    return enc;
}

/* A message's data line is its envelope. A presence event (join/leave) carries its event line
 * after the id, which comes first as for a message, so pe_wire_sse_data_off (and the
 * multi-channel cursor line that replaces the id line) applies unchanged; field order within an
 * event does not matter. */
static pe_msg_encoding_t *
build_sse(const pe_msg_t *msg)
{
    if (msg->kind == PE_MSG_COUNT) {
        /* No id line: a count is live only and moves no position, and an event without an id
         * leaves the client's Last-Event-ID as it was (WHATWG "dispatch the event"). */
        static const char head[] = "event: count\ndata: ";
        size_t len = sizeof(head) - 1 + msg->data_len + sizeof(SSE_END) - 1;
        pe_msg_encoding_t *enc = pe_malloc(sizeof(*enc) + len);
        memcpy(enc->data, head, sizeof(head) - 1);
        memcpy(enc->data + sizeof(head) - 1, msg->data, msg->data_len);
        memcpy(enc->data + sizeof(head) - 1 + msg->data_len, SSE_END, sizeof(SSE_END) - 1);
        enc->len = len;
        return enc;
    }
    if (msg->kind != PE_MSG_DATA)
        return sse_frame(msg, msg->kind == PE_MSG_JOIN ? SSE_JOIN : SSE_LEAVE, msg->data, msg->data_len);
    return sse_frame(msg, "", msg->envelope, msg->envelope_len);
}

const pe_msg_encoding_t *
pe_wire_sse_event(pe_msg_t *msg)
{
    return pe_msg_encoding(msg, PE_WIRE_SSE, build_sse);
}

size_t
pe_wire_sse_id_line(char *out, const char *cursor, size_t len)
{
    memcpy(out, SSE_ID, sizeof(SSE_ID) - 1);
    memcpy(out + sizeof(SSE_ID) - 1, cursor, len);
    out[sizeof(SSE_ID) - 1 + len] = '\n';
    return sizeof(SSE_ID) - 1 + len + 1;
}

size_t
pe_wire_sse_retry(char *out, unsigned ms)
{
    return (size_t)snprintf(out, PE_WIRE_SSE_RETRY_MAX, "retry: %u\n\n", ms);
}

/* ---- WebSocket --------------------------------------------------------------------------- */

/* The message op is the envelope with the op member first: {"op":"message", + envelope[1..].
 * A presence event's op is {"op":"join","id":"<id>", + its data[1..]. */
#define OP_HEAD "{\"op\":\"message\","
#define OP_JOIN "{\"op\":\"join\",\"id\":\""
#define OP_LEAVE "{\"op\":\"leave\",\"id\":\""
/* A count has no id: {"op":"count", + its data[1..]. */
#define OP_COUNT "{\"op\":\"count\","

size_t
pe_wire_ws_text_len(const pe_msg_t *msg)
{
    if (msg->kind == PE_MSG_COUNT)
        return sizeof(OP_COUNT) - 1 + msg->data_len - 1;
    if (msg->kind != PE_MSG_DATA)
        return strlen(msg->kind == PE_MSG_JOIN ? OP_JOIN : OP_LEAVE) + msg->id_len + 2 + msg->data_len - 1;
    return sizeof(OP_HEAD) - 1 + msg->envelope_len - 1;
}

size_t
pe_wire_presence_text(const pe_msg_t *msg, char *p)
{
    if (msg->kind == PE_MSG_COUNT) {
        memcpy(p, OP_COUNT, sizeof(OP_COUNT) - 1);
        memcpy(p + sizeof(OP_COUNT) - 1, msg->data + 1, msg->data_len - 1);
        return sizeof(OP_COUNT) - 1 + msg->data_len - 1;
    }
    const char *head = msg->kind == PE_MSG_JOIN ? OP_JOIN : OP_LEAVE;
    size_t hlen = strlen(head);
    memcpy(p, head, hlen);
    memcpy(p + hlen, msg->id_str, msg->id_len);
    memcpy(p + hlen + msg->id_len, "\",", 2);
    memcpy(p + hlen + msg->id_len + 2, msg->data + 1, msg->data_len - 1);
    return hlen + msg->id_len + 2 + msg->data_len - 1;
}

static void
write_op_text(const pe_msg_t *msg, char *p)
{
    if (msg->kind != PE_MSG_DATA) {
        pe_wire_presence_text(msg, p);
        return;
    }
    memcpy(p, OP_HEAD, sizeof(OP_HEAD) - 1);
    memcpy(p + sizeof(OP_HEAD) - 1, msg->envelope + 1, msg->envelope_len - 1);
}

/* A frame of a len-byte payload: header and payload in one allocation; the caller writes the
 * payload at *payload. */
static pe_msg_encoding_t *
alloc_frame(int rsv1, size_t len, uint8_t **payload)
{
    uint8_t hdr[PE_WS_MAX_HEADER];
    size_t hlen = pe_ws_encode_header(hdr, PE_WS_OP_TEXT, rsv1, len);
    pe_msg_encoding_t *enc = pe_malloc(sizeof(*enc) + hlen + len);
    memcpy(enc->data, hdr, hlen);
    enc->len = hlen + len;
    *payload = (uint8_t *)enc->data + hlen;
    return enc;
}

static pe_msg_encoding_t *
build_ws_plain(const pe_msg_t *msg)
{
    __atomic_fetch_add(&pe_ws_frames_built[PE_WIRE_WS_KIND_PLAIN], 1, __ATOMIC_RELAXED);
    uint8_t *payload;
    pe_msg_encoding_t *enc = alloc_frame(0, pe_wire_ws_text_len(msg), &payload);
    write_op_text(msg, (char *)payload);
    return enc;
}

static pe_msg_encoding_t *
build_ws_deflate(const pe_msg_t *msg)
{
    __atomic_fetch_add(&pe_ws_frames_built[PE_WIRE_WS_KIND_DEFLATE], 1, __ATOMIC_RELAXED);
    size_t len = pe_wire_ws_text_len(msg);
    char *text = pe_malloc(len);
    write_op_text(msg, text);
    uint8_t *z;
    size_t zlen;
    /* Incompressible or failed: the plain frame, still built once. */
    int deflated = pe_ws_deflate_message((const uint8_t *)text, len, 15, &z, &zlen) == 0;
    uint8_t *payload;
    pe_msg_encoding_t *enc = alloc_frame(deflated, deflated ? zlen : len, &payload);
    memcpy(payload, deflated ? (const void *)z : (const void *)text, deflated ? zlen : len);
    if (deflated)
        pe_free(z);
    pe_free(text);
    return enc;
}

const pe_msg_encoding_t *
pe_wire_ws_message(pe_msg_t *msg, int deflate)
{
    return deflate ? pe_msg_encoding(msg, PE_WIRE_WS_DEFLATE, build_ws_deflate)
                   : pe_msg_encoding(msg, PE_WIRE_WS_PLAIN, build_ws_plain);
}

/* ---- long-polling ------------------------------------------------------------------------ */

size_t
pe_wire_poll_body(h2o_mem_pool_t *pool, const char *cursor, size_t cursor_len, pe_msg_t *const *msgs, size_t num_msgs,
                  char *const *gaps, size_t num_gaps, h2o_iovec_t *bufs, size_t *total)
{
    static const char head1[] = "{\"cursor\":\"", head2[] = "\",\"messages\":[", tail1[] = "],\"gaps\":[", tail2[] = "]}";
    size_t n = 0;
    bufs[n++] = h2o_concat(pool, h2o_iovec_init(head1, sizeof(head1) - 1), h2o_iovec_init(cursor, cursor_len),
                           h2o_iovec_init(head2, sizeof(head2) - 1));
    for (size_t i = 0; i != num_msgs; ++i) {
        if (i != 0)
            bufs[n++] = h2o_iovec_init(H2O_STRLIT(","));
        bufs[n++] = h2o_iovec_init(msgs[i]->envelope, msgs[i]->envelope_len);
    }
    /* The gap list: names are valid channel names, which need no JSON escaping. */
    size_t tail_len = sizeof(tail1) - 1 + sizeof(tail2) - 1;
    for (size_t i = 0; i != num_gaps; ++i)
        tail_len += strlen(gaps[i]) + 3;
    char *tail = h2o_mem_alloc_pool(pool, tail_len), *p = tail;
    memcpy(p, tail1, sizeof(tail1) - 1);
    p += sizeof(tail1) - 1;
    for (size_t i = 0; i != num_gaps; ++i) {
        size_t len = strlen(gaps[i]);
        if (i != 0)
            *p++ = ',';
        *p++ = '"';
        memcpy(p, gaps[i], len);
        p += len;
        *p++ = '"';
    }
    memcpy(p, tail2, sizeof(tail2) - 1);
    p += sizeof(tail2) - 1;
    bufs[n++] = h2o_iovec_init(tail, (size_t)(p - tail));
    *total = 0;
    for (size_t i = 0; i != n; ++i)
        *total += bufs[i].len;
    return n;
}

/*
 * wire.h: every byte format a subscriber receives, built once per message and shared by
 * reference (docs/protocol.md "Server-Sent Events", "Long-polling", "WebSocket").
 *
 * Ownership. A message's shared encodings live in the message's cache slots (pe_msg_encoding),
 * named by pe_wire_slot_t: built on first use by whichever thread needs one, kept until the
 * message's last reference goes. Callers hold a reference to the message while they use the
 * bytes (an output queue entry holds one). The per-connection texts (cursor lines, control
 * frames, the long-poll head and tail) are written into buffers the caller owns.
 *
 * Threading: the shared builders may run on any thread (the slot is set atomically; a lost race
 * frees its copy). Nothing here calls h2o or pubsub back.
 */
#ifndef PE_WIRE_H
#define PE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "pubsub/pubsub.h"

/*
 * The cache slots of a message (pe_msg_t's _encodings). Checklist when adding one: raise
 * PE_MSG_NUM_ENCODINGS in pubsub/pubsub.h (wire.c asserts they match), give it a builder in
 * wire.c, and a unit test in tests/unit/test_wire.c.
 */
typedef enum en_pe_wire_slot_t {
    PE_WIRE_SSE = 0,    /* "id: <id>\ndata: <envelope>\n\n" */
    PE_WIRE_WS_PLAIN,   /* a WebSocket text frame of the message op, uncompressed */
    PE_WIRE_WS_DEFLATE, /* the same, permessage-deflate (RSV1), compressed once with a fresh state */
    PE_WIRE_NUM_SLOTS
} pe_wire_slot_t;

/* Which WebSocket message frames were built, for /metrics (pe_ws_frames_built). */
typedef enum en_pe_wire_ws_kind_t { PE_WIRE_WS_KIND_PLAIN = 0, PE_WIRE_WS_KIND_DEFLATE, PE_WIRE_WS_KIND_MAX } pe_wire_ws_kind_t;

/**
 * WebSocket message frames built (once per message and kind, on whichever thread first needs
 * one), indexed by pe_wire_ws_kind_t; atomic, read from any thread. Compared with deliveries in
 * /metrics, it shows that fan-out does not encode per subscriber.
 */
extern uint64_t pe_ws_frames_built[PE_WIRE_WS_KIND_MAX];

/* ---- Server-Sent Events ------------------------------------------------------------------ */

/**
 * The message's SSE event (slot PE_WIRE_SSE): "id: <id>\ndata: <envelope>\n\n". Valid while the
 * caller holds a reference to msg.
 */
const pe_msg_encoding_t *pe_wire_sse_event(pe_msg_t *msg);
/** Offset of "data: " in pe_wire_sse_event's bytes: the event without its id line. */
static inline size_t
pe_wire_sse_data_off(const pe_msg_t *msg)
{
    return sizeof("id: ") - 1 + msg->id_len + 1;
}
/* The longest "id: <cursor>\n" line. */
#define PE_WIRE_SSE_ID_LINE_MAX (PE_CURSOR_MAXLEN + 5)
/**
 * Writes "id: <cursor>\n" into out (PE_WIRE_SSE_ID_LINE_MAX bytes), the cursor being
 * cursor[0..len) (at most PE_CURSOR_MAXLEN); returns its length.
 */
size_t pe_wire_sse_id_line(char *out, const char *cursor, size_t len);
/* Bytes of a "retry: <ms>\n\n" line at most. */
#define PE_WIRE_SSE_RETRY_MAX 24
/** Writes "retry: <ms>\n\n" into out (PE_WIRE_SSE_RETRY_MAX bytes); returns its length. */
size_t pe_wire_sse_retry(char *out, unsigned ms);
/* The heartbeat comment, and the engine-state events (one per outage, one when back). */
#define PE_WIRE_SSE_PING ": ping\n\n"
#define PE_WIRE_SSE_ENGINE_DOWN "event: engine\ndata: {\"state\":\"unavailable\"}\n\n"
#define PE_WIRE_SSE_ENGINE_UP "event: engine\ndata: {\"state\":\"available\"}\n\n"
/* A gap event is PE_WIRE_SSE_GAP_HEAD, the id line, then the _MID, the channel, the _TAIL. */
#define PE_WIRE_SSE_GAP_HEAD "event: gap\n"
#define PE_WIRE_SSE_GAP_MID "data: {\"channel\":\""
#define PE_WIRE_SSE_GAP_TAIL "\"}\n\n"

/* ---- WebSocket --------------------------------------------------------------------------- */

/** Length of the message op's text, {"op":"message","channel":..,"id":..,"data":..}. */
size_t pe_wire_ws_text_len(const pe_msg_t *msg);
/**
 * The message op as a complete server frame: compressed (slot PE_WIRE_WS_DEFLATE, RSV1 set,
 * server_no_context_takeover, 15-bit window) when `deflate`, else plain (PE_WIRE_WS_PLAIN). A
 * zlib failure gives an uncompressed frame, which permessage-deflate allows per message. Valid
 * while the caller holds a reference to msg.
 */
const pe_msg_encoding_t *pe_wire_ws_message(pe_msg_t *msg, int deflate);

/**
 * A presence event (msg->kind PE_MSG_JOIN or PE_MSG_LEAVE) as the JSON of its WebSocket op and
 * long-poll entry, {"op":"join","id":"<id>","channel":..,"client":..,"user":..,"node":..}, or a
 * count (PE_MSG_COUNT) as {"op":"count","channel":..,"count":N} (no id), written at p
 * (pe_wire_ws_text_len(msg) bytes); returns its length. The SSE event and the WebSocket frames
 * of such a message are built in the same slots as a message's (pe_wire_sse_event,
 * pe_wire_ws_message), with the event's form.
 */
size_t pe_wire_presence_text(const pe_msg_t *msg, char *p);

/* ---- long-polling ------------------------------------------------------------------------ */

/**
 * The long-poll answer {"cursor":"..","messages":[e1,..],"gaps":["a",..]} as iovecs in bufs
 * (room for 2 * num_msgs + 2): the head and tail are allocated in pool, the envelopes point at
 * the messages' own bytes (the caller keeps its references until the response is sent). Returns
 * the number of iovecs; *total is the body's length.
 */
size_t pe_wire_poll_body(h2o_mem_pool_t *pool, const char *cursor, size_t cursor_len, pe_msg_t *const *msgs, size_t num_msgs,
                         char *const *gaps, size_t num_gaps, h2o_iovec_t *bufs, size_t *total);

#endif

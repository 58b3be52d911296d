/*
 * ws_conn.c: server frames of a WebSocket connection into the connection core's queue: control
 * frames and replies are per-connection text (header and payload copied), unlike a published
 * message, whose shared frame edge/wire builds once.
 */
#include "edge/wire/ws_frame.h"
#include "edge/ws/ws_conn.h"

void
pe_ws__queue_frame(pe_ws_conn_t *ws, int opcode, int rsv1, const void *payload, size_t len)
{
    /* Once our close frame is queued the core accepts no more output, so replies to what the
     * peer sent after it are dropped. */
    if (!pe_conn_is_open(&ws->conn))
        return;
    uint8_t hdr[PE_WS_MAX_HEADER];
    size_t hlen = pe_ws_encode_header(hdr, opcode, rsv1, len);
    pe_outq_text(&ws->conn.out, hdr, hlen);
    pe_outq_text(&ws->conn.out, payload, len);
    pe_conn_push(&ws->conn, hlen + len, NULL, NULL, 0);
}

void
pe_ws__queue_close(pe_ws_conn_t *ws, int code, const char *reason)
{
    uint8_t payload[125];
    size_t len = code == 1005 ? 0 : pe_ws_encode_close_payload(payload, code, reason);
    pe_ws__queue_frame(ws, PE_WS_OP_CLOSE, 0, payload, len);
}

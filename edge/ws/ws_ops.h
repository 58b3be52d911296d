/*
 * ws_ops.h: the JSON op protocol of /ws (docs/protocol.md "WebSocket"), internal to edge/ws/:
 * the entry points the transport (ws.c) calls.
 */
#ifndef PE_WS_OPS_H
#define PE_WS_OPS_H

#include "edge/ws/ws_conn.h"

/** The subscriber callbacks of a /ws connection (messages, gaps, engine state, confirmations). */
extern const pe_sub_callbacks_t pe_ws_ops_sub_callbacks;
/** Subscribes to the handshake's query-string channels; each is confirmed when ready. */
void pe_ws_ops_subscribe_query(pe_ws_conn_t *ws, const pe_sub_query_t *q);
/** Handles one text message of the client (an op); replies are queued. */
void pe_ws_ops_handle(pe_ws_conn_t *ws, const char *text, size_t len);
/** Answers a binary message (not part of the protocol). */
void pe_ws_ops_refuse_binary(pe_ws_conn_t *ws);
/** Queues the expiry notice {"op":"expiring","exp":T} (docs/auth.md "Expiry"). */
void pe_ws_ops_expiring(pe_ws_conn_t *ws);
/**
 * A revocation removed the channel (already out of the subscription): drops its pending
 * confirmation and queues {"op":"error","code":"revoked","channel":C,"message":REASON}.
 */
void pe_ws_ops_channel_revoked(pe_ws_conn_t *ws, const char *channel, size_t len, const pe_revocation_t *r);
/** Releases the op protocol's state (from on_dispose). */
void pe_ws_ops_dispose(pe_ws_conn_t *ws);

#endif

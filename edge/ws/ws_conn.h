/*
 * ws_conn.h: what the two halves of the WebSocket transport share (internal to edge/ws/): the
 * connection object, the framing calls of ws.c that ws_ops.c uses, and the op protocol's entry
 * points that ws.c calls.
 *
 * Ownership: the connection core (edge/core/conn.h) allocates and frees pe_ws_conn_t; ws.c's
 * on_dispose releases the reader and calls pe_ws_ops_dispose, which releases the op protocol's
 * state (pending confirmations; publishes still waiting for the engine keep their holder and
 * only lose the weak pointer to the connection).
 */
#ifndef PE_WS_CONN_H
#define PE_WS_CONN_H

#include "edge/core/conn.h"
#include "edge/wire/ws_deflate.h"
#include "edge/wire/ws_frame.h"

typedef struct st_pe_ws_publish_t pe_ws_publish_t;
typedef struct st_pe_ws_pending_sub_t pe_ws_pending_sub_t;

/* The subscription of the handshake's query string, kept from the handshake until the socket is
 * ours (2.6 KiB with room for 64 channels: freed once subscribed). */
typedef struct st_pe_ws_initial_t {
    pe_sub_query_t q;
    char arena[1]; /* the query string's length + 1 */
} pe_ws_initial_t;

typedef struct st_pe_ws_conn_t {
    pe_conn_t conn; /* first: the core allocates and frees the whole object */
    pe_ws_reader_t reader;
    pe_ws_pmd_t pmd;
    uint64_t last_rx;                  /* loop ms of the last byte received */
    uint64_t last_tx;                  /* loop ms of the last write completed (or of the pause, if later) */
    pe_ws_publish_t *publishes;        /* publish ops waiting for the engine (ws_ops.c) */
    pe_ws_pending_sub_t *pending_subs; /* subscriptions whose "subscribed" waits for on_ready (ws_ops.c) */
    pe_ws_initial_t *initial;          /* until subscribed, or NULL */
    unsigned pmd_enabled : 1;
    unsigned echo : 1;
    unsigned may_publish : 1;
    unsigned read_paused : 1;     /* input left unread until the queue drains (PE_WS_READ_PAUSE) */
    unsigned reading_stopped : 1; /* the peer's close or a violation: nothing more is read */
    unsigned own_read : 1;        /* we read the socket (not TLS), h2o only notifies */
} pe_ws_conn_t;

/* ws.c: framing */
/** Queues a frame (header + payload copied); dropped once the conn accepts no more output. */
void pe_ws__queue_frame(pe_ws_conn_t *ws, int opcode, int rsv1, const void *payload, size_t len);

/* ws_ops.c: the JSON op protocol (docs/protocol.md "WebSocket") */
/** The subscriber callbacks of a /ws connection (messages, gaps, engine state, confirmations). */
extern const pe_sub_callbacks_t pe_ws_ops_sub_callbacks;
/** Subscribes to the handshake's query-string channels; each is confirmed when ready. */
void pe_ws_ops_subscribe_query(pe_ws_conn_t *ws, const pe_sub_query_t *q);
/** Handles one text message of the client (an op); replies are queued. */
void pe_ws_ops_handle(pe_ws_conn_t *ws, const char *text, size_t len);
/** Answers a binary message (not part of the protocol). */
void pe_ws_ops_refuse_binary(pe_ws_conn_t *ws);
/** Releases the op protocol's state (from on_dispose). */
void pe_ws_ops_dispose(pe_ws_conn_t *ws);

#endif

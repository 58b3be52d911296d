/*
 * ws_conn.h: the WebSocket connection object and its framing (internal to edge/ws/), the base
 * that the op protocol (ws_ops.c) and the transport (ws.c) share. Calls run downward only:
 * ws.c -> ws_ops.c -> ws_conn.c.
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

/* How the transport reads its socket (the core reads it itself once lingering). */
typedef enum en_pe_ws_read_t {
    PE_WS_READING = 0, /* input is read and handled as it comes */
    PE_WS_READ_PAUSED, /* input left unread until the queue drains below PE_WS_READ_PAUSE */
    PE_WS_READ_STOPPED /* the peer's close or a violation: nothing more is read */
} pe_ws_read_t;

typedef struct st_pe_ws_conn_t {
    pe_conn_t conn; /* first: the core allocates and frees the whole object */
    pe_ws_reader_t reader;
    pe_ws_pmd_t pmd;
    uint64_t last_rx;                  /* loop ms of the last byte received */
    uint64_t last_tx;                  /* loop ms of the last write completed (or of the pause, if later) */
    pe_ws_publish_t *publishes;        /* publish ops waiting for the engine (ws_ops.c) */
    pe_ws_pending_sub_t *pending_subs; /* subscriptions whose "subscribed" waits for on_ready (ws_ops.c) */
    pe_ws_initial_t *initial;          /* until subscribed, or NULL */
    pe_ws_read_t read;
    unsigned pmd_enabled : 1;
    unsigned echo : 1;
    unsigned may_publish : 1;
    /* The handshake's origin may publish (pe_auth_check's origin rule): the connection's token
     * (from the handshake or the auth op) may then publish where its "publish" claim allows
     * (docs/auth.md). */
    unsigned token_may_publish : 1;
    unsigned ops_seen : 1; /* a client message came: the auth op is for the first one only */
    unsigned own_read : 1; /* we read the socket (not TLS), h2o only notifies */
} pe_ws_conn_t;

/**
 * Queues a frame (header + payload copied into the queue); dropped once the conn accepts no
 * more output (nothing may follow our close frame, RFC 6455 5.5.1).
 */
void pe_ws__queue_frame(pe_ws_conn_t *ws, int opcode, int rsv1, const void *payload, size_t len);
/** Queues a close frame with code (1005: none) and reason; the caller then ends the conn. */
void pe_ws__queue_close(pe_ws_conn_t *ws, int code, const char *reason);

#endif

/*
 * http.h: response helpers every handler shares: JSON errors (the shape of docs/protocol.md),
 * the query string, and small socket and randomness helpers.
 */
#ifndef PE_HTTP_H
#define PE_HTTP_H

#include <stdint.h>
#include <h2o.h>

/** Sends {"error":{"code":code,"message":message}} with the status. */
void pe_http_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message);
/** Sends a JSON body with the status and no-store caching. */
void pe_http_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len);
/** The query string after '?', or an empty vector. */
h2o_iovec_t pe_http_query(h2o_req_t *req);
/**
 * The channel=NAME parameter of an API request, NUL-terminated in the request's pool: its
 * length, or -1 with 400 missing_channel / bad_channel answered.
 */
long pe_http_query_channel(h2o_req_t *req, char **channel);
/** Sends 405 with an Allow header. */
void pe_http_method_not_allowed(h2o_req_t *req, const char *allow);
/**
 * A weak reference to a request answered later (an engine callback may come after the client
 * left and h2o freed the request): *weak is set to req now and to NULL when h2o disposes the
 * request. The owner of *weak calls pe_http_weak_req_drop before *weak itself goes away.
 */
typedef struct st_pe_http_weak_req_t pe_http_weak_req_t;
pe_http_weak_req_t *pe_http_weak_req(h2o_req_t *req, h2o_req_t **weak);
/** Stops watching: the request's disposal no longer writes to *weak. */
void pe_http_weak_req_drop(pe_http_weak_req_t *ref);
/** A per-thread pseudo-random number, seeded from getrandom(2) (jitter, not secrets). */
uint32_t pe_rand(void);
/**
 * For sockets a transport took over from h2o (WebSocket, HTTP/1 SSE): drops what is in the read
 * buffer when `discard`, then gives an empty buffer back. h2o keeps it (8 KiB) for the socket's
 * life; a subscriber reads a few bytes a minute, so keeping it would be most of an idle
 * connection's memory. The next read allocates one again (evloop reserves before every read).
 */
void pe_socket_release_input(h2o_socket_t *sock, int discard);
/**
 * Set by edge/tls.c at start (NULL without TLS): does the same for a TLS socket's buffer of
 * encrypted input, which h2o also keeps for the socket's life. Called by
 * pe_socket_release_input for sockets with TLS.
 */
extern void (*pe_socket_release_tls_input)(h2o_socket_t *sock);

#endif

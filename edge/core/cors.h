/*
 * cors.h: the cross-origin policy of --allowed-origin (docs/protocol.md "Cross-origin requests
 * (CORS)"), applied by the router and the WebSocket handshake.
 */
#ifndef PE_CORS_H
#define PE_CORS_H

#include <h2o.h>

/**
 * Adds the CORS response headers for the request's Origin under --allowed-origin (none when the
 * list is empty or the origin is not in it; Vary: Origin whenever a list is set). Call before
 * the response starts.
 */
void pe_http_cors(h2o_req_t *req);
/**
 * Answers an OPTIONS preflight: 204 with the CORS headers for an allowed origin, 403 with a JSON
 * error otherwise. Returns 0 if it answered, -1 if the request is not OPTIONS or no
 * --allowed-origin is set (the handler then answers 405).
 */
int pe_http_preflight(h2o_req_t *req, const char *methods);
/**
 * Answers 403 origin_not_allowed, readable by the refused page (its own origin in
 * Access-Control-Allow-Origin), so a browser client can tell a refusal from an outage.
 */
void pe_http_refuse_origin(h2o_req_t *req);
/** 1 if a WebSocket handshake's Origin passes --allowed-origin (or same origin, or no policy). */
int pe_http_origin_is_allowed(h2o_req_t *req);
/**
 * The same for a request that rides on the user's cookies (a WebSocket handshake authenticated
 * by the pushedge_token cookie): a browser's Origin must be the server's own or in
 * --allowed-origin even when no --allowed-origin is set; no Origin (not a browser) passes.
 */
int pe_http_origin_is_allowed_with_cookie(h2o_req_t *req);
#endif

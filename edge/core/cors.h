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
 * Answers an OPTIONS preflight: 204 with the CORS headers for an allowed origin (with
 * credentials, pe_http_cors_credentials's header too), 403 with a JSON error otherwise. Returns 0
 * if it answered, -1 if the request is not OPTIONS or no --allowed-origin is set (the handler
 * then answers 405).
 */
int pe_http_preflight(h2o_req_t *req, const char *methods, int credentials);
/**
 * Adds Access-Control-Allow-Credentials: true after pe_http_cors for the endpoints that read the
 * token cookie (/sse, /poll), when --auth is on and the request's Origin is listed in
 * --allowed-origin by name (never for "*", never for an origin merely reflected).
 */
void pe_http_cors_credentials(h2o_req_t *req);
/**
 * Answers 403 origin_not_allowed, readable by the refused page (its own origin in
 * Access-Control-Allow-Origin), so a browser client can tell a refusal from an outage.
 */
void pe_http_refuse_origin(h2o_req_t *req);
/**
 * Answers 403 origin_not_allowed to a request whose token came from the cookie and whose origin
 * may not use it (pe_http_origin_is_allowed_with_cookie).
 */
void pe_http_refuse_cookie_origin(h2o_req_t *req);
/** 1 if a WebSocket handshake's Origin passes --allowed-origin (or same origin, or no policy). */
int pe_http_origin_is_allowed(h2o_req_t *req);
/**
 * The same for a request that rides on the user's cookies (a WebSocket handshake, SSE or poll
 * whose token is the pushedge_token cookie): a browser's Origin must be the server's own or
 * listed in --allowed-origin by name ("*" does not count), even when no list is set. No Origin passes (not a browser, or
 * the user's own navigation), unless Sec-Fetch-Site says another site's page made the request.
 */
int pe_http_origin_is_allowed_with_cookie(h2o_req_t *req);
#endif

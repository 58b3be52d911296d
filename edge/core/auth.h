/*
 * auth.h: who may publish (docs/security.md). One rule for every way in: HTTP publish and
 * batch, the WebSocket publish op, and the request-head check of edge/front.c.
 */
#ifndef PE_AUTH_H
#define PE_AUTH_H

#include <sys/socket.h>
#include <h2o.h>
#include "edge/core/config.h"
#include "edge/util/bounds.h"
#include "edge/util/secret.h" /* pe_secret_equals, for the key */

typedef enum en_pe_auth_t {
    PE_AUTH_OK = 0,
    PE_AUTH_NO_KEY,        /* 401: --api-key is set and no Authorization: Bearer came */
    PE_AUTH_WRONG_KEY,     /* 403 */
    PE_AUTH_NOT_LOOPBACK,  /* 403: no --api-key and the client is not on loopback */
    PE_AUTH_ORIGIN,        /* 403: a browser page of an origin that may not publish */
    PE_AUTH_TOKEN_INVALID, /* 401 unauthorized: --auth on, a Bearer token that does not verify */
    PE_AUTH_TOKEN_EXPIRED, /* 401 token_expired */
    PE_AUTH_MAX
} pe_auth_t;

/** The parts of a request the publish rule reads; values borrowed from the request. */
typedef struct st_pe_auth_view_t {
    h2o_iovec_t authorization, origin, host, sec_fetch_site;
    h2o_iovec_t forwarded_for; /* X-Forwarded-For lines joined with ',' (may be truncated: see len) */
    h2o_iovec_t forwarded;     /* Forwarded lines joined with ',' */
    int forwarded_truncated;   /* more than the view holds: the client address is unknown */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    char _buf[2][PE_MAX_FORWARDED];
} pe_auth_view_t;

/** Collects `name: value` into view (names lower-case); call once per header, in order. */
void pe_auth_view_add(pe_auth_view_t *view, const char *name, size_t name_len, const char *value, size_t value_len);
/** Fills view from an h2o request (any HTTP version). */
void pe_auth_view_from_req(h2o_req_t *req, pe_auth_view_t *view);
/** Applies --api-key, --allowed-origin and --trusted-proxy to view. Pure; any thread. */
pe_auth_t pe_auth_check(const pe_config_t *cfg, const pe_auth_view_t *view);
/**
 * The request-head check of bodies (edge/front.c): pe_auth_check, or else (--auth on, origin
 * allowed) an Authorization: Bearer token that verifies and carries a "publish" claim; which
 * channel it may publish to is checked once the channel is known
 * (pe_publish_authorize_channel). Any thread.
 */
pe_auth_t pe_auth_check_publisher(const pe_config_t *cfg, const pe_auth_view_t *view);
/**
 * POST /api/publish's check for one channel: the --api-key rule (pe_auth_check), or a token
 * whose "publish" patterns cover the channel. 0, or the refusal answered (401 unauthorized /
 * token_expired, 403 forbidden) and -1.
 */
int pe_publish_authorize_channel(h2o_req_t *req, const char *channel, size_t len);
/**
 * POST /api/batch's check, before the channels are known: 0 with *id anonymous if the
 * --api-key rule passes (every channel allowed); 0 with *id the token's identity if a Bearer
 * token with a "publish" claim verifies (each item then checked with pe_may_publish); else the
 * refusal answered and -1. *id is released by the caller (pe_identity_dispose).
 */
int pe_publish_authorize_batch(h2o_req_t *req, pe_identity_t *id);
/** Sends the JSON error of a refusal (r != PE_AUTH_OK). */
void pe_auth_refuse(h2o_req_t *req, pe_auth_t r);
/** The publish endpoints' check: 0 if req may publish, else sends the error and returns -1. */
int pe_publish_authorize(h2o_req_t *req);

#endif

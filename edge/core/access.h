/*
 * access.h: identity and access on the request side (docs/auth.md): the token a request
 * carries (Authorization: Bearer, the pushedge_token cookie, the token query parameter), its
 * verification against the current keys, and the subscribe check with its HTTP answers (401
 * unauthorized / token_expired, 403 forbidden). The rules themselves are edge/identity's; this
 * is where they meet h2o requests. With --auth off nothing here reads the request.
 */
#ifndef PE_ACCESS_H
#define PE_ACCESS_H

#include <h2o.h>
#include "edge/core/config.h"
#include "edge/identity/jwt.h"
#include "edge/identity/policy.h"
#include "edge/util/query.h"

/** The name of the token cookie (docs/auth.md "Tokens"). */
#define PE_ACCESS_COOKIE "pushedge_token"

/**
 * Verifies token[0..len) with the process's current keys and the --jwt-* settings. Fills *id on
 * PE_JWT_OK (release with pe_identity_dispose). Any thread.
 */
pe_jwt_result_t pe_access_verify(const pe_config_t *cfg, const char *token, size_t len, pe_identity_t *id);
/**
 * The request's identity: *id zeroed (anonymous) if auth is off or no token came; the token's
 * claims if it verifies. A token that is present but invalid or expired is answered (401) and -1
 * returned: a client that sent a token means to be someone, and must learn it is not.
 */
int pe_access_identify(h2o_req_t *req, pe_identity_t *id);
/** Where a request's token came from (pe_access_last_source). */
typedef enum en_pe_token_source_t { PE_TOKEN_NONE = 0, PE_TOKEN_HEADER, PE_TOKEN_COOKIE, PE_TOKEN_QUERY } pe_token_source_t;
/** The source of the token the request carries (PE_TOKEN_NONE with --auth off or none). */
pe_token_source_t pe_access_token_source(h2o_req_t *req);
/** May id subscribe to channel? (pe_may_subscribe with the configuration's mode and public channels.) */
pe_access_t pe_access_subscribe(const pe_config_t *cfg, const pe_identity_t *id, const char *channel, size_t len);
/** The error code and message of a refusal, for JSON errors and WebSocket error ops. */
const char *pe_access_code(pe_access_t a);
const char *pe_access_message(pe_access_t a);
/**
 * Checks every channel of q (a multi-channel cursor names no channel that is not in q). 0 if
 * all are allowed; else answers the first refusal (401 or 403) and returns -1.
 */
int pe_access_check_query(h2o_req_t *req, const pe_identity_t *id, const pe_sub_query_t *q);
/**
 * The subscribing transports' prologue step: pe_access_identify, then pe_access_check_query.
 * 0 with *id filled (the caller owns it); or the refusal answered, *id released, -1.
 */
int pe_access_authorize_query(h2o_req_t *req, const pe_sub_query_t *q, pe_identity_t *id);

#endif

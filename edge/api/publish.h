/*
 * publish.h: POST /api/publish (docs/protocol.md "Publish"), and the Idempotency-Key reading
 * batch.c shares.
 */
#ifndef PE_PUBLISH_H
#define PE_PUBLISH_H

#include <h2o.h>
#include <jansson.h>

int pe_publish_on_req(h2o_req_t *req);
/** The Idempotency-Key header into *key ({NULL, 0} when absent); 0, or sends 400 (malformed or
 * repeated) and returns -1. */
int pe_publish_idempotency_key(h2o_req_t *req, h2o_iovec_t *key);
/** POST only: 0, or -1 once 405 is sent. */
int pe_publish_require_post(h2o_req_t *req);
/** The body as JSON (any value, numbers as reals, NUL allowed), or NULL once 400 invalid_json
 * is sent. The caller owns the value. */
json_t *pe_publish_parse_body(h2o_req_t *req);
/** The JSON error code of an error pe_ps_publish returned (or gave its callback). */
const char *pe_publish_error_code(const char *err);

#endif

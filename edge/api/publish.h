/*
 * publish.h: POST /api/publish (docs/protocol.md "Publish"), and the Idempotency-Key reading
 * batch.c shares.
 */
#ifndef PE_PUBLISH_H
#define PE_PUBLISH_H

#include <h2o.h>

int pe_publish_on_req(h2o_req_t *req);
/** The Idempotency-Key header into *key ({NULL, 0} when absent); 0, or sends 400 (malformed or
 * repeated) and returns -1. */
int pe_publish_idempotency_key(h2o_req_t *req, h2o_iovec_t *key);

#endif

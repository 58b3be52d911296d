/*
 * batch.h: POST /api/batch (docs/protocol.md "Batch publish").
 */
#ifndef PE_BATCH_H
#define PE_BATCH_H

#include <h2o.h>

int pe_batch_on_req(h2o_req_t *req);

#endif

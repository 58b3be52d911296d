/*
 * ops.h: the operations endpoints (docs/protocol.md "Operations"): health, readiness, metrics,
 * and the demo page and client script.
 */
#ifndef PE_OPS_H
#define PE_OPS_H

#include <h2o.h>

/** Answers path if it is one of ours (returns 0); -1 if not. */
int pe_ops_on_req(h2o_req_t *req, h2o_iovec_t path);

#endif

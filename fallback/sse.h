/*
 * sse.h: GET /sse, the Server-Sent Events transport (docs/protocol.md "Server-Sent Events").
 */
#ifndef PE_SSE_H
#define PE_SSE_H

#include <h2o.h>

int pe_sse_on_req(h2o_req_t *req);

#endif

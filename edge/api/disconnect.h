/*
 * disconnect.h: POST /api/disconnect, revocation (docs/auth.md "Revocation").
 */
#ifndef PE_DISCONNECT_H
#define PE_DISCONNECT_H

#include <h2o.h>

int pe_disconnect_on_req(h2o_req_t *req);

#endif

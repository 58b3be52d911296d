/*
 * ws.h: GET /ws, the WebSocket transport (docs/protocol.md "WebSocket").
 */
#ifndef PE_WS_H
#define PE_WS_H

#include <h2o.h>

/** The upgrade request; echo != 0 serves /ws/echo (--ws-echo, for tests). */
int pe_ws_on_req(h2o_req_t *req, int echo);

#endif

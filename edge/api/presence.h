/*
 * presence.h: the registry endpoints (docs/protocol.md "Presence"): GET /api/presence (a
 * channel's members or their count) and GET /api/users/<sub>/connections (a user's connections
 * on every node).
 */
#ifndef PE_API_PRESENCE_H
#define PE_API_PRESENCE_H

#include <h2o.h>

/** GET /api/presence?channel=NAME[&members=0]. Returns 0 (the request is answered, maybe later). */
int pe_presence_on_req(h2o_req_t *req);
/** 1 if path is /api/users/<sub>/connections (then answered, maybe later), else 0. */
int pe_presence_users_on_req(h2o_req_t *req, h2o_iovec_t path);

#endif

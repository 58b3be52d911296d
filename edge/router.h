/*
 * router.h: the one h2o handler: sends each request to its endpoint (edge/server.c registers it).
 */
#ifndef PE_ROUTER_H
#define PE_ROUTER_H

#include <h2o.h>

/** h2o's on_req for the path "/": every request of every thread comes here. */
int pe_router_on_req(h2o_handler_t *self, h2o_req_t *req);

#endif

/*
 * poll.h: GET /poll, HTTP long-polling (docs/protocol.md "Long-polling").
 */
#ifndef PE_POLL_H
#define PE_POLL_H

#include <h2o.h>
#include "edge/core/thread.h"

/* The hold times a long-poll may ask for below --poll-timeout, in seconds (edge/server.c makes
 * one timeout list of each per thread). */
extern const unsigned pe_poll_short_seconds[PE_POLL_SHORT_STEPS];

int pe_poll_on_req(h2o_req_t *req);

#endif

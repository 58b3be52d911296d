/*
 * server.h: the process's loops: builds the threads and their listeners, starts them, and
 * drains or stops them on a signal (edge/main.c calls these in order).
 */
#ifndef PE_SERVER_H
#define PE_SERVER_H

#include "pubsub/pubsub.h"
#include "edge/core/config.h"
#include "edge/core/thread.h"

/**
 * Registers the router, reads the TLS files, opens the listeners of every thread (so a bind
 * error stops the start). Returns 0; 2 if the TLS files cannot be used (a configuration error);
 * 1 on other errors (a listener that cannot be opened). The reason is printed to stderr.
 */
int pe_server_init(pe_server_t *server, const pe_config_t *cfg, pe_ps_engine_t *engine);
/** Starts the loops; returns once every loop is set up. */
int pe_server_start(pe_server_t *server);
/** Asks every thread to drain (force == 0) or stop at once (force == 1). Thread-safe. */
void pe_server_notify(pe_server_t *server, int force);
/** Waits for every thread to leave its loop. The threads never end (they park, see
 * thread_main): the caller's return from main ends the process. */
void pe_server_join(pe_server_t *server);

#endif

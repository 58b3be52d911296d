/*
 * conn_limit.h: the node's connection and held-poll accounting (--max-connections,
 * --max-connections-per-ip, --max-held-polls), shared by the loops.
 */
#ifndef PE_CONN_LIMIT_H
#define PE_CONN_LIMIT_H

#include <pthread.h>
#include <h2o.h>
#include "edge/core/config.h"

/* Why a connection or request was refused for want of room (pushedge_rejected_total{reason}). */
typedef enum en_pe_reject_t {
    PE_REJECT_CONNECTIONS = 0,
    PE_REJECT_CONNECTIONS_PER_IP,
    PE_REJECT_HELD_POLLS,
    PE_REJECT_MAX
} pe_reject_t;
extern const char *const pe_reject_names[PE_REJECT_MAX];

typedef struct st_pe_ip_entry_t pe_ip_entry_t;
typedef struct st_pe_limits_t pe_limits_t;
typedef struct st_pe_refusal_t {
    pe_limits_t *limits;
    pe_reject_t reason;
} pe_refusal_t;

/**
 * The node's connection and held-poll accounting, shared by the threads: the counters are
 * atomics, the per-address table has its own lock. Set up before the loops start.
 */
struct st_pe_limits_t {
    size_t max_connections; /* effective --max-connections */
    size_t slack;           /* refused with an answer up to max_connections + slack; closed past it */
    size_t max_per_ip;      /* 0: off */
    size_t max_held_polls;
    size_t open;                      /* atomic: accepted connections whose socket is not closed yet */
    size_t held_polls;                /* atomic */
    uint64_t rejected[PE_REJECT_MAX]; /* atomic */
    pe_refusal_t refusals[PE_REJECT_MAX];
    pthread_mutex_t ip_lock;
    pe_ip_entry_t **ip_buckets; /* PE_PER_IP_BUCKETS chains; NULL when max_per_ip is 0 */
};

/** Derives the effective limits from cfg and RLIMIT_NOFILE (call after raising it); logs them. */
void pe_limits_init(pe_limits_t *limits, const pe_config_t *cfg, unsigned threads);
/**
 * Counts a socket just accepted and installs its close hook. Returns 0 to serve it, 1 to serve
 * it only with refusals (pe_limits_refuse_request answers its requests), -1 to close it now
 * (nothing was counted; the caller closes it).
 */
int pe_limits_on_accept(pe_limits_t *limits, h2o_socket_t *sock);
/** For a request on a connection refused at accept: answers 503 and returns 1; else returns 0. */
int pe_limits_refuse_request(h2o_req_t *req);
/** Counts a long-poll about to be held: 0, or -1 (counted as a rejection) when the node is full. */
int pe_limits_hold_poll(pe_limits_t *limits);
void pe_limits_release_poll(pe_limits_t *limits);

#endif

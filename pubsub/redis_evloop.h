/*
 * redis_evloop.h: drives a hiredis asynchronous context from an h2o evloop (how, and why that
 * way, is in redis_evloop.c). Nothing else touches ac->ev. Private to pubsub/.
 */
#ifndef PE_REDIS_EVLOOP_H
#define PE_REDIS_EVLOOP_H

struct redisAsyncContext;
struct st_h2o_evloop_t;

/**
 * Attaches ac (freshly connected with redisAsyncConnect, ac->err checked) to loop: hiredis reads
 * and writes from then on through loop's socket events. Returns 0, or -1 if ac is already
 * attached. The adapter is freed by hiredis's cleanup hook (redisAsyncFree / disconnect), which
 * also closes the socket through h2o, so it is safe from inside a hiredis callback.
 */
int pe_redis_evloop_attach(struct redisAsyncContext *ac, struct st_h2o_evloop_t *loop);

#endif

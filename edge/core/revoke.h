/*
 * revoke.h: revocation (POST /api/disconnect, docs/auth.md "Revocation"): a user's connections,
 * or its subscriptions to the channels of a pattern, ended on every thread of this process and,
 * through the engine's control channel, of every process sharing the engine.
 */
#ifndef PE_REVOKE_H
#define PE_REVOKE_H

#include <stddef.h>
#include "edge/core/thread.h"

/**
 * Registers thr's revocation receiver on its loop and the node's control-message callback; on
 * the thread's loop, after its node exists.
 */
void pe_revoke_thread_init(pe_thread_t *thr);
/**
 * Called on thr's loop once every thread of the process applied the revocation: count is the
 * number of streams (connections, held polls) that lost access.
 */
typedef void (*pe_revoke_done_cb)(void *ctx, size_t count);
/**
 * Applies r (copied) on every thread of this process, each on its own loop, and broadcasts it
 * to the other processes sharing the engine. done(ctx, count) runs once on thr's loop, never
 * from inside this call. Returns NULL, or pe_ps_err_unavailable when the broadcast could not be
 * sent (the local threads are still revoked, and done still runs).
 */
const char *pe_revoke_start(pe_thread_t *thr, const pe_revocation_t *r, pe_revoke_done_cb done, void *ctx);
/**
 * 1 if s[0..len) may be a revocation's reason: 1..PE_REVOKE_REASON_MAX printable ASCII
 * characters without '"' or '\\', so it goes into a close frame, an SSE event and JSON as is.
 */
int pe_revoke_reason_is_valid(const char *s, size_t len);
/** Applies r to thr's own streams now; returns how many lost access. On thr's loop only. */
size_t pe_revoke_apply(pe_thread_t *thr, const pe_revocation_t *r);

#endif

/*
 * revoke.c: revocation across threads and processes (revoke.h).
 *
 * Share-nothing: a connection is touched only by its own loop. A revocation is therefore a
 * job posted to every loop's receiver (thr->revoke, an h2o_multithread queue: a mutex-guarded
 * list and a wake-up), where each loop walks its own stream registry (the one draining walks)
 * and counts what it cut; the last loop to finish posts the job back to the loop that asked,
 * which answers. The job is reference-counted: one reference per message in flight.
 *
 * Other processes: the text {"user":..,"channel":..,"reason":..} goes out on the engine's
 * control channel (pe_ps_control_publish: a Redis PUBLISH every process's every thread is
 * subscribed to; nothing with the memory engine, which has no other process). Each thread of
 * another process receives it on its own link and posts it to its own receiver, so it is
 * applied from the loop rather than from inside the Redis reply callback. The process that sent
 * it is skipped by the engine (its threads were posted the job directly, and counted).
 *
 * A revocation ends what is open now. It does not deny a token: a client whose token still
 * allows a channel may reconnect and subscribe again (docs/auth.md says so, and what to do).
 */
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "pubsub/json_text.h"
#include "edge/core/revoke.h"
#include "edge/identity/policy.h"
#include "edge/util/log.h"

typedef struct st_job_t {
    size_t refcnt;    /* atomic: messages in flight */
    size_t remaining; /* atomic: threads still to apply it */
    size_t count;     /* atomic: streams that lost access */
    pe_thread_t *origin;
    pe_revoke_done_cb done; /* NULL: nobody waits (a revocation from another process) */
    void *ctx;
    pe_revocation_t r; /* strings point into buf */
    char buf[];
} job_t;

typedef struct st_job_msg_t {
    h2o_multithread_message_t super;
    job_t *job;
    int answer; /* 1: the job is done, for its origin; 0: apply it here */
} job_msg_t;

static job_t *
job_new(const pe_revocation_t *r, size_t refs)
{
    job_t *job = pe_calloc(1, offsetof(job_t, buf) + r->user_len + r->pattern_len + r->reason_len + 3);
    char *p = job->buf;
    job->refcnt = refs;
    job->r.user = memcpy(p, r->user, r->user_len);
    job->r.user_len = r->user_len;
    p += r->user_len + 1;
    if (r->pattern != NULL) {
        job->r.pattern = memcpy(p, r->pattern, r->pattern_len);
        job->r.pattern_len = r->pattern_len;
    }
    p += r->pattern_len + 1;
    job->r.reason = memcpy(p, r->reason, r->reason_len);
    job->r.reason_len = r->reason_len;
    return job;
}

static void
job_release(job_t *job)
{
    if (__atomic_sub_fetch(&job->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
        pe_free(job);
}

static void
post(pe_thread_t *to, job_t *job, int answer)
{
    job_msg_t *m = pe_calloc(1, sizeof(*m));
    m->job = job;
    m->answer = answer;
    h2o_multithread_send_message(&to->revoke, &m->super);
}

int
pe_revoke_reason_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > PE_REVOKE_REASON_MAX)
        return 0;
    for (size_t i = 0; i != len; ++i)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

size_t
pe_revoke_apply(pe_thread_t *thr, const pe_revocation_t *r)
{
    size_t n = 0;
    /* A stream's revoke never frees it and never unlinks another (it only changes states and
     * schedules its answer or flush), so the next link stays valid. */
    for (h2o_linklist_t *l = thr->streams.next, *next; l != &thr->streams; l = next) {
        next = l->next;
        pe_stream_t *stream = H2O_STRUCT_FROM_MEMBER(pe_stream_t, _link, l);
        if (stream->revoke != NULL)
            n += (size_t)stream->revoke(stream, r);
    }
    return n;
}

static void
on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pe_thread_t *thr = H2O_STRUCT_FROM_MEMBER(pe_thread_t, revoke, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        job_msg_t *m = H2O_STRUCT_FROM_MEMBER(job_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        job_t *job = m->job;
        int answer = m->answer;
        pe_free(m);
        if (answer) {
            job->done(job->ctx, __atomic_load_n(&job->count, __ATOMIC_ACQUIRE));
        } else {
            size_t n = pe_revoke_apply(thr, &job->r);
            __atomic_add_fetch(&job->count, n, __ATOMIC_ACQ_REL);
            if (__atomic_sub_fetch(&job->remaining, 1, __ATOMIC_ACQ_REL) == 0 && job->done != NULL) {
                __atomic_add_fetch(&job->refcnt, 1, __ATOMIC_RELAXED); /* the answer's */
                post(job->origin, job, 1);
            }
        }
        job_release(job);
    }
}

/* A revocation from another process, on this thread's node (inside the engine's callback):
 * parsed here, applied from the loop. */
static void
on_control(void *ctx, const char *text, size_t len)
{
    pe_thread_t *thr = ctx;
    json_error_t jerr;
    json_t *root = pe_json_load_untrusted(text, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *user = json_object_get(root, "user"), *channel = json_object_get(root, "channel"),
           *reason = json_object_get(root, "reason");
    /* Checked as the endpoint checks them: the reason is written into SSE events unescaped. */
    if (json_is_string(user) && json_string_length(user) != 0 && json_string_length(user) <= PE_POLICY_MAX_SUB &&
        json_is_string(reason) && pe_revoke_reason_is_valid(json_string_value(reason), json_string_length(reason)) &&
        (channel == NULL || json_is_string(channel)) &&
        (channel == NULL || pe_pattern_is_valid(json_string_value(channel), json_string_length(channel), 0))) {
        pe_revocation_t r = {json_string_value(user),
                             json_string_length(user),
                             channel != NULL ? json_string_value(channel) : NULL,
                             channel != NULL ? json_string_length(channel) : 0,
                             json_string_value(reason),
                             json_string_length(reason)};
        job_t *job = job_new(&r, 1);
        job->remaining = 1;
        job->origin = thr;
        post(thr, job, 0);
    } else {
        static pe_log_rate_t rate;
        pe_log_ratelimited(&rate, PE_LOG_WARN, "edge/revoke", "thread %u: a malformed control message was ignored", thr->index);
    }
    json_decref(root);
}

void
pe_revoke_thread_init(pe_thread_t *thr)
{
    h2o_multithread_register_receiver(thr->ctx.queue, &thr->revoke, on_messages);
    pe_ps_node_set_control(thr->node, on_control, thr);
}

const char *
pe_revoke_start(pe_thread_t *thr, const pe_revocation_t *r, pe_revoke_done_cb done, void *ctx)
{
    pe_server_t *server = thr->server;
    job_t *job = job_new(r, server->num_threads);
    job->remaining = server->num_threads;
    job->origin = thr;
    job->done = done;
    job->ctx = ctx;
    for (unsigned t = 0; t != server->num_threads; ++t)
        post(&server->threads[t], job, 0);

    json_t *msg = json_pack("{s:s%,s:s%}", "user", r->user, r->user_len, "reason", r->reason, r->reason_len);
    if (r->pattern != NULL)
        json_object_set_new(msg, "channel", json_stringn(r->pattern, r->pattern_len));
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    const char *err = pe_ps_control_publish(thr->node, text, strlen(text));
    free(text);
    return err;
}

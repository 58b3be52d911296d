/*
 * thread.c: the registry of a thread's long-lived streams (SSE, WebSocket, held long-polls),
 * which draining walks to tell each client to reconnect elsewhere, and the transport names the
 * counters are labelled with, with the disconnect reasons and the histograms' bucket bounds.
 */
#include "edge/core/thread.h"
#include "edge/core/http.h"

const char *const pe_transport_names[PE_TRANSPORT_MAX] = {"sse", "ws", "poll"};
/* PE_END_NONE never reaches a counter (the core decides a reason before it counts). */
const char *const pe_end_reason_names[PE_END_MAX] = {"none",  "client_left", "slow_consumer", "heartbeat_timeout",
                                                     "drain", "auth",        "limit",         "error"};
/* From a quarter millisecond (loopback fan-out) to ten seconds (a subscriber catching its breath
 * behind a backlog): the range an alert on p99 needs. */
const uint64_t pe_latency_bounds_us[PE_LATENCY_BUCKETS] = {250,    500,    1000,   2500,    5000,    10000,   25000,   50000,
                                                           100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
/* A second (a refused or broken client) to a day (a dashboard left open). */
const uint64_t pe_duration_bounds_ms[PE_DURATION_BUCKETS] = {1000,    10000,   60000,    300000,   900000,  1800000,
                                                             3600000, 7200000, 21600000, 43200000, 86400000};

void
pe_stream_register(pe_thread_t *thr, pe_stream_t *stream)
{
    h2o_linklist_insert(&thr->streams, &stream->_link);
    /* One that registers while the loop drains (its request was under way when the drain
     * began) is told by the paced drain's ticks, which stop once the list is empty. */
    if (thr->draining && thr->drain_tick.cb != NULL && !h2o_timeout_is_linked(&thr->drain_tick))
        h2o_timeout_link(thr->loop, &thr->drain_tick_timeout, &thr->drain_tick);
}

void
pe_stream_unregister(pe_stream_t *stream)
{
    if (h2o_linklist_is_linked(&stream->_link))
        h2o_linklist_unlink(&stream->_link);
}

unsigned
pe_stream_drain_hint(int paced)
{
    if (paced)
        return pe_rand() % PE_DRAIN_HINT_JITTER_MS;
    return PE_DRAIN_HINT_UNPACED_MIN_MS + pe_rand() % PE_DRAIN_HINT_UNPACED_SPREAD_MS;
}

size_t
pe_stream_drain_some(pe_thread_t *thr, size_t n, int paced)
{
    size_t told = 0;
    /* Always the head: the stream told leaves thr->streams before its drain() runs, and a
     * drain() may unregister it (or, through a close, others) without breaking the walk. */
    while (told != n && !h2o_linklist_is_empty(&thr->streams)) {
        pe_stream_t *stream = H2O_STRUCT_FROM_MEMBER(pe_stream_t, _link, thr->streams.next);
        h2o_linklist_unlink(&stream->_link);
        h2o_linklist_insert(&thr->drained_streams, &stream->_link);
        stream->drain_hint_ms = pe_stream_drain_hint(paced);
        ++told;
        stream->drain(stream);
    }
    return told;
}

void
pe_stream_drain_all(pe_thread_t *thr)
{
    pe_stream_drain_some(thr, SIZE_MAX, 0);
}

size_t
pe_stream_count(pe_thread_t *thr)
{
    size_t n = 0;
    for (h2o_linklist_t *l = thr->streams.next; l != &thr->streams; l = l->next)
        ++n;
    return n;
}

int
pe_stream_none_open(pe_thread_t *thr)
{
    return h2o_linklist_is_empty(&thr->streams) && h2o_linklist_is_empty(&thr->drained_streams);
}

/*
 * thread.c: the registry of a thread's long-lived streams (SSE, WebSocket, held long-polls),
 * which draining walks to tell each client to reconnect elsewhere, and the transport names the
 * counters are labelled with.
 */
#include "edge/core/thread.h"

const char *const pe_transport_names[PE_TRANSPORT_MAX] = {"sse", "ws", "poll"};

void
pe_stream_register(pe_thread_t *thr, pe_stream_t *stream)
{
    h2o_linklist_insert(&thr->streams, &stream->_link);
}

void
pe_stream_unregister(pe_stream_t *stream)
{
    if (h2o_linklist_is_linked(&stream->_link))
        h2o_linklist_unlink(&stream->_link);
}

void
pe_stream_drain_all(pe_thread_t *thr)
{
    h2o_linklist_t *node = thr->streams.next;
    while (node != &thr->streams) {
        h2o_linklist_t *next = node->next;
        pe_stream_t *stream = H2O_STRUCT_FROM_MEMBER(pe_stream_t, _link, node);
        stream->drain(stream);
        node = next;
    }
}

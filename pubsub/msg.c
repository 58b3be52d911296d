/*
 * msg.c: immutable, reference-counted messages with their shared encodings.
 *
 * One allocation holds the struct and every byte a transport sends for the message: the
 * envelope and the SSE frame. They are built once here, at publish time, and shared by every
 * subscriber on every thread by reference; nothing is encoded per subscriber. The envelope is
 * assembled from pieces instead of re-serialising with jansson, so the published JSON value is
 * delivered exactly as it was sent (jansson would print 0.1 as 0.10000000000000001).
 */
#include <stdio.h>
#include <string.h>
#include "alloc.h"
#include "json_text.h"
#include "pubsub.h"

#define ENV_PREFIX "{\"channel\":\""
#define ENV_ID "\",\"id\":\""
#define ENV_DATA "\",\"data\":"
#define ENV_SUFFIX "}"
#define SSE_ID "id: "
#define SSE_DATA "\ndata: "
#define SSE_END "\n\n"

pe_msg_t *
pe_msg_new(pe_id_t id, const char *channel, size_t channel_len, const char *data, size_t data_len)
{
    char id_str[PE_ID_MAXLEN + 1];
    size_t id_len = pe_id_format(id, id_str);
    /* Upper bound of the envelope: the minified data is never longer than the input. */
    size_t env_max = sizeof(ENV_PREFIX) - 1 + channel_len + sizeof(ENV_ID) - 1 + id_len + sizeof(ENV_DATA) - 1 + data_len +
                     sizeof(ENV_SUFFIX) - 1;
    size_t sse_max = sizeof(SSE_ID) - 1 + id_len + sizeof(SSE_DATA) - 1 + env_max + sizeof(SSE_END) - 1;

    /* Layout: struct | channel NUL | data | sse frame (which contains the envelope). */
    pe_msg_t *msg = pe_malloc(sizeof(*msg) + channel_len + 1 + data_len + sse_max + 1);
    char *p = (char *)(msg + 1);

    msg->id = id;
    memcpy(msg->id_str, id_str, id_len + 1);
    msg->id_len = id_len;
    __atomic_store_n(&msg->_refcnt, 1, __ATOMIC_RELAXED);
    memset(msg->_encodings, 0, sizeof(msg->_encodings));
    memset(msg->_encodings, 0, sizeof(msg->_encodings));

    memcpy(p, channel, channel_len);
    p[channel_len] = '\0';
    msg->channel = p;
    msg->channel_len = channel_len;
    p += channel_len + 1;

    msg->data = p;
    msg->data_len = pe_json_minify(data, data_len, p);
    p += data_len;

    char *sse = p;
#define APPEND(s, n)                                                                                                               \
    do {                                                                                                                           \
        memcpy(p, (s), (n));                                                                                                       \
        p += (n);                                                                                                                  \
    } while (0)
    APPEND(SSE_ID, sizeof(SSE_ID) - 1);
    APPEND(id_str, id_len);
    msg->sse_data_off = (size_t)(p - sse) + 1; /* skip the '\n' that ends the id line */
    APPEND(SSE_DATA, sizeof(SSE_DATA) - 1);
    char *env = p;
    APPEND(ENV_PREFIX, sizeof(ENV_PREFIX) - 1);
    APPEND(channel, channel_len);
    APPEND(ENV_ID, sizeof(ENV_ID) - 1);
    APPEND(id_str, id_len);
    APPEND(ENV_DATA, sizeof(ENV_DATA) - 1);
    APPEND(msg->data, msg->data_len);
    APPEND(ENV_SUFFIX, sizeof(ENV_SUFFIX) - 1);
    msg->envelope = env;
    msg->envelope_len = (size_t)(p - env);
    APPEND(SSE_END, sizeof(SSE_END) - 1);
#undef APPEND
    *p = '\0';
    msg->sse_frame = sse;
    msg->sse_frame_len = (size_t)(p - sse);
    return msg;
}

void
pe_msg_release(pe_msg_t *msg)
{
    if (__atomic_sub_fetch(&msg->_refcnt, 1, __ATOMIC_ACQ_REL) == 0) {
        for (unsigned i = 0; i != PE_MSG_NUM_ENCODINGS; ++i)
            pe_free(msg->_encodings[i]);
        pe_free(msg);
    }
}

const pe_msg_encoding_t *
pe_msg_encoding(pe_msg_t *msg, unsigned slot, pe_msg_encoding_t *(*build)(const pe_msg_t *msg))
{
    pe_msg_encoding_t **where = (pe_msg_encoding_t **)&msg->_encodings[slot];
    pe_msg_encoding_t *enc = __atomic_load_n(where, __ATOMIC_ACQUIRE);
    if (enc != NULL)
        return enc;
    pe_msg_encoding_t *mine = build(msg), *expected = NULL;
    if (__atomic_compare_exchange_n(where, &expected, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return mine;
    /* Another thread built it first: use theirs, so every subscriber shares one copy. */
    pe_free(mine);
    return expected;
}

/*
 * msg.c: immutable, reference-counted messages and their envelope.
 *
 * One allocation holds the struct, the channel name, the minified data and the envelope
 * ({"channel":"..","id":"..","data":..}), the JSON every transport carries. The envelope is
 * assembled from pieces instead of re-serialising with jansson, so the published JSON value is
 * delivered exactly as it was sent (jansson would print 0.1 as 0.10000000000000001). What a
 * transport sends (an SSE event, a WebSocket frame) is built from the envelope by the layer
 * above, once per message, into the message's cache slots (pe_msg_encoding): pubsub stores and
 * frees them and knows nothing of their format.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "alloc.h"
#include "json_text.h"
#include "pubsub.h"

#define ENV_PREFIX "{\"channel\":\""
#define ENV_ID "\",\"id\":\""
#define ENV_DATA "\",\"data\":"
#define ENV_SUFFIX "}"

pe_msg_t *
pe_msg_new(pe_id_t id, const char *channel, size_t channel_len, const char *data, size_t data_len)
{
    char id_str[PE_ID_MAXLEN + 1];
    size_t id_len = pe_id_format(id, id_str);
    /* Upper bound of the envelope: the minified data is never longer than the input. */
    size_t env_max = sizeof(ENV_PREFIX) - 1 + channel_len + sizeof(ENV_ID) - 1 + id_len + sizeof(ENV_DATA) - 1 + data_len +
                     sizeof(ENV_SUFFIX) - 1;

    /* Layout: struct | channel NUL | data | envelope NUL. */
    pe_msg_t *msg = pe_malloc(sizeof(*msg) + channel_len + 1 + data_len + env_max + 1);
    char *p = (char *)(msg + 1);

    msg->id = id;
    memcpy(msg->id_str, id_str, id_len + 1);
    msg->id_len = id_len;
    msg->accepted_us = 0;
    __atomic_store_n(&msg->_refcnt, 1, __ATOMIC_RELAXED);
    memset(msg->_encodings, 0, sizeof(msg->_encodings));
    msg->kind = PE_MSG_DATA;

    memcpy(p, channel, channel_len);
    p[channel_len] = '\0';
    msg->channel = p;
    msg->channel_len = channel_len;
    p += channel_len + 1;

    msg->data = p;
    msg->data_len = pe_json_minify(data, data_len, p);
    p += data_len;

    char *env = p;
#define APPEND(s, n)                                                                                                               \
    do {                                                                                                                           \
        memcpy(p, (s), (n));                                                                                                       \
        p += (n);                                                                                                                  \
    } while (0)
    APPEND(ENV_PREFIX, sizeof(ENV_PREFIX) - 1);
    APPEND(channel, channel_len);
    APPEND(ENV_ID, sizeof(ENV_ID) - 1);
    APPEND(id_str, id_len);
    APPEND(ENV_DATA, sizeof(ENV_DATA) - 1);
    APPEND(msg->data, msg->data_len);
    APPEND(ENV_SUFFIX, sizeof(ENV_SUFFIX) - 1);
#undef APPEND
    *p = '\0';
    msg->envelope = env;
    msg->envelope_len = (size_t)(p - env);
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

uint64_t
pe_msg_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

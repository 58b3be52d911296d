/*
 * Unit tests for edge/wire/wire.c, the subscriber-facing byte formats built from a message's
 * envelope: the SSE event (and its id-less tail for multi-channel streams), the WebSocket
 * message frame plain and deflated (header lengths at the 125/126 and 65535/65536 boundaries,
 * the payload inflating back to the op text, the uncompressed op text equal to the envelope with
 * the op member first), the long-poll body, the small SSE helpers, and the sharing rules: each
 * encoding is built once per message (the same bytes on every call, the frames-built counter
 * moving once) and freed with the message (LeakSanitizer checks that in the test build).
 *
 * Not covered here: queueing and writing (edge/core/conn.c, tests/unit/test_conn.c and the e2e
 * suites), and the permessage-deflate algorithm itself (test_ws_deflate.c).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tap.h"
#include "pubsub/alloc.h"
#include "edge/wire/wire.h"
#include "edge/wire/ws_deflate.h"
#include "edge/wire/ws_frame.h"

static pe_msg_t *
make_msg(uint64_t ms, uint64_t seq, const char *channel, const char *data)
{
    return pe_msg_new((pe_id_t){ms, seq}, channel, strlen(channel), data, strlen(data));
}

static void
test_envelope(void)
{
    pe_msg_t *msg = make_msg(1700000000000, 3, "news", "{ \"a\" : [1, 2.5, \"x y\"] }");
    static const char want[] = "{\"channel\":\"news\",\"id\":\"1700000000000-3\",\"data\":{\"a\":[1,2.5,\"x y\"]}}";
    TAP_EQ_MEM(msg->envelope, msg->envelope_len, want, sizeof(want) - 1, "the envelope, data minified");
    TAP_EQ_INT(msg->envelope[msg->envelope_len], '\0', "NUL-terminated");
    pe_msg_release(msg);
}

static void
test_sse(void)
{
    pe_msg_t *msg = make_msg(5, 0, "a.b", "42");
    const pe_msg_encoding_t *ev = pe_wire_sse_event(msg);
    static const char want[] = "id: 5-0\ndata: {\"channel\":\"a.b\",\"id\":\"5-0\",\"data\":42}\n\n";
    TAP_EQ_MEM(ev->data, ev->len, want, sizeof(want) - 1, "the event");
    size_t off = pe_wire_sse_data_off(msg);
    static const char tail[] = "data: {\"channel\":\"a.b\",\"id\":\"5-0\",\"data\":42}\n\n";
    TAP_EQ_MEM(ev->data + off, ev->len - off, tail, sizeof(tail) - 1, "without its id line");
    TAP_EQ_PTR(pe_wire_sse_event(msg), ev, "built once: the same bytes on the second call");

    char line[PE_WIRE_SSE_ID_LINE_MAX];
    size_t n = pe_wire_sse_id_line(line, "a:1-0,b:2-3", 11);
    TAP_EQ_MEM(line, n, "id: a:1-0,b:2-3\n", 16, "an id line");
    char retry[PE_WIRE_SSE_RETRY_MAX];
    n = pe_wire_sse_retry(retry, 4999);
    TAP_EQ_MEM(retry, n, "retry: 4999\n\n", 13, "a retry line");
    n = pe_wire_sse_retry(retry, 4294967295u);
    TAP_EQ_MEM(retry, n, "retry: 4294967295\n\n", 19, "the longest retry line fits");
    pe_msg_release(msg);
}

/* Checks a server frame: FIN, the opcode, RSV1, the shortest length form; returns the payload. */
static const uint8_t *
check_frame(const pe_msg_encoding_t *f, int rsv1, size_t *payload_len, const char *what)
{
    const uint8_t *p = (const uint8_t *)f->data;
    TAP_EQ_INT(p[0], 0x80 | (rsv1 ? 0x40 : 0) | PE_WS_OP_TEXT, "%s: FIN, RSV1 %d, text", what, rsv1);
    size_t hlen, len = p[1] & 0x7f;
    TAP_EQ_INT(p[1] & 0x80, 0, "%s: not masked", what);
    if (len == 126) {
        len = (size_t)p[2] << 8 | p[3];
        hlen = 4;
        TAP_OK(len >= 126, "%s: 16-bit length only when needed", what);
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i != 8; ++i)
            len = len << 8 | p[2 + i];
        hlen = 10;
        TAP_OK(len > 65535, "%s: 64-bit length only when needed", what);
    } else {
        hlen = 2;
    }
    TAP_EQ_UINT(f->len, hlen + len, "%s: header + payload", what);
    *payload_len = len;
    return p + hlen;
}

static void
test_ws_sizes(void)
{
    /* Payload lengths around the header's length forms: the op text is the envelope plus 15. */
    static const size_t sizes[] = {10, 124, 125, 126, 127, 65535, 65536, 70000};
    for (size_t i = 0; i != sizeof(sizes) / sizeof(sizes[0]); ++i) {
        /* A JSON string of the size that makes the op text exactly sizes[i] bytes long. */
        pe_msg_t *probe = make_msg(1, 1, "c", "\"\"");
        size_t base = pe_wire_ws_text_len(probe);
        pe_msg_release(probe);
        if (sizes[i] < base)
            continue;
        size_t fill = sizes[i] - base;
        char *data = malloc(fill + 3);
        data[0] = '"';
        memset(data + 1, 'x', fill);
        data[fill + 1] = '"';
        data[fill + 2] = '\0';
        pe_msg_t *msg = make_msg(1, 1, "c", data);
        TAP_EQ_UINT(pe_wire_ws_text_len(msg), sizes[i], "op text of %zu bytes", sizes[i]);
        size_t len;
        const uint8_t *payload = check_frame(pe_wire_ws_message(msg, 0), 0, &len, "plain");
        TAP_EQ_UINT(len, sizes[i], "plain frame of %zu", sizes[i]);
        static const char head[] = "{\"op\":\"message\",\"channel\":\"c\",\"id\":\"1-1\",\"data\":\"";
        TAP_OK(len > sizeof(head) && memcmp(payload, head, sizeof(head) - 1) == 0 && memcmp(payload + len - 2, "\"}", 2) == 0,
               "plain payload of %zu is the op", sizes[i]);
        pe_msg_release(msg);
        free(data);
    }
}

static void
test_ws_frames(void)
{
    uint64_t plain0 = pe_ws_frames_built[PE_WIRE_WS_KIND_PLAIN], deflate0 = pe_ws_frames_built[PE_WIRE_WS_KIND_DEFLATE];
    pe_msg_t *msg = make_msg(7, 2, "room-1", "{\"text\":\"hello hello hello hello hello hello hello\",\"n\":[1,2,3]}");
    static const char op[] = "{\"op\":\"message\",\"channel\":\"room-1\",\"id\":\"7-2\",\"data\":{\"text\":\"hello hello hello "
                             "hello hello hello hello\","
                             "\"n\":[1,2,3]}}";
    TAP_EQ_UINT(pe_wire_ws_text_len(msg), sizeof(op) - 1, "the op text's length");

    const pe_msg_encoding_t *plain = pe_wire_ws_message(msg, 0);
    size_t len;
    const uint8_t *payload = check_frame(plain, 0, &len, "plain");
    TAP_EQ_MEM(payload, len, op, sizeof(op) - 1, "the plain payload is the envelope with the op first");
    TAP_EQ_PTR(pe_wire_ws_message(msg, 0), plain, "the plain frame is built once");
    TAP_EQ_UINT(pe_ws_frames_built[PE_WIRE_WS_KIND_PLAIN] - plain0, 1, "counted once");

    const pe_msg_encoding_t *z = pe_wire_ws_message(msg, 1);
    payload = check_frame(z, 1, &len, "deflate");
    uint8_t *out;
    size_t out_len;
    TAP_EQ_INT(pe_ws_inflate_message(payload, len, 1 << 20, &out, &out_len), 0, "the deflated payload inflates");
    TAP_EQ_MEM(out, out_len, op, sizeof(op) - 1, "to the op text");
    pe_free(out);
    TAP_EQ_PTR(pe_wire_ws_message(msg, 1), z, "the deflated frame is built once");
    TAP_EQ_UINT(pe_ws_frames_built[PE_WIRE_WS_KIND_DEFLATE] - deflate0, 1, "counted once");
    TAP_OK(z != plain, "the two kinds have their own slots");
    TAP_EQ_PTR(pe_wire_ws_message(msg, 0), plain, "the plain one is still there");

    /* The SSE event of the same message shares its envelope bytes. */
    const pe_msg_encoding_t *ev = pe_wire_sse_event(msg);
    TAP_OK(ev->len > msg->envelope_len && memcmp(ev->data + pe_wire_sse_data_off(msg) + 6, msg->envelope, msg->envelope_len) == 0,
           "the SSE event carries the same envelope");
    pe_msg_release(msg); /* frees every slot (LeakSanitizer) */
}

static void
test_poll_body(void)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    pe_msg_t *msgs[2] = {make_msg(1, 0, "a", "1"), make_msg(2, 0, "b", "\"two\"")};
    char *gaps[2] = {"b", "c-d"};
    h2o_iovec_t bufs[2 * 2 + 2];
    size_t total, n = pe_wire_poll_body(&pool, "a:1-0,b:2-0", 11, msgs, 2, gaps, 2, bufs, &total);
    char body[512];
    size_t len = 0;
    for (size_t i = 0; i != n; ++i) {
        memcpy(body + len, bufs[i].base, bufs[i].len);
        len += bufs[i].len;
    }
    static const char want[] = "{\"cursor\":\"a:1-0,b:2-0\",\"messages\":[{\"channel\":\"a\",\"id\":\"1-0\",\"data\":1},"
                               "{\"channel\":\"b\",\"id\":\"2-0\",\"data\":\"two\"}],\"gaps\":[\"b\",\"c-d\"]}";
    TAP_EQ_MEM(body, len, want, sizeof(want) - 1, "two messages and two gaps");
    TAP_EQ_UINT(total, len, "the total is the body's length");
    TAP_EQ_PTR(bufs[1].base, msgs[0]->envelope, "envelopes are by reference");

    n = pe_wire_poll_body(&pool, "", 0, NULL, 0, NULL, 0, bufs, &total);
    len = 0;
    for (size_t i = 0; i != n; ++i) {
        memcpy(body + len, bufs[i].base, bufs[i].len);
        len += bufs[i].len;
    }
    static const char empty[] = "{\"cursor\":\"\",\"messages\":[],\"gaps\":[]}";
    TAP_EQ_MEM(body, len, empty, sizeof(empty) - 1, "an empty answer");
    pe_msg_release(msgs[0]);
    pe_msg_release(msgs[1]);
    h2o_mem_clear_pool(&pool);
}

/* A presence event (PE_MSG_JOIN / LEAVE): its SSE event, WebSocket op and long-poll text. */
static void
test_presence(void)
{
    static const char data[] = "{\"channel\":\"room\",\"client\":\"00ff.1.7\",\"user\":\"al\\\"ice\"}";
    pe_msg_t *msg = make_msg(9, 2, "room", data);
    msg->kind = PE_MSG_JOIN;
    const pe_msg_encoding_t *ev = pe_wire_sse_event(msg);
    static const char want[] =
        "id: 9-2\nevent: join\ndata: {\"channel\":\"room\",\"client\":\"00ff.1.7\",\"user\":\"al\\\"ice\"}\n\n";
    TAP_EQ_MEM(ev->data, ev->len, want, sizeof(want) - 1, "the SSE join event, id first");
    size_t off = pe_wire_sse_data_off(msg);
    TAP_EQ_MEM(ev->data + off, ev->len - off, want + 8, sizeof(want) - 1 - 8, "without its id line (multi-channel streams)");
    static const char op[] = "{\"op\":\"join\",\"id\":\"9-2\",\"channel\":\"room\",\"client\":\"00ff.1.7\",\"user\":\"al\\\"ice\"}";
    char text[256];
    size_t n = pe_wire_presence_text(msg, text);
    TAP_EQ_MEM(text, n, op, sizeof(op) - 1, "the op text");
    TAP_EQ_INT(pe_wire_ws_text_len(msg), sizeof(op) - 1, "its length");
    const pe_msg_encoding_t *frame = pe_wire_ws_message(msg, 0);
    TAP_EQ_INT(frame->len, 2 + sizeof(op) - 1, "one frame: a 2-byte header and the op");
    TAP_EQ_MEM(frame->data + 2, frame->len - 2, op, sizeof(op) - 1, "the frame carries the op");
    pe_msg_release(msg);

    msg = make_msg(10, 0, "room", "{\"channel\":\"room\",\"client\":\"x\",\"user\":null}");
    msg->kind = PE_MSG_LEAVE;
    ev = pe_wire_sse_event(msg);
    static const char want2[] = "id: 10-0\nevent: leave\ndata: {\"channel\":\"room\",\"client\":\"x\",\"user\":null}\n\n";
    TAP_EQ_MEM(ev->data, ev->len, want2, sizeof(want2) - 1, "a leave event");
    n = pe_wire_presence_text(msg, text);
    static const char op2[] = "{\"op\":\"leave\",\"id\":\"10-0\",\"channel\":\"room\",\"client\":\"x\",\"user\":null}";
    TAP_EQ_MEM(text, n, op2, sizeof(op2) - 1, "a leave op");
    pe_msg_release(msg);

    /* A count (PE_MSG_COUNT): no id anywhere. */
    msg = make_msg(0, 0, "room", "{\"channel\":\"room\",\"count\":1234}");
    msg->kind = PE_MSG_COUNT;
    ev = pe_wire_sse_event(msg);
    static const char want3[] = "event: count\ndata: {\"channel\":\"room\",\"count\":1234}\n\n";
    TAP_EQ_MEM(ev->data, ev->len, want3, sizeof(want3) - 1, "the SSE count event, without an id line");
    static const char op3[] = "{\"op\":\"count\",\"channel\":\"room\",\"count\":1234}";
    n = pe_wire_presence_text(msg, text);
    TAP_EQ_MEM(text, n, op3, sizeof(op3) - 1, "the count op");
    TAP_EQ_INT(pe_wire_ws_text_len(msg), sizeof(op3) - 1, "its length");
    frame = pe_wire_ws_message(msg, 0);
    TAP_EQ_MEM(frame->data + 2, frame->len - 2, op3, sizeof(op3) - 1, "the frame carries the count op");
    pe_msg_release(msg);
}

int
main(void)
{
    tap_subtest("presence", test_presence);
    tap_subtest("envelope", test_envelope);
    tap_subtest("sse", test_sse);
    tap_subtest("ws sizes", test_ws_sizes);
    tap_subtest("ws frames", test_ws_frames);
    tap_subtest("poll body", test_poll_body);
    return tap_done();
}

/*
 * Unit tests for edge/ws/ws_handshake.c (pe_ws_handshake_check): the RFC 6455 1.3 accept vector;
 * each refusal with its status and code, in the order the server checks them; Upgrade and
 * Sec-WebSocket-Protocol as token lists (case, white space, several offers); keys that are not
 * the base64 of 16 bytes.
 *
 * Not covered: gathering the values from an h2o request and answering (tests/e2e/ws.test.mjs),
 * arbitrary bytes (tests/fuzz/fuzz_ws_handshake.c).
 */
#include <string.h>
#include "tap.h"
#include "edge/ws/ws_handshake.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static pe_ws_hdr_t
hdr(const char *s)
{
    return (pe_ws_hdr_t){s, s != NULL ? strlen(s) : 0};
}

/* Returns the status, with the code (or the accept value on success) in *what. */
static int
check(const char *upgrade, const char *version, const char *key, const char *protocols, const char **what, int *select)
{
    static pe_ws_handshake_t out;
    pe_ws_handshake_req_t req = {hdr(upgrade), hdr(version), hdr(key), hdr(protocols)};
    int status = pe_ws_handshake_check(&req, &out);
    *what = status == 0 ? out.accept : out.code;
    *select = out.select_protocol;
    return status;
}

static void
test_accept(void)
{
    const char *what;
    int select;
    TAP_EQ_INT(check("websocket", "13", KEY, NULL, &what, &select), 0, "RFC 6455 example accepted");
    TAP_EQ_STR(what, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "RFC 6455 1.3 accept value");
    TAP_EQ_INT(select, 0, "no protocol offered, none selected");
    TAP_EQ_INT(check("WebSocket", "13", KEY, "chat, PushEdge.V1", &what, &select), 0, "tokens compare without case");
    TAP_EQ_INT(select, 1, "pushedge.v1 selected");
    TAP_EQ_INT(check("h2c, \twebsocket ", "13", KEY, " pushedge.v1\t", &what, &select), 0, "white space around tokens");
}

static void
test_refusals(void)
{
    const char *what;
    int select;
    TAP_EQ_INT(check(NULL, "13", KEY, NULL, &what, &select), 426, "no Upgrade");
    TAP_EQ_STR(what, "upgrade_required", "code");
    TAP_EQ_INT(check("websocket2", "13", KEY, NULL, &what, &select), 426, "another upgrade token");
    TAP_EQ_INT(check("websocket", NULL, KEY, NULL, &what, &select), 426, "no version");
    TAP_EQ_STR(what, "bad_version", "code");
    TAP_EQ_INT(check("websocket", "8", NULL, NULL, &what, &select), 426, "version 8, and no key: the version is checked first");
    TAP_EQ_STR(what, "bad_version", "code");
    TAP_EQ_INT(check("websocket", " 13", KEY, NULL, &what, &select), 426, "the version is compared exactly");
    TAP_EQ_INT(check("websocket", "13", NULL, NULL, &what, &select), 400, "no key");
    TAP_EQ_STR(what, "bad_key", "code");
    TAP_EQ_INT(check("websocket", "13", "dGhlIHNhbXBsZSBub25jZQ=", NULL, &what, &select), 400, "23 characters");
    TAP_EQ_INT(check("websocket", "13", "dGhlIHNhbXBsZSBub25jZ===", NULL, &what, &select), 400, "a third =");
    TAP_EQ_INT(check("websocket", "13", "dGhlIHNhbXBsZSBub25j-Q==", NULL, &what, &select), 400, "base64url is not base64");
    TAP_EQ_INT(check("websocket", "13", KEY, "chat", &what, &select), 400, "a protocol offer without pushedge.v1");
    TAP_EQ_STR(what, "unsupported_protocol", "code");
    TAP_EQ_INT(check("websocket", "13", KEY, "", &what, &select), 400, "an empty protocol header is an offer of nothing");
    TAP_EQ_INT(check("websocket", "13", KEY, "pushedge.v1x", &what, &select), 400, "no prefix match");
}

int
main(void)
{
    tap_subtest("accept", test_accept);
    tap_subtest("refusals", test_refusals);
    return tap_done();
}

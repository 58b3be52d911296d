/*
 * Unit tests for the publish rule and the HTTP/1 framing rules (edge/core/auth.c pe_auth_check,
 * edge/front.c pe_front_check_framing) and --trusted-proxy networks (edge/core/config.c): API key,
 * origins (listed, "*", the server's own loopback page, DNS rebinding, Sec-Fetch-Site),
 * loopback trust from the peer or, behind a trusted proxy, from X-Forwarded-For / Forwarded
 * read right to left; and each framing fault. The wire behaviour is in tests/e2e/security.
 */
#include <arpa/inet.h>
#include <string.h>
#include "tap.h"
#include "edge/core/auth.h"
#include "edge/front.h"

struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

static pe_config_t cfg;

static void
set_peer(pe_auth_view_t *v, const char *ip)
{
    memset(&v->peer, 0, sizeof(v->peer));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&v->peer;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        v->peer_len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&v->peer;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &a->sin_addr);
        v->peer_len = sizeof(*a);
    }
}

/* headers: "name: value" strings, NULL-terminated */
static pe_auth_t
check(const char *peer, const char *const *headers)
{
    pe_auth_view_t v;
    memset(&v, 0, offsetof(pe_auth_view_t, _buf));
    for (; *headers != NULL; ++headers) {
        const char *colon = strchr(*headers, ':');
        pe_auth_view_add(&v, *headers, (size_t)(colon - *headers), colon + 2, strlen(colon + 2));
    }
    set_peer(&v, peer);
    return pe_auth_check(&cfg, &v);
}

#define H(...) ((const char *const[]){__VA_ARGS__, NULL})

static void
test_loopback_and_origin(void)
{
    memset(&cfg, 0, sizeof(cfg));
    TAP_EQ_INT(check("127.0.0.1", H("host: x")), PE_AUTH_OK, "loopback, no Origin");
    TAP_EQ_INT(check("::1", H("host: x")), PE_AUTH_OK, "IPv6 loopback");
    TAP_EQ_INT(check("::ffff:127.0.0.9", H("host: x")), PE_AUTH_OK, "mapped loopback");
    TAP_EQ_INT(check("10.0.0.1", H("host: x")), PE_AUTH_NOT_LOOPBACK, "remote");
    TAP_EQ_INT(check("127.0.0.1", H("origin: http://evil.example")), PE_AUTH_ORIGIN, "foreign origin");
    TAP_EQ_INT(check("127.0.0.1", H("origin: null")), PE_AUTH_ORIGIN, "opaque origin");
    TAP_EQ_INT(check("127.0.0.1", H("sec-fetch-site: cross-site")), PE_AUTH_ORIGIN, "cross-site without Origin");
    TAP_EQ_INT(check("127.0.0.1", H("sec-fetch-site: same-site")), PE_AUTH_ORIGIN, "same-site without Origin");
    TAP_EQ_INT(check("127.0.0.1", H("sec-fetch-site: none")), PE_AUTH_OK, "address bar");
    TAP_EQ_INT(check("127.0.0.1", H("origin: http://127.0.0.1:8080", "host: 127.0.0.1:8080")), PE_AUTH_OK, "own page");
    TAP_EQ_INT(check("127.0.0.1", H("origin: http://LOCALHOST:8080", "host: localhost:8080")), PE_AUTH_OK, "own page, case");
    TAP_EQ_INT(check("127.0.0.1", H("origin: http://[::1]:8080", "host: [::1]:8080")), PE_AUTH_OK, "own page, IPv6");
    TAP_EQ_INT(check("127.0.0.1", H("origin: http://rebind.example:8080", "host: rebind.example:8080")), PE_AUTH_ORIGIN,
               "DNS rebinding");
    TAP_EQ_INT(check("127.0.0.1", H("origin: http://127.0.0.1:9", "host: 127.0.0.1:8080")), PE_AUTH_ORIGIN, "another port");
    cfg.allowed_origins[0] = "https://app.example";
    cfg.num_allowed_origins = 1;
    TAP_EQ_INT(check("127.0.0.1", H("origin: https://app.example")), PE_AUTH_OK, "listed");
    TAP_EQ_INT(check("127.0.0.1", H("origin: https://app.example.evil")), PE_AUTH_ORIGIN, "prefix of a listed one");
    TAP_EQ_INT(check("10.0.0.1", H("origin: https://app.example")), PE_AUTH_NOT_LOOPBACK, "listed, remote, no key");
    cfg.allowed_origins[0] = "*";
    TAP_EQ_INT(check("127.0.0.1", H("origin: https://any.example")), PE_AUTH_OK, "*");
}

static void
test_api_key(void)
{
    memset(&cfg, 0, sizeof(cfg));
    cfg.api_key = "s3cret";
    TAP_EQ_INT(check("10.0.0.1", H("authorization: Bearer s3cret")), PE_AUTH_OK, "right key");
    TAP_EQ_INT(check("10.0.0.1", H("authorization: bearer s3cret")), PE_AUTH_OK, "scheme is case-insensitive");
    TAP_EQ_INT(check("127.0.0.1", H("host: x")), PE_AUTH_NO_KEY, "loopback is not enough with a key");
    TAP_EQ_INT(check("10.0.0.1", H("authorization: Bearer s3cre")), PE_AUTH_WRONG_KEY, "prefix");
    TAP_EQ_INT(check("10.0.0.1", H("authorization: Bearer s3cret2")), PE_AUTH_WRONG_KEY, "longer");
    TAP_EQ_INT(check("10.0.0.1", H("authorization: Basic s3cret")), PE_AUTH_WRONG_KEY, "other scheme");
    TAP_EQ_INT(check("10.0.0.1", H("authorization: Bearer s3cret", "origin: https://evil.example")), PE_AUTH_ORIGIN,
               "origin checked before the key");
    TAP_OK(pe_secret_equals("abc", 3, "abc", 3) && !pe_secret_equals("abd", 3, "abc", 3) && !pe_secret_equals("", 0, "", 0),
           "pe_secret_equals");
}

static void
test_trusted_proxy(void)
{
    memset(&cfg, 0, sizeof(cfg));
    TAP_EQ_INT(pe_config_parse_cidr("127.0.0.0/8", &cfg.trusted_nets[0]), 0, "parse 127.0.0.0/8");
    TAP_EQ_INT(pe_config_parse_cidr("fd00::/8", &cfg.trusted_nets[1]), 0, "parse fd00::/8");
    cfg.num_trusted_proxies = 2;
    pe_cidr_t bad;
    TAP_EQ_INT(pe_config_parse_cidr("10.0.0.0/33", &bad), -1, "/33");
    TAP_EQ_INT(pe_config_parse_cidr("10.0.0/8", &bad), -1, "short address");
    TAP_EQ_INT(pe_config_parse_cidr("::1/129", &bad), -1, "/129");
    TAP_EQ_INT(pe_config_parse_cidr("10.0.0.0/", &bad), -1, "empty bits");

    TAP_EQ_INT(check("127.0.0.1", H("host: x")), PE_AUTH_NOT_LOOPBACK, "proxy without a header: unknown client");
    TAP_EQ_INT(check("127.0.0.1", H("x-forwarded-for: 127.0.0.1")), PE_AUTH_OK, "a local client");
    TAP_EQ_INT(check("127.0.0.1", H("x-forwarded-for: 203.0.113.5")), PE_AUTH_NOT_LOOPBACK, "a remote client");
    TAP_EQ_INT(check("127.0.0.1", H("x-forwarded-for: 127.0.0.1, 203.0.113.5")), PE_AUTH_NOT_LOOPBACK, "spoofed entry");
    TAP_EQ_INT(check("127.0.0.1", H("x-forwarded-for: 203.0.113.5, 127.0.0.1")), PE_AUTH_NOT_LOOPBACK,
               "a remote client through two proxies");
    TAP_EQ_INT(check("127.0.0.1", H("x-forwarded-for: 127.0.0.1", "x-forwarded-for: 203.0.113.5")), PE_AUTH_NOT_LOOPBACK,
               "two header lines are one list");
    TAP_EQ_INT(check("127.0.0.1", H("x-forwarded-for: garbage")), PE_AUTH_NOT_LOOPBACK, "malformed");
    TAP_EQ_INT(check("127.0.0.1", H("forwarded: for=127.0.0.1;proto=http")), PE_AUTH_OK, "Forwarded");
    TAP_EQ_INT(check("127.0.0.1", H("forwarded: for=\"[::1]:4711\"")), PE_AUTH_OK, "Forwarded, IPv6 and port");
    TAP_EQ_INT(check("127.0.0.1", H("forwarded: for=127.0.0.1, for=203.0.113.5")), PE_AUTH_NOT_LOOPBACK, "Forwarded, spoofed");
    TAP_EQ_INT(check("127.0.0.1", H("forwarded: proto=http")), PE_AUTH_NOT_LOOPBACK, "Forwarded without for");
    TAP_EQ_INT(check("10.0.0.1", H("x-forwarded-for: 127.0.0.1")), PE_AUTH_NOT_LOOPBACK, "not a trusted peer: ignored");
    TAP_EQ_INT(check("::1", H("x-forwarded-for: 127.0.0.1")), PE_AUTH_OK, "::1 is loopback, not a listed proxy");
    char big[PE_MAX_FORWARDED + 40];
    memset(big, ' ', sizeof(big));
    memcpy(big + sizeof(big) - 20, "127.0.0.1", 10);
    char line[sizeof(big) + 20] = "x-forwarded-for: ";
    memcpy(line + 17, big, sizeof(big) - 10);
    line[17 + sizeof(big) - 10] = '\0';
    TAP_EQ_INT(check("127.0.0.1", H(line)), PE_AUTH_NOT_LOOPBACK, "oversized list: unknown");
}

static int
framing(const char *head, int *has_body)
{
    /* a minimal header splitter for the test heads ("Name: value\r\n" lines; " x" folds) */
    struct phr_header h[16];
    size_t n = 0;
    const char *p = strstr(head, "\n") + 1;
    while (*p != '\r' && *p != '\n' && n < 16) {
        const char *eol = strchr(p, '\n');
        size_t len = (size_t)(eol - p) - (eol[-1] == '\r');
        if (*p == ' ') {
            h[n++] = (struct phr_header){NULL, 0, p + 1, len - 1};
        } else {
            const char *colon = memchr(p, ':', len);
            h[n++] = (struct phr_header){p, (size_t)(colon - p), colon + 2, len - (size_t)(colon - p) - 2};
        }
        p = eol + 1;
    }
    return pe_front_check_framing(head, strlen(head), h, n, 1, has_body);
}

static void
test_framing(void)
{
    int body;
    TAP_EQ_INT(framing("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", &body), 0, "one CL");
    TAP_EQ_INT(body, 1, "has a body");
    TAP_EQ_INT(framing("POST / HTTP/1.1\r\nContent-Length: 000\r\n\r\n", &body), 0, "CL 0");
    TAP_EQ_INT(body, 0, "no body");
    TAP_EQ_INT(framing("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &body), 0, "chunked");
    TAP_EQ_INT(body, 1, "chunked has a body");
    TAP_OK(framing("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", &body) > 0, "CL twice");
    TAP_OK(framing("POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n", &body) > 0, "CL list");
    TAP_OK(framing("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &body) > 0, "CL sign");
    TAP_OK(framing("POST / HTTP/1.1\r\nContent-Length: 12345678901234567890\r\n\r\n", &body) > 0, "CL 20 digits");
    TAP_OK(framing("POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", &body) > 0, "CL + TE");
    TAP_OK(framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", &body) > 0, "TE twice");
    TAP_OK(framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", &body) > 0, "TE list");
    TAP_OK(framing("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", &body) > 0, "TE identity");
    TAP_OK(framing("POST / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", &body) > 0, "obs-fold");
    TAP_OK(framing("POST / HTTP/1.1\nX-A: b\r\n\r\n", &body) > 0, "bare LF");
}

int
main(void)
{
    tap_subtest("loopback and origin", test_loopback_and_origin);
    tap_subtest("api key", test_api_key);
    tap_subtest("trusted proxy", test_trusted_proxy);
    tap_subtest("framing", test_framing);
    return tap_done();
}

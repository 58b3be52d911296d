/*
 * libFuzzer driver for edge/identity: JWT verification (jwt.c, b64url.c), key-file parsing
 * (keys.c) and channel patterns (policy.c). The first input byte picks what the rest is:
 *   0  a token, verified as given against an HMAC secret (the path of every unauthenticated
 *      input: parts, base64url, header JSON, signature);
 *   1  "header.payload" texts, signed here with HS256 before verification, so the claims parser
 *      (exp, nbf, iss, aud, sub, channels, publish) is reached with any payload;
 *   2  a --jwt-key file (PEM or JWKS);
 *   3  "pattern\nsub1\nsub2\nchannel": a pattern checked against an oracle and the no-widening
 *      property: one valid pattern never gives two different subjects the same channel.
 * Checks: a verified identity is well formed (authenticated, patterns valid, sub without NUL);
 * a refusal leaves the identity empty and says why; LeakSanitizer finds what is not released.
 */
#include <openssl/hmac.h>
#include <string.h>
#include "edge/identity/b64url.h"
#include "edge/identity/jwt.h"
#include "edge/identity/keys.h"
#include "edge/identity/policy.h"
#include "fuzz.h"

#define SECRET "fuzzing-secret-of-at-least-32-bytes!!"

static pe_keyset_t *keys;

static void
check_identity(pe_jwt_result_t r, const pe_identity_t *id, const char *why)
{
    if (r == PE_JWT_OK) {
        CHECK(id->authenticated);
        CHECK(id->sub == NULL || strlen(id->sub) == id->sub_len);
        CHECK(id->read.num <= PE_POLICY_MAX_PATTERNS && id->publish.num <= PE_POLICY_MAX_PATTERNS);
        for (size_t i = 0; i != id->read.num; ++i)
            CHECK(pe_pattern_is_valid(id->read.items[i], strlen(id->read.items[i]), 1));
        for (size_t i = 0; i != id->publish.num; ++i)
            CHECK(pe_pattern_is_valid(id->publish.items[i], strlen(id->publish.items[i]), 1));
    } else {
        CHECK(r == PE_JWT_INVALID || r == PE_JWT_EXPIRED);
        CHECK(why != NULL);
        CHECK(!id->authenticated && id->sub == NULL && id->read.num == 0 && id->publish.num == 0);
    }
}

static void
verify(const char *tok, size_t len)
{
    pe_jwt_opts_t opts = {"iss", "aud", 30};
    pe_identity_t id;
    const char *why = NULL;
    pe_jwt_result_t r = pe_jwt_verify(keys, &opts, 1700000000, tok, len, &id, &why);
    check_identity(r, &id, why);
    pe_identity_dispose(&id);
    opts.issuer = opts.audience = NULL;
    r = pe_jwt_verify(keys, &opts, 1700000000, tok, len, &id, &why);
    check_identity(r, &id, why);
    pe_identity_dispose(&id);
}

static void
sign_and_verify(const char *text, size_t len)
{
    /* The text up to its last '.' is "header.payload"; sign it as HS256 and append. */
    if (len > PE_JWT_MAX_LEN)
        return;
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char mac[32];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)text, len, mac, &maclen);
    char tok[PE_JWT_MAX_LEN + 64];
    memcpy(tok, text, len);
    size_t n = len;
    tok[n++] = '.';
    for (size_t i = 0; i < 30; i += 3) {
        unsigned v = (unsigned)mac[i] << 16 | (unsigned)mac[i + 1] << 8 | mac[i + 2];
        tok[n++] = tbl[v >> 18];
        tok[n++] = tbl[(v >> 12) & 63];
        tok[n++] = tbl[(v >> 6) & 63];
        tok[n++] = tbl[v & 63];
    }
    unsigned v = (unsigned)mac[30] << 16 | (unsigned)mac[31] << 8;
    tok[n++] = tbl[v >> 18];
    tok[n++] = tbl[(v >> 12) & 63];
    tok[n++] = tbl[(v >> 6) & 63];
    verify(tok, n);
}

static void
parse_keys(const char *text, size_t len)
{
    const char *names[] = {"fuzz"};
    const char *texts[] = {text};
    size_t lens[] = {len};
    char err[256];
    pe_keyset_t *set = pe_keyset_parse(NULL, names, texts, lens, 1, err, sizeof(err));
    if (set == NULL)
        CHECK(strncmp(err, "--jwt-key fuzz", 14) == 0 || strncmp(err, "no JWT key", 10) == 0);
    else
        CHECK(set->num >= 1 && set->num <= PE_KEYS_MAX);
    pe_keyset_release(set);
}

static int
name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
           c == ':' || c == '@';
}

/* The rule of policy.h stated directly: substitute, then compare (prefix for a trailing '*'). */
static int
oracle(const char *pat, size_t plen, const char *sub, size_t sublen, const char *chan, size_t clen)
{
    char s[PE_POLICY_MAX_PATTERN_LEN * 64 + 1];
    size_t n = 0;
    for (size_t i = 0; i != plen;) {
        if (plen - i >= 5 && memcmp(pat + i, "{sub}", 5) == 0) {
            if (sublen == 0)
                return 0;
            for (size_t k = 0; k != sublen; ++k)
                if (!name_char(sub[k]))
                    return 0;
            if (i + 5 != plen && memchr(sub, pat[i + 5], sublen) != NULL)
                return 0;
            memcpy(s + n, sub, sublen);
            n += sublen;
            i += 5;
        } else {
            s[n++] = pat[i++];
        }
    }
    if (n != 0 && s[n - 1] == '*')
        return clen >= n - 1 && memcmp(chan, s, n - 1) == 0;
    return clen == n && memcmp(chan, s, n) == 0;
}

static void
patterns(const char *text, size_t len)
{
    const char *part[4];
    size_t plen[4], k = 0, start = 0;
    for (size_t i = 0; i <= len && k != 4; ++i)
        if (i == len || text[i] == '\n') {
            part[k] = text + start;
            plen[k++] = i - start;
            start = i + 1;
        }
    if (k != 4 || plen[1] > PE_POLICY_MAX_SUB || plen[2] > PE_POLICY_MAX_SUB)
        return;
    if (!pe_pattern_is_valid(part[0], plen[0], 1))
        return;
    int m1 = pe_pattern_match(part[0], plen[0], part[1], plen[1], part[3], plen[3]);
    int m2 = pe_pattern_match(part[0], plen[0], part[2], plen[2], part[3], plen[3]);
    CHECK(m1 == oracle(part[0], plen[0], part[1], plen[1], part[3], plen[3]));
    CHECK(m2 == oracle(part[0], plen[0], part[2], plen[2], part[3], plen[3]));
    if (m1 && m2 && memmem(part[0], plen[0], "{sub}", 5) != NULL)
        CHECK(plen[1] == plen[2] && memcmp(part[1], part[2], plen[1]) == 0);
    if (!pe_pattern_is_valid(part[0], plen[0], 0))
        CHECK(memmem(part[0], plen[0], "{sub}", 5) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys == NULL) {
        char err[256];
        keys = pe_keyset_parse(SECRET, NULL, NULL, NULL, 0, err, sizeof(err));
        CHECK(keys != NULL);
    }
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0:
        verify(text, len);
        break;
    case 1:
        sign_and_verify(text, len);
        break;
    case 2:
        parse_keys(text, len);
        break;
    default:
        patterns(text, len);
        break;
    }
    return 0;
}

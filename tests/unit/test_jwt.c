/*
 * test_jwt.c: edge/identity (b64url.c, keys.c, jwt.c, policy.c). Tokens are minted here, with
 * keys generated at run time by OpenSSL (no private key is committed): every algorithm, the
 * algorithm-confusion attack, "none", malformed parts, the time claims with leeway, issuer and
 * audience, kid selection, JWKS and PEM loading, and the pattern rules with {sub} and '*'.
 */
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdint.h>
#include <time.h>
#include "tap.h"
#include "edge/identity/b64url.h"
#include "edge/identity/jwt.h"
#include "edge/identity/keys.h"
#include "edge/identity/policy.h"

#define SECRET "0123456789abcdef0123456789abcdef-test-secret"
#define NOW 1700000000

static EVP_PKEY *rsa_a, *rsa_b, *ec_a;

/* ---- minting ----------------------------------------------------------------------------------- */

static size_t
b64url_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[n++] = tbl[v >> 18];
        out[n++] = tbl[(v >> 12) & 63];
        out[n++] = tbl[(v >> 6) & 63];
        out[n++] = tbl[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[n++] = tbl[v >> 18];
        out[n++] = tbl[(v >> 12) & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[n++] = tbl[v >> 18];
        out[n++] = tbl[(v >> 12) & 63];
        out[n++] = tbl[(v >> 6) & 63];
    }
    out[n] = '\0';
    return n;
}

/* Signs "b64(header).b64(payload)" as alg with either an HMAC secret or a private key; raw_es
 * 0 leaves an ES256 signature in DER (the mistake the verifier must refuse). */
static char *
mint_ex(const char *header, const char *payload, const char *alg, const char *secret, size_t secret_len, EVP_PKEY *pkey, int raw_es)
{
    static char tok[3 * 8192];
    size_t n = b64url_encode((const unsigned char *)header, strlen(header), tok);
    tok[n++] = '.';
    n += b64url_encode((const unsigned char *)payload, strlen(payload), tok + n);
    unsigned char sig[1024];
    size_t siglen = 0;
    const EVP_MD *md = strstr(alg, "384") ? EVP_sha384() : strstr(alg, "512") ? EVP_sha512() : EVP_sha256();
    if (alg[0] == 'H') {
        unsigned l = 0;
        HMAC(md, secret, (int)secret_len, (unsigned char *)tok, n, sig, &l);
        siglen = l;
    } else if (pkey != NULL) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_PKEY_CTX *p = NULL;
        EVP_DigestSignInit(m, &p, md, NULL, pkey);
        if (alg[0] == 'P') {
            EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(p, RSA_PSS_SALTLEN_DIGEST);
        }
        siglen = sizeof(sig);
        EVP_DigestSign(m, sig, &siglen, (unsigned char *)tok, n);
        EVP_MD_CTX_free(m);
        if (alg[0] == 'E' && raw_es) {
            const unsigned char *d = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &d, (long)siglen);
            memset(sig, 0, 64);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            siglen = 64;
            ECDSA_SIG_free(es);
        }
    }
    tok[n++] = '.';
    b64url_encode(sig, siglen, tok + n);
    return tok;
}

static char *
mint(const char *alg, const char *kid, const char *payload, EVP_PKEY *pkey)
{
    char header[256];
    if (kid != NULL)
        snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    else
        snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return mint_ex(header, payload, alg, SECRET, strlen(SECRET), pkey, 1);
}

static char *
pem_of(EVP_PKEY *pkey)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey);
    char *data;
    long len = BIO_get_mem_data(bio, &data);
    char *copy = strndup(data, (size_t)len);
    BIO_free(bio);
    return copy;
}

static void
bn_b64(EVP_PKEY *pkey, const char *name, char *out)
{
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(pkey, name, &bn);
    unsigned char buf[1024];
    int n = BN_bn2bin(bn, buf);
    b64url_encode(buf, (size_t)n, out);
    BN_free(bn);
}

static void
jwk_rsa(EVP_PKEY *pkey, const char *kid, char *out, size_t len)
{
    char n[1024], e[32];
    bn_b64(pkey, OSSL_PKEY_PARAM_RSA_N, n);
    bn_b64(pkey, OSSL_PKEY_PARAM_RSA_E, e);
    snprintf(out, len, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}", kid, n, e);
}

static void
jwk_ec(EVP_PKEY *pkey, const char *kid, char *out, size_t len)
{
    unsigned char pt[65];
    size_t ptlen = 0;
    EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen);
    char x[64], y[64];
    b64url_encode(pt + 1, 32, x);
    b64url_encode(pt + 33, 32, y);
    snprintf(out, len, "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", kid, x, y);
}

static pe_keyset_t *
set_of(const char *secret, const char *text, char *err, size_t errlen)
{
    const char *names[] = {"test"};
    const char *texts[] = {text};
    size_t lens[] = {text != NULL ? strlen(text) : 0};
    return pe_keyset_parse(secret, names, texts, lens, text != NULL, err, errlen);
}

static pe_jwt_opts_t opts = {NULL, NULL, 30};

static int
verify(const pe_keyset_t *set, const char *tok)
{
    pe_identity_t id;
    const char *why = NULL;
    int r = pe_jwt_verify(set, &opts, NOW, tok, strlen(tok), &id, &why);
    if (r == PE_JWT_OK)
        TAP_OK(id.authenticated, "an OK result is authenticated");
    else
        TAP_OK(why != NULL && !id.authenticated && id.sub == NULL, "a refusal says why (%s)", why ? why : "?");
    pe_identity_dispose(&id);
    return r;
}

/* ---- tests ------------------------------------------------------------------------------------- */

static void
test_b64url(void)
{
    unsigned char out[16];
    TAP_EQ_INT(pe_b64url_decode("", 0, out), 0, "empty");
    TAP_EQ_INT(pe_b64url_decode("TWFu", 4, out), 3, "Man");
    TAP_OK(memcmp(out, "Man", 3) == 0, "Man bytes");
    TAP_EQ_INT(pe_b64url_decode("TWE", 3, out), 2, "two bytes unpadded");
    TAP_EQ_INT(pe_b64url_decode("TWE=", 4, out), -1, "padding refused");
    TAP_EQ_INT(pe_b64url_decode("TWF", 3, out), -1, "non-zero unused bits refused");
    TAP_EQ_INT(pe_b64url_decode("T", 1, out), -1, "one character refused");
    TAP_EQ_INT(pe_b64url_decode("-_-_", 4, out), 3, "url alphabet");
    TAP_EQ_INT(pe_b64url_decode("+/+/", 4, out), -1, "standard alphabet refused");
    TAP_EQ_INT(pe_b64url_decode("TW Fu", 5, out), -1, "space refused");
    TAP_EQ_INT(pe_b64url_decode("TW\0u", 4, out), -1, "NUL refused");
}

static void
test_hmac(void)
{
    char err[256];
    pe_keyset_t *set = set_of(SECRET, NULL, err, sizeof(err));
    TAP_OK(set != NULL, "secret loads");
    const char *algs[] = {"HS256", "HS384", "HS512"};
    for (size_t i = 0; i != 3; ++i)
        TAP_EQ_INT(verify(set, mint(algs[i], NULL, "{\"sub\":\"alice\"}", NULL)), PE_JWT_OK, "%s verifies", algs[i]);
    char *tok = mint_ex("{\"alg\":\"HS256\"}", "{}", "HS256", "another secret of at least 32 bytes!!", 37, NULL, 1);
    TAP_EQ_INT(verify(set, tok), PE_JWT_INVALID, "wrong secret");
    tok = mint_ex("{\"alg\":\"HS384\"}", "{}", "HS256", SECRET, strlen(SECRET), NULL, 1);
    TAP_EQ_INT(verify(set, tok), PE_JWT_INVALID, "HS256 signature under an HS384 header");
    /* One flipped bit of the signature. */
    tok = mint("HS256", NULL, "{}", NULL);
    size_t len = strlen(tok);
    tok[len - 2] = tok[len - 2] == 'A' ? 'B' : 'A';
    TAP_EQ_INT(verify(set, tok), PE_JWT_INVALID, "altered signature");
    /* The payload changed after signing. */
    tok = mint("HS256", NULL, "{\"sub\":\"alice\"}", NULL);
    char forged[512];
    char body[64];
    b64url_encode((const unsigned char *)"{\"sub\":\"admin\"}", 15, body);
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(d1 - tok), tok, body, d2);
    TAP_EQ_INT(verify(set, forged), PE_JWT_INVALID, "altered payload");
    pe_keyset_release(set);
    TAP_OK(set_of("short", NULL, err, sizeof(err)) == NULL, "a secret under 32 bytes is refused");
    TAP_OK(strstr(err, "--jwt-secret") != NULL, "the error names the option: %s", err);
    TAP_OK(set_of(NULL, NULL, err, sizeof(err)) == NULL, "no key at all is refused");
}

static void
test_none(void)
{
    char err[256];
    pe_keyset_t *set = set_of(SECRET, NULL, err, sizeof(err));
    char tok[512], h[128], p[128];
    b64url_encode((const unsigned char *)"{\"alg\":\"none\"}", 14, h);
    b64url_encode((const unsigned char *)"{\"sub\":\"alice\"}", 15, p);
    snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    TAP_EQ_INT(verify(set, tok), PE_JWT_INVALID, "alg none, empty signature");
    snprintf(tok, sizeof(tok), "%s.%s", h, p);
    TAP_EQ_INT(verify(set, tok), PE_JWT_INVALID, "alg none, two parts");
    /* "none" with an HMAC signature anyway, and other spellings. */
    const char *headers[] = {"{\"alg\":\"none\"}",
                             "{\"alg\":\"None\"}",
                             "{\"alg\":\"hs256\"}",
                             "{\"typ\":\"JWT\"}",
                             "{\"alg\":null}",
                             "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
                             "{\"alg\":\"HS256\",\"kid\":7}"};
    for (size_t i = 0; i != sizeof(headers) / sizeof(headers[0]); ++i)
        TAP_EQ_INT(verify(set, mint_ex(headers[i], "{}", "HS256", SECRET, strlen(SECRET), NULL, 1)), PE_JWT_INVALID, "header %s",
                   headers[i]);
    pe_keyset_release(set);
}

static void
test_rsa_ec(void)
{
    char err[256];
    char *pa = pem_of(rsa_a), *pe = pem_of(ec_a);
    char both[8192];
    snprintf(both, sizeof(both), "%s%s", pa, pe);
    pe_keyset_t *set = set_of(NULL, both, err, sizeof(err));
    TAP_OK(set != NULL, "two PEM keys in one file load (%s)", set ? "" : err);
    TAP_EQ_UINT(set->num, 2, "two keys");
    TAP_EQ_INT(verify(set, mint("RS256", NULL, "{}", rsa_a)), PE_JWT_OK, "RS256");
    TAP_EQ_INT(verify(set, mint("PS256", NULL, "{}", rsa_a)), PE_JWT_OK, "PS256");
    TAP_EQ_INT(verify(set, mint("ES256", NULL, "{}", ec_a)), PE_JWT_OK, "ES256");
    TAP_EQ_INT(verify(set, mint("RS256", NULL, "{}", rsa_b)), PE_JWT_INVALID, "RS256 by an unknown key");
    TAP_EQ_INT(verify(set, mint("PS256", NULL, "{}", rsa_b)), PE_JWT_INVALID, "PS256 by an unknown key");
    TAP_EQ_INT(verify(set, mint_ex("{\"alg\":\"ES256\"}", "{}", "ES256", NULL, 0, ec_a, 0)), PE_JWT_INVALID,
               "ES256 with a DER signature");
    TAP_EQ_INT(verify(set, mint_ex("{\"alg\":\"RS256\"}", "{}", "PS256", NULL, 0, rsa_a, 1)), PE_JWT_INVALID,
               "a PSS signature under RS256");
    TAP_EQ_INT(verify(set, mint_ex("{\"alg\":\"ES256\"}", "{}", "RS256", NULL, 0, rsa_a, 1)), PE_JWT_INVALID,
               "an RSA signature under ES256");

    /* Algorithm confusion: the public key's PEM text used as an HMAC secret. */
    TAP_EQ_INT(verify(set, mint_ex("{\"alg\":\"HS256\"}", "{}", "HS256", pa, strlen(pa), NULL, 1)), PE_JWT_INVALID,
               "HS256 keyed with the RSA public key is refused");
    TAP_EQ_INT(verify(set, mint_ex("{\"alg\":\"HS256\"}", "{}", "HS256", pe, strlen(pe), NULL, 1)), PE_JWT_INVALID,
               "HS256 keyed with the EC public key is refused");
    pe_keyset_release(set);

    /* With a secret too, an RSA signature still needs the RSA key and an HMAC one the secret. */
    set = set_of(SECRET, pa, err, sizeof(err));
    TAP_EQ_INT(verify(set, mint_ex("{\"alg\":\"HS256\"}", "{}", "HS256", pa, strlen(pa), NULL, 1)), PE_JWT_INVALID,
               "confusion refused beside a secret");
    TAP_EQ_INT(verify(set, mint("HS256", NULL, "{}", NULL)), PE_JWT_OK, "the secret still verifies HS256");
    TAP_EQ_INT(verify(set, mint("ES256", NULL, "{}", ec_a)), PE_JWT_INVALID, "ES256 without an EC key");
    pe_keyset_release(set);
    free(pa);
    free(pe);

    /* Keys pushedge does not verify with. */
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp384r1");
    char *ps = pem_of(small), *p3 = pem_of(p384);
    TAP_OK(set_of(NULL, ps, err, sizeof(err)) == NULL && strstr(err, "2048") != NULL, "RSA-1024 refused: %s", err);
    TAP_OK(set_of(NULL, p3, err, sizeof(err)) == NULL && strstr(err, "P-256") != NULL, "P-384 refused: %s", err);
    TAP_OK(set_of(NULL, "not a key", err, sizeof(err)) == NULL && strstr(err, "test") != NULL, "garbage refused: %s", err);
    TAP_OK(set_of(NULL, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", err, sizeof(err)) == NULL,
           "a broken PEM body refused");
    free(ps);
    free(p3);
    EVP_PKEY_free(small);
    EVP_PKEY_free(p384);
}

static void
test_jwks(void)
{
    char err[256], ka[2048], kb[2048], ke[512], doc[8192];
    jwk_rsa(rsa_a, "a", ka, sizeof(ka));
    jwk_rsa(rsa_b, "b", kb, sizeof(kb));
    jwk_ec(ec_a, "e", ke, sizeof(ke));
    snprintf(doc, sizeof(doc),
             "  {\"keys\":[%s,%s,%s,{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"},{\"kty\":\"oct\",\"k\":\"AAAA\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"},{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AA\",\"e\":"
             "\"AQAB\"}]}",
             ka, kb, ke);
    pe_keyset_t *set = set_of(NULL, doc, err, sizeof(err));
    TAP_OK(set != NULL, "JWKS loads, unknown kinds skipped (%s)", set ? "" : err);
    if (set == NULL)
        return;
    TAP_EQ_UINT(set->num, 3, "three keys kept");
    TAP_EQ_INT(verify(set, mint("RS256", "b", "{}", rsa_b)), PE_JWT_OK, "kid b picks key b");
    TAP_EQ_INT(verify(set, mint("RS256", "a", "{}", rsa_b)), PE_JWT_INVALID, "kid a with key b's signature");
    TAP_EQ_INT(verify(set, mint("RS256", NULL, "{}", rsa_b)), PE_JWT_INVALID, "no kid: only keys without a kid are tried");
    TAP_EQ_INT(verify(set, mint("ES256", "e", "{}", ec_a)), PE_JWT_OK, "kid e, ES256");
    TAP_EQ_INT(verify(set, mint("ES256", "a", "{}", ec_a)), PE_JWT_INVALID, "an EC signature under an RSA key's kid");
    TAP_EQ_INT(verify(set, mint("RS256", "zz", "{}", rsa_a)), PE_JWT_INVALID, "unknown kid");
    pe_keyset_release(set);

    /* A kid unknown to the set falls back to the keys that have none (the secret, PEM keys). */
    set = set_of(SECRET, NULL, err, sizeof(err));
    TAP_EQ_INT(verify(set, mint("HS256", "rotating-1", "{}", NULL)), PE_JWT_OK, "HS256 with a kid verifies by the secret");
    pe_keyset_release(set);

    /* "alg" on a JWK narrows it. */
    char narrowed[2200];
    snprintf(narrowed, sizeof(narrowed), "{\"keys\":[%.*s,\"alg\":\"PS256\"}]}", (int)strlen(ka) - 1, ka);
    set = set_of(NULL, narrowed, err, sizeof(err));
    TAP_OK(set != NULL, "a JWK with alg PS256 loads (%s)", set ? "" : err);
    if (set != NULL) {
        TAP_EQ_INT(verify(set, mint("PS256", "a", "{}", rsa_a)), PE_JWT_OK, "PS256 verifies");
        TAP_EQ_INT(verify(set, mint("RS256", "a", "{}", rsa_a)), PE_JWT_INVALID, "RS256 refused by a PS256 key");
        pe_keyset_release(set);
    }
    snprintf(narrowed, sizeof(narrowed), "{\"keys\":[%.*s,\"alg\":\"ES256\"}]}", (int)strlen(ka) - 1, ka);
    TAP_OK(set_of(NULL, narrowed, err, sizeof(err)) == NULL, "an RSA JWK with alg ES256 is refused: %s", err);
    snprintf(narrowed, sizeof(narrowed), "{\"keys\":[%.*s,\"alg\":\"HS256\"}]}", (int)strlen(ka) - 1, ka);
    TAP_OK(set_of(NULL, narrowed, err, sizeof(err)) == NULL, "an RSA JWK with alg HS256 is skipped, leaving none");

    struct {
        const char *doc, *what;
    } bad[] = {
        {"{", "not JSON"},
        {"{\"keys\":{}}", "keys not an array"},
        {"{\"keys\":[]}", "no key"},
        {"{\"keys\":[1]}", "a key not an object"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\"}]}", "RSA without e"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"A=\",\"e\":\"AQAB\"}]}", "RSA n with padding"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":"
         "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}",
         "EC point off the curve"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}", "EC coordinates too short"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "empty kid"},
        {"{\"keys\":[],\"keys\":[]}", "duplicate member"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        pe_keyset_t *s = set_of(NULL, bad[i].doc, err, sizeof(err));
        TAP_OK(s == NULL && strstr(err, "--jwt-key test") != NULL, "%s refused: %s", bad[i].what, err);
        pe_keyset_release(s);
    }
    snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", ka, ka);
    TAP_OK(set_of(NULL, doc, err, sizeof(err)) == NULL && strstr(err, "twice") != NULL, "duplicate kid refused: %s", err);
}

static void
test_claims(void)
{
    char err[256], p[512];
    pe_keyset_t *set = set_of(SECRET, NULL, err, sizeof(err));
    struct {
        const char *payload;
        int want;
    } cases[] = {
        {"{\"exp\":1700000100}", PE_JWT_OK},
        {"{\"exp\":1700000000}", PE_JWT_OK}, /* expired now, within the 30 s leeway */
        {"{\"exp\":1699999971}", PE_JWT_OK}, /* 29 s past */
        {"{\"exp\":1699999970}", PE_JWT_EXPIRED},
        {"{\"exp\":1600000000.5}", PE_JWT_EXPIRED},
        {"{\"exp\":\"1800000000\"}", PE_JWT_INVALID},
        {"{\"exp\":null}", PE_JWT_INVALID},
        {"{\"nbf\":1700000030}", PE_JWT_OK},
        {"{\"nbf\":1700000031}", PE_JWT_INVALID},
        {"{\"nbf\":1700000031,\"exp\":1}", PE_JWT_INVALID}, /* not valid yet wins over expired */
        {"{\"exp\":1,\"channels\":\"news\"}", PE_JWT_INVALID},
        {"{\"sub\":42}", PE_JWT_INVALID},
        {"{\"sub\":\"a\\u0000b\"}", PE_JWT_INVALID},
        {"{\"sub\":\"alice\",\"sub\":\"admin\"}", PE_JWT_INVALID},
        {"{\"channels\":[\"news\",\"user:{sub}\",\"orders.*\"],\"publish\":[\"chat:*\"]}", PE_JWT_OK},
        {"{\"channels\":[\"a*b\"]}", PE_JWT_INVALID},
        {"{\"channels\":[\"{user}\"]}", PE_JWT_INVALID},
        {"{\"channels\":[\"{sub}*\"]}", PE_JWT_INVALID},
        {"{\"channels\":[\"\"]}", PE_JWT_INVALID},
        {"{\"channels\":[\"a b\"]}", PE_JWT_INVALID},
        {"{\"publish\":[7]}", PE_JWT_INVALID},
        {"{\"publish\":{}}", PE_JWT_INVALID},
        {"[]", PE_JWT_INVALID},
        {"\"x\"", PE_JWT_INVALID},
        {"{\"a\":[[[[[[[[1]]]]]]]]}", PE_JWT_INVALID}, /* 9 levels */
        {"{\"a\":[[[[[[[1]]]]]]]}", PE_JWT_OK},        /* 8 levels */
        {"{\"a\":\"[[[[[[[[[[[[\"}", PE_JWT_OK},       /* brackets in a string */
        {"{\"a\":\"\\\"[[[[[[[[[[[[\"}", PE_JWT_OK},
        {"{bad json", PE_JWT_INVALID},
        {"{\"a\":\"\xff\"}", PE_JWT_INVALID},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i)
        TAP_EQ_INT(verify(set, mint("HS256", NULL, cases[i].payload, NULL)), cases[i].want, "payload %s", cases[i].payload);

    /* Pattern count: 64 pass, 65 do not. */
    for (int n = 64; n <= 65; ++n) {
        char big[2048] = "{\"channels\":[";
        for (int i = 0; i != n; ++i)
            snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s\"c%d\"", i ? "," : "", i);
        strcat(big, "]}");
        TAP_EQ_INT(verify(set, mint("HS256", NULL, big, NULL)), n == 64 ? PE_JWT_OK : PE_JWT_INVALID, "%d patterns", n);
    }

    /* What the identity holds. */
    pe_identity_t id;
    char *tok =
        mint("HS256", NULL, "{\"sub\":\"alice\",\"exp\":1700000500,\"channels\":[\"user:{sub}\"],\"publish\":[\"x\"]}", NULL);
    TAP_EQ_INT(pe_jwt_verify(set, &opts, NOW, tok, strlen(tok), &id, NULL), PE_JWT_OK, "identity token");
    TAP_EQ_STR(id.sub, "alice", "sub");
    TAP_EQ_INT(id.exp, 1700000500, "exp");
    TAP_EQ_INT(id.iat, 0, "no iat");
    TAP_EQ_UINT(id.read.num, 1, "one read pattern");
    TAP_EQ_UINT(id.publish.num, 1, "one publish pattern");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_REQUIRED, NULL, &id, "user:alice", 10), PE_ACCESS_OK, "alice reads user:alice");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_REQUIRED, NULL, &id, "user:bob", 8), PE_ACCESS_FORBIDDEN, "not user:bob");
    pe_identity_dispose(&id);

    /* "info" (presence): an object kept minified, at most PE_POLICY_MAX_INFO bytes; anything else
     * refuses the token. */
    tok = mint("HS256", NULL, "{\"sub\":\"a\",\"info\":{ \"name\" : \"A\", \"n\": [1, 2] }}", NULL);
    TAP_EQ_INT(pe_jwt_verify(set, &opts, NOW, tok, strlen(tok), &id, NULL), PE_JWT_OK, "a token with info");
    TAP_EQ_STR(id.info, "{\"name\":\"A\",\"n\":[1,2]}", "info minified");
    TAP_EQ_UINT(id.info_len, strlen("{\"name\":\"A\",\"n\":[1,2]}"), "its length");
    pe_identity_dispose(&id);
    TAP_OK(id.info == NULL, "disposed");
    for (int n = 248; n <= 249; ++n) {
        char payload[400];
        /* {"s":"xx..."} is n + 8 bytes: 256 passes, 257 does not. */
        snprintf(payload, sizeof(payload), "{\"info\":{\"s\":\"%0*d\"}}", n, 0);
        TAP_EQ_INT(verify(set, mint("HS256", NULL, payload, NULL)), n == 248 ? PE_JWT_OK : PE_JWT_INVALID, "info of %d bytes",
                   n + 8);
    }
    TAP_EQ_INT(verify(set, mint("HS256", NULL, "{\"info\":\"x\"}", NULL)), PE_JWT_INVALID, "info a string");
    TAP_EQ_INT(verify(set, mint("HS256", NULL, "{\"info\":[1]}", NULL)), PE_JWT_INVALID, "info an array");
    TAP_EQ_INT(verify(set, mint("HS256", NULL, "{\"info\":null}", NULL)), PE_JWT_OK, "info null: none");

    /* An expired token with a bad signature is invalid, not expired. */
    tok = mint_ex("{\"alg\":\"HS256\"}", "{\"exp\":1}", "HS256", "another secret of at least 32 bytes!!", 37, NULL, 1);
    TAP_EQ_INT(verify(set, tok), PE_JWT_INVALID, "expired and badly signed: invalid");

    /* Issuer and audience. */
    opts.issuer = "https://issuer.example";
    opts.audience = "pushedge";
    struct {
        const char *payload;
        int want;
    } ia[] = {
        {"{\"iss\":\"https://issuer.example\",\"aud\":\"pushedge\"}", PE_JWT_OK},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[\"other\",\"pushedge\"]}", PE_JWT_OK},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[\"other\"]}", PE_JWT_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":\"pushedgeX\"}", PE_JWT_INVALID},
        {"{\"iss\":\"https://issuer.example\"}", PE_JWT_INVALID},
        {"{\"iss\":\"https://evil.example\",\"aud\":\"pushedge\"}", PE_JWT_INVALID},
        {"{\"aud\":\"pushedge\"}", PE_JWT_INVALID},
        {"{\"iss\":[\"https://issuer.example\"],\"aud\":\"pushedge\"}", PE_JWT_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":\"pushedge\",\"exp\":5}", PE_JWT_EXPIRED},
        {"{\"iss\":\"https://evil.example\",\"aud\":\"pushedge\",\"exp\":5}", PE_JWT_INVALID},
    };
    for (size_t i = 0; i != sizeof(ia) / sizeof(ia[0]); ++i)
        TAP_EQ_INT(verify(set, mint("HS256", NULL, ia[i].payload, NULL)), ia[i].want, "iss/aud %s", ia[i].payload);
    opts.issuer = opts.audience = NULL;
    (void)p;
    pe_keyset_release(set);
}

static void
test_malformed(void)
{
    char err[256];
    pe_keyset_t *set = set_of(SECRET, NULL, err, sizeof(err));
    char *good = mint("HS256", NULL, "{}", NULL), buf[16384];
    const char *bad[] = {"",
                         ".",
                         "..",
                         "a.b.c",
                         "a.b",
                         "a.b.c.d",
                         "eyJhbGciOiJIUzI1NiJ9..",
                         "eyJhbGciOiJIUzI1NiJ9.e30",
                         "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",
                         "e30.e30.AAAA"};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        TAP_EQ_INT(verify(set, bad[i]), PE_JWT_INVALID, "'%s'", bad[i]);
    snprintf(buf, sizeof(buf), "%s.", good);
    TAP_EQ_INT(verify(set, buf), PE_JWT_INVALID, "a fourth part");
    snprintf(buf, sizeof(buf), " %s", good);
    TAP_EQ_INT(verify(set, buf), PE_JWT_INVALID, "a leading space");
    snprintf(buf, sizeof(buf), "%s=", good);
    TAP_EQ_INT(verify(set, buf), PE_JWT_INVALID, "signature padding");
    /* Oversized: a valid token whose payload pushes it past 8 KiB. */
    char payload[8000] = "{\"pad\":\"";
    memset(payload + 8, 'x', 6500);
    strcpy(payload + 6508, "\"}");
    char *big = mint("HS256", NULL, payload, NULL);
    TAP_OK(strlen(big) > PE_JWT_MAX_LEN, "the token is %zu bytes", strlen(big));
    TAP_EQ_INT(verify(set, big), PE_JWT_INVALID, "over 8 KiB refused");
    payload[8 + 5000] = '\0';
    strcat(payload, "\"}");
    TAP_EQ_INT(verify(set, mint("HS256", NULL, payload, NULL)), PE_JWT_OK, "a 7 KiB token passes");
    pe_keyset_release(set);
}

static void
test_patterns(void)
{
    struct {
        const char *p;
        int sub_ok, plain_ok;
    } valid[] = {
        {"news", 1, 1},   {"orders.*", 1, 1}, {"*", 1, 1},          {"user:{sub}", 1, 0},   {"{sub}", 1, 0}, {"u:{sub}:*", 1, 0},
        {"{sub}*", 0, 0}, {"a*b", 0, 0},      {"**", 0, 0},         {"{sub", 0, 0},         {"{SUB}", 0, 0}, {"", 0, 0},
        {"a b", 0, 0},    {"a/b", 0, 0},      {"{sub}{sub}", 1, 0}, {"a{sub}b{sub}", 1, 0},
    };
    for (size_t i = 0; i != sizeof(valid) / sizeof(valid[0]); ++i) {
        TAP_EQ_INT(pe_pattern_is_valid(valid[i].p, strlen(valid[i].p), 1), valid[i].sub_ok, "'%s' in a token", valid[i].p);
        TAP_EQ_INT(pe_pattern_is_valid(valid[i].p, strlen(valid[i].p), 0), valid[i].plain_ok, "'%s' public", valid[i].p);
    }
    char longp[300];
    memset(longp, 'a', sizeof(longp));
    TAP_EQ_INT(pe_pattern_is_valid(longp, 256, 1), 1, "256 bytes");
    TAP_EQ_INT(pe_pattern_is_valid(longp, 257, 1), 0, "257 bytes");

    struct {
        const char *pat, *sub, *chan;
        int want;
    } m[] = {
        {"news", NULL, "news", 1},
        {"news", NULL, "news2", 0},
        {"news", NULL, "new", 0},
        {"orders.*", NULL, "orders.1", 1},
        {"orders.*", NULL, "orders.", 1},
        {"orders.*", NULL, "orders", 0},
        {"orders.*", NULL, "ordersX1", 0},
        {"*", NULL, "anything", 1},
        {"user:{sub}", "alice", "user:alice", 1},
        {"user:{sub}", "alice", "user:alicex", 0},
        {"user:{sub}", "alice", "user:alic", 0},
        {"user:{sub}", NULL, "user:", 0},
        {"user:{sub}", "", "user:", 0},
        {"user:{sub}", "*", "user:*", 0}, /* '*' in sub is not a wildcard */
        {"user:{sub}", "*", "user:bob", 0},
        {"user:{sub}", "{sub}", "user:{sub}", 0},   /* nor is {sub} */
        {"user:{sub}", "a b", "user:a b", 0},       /* outside the channel alphabet */
        {"user:{sub}", "al:ice", "user:al:ice", 1}, /* nothing follows {sub}: any name character */
        {"user:{sub}:*", "alice", "user:alice:inbox", 1},
        {"user:{sub}:*", "alice", "user:alice", 0},
        {"user:{sub}:*", "a:b", "user:a:b:x", 0}, /* would read into subject "a"'s channels */
        {"user:{sub}:*", "a", "user:a:b:x", 1},
        {"user:{sub}.x", "a.b", "user:a.b.x", 0},
        {"user:{sub}.x", "a:b", "user:a:b.x", 1},
        {"{sub}", "alice@example.com", "alice@example.com", 1},
        {"{sub}:{sub}", "a", "a:a", 1},
        {"{sub}:{sub}", "a", "a:b", 0},
        {"{su", "a", "{su", 0}, /* an unvalidated pattern stays harmless */
    };
    for (size_t i = 0; i != sizeof(m) / sizeof(m[0]); ++i)
        TAP_EQ_INT(
            pe_pattern_match(m[i].pat, strlen(m[i].pat), m[i].sub, m[i].sub ? strlen(m[i].sub) : 0, m[i].chan, strlen(m[i].chan)),
            m[i].want, "'%s' sub '%s' on '%s'", m[i].pat, m[i].sub ? m[i].sub : "(none)", m[i].chan);
}

static void
test_policy(void)
{
    pe_patterns_t pub = {0};
    pe_patterns_add(&pub, "public.*", 8);
    pe_identity_t anon = {0}, bob = {0};
    bob.authenticated = 1;
    bob.sub = strdup("bob");
    bob.sub_len = 3;
    pe_patterns_add(&bob.read, "user:{sub}", 10);
    pe_patterns_add(&bob.publish, "chat:*", 6);

    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_OFF, &pub, NULL, "secret", 6), PE_ACCESS_OK, "off: anything");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_OPTIONAL, &pub, &anon, "public.x", 8), PE_ACCESS_OK, "optional: public");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_OPTIONAL, &pub, NULL, "secret", 6), PE_ACCESS_UNAUTHORIZED,
               "optional: anonymous, private");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_OPTIONAL, &pub, &bob, "secret", 6), PE_ACCESS_FORBIDDEN, "optional: bob, other");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_OPTIONAL, &pub, &bob, "user:bob", 8), PE_ACCESS_OK, "optional: bob, own");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_OPTIONAL, &pub, &bob, "public.y", 8), PE_ACCESS_OK, "optional: bob, public");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_REQUIRED, &pub, &anon, "public.x", 8), PE_ACCESS_UNAUTHORIZED,
               "required: anonymous, public");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_REQUIRED, &pub, &bob, "public.x", 8), PE_ACCESS_OK, "required: bob, public");
    TAP_EQ_INT(pe_may_subscribe(PE_AUTH_MODE_REQUIRED, NULL, &bob, "user:bob", 8), PE_ACCESS_OK, "required: bob, own");
    TAP_EQ_INT(pe_may_publish(&bob, "chat:1", 6), PE_ACCESS_OK, "bob publishes to chat:1");
    TAP_EQ_INT(pe_may_publish(&bob, "user:bob", 8), PE_ACCESS_FORBIDDEN, "reading is not publishing");
    TAP_EQ_INT(pe_may_publish(&anon, "chat:1", 6), PE_ACCESS_UNAUTHORIZED, "anonymous publish");
    TAP_EQ_INT(pe_may_publish(NULL, "chat:1", 6), PE_ACCESS_UNAUTHORIZED, "no identity");
    for (int i = 1; i != PE_POLICY_MAX_PATTERNS; ++i)
        pe_patterns_add(&pub, "x", 1);
    TAP_EQ_INT(pe_patterns_add(&pub, "x", 1), -1, "the 65th pattern is refused");

    TAP_EQ_INT(pe_auth_mode_parse("off"), PE_AUTH_MODE_OFF, "off");
    TAP_EQ_INT(pe_auth_mode_parse("optional"), PE_AUTH_MODE_OPTIONAL, "optional");
    TAP_EQ_INT(pe_auth_mode_parse("required"), PE_AUTH_MODE_REQUIRED, "required");
    TAP_EQ_INT(pe_auth_mode_parse("Required"), -1, "case matters");
    pe_patterns_dispose(&pub);
    pe_identity_dispose(&bob);
}

static void
test_holder(void)
{
    char err[256];
    pe_keyholder_t *h = pe_keyholder_new(set_of(SECRET, NULL, err, sizeof(err)));
    pe_keyset_t *old = pe_keyholder_acquire(h);
    char *pa = pem_of(rsa_a);
    pe_keyholder_swap(h, set_of(NULL, pa, err, sizeof(err)));
    /* The verification in flight keeps its set after the swap. */
    TAP_EQ_INT(verify(old, mint("HS256", NULL, "{}", NULL)), PE_JWT_OK, "the old set still verifies");
    pe_keyset_release(old);
    pe_keyset_t *cur = pe_keyholder_acquire(h);
    TAP_EQ_INT(verify(cur, mint("HS256", NULL, "{}", NULL)), PE_JWT_INVALID, "the new set has no secret");
    TAP_EQ_INT(verify(cur, mint("RS256", NULL, "{}", rsa_a)), PE_JWT_OK, "the new set has the RSA key");
    pe_keyset_release(cur);
    pe_keyholder_free(h);
    free(pa);

    /* Files: a missing one names itself. */
    const char *files[] = {"/nonexistent/key.pem"};
    TAP_OK(pe_keyset_load(NULL, files, 1, err, sizeof(err)) == NULL && strstr(err, "/nonexistent/key.pem") != NULL,
           "a missing file: %s", err);
    char path[] = "/tmp/test_jwt_XXXXXX";
    int fd = mkstemp(path);
    char jwk[2048], doc[2200];
    jwk_rsa(rsa_a, "a", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}\n", jwk);
    TAP_OK(write(fd, doc, strlen(doc)) == (ssize_t)strlen(doc), "wrote a JWKS file");
    close(fd);
    files[0] = path;
    pe_keyset_t *set = pe_keyset_load(NULL, files, 1, err, sizeof(err));
    TAP_OK(set != NULL, "a JWKS file loads");
    TAP_EQ_INT(verify(set, mint("RS256", "a", "{}", rsa_a)), PE_JWT_OK, "and verifies");
    pe_keyset_release(set);
    unlink(path);
}

/* The expiry notice's time (policy.c pe_token_notice_ms): min(30 s, half the life) before exp. */
static void
test_notice(void)
{
    const uint64_t now = 1700000000000ull;
    TAP_EQ_UINT(pe_token_notice_ms(1700000004, 0, now), now + 2000, "a 4 s token: warned at half its life");
    TAP_EQ_UINT(pe_token_notice_ms(1700003600, 0, now), 1700003600000ull - 30000, "an hour's token: 30 s before exp");
    TAP_EQ_UINT(pe_token_notice_ms(1700000060, 0, now), now + 30000, "a minute's token: 30 s either way");
    TAP_EQ_UINT(pe_token_notice_ms(1700000010, 1699999990, now), 1700000010000ull - 10000,
                "with iat: the life counts from iat (20 s life, warned 10 s before)");
    TAP_EQ_UINT(pe_token_notice_ms(1700000010, 1700000005, now), now + 5000, "an iat in the future is ignored");
    TAP_EQ_UINT(pe_token_notice_ms(1699999990, 0, now), 1699999990000ull, "already past exp: at exp (at once)");
    TAP_EQ_UINT(pe_token_notice_ms(1700000000, 0, now), now, "exp now: now");
    TAP_EQ_UINT(pe_token_notice_ms(1700000001, 0, now + 999), now + 1000, "1 ms left: warned at exp (half of 1 ms rounds to 0)");

    /* iat is read when it is a number before exp; anything else is ignored, not refused. */
    char err[256];
    pe_keyset_t *set = set_of(SECRET, NULL, err, sizeof(err));
    struct {
        const char *payload;
        int64_t iat;
    } cases[] = {
        {"{\"exp\":1700000500,\"iat\":1699999900}", 1699999900},
        {"{\"exp\":1700000500,\"iat\":1700000500}", 0},
        {"{\"exp\":1700000500,\"iat\":\"x\"}", 0},
        {"{\"iat\":1699999900}", 0},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        pe_identity_t id;
        char *tok = mint("HS256", NULL, cases[i].payload, NULL);
        TAP_EQ_INT(pe_jwt_verify(set, &opts, NOW, tok, strlen(tok), &id, NULL), PE_JWT_OK, "%s verifies", cases[i].payload);
        TAP_EQ_INT(id.iat, cases[i].iat, "iat of %s", cases[i].payload);
        pe_identity_dispose(&id);
    }
    pe_keyset_release(set);
}

int
main(void)
{
    rsa_a = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa_b = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec_a = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (rsa_a == NULL || rsa_b == NULL || ec_a == NULL)
        tap_skip_all("OpenSSL could not generate test keys");
    tap_subtest("b64url", test_b64url);
    tap_subtest("hmac", test_hmac);
    tap_subtest("none", test_none);
    tap_subtest("rsa_ec", test_rsa_ec);
    tap_subtest("jwks", test_jwks);
    tap_subtest("claims", test_claims);
    tap_subtest("malformed", test_malformed);
    tap_subtest("patterns", test_patterns);
    tap_subtest("policy", test_policy);
    tap_subtest("holder", test_holder);
    tap_subtest("notice", test_notice);
    EVP_PKEY_free(rsa_a);
    EVP_PKEY_free(rsa_b);
    EVP_PKEY_free(ec_a);
    return tap_done();
}

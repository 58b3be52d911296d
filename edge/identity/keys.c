/*
 * keys.c: loading and sharing JWT verification keys (keys.h). PEM files hold SubjectPublicKeyInfo
 * blocks ("BEGIN PUBLIC KEY"); a file whose first non-blank character is '{' is a JWKS (RFC 7517
 * section 5). OpenSSL 3 builds the keys (EVP_PKEY_fromdata for JWK members) and checks them;
 * only RSA of 2048 bits or more and EC on P-256 are kept, since those are the only keys of the
 * algorithms pushedge verifies (RS256, PS256, ES256).
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "edge/identity/b64url.h"
#include "edge/identity/keys.h"

static const struct {
    const char *name;
    unsigned bit;
} jwa_names[] = {
    {"HS256", PE_JWA_HS256}, {"HS384", PE_JWA_HS384}, {"HS512", PE_JWA_HS512},
    {"RS256", PE_JWA_RS256}, {"PS256", PE_JWA_PS256}, {"ES256", PE_JWA_ES256},
};

unsigned
pe_jwa_from_name(const char *name, size_t len)
{
    for (size_t i = 0; i != sizeof(jwa_names) / sizeof(jwa_names[0]); ++i)
        if (strlen(jwa_names[i].name) == len && memcmp(jwa_names[i].name, name, len) == 0)
            return jwa_names[i].bit;
    return 0;
}

/* A set being built: keys appended to a fixed-capacity array, moved into the set at the end. */
typedef struct st_builder_t {
    pe_key_t keys[PE_KEYS_MAX];
    size_t num;
    char *err;
    size_t errlen;
} builder_t;

static int fail(builder_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int
fail(builder_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, b->errlen, fmt, ap);
    va_end(ap);
    /* One log line: a control character from a file shows as '?'. */
    for (char *p = b->err; b->errlen != 0 && *p != '\0'; ++p)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    ERR_clear_error();
    return -1;
}

static void
key_dispose(pe_key_t *key)
{
    if (key->secret != NULL) {
        OPENSSL_cleanse(key->secret, key->secret_len);
        pe_free(key->secret);
    }
    pe_free(key->kid);
    EVP_PKEY_free(key->pkey);
}

/* Adds an RSA or EC public key after checking its size or curve; takes over pkey. */
static int
add_pkey(builder_t *b, const char *name, EVP_PKEY *pkey, const char *kid, size_t kid_len, unsigned algs)
{
    unsigned allowed;
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA: {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < PE_KEYS_MIN_RSA_BITS) {
            EVP_PKEY_free(pkey);
            return fail(b, "--jwt-key %s: RSA key of %d bits; at least %d are required", name, bits, PE_KEYS_MIN_RSA_BITS);
        }
        allowed = PE_JWA_RSA;
        break;
    }
    case EVP_PKEY_EC: {
        char group[64];
        size_t glen = 0;
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen) ||
            strcmp(group, "prime256v1") != 0) {
            EVP_PKEY_free(pkey);
            return fail(b, "--jwt-key %s: EC key not on the P-256 curve (ES256 is the only EC algorithm)", name);
        }
        allowed = PE_JWA_ES256;
        break;
    }
    default:
        EVP_PKEY_free(pkey);
        return fail(b, "--jwt-key %s: unsupported key type (RSA or EC P-256 public keys only)", name);
    }
    if (algs != 0 && (algs & allowed) == 0) {
        EVP_PKEY_free(pkey);
        return fail(b, "--jwt-key %s: the key's \"alg\" does not fit its type", name);
    }
    if (b->num == PE_KEYS_MAX) {
        EVP_PKEY_free(pkey);
        return fail(b, "--jwt-key %s: more than %u keys in all", name, PE_KEYS_MAX);
    }
    if (kid != NULL) {
        for (size_t i = 0; i != b->num; ++i)
            if (b->keys[i].kid != NULL && strlen(b->keys[i].kid) == kid_len && memcmp(b->keys[i].kid, kid, kid_len) == 0) {
                EVP_PKEY_free(pkey);
                return fail(b, "--jwt-key %s: kid \"%.64s\" appears twice", name, b->keys[i].kid);
            }
    }
    pe_key_t *key = &b->keys[b->num++];
    memset(key, 0, sizeof(*key));
    key->algs = algs != 0 ? algs : allowed;
    key->kid = kid != NULL ? pe_strndup(kid, kid_len) : NULL;
    key->pkey = pkey;
    return 0;
}

/* ---- PEM ------------------------------------------------------------------------------------- */

static int
parse_pem(builder_t *b, const char *name, const char *text, size_t len)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (bio == NULL)
        return fail(b, "--jwt-key %s: out of memory", name);
    size_t found = 0;
    int ret = 0;
    EVP_PKEY *pkey;
    while ((pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) != NULL) {
        ++found;
        if ((ret = add_pkey(b, name, pkey, NULL, 0, 0)) != 0)
            break;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (ret == 0 && found == 0)
        return fail(b, "--jwt-key %s: neither a JWKS nor a PEM public key (\"BEGIN PUBLIC KEY\")", name);
    return ret;
}

/* ---- JWKS ------------------------------------------------------------------------------------ */

/* Decodes a base64url member of a JWK into a fresh buffer; *out_len its length. NULL if absent
 * or invalid. */
static unsigned char *
member_bytes(json_t *jwk, const char *member, size_t *out_len)
{
    json_t *borrowed_v = json_object_get(jwk, member);
    if (!json_is_string(borrowed_v))
        return NULL;
    const char *s = json_string_value(borrowed_v);
    size_t len = json_string_length(borrowed_v);
    unsigned char *buf = pe_malloc(PE_B64URL_DECODED_MAX(len));
    long n = pe_b64url_decode(s, len, buf);
    if (n <= 0) {
        pe_free(buf);
        return NULL;
    }
    *out_len = (size_t)n;
    return buf;
}

/* Builds an EVP_PKEY from OSSL_PARAMs; NULL if OpenSSL refuses it (not on the curve, say). */
static EVP_PKEY *
pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    if (pkey != NULL) {
        /* fromdata takes the numbers as given; the public check refuses an EC point off the curve
         * and degenerate RSA moduli. */
        EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        int ok = check != NULL && EVP_PKEY_public_check(check) == 1;
        EVP_PKEY_CTX_free(check);
        if (!ok) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    return pkey;
}

static EVP_PKEY *
jwk_rsa(json_t *jwk)
{
    size_t nlen = 0, elen = 0;
    unsigned char *n = member_bytes(jwk, "n", &nlen), *e = member_bytes(jwk, "e", &elen);
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    if (n == NULL || e == NULL || nlen > 2048 || elen > 8)
        goto Exit;
    bn_n = BN_bin2bn(n, (int)nlen, NULL);
    bn_e = BN_bin2bn(e, (int)elen, NULL);
    if (bn_n == NULL || bn_e == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
        goto Exit;
    pkey = pkey_from_params("RSA", bld);
Exit:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    pe_free(n);
    pe_free(e);
    return pkey;
}

static EVP_PKEY *
jwk_ec(json_t *jwk)
{
    size_t xlen = 0, ylen = 0;
    unsigned char *x = member_bytes(jwk, "x", &xlen), *y = member_bytes(jwk, "y", &ylen);
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    /* RFC 7518 6.2.1.2: the coordinates are exactly the field size, 32 bytes for P-256. */
    if (x == NULL || y == NULL || xlen != 32 || ylen != 32)
        goto Exit;
    unsigned char point[65];
    point[0] = 0x04; /* uncompressed (SEC 1 2.3.3) */
    memcpy(point + 1, x, 32);
    memcpy(point + 33, y, 32);
    if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
        goto Exit;
    pkey = pkey_from_params("EC", bld);
Exit:
    OSSL_PARAM_BLD_free(bld);
    pe_free(x);
    pe_free(y);
    return pkey;
}

static int
member_is(json_t *jwk, const char *member, const char *value)
{
    json_t *borrowed_v = json_object_get(jwk, member);
    return json_is_string(borrowed_v) && strcmp(json_string_value(borrowed_v), value) == 0;
}

/* A JWKS: {"keys": [JWK, ...]}. Keys of a type or use pushedge does not verify with are skipped
 * (RFC 7517 5: "SHOULD ignore" what is not understood), so an identity provider's set that also
 * lists, say, Ed25519 or encryption keys loads; a malformed key of a supported type fails. */
static int
parse_jwks(builder_t *b, const char *name, const char *text, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(b, "--jwt-key %s: JWKS is not JSON: line %d: %s", name, jerr.line, jerr.text);
    int ret = 0;
    size_t before = b->num;
    json_t *borrowed_keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(borrowed_keys)) {
        ret = fail(b, "--jwt-key %s: a JWKS is an object with a \"keys\" array", name);
        goto Exit;
    }
    size_t i;
    json_t *borrowed_jwk;
    json_array_foreach(borrowed_keys, i, borrowed_jwk)
    {
        if (!json_is_object(borrowed_jwk)) {
            ret = fail(b, "--jwt-key %s: keys[%zu] is not an object", name, i);
            goto Exit;
        }
        json_t *borrowed_use = json_object_get(borrowed_jwk, "use");
        if (borrowed_use != NULL && !member_is(borrowed_jwk, "use", "sig"))
            continue;
        unsigned algs = 0;
        json_t *borrowed_alg = json_object_get(borrowed_jwk, "alg");
        if (borrowed_alg != NULL) {
            if (!json_is_string(borrowed_alg) ||
                (algs = pe_jwa_from_name(json_string_value(borrowed_alg), json_string_length(borrowed_alg))) == 0 ||
                (algs & PE_JWA_HMAC) != 0)
                continue; /* an algorithm we do not verify with: not our key */
        }
        const char *kid = NULL;
        size_t kid_len = 0;
        json_t *borrowed_kid = json_object_get(borrowed_jwk, "kid");
        if (borrowed_kid != NULL) {
            if (!json_is_string(borrowed_kid) || (kid_len = json_string_length(borrowed_kid)) == 0 || kid_len > PE_KEYS_MAX_KID ||
                memchr(json_string_value(borrowed_kid), '\0', kid_len) != NULL) {
                ret = fail(b, "--jwt-key %s: keys[%zu].kid must be a string of 1 to %u bytes", name, i, PE_KEYS_MAX_KID);
                goto Exit;
            }
            kid = json_string_value(borrowed_kid);
        }
        EVP_PKEY *pkey;
        if (member_is(borrowed_jwk, "kty", "RSA")) {
            if ((pkey = jwk_rsa(borrowed_jwk)) == NULL) {
                ret = fail(b, "--jwt-key %s: keys[%zu]: \"n\" and \"e\" do not make an RSA public key", name, i);
                goto Exit;
            }
        } else if (member_is(borrowed_jwk, "kty", "EC")) {
            if (!member_is(borrowed_jwk, "crv", "P-256"))
                continue;
            if ((pkey = jwk_ec(borrowed_jwk)) == NULL) {
                ret = fail(b, "--jwt-key %s: keys[%zu]: \"x\" and \"y\" do not make a P-256 public key", name, i);
                goto Exit;
            }
        } else {
            continue;
        }
        if ((ret = add_pkey(b, name, pkey, kid, kid_len, algs)) != 0)
            goto Exit;
    }
    if (b->num == before)
        ret = fail(b, "--jwt-key %s: the JWKS holds no RSA or P-256 signature key", name);
Exit:
    json_decref(root);
    return ret;
}

/* ---- sets ------------------------------------------------------------------------------------ */

pe_keyset_t *
pe_keyset_parse(const char *secret, const char *const *names, const char *const *texts, const size_t *lens, size_t num_files,
                char *err, size_t errlen)
{
    builder_t *b = pe_calloc(1, sizeof(*b));
    b->err = err;
    b->errlen = errlen;
    pe_keyset_t *set = NULL;
    if (secret != NULL) {
        size_t slen = strlen(secret);
        /* RFC 7518 3.2: a key of at least the hash size; shorter secrets are guessable offline
         * from any token. 32 bytes covers HS256; HS384/512 then get less than their size, which
         * the docs point out. */
        if (slen < 32) {
            fail(b, "--jwt-secret: at least 32 bytes are required (got %zu)", slen);
            goto Exit;
        }
        pe_key_t *key = &b->keys[b->num++];
        key->algs = PE_JWA_HMAC;
        key->secret = pe_malloc(slen);
        memcpy(key->secret, secret, slen);
        key->secret_len = slen;
    }
    for (size_t i = 0; i != num_files; ++i) {
        size_t at = 0;
        while (at != lens[i] && (texts[i][at] == ' ' || texts[i][at] == '\t' || texts[i][at] == '\r' || texts[i][at] == '\n'))
            ++at;
        int r = at != lens[i] && texts[i][at] == '{' ? parse_jwks(b, names[i], texts[i], lens[i])
                                                     : parse_pem(b, names[i], texts[i], lens[i]);
        if (r != 0)
            goto Exit;
    }
    if (b->num == 0) {
        fail(b, "no JWT key: --jwt-secret or --jwt-key is required");
        goto Exit;
    }
    set = pe_malloc(sizeof(*set) + b->num * sizeof(set->keys[0]));
    set->_refcnt = 1;
    set->num = b->num;
    memcpy(set->keys, b->keys, b->num * sizeof(b->keys[0]));
    b->num = 0;
Exit:
    for (size_t i = 0; i != b->num; ++i)
        key_dispose(&b->keys[i]);
    pe_free(b);
    return set;
}

pe_keyset_t *
pe_keyset_load(const char *secret, const char *const *files, size_t num_files, char *err, size_t errlen)
{
    char **texts = pe_calloc(num_files, sizeof(*texts));
    size_t *lens = pe_calloc(num_files, sizeof(*lens));
    pe_keyset_t *set = NULL;
    size_t i;
    for (i = 0; i != num_files; ++i) {
        FILE *fp = fopen(files[i], "rb");
        if (fp == NULL) {
            snprintf(err, errlen, "--jwt-key %s: cannot open: %s", files[i], strerror(errno));
            goto Exit;
        }
        texts[i] = pe_malloc(PE_KEYS_MAX_FILE + 1);
        lens[i] = fread(texts[i], 1, PE_KEYS_MAX_FILE + 1, fp);
        int bad = ferror(fp);
        fclose(fp);
        if (bad || lens[i] > PE_KEYS_MAX_FILE) {
            snprintf(err, errlen, "--jwt-key %s: %s", files[i], bad ? "read error" : "larger than 1 MiB");
            ++i;
            goto Exit;
        }
    }
    set = pe_keyset_parse(secret, files, (const char *const *)texts, lens, num_files, err, errlen);
Exit:
    for (size_t j = 0; j != num_files; ++j)
        pe_free(texts[j]);
    pe_free(texts);
    pe_free(lens);
    return set;
}

pe_keyset_t *
pe_keyset_retain(pe_keyset_t *set)
{
    __atomic_add_fetch(&set->_refcnt, 1, __ATOMIC_RELAXED);
    return set;
}

void
pe_keyset_release(pe_keyset_t *set)
{
    if (set == NULL || __atomic_sub_fetch(&set->_refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; i != set->num; ++i)
        key_dispose(&set->keys[i]);
    pe_free(set);
}

struct st_pe_keyholder_t {
    pthread_mutex_t mutex;
    pe_keyset_t *set;
};

pe_keyholder_t *
pe_keyholder_new(pe_keyset_t *set)
{
    pe_keyholder_t *h = pe_calloc(1, sizeof(*h));
    pthread_mutex_init(&h->mutex, NULL);
    h->set = set;
    return h;
}

pe_keyset_t *
pe_keyholder_acquire(pe_keyholder_t *h)
{
    pthread_mutex_lock(&h->mutex);
    pe_keyset_t *set = h->set != NULL ? pe_keyset_retain(h->set) : NULL;
    pthread_mutex_unlock(&h->mutex);
    return set;
}

void
pe_keyholder_swap(pe_keyholder_t *h, pe_keyset_t *set)
{
    pthread_mutex_lock(&h->mutex);
    pe_keyset_t *old = h->set;
    h->set = set;
    pthread_mutex_unlock(&h->mutex);
    pe_keyset_release(old); /* outside the lock: freeing keys takes a while */
}

void
pe_keyholder_free(pe_keyholder_t *h)
{
    if (h == NULL)
        return;
    pe_keyset_release(h->set);
    pthread_mutex_destroy(&h->mutex);
    pe_free(h);
}

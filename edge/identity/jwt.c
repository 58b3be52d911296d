/*
 * jwt.c: JWT verification (jwt.h) on OpenSSL's EVP interface. The order matters: the header is
 * read only for "alg" and "kid"; the signature is checked before a byte of the payload is
 * parsed, so unauthenticated input reaches only the base64url decoder and a small, bounded JSON
 * header; expiry is reported only for a token that is otherwise valid, so "token_expired" tells
 * the client that a fresh token of the same kind will do.
 */
#include <jansson.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <string.h>
#include "pubsub/alloc.h"
#include "edge/identity/b64url.h"
#include "edge/identity/jwt.h"

/* 1 if the JSON text nests no deeper than PE_JWT_MAX_DEPTH (brackets outside strings counted).
 * jansson's own limit is 2048 levels; ours keeps a token's parse small and flat. */
static int
depth_ok(const unsigned char *s, size_t len)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; ++i) { /* '<': an escape skips a byte, maybe the last */
        unsigned char c = s[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > PE_JWT_MAX_DEPTH)
                return 0;
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    return 1;
}

/* Decodes one base64url part and parses it as a JSON object; NULL if any step fails. */
static json_t *
decode_json(const char *s, size_t len, const char **why, const char *what)
{
    unsigned char *buf = pe_malloc(PE_B64URL_DECODED_MAX(len));
    json_t *obj = NULL;
    long n = pe_b64url_decode(s, len, buf);
    if (n < 0) {
        *why = what[0] == 'h' ? "header is not base64url" : "payload is not base64url";
        goto Exit;
    }
    if (!depth_ok(buf, (size_t)n)) {
        *why = "JSON nested too deep";
        goto Exit;
    }
    /* Duplicate members are refused: two "sub" or "exp" would mean different things to
     * different parsers. */
    obj = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (obj != NULL && !json_is_object(obj)) {
        json_decref(obj);
        obj = NULL;
    }
    if (obj == NULL)
        *why = what[0] == 'h' ? "header is not a JSON object" : "payload is not a JSON object";
Exit:
    pe_free(buf);
    return obj;
}

static int
verify_hmac(const pe_key_t *key, unsigned alg, const unsigned char *input, size_t inlen, const unsigned char *sig, size_t siglen)
{
    const EVP_MD *md = alg == PE_JWA_HS256 ? EVP_sha256() : alg == PE_JWA_HS384 ? EVP_sha384() : EVP_sha512();
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (HMAC(md, key->secret, (int)key->secret_len, input, inlen, mac, &maclen) == NULL)
        return 0;
    return siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
}

/* JWS ES256 signatures are R || S, 32 bytes each (RFC 7518 3.4); OpenSSL verifies DER. */
static unsigned char *
es256_to_der(const unsigned char *sig, size_t siglen, int *derlen)
{
    if (siglen != 64)
        return NULL;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
    unsigned char *der = NULL;
    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
    } else if ((*derlen = i2d_ECDSA_SIG(es, &der)) <= 0) {
        der = NULL;
    }
    ECDSA_SIG_free(es);
    return der;
}

static int
verify_pkey(const pe_key_t *key, unsigned alg, const unsigned char *input, size_t inlen, const unsigned char *sig, size_t siglen)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *der = NULL;
    int derlen = 0, ok = 0;
    if (mctx == NULL || EVP_DigestVerifyInit(mctx, &pctx, EVP_sha256(), NULL, key->pkey) != 1)
        goto Exit;
    if (alg == PE_JWA_PS256) {
        /* RFC 7518 3.5: MGF1 with SHA-256 and a salt as long as the hash. */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1)
            goto Exit;
    }
    if (alg == PE_JWA_ES256) {
        if ((der = es256_to_der(sig, siglen, &derlen)) == NULL)
            goto Exit;
        sig = der;
        siglen = (size_t)derlen;
    }
    ok = EVP_DigestVerify(mctx, sig, siglen, input, inlen) == 1;
Exit:
    OPENSSL_free(der);
    EVP_MD_CTX_free(mctx);
    ERR_clear_error();
    return ok;
}

/* Tries the keys that may verify alg: the one named by kid if the set has it, else every key of
 * the right kind without a kid, so a token issued with a kid still verifies against
 * --jwt-secret or a PEM key. Returns 1 on the first key that verifies. */
static int
verify_signature(const pe_keyset_t *keys, unsigned alg, const char *kid, size_t kid_len, const unsigned char *input, size_t inlen,
                 const unsigned char *sig, size_t siglen)
{
    int named = 0;
    if (kid != NULL)
        for (size_t i = 0; i != keys->num; ++i)
            if (keys->keys[i].kid != NULL && strlen(keys->keys[i].kid) == kid_len && memcmp(keys->keys[i].kid, kid, kid_len) == 0)
                named = 1;
    for (size_t i = 0; i != keys->num; ++i) {
        const pe_key_t *key = &keys->keys[i];
        if ((key->algs & alg) == 0)
            continue;
        if (named ? key->kid == NULL || strlen(key->kid) != kid_len || memcmp(key->kid, kid, kid_len) != 0 : key->kid != NULL)
            continue;
        int ok = (alg & PE_JWA_HMAC) != 0 ? key->secret != NULL && verify_hmac(key, alg, input, inlen, sig, siglen)
                                          : key->pkey != NULL && verify_pkey(key, alg, input, inlen, sig, siglen);
        if (ok)
            return 1;
    }
    return 0;
}

/* A NumericDate claim (RFC 7519 2): a finite JSON number. 0 and *out if present and valid, 1
 * if absent, -1 if of the wrong type. */
static int
numeric_date(json_t *claims, const char *name, double *out)
{
    json_t *borrowed_v = json_object_get(claims, name);
    if (borrowed_v == NULL)
        return 1;
    if (!json_is_number(borrowed_v) || !isfinite(json_number_value(borrowed_v)))
        return -1;
    *out = json_number_value(borrowed_v);
    return 0;
}

static int
audience_ok(json_t *claims, const char *audience)
{
    json_t *borrowed_aud = json_object_get(claims, "aud");
    if (json_is_string(borrowed_aud))
        return strcmp(json_string_value(borrowed_aud), audience) == 0;
    if (!json_is_array(borrowed_aud) || json_array_size(borrowed_aud) > PE_POLICY_MAX_PATTERNS)
        return 0;
    size_t i;
    json_t *borrowed_item;
    json_array_foreach(borrowed_aud, i, borrowed_item) if (json_is_string(borrowed_item) &&
                                                           strcmp(json_string_value(borrowed_item), audience) == 0) return 1;
    return 0;
}

/* "channels" / "publish": absent (nothing), or an array of valid patterns. -1 if malformed. */
static int
read_patterns(json_t *claims, const char *name, pe_patterns_t *out)
{
    json_t *borrowed_list = json_object_get(claims, name);
    if (borrowed_list == NULL)
        return 0;
    if (!json_is_array(borrowed_list) || json_array_size(borrowed_list) > PE_POLICY_MAX_PATTERNS)
        return -1;
    size_t i;
    json_t *borrowed_item;
    json_array_foreach(borrowed_list, i, borrowed_item)
    {
        if (!json_is_string(borrowed_item) ||
            !pe_pattern_is_valid(json_string_value(borrowed_item), json_string_length(borrowed_item), 1) ||
            pe_patterns_add(out, json_string_value(borrowed_item), json_string_length(borrowed_item)) != 0)
            return -1;
    }
    return 0;
}

pe_jwt_result_t
pe_jwt_verify(const pe_keyset_t *keys, const pe_jwt_opts_t *opts, int64_t now, const char *token, size_t len, pe_identity_t *out,
              const char **why)
{
    const char *dummy;
    json_t *header = NULL, *claims = NULL;
    unsigned char *sig = NULL;
    pe_jwt_result_t ret = PE_JWT_INVALID;
    if (why == NULL)
        why = &dummy;
    *why = NULL;
    memset(out, 0, sizeof(*out));

    if (len == 0 || len > PE_JWT_MAX_LEN) {
        *why = "token empty or too long";
        goto Exit;
    }
    const char *dot1 = memchr(token, '.', len), *dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', token + len - dot1 - 1) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', token + len - dot2 - 1) != NULL) {
        *why = "not three dot-separated parts";
        goto Exit;
    }

    /* The header: "alg" picks among the key's algorithms; "crit" names extensions we do not
     * implement, so it is refused (RFC 7515 4.1.11); "jku", "jwk", "x5u" are never followed. */
    if ((header = decode_json(token, (size_t)(dot1 - token), why, "header")) == NULL)
        goto Exit;
    json_t *borrowed_alg = json_object_get(header, "alg"), *borrowed_kid = json_object_get(header, "kid");
    unsigned alg;
    if (!json_is_string(borrowed_alg) ||
        (alg = pe_jwa_from_name(json_string_value(borrowed_alg), json_string_length(borrowed_alg))) == 0) {
        *why = "alg missing or not supported";
        goto Exit;
    }
    if (json_object_get(header, "crit") != NULL) {
        *why = "crit header not supported";
        goto Exit;
    }
    if (borrowed_kid != NULL && (!json_is_string(borrowed_kid) || json_string_length(borrowed_kid) > PE_KEYS_MAX_KID)) {
        *why = "kid not a string";
        goto Exit;
    }

    size_t siglen_text = (size_t)(token + len - dot2 - 1);
    sig = pe_malloc(PE_B64URL_DECODED_MAX(siglen_text));
    long siglen = pe_b64url_decode(dot2 + 1, siglen_text, sig);
    if (siglen <= 0) {
        *why = "signature missing or not base64url";
        goto Exit;
    }
    if (!verify_signature(keys, alg, borrowed_kid != NULL ? json_string_value(borrowed_kid) : NULL,
                          borrowed_kid != NULL ? json_string_length(borrowed_kid) : 0, (const unsigned char *)token,
                          (size_t)(dot2 - token), sig, (size_t)siglen)) {
        *why = "no key verifies the signature";
        goto Exit;
    }

    /* Authenticated from here on. */
    if ((claims = decode_json(dot1 + 1, (size_t)(dot2 - dot1 - 1), why, "payload")) == NULL)
        goto Exit;
    double exp = 0, nbf = 0;
    int has_exp = numeric_date(claims, "exp", &exp), has_nbf = numeric_date(claims, "nbf", &nbf);
    if (has_exp < 0 || has_nbf < 0) {
        *why = "exp or nbf not a number";
        goto Exit;
    }
    if (has_nbf == 0 && (double)now + (double)opts->leeway < nbf) {
        *why = "not valid yet (nbf)";
        goto Exit;
    }
    if (opts->issuer != NULL) {
        json_t *borrowed_iss = json_object_get(claims, "iss");
        if (!json_is_string(borrowed_iss) || strcmp(json_string_value(borrowed_iss), opts->issuer) != 0) {
            *why = "wrong issuer";
            goto Exit;
        }
    }
    if (opts->audience != NULL && !audience_ok(claims, opts->audience)) {
        *why = "wrong audience";
        goto Exit;
    }
    json_t *borrowed_sub = json_object_get(claims, "sub");
    if (borrowed_sub != NULL) {
        if (!json_is_string(borrowed_sub) || json_string_length(borrowed_sub) > PE_POLICY_MAX_SUB ||
            memchr(json_string_value(borrowed_sub), '\0', json_string_length(borrowed_sub)) != NULL) {
            *why = "sub not a string or too long";
            goto Exit;
        }
        out->sub = pe_strndup(json_string_value(borrowed_sub), json_string_length(borrowed_sub));
        out->sub_len = json_string_length(borrowed_sub);
    }
    /* "info": what presence lists with the connection. Refused rather than dropped when it is
     * not an object or too big: the issuer's mistake shows at once, not as a member without it. */
    json_t *borrowed_info = json_object_get(claims, "info");
    if (borrowed_info != NULL && !json_is_null(borrowed_info)) {
        char *text = json_is_object(borrowed_info) ? json_dumps(borrowed_info, JSON_COMPACT) : NULL;
        size_t tlen = text != NULL ? strlen(text) : 0;
        if (text == NULL || tlen > PE_POLICY_MAX_INFO) {
            free(text); /* jansson's (the libc heap, alloc.h) */
            *why = "info not an object or over 256 bytes";
            goto Exit;
        }
        out->info = pe_strndup(text, tlen);
        out->info_len = tlen;
        free(text);
    }
    if (read_patterns(claims, "channels", &out->read) != 0 || read_patterns(claims, "publish", &out->publish) != 0) {
        *why = "channels or publish not an array of patterns";
        goto Exit;
    }
    if (has_exp == 0) {
        if ((double)now >= exp + (double)opts->leeway) {
            *why = "expired";
            ret = PE_JWT_EXPIRED;
            goto Exit;
        }
        /* Clamped so later arithmetic on it cannot overflow; 0 is reserved for "none". */
        out->exp = exp < 1 ? 1 : exp > 1e15 ? (int64_t)1e15 : (int64_t)exp;
        /* "iat" only times the expiry notice (policy.h pe_token_notice_ms): one that is not a
         * number, or not before exp, is ignored rather than refused, as before it was read. */
        double iat = 0;
        if (numeric_date(claims, "iat", &iat) == 0 && iat >= 1 && iat < exp)
            out->iat = (int64_t)iat;
    }
    out->authenticated = 1;
    ret = PE_JWT_OK;
Exit:
    if (ret != PE_JWT_OK)
        pe_identity_dispose(out);
    json_decref(header);
    json_decref(claims);
    pe_free(sig);
    return ret;
}

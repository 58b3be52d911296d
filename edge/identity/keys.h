/*
 * keys.h: the verification keys of JSON Web Tokens (docs/auth.md "Keys"), as one immutable,
 * reference-counted set: the HMAC secret of --jwt-secret and the RSA / EC public keys of every
 * --jwt-key file (PEM or JWKS). Each key carries the algorithms it may verify, so the token's
 * "alg" header can only choose among them: an RSA or EC key never verifies an HMAC token (the
 * algorithm-confusion attack), and nothing verifies "none".
 *
 * A set never changes once built; SIGHUP builds a new one and swaps it into a pe_keyholder_t,
 * so a thread verifying a token keeps the set it took until it releases it.
 */
#ifndef PE_KEYS_H
#define PE_KEYS_H

#include <stddef.h>
#include <stdint.h>

/* The algorithms pushedge verifies (RFC 7518 section 3.1), as bits of a key's allowed mask. */
typedef enum en_pe_jwa_t {
    PE_JWA_HS256 = 1u << 0,
    PE_JWA_HS384 = 1u << 1,
    PE_JWA_HS512 = 1u << 2,
    PE_JWA_RS256 = 1u << 3,
    PE_JWA_PS256 = 1u << 4,
    PE_JWA_ES256 = 1u << 5,
} pe_jwa_t;
#define PE_JWA_HMAC (PE_JWA_HS256 | PE_JWA_HS384 | PE_JWA_HS512)
#define PE_JWA_RSA (PE_JWA_RS256 | PE_JWA_PS256)

/** The bit of an "alg" header value, or 0 for anything else ("none" included). */
unsigned pe_jwa_from_name(const char *name, size_t len);

/* Bounds of a key set: a key file is read whole, and a JWKS of a few rotating keys is small. */
#define PE_KEYS_MAX_FILE (1u << 20)
#define PE_KEYS_MAX 64
#define PE_KEYS_MAX_KID 256
/* RSA keys shorter than this are refused at load (RFC 7518 3.3 requires 2048 bits). */
#define PE_KEYS_MIN_RSA_BITS 2048

typedef struct st_pe_key_t {
    unsigned algs; /* pe_jwa_t bits this key may verify */
    char *kid;     /* NULL: no key id (a PEM key, the secret) */
    /* HMAC: the secret; otherwise an EVP_PKEY (RSA or EC P-256). */
    unsigned char *secret;
    size_t secret_len;
    void *pkey; /* EVP_PKEY * */
} pe_key_t;

typedef struct st_pe_keyset_t {
    uint32_t _refcnt; /* atomic */
    size_t num;
    pe_key_t keys[];
} pe_keyset_t;

/**
 * Builds a set from an HMAC secret (may be NULL) and key files (PEM public keys, one or more
 * per file, or a JWKS JSON document). Returns the set with one reference, or NULL with a
 * one-line message naming the file in err. A set with no key at all is an error too.
 */
pe_keyset_t *pe_keyset_load(const char *secret, const char *const *files, size_t num_files, char *err, size_t errlen);
/**
 * The same from the texts of the files (names used in messages only): what the unit tests and
 * the fuzzer call. texts[i] is lens[i] bytes, not necessarily NUL-terminated.
 */
pe_keyset_t *pe_keyset_parse(const char *secret, const char *const *names, const char *const *texts, const size_t *lens,
                             size_t num_files, char *err, size_t errlen);
/** Adds a reference; any thread. Returns set. */
pe_keyset_t *pe_keyset_retain(pe_keyset_t *set);
/** Drops a reference; frees the set at zero. NULL is ignored. Any thread. */
void pe_keyset_release(pe_keyset_t *set);

/**
 * The current key set of the process, replaced whole on reload. acquire takes a reference to
 * the set of the moment (under a mutex: taking it and counting it must be one step, or a reload
 * in between could free it); the caller releases it when its verification is done.
 */
typedef struct st_pe_keyholder_t pe_keyholder_t;
pe_keyholder_t *pe_keyholder_new(pe_keyset_t *set); /* takes over the caller's reference */
pe_keyset_t *pe_keyholder_acquire(pe_keyholder_t *holder);
void pe_keyholder_swap(pe_keyholder_t *holder, pe_keyset_t *set); /* takes over set's reference */
void pe_keyholder_free(pe_keyholder_t *holder);

#endif

/*
 * jwt.h: JSON Web Token verification (RFC 7519 over the JWS compact serialization of RFC 7515),
 * docs/auth.md. A token verifies when its "alg" is one the chosen key allows (keys.h), its
 * signature is right, and its claims pass: "exp" and "nbf" against the clock with a leeway,
 * "iss" and "aud" when configured, "sub", "channels" and "publish" well formed. Pure: the time
 * is a parameter; any thread (the key set is read only).
 */
#ifndef PE_JWT_H
#define PE_JWT_H

#include <stddef.h>
#include <stdint.h>
#include "edge/identity/keys.h"
#include "edge/identity/policy.h"

/* Longest token accepted: a header, a payload of 64 + 64 patterns and a 4096-bit RSA signature
 * fit in 8 KiB, as does a cookie (browsers keep about 4 KiB per cookie). */
#define PE_JWT_MAX_LEN 8192
/* Nesting of the header and payload JSON: claims are flat; a little room for unknown ones. */
#define PE_JWT_MAX_DEPTH 8

typedef struct st_pe_jwt_opts_t {
    const char *issuer;   /* the required "iss"; NULL: not checked */
    const char *audience; /* a value "aud" must hold; NULL: not checked */
    uint64_t leeway;      /* seconds of clock skew forgiven on "exp" and "nbf" */
} pe_jwt_opts_t;

typedef enum en_pe_jwt_result_t {
    PE_JWT_OK = 0,
    PE_JWT_INVALID, /* 401 unauthorized: malformed, bad signature, wrong issuer... */
    PE_JWT_EXPIRED, /* 401 token_expired: valid but past "exp" (only once all else passed) */
} pe_jwt_result_t;

/**
 * Verifies token[0..len) with keys at time now (seconds since the epoch). On PE_JWT_OK fills
 * *out (release with pe_identity_dispose), authenticated = 1; otherwise *out is left zeroed.
 * *why, if not NULL, receives a static description of the failure for logs (never the token).
 */
pe_jwt_result_t pe_jwt_verify(const pe_keyset_t *keys, const pe_jwt_opts_t *opts, int64_t now, const char *token, size_t len,
                              pe_identity_t *out, const char **why);

#endif

/*
 * policy.h: who may read and publish which channel (docs/auth.md "Permissions"). An identity
 * comes from a verified token (jwt.h): its subject and two lists of channel patterns; public
 * channels (--public-channel) are patterns anyone may read. Pure: no allocation except in the
 * pattern lists, no I/O; any thread.
 *
 * A pattern is a channel name whose last character may be '*' (any suffix, the empty one too)
 * and which may contain "{sub}", standing for the token's subject. The subject is compared as
 * text, never read as a pattern, and only if it is a non-empty run of channel-name characters;
 * the character that follows "{sub}" in the pattern must not occur in the subject, and "{sub}"
 * may not be followed directly by '*'. Together these make the channels that one pattern gives
 * two different subjects disjoint: "user:{sub}:*" gives subject "a:b" nothing of subject "a".
 */
#ifndef PE_POLICY_H
#define PE_POLICY_H

#include <stddef.h>
#include <stdint.h>

/* Bounds of what a token may carry: patterns per claim and bytes per pattern (a channel name
 * is at most 200; "{sub}" expands). Subjects longer than a channel name cannot name one. */
#define PE_POLICY_MAX_PATTERNS 64
#define PE_POLICY_MAX_PATTERN_LEN 256
#define PE_POLICY_MAX_SUB 256
/* The "info" claim (docs/auth.md "Claims"): a JSON object shown with the connection's presence
 * entries; at most this many bytes once minified, else the token is refused (401). */
#define PE_POLICY_MAX_INFO 256
/* How long before "exp" a token's holder is warned at most (docs/auth.md "Expiry"): time enough
 * for a client to fetch a new token; shorter-lived tokens are warned at half their life. */
#define PE_TOKEN_NOTICE_MAX_MS 30000

typedef struct st_pe_patterns_t {
    size_t num;
    char **items; /* NUL-terminated, owned */
} pe_patterns_t;

/**
 * 1 if p[0..len) is a valid pattern: 1..PE_POLICY_MAX_PATTEN_LEN bytes of channel-name
 * characters and "{sub}" (only if allow_sub), optionally ending in '*', "{sub}" not directly
 * before the '*'. Else 0.
 */
int pe_pattern_is_valid(const char *p, size_t len, int allow_sub);
/** 1 if the pattern (valid) gives channel chan[0..clen) to subject sub[0..sublen) (NULL: none). */
int pe_pattern_match(const char *pat, size_t plen, const char *sub, size_t sublen, const char *chan, size_t clen);

/** Appends a copy of p[0..len) (validated by the caller). -1 past PE_POLICY_MAX_PATTERNS. */
int pe_patterns_add(pe_patterns_t *list, const char *p, size_t len);
/** 1 if any pattern of list gives chan to sub. */
int pe_patterns_match(const pe_patterns_t *list, const char *sub, size_t sublen, const char *chan, size_t clen);
void pe_patterns_dispose(pe_patterns_t *list);

/** Who a connection is: the claims of its token, or nothing (anonymous, all zero). */
typedef struct st_pe_identity_t {
    char *sub; /* NULL: anonymous, or a token without "sub" */
    size_t sub_len;
    char *info; /* the "info" claim minified (a JSON object, <= PE_POLICY_MAX_INFO bytes), NUL-terminated; NULL: none */
    size_t info_len;
    int64_t exp;       /* seconds since the epoch; 0: the token does not expire */
    int64_t iat;       /* "iat" (seconds since the epoch), when before exp; 0: absent */
    int authenticated; /* 1: a valid token was presented */
    pe_patterns_t read, publish;
} pe_identity_t;

void pe_identity_dispose(pe_identity_t *id);

/**
 * When the holder of a token expiring at exp_s (seconds since the epoch) is warned, in ms since
 * the epoch (docs/auth.md "Expiry"): PE_TOKEN_NOTICE_MAX_MS before exp, or half the token's life
 * for a shorter-lived one. The life starts at iat_s when the token has one (0: none) that is not
 * in the future, else at now_ms (the connection's receipt of the token). A token already past
 * exp is warned at exp_s. Pure.
 */
uint64_t pe_token_notice_ms(int64_t exp_s, int64_t iat_s, uint64_t now_ms);

typedef enum en_pe_auth_mode_t {
    PE_AUTH_MODE_OFF = 0,  /* no identity: everyone reads everything (publishing: --api-key) */
    PE_AUTH_MODE_OPTIONAL, /* anonymous readers get the public channels only */
    PE_AUTH_MODE_REQUIRED, /* every reader needs a valid token */
} pe_auth_mode_t;

/** Parses "off", "optional", "required"; -1 for anything else. */
int pe_auth_mode_parse(const char *s);

typedef enum en_pe_access_t {
    PE_ACCESS_OK = 0,
    PE_ACCESS_UNAUTHORIZED, /* 401 unauthorized: no token, and the channel needs one */
    PE_ACCESS_FORBIDDEN,    /* 403 forbidden: the token does not cover the channel */
} pe_access_t;

/**
 * May id (anonymous: authenticated == 0) subscribe to chan? Mode off allows everything; a
 * public channel needs no token, except in required mode where every reader needs one; any other
 * channel needs a token whose "channels" cover it. The answer never depends on whether the
 * channel exists.
 */
pe_access_t pe_may_subscribe(pe_auth_mode_t mode, const pe_patterns_t *public_channels, const pe_identity_t *id, const char *chan,
                             size_t clen);
/**
 * May id publish to chan by its token? UNAUTHORIZED for no token (the caller then applies the
 * --api-key rule), FORBIDDEN if the token's "publish" does not cover chan.
 */
pe_access_t pe_may_publish(const pe_identity_t *id, const char *chan, size_t clen);

#endif

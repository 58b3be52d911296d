/*
 * redis_url.h: the grammar of the --redis URL, parsed in one pure function that both the option
 * parser (edge/config.c, which refuses a bad URL at start) and the Redis engine (which takes its
 * seeds, password and database from it) call, so the two cannot disagree. No I/O, no
 * allocation: host names are resolved by the engine, not here. Fuzzed by
 * tests/fuzz/fuzz_redis_url.c. Part of pubsub/ (edge/config.c includes it directly).
 *
 *   redis://[[user]:password@]host:port[,host:port...][/db]
 *   redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]
 *
 * - Everything up to the last '@' is the user information: after its first ':' the password
 *   (the user before it is ignored: Redis 5 AUTH takes a password only), or, without a ':', the
 *   whole of it is the password. It may contain any byte, '@' and '/' included.
 * - host:port items separated by single commas, up to the first '/' after the user information:
 *   a host of 1..255 bytes without ':' (or an IPv6 address in brackets, "[::1]:6379"), a port of
 *   1..5 digits from 1 to 65535; each item shorter than 300 bytes; at most PE_REDIS_URL_MAX_SEEDS
 *   items. Several hosts are seeds: tried in turn, and for a cluster any one will do.
 * - /db: decimal digits, at most 1000000 (no sign, no space; leading zeros allowed).
 * - redis+sentinel://: the hosts are Redis Sentinels, and the path's first segment (required) is
 *   the name of the master they monitor: 1..PE_REDIS_URL_MASTER_MAX-1 bytes of A-Z a-z 0-9 and
 *   ". _ - :" (what a "sentinel monitor" line can hold without quoting). The password is the
 *   master's and its replicas' (the engine also offers it to the sentinels: docs/operations.md).
 */
#ifndef PE_REDIS_URL_H
#define PE_REDIS_URL_H

#include <stddef.h>

#define PE_REDIS_URL_MAX_SEEDS 8
#define PE_REDIS_URL_HOST_MAX 256 /* bytes of a host name, NUL included */
#define PE_REDIS_URL_MAX_DB 1000000
#define PE_REDIS_URL_MASTER_MAX 129 /* bytes of a sentinel master name, NUL included */

typedef struct st_pe_redis_url_t {
    /* The password, borrowed from the URL (not NUL-terminated), or NULL without '@'. An empty
     * password ("redis://:@h:1") is kept as such: AUTH is sent with it. */
    const char *password;
    size_t password_len;
    struct {
        char host[PE_REDIS_URL_HOST_MAX]; /* NUL-terminated, brackets of an IPv6 address removed */
        unsigned port;                    /* 1..65535 */
    } seeds[PE_REDIS_URL_MAX_SEEDS];
    size_t num_seeds;                     /* 1..PE_REDIS_URL_MAX_SEEDS */
    unsigned db;                          /* 0 without /db */
    int sentinel;                         /* 1 for redis+sentinel://: seeds are sentinels, master names the master */
    char master[PE_REDIS_URL_MASTER_MAX]; /* NUL-terminated; empty unless sentinel */
} pe_redis_url_t;

/* Why a URL was refused, compared by address. */
extern const char pe_redis_url_err_scheme[];   /* not redis:// nor redis+sentinel:// */
extern const char pe_redis_url_err_host[];     /* no host, or a host:port item that is malformed */
extern const char pe_redis_url_err_too_many[]; /* more than PE_REDIS_URL_MAX_SEEDS hosts */
extern const char pe_redis_url_err_db[];       /* the part after '/' is not a database number */
extern const char pe_redis_url_err_master[];   /* redis+sentinel:// without a valid master name */

/**
 * Parses the NUL-terminated url into *out. Returns NULL, or one of the error constants above
 * (*out then unspecified). Pure: touches nothing but *out.
 */
const char *pe_redis_url_parse(const char *url, pe_redis_url_t *out);

/* One "host:port" or "[v6]:port" in s[0..len), by the item rules above (the host shorter than
 * hostlen, brackets removed, NUL-terminated; the port 1..65535). Returns 0, or -1 with nothing
 * stored. The option parser reads --listen with it too, so both options take one grammar. */
int pe_hostport_parse(const char *s, size_t len, char *host, size_t hostlen, unsigned *port);

#endif

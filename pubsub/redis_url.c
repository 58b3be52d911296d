/*
 * redis_url.c: parses the --redis URL, redis:// or redis+sentinel:// (the grammar is in redis_url.h). Pure: it only reads the
 * string and fills the caller's struct, so the option parser can refuse a URL at start with the
 * very rules the engine later applies, and a fuzzer can explore it without a network.
 */
#include <string.h>
#include "redis_url.h"
#include "stream_id.h"

#define STR2(x) #x
#define STR(x) STR2(x)

/* PE_REDIS_URL_MASTER_MAX - 1, spelled out for STR(). */
#define PE_REDIS_URL_MASTER_MAX_LEN 128
_Static_assert(PE_REDIS_URL_MASTER_MAX_LEN + 1 == PE_REDIS_URL_MASTER_MAX, "the master name's bound, said twice");

const char pe_redis_url_err_scheme[] = "not a redis:// or redis+sentinel:// URL";
const char pe_redis_url_err_host[] = "bad host list (host:port, or [IPv6]:port, separated by commas)";
const char pe_redis_url_err_too_many[] = "bad host list (at most " STR(PE_REDIS_URL_MAX_SEEDS) " host:port)";
const char pe_redis_url_err_db[] = "bad database number (0 to " STR(PE_REDIS_URL_MAX_DB) ")";
const char pe_redis_url_err_master[] = "bad sentinel master name (redis+sentinel://host:port[,host:port...]/MASTER[/db]; "
                                       "1 to " STR(PE_REDIS_URL_MASTER_MAX_LEN) " characters of A-Z a-z 0-9 . _ - :)";

/* An item longer than this is refused whatever it holds (a host name is at most 255 bytes). */
#define ITEM_MAX 299

int
pe_hostport_parse(const char *s, size_t len, char *host, size_t hostlen, unsigned *port)
{
    const char *end = s + len, *hs = s, *he, *colon;
    if (len == 0)
        return -1;
    if (*s == '[') {
        /* "[v6]:port": the first ']' closes the address and must be followed by the port. */
        const char *close = memchr(s, ']', len);
        if (close == NULL || close + 1 == end || close[1] != ':')
            return -1;
        hs = s + 1;
        he = close;
        colon = close + 1;
    } else {
        /* Exactly one ':' outside brackets: an unbracketed IPv6 address is ambiguous. */
        colon = memchr(s, ':', len);
        if (colon == NULL || memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
            return -1;
        he = colon;
    }
    size_t n = (size_t)(he - hs);
    if (n == 0 || n >= hostlen)
        return -1;
    const char *p = colon + 1;
    uint64_t v;
    if (end - p > 5 || pe_digits_parse(p, (size_t)(end - p), 10, 65535, &v) != 0 || v == 0)
        return -1;
    memcpy(host, hs, n);
    host[n] = '\0';
    *port = (unsigned)v;
    return 0;
}

/* One seed item s[0..len) (no comma inside). */
static int
parse_hostport(const char *s, size_t len, char *host, unsigned *port)
{
    if (len > ITEM_MAX)
        return -1;
    return pe_hostport_parse(s, len, host, PE_REDIS_URL_HOST_MAX, port);
}

/* The master name of a sentinel URL: s[0..len) by the rule in redis_url.h, copied into out. */
static int
parse_master(const char *s, size_t len, char *out)
{
    if (len == 0 || len >= PE_REDIS_URL_MASTER_MAX)
        return -1;
    for (size_t i = 0; i != len; ++i) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
              c == ':'))
            return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

const char *
pe_redis_url_parse(const char *url, pe_redis_url_t *out)
{
    const char *p;
    out->sentinel = 0;
    out->master[0] = '\0';
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "redis+sentinel://", 17) == 0) {
        p = url + 17;
        out->sentinel = 1;
    } else {
        return pe_redis_url_err_scheme;
    }
    const char *at = strrchr(p, '@');
    out->password = NULL;
    out->password_len = 0;
    out->num_seeds = 0;
    out->db = 0;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        out->password = colon != NULL ? colon + 1 : p;
        out->password_len = (size_t)(at - out->password);
        p = at + 1;
    }
    const char *slash = strchr(p, '/'), *end = slash != NULL ? slash : p + strlen(p);
    if (p == end)
        return pe_redis_url_err_host;
    /* Hosts beyond the limit are still checked (into a scratch seed), so that "too many" is only
     * said of a URL that is otherwise valid. */
    size_t num_items = 0;
    char scratch_host[PE_REDIS_URL_HOST_MAX];
    unsigned scratch_port;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma != NULL ? comma : end;
        int full = num_items >= PE_REDIS_URL_MAX_SEEDS;
        if (parse_hostport(p, (size_t)(e - p), full ? scratch_host : out->seeds[num_items].host,
                           full ? &scratch_port : &out->seeds[num_items].port) != 0)
            return pe_redis_url_err_host;
        ++num_items;
        if (comma == NULL)
            break;
        p = comma + 1; /* a trailing comma leaves an empty item: refused above */
    }
    if (out->sentinel) {
        /* "/MASTER" is required, then "/db" as for redis://. */
        if (slash == NULL)
            return pe_redis_url_err_master;
        const char *name = slash + 1, *next = strchr(name, '/');
        if (parse_master(name, next != NULL ? (size_t)(next - name) : strlen(name), out->master) != 0)
            return pe_redis_url_err_master;
        slash = next;
    }
    if (slash != NULL) {
        /* Digits only, without overflow: anything longer than 7 digits is out of range or has
         * leading zeros, which are skipped first. */
        const char *d = slash + 1;
        if (*d < '0' || *d > '9')
            return pe_redis_url_err_db;
        while (*d == '0' && d[1] >= '0' && d[1] <= '9')
            ++d;
        unsigned long v = 0;
        for (; *d != '\0'; ++d) {
            if (*d < '0' || *d > '9' || v > PE_REDIS_URL_MAX_DB)
                return pe_redis_url_err_db;
            v = v * 10 + (unsigned long)(*d - '0');
        }
        if (v > PE_REDIS_URL_MAX_DB)
            return pe_redis_url_err_db;
        out->db = (unsigned)v;
    }
    if (num_items > PE_REDIS_URL_MAX_SEEDS)
        return pe_redis_url_err_too_many;
    out->num_seeds = num_items;
    return NULL;
}

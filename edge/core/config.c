/*
 * config.c: option parsing. One table describes every option (name, kind, range, default,
 * help); the command line, the environment and the JSON config file all go through the same
 * setter, so a value means the same wherever it comes from and every error names the option.
 *
 * Checklist when adding an option: a row in `options`, a field in pe_config_t, a default in
 * set_defaults, a line in docs/operations.md, and a case in tests/unit/test_config.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "pubsub/alloc.h"
#include "pubsub/redis_url.h"
#include "edge/core/config.h"
#include "edge/util/log.h"

typedef enum en_opt_kind_t {
    OPT_UINT,
    OPT_STRING,
    OPT_FLAG,
    OPT_LISTEN,     /* repeatable: a list of HOST:PORT */
    OPT_LISTEN_TLS, /* repeatable: a list of HOST:PORT served with TLS */
    OPT_ORIGIN,     /* repeatable: a list of origins */
    OPT_CIDR,       /* repeatable: a list of networks */
    OPT_JWT_KEY,    /* repeatable: a list of key files */
    OPT_PUBLIC,     /* repeatable: a list of channel patterns */
    OPT_AUTH,
    OPT_REDIS,
    OPT_LOGLEVEL,
    OPT_LOGFORMAT,
    OPT_HELP,
    OPT_VERSION
} opt_kind_t;

typedef struct st_opt_t {
    const char *name;
    opt_kind_t kind;
    size_t offset;
    uint64_t min, max;
    const char *arg;
    const char *help;
} opt_t;

#define OFF(f) offsetof(pe_config_t, f)

static const opt_t options[] = {
    {"listen", OPT_LISTEN, 0, 0, 0, "HOST:PORT", "address to serve HTTP/1.1 and HTTP/2 on; repeatable (default 127.0.0.1:8080)"},
    {"listen-tls", OPT_LISTEN_TLS, 0, 0, 0, "HOST:PORT",
     "address to serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2/1.3) on, with --tls-cert and --tls-key; repeatable "
     "(default: none; with only --listen-tls there is no clear-text listener)"},
    {"tls-cert", OPT_STRING, OFF(tls_cert), 0, 0, "FILE",
     "PEM certificate chain for --listen-tls (server certificate first); reread on SIGHUP"},
    {"tls-key", OPT_STRING, OFF(tls_key), 0, 0, "FILE", "PEM private key of --tls-cert; reread on SIGHUP"},
    {"redis", OPT_REDIS, OFF(redis_url), 0, 0, "URL",
     "redis://[:password@]host:port[,host:port...][/db]: the Redis Streams engine; several hosts are seeds (default: memory); "
     "or redis+sentinel://[:password@]host:port[,host:port...]/MASTER[/db]: the master MASTER found through these sentinels"},
    {"redis-wait-replicas", OPT_UINT, OFF(redis_wait_replicas), 0, 100, "N",
     "Redis engine: after each publish, WAIT for N replicas; fewer in time: 503 not_replicated (default 0: no WAIT)"},
    {"redis-wait-timeout", OPT_UINT, OFF(redis_wait_timeout), 1, 60000, "MS",
     "how long --redis-wait-replicas waits for the replicas, in milliseconds (default 1000)"},
    {"catchup-cache", OPT_UINT, OFF(catchup_cache), 0, 100000, "N",
     "Redis engine: recent messages of each channel kept per thread to answer catch-ups without a Redis read, at most "
     "--history-size; 0 turns the cache and read coalescing off (default 256)"},
    {"redis-batch-announce", OPT_UINT, OFF(redis_batch_announce), 0, 1, "0|1",
     "Redis engine: 1 announces the messages a node publishes to a channel in one loop iteration a few KiB per Redis "
     "PUBLISH; 0 one PUBLISH per message, which nodes of versions without it need: set 0 during a rolling upgrade from such a "
     "version "
     "(default 1)"},
    {"threads", OPT_UINT, OFF(threads), 1, PE_MAX_THREADS, "N", "event-loop threads (default: number of cores)"},
    {"history-size", OPT_UINT, OFF(history_size), 1, 10000000, "N", "messages retained per channel (default 1000)"},
    {"history-ttl", OPT_UINT, OFF(history_ttl), 1, 315360000, "SECONDS", "maximum age of retained messages (default 86400)"},
    {"max-channels", OPT_UINT, OFF(max_channels), 0, UINT32_MAX, "N",
     "channels a node holds at most: subscribed ones, and stored ones on the memory engine; 0: no bound (default 1000000)"},
    {"idempotency-window", OPT_UINT, OFF(idempotency_window), 1, 604800, "SECONDS",
     "how long a publish's Idempotency-Key is remembered per channel (default 300)"},
    {"poll-timeout", OPT_UINT, OFF(poll_timeout), 1, 3600, "SECONDS", "how long a long-poll is held (default 25)"},
    {"ping-interval", OPT_UINT, OFF(ping_interval), 1, 3600, "SECONDS", "WebSocket ping and SSE heartbeat interval (default 25)"},
    {"max-message-size", OPT_UINT, OFF(max_message_size), 1, 64 << 20, "BYTES", "largest message accepted (default 65536)"},
    {"api-key", OPT_STRING, OFF(api_key), 0, 0, "KEY", "Bearer token for the publish API (default: loopback peers only)"},
    {"drain-delay", OPT_UINT, OFF(drain_delay), 0, 3600, "SECONDS",
     "pre-drain: after SIGTERM, answer /readyz 503 while still serving for this long, then drain (default 0)"},
    {"drain-timeout", OPT_UINT, OFF(drain_timeout), 0, 3600, "SECONDS", "how long a draining node waits for clients (default 10)"},
    {"drain-spread", OPT_UINT, OFF(drain_spread), 0, 3600000, "MS",
     "a drain tells its clients to leave in batches over this many milliseconds, each with a jittered reconnect hint; "
     "0: all at once; at most --drain-timeout (default: half of --drain-timeout)"},
    {"ws-echo", OPT_FLAG, OFF(ws_echo), 0, 0, NULL, "also serve GET /ws/echo for WebSocket conformance suites"},
    {"config", OPT_STRING, OFF(config_file), 0, 0, "FILE", "JSON file with these settings; environment and command line win"},
    {"log-level", OPT_LOGLEVEL, OFF(log_level), 0, 0, "LEVEL", "error, warn, info or debug (default info)"},
    {"log-format", OPT_LOGFORMAT, OFF(log_format), 0, 0, "FORMAT",
     "text, or json: one JSON object per line, with a line per connection open and close and per refused request (default text)"},
    {"allowed-origin", OPT_ORIGIN, 0, 0, 0, "ORIGIN",
     "origin allowed cross-origin (CORS on /sse, /poll, /api/publish; Origin check on /ws), e.g. https://app.example.com "
     "or *; repeatable (default: none)"},
    {"trusted-proxy", OPT_CIDR, 0, 0, 0, "CIDR",
     "proxy network (e.g. 127.0.0.1/32) whose X-Forwarded-For or Forwarded names the client; loopback trust then applies "
     "to that client only; repeatable (default: none)"},
    {"web-root", OPT_STRING, OFF(web_root), 0, 0, "DIR", "directory of the demo page and JS client (default: the built-in path)"},
    {"max-connections", OPT_UINT, OFF(max_connections), 1, 100000000, "N",
     "open connections per node; past it: 503 + Retry-After (default: descriptor limit minus a reserve)"},
    {"max-connections-per-ip", OPT_UINT, OFF(max_connections_per_ip), 0, 100000000, "N",
     "open connections per peer address; 0 = off (default 0: proxies put many users behind one address)"},
    {"max-held-polls", OPT_UINT, OFF(max_held_polls), 1, 100000000, "N",
     "long-polls held open per node; past it: 503 + Retry-After (default: the connection limit)"},
    {"auth", OPT_AUTH, 0, 0, 0, "MODE",
     "off (no identity), optional (anonymous readers get public channels only) or required (default off)"},
    {"jwt-secret", OPT_STRING, OFF(jwt_secret), 0, 0, "SECRET",
     "HMAC key of HS256/384/512 tokens, at least 32 bytes (default: none)"},
    {"jwt-key", OPT_JWT_KEY, 0, 0, 0, "FILE",
     "PEM public key(s) or JWKS file for RS256, PS256, ES256 tokens; repeatable; reread on SIGHUP (default: none)"},
    {"jwt-issuer", OPT_STRING, OFF(jwt_issuer), 0, 0, "ISS", "the \"iss\" every token must carry (default: not checked)"},
    {"jwt-audience", OPT_STRING, OFF(jwt_audience), 0, 0, "AUD", "a value the token's \"aud\" must hold (default: not checked)"},
    {"jwt-leeway", OPT_UINT, OFF(jwt_leeway), 0, 300, "SECONDS", "clock skew forgiven on \"exp\" and \"nbf\" (default 30)"},
    {"public-channel", OPT_PUBLIC, 0, 0, 0, "PATTERN",
     "channel pattern (e.g. news or public.*) readable without a token; repeatable (default: none)"},
    {"no-ws-deflate", OPT_FLAG, OFF(no_ws_deflate), 0, 0, NULL,
     "never negotiate WebSocket permessage-deflate (messages mixing secrets and attacker-chosen text: docs/security.md)"},
    {"presence-max-members", OPT_UINT, OFF(presence_max_members), 0, UINT32_MAX, "N",
     "past this many presence members in a channel, its join/leave events stop (the listing stays complete); 0: no "
     "events (default 1000)"},
    {"presence-count-interval", OPT_UINT, OFF(presence_count_interval), 100, 3600000, "MS",
     "past --presence-max-members, presence subscribers get the member count at most this often, when it changed "
     "(default 1000)"},
    {"presence-node-timeout", OPT_UINT, OFF(presence_node_timeout), 2, 3600, "SECONDS",
     "Redis engine: a node silent this long is dead and its presence members and connections are removed (default 5)"},
    {"help", OPT_HELP, 0, 0, 0, NULL, "print this help and exit"},
    {"version", OPT_VERSION, 0, 0, 0, NULL, "print the version and exit"},
};
#define NUM_OPTIONS (sizeof(options) / sizeof(options[0]))

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Formats the error. Keys and values from the file are quoted in it, and main prints it as one
 * log line: control characters (a JSON "\n" in a key) are shown as '?' so that it stays one. */
static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char *p = err; errlen != 0 && *p != '\0'; ++p)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return PE_CFG_ERROR;
}

static void
set_defaults(pe_config_t *cfg)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    memset(cfg, 0, sizeof(*cfg));
    cfg->threads = ncpu < 1 ? 1 : ncpu > PE_MAX_THREADS ? PE_MAX_THREADS : (unsigned)ncpu;
    cfg->history_size = 1000;
    cfg->history_ttl = 86400;
    cfg->max_channels = PE_DEFAULT_MAX_CHANNELS;
    cfg->idempotency_window = 300;
    cfg->presence_max_members = 1000;
    cfg->presence_node_timeout = 5;
    cfg->presence_count_interval = 1000;
    cfg->poll_timeout = 25;
    cfg->ping_interval = 25;
    cfg->max_message_size = 65536;
    cfg->drain_timeout = 10;
    cfg->drain_spread = UINT64_MAX; /* unset: half of drain_timeout, decided after parsing */
    cfg->log_level = PE_LOG_INFO;
    cfg->jwt_leeway = 30;
    cfg->redis_wait_timeout = 1000;
    cfg->catchup_cache = 256;
    cfg->redis_batch_announce = 1;
}

int
pe_config_split_hostport(const char *s, char *host, size_t hostlen, unsigned *port)
{
    return pe_hostport_parse(s, strlen(s), host, hostlen, port);
}

int
pe_config_parse_ip(const char *s, size_t len, unsigned char out[16])
{
    char buf[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct in_addr v4;
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &v4, 4);
        return 0;
    }
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -1;
}

int
pe_config_parse_cidr(const char *s, pe_cidr_t *out)
{
    const char *slash = strchr(s, '/');
    size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (pe_config_parse_ip(s, alen, out->addr) != 0)
        return -1;
    int v4 = memchr(s, ':', alen) == NULL;
    unsigned max = v4 ? 32 : 128, bits = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return -1;
        bits = 0;
        for (; *p != '\0'; ++p) {
            if (*p < '0' || *p > '9')
                return -1;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return -1;
    }
    out->bits = v4 ? bits + 96 : bits;
    return 0;
}

int
pe_cidr_contains(const pe_cidr_t *net, const unsigned char addr[16])
{
    unsigned full = net->bits / 8, rest = net->bits % 8;
    if (memcmp(net->addr, addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (net->addr[full] & mask) == (addr[full] & mask);
}

static int
parse_uint(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int
parse_bool(const char *s, int *out)
{
    if (strcasecmp(s, "1") == 0 || strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0 || strcasecmp(s, "on") == 0)
        *out = 1;
    else if (strcasecmp(s, "0") == 0 || strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0 || strcasecmp(s, "off") == 0)
        *out = 0;
    else
        return -1;
    return 0;
}

/* The repeatable options keep their values in a fixed array; a new source replaces the list of
 * a weaker one rather than adding to it. */
static int
is_list(const opt_t *opt)
{
    return opt->kind == OPT_LISTEN || opt->kind == OPT_LISTEN_TLS || opt->kind == OPT_ORIGIN || opt->kind == OPT_CIDR ||
           opt->kind == OPT_JWT_KEY || opt->kind == OPT_PUBLIC;
}

static char **
list_of(pe_config_t *cfg, const opt_t *opt, size_t **num, size_t *cap)
{
    if (opt->kind == OPT_LISTEN) {
        *num = &cfg->num_listen;
        *cap = PE_MAX_LISTEN;
        return cfg->listen;
    }
    if (opt->kind == OPT_LISTEN_TLS) {
        *num = &cfg->num_listen_tls;
        *cap = PE_MAX_LISTEN;
        return cfg->listen_tls;
    }
    if (opt->kind == OPT_JWT_KEY) {
        *num = &cfg->num_jwt_key_files;
        *cap = PE_MAX_JWT_KEY_FILES;
        return cfg->jwt_key_files;
    }
    if (opt->kind == OPT_PUBLIC) {
        *num = &cfg->num_public_channels;
        *cap = PE_MAX_PUBLIC_CHANNELS;
        return cfg->public_channel_list;
    }
    if (opt->kind == OPT_CIDR) {
        *num = &cfg->num_trusted_proxies;
        *cap = PE_MAX_TRUSTED_PROXIES;
        return cfg->trusted_proxies;
    }
    *num = &cfg->num_allowed_origins;
    *cap = PE_MAX_ORIGINS;
    return cfg->allowed_origins;
}

static void
clear_list(pe_config_t *cfg, const opt_t *opt)
{
    size_t *num, cap;
    char **items = list_of(cfg, opt, &num, &cap);
    for (size_t i = 0; i != *num; ++i)
        pe_free(items[i]);
    *num = 0;
}

/* An origin as browsers send it (RFC 6454 6.2): scheme "://" host [":" port], lower-case scheme,
 * no path; or "*". */
static int
validate_origin(const char *s)
{
    size_t len = strlen(s);
    if (strcmp(s, "*") == 0)
        return 0;
    if (len > PE_MAX_ORIGIN_LEN)
        return -1;
    const char *p = strstr(s, "://");
    if (p == NULL || p == s)
        return -1;
    for (const char *q = s; q != p; ++q)
        if (!((*q >= 'a' && *q <= 'z') || (q != s && ((*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.'))))
            return -1;
    p += 3;
    if (*p == '\0')
        return -1;
    for (; *p != '\0'; ++p)
        if (*p == '/' || *p == '?' || *p == '#' || *p == ' ' || *p == ',' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            return -1;
    return 0;
}

/* Applies one value to an option. `origin` says where it came from, for the error message. */
static int
set_option(pe_config_t *cfg, const opt_t *opt, const char *value, const char *origin, char *err, size_t errlen)
{
    char *base = (char *)cfg;
    switch (opt->kind) {
    case OPT_UINT: {
        uint64_t v;
        if (parse_uint(value, &v) != 0 || v < opt->min || v > opt->max)
            return fail(err, errlen, "%s: must be an integer from %llu to %llu (got '%.64s')", origin, (unsigned long long)opt->min,
                        (unsigned long long)opt->max, value);
        if (opt->offset == OFF(threads))
            *(unsigned *)(base + opt->offset) = (unsigned)v;
        else
            *(uint64_t *)(base + opt->offset) = v;
        return PE_CFG_OK;
    }
    case OPT_STRING:
        if (*value == '\0')
            return fail(err, errlen, "%s: must not be empty", origin);
        pe_free(*(char **)(base + opt->offset));
        *(char **)(base + opt->offset) = pe_strndup(value, strlen(value));
        return PE_CFG_OK;
    case OPT_REDIS: {
        /* The engine's own parser (pubsub/redis_url.h): what passes here is what it accepts. */
        pe_redis_url_t url;
        const char *why = pe_redis_url_parse(value, &url);
        if (why == pe_redis_url_err_too_many)
            return fail(err, errlen, "%s: %s", origin, why);
        if (why != NULL)
            return fail(err, errlen,
                        "%s: must be redis://[:password@]host:port[,host:port...][/db] or "
                        "redis+sentinel://[:password@]host:port[,host:port...]/MASTER[/db] (%s; got '%.64s')",
                        origin, why, value);
        pe_free(cfg->redis_url);
        cfg->redis_url = pe_strndup(value, strlen(value));
        return PE_CFG_OK;
    }
    case OPT_FLAG:
        if (parse_bool(value, (int *)(base + opt->offset)) != 0)
            return fail(err, errlen, "%s: must be true or false (got '%.64s')", origin, value);
        return PE_CFG_OK;
    case OPT_LOGLEVEL: {
        int level = pe_log_parse_level(value);
        if (level < 0)
            return fail(err, errlen, "%s: must be error, warn, info or debug (got '%.64s')", origin, value);
        cfg->log_level = level;
        return PE_CFG_OK;
    }
    case OPT_LOGFORMAT: {
        int format = pe_log_parse_format(value);
        if (format < 0)
            return fail(err, errlen, "%s: must be text or json (got '%.64s')", origin, value);
        cfg->log_format = format;
        return PE_CFG_OK;
    }
    case OPT_AUTH: {
        int mode = pe_auth_mode_parse(value);
        if (mode < 0)
            return fail(err, errlen, "%s: must be off, optional or required (got '%.64s')", origin, value);
        cfg->auth_mode = mode;
        return PE_CFG_OK;
    }
    case OPT_LISTEN:
    case OPT_LISTEN_TLS:
    case OPT_ORIGIN:
    case OPT_CIDR:
    case OPT_JWT_KEY:
    case OPT_PUBLIC: {
        char host[256];
        unsigned port;
        if ((opt->kind == OPT_LISTEN || opt->kind == OPT_LISTEN_TLS) &&
            pe_config_split_hostport(value, host, sizeof(host), &port) != 0)
            return fail(err, errlen, "%s: must be HOST:PORT with a port from 1 to 65535 (got '%.64s')", origin, value);
        if (opt->kind == OPT_ORIGIN && validate_origin(value) != 0)
            return fail(err, errlen, "%s: must be * or scheme://host[:port] without a path (got '%.64s')", origin, value);
        if (opt->kind == OPT_JWT_KEY && *value == '\0')
            return fail(err, errlen, "%s: must not be empty", origin);
        if (opt->kind == OPT_PUBLIC && !pe_pattern_is_valid(value, strlen(value), 0))
            return fail(err, errlen, "%s: must be a channel name (A-Z a-z 0-9 _ - . : @), optionally ending in * (got '%.64s')",
                        origin, value);
        pe_cidr_t net;
        if (opt->kind == OPT_CIDR && pe_config_parse_cidr(value, &net) != 0)
            return fail(err, errlen, "%s: must be an IPv4 or IPv6 network ADDR[/BITS] (got '%.64s')", origin, value);
        size_t *num, cap;
        char **items = list_of(cfg, opt, &num, &cap);
        if (*num == cap)
            return fail(err, errlen, "%s: at most %zu values", origin, cap);
        if (opt->kind == OPT_CIDR)
            cfg->trusted_nets[*num] = net;
        items[(*num)++] = pe_strndup(value, strlen(value));
        return PE_CFG_OK;
    }
    default:
        return fail(err, errlen, "%s: cannot be set here", origin);
    }
}

static const opt_t *
find_option(const char *name)
{
    for (size_t i = 0; i != NUM_OPTIONS; ++i)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* ---- the config file ------------------------------------------------------------------------- */

static int
load_file(pe_config_t *cfg, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL)
        return fail(err, errlen, "--config: %s: line %d: %s", path, jerr.line, jerr.text);
    int ret = PE_CFG_OK;
    if (!json_is_object(root)) {
        ret = fail(err, errlen, "--config: %s: must be a JSON object", path);
        goto Exit;
    }
    const char *key;
    json_t *borrowed_value;
    json_object_foreach(root, key, borrowed_value)
    {
        const opt_t *opt = find_option(key);
        char origin[160], buf[64];
        snprintf(origin, sizeof(origin), "--config %s: \"%.40s\"", path, key);
        if (opt == NULL || opt->kind == OPT_HELP || opt->kind == OPT_VERSION || opt->offset == OFF(config_file)) {
            ret = fail(err, errlen, "%s: unknown setting", origin);
            goto Exit;
        }
        if (is_list(opt)) {
            /* A string or an array of strings; the file's list replaces the default. */
            json_t *one = json_is_array(borrowed_value) ? NULL : borrowed_value;
            size_t n = one != NULL ? 1 : json_array_size(borrowed_value);
            clear_list(cfg, opt);
            for (size_t i = 0; i != n; ++i) {
                json_t *borrowed_item = one != NULL ? one : json_array_get(borrowed_value, i);
                if (!json_is_string(borrowed_item)) {
                    ret = fail(err, errlen, "%s: must be a string or an array of strings", origin);
                    goto Exit;
                }
                if ((ret = set_option(cfg, opt, json_string_value(borrowed_item), origin, err, errlen)) != PE_CFG_OK)
                    goto Exit;
            }
            continue;
        }
        const char *text;
        if (json_is_string(borrowed_value)) {
            text = json_string_value(borrowed_value);
        } else if (json_is_integer(borrowed_value) && json_integer_value(borrowed_value) >= 0) {
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(borrowed_value));
            text = buf;
        } else if (json_is_boolean(borrowed_value) && opt->kind == OPT_FLAG) {
            text = json_is_true(borrowed_value) ? "true" : "false";
        } else {
            ret = fail(err, errlen, "%s: has the wrong type", origin);
            goto Exit;
        }
        if ((ret = set_option(cfg, opt, text, origin, err, errlen)) != PE_CFG_OK)
            goto Exit;
    }
Exit:
    json_decref(root);
    return ret;
}

/* ---- environment ----------------------------------------------------------------------------- */

static const char *
env_lookup(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e != NULL && *e != NULL; ++e)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static void
env_name(const opt_t *opt, char *buf, size_t len)
{
    size_t i = snprintf(buf, len, "PUSHEDGE_");
    for (const char *p = opt->name; *p != '\0' && i + 1 < len; ++p)
        buf[i++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    buf[i] = '\0';
}

static int
load_env(pe_config_t *cfg, char **envp, char *err, size_t errlen)
{
    for (size_t i = 0; i != NUM_OPTIONS; ++i) {
        const opt_t *opt = &options[i];
        char name[64];
        if (opt->kind == OPT_HELP || opt->kind == OPT_VERSION || (opt->offset == OFF(config_file) && opt->kind == OPT_STRING))
            continue;
        env_name(opt, name, sizeof(name));
        const char *value = env_lookup(envp, name);
        if (value == NULL)
            continue;
        int ret;
        if (is_list(opt)) {
            /* A list separated by commas or spaces; it replaces the file's and the default. */
            clear_list(cfg, opt);
            char *copy = pe_strndup(value, strlen(value)), *save = NULL;
            ret = PE_CFG_OK;
            for (char *tok = strtok_r(copy, ", ", &save); tok != NULL && ret == PE_CFG_OK; tok = strtok_r(NULL, ", ", &save))
                ret = set_option(cfg, opt, tok, name, err, errlen);
            pe_free(copy);
            if (ret == PE_CFG_OK && opt->kind == OPT_LISTEN && cfg->num_listen == 0)
                ret = fail(err, errlen, "%s: must list at least one HOST:PORT", name);
        } else {
            ret = set_option(cfg, opt, value, name, err, errlen);
        }
        if (ret != PE_CFG_OK)
            return ret;
    }
    return PE_CFG_OK;
}

/* ---- identity ------------------------------------------------------------------------------- */

static pe_keyset_t *
build_keys(pe_config_t *cfg, char *err, size_t errlen)
{
    /* keys.c's messages are one printable line already (control characters shown as '?'). */
    return pe_keyset_load(cfg->jwt_secret, (const char *const *)cfg->jwt_key_files, cfg->num_jwt_key_files, err, errlen);
}

/* The settings of --auth checked together, the public patterns and the key set built: a key
 * file that does not load stops the start here, with the other configuration errors. */
static int
load_identity(pe_config_t *cfg, char *err, size_t errlen)
{
    int has_identity_setting = cfg->jwt_secret != NULL || cfg->num_jwt_key_files != 0 || cfg->jwt_issuer != NULL ||
                               cfg->jwt_audience != NULL || cfg->num_public_channels != 0;
    if (cfg->auth_mode == PE_AUTH_MODE_OFF) {
        /* Keys with auth off would be a setting that silently does nothing. */
        if (has_identity_setting)
            return fail(err, errlen, "--jwt-*, --public-channel: need --auth optional or --auth required");
        return PE_CFG_OK;
    }
    if (cfg->jwt_secret == NULL && cfg->num_jwt_key_files == 0)
        return fail(err, errlen, "--auth %s: needs --jwt-secret or --jwt-key",
                    cfg->auth_mode == PE_AUTH_MODE_REQUIRED ? "required" : "optional");
    for (size_t i = 0; i != cfg->num_public_channels; ++i)
        pe_patterns_add(&cfg->public_channels, cfg->public_channel_list[i], strlen(cfg->public_channel_list[i]));
    pe_keyset_t *set = build_keys(cfg, err, errlen);
    if (set == NULL)
        return PE_CFG_ERROR;
    cfg->keys = pe_keyholder_new(set);
    return PE_CFG_OK;
}

int
pe_config_reload_keys(pe_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->keys == NULL)
        return 0;
    pe_keyset_t *set = build_keys(cfg, err, errlen);
    if (set == NULL)
        return -1;
    pe_keyholder_swap(cfg->keys, set);
    return 0;
}

/* ---- command line ---------------------------------------------------------------------------- */

static void
print_help(FILE *out)
{
    fprintf(out, "usage: pushedge [options]\n\nEvery option also reads from the environment as PUSHEDGE_<NAME> (upper case, '-' -> "
                 "'_');\nthe command line wins over the environment, which wins over --config.\n\n");
    for (size_t i = 0; i != NUM_OPTIONS; ++i) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", options[i].name, options[i].arg != NULL ? " " : "",
                 options[i].arg != NULL ? options[i].arg : "");
        fprintf(out, "  %-28s %s\n", left, options[i].help);
    }
}

int
pe_config_load(pe_config_t *cfg, int argc, char **argv, char **envp, FILE *out, char *err, size_t errlen)
{
    struct option longopts[NUM_OPTIONS + 1];
    int ret;

    set_defaults(cfg);
    for (size_t i = 0; i != NUM_OPTIONS; ++i)
        longopts[i] = (struct option){options[i].name,
                                      options[i].kind == OPT_FLAG || options[i].kind == OPT_HELP || options[i].kind == OPT_VERSION
                                          ? no_argument
                                          : required_argument,
                                      NULL, (int)i};
    longopts[NUM_OPTIONS] = (struct option){0};

    /* Pass 1: validate the syntax and find --config, --help and --version. */
    const char *config_file = env_lookup(envp, "PUSHEDGE_CONFIG");
    opterr = 0;
    optind = 0;
    int idx;
    while ((idx = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        if (idx == '?')
            return fail(err, errlen, "%s: unknown option", argv[optind - 1]);
        if (idx == ':')
            return fail(err, errlen, "%s: needs a value", argv[optind - 1]);
        const opt_t *opt = &options[idx];
        if (opt->kind == OPT_HELP) {
            print_help(out);
            return PE_CFG_EXIT_OK;
        }
        if (opt->kind == OPT_VERSION) {
            fprintf(out, "pushedge %s\n", PE_VERSION);
            return PE_CFG_EXIT_OK;
        }
        if ((opt->offset == OFF(config_file) && opt->kind == OPT_STRING))
            config_file = optarg;
    }
    if (optind < argc)
        return fail(err, errlen, "%s: unexpected argument", argv[optind]);

    /* Weakest first: the file, then the environment, then the command line. */
    if (config_file != NULL) {
        if (*config_file == '\0')
            return fail(err, errlen, "--config: must not be empty");
        cfg->config_file = pe_strndup(config_file, strlen(config_file));
        if ((ret = load_file(cfg, config_file, err, errlen)) != PE_CFG_OK)
            return ret;
    }
    if ((ret = load_env(cfg, envp, err, errlen)) != PE_CFG_OK)
        return ret;

    int cli_listen = 0, cli_listen_tls = 0, cli_origin = 0, cli_cidr = 0, cli_jwt_key = 0, cli_public = 0;
    optind = 0;
    while ((idx = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        const opt_t *opt = &options[idx];
        char origin[64];
        snprintf(origin, sizeof(origin), "--%s", opt->name);
        if (opt->kind == OPT_FLAG) {
            *(int *)((char *)cfg + opt->offset) = 1;
            continue;
        }
        if ((opt->offset == OFF(config_file) && opt->kind == OPT_STRING))
            continue;
        /* The command line's list replaces the others, it does not add to them. */
        if (opt->kind == OPT_LISTEN && !cli_listen) {
            clear_list(cfg, opt);
            cli_listen = 1;
        }
        if (opt->kind == OPT_LISTEN_TLS && !cli_listen_tls) {
            clear_list(cfg, opt);
            cli_listen_tls = 1;
        }
        if (opt->kind == OPT_ORIGIN && !cli_origin) {
            clear_list(cfg, opt);
            cli_origin = 1;
        }
        if (opt->kind == OPT_CIDR && !cli_cidr) {
            clear_list(cfg, opt);
            cli_cidr = 1;
        }
        if (opt->kind == OPT_JWT_KEY && !cli_jwt_key) {
            clear_list(cfg, opt);
            cli_jwt_key = 1;
        }
        if (opt->kind == OPT_PUBLIC && !cli_public) {
            clear_list(cfg, opt);
            cli_public = 1;
        }
        if ((ret = set_option(cfg, opt, optarg, origin, err, errlen)) != PE_CFG_OK)
            return ret;
    }
    /* TLS needs its files, and files without a TLS listener are a mistake worth saying (a
     * deploy that meant to serve https would otherwise serve clear text only). */
    if (cfg->num_listen_tls != 0 && cfg->tls_cert == NULL)
        return fail(err, errlen, "--listen-tls: needs --tls-cert FILE (the PEM certificate chain)");
    if (cfg->num_listen_tls != 0 && cfg->tls_key == NULL)
        return fail(err, errlen, "--listen-tls: needs --tls-key FILE (the PEM private key)");
    if (cfg->num_listen_tls == 0 && (cfg->tls_cert != NULL || cfg->tls_key != NULL))
        return fail(err, errlen, "%s: needs --listen-tls HOST:PORT", cfg->tls_cert != NULL ? "--tls-cert" : "--tls-key");
    /* A WAIT with the memory engine would be a setting that silently does nothing. */
    if (cfg->redis_wait_replicas != 0 && cfg->redis_url == NULL)
        return fail(err, errlen, "--redis-wait-replicas: needs --redis");
    /* Clients told to leave after the drain's deadline would never be told: the process ends
     * first. Unset, the spread takes the first half of the window, leaving the second for the
     * last batch's clients to go. */
    if (cfg->drain_spread == UINT64_MAX)
        cfg->drain_spread = cfg->drain_timeout * 1000 / 2;
    else if (cfg->drain_spread > cfg->drain_timeout * 1000)
        return fail(err, errlen, "--drain-spread: %llu ms is longer than --drain-timeout (%llu s)",
                    (unsigned long long)cfg->drain_spread, (unsigned long long)cfg->drain_timeout);
    /* The zero-setup default: clear text on loopback, only when no listener was asked for. */
    if (cfg->num_listen == 0 && cfg->num_listen_tls == 0)
        cfg->listen[cfg->num_listen++] = pe_strndup("127.0.0.1:8080", 14);
    return load_identity(cfg, err, errlen);
}

void
pe_config_dispose(pe_config_t *cfg)
{
    for (size_t i = 0; i != cfg->num_listen; ++i)
        pe_free(cfg->listen[i]);
    for (size_t i = 0; i != cfg->num_listen_tls; ++i)
        pe_free(cfg->listen_tls[i]);
    for (size_t i = 0; i != cfg->num_allowed_origins; ++i)
        pe_free(cfg->allowed_origins[i]);
    for (size_t i = 0; i != cfg->num_trusted_proxies; ++i)
        pe_free(cfg->trusted_proxies[i]);
    for (size_t i = 0; i != cfg->num_jwt_key_files; ++i)
        pe_free(cfg->jwt_key_files[i]);
    for (size_t i = 0; i != cfg->num_public_channels; ++i)
        pe_free(cfg->public_channel_list[i]);
    pe_patterns_dispose(&cfg->public_channels);
    pe_keyholder_free(cfg->keys);
    if (cfg->jwt_secret != NULL)
        memset(cfg->jwt_secret, 0, strlen(cfg->jwt_secret));
    pe_free(cfg->jwt_secret);
    pe_free(cfg->jwt_issuer);
    pe_free(cfg->jwt_audience);
    pe_free(cfg->redis_url);
    pe_free(cfg->api_key);
    pe_free(cfg->tls_cert);
    pe_free(cfg->tls_key);
    pe_free(cfg->config_file);
    pe_free(cfg->web_root);
    memset(cfg, 0, sizeof(*cfg));
}

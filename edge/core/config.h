/*
 * config.h: the server's settings (docs/operations.md "Running"), loaded once at start and
 * immutable afterwards. Sources, weakest first: defaults, the JSON --config file, PUSHEDGE_*
 * environment variables, the command line.
 */
#ifndef PE_CONFIG_H
#define PE_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include "edge/util/bounds.h"
#include "edge/identity/keys.h"
#include "edge/identity/policy.h"

/* An IP network; IPv4 is kept as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix + 96). */
typedef struct st_pe_cidr_t {
    unsigned char addr[16];
    unsigned bits;
} pe_cidr_t;

typedef struct st_pe_config_t {
    char *listen[PE_MAX_LISTEN]; /* "HOST:PORT", owned */
    size_t num_listen;
    /* TLS listeners (--listen-tls) and the files they serve (edge/tls.c reads them at start
     * and on SIGHUP); a TLS listener needs both files, and the files need a listener. */
    char *listen_tls[PE_MAX_LISTEN]; /* "HOST:PORT", owned */
    size_t num_listen_tls;
    char *tls_cert;                /* PEM: the certificate, then its chain */
    char *tls_key;                 /* PEM private key */
    char *redis_url;               /* NULL: the memory engine */
    uint64_t redis_wait_replicas;  /* WAIT for this many replicas after each publish; 0: no WAIT */
    uint64_t redis_wait_timeout;   /* ms, for that WAIT */
    uint64_t catchup_cache;        /* messages per channel per thread in the catch-up cache (0: off) */
    uint64_t redis_batch_announce; /* 1: a batch is announced a few KiB per PUBLISH; 0: one per message */
    unsigned threads;
    uint64_t history_size;
    uint64_t history_ttl;   /* seconds */
    uint64_t max_channels;  /* 0: no bound */
    uint64_t poll_timeout;  /* seconds */
    uint64_t ping_interval; /* seconds */
    uint64_t max_message_size;
    /* Seconds a publish's idempotency key is remembered (pe_ps_options_t). */
    uint64_t idempotency_window;
    /* Presence (docs/operations.md "Presence"): the event bound per channel, and the Redis
     * engine's heartbeat deadline of a node (seconds). */
    uint64_t presence_max_members;
    uint64_t presence_node_timeout;
    uint64_t presence_count_interval; /* ms between count events of a large channel (pe_ps_options_t) */
    char *api_key;
    uint64_t drain_timeout; /* seconds */
    uint64_t drain_spread;  /* ms over which a drain tells its clients to leave (default: half of drain_timeout) */
    uint64_t drain_delay;   /* seconds of pre-drain (readiness 503, still serving) */
    int ws_echo;
    int no_ws_deflate; /* --no-ws-deflate: decline permessage-deflate (docs/security.md) */
    char *config_file;
    int log_level;
    int log_format; /* PE_LOG_FORMAT_TEXT (0, the default) or PE_LOG_FORMAT_JSON */
    char *web_root; /* directory of the demo page and client; NULL: built-in default */
    /* Origins allowed cross-origin on /sse, /poll and /api/publish (CORS) and at the WebSocket
     * handshake; "*" allows any. None: no CORS headers, and no Origin check on WebSocket. */
    char *allowed_origins[PE_MAX_ORIGINS];
    size_t num_allowed_origins;
    /* Resource limits (docs/operations.md "Limits"); 0 means the default derived at start. */
    uint64_t max_connections;        /* open TCP connections per node; 0: RLIMIT_NOFILE minus a reserve */
    uint64_t max_connections_per_ip; /* per peer address; 0: off */
    uint64_t max_held_polls;         /* long-polls held open per node; 0: the connection limit */
    /* Peers whose X-Forwarded-For / Forwarded name the client (--trusted-proxy CIDR); the
     * strings as given, and the networks parsed from them. */
    char *trusted_proxies[PE_MAX_TRUSTED_PROXIES];
    pe_cidr_t trusted_nets[PE_MAX_TRUSTED_PROXIES];
    size_t num_trusted_proxies;
    /* Identity and access (docs/auth.md). */
    int auth_mode; /* pe_auth_mode_t */
    char *jwt_secret;
    char *jwt_key_files[PE_MAX_JWT_KEY_FILES];
    size_t num_jwt_key_files;
    char *jwt_issuer, *jwt_audience;
    uint64_t jwt_leeway; /* seconds */
    char *public_channel_list[PE_MAX_PUBLIC_CHANNELS];
    size_t num_public_channels;
    /* Built at load from the settings above: the public patterns, and the key set (NULL with
     * --auth off), which pe_config_reload_keys replaces on SIGHUP. */
    pe_patterns_t public_channels;
    pe_keyholder_t *keys;
} pe_config_t;

enum { PE_CFG_OK = 0, PE_CFG_EXIT_OK = 1, PE_CFG_ERROR = 2 };

/**
 * Fills cfg from defaults, the config file, envp (NULL-terminated "NAME=value" strings) and
 * argv. Returns PE_CFG_OK; PE_CFG_EXIT_OK after printing --help or --version to out; or
 * PE_CFG_ERROR with a one-line message naming the option in err (the caller exits with 2).
 * cfg must be released with pe_config_dispose in every case.
 */
int pe_config_load(pe_config_t *cfg, int argc, char **argv, char **envp, FILE *out, char *err, size_t errlen);
void pe_config_dispose(pe_config_t *cfg);

/**
 * Reads --jwt-secret and the --jwt-key files again into a new key set and swaps it in; on an
 * error keeps the current set and returns -1 with the reason in err. 0 if done (or auth off).
 * Main thread (SIGHUP); verifications in flight keep the set they took (keys.h).
 */
int pe_config_reload_keys(pe_config_t *cfg, char *err, size_t errlen);

/**
 * Splits "HOST:PORT" ("[v6]:PORT" for IPv6) into host (NUL-terminated, brackets removed) and
 * port. Returns 0, or -1 if malformed or the port is outside 1-65535.
 */
int pe_config_split_hostport(const char *s, char *host, size_t hostlen, unsigned *port);

/** Parses "ADDR/BITS" or "ADDR" (IPv4 or IPv6). Returns 0, or -1 if malformed. */
int pe_config_parse_cidr(const char *s, pe_cidr_t *out);
/** Parses an IPv4 or IPv6 address (no brackets, no port) into 16 bytes (IPv4 mapped). 0 or -1. */
int pe_config_parse_ip(const char *s, size_t len, unsigned char out[16]);
/** 1 if the 16-byte address is in the network. */
int pe_cidr_contains(const pe_cidr_t *net, const unsigned char addr[16]);

#endif

/*
 * libFuzzer driver for the config file loader (edge/core/config.c, pe_config_load with --config).
 *
 * The input is written to an in-memory file (memfd, created once per process, rewritten for
 * every input) and loaded exactly as the server does at start: `pushedge --config FILE` with an empty
 * environment. LeakSanitizer (on by default in libFuzzer's ASan builds) reports any allocation
 * pe_config_dispose does not release, on every path, errors included. Checks:
 *   - the result is PE_CFG_OK or PE_CFG_ERROR (never the --help/--version exit);
 *   - an error is one non-empty line naming "--config" and the file;
 *   - loading the same file twice gives the same result and the same message;
 *   - on success, with jansson as the oracle: every member of the object set its option to the
 *     value written (integers and strings exactly, an integer for a text option as its decimal
 *     text; a list option holds the file's strings in order, an empty listen list the default); numbers are within the option's
 * range; at least one listen address; a Redis URL starts with redis://.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <jansson.h>
#include "edge/core/config.h"
#include "fuzz.h"

static char path[64];
static int fd = -1;

static int
load(pe_config_t *cfg, char *err, size_t errlen)
{
    char *argv[] = {"pushedge", "--config", path, NULL};
    char *envp[] = {NULL};
    return pe_config_load(cfg, 3, argv, envp, stdout, err, errlen);
}

/* The list option's values must be exactly the file's strings (one string or an array). */
static void
check_list(json_t *v, char *const *items, size_t n, const char *dflt)
{
    if (json_is_array(v) && json_array_size(v) == 0 && dflt != NULL) {
        CHECK(n == 1 && strcmp(items[0], dflt) == 0); /* an empty list of addresses means the default */
        return;
    }
    if (json_is_string(v)) {
        CHECK(n == 1 && strcmp(items[0], json_string_value(v)) == 0);
        return;
    }
    CHECK(json_is_array(v) && json_array_size(v) == n);
    for (size_t i = 0; i != n; ++i)
        CHECK(strcmp(items[i], json_string_value(json_array_get(v, i))) == 0);
}

/* An unsigned option: the value written (an integer, or a string of digits) is the value set. */
static void
check_uint(json_t *v, uint64_t got)
{
    if (json_is_integer(v))
        CHECK((uint64_t)json_integer_value(v) == got);
    else
        CHECK(json_is_string(v) && strtoull(json_string_value(v), NULL, 10) == got);
}

/* A text option: the string written, or an integer written as its decimal text (the file's
 * values go through the same text setter as the command line's). */
static void
check_string(json_t *v, const char *got)
{
    char buf[32];
    const char *want = json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        want = buf;
    }
    CHECK(want != NULL && got != NULL && strcmp(want, got) == 0);
}

static void
check_loaded(const pe_config_t *cfg, const uint8_t *data, size_t size)
{
    json_t *root = json_loadb((const char *)data, size, 0, NULL);
    CHECK(root != NULL && json_is_object(root)); /* the loader accepted it */
    CHECK(cfg->num_listen >= 1 && cfg->num_listen <= PE_MAX_LISTEN);
    CHECK(cfg->num_allowed_origins <= PE_MAX_ORIGINS);
    CHECK(cfg->threads >= 1 && cfg->threads <= PE_MAX_THREADS);
    CHECK(cfg->history_size >= 1 && cfg->poll_timeout >= 1 && cfg->ping_interval >= 1 && cfg->max_message_size >= 1);
    CHECK(cfg->redis_url == NULL || strncmp(cfg->redis_url, "redis://", 8) == 0 ||
          strncmp(cfg->redis_url, "redis+sentinel://", 17) == 0);
    for (size_t i = 0; i != cfg->num_listen; ++i) {
        char host[256];
        unsigned port;
        CHECK(pe_config_split_hostport(cfg->listen[i], host, sizeof(host), &port) == 0 && port >= 1 && port <= 65535);
    }

    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "listen") == 0)
            check_list(v, cfg->listen, cfg->num_listen, "127.0.0.1:8080");
        else if (strcmp(key, "allowed-origin") == 0)
            check_list(v, cfg->allowed_origins, cfg->num_allowed_origins, NULL);
        else if (strcmp(key, "threads") == 0)
            check_uint(v, cfg->threads);
        else if (strcmp(key, "history-size") == 0)
            check_uint(v, cfg->history_size);
        else if (strcmp(key, "history-ttl") == 0)
            check_uint(v, cfg->history_ttl);
        else if (strcmp(key, "poll-timeout") == 0)
            check_uint(v, cfg->poll_timeout);
        else if (strcmp(key, "ping-interval") == 0)
            check_uint(v, cfg->ping_interval);
        else if (strcmp(key, "max-message-size") == 0)
            check_uint(v, cfg->max_message_size);
        else if (strcmp(key, "drain-timeout") == 0)
            check_uint(v, cfg->drain_timeout);
        else if (strcmp(key, "api-key") == 0)
            check_string(v, cfg->api_key);
        else if (strcmp(key, "web-root") == 0)
            check_string(v, cfg->web_root);
        else if (strcmp(key, "redis") == 0)
            check_string(v, cfg->redis_url);
        else if (strcmp(key, "ws-echo") == 0)
            CHECK(cfg->ws_echo == (json_is_boolean(v) ? json_is_true(v) : cfg->ws_echo));
        /* The other options (limits, idempotency window, proxies, ...) were added after this
         * checker: an accepted file means the key is known; tests/unit/test_config checks their
         * values. */
    }
    json_decref(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        /* In memory: a file on disk, truncated and rewritten per input, made the target wait on
         * the file system (about 200 inputs a second instead of thousands). */
        fd = memfd_create("pushedge-fuzz-config", 0);
        CHECK(fd >= 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);

    pe_config_t cfg, again;
    char err[512], err2[512];
    err[0] = err2[0] = '\0';
    int r = load(&cfg, err, sizeof(err));
    int r2 = load(&again, err2, sizeof(err2));
    CHECK(r == PE_CFG_OK || r == PE_CFG_ERROR);
    CHECK(r2 == r && strcmp(err, err2) == 0);
    if (r == PE_CFG_ERROR) {
        CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
        CHECK(strncmp(err, "--config", 8) == 0 && strstr(err, path) != NULL);
    } else {
        check_loaded(&cfg, data, size);
    }
    pe_config_dispose(&cfg);
    pe_config_dispose(&again);
    return 0;
}

/*
 * Unit tests for edge/core/config.c: the defaults; every option from the command line (both
 * "--name value" and "--name=value"); every option from PUSHEDGE_<NAME> variables (lists of
 * addresses separated by commas or spaces, booleans in their accepted spellings); every option
 * from a JSON config file named by --config or PUSHEDGE_CONFIG; the precedence command line >
 * environment > file > defaults, including --listen (repeatable, and replacing the other
 * sources' addresses instead of adding to them); --help and --version; and the errors, each of
 * which must return PE_CFG_ERROR with one line that names the option or setting at fault. Last,
 * pe_config_split_hostport on IPv4, bracketed IPv6, names, and malformed input.
 *
 * Every pe_config_load is followed by pe_config_dispose (also after errors), so the ASan build
 * checks that no path leaks. Temporary files are made with mkstemp in /tmp and removed.
 *
 * Not covered here: what the server does with the values (e2e tests), and getopt_long's own
 * conveniences (unambiguous abbreviations such as --thr), which are not part of the contract.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tap.h"
#include "edge/core/config.h"
#include "edge/util/log.h"

#define NUM_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers --------------------------------------------------------------------------------- */

/* The result of one pe_config_load call, with what it printed. */
typedef struct {
    int ret;
    pe_config_t cfg;
    char err[512];
    char *out; /* what was printed to the FILE (open_memstream; always NUL-terminated) */
    size_t out_len;
} loaded_t;

/*
 * Loads with argv (NULL-terminated, program name first) and envp. getopt_long permutes argv,
 * so callers pass mutable arrays.
 */
static void
load(loaded_t *l, char **argv, char **envp)
{
    int argc = 0;
    while (argv[argc] != NULL)
        ++argc;
    FILE *out = open_memstream(&l->out, &l->out_len);
    if (out == NULL)
        abort();
    memset(l->err, 0, sizeof(l->err));
    l->ret = pe_config_load(&l->cfg, argc, argv, envp, out, l->err, sizeof(l->err));
    fclose(out);
}

static void
loaded_free(loaded_t *l)
{
    pe_config_dispose(&l->cfg);
    free(l->out);
}

/* A JSON file in /tmp holding text; its path goes to path (at least 64 bytes). */
static void
write_temp(const char *text, char *path)
{
    snprintf(path, 64, "/tmp/pe-test-config-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        abort();
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        perror("write");
        abort();
    }
    close(fd);
}

/* Asserts that loading fails with a one-line message containing needle (the option's name). */
static void
expect_error(const char *what, char **argv, char **envp, const char *needle)
{
    loaded_t l;
    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_ERROR, "%s: PE_CFG_ERROR", what);
    TAP_OK(strstr(l.err, needle) != NULL, "%s: the message names %s (%s)", what, needle, l.err);
    TAP_OK(strchr(l.err, '\n') == NULL && l.err[0] != '\0', "%s: the message is one line", what);
    TAP_EQ_UINT(l.out_len, 0, "%s: nothing printed to out", what);
    loaded_free(&l);
}

/* Shorthand for a command-line error with an empty environment. */
static void
expect_cli_error(char **argv, const char *needle)
{
    char *envp[] = {NULL};
    char what[128];
    size_t off = 0;
    what[0] = '\0';
    for (char **a = argv + 1; *a != NULL && off < sizeof(what) - 1; ++a)
        off += (size_t)snprintf(what + off, sizeof(what) - off, "%s%s", a == argv + 1 ? "" : " ", *a);
    expect_error(what, argv, envp, needle);
}

static unsigned
default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > PE_MAX_THREADS ? PE_MAX_THREADS : (unsigned)n;
}

/* ---- defaults -------------------------------------------------------------------------------- */

static void
check_defaults(const pe_config_t *cfg, const char *what)
{
    TAP_EQ_UINT(cfg->num_listen, 1, "%s: one listen address", what);
    TAP_EQ_STR(cfg->num_listen == 1 ? cfg->listen[0] : NULL, "127.0.0.1:8080", "%s: listen", what);
    TAP_EQ_PTR(cfg->redis_url, NULL, "%s: memory engine", what);
    TAP_EQ_UINT(cfg->threads, default_threads(), "%s: threads = cores", what);
    TAP_EQ_UINT(cfg->history_size, 1000, "%s: history-size", what);
    TAP_EQ_UINT(cfg->history_ttl, 86400, "%s: history-ttl", what);
    TAP_EQ_UINT(cfg->poll_timeout, 25, "%s: poll-timeout", what);
    TAP_EQ_UINT(cfg->ping_interval, 25, "%s: ping-interval", what);
    TAP_EQ_UINT(cfg->max_message_size, 65536, "%s: max-message-size", what);
    TAP_EQ_PTR(cfg->api_key, NULL, "%s: no api-key", what);
    TAP_EQ_UINT(cfg->drain_timeout, 10, "%s: drain-timeout", what);
    TAP_EQ_UINT(cfg->drain_spread, 5000, "%s: drain-spread half of drain-timeout, in ms", what);
    TAP_EQ_INT(cfg->ws_echo, 0, "%s: ws-echo off", what);
    TAP_EQ_PTR(cfg->config_file, NULL, "%s: no config file", what);
    TAP_EQ_INT(cfg->log_level, PE_LOG_INFO, "%s: log-level info", what);
    TAP_EQ_INT(cfg->log_format, PE_LOG_FORMAT_TEXT, "%s: log-format text", what);
    TAP_EQ_PTR(cfg->web_root, NULL, "%s: no web-root", what);
}

static void
test_defaults(void)
{
    char *argv[] = {"pushedge", NULL};
    char *envp[] = {"HOME=/root", "PUSHEDGE=1", "PUSHEDGE_THREADSX=3", "XPUSHEDGE_THREADS=3", "PUSHEDGE_THREADS", NULL};
    loaded_t l;

    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "no arguments: PE_CFG_OK");
    check_defaults(&l.cfg, "defaults");
    TAP_EQ_UINT(l.out_len, 0, "nothing printed");
    loaded_free(&l);

    /* A NULL environment is allowed too. */
    char *argv2[] = {"pushedge", NULL};
    load(&l, argv2, NULL);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "NULL envp: PE_CFG_OK");
    check_defaults(&l.cfg, "NULL envp");
    loaded_free(&l);

    /* Loading twice in one process gives the same result (getopt state is reset). */
    char *argv3[] = {"pushedge", NULL};
    load(&l, argv3, envp);
    check_defaults(&l.cfg, "second load");
    loaded_free(&l);
}

/* ---- every option from the command line ------------------------------------------------------ */

static void
test_cli(void)
{
    char path[64];
    write_temp("{}", path);
    char config_arg[80];
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    char *argv[] = {"pushedge",
                    "--listen",
                    "0.0.0.0:9000",
                    "--listen=[::1]:9001",
                    "--redis",
                    "redis://:p@ss@localhost:6380/2",
                    "--threads",
                    "3",
                    "--history-size",
                    "5",
                    "--history-ttl",
                    "60",
                    "--poll-timeout",
                    "7",
                    "--ping-interval",
                    "8",
                    "--max-message-size=1024",
                    "--api-key",
                    "s3cret",
                    "--drain-timeout",
                    "0",
                    "--ws-echo",
                    config_arg,
                    "--log-level",
                    "DEBUG",
                    "--web-root",
                    "/srv/web",
                    NULL};
    char *envp[] = {NULL};
    loaded_t l;

    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "every option: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen, 2, "two listen addresses");
    TAP_EQ_STR(l.cfg.listen[0], "0.0.0.0:9000", "first listen address");
    TAP_EQ_STR(l.cfg.num_listen > 1 ? l.cfg.listen[1] : NULL, "[::1]:9001", "second listen address");
    TAP_EQ_STR(l.cfg.redis_url, "redis://:p@ss@localhost:6380/2", "redis URL (password with '@')");
    TAP_EQ_UINT(l.cfg.threads, 3, "threads");
    TAP_EQ_UINT(l.cfg.history_size, 5, "history-size");
    TAP_EQ_UINT(l.cfg.history_ttl, 60, "history-ttl");
    TAP_EQ_UINT(l.cfg.poll_timeout, 7, "poll-timeout");
    TAP_EQ_UINT(l.cfg.ping_interval, 8, "ping-interval");
    TAP_EQ_UINT(l.cfg.max_message_size, 1024, "max-message-size");
    TAP_EQ_STR(l.cfg.api_key, "s3cret", "api-key");
    TAP_EQ_UINT(l.cfg.drain_timeout, 0, "drain-timeout 0 is allowed");
    TAP_EQ_UINT(l.cfg.drain_spread, 0, "drain-spread: half of 0 s");
    TAP_EQ_INT(l.cfg.ws_echo, 1, "ws-echo");
    TAP_EQ_STR(l.cfg.config_file, path, "config file");
    TAP_EQ_INT(l.cfg.log_level, PE_LOG_DEBUG, "log-level (case-insensitive)");
    TAP_EQ_STR(l.cfg.web_root, "/srv/web", "web-root");
    loaded_free(&l);
    unlink(path);

    /* The bounds themselves are accepted. */
    char *argv2[] = {"pushedge",           "--threads", "64",          "--history-size", "10000000",
                     "--max-message-size", "67108864",  "--log-level", "error",          NULL};
    load(&l, argv2, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "upper bounds: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.threads, 64, "threads 64");
    TAP_EQ_UINT(l.cfg.history_size, 10000000, "history-size 10000000");
    TAP_EQ_UINT(l.cfg.max_message_size, 64u << 20, "max-message-size 64 MiB");
    TAP_EQ_INT(l.cfg.log_level, PE_LOG_ERROR, "log-level error");
    loaded_free(&l);

    char *argv_lf[] = {"pushedge", "--log-format", "JSON", NULL};
    load(&l, argv_lf, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "log-format: PE_CFG_OK (%s)", l.err);
    TAP_EQ_INT(l.cfg.log_format, PE_LOG_FORMAT_JSON, "log-format json (case-insensitive)");
    loaded_free(&l);
    char *argv_lfbad[] = {"pushedge", "--log-format", "xml", NULL};
    load(&l, argv_lfbad, envp);
    TAP_EQ_INT(l.ret, PE_CFG_ERROR, "log-format xml: refused");
    TAP_OK(strstr(l.err, "--log-format") != NULL && strstr(l.err, "text or json") != NULL, "the error names it: %s", l.err);
    loaded_free(&l);

    /* A repeated scalar option: the last one wins. */
    char *argv3[] = {"pushedge", "--threads", "2", "--threads", "4", "--api-key", "a", "--api-key", "b", NULL};
    load(&l, argv3, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "repeated options: PE_CFG_OK");
    TAP_EQ_UINT(l.cfg.threads, 4, "repeated --threads: the last wins");
    TAP_EQ_STR(l.cfg.api_key, "b", "repeated --api-key: the last wins");
    loaded_free(&l);

    /* Options after a non-option are still options (and the non-option is an error). */
    char *argv4[] = {"pushedge", "--threads", "2", "--", NULL};
    load(&l, argv4, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "a trailing \"--\" is accepted");
    loaded_free(&l);
}

/* ---- every option from the environment ------------------------------------------------------- */

static void
test_env(void)
{
    char path[64], config_env[96];
    write_temp("{\"poll-timeout\": 3}", path);
    snprintf(config_env, sizeof(config_env), "PUSHEDGE_CONFIG=%s", path);
    char *argv[] = {"pushedge", NULL};
    char *envp[] = {"PUSHEDGE_LISTEN=127.0.0.1:1,[::1]:2 localhost:3, ,",
                    "PUSHEDGE_REDIS=redis://127.0.0.1:6379",
                    "PUSHEDGE_THREADS=2",
                    "PUSHEDGE_HISTORY_SIZE=42",
                    "PUSHEDGE_HISTORY_TTL=3600",
                    "PUSHEDGE_PING_INTERVAL=9",
                    "PUSHEDGE_MAX_MESSAGE_SIZE=100",
                    "PUSHEDGE_API_KEY=k",
                    "PUSHEDGE_DRAIN_TIMEOUT=1",
                    "PUSHEDGE_WS_ECHO=true",
                    config_env,
                    "PUSHEDGE_LOG_LEVEL=warn",
                    "PUSHEDGE_WEB_ROOT=/w",
                    NULL};
    loaded_t l;

    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "every variable: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen, 3, "PUSHEDGE_LISTEN splits on commas and spaces");
    TAP_EQ_STR(l.cfg.listen[0], "127.0.0.1:1", "listen 0");
    TAP_EQ_STR(l.cfg.num_listen > 1 ? l.cfg.listen[1] : NULL, "[::1]:2", "listen 1");
    TAP_EQ_STR(l.cfg.num_listen > 2 ? l.cfg.listen[2] : NULL, "localhost:3", "listen 2");
    TAP_EQ_STR(l.cfg.redis_url, "redis://127.0.0.1:6379", "PUSHEDGE_REDIS");
    TAP_EQ_UINT(l.cfg.threads, 2, "PUSHEDGE_THREADS");
    TAP_EQ_UINT(l.cfg.history_size, 42, "PUSHEDGE_HISTORY_SIZE");
    TAP_EQ_UINT(l.cfg.history_ttl, 3600, "PUSHEDGE_HISTORY_TTL");
    TAP_EQ_UINT(l.cfg.poll_timeout, 3, "PUSHEDGE_CONFIG names the file (poll-timeout from it)");
    TAP_EQ_UINT(l.cfg.ping_interval, 9, "PUSHEDGE_PING_INTERVAL");
    TAP_EQ_UINT(l.cfg.max_message_size, 100, "PUSHEDGE_MAX_MESSAGE_SIZE");
    TAP_EQ_STR(l.cfg.api_key, "k", "PUSHEDGE_API_KEY");
    TAP_EQ_UINT(l.cfg.drain_timeout, 1, "PUSHEDGE_DRAIN_TIMEOUT");
    TAP_EQ_INT(l.cfg.ws_echo, 1, "PUSHEDGE_WS_ECHO=true");
    TAP_EQ_STR(l.cfg.config_file, path, "PUSHEDGE_CONFIG");
    TAP_EQ_INT(l.cfg.log_level, PE_LOG_WARN, "PUSHEDGE_LOG_LEVEL");
    TAP_EQ_STR(l.cfg.web_root, "/w", "PUSHEDGE_WEB_ROOT");
    loaded_free(&l);
    unlink(path);

    static const struct {
        const char *text;
        int value;
    } bools[] = {{"1", 1}, {"TRUE", 1}, {"yes", 1}, {"On", 1}, {"0", 0}, {"false", 0}, {"NO", 0}, {"off", 0}};
    for (size_t i = 0; i != NUM_OF(bools); ++i) {
        char var[64];
        snprintf(var, sizeof(var), "PUSHEDGE_WS_ECHO=%s", bools[i].text);
        char *argv2[] = {"pushedge", NULL}, *envp2[] = {var, NULL};
        load(&l, argv2, envp2);
        TAP_EQ_INT(l.ret, PE_CFG_OK, "%s: PE_CFG_OK", var);
        TAP_EQ_INT(l.cfg.ws_echo, bools[i].value, "%s: ws_echo", var);
        loaded_free(&l);
    }

    /* The first of two identical variables is the one read (as getenv does). */
    char *argv3[] = {"pushedge", NULL}, *envp3[] = {"PUSHEDGE_THREADS=5", "PUSHEDGE_THREADS=6", NULL};
    load(&l, argv3, envp3);
    TAP_EQ_UINT(l.cfg.threads, 5, "a duplicated variable: the first wins");
    loaded_free(&l);
}

/* ---- the config file ------------------------------------------------------------------------- */

static void
test_file(void)
{
    char path[64], config_arg[80];
    write_temp("{\"listen\": [\"10.0.0.1:1\", \"[::]:2\"], \"redis\": \"redis://r:1/0\", \"threads\": 2, \"history-size\": 7,"
               " \"history-ttl\": \"100\", \"poll-timeout\": 4, \"ping-interval\": 5, \"max-message-size\": 6,"
               " \"api-key\": \"fk\", \"drain-timeout\": 0, \"ws-echo\": true, \"log-level\": \"error\", \"web-root\": \"/fw\"}",
               path);
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    char *argv[] = {"pushedge", config_arg, NULL};
    char *envp[] = {NULL};
    loaded_t l;

    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "every setting: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen, 2, "listen array");
    TAP_EQ_STR(l.cfg.listen[0], "10.0.0.1:1", "listen 0");
    TAP_EQ_STR(l.cfg.num_listen > 1 ? l.cfg.listen[1] : NULL, "[::]:2", "listen 1");
    TAP_EQ_STR(l.cfg.redis_url, "redis://r:1/0", "redis");
    TAP_EQ_UINT(l.cfg.threads, 2, "threads");
    TAP_EQ_UINT(l.cfg.history_size, 7, "history-size");
    TAP_EQ_UINT(l.cfg.history_ttl, 100, "history-ttl as a numeric string");
    TAP_EQ_UINT(l.cfg.poll_timeout, 4, "poll-timeout");
    TAP_EQ_UINT(l.cfg.ping_interval, 5, "ping-interval");
    TAP_EQ_UINT(l.cfg.max_message_size, 6, "max-message-size");
    TAP_EQ_STR(l.cfg.api_key, "fk", "api-key");
    TAP_EQ_UINT(l.cfg.drain_timeout, 0, "drain-timeout");
    TAP_EQ_INT(l.cfg.ws_echo, 1, "ws-echo true");
    TAP_EQ_INT(l.cfg.log_level, PE_LOG_ERROR, "log-level");
    TAP_EQ_STR(l.cfg.web_root, "/fw", "web-root");
    loaded_free(&l);
    unlink(path);

    /* listen as a single string, ws-echo as false. */
    write_temp("{\"listen\": \"1.1.1.1:11\", \"ws-echo\": false}", path);
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    char *argv2[] = {"pushedge", config_arg, NULL};
    load(&l, argv2, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "listen string: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen, 1, "listen string: one address");
    TAP_EQ_STR(l.cfg.listen[0], "1.1.1.1:11", "listen string: value");
    TAP_EQ_INT(l.cfg.ws_echo, 0, "ws-echo false");
    loaded_free(&l);
    unlink(path);

    /* An empty object and an empty listen array leave the defaults. */
    write_temp("{\"listen\": []}", path);
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    char *argv3[] = {"pushedge", config_arg, NULL};
    load(&l, argv3, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "empty listen array: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen, 1, "empty listen array: the default address");
    TAP_EQ_STR(l.cfg.listen[0], "127.0.0.1:8080", "empty listen array: default value");
    loaded_free(&l);
    unlink(path);
}

/* ---- precedence ------------------------------------------------------------------------------ */

static void
test_precedence(void)
{
    char path[64], path2[64], config_arg[80], config_env[96];
    write_temp("{\"history-size\": 10, \"threads\": 2, \"poll-timeout\": 11, \"listen\": [\"10.0.0.1:1\"]}", path);
    write_temp("{\"history-size\": 99}", path2);
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    snprintf(config_env, sizeof(config_env), "PUSHEDGE_CONFIG=%s", path2);
    loaded_t l;

    char *argv1[] = {"pushedge", config_arg, NULL}, *envp1[] = {NULL};
    load(&l, argv1, envp1);
    TAP_EQ_UINT(l.cfg.history_size, 10, "file only: file value");
    TAP_EQ_STR(l.cfg.listen[0], "10.0.0.1:1", "file only: file's listen");
    loaded_free(&l);

    char *argv2[] = {"pushedge", config_arg, NULL};
    char *envp2[] = {"PUSHEDGE_HISTORY_SIZE=20", "PUSHEDGE_LISTEN=10.0.0.2:2", NULL};
    load(&l, argv2, envp2);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "file + env: PE_CFG_OK");
    TAP_EQ_UINT(l.cfg.history_size, 20, "env beats file");
    TAP_EQ_UINT(l.cfg.threads, 2, "file value kept where env is silent");
    TAP_EQ_UINT(l.cfg.num_listen, 1, "env's addresses replace the file's");
    TAP_EQ_STR(l.cfg.listen[0], "10.0.0.2:2", "env listen");
    loaded_free(&l);

    char *argv3[] = {"pushedge", "--history-size", "30", config_arg, "--listen", "10.0.0.3:3", "--listen", "10.0.0.4:4", NULL};
    char *envp3[] = {"PUSHEDGE_HISTORY_SIZE=20", "PUSHEDGE_LISTEN=10.0.0.2:2", "PUSHEDGE_POLL_TIMEOUT=12", NULL};
    load(&l, argv3, envp3);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "file + env + CLI: PE_CFG_OK");
    TAP_EQ_UINT(l.cfg.history_size, 30, "CLI beats env and file");
    TAP_EQ_UINT(l.cfg.poll_timeout, 12, "env beats file where the CLI is silent");
    TAP_EQ_UINT(l.cfg.threads, 2, "file where both are silent");
    TAP_EQ_UINT(l.cfg.num_listen, 2, "CLI addresses replace env's and file's");
    TAP_EQ_STR(l.cfg.listen[0], "10.0.0.3:3", "CLI listen 0");
    TAP_EQ_STR(l.cfg.num_listen > 1 ? l.cfg.listen[1] : NULL, "10.0.0.4:4", "CLI listen 1");
    loaded_free(&l);

    /* --config on the command line beats PUSHEDGE_CONFIG. */
    char *argv4[] = {"pushedge", config_arg, NULL}, *envp4[] = {config_env, NULL};
    load(&l, argv4, envp4);
    TAP_EQ_UINT(l.cfg.history_size, 10, "--config beats PUSHEDGE_CONFIG");
    TAP_EQ_STR(l.cfg.config_file, path, "--config beats PUSHEDGE_CONFIG: config_file");
    loaded_free(&l);

    /* The CLI flag turns ws-echo on over an env "false". */
    char *argv5[] = {"pushedge", "--ws-echo", NULL}, *envp5[] = {"PUSHEDGE_WS_ECHO=false", NULL};
    load(&l, argv5, envp5);
    TAP_EQ_INT(l.cfg.ws_echo, 1, "--ws-echo beats PUSHEDGE_WS_ECHO=false");
    loaded_free(&l);

    /* The CLI's address list replaces the default rather than adding to it. */
    char *argv6[] = {"pushedge", "--listen", "10.0.0.5:5", NULL}, *envp6[] = {NULL};
    load(&l, argv6, envp6);
    TAP_EQ_UINT(l.cfg.num_listen, 1, "--listen replaces the default");
    TAP_EQ_STR(l.cfg.listen[0], "10.0.0.5:5", "--listen value");
    loaded_free(&l);

    /* PE_MAX_LISTEN addresses fit; one more is an error naming --listen. */
    char *argv7[2 + 2 * (PE_MAX_LISTEN + 1)], ports[PE_MAX_LISTEN + 1][24];
    size_t n = 0;
    argv7[n++] = "pushedge";
    for (int i = 0; i != PE_MAX_LISTEN; ++i) {
        snprintf(ports[i], sizeof(ports[i]), "127.0.0.1:%d", 1000 + i);
        argv7[n++] = "--listen";
        argv7[n++] = ports[i];
    }
    argv7[n] = NULL;
    load(&l, argv7, envp6);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "%d addresses: PE_CFG_OK", PE_MAX_LISTEN);
    TAP_EQ_UINT(l.cfg.num_listen, PE_MAX_LISTEN, "%d addresses: count", PE_MAX_LISTEN);
    loaded_free(&l);
    snprintf(ports[PE_MAX_LISTEN], sizeof(ports[0]), "127.0.0.1:999");
    argv7[n++] = "--listen";
    argv7[n++] = ports[PE_MAX_LISTEN];
    argv7[n] = NULL;
    expect_error("one address too many", argv7, envp6, "--listen");

    unlink(path);
    unlink(path2);
}

/* ---- --help and --version -------------------------------------------------------------------- */

static void
test_help_version(void)
{
    static const char *const names[] = {"--listen",      "--redis",         "--threads",       "--history-size",
                                        "--history-ttl", "--poll-timeout",  "--ping-interval", "--max-message-size",
                                        "--api-key",     "--drain-timeout", "--ws-echo",       "--config",
                                        "--log-level",   "--web-root",      "--help",          "--version",
                                        "PUSHEDGE_"};
    char *envp[] = {NULL};
    loaded_t l;

    char *argv[] = {"pushedge", "--help", NULL};
    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_EXIT_OK, "--help: PE_CFG_EXIT_OK");
    for (size_t i = 0; i != NUM_OF(names); ++i)
        TAP_OK(l.out != NULL && strstr(l.out, names[i]) != NULL, "--help mentions %s", names[i]);
    loaded_free(&l);

    char *argv2[] = {"pushedge", "--version", NULL};
    load(&l, argv2, envp);
    TAP_EQ_INT(l.ret, PE_CFG_EXIT_OK, "--version: PE_CFG_EXIT_OK");
    TAP_EQ_STR(l.out, "pushedge " PE_VERSION "\n", "--version output");
    loaded_free(&l);

    /* --help wins over values that would be invalid, as long as the syntax is fine. */
    char *argv3[] = {"pushedge", "--threads", "0", "--help", NULL};
    load(&l, argv3, envp);
    TAP_EQ_INT(l.ret, PE_CFG_EXIT_OK, "--threads 0 --help: PE_CFG_EXIT_OK");
    TAP_OK(l.out_len > 0, "--threads 0 --help: help printed");
    loaded_free(&l);
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void
test_cli_errors(void)
{
    /* Each case: the arguments after the program name, then the text the message must name. */
    static const struct {
        const char *args[6];
        const char *needle;
    } cases[] = {
        {{"--threads", "0"}, "--threads"},
        {{"--threads", "abc"}, "--threads"},
        {{"--threads", "65"}, "--threads"},
        {{"--threads", "4x"}, "--threads"},
        {{"--threads", " 4"}, "--threads"},
        {{"--threads="}, "--threads"},
        {{"--threads", "18446744073709551617"}, "--threads"},
        {{"--history-size", "-1"}, "--history-size"},
        {{"--history-size", "0"}, "--history-size"},
        {{"--history-size", "10000001"}, "--history-size"},
        {{"--max-message-size", "67108865"}, "--max-message-size"},
        {{"--poll-timeout", "3601"}, "--poll-timeout"},
        {{"--listen", "nonsense"}, "--listen"},
        {{"--listen", "1.2.3.4:0"}, "--listen"},
        {{"--listen", "host:70000"}, "--listen"},
        {{"--listen", "::1:80"}, "--listen"},
        {{"--unknown"}, "--unknown"},
        {{"--threads", "2", "--unknown=1"}, "--unknown"},
        {{"--ws-echo=false"}, "--ws-echo"},
        {{"--threads"}, "--threads"},
        {{"--listen"}, "--listen"},
        {{"stray"}, "stray"},
        {{"--threads", "2", "stray", "--history-size", "3"}, "stray"},
        {{"--redis", "http://localhost:6379"}, "--redis"},
        {{"--redis", "redis://localhost"}, "--redis"},
        {{"--redis", "redis://localhost:6379/abc"}, "--redis"},
        {{"--redis", "redis://:6379"}, "--redis"},
        {{"--redis", "redis://pw@:6379"}, "--redis"},
        {{"--log-level", "loud"}, "--log-level"},
        {{"--api-key", ""}, "--api-key"},
        {{"--config", ""}, "--config"},
    };
    for (size_t i = 0; i != NUM_OF(cases); ++i) {
        /* getopt_long permutes the pointer array (never the strings), so it gets a fresh copy. */
        char *argv[8] = {"pushedge"};
        for (size_t k = 0; k != NUM_OF(cases[i].args) && cases[i].args[k] != NULL; ++k)
            argv[k + 1] = (char *)cases[i].args[k];
        expect_cli_error(argv, cases[i].needle);
    }
}

static void
test_env_errors(void)
{
    static const struct {
        const char *var, *needle;
    } cases[] = {
        {"PUSHEDGE_THREADS=0", "PUSHEDGE_THREADS"},
        {"PUSHEDGE_THREADS=abc", "PUSHEDGE_THREADS"},
        {"PUSHEDGE_HISTORY_SIZE=-1", "PUSHEDGE_HISTORY_SIZE"},
        {"PUSHEDGE_WS_ECHO=maybe", "PUSHEDGE_WS_ECHO"},
        {"PUSHEDGE_LISTEN=nonsense", "PUSHEDGE_LISTEN"},
        {"PUSHEDGE_LISTEN=127.0.0.1:1,host:70000", "PUSHEDGE_LISTEN"},
        {"PUSHEDGE_LISTEN= , ", "PUSHEDGE_LISTEN"},
        {"PUSHEDGE_LISTEN=", "PUSHEDGE_LISTEN"},
        {"PUSHEDGE_REDIS=redis://x", "PUSHEDGE_REDIS"},
        {"PUSHEDGE_LOG_LEVEL=loud", "PUSHEDGE_LOG_LEVEL"},
        {"PUSHEDGE_API_KEY=", "PUSHEDGE_API_KEY"},
        {"PUSHEDGE_CONFIG=/nonexistent/pushedge.json", "/nonexistent/pushedge.json"},
    };
    for (size_t i = 0; i != NUM_OF(cases); ++i) {
        char *argv[] = {"pushedge", NULL}, *envp[] = {(char *)cases[i].var, NULL};
        expect_error(cases[i].var, argv, envp, cases[i].needle);
    }

    /* The command line does not hide a bad variable: every source is validated. */
    char *argv[] = {"pushedge", "--threads", "2", NULL}, *envp[] = {"PUSHEDGE_THREADS=abc", NULL};
    expect_error("bad env under a CLI value", argv, envp, "PUSHEDGE_THREADS");
}

static void
test_file_errors(void)
{
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"not json", "line 1"},
        {"{\"threads\": 2", "--config"},
        {"[1, 2]", "must be a JSON object"},
        {"\"text\"", "--config"},
        {"{\"bogus\": 1}", "\"bogus\""},
        {"{\"threads\": 2, \"history_size\": 1}", "\"history_size\""},
        {"{\"help\": true}", "\"help\""},
        {"{\"config\": \"/etc/x.json\"}", "\"config\""},
        {"{\"threads\": [1]}", "\"threads\""},
        {"{\"threads\": true}", "\"threads\""},
        {"{\"threads\": 1.5}", "\"threads\""},
        {"{\"threads\": -1}", "\"threads\""},
        {"{\"threads\": null}", "\"threads\""},
        {"{\"threads\": \"abc\"}", "\"threads\""},
        {"{\"threads\": 65}", "\"threads\""},
        {"{\"ws-echo\": \"maybe\"}", "\"ws-echo\""},
        {"{\"ws-echo\": {}}", "\"ws-echo\""},
        {"{\"listen\": [1]}", "\"listen\""},
        {"{\"listen\": [\"127.0.0.1:1\", \"x\"]}", "\"listen\""},
        {"{\"listen\": {}}", "\"listen\""},
        {"{\"api-key\": \"\"}", "\"api-key\""},
        {"{\"redis\": \"redis://x\"}", "\"redis\""},
        {"{\"log-level\": \"loud\"}", "\"log-level\""},
    };
    for (size_t i = 0; i != NUM_OF(cases); ++i) {
        char path[64], config_arg[80], what[96];
        write_temp(cases[i].text, path);
        snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
        snprintf(what, sizeof(what), "file %.60s", cases[i].text);
        char *argv[] = {"pushedge", config_arg, NULL}, *envp[] = {NULL};
        expect_error(what, argv, envp, cases[i].needle);
        /* Every file error names the file, so the operator knows where to look. */
        loaded_t l;
        load(&l, argv, envp);
        TAP_OK(strstr(l.err, path) != NULL, "%s: the message names the file", what);
        loaded_free(&l);
        unlink(path);
    }

    char *argv[] = {"pushedge", "--config", "/nonexistent/pushedge.json", NULL}, *envp[] = {NULL};
    expect_error("missing config file", argv, envp, "--config");
}

/* ---- pe_config_split_hostport ---------------------------------------------------------------- */

static void
expect_split(const char *s, const char *host, unsigned port)
{
    char h[256] = "unset";
    unsigned p = 0;
    int r = pe_config_split_hostport(s, h, sizeof(h), &p);
    TAP_EQ_INT(r, 0, "split %s", s);
    TAP_EQ_STR(h, host, "split %s: host", s);
    TAP_EQ_UINT(p, port, "split %s: port", s);
}

static void
expect_split_error(const char *s)
{
    char h[256];
    unsigned p = 12345;
    TAP_EQ_INT(pe_config_split_hostport(s, h, sizeof(h), &p), -1, "split rejects \"%s\"", s);
    TAP_EQ_UINT(p, 12345, "split \"%s\": port untouched", s);
}

static void
test_split_hostport(void)
{
    expect_split("127.0.0.1:80", "127.0.0.1", 80);
    expect_split("0.0.0.0:65535", "0.0.0.0", 65535);
    expect_split("[::1]:80", "::1", 80);
    expect_split("[::]:1", "::", 1);
    expect_split("[fe80::1%eth0]:8080", "fe80::1%eth0", 8080);
    expect_split("localhost:8080", "localhost", 8080);
    expect_split("push.example.com:443", "push.example.com", 443);
    expect_split("h:00080", "h", 80);

    static const char *const bad[] = {"",           "nonsense",    ":80",      "host:",   "host:0",   "host:65536",
                                      "host:70000", "host:123456", "host:8a",  "host:-1", "host:+80", "host: 80",
                                      "::1:80",     "a:b:80",      "[::1]",    "[::1]80", "[::1:80",  "[]:80",
                                      "[::1]:",     "[::1]:0",     "1.2.3.4:0"};
    for (size_t i = 0; i != NUM_OF(bad); ++i)
        expect_split_error(bad[i]);

    /* The host must fit hostlen with its NUL. */
    char h[5];
    unsigned p;
    TAP_EQ_INT(pe_config_split_hostport("abcd:1", h, sizeof(h), &p), 0, "host of hostlen-1 bytes fits");
    TAP_EQ_STR(h, "abcd", "host of hostlen-1 bytes");
    TAP_EQ_INT(pe_config_split_hostport("abcde:1", h, sizeof(h), &p), -1, "host of hostlen bytes does not fit");
    TAP_EQ_INT(pe_config_split_hostport("[abcde]:1", h, sizeof(h), &p), -1, "bracketed host of hostlen bytes does not fit");
}

/* ---- --idempotency-window (kept apart so the shared lists above stay as they were) ------------- */

static void
test_idempotency_window(void)
{
    char *envp0[] = {NULL};
    loaded_t l;

    char *argv0[] = {"pushedge", NULL};
    load(&l, argv0, envp0);
    TAP_EQ_UINT(l.cfg.idempotency_window, 300, "default 300 s");
    loaded_free(&l);

    char *argv1[] = {"pushedge", "--idempotency-window", "5", NULL};
    load(&l, argv1, envp0);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "command line: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.idempotency_window, 5, "--idempotency-window 5");
    loaded_free(&l);

    char *envp2[] = {"PUSHEDGE_IDEMPOTENCY_WINDOW=60", NULL};
    load(&l, argv0, envp2);
    TAP_EQ_UINT(l.cfg.idempotency_window, 60, "PUSHEDGE_IDEMPOTENCY_WINDOW");
    loaded_free(&l);

    char path[64], config_arg[80];
    write_temp("{\"idempotency-window\": 42}", path);
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    char *argv3[] = {"pushedge", config_arg, NULL};
    load(&l, argv3, envp0);
    TAP_EQ_UINT(l.cfg.idempotency_window, 42, "config file");
    loaded_free(&l);
    char *argv4[] = {"pushedge", config_arg, NULL};
    load(&l, argv4, envp2);
    TAP_EQ_UINT(l.cfg.idempotency_window, 60, "the environment wins over the file");
    loaded_free(&l);
    unlink(path);

    char *argv5[] = {"pushedge", "--help", NULL};
    load(&l, argv5, envp0);
    TAP_OK(l.out != NULL && strstr(l.out, "--idempotency-window") != NULL, "--help lists --idempotency-window");
    loaded_free(&l);

    char *bad0[] = {"pushedge", "--idempotency-window", "0", NULL};
    expect_cli_error(bad0, "idempotency-window");
    char *bad1[] = {"pushedge", "--idempotency-window=604801", NULL};
    expect_cli_error(bad1, "idempotency-window");
    char *bad2[] = {"pushedge", "--idempotency-window", "5m", NULL};
    expect_cli_error(bad2, "idempotency-window");
}

/* --redis redis+sentinel://... and the WAIT options (docs/operations.md "Redis Sentinel"). */
static void
test_redis_sentinel_wait(void)
{
    char *envp0[] = {NULL};
    loaded_t l;

    char *argv0[] = {"pushedge", NULL};
    load(&l, argv0, envp0);
    TAP_EQ_UINT(l.cfg.redis_wait_replicas, 0, "default: no WAIT");
    TAP_EQ_UINT(l.cfg.redis_wait_timeout, 1000, "default WAIT timeout 1000 ms");
    loaded_free(&l);

    char *argv1[] = {"pushedge",
                     "--redis",
                     "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/pe/2",
                     "--redis-wait-replicas",
                     "1",
                     "--redis-wait-timeout",
                     "250",
                     NULL};
    load(&l, argv1, envp0);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "a sentinel URL and WAIT: PE_CFG_OK (%s)", l.err);
    TAP_EQ_STR(l.cfg.redis_url, "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/pe/2", "the sentinel URL kept");
    TAP_EQ_UINT(l.cfg.redis_wait_replicas, 1, "--redis-wait-replicas 1");
    TAP_EQ_UINT(l.cfg.redis_wait_timeout, 250, "--redis-wait-timeout 250");
    loaded_free(&l);

    char *envp2[] = {"PUSHEDGE_REDIS=redis://127.0.0.1:6379", "PUSHEDGE_REDIS_WAIT_REPLICAS=2", NULL};
    load(&l, argv0, envp2);
    TAP_EQ_UINT(l.cfg.redis_wait_replicas, 2, "PUSHEDGE_REDIS_WAIT_REPLICAS");
    loaded_free(&l);

    char *argv3[] = {"pushedge", "--help", NULL};
    load(&l, argv3, envp0);
    TAP_OK(l.out != NULL && strstr(l.out, "redis+sentinel://") != NULL && strstr(l.out, "--redis-wait-replicas") != NULL &&
               strstr(l.out, "--redis-wait-timeout") != NULL,
           "--help lists the sentinel URL and the WAIT options");
    loaded_free(&l);

    /* Paced drain: a spread past the drain's deadline would leave clients never told. */
    char *spread_bad[] = {"pushedge", "--drain-timeout", "3", "--drain-spread", "3001", NULL};
    expect_cli_error(spread_bad, "--drain-spread: 3001 ms is longer than --drain-timeout (3 s)");
    char *spread_ok[] = {"pushedge", "--drain-timeout", "3", "--drain-spread", "3000", NULL};
    load(&l, spread_ok, envp0);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "--drain-spread equal to --drain-timeout: %s", l.err);
    TAP_EQ_UINT(l.cfg.drain_spread, 3000, "drain-spread as given");
    loaded_free(&l);
    char *spread_def[] = {"pushedge", "--drain-timeout", "7", NULL};
    load(&l, spread_def, envp0);
    TAP_EQ_UINT(l.cfg.drain_spread, 3500, "drain-spread default: half of --drain-timeout");
    loaded_free(&l);

    char *bad0[] = {"pushedge", "--redis-wait-replicas", "1", NULL}; /* a WAIT with the memory engine */
    expect_cli_error(bad0, "--redis-wait-replicas: needs --redis");
    char *bad1[] = {"pushedge", "--redis", "redis://h:1", "--redis-wait-timeout", "0", NULL};
    expect_cli_error(bad1, "redis-wait-timeout");
    char *bad2[] = {"pushedge", "--redis", "redis://h:1", "--redis-wait-timeout", "60001", NULL};
    expect_cli_error(bad2, "redis-wait-timeout");
    char *bad3[] = {"pushedge", "--redis", "redis://h:1", "--redis-wait-replicas", "101", NULL};
    expect_cli_error(bad3, "redis-wait-replicas");
    char *bad4[] = {"pushedge", "--redis", "redis+sentinel://h:1", NULL}; /* no master name */
    expect_cli_error(bad4, "master name");
    char *bad5[] = {"pushedge", "--redis", "redis+sentinel://h:1/bad name", NULL};
    expect_cli_error(bad5, "--redis");
}

/* The resource limits (docs/operations.md "Connection limits"): 0 means derived at start. */
static void
test_limits(void)
{
    loaded_t l;
    char *argv0[] = {"pushedge", NULL};
    char *envp0[] = {NULL};
    load(&l, argv0, envp0);
    TAP_EQ_UINT(l.cfg.max_connections, 0, "max-connections: derived by default");
    TAP_EQ_UINT(l.cfg.max_connections_per_ip, 0, "max-connections-per-ip: off by default");
    TAP_EQ_UINT(l.cfg.max_held_polls, 0, "max-held-polls: derived by default");
    loaded_free(&l);

    char *argv[] = {"pushedge", "--max-connections", "500", "--max-held-polls", "40", NULL};
    char *envp[] = {"PUSHEDGE_MAX_CONNECTIONS_PER_IP=7", "PUSHEDGE_MAX_CONNECTIONS=9", NULL};
    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "limits: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.max_connections, 500, "max-connections: the command line wins");
    TAP_EQ_UINT(l.cfg.max_connections_per_ip, 7, "max-connections-per-ip from the environment");
    TAP_EQ_UINT(l.cfg.max_held_polls, 40, "max-held-polls");
    loaded_free(&l);

    char *bad1[] = {"pushedge", "--max-connections", "0", NULL};
    expect_error("--max-connections 0", bad1, envp0, "max-connections");
    char *bad2[] = {"pushedge", "--max-held-polls", "x", NULL};
    expect_error("--max-held-polls x", bad2, envp0, "max-held-polls");
}

/* --trusted-proxy: repeatable on the command line, a list in the environment and the file, parsed
 * into networks; the command line's list replaces the others. */
static void
test_trusted_proxy(void)
{
    loaded_t l;
    char *argv[] = {"pushedge", "--trusted-proxy", "127.0.0.1/32", "--trusted-proxy=fd00::/8", NULL};
    load(&l, argv, NULL);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "command line");
    TAP_EQ_UINT(l.cfg.num_trusted_proxies, 2, "two networks");
    TAP_EQ_UINT(l.cfg.trusted_nets[0].bits, 128, "IPv4 /32 is /128 mapped");
    TAP_EQ_UINT(l.cfg.trusted_nets[1].bits, 8, "IPv6 /8");
    loaded_free(&l);

    char *argv2[] = {"pushedge", NULL};
    char *envp2[] = {"PUSHEDGE_TRUSTED_PROXY=10.0.0.0/8, 192.168.1.1", NULL};
    load(&l, argv2, envp2);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "environment");
    TAP_EQ_UINT(l.cfg.num_trusted_proxies, 2, "a list in the environment");
    TAP_EQ_UINT(l.cfg.trusted_nets[1].bits, 128, "an address alone is a host network");
    loaded_free(&l);

    char *argv3[] = {"pushedge", "--trusted-proxy", "::1", NULL};
    load(&l, argv3, envp2);
    TAP_EQ_UINT(l.cfg.num_trusted_proxies, 1, "the command line replaces the environment");
    loaded_free(&l);

    char path[64];
    write_temp("{\"trusted-proxy\": [\"127.0.0.0/8\", \"::1/128\"]}", path);
    char *argv4[] = {"pushedge", "--config", path, NULL};
    load(&l, argv4, NULL);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "config file");
    TAP_EQ_UINT(l.cfg.num_trusted_proxies, 2, "an array in the file");
    loaded_free(&l);
    unlink(path);

    char *bad1[] = {"pushedge", "--trusted-proxy", "10.0.0.0/33", NULL};
    expect_error("/33", bad1, NULL, "--trusted-proxy");
    char *bad2[] = {"pushedge", "--trusted-proxy", "example.com", NULL};
    expect_error("a name", bad2, NULL, "--trusted-proxy");
    char *bad_env[] = {"PUSHEDGE_TRUSTED_PROXY=1.2.3.4/x", NULL};
    expect_error("environment", argv2, bad_env, "PUSHEDGE_TRUSTED_PROXY");
}

/* --listen-tls with its files; the files without a listener and a listener without its files
 * are refused; only TLS listeners means no clear-text default. */
static void
test_tls(void)
{
    char *argv[] = {"pushedge",   "--listen-tls", "127.0.0.1:8443",  "--listen-tls=[::1]:8444",
                    "--tls-cert", "c.pem",        "--tls-key=k.pem", NULL};
    char *envp[] = {NULL};
    loaded_t l;
    load(&l, argv, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "listen-tls: PE_CFG_OK (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen_tls, 2, "two TLS listeners");
    TAP_EQ_STR(l.cfg.listen_tls[0], "127.0.0.1:8443", "first TLS listener");
    TAP_EQ_STR(l.cfg.num_listen_tls > 1 ? l.cfg.listen_tls[1] : NULL, "[::1]:8444", "second TLS listener");
    TAP_EQ_STR(l.cfg.tls_cert, "c.pem", "tls-cert");
    TAP_EQ_STR(l.cfg.tls_key, "k.pem", "tls-key");
    TAP_EQ_UINT(l.cfg.num_listen, 0, "only TLS asked for: no clear-text default");
    loaded_free(&l);

    char *both[] = {"pushedge", "--listen", "127.0.0.1:8080", "--listen-tls", "127.0.0.1:8443", NULL};
    char *env_files[] = {"PUSHEDGE_TLS_CERT=/e/c.pem", "PUSHEDGE_TLS_KEY=/e/k.pem", NULL};
    load(&l, both, env_files);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "clear and TLS side by side, files from the environment (%s)", l.err);
    TAP_EQ_UINT(l.cfg.num_listen, 1, "one clear listener");
    TAP_EQ_UINT(l.cfg.num_listen_tls, 1, "one TLS listener");
    TAP_EQ_STR(l.cfg.tls_cert, "/e/c.pem", "tls-cert from PUSHEDGE_TLS_CERT");
    loaded_free(&l);

    char path[64];
    write_temp("{\"listen-tls\": [\"0.0.0.0:443\"], \"tls-cert\": \"f.pem\", \"tls-key\": \"g.pem\"}", path);
    char config_arg[80];
    snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
    char *file[] = {"pushedge", config_arg, NULL};
    load(&l, file, envp);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "TLS settings from the config file (%s)", l.err);
    TAP_EQ_STR(l.cfg.num_listen_tls == 1 ? l.cfg.listen_tls[0] : NULL, "0.0.0.0:443", "listen-tls from the file");
    TAP_EQ_STR(l.cfg.tls_key, "g.pem", "tls-key from the file");
    loaded_free(&l);
    unlink(path);

    char *no_cert[] = {"pushedge", "--listen-tls", "127.0.0.1:8443", "--tls-key", "k.pem", NULL};
    expect_error("listener without a certificate", no_cert, envp, "--tls-cert");
    char *no_key[] = {"pushedge", "--listen-tls", "127.0.0.1:8443", "--tls-cert", "c.pem", NULL};
    expect_error("listener without a key", no_key, envp, "--tls-key");
    char *no_listener[] = {"pushedge", "--tls-cert", "c.pem", "--tls-key", "k.pem", NULL};
    expect_error("files without a listener", no_listener, envp, "--listen-tls");
    char *bad_addr[] = {"pushedge", "--listen-tls", "nope", "--tls-cert", "c.pem", "--tls-key", "k.pem", NULL};
    expect_error("malformed TLS address", bad_addr, envp, "--listen-tls");
    char *empty_cert[] = {"pushedge", "--listen-tls", "127.0.0.1:8443", "--tls-cert", "", "--tls-key", "k.pem", NULL};
    expect_error("empty certificate path", empty_cert, envp, "--tls-cert");
}

/* Identity and access (docs/auth.md): --auth and the --jwt-* options, checked together, with
 * the key set loaded at start (a bad key file is a configuration error). */
static void
test_identity(void)
{
    loaded_t l;
    char *argv0[] = {"pushedge", NULL};
    load(&l, argv0, NULL);
    TAP_EQ_INT(l.cfg.auth_mode, PE_AUTH_MODE_OFF, "default --auth off");
    TAP_EQ_UINT(l.cfg.jwt_leeway, 30, "default --jwt-leeway 30");
    TAP_EQ_PTR(l.cfg.keys, NULL, "no key set with auth off");
    loaded_free(&l);

    char *argv1[] = {"pushedge",
                     "--auth",
                     "optional",
                     "--jwt-secret",
                     "0123456789abcdef0123456789abcdef",
                     "--jwt-issuer",
                     "me",
                     "--jwt-audience",
                     "us",
                     "--jwt-leeway",
                     "5",
                     "--public-channel",
                     "news",
                     "--public-channel=public.*",
                     NULL};
    load(&l, argv1, NULL);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "auth options (%s)", l.err);
    TAP_EQ_INT(l.cfg.auth_mode, PE_AUTH_MODE_OPTIONAL, "--auth optional");
    TAP_EQ_STR(l.cfg.jwt_issuer, "me", "--jwt-issuer");
    TAP_EQ_STR(l.cfg.jwt_audience, "us", "--jwt-audience");
    TAP_EQ_UINT(l.cfg.jwt_leeway, 5, "--jwt-leeway");
    TAP_EQ_UINT(l.cfg.public_channels.num, 2, "two public patterns");
    TAP_OK(pe_patterns_match(&l.cfg.public_channels, NULL, 0, "public.x", 8), "public.* matches public.x");
    TAP_OK(l.cfg.keys != NULL, "a key set");
    char err[256];
    TAP_EQ_INT(pe_config_reload_keys(&l.cfg, err, sizeof(err)), 0, "reload");
    loaded_free(&l);

    char *env[] = {"PUSHEDGE_AUTH=required", "PUSHEDGE_JWT_SECRET=0123456789abcdef0123456789abcdef",
                   "PUSHEDGE_PUBLIC_CHANNEL=a,b c", NULL};
    load(&l, argv0, env);
    TAP_EQ_INT(l.ret, PE_CFG_OK, "from the environment (%s)", l.err);
    TAP_EQ_INT(l.cfg.auth_mode, PE_AUTH_MODE_REQUIRED, "PUSHEDGE_AUTH");
    TAP_EQ_UINT(l.cfg.num_public_channels, 3, "PUSHEDGE_PUBLIC_CHANNEL list");
    loaded_free(&l);

    /* A key file that is not a key, then a good one made good by a rewrite: reload keeps the
     * old set on error. */
    char path[64];
    write_temp("not a key", path);
    char *argv2[] = {"pushedge", "--auth", "required", "--jwt-key", path, NULL};
    expect_error("a bad key file", argv2, NULL, path);
    char *argv3[] = {"pushedge", "--auth", "required", "--jwt-key", path, "--jwt-secret", "0123456789abcdef0123456789abcdef", NULL};
    expect_error("a bad key file beside a secret", argv3, NULL, "--jwt-key");
    unlink(path);

    char *bad1[] = {"pushedge", "--auth", "sometimes", NULL};
    expect_cli_error(bad1, "--auth");
    char *bad2[] = {"pushedge", "--auth", "required", NULL};
    expect_cli_error(bad2, "--jwt-secret");
    char *bad3[] = {"pushedge", "--jwt-secret", "0123456789abcdef0123456789abcdef", NULL};
    expect_cli_error(bad3, "--auth");
    char *bad4[] = {"pushedge", "--auth", "optional", "--jwt-secret", "short", NULL};
    expect_cli_error(bad4, "32 bytes");
    char *bad5[] = {"pushedge",         "--auth",     "optional", "--jwt-secret", "0123456789abcdef0123456789abcdef",
                    "--public-channel", "user:{sub}", NULL};
    expect_cli_error(bad5, "--public-channel");
    char *bad6[] = {"pushedge",         "--auth", "optional", "--jwt-secret", "0123456789abcdef0123456789abcdef",
                    "--public-channel", "a*b",    NULL};
    expect_cli_error(bad6, "--public-channel");
    char *bad7[] = {"pushedge", "--auth", "optional", "--jwt-key", "/nonexistent/k.pem", NULL};
    expect_cli_error(bad7, "/nonexistent/k.pem");
    char *bad8[] = {"pushedge", "--jwt-leeway", "301", NULL};
    expect_cli_error(bad8, "--jwt-leeway");
    char *bad9[] = {"pushedge", "--public-channel", "news", NULL};
    expect_cli_error(bad9, "--auth");
}

int
main(void)
{
    tap_subtest("defaults", test_defaults);
    tap_subtest("command line", test_cli);
    tap_subtest("environment", test_env);
    tap_subtest("config file", test_file);
    tap_subtest("precedence", test_precedence);
    tap_subtest("help and version", test_help_version);
    tap_subtest("command-line errors", test_cli_errors);
    tap_subtest("environment errors", test_env_errors);
    tap_subtest("config file errors", test_file_errors);
    tap_subtest("split_hostport", test_split_hostport);
    tap_subtest("idempotency-window", test_idempotency_window);
    tap_subtest("limits", test_limits);
    tap_subtest("trusted proxy", test_trusted_proxy);
    tap_subtest("tls", test_tls);
    tap_subtest("identity", test_identity);
    tap_subtest("redis sentinel and wait", test_redis_sentinel_wait);
    return tap_done();
}

/*
 * main.c: process entry. Loads the configuration, raises the descriptor limit, reads the web
 * files, creates the engine and the loops, then waits for signals: the first SIGTERM/SIGINT
 * drains (docs/operations.md "Draining and deploys"), a second one stops at once; SIGHUP
 * rereads the TLS certificate and key (edge/tls.c) at any time.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "pubsub/alloc.h"
#include "edge/util/log.h"
#include "edge/server.h"
#include "edge/tls.h"

#ifndef PE_WEB_ROOT_SOURCE
#define PE_WEB_ROOT_SOURCE "web"
#endif
#ifndef PE_WEB_ROOT_INSTALLED
#define PE_WEB_ROOT_INSTALLED "/usr/local/share/pushedge/web"
#endif
#ifndef PE_BINDIR
#define PE_BINDIR "/usr/local/bin"
#endif

extern char **environ;

/* Reads a whole small file into memory; returns an empty vector if it is missing. */
static h2o_iovec_t
read_file(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (64 << 20)) {
        if (fd >= 0)
            close(fd);
        return h2o_iovec_init(NULL, 0);
    }
    char *buf = pe_malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    return h2o_iovec_init(buf, got);
}

/* Where the demo page and the client are when --web-root does not say: next to an installed
 * binary (meson install puts them under datadir), else in the source tree it was built from. */
static const char *
default_web_root(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            if (strcmp(exe, PE_BINDIR) == 0)
                return PE_WEB_ROOT_INSTALLED;
        }
    }
    return PE_WEB_ROOT_SOURCE;
}

/* A push edge holds one descriptor per client: take the whole hard limit and say if it is low. */
static void
raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 65536)
        pe_log(PE_LOG_INFO, "edge", "descriptor limit is %llu: the connection limit is derived from it (see --max-connections)",
               (unsigned long long)rl.rlim_cur);
}

/* Secrets given as arguments are readable by every local user (/proc/PID/cmdline, ps). */
static void
warn_about_arguments(int argc, char **argv)
{
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *value = NULL;
        if (strncmp(a, "--api-key", 9) == 0 && (a[9] == '\0' || a[9] == '=')) {
            pe_log(PE_LOG_WARN, "edge",
                   "--api-key on the command line is visible to every local user (/proc/PID/cmdline); use the "
                   "PUSHEDGE_API_KEY environment variable or the config file");
        } else if (strncmp(a, "--jwt-secret", 12) == 0 && (a[12] == '\0' || a[12] == '=')) {
            pe_log(PE_LOG_WARN, "edge",
                   "--jwt-secret on the command line is visible to every local user (/proc/PID/cmdline); use the "
                   "PUSHEDGE_JWT_SECRET environment variable or the config file");
        } else if (strncmp(a, "--redis", 7) == 0 && (a[7] == '\0' || a[7] == '=')) {
            value = a[7] == '=' ? a + 8 : i + 1 < argc ? argv[i + 1] : "";
            if (strchr(value, '@') != NULL)
                pe_log(PE_LOG_WARN, "edge",
                       "a Redis password in --redis on the command line is visible to every local user (/proc/PID/cmdline); "
                       "use the PUSHEDGE_REDIS environment variable or the config file");
        }
    }
}

/* Without --api-key publishing rests on the client's address being loopback. */
static void
warn_about_listeners(const pe_config_t *cfg)
{
    if (cfg->api_key != NULL)
        return;
    for (size_t i = 0; i != cfg->num_listen + cfg->num_listen_tls; ++i) {
        const char *where = i < cfg->num_listen ? cfg->listen[i] : cfg->listen_tls[i - cfg->num_listen];
        char host[256];
        unsigned port;
        unsigned char addr[16];
        if (pe_config_split_hostport(where, host, sizeof(host), &port) != 0)
            continue;
        static const unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        int loopback = strcmp(host, "localhost") == 0 ||
                       (pe_config_parse_ip(host, strlen(host), addr) == 0 &&
                        ((addr[10] == 0xff && addr[11] == 0xff && addr[12] == 127 && memcmp(addr, v6_loopback, 10) == 0) ||
                         memcmp(addr, v6_loopback, 16) == 0));
        if (!loopback)
            pe_log(PE_LOG_WARN, "edge",
                   "listening on %s, beyond loopback, without --api-key: set one (PUSHEDGE_API_KEY) so that publishing does "
                   "not rest on client addresses (docs/security.md)",
                   where);
    }
}

/* The engines' state reports (Redis connects and losses) go to the log. */
static void
engine_log(int level, const char *text)
{
    pe_log(level, "pubsub", "%s", text);
}

int
main(int argc, char **argv)
{
    /* Static: the loops read it until the process ends, and LeakSanitizer sees it as reachable. */
    static pe_config_t cfg;
    char err[512];
    int ret = pe_config_load(&cfg, argc, argv, environ, stdout, err, sizeof(err));
    if (ret != PE_CFG_OK) {
        if (ret == PE_CFG_ERROR)
            fprintf(stderr, "pushedge: %s\n", err);
        pe_config_dispose(&cfg);
        return ret == PE_CFG_EXIT_OK ? 0 : 2;
    }
    pe_log_level = cfg.log_level;
    pe_log_format = cfg.log_format;
    warn_about_arguments(argc, argv);
    warn_about_listeners(&cfg);

    /* Signals are taken by sigwait in this thread only; the loops inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    /* SIGHUP stays blocked for good (taken by sigwait only): its default action would end the
     * process, including during the drain when SIGTERM/SIGINT are unblocked. */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, NULL);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    pe_ps_options_t opts = {.history_size = cfg.history_size,
                            .history_ttl_ms = cfg.history_ttl * 1000,
                            .max_nodes = cfg.threads,
                            .idempotency_window_ms = cfg.idempotency_window * 1000,
                            .redis_wait_replicas = (unsigned)cfg.redis_wait_replicas,
                            .redis_wait_timeout_ms = (unsigned)cfg.redis_wait_timeout,
                            .catchup_cache = (size_t)cfg.catchup_cache,
                            .redis_announce_singly = cfg.redis_batch_announce == 0,
                            .log = engine_log,
                            .max_channels = cfg.max_channels,
                            .presence_max_members = cfg.presence_max_members,
                            .presence_node_timeout_ms = cfg.presence_node_timeout * 1000,
                            .presence_count_interval_ms = cfg.presence_count_interval};
    pe_ps_engine_t *engine;
    if (cfg.redis_url != NULL) {
        if ((engine = pe_ps_engine_create_redis(&opts, cfg.redis_url, err, sizeof(err))) == NULL) {
            fprintf(stderr, "pushedge: --redis: %s\n", err);
            return 2;
        }
    } else {
        engine = pe_ps_engine_create_memory(&opts);
    }

    static pe_server_t server;
    if ((ret = pe_server_init(&server, &cfg, engine)) != 0)
        return ret;
    const char *web = cfg.web_root != NULL ? cfg.web_root : default_web_root();
    server.index_html = read_file(web, "index.html");
    server.client_js = read_file(web, "src/pushedge.js");
    /* Said at start, not discovered by the first browser: GET / and /pushedge.js answer 404. */
    if (server.index_html.base == NULL)
        pe_log(PE_LOG_WARN, "edge", "no demo page at %s/index.html: GET / answers 404 (see --web-root)", web);
    if (server.client_js.base == NULL)
        pe_log(PE_LOG_WARN, "edge", "no JS client at %s/src/pushedge.js: GET /pushedge.js answers 404 (see --web-root)", web);

    pe_server_start(&server);
    for (size_t i = 0; i != cfg.num_listen; ++i)
        pe_log(PE_LOG_INFO, "edge", "pushedge %s listening on http://%s/ (%u threads, %s engine)", PE_VERSION, cfg.listen[i],
               cfg.threads, pe_ps_engine_name(engine));
    for (size_t i = 0; i != cfg.num_listen_tls; ++i)
        pe_log(PE_LOG_INFO, "edge", "pushedge %s listening on https://%s/ (%u threads, %s engine)", PE_VERSION, cfg.listen_tls[i],
               cfg.threads, pe_ps_engine_name(engine));

    sigset_t waited = sigs;
    sigaddset(&waited, SIGHUP);
    int sig;
    for (;;) {
        if (sigwait(&waited, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        /* SIGHUP reloads what was loaded from files: the TLS certificate and key, and the JWT
         * keys. A file that no longer loads leaves the current one in service
         * (docs/operations.md "Reloading"). */
        if (cfg.num_listen_tls == 0 && cfg.keys == NULL)
            pe_log(PE_LOG_INFO, "edge", "SIGHUP: nothing to reload (no --listen-tls, --auth off)");
        if (cfg.num_listen_tls != 0)
            pe_tls_reload(&server);
        if (cfg.keys != NULL) {
            if (pe_config_reload_keys(&cfg, err, sizeof(err)) != 0)
                pe_log(PE_LOG_ERROR, "edge", "SIGHUP: keys not reloaded, the previous ones stay in use: %s", err);
            else
                pe_log(PE_LOG_INFO, "edge", "SIGHUP: JWT keys reloaded");
        }
    }
    if (cfg.drain_delay != 0) {
        /* Pre-drain: /readyz says 503 while the node still serves and accepts, so health checks
         * take it out of the pool before it stops listening (no client meets a refused
         * connection). A second signal meanwhile stops at once, as during the drain. */
        __atomic_store_n(&server.leaving, 1, __ATOMIC_RELEASE);
        pe_log(PE_LOG_INFO, "edge", "signal %d: not ready; draining in %llu s", sig, (unsigned long long)cfg.drain_delay);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)cfg.drain_delay;
        for (;;) {
            struct timespec now, left;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
                break;
            left.tv_sec = until.tv_sec - now.tv_sec;
            left.tv_nsec = until.tv_nsec - now.tv_nsec;
            if (left.tv_nsec < 0) {
                left.tv_nsec += 1000000000;
                --left.tv_sec;
            }
            int s2 = sigtimedwait(&sigs, NULL, &left);
            if (s2 == SIGTERM || s2 == SIGINT) {
                pe_log(PE_LOG_INFO, "edge", "signal %d during the pre-drain: stopping at once", s2);
                _exit(0);
            }
        }
    }
    pe_log(PE_LOG_INFO, "edge", "signal %d: draining (at most %llu s)", sig, (unsigned long long)cfg.drain_timeout);
    pe_server_notify(&server, 0);

    /* A second signal while draining stops at once; the loops exit by themselves otherwise.
     * SIGHUP stays blocked: a reload request must not end a draining node. */
    sigdelset(&sigs, SIGHUP);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    pe_server_join(&server);
    pe_log(PE_LOG_INFO, "edge", "drained; exiting");
    return 0;
}

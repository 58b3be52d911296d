/*
 * main.c: process entry. Loads the configuration, raises the descriptor limit, reads the web
 * files, creates the engine and the loops, then waits for signals: the first SIGTERM/SIGINT
 * drains (CONTRACT.md "Signals"), a second one stops at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../pubsub/alloc.h"
#include "log.h"
#include "server.h"

#ifndef PE_WEB_ROOT
#define PE_WEB_ROOT "web"
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
        pe_log(PE_LOG_INFO, "edge", "descriptor limit is %llu: at most about that many concurrent connections",
               (unsigned long long)rl.rlim_cur);
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

    /* Signals are taken by sigwait in this thread only; the loops inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    pe_ps_options_t opts = {.history_size = cfg.history_size,
                            .history_ttl_ms = cfg.history_ttl * 1000,
                            .max_nodes = cfg.threads,
                            .log = engine_log,
                            .max_channels = cfg.max_channels};
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
    if (pe_server_init(&server, &cfg, engine) != 0)
        return 1;
    const char *web = cfg.web_root != NULL ? cfg.web_root : PE_WEB_ROOT;
    server.index_html = read_file(web, "index.html");
    server.client_js = read_file(web, "src/pushedge.js");
    if (server.index_html.base == NULL)
        pe_log(PE_LOG_WARN, "edge", "no demo page at %s/index.html (see --web-root)", web);

    pe_server_start(&server);
    for (size_t i = 0; i != cfg.num_listen; ++i)
        pe_log(PE_LOG_INFO, "edge", "pushedge %s listening on http://%s/ (%u threads, %s engine)", PE_VERSION, cfg.listen[i],
               cfg.threads, pe_ps_engine_name(engine));

    int sig;
    while (sigwait(&sigs, &sig) != 0)
        ;
    pe_log(PE_LOG_INFO, "edge", "signal %d: draining (at most %llu s)", sig, (unsigned long long)cfg.drain_timeout);
    pe_server_notify(&server, 0);

    /* A second signal while draining stops at once; the loops exit by themselves otherwise. */
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    pe_server_join(&server);
    pe_log(PE_LOG_INFO, "edge", "drained; exiting");
    return 0;
}

/*
 * connrate: how many new connections per second pushedge accepts on one endpoint, and what each
 * costs the server's CPU (tests/load/auth_bench.sh runs it with and without tokens).
 *
 *   taskset -c 0 build-rel/edge/pushedge --threads 1 --listen 127.0.0.1:18090 &
 *   taskset -c 1 build-rel/tests/load/connrate --url http://127.0.0.1:18090 \
 *       --path '/ws?channel=bench&token=eyJ...' --duration 5 --server-pid $!
 *
 * Each connection: a non-blocking TCP connect, one GET (with --ws, the default for paths under
 * /ws, a WebSocket handshake), the answer's head read and its status checked (101 for --ws, else
 * 200; --expect changes it), then a close with a reset (SO_LINGER 0). The reset leaves no
 * TIME_WAIT behind, so a long run does not use up the ephemeral ports; the server sees the
 * reset as an ordinary disconnect. --concurrency connections are in flight at once, in one epoll
 * loop on one thread.
 *
 * The result is ONE JSON line on stdout: completed handshakes, failures (with the first
 * unexpected status), wall seconds, handshakes per wall second, latency (connect start to the
 * answer's head) p50 / p99 / max, the generator's own CPU, and with --server-pid the server's
 * CPU seconds over the measured window and handshakes per server CPU second: with a server of
 * one event-loop thread that is the rate one core sustains, the number that survives a noisy
 * machine (the wall rate does not).
 *
 * Bounds: loopback targets only; --duration (at most 300 s) after a --warmup (not counted); every
 * connection has a 5 s deadline; the run stops at --max handshakes.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_DEADLINE_NS (5ull * 1000000000ull)
#define HEAD_MAX 4096

typedef enum { C_FREE = 0, C_CONNECTING, C_READING } cstate_t;

typedef struct {
    int fd;
    cstate_t state;
    uint64_t started_ns;
    size_t got;
    char head[HEAD_MAX];
} conn_t;

static struct {
    struct sockaddr_in addr;
    char host[64];
    const char *path;
    int ws, expect;
    unsigned concurrency;
    double duration, warmup;
    uint64_t max;
    pid_t server_pid;
} cfg;

static char *request;
static size_t request_len;

/* Results of the measured window only (the warm-up's are dropped). */
static struct {
    uint64_t done, failed, connect_errors, timeouts;
    int first_bad_status;
    uint32_t *lat_us;
    size_t nlat, cap;
} res;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
die(const char *msg)
{
    fprintf(stderr, "connrate: %s\n", msg);
    exit(2);
}

/* The server's CPU in ns: the sum of its threads' run time (/proc/PID/task/TID/schedstat). */
static long long
server_cpu_ns(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)cfg.server_pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    long long sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p2[320], buf[128];
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)cfg.server_pid, e->d_name);
        FILE *f = fopen(p2, "r");
        if (f == NULL)
            continue;
        if (fgets(buf, sizeof(buf), f) != NULL)
            sum += strtoll(buf, NULL, 10);
        fclose(f);
    }
    closedir(d);
    return sum;
}

static double
self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void
parse_url(const char *url)
{
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : NULL;
    if (p == NULL)
        die("--url must be http://127.x.y.z:PORT");
    const char *colon = strchr(p, ':');
    if (colon == NULL || (size_t)(colon - p) >= sizeof(cfg.host))
        die("--url needs a port");
    memcpy(cfg.host, p, (size_t)(colon - p));
    cfg.host[colon - p] = '\0';
    long port = strtol(colon + 1, NULL, 10);
    cfg.addr.sin_family = AF_INET;
    cfg.addr.sin_port = htons((uint16_t)port);
    if (port <= 0 || port > 65535 || inet_pton(AF_INET, cfg.host, &cfg.addr.sin_addr) != 1)
        die("--url must be http://127.x.y.z:PORT");
    /* Loopback only: this tool opens connections as fast as it can. */
    if ((ntohl(cfg.addr.sin_addr.s_addr) >> 24) != 127)
        die("--url must be on 127.0.0.0/8");
}

static void
build_request(void)
{
    size_t cap = strlen(cfg.path) + 512;
    request = malloc(cap);
    if (request == NULL)
        die("out of memory");
    int n =
        snprintf(request, cap, "GET %s HTTP/1.1\r\nHost: %s:%u\r\n%s\r\n", cfg.path, cfg.host, (unsigned)ntohs(cfg.addr.sin_port),
                 cfg.ws ? "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n"
                        : "Accept: text/event-stream\r\n");
    if (n < 0 || (size_t)n >= cap)
        die("request too long");
    request_len = (size_t)n;
}

static void
record_latency(uint64_t ns)
{
    if (res.nlat == res.cap) {
        res.cap = res.cap == 0 ? 65536 : res.cap * 2;
        res.lat_us = realloc(res.lat_us, res.cap * sizeof(res.lat_us[0]));
        if (res.lat_us == NULL)
            die("out of memory");
    }
    res.lat_us[res.nlat++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

static void
conn_close(int ep, conn_t *c)
{
    /* A reset, not a FIN: no TIME_WAIT on our side. */
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = C_FREE;
}

static int
conn_start(int ep, conn_t *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->got = 0;
    c->started_ns = now_ns();
    c->state = C_CONNECTING;
    if (connect(fd, (struct sockaddr *)&cfg.addr, sizeof(cfg.addr)) != 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        c->state = C_FREE;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

/* 1: the head is complete and says what we expect; -1: a failure; 0: read more. */
static int
conn_read(conn_t *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->head + c->got, sizeof(c->head) - 1 - c->got);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0)
            return -1;
        c->got += (size_t)n;
        c->head[c->got] = '\0';
        if (strstr(c->head, "\r\n\r\n") != NULL) {
            int status = 0;
            if (sscanf(c->head, "HTTP/1.%*d %d", &status) != 1 || status != cfg.expect) {
                if (res.first_bad_status == 0)
                    res.first_bad_status = status != 0 ? status : -1;
                return -1;
            }
            return 1;
        }
        if (c->got == sizeof(c->head) - 1)
            return -1;
    }
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void
usage(void)
{
    fputs("usage: connrate --url http://127.0.0.1:PORT [--path /ws?channel=c] [--ws | --no-ws] [--expect STATUS]\n"
          "                [--concurrency 32] [--warmup 1] [--duration 5] [--max 2000000] [--server-pid PID]\n",
          stderr);
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *url = NULL;
    cfg.path = "/ws?channel=connrate";
    cfg.ws = -1;
    cfg.concurrency = 32;
    cfg.duration = 5;
    cfg.warmup = 1;
    cfg.max = 2000000;
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"path", required_argument, NULL, 'p'},
        {"ws", no_argument, NULL, 'w'},
        {"no-ws", no_argument, NULL, 'W'},
        {"expect", required_argument, NULL, 'e'},
        {"concurrency", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'a'},
        {"max", required_argument, NULL, 'm'},
        {"server-pid", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u':
            url = optarg;
            break;
        case 'p':
            cfg.path = optarg;
            break;
        case 'w':
            cfg.ws = 1;
            break;
        case 'W':
            cfg.ws = 0;
            break;
        case 'e':
            cfg.expect = atoi(optarg);
            break;
        case 'c':
            cfg.concurrency = (unsigned)atoi(optarg);
            break;
        case 'd':
            cfg.duration = atof(optarg);
            break;
        case 'a':
            cfg.warmup = atof(optarg);
            break;
        case 'm':
            cfg.max = strtoull(optarg, NULL, 10);
            break;
        case 's':
            cfg.server_pid = (pid_t)atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (url == NULL || cfg.concurrency == 0 || cfg.concurrency > 10000 || cfg.duration <= 0 || cfg.duration > 300 ||
        cfg.warmup < 0 || cfg.warmup > 60 || cfg.max == 0)
        usage();
    parse_url(url);
    if (cfg.ws < 0)
        cfg.ws = strncmp(cfg.path, "/ws", 3) == 0;
    if (cfg.expect == 0)
        cfg.expect = cfg.ws ? 101 : 200;
    build_request();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < cfg.concurrency + 64) {
        rl.rlim_cur = rl.rlim_max < cfg.concurrency + 64 ? rl.rlim_max : cfg.concurrency + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    conn_t *conns = calloc(cfg.concurrency, sizeof(conn_t));
    struct epoll_event *events = calloc(cfg.concurrency, sizeof(*events));
    if (ep < 0 || conns == NULL || events == NULL)
        die("setup failed");

    uint64_t t0 = now_ns(), measure_from = t0 + (uint64_t)(cfg.warmup * 1e9), until = measure_from + (uint64_t)(cfg.duration * 1e9);
    int measuring = cfg.warmup == 0;
    long long cpu0 = measuring && cfg.server_pid != 0 ? server_cpu_ns() : 0;
    double self0 = self_cpu_s();
    uint64_t started_measure = t0, last_sweep = t0;
    int stopping = 0;
    for (unsigned i = 0; i != cfg.concurrency; ++i)
        if (conn_start(ep, &conns[i]) != 0)
            ++res.connect_errors;

    for (;;) {
        int n = epoll_wait(ep, events, (int)cfg.concurrency, 50);
        uint64_t now = now_ns();
        if (!measuring && now >= measure_from) {
            /* The warm-up ends: what finishes from now on counts. */
            measuring = 1;
            res.done = res.failed = res.connect_errors = res.timeouts = 0;
            res.first_bad_status = 0;
            res.nlat = 0;
            started_measure = now;
            cpu0 = cfg.server_pid != 0 ? server_cpu_ns() : 0;
            self0 = self_cpu_s();
        }
        if (measuring && (now >= until || res.done >= cfg.max))
            stopping = 1;
        for (int i = 0; i < n; ++i) {
            conn_t *c = events[i].data.ptr;
            if (c->state == C_FREE)
                continue;
            int r = 0;
            if (c->state == C_CONNECTING && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0 || write(c->fd, request, request_len) != (ssize_t)request_len) {
                    r = -1;
                    ++res.connect_errors;
                } else {
                    c->state = C_READING;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            } else if (c->state == C_READING) {
                r = conn_read(c);
            }
            if (r == 0)
                continue;
            if (r > 0) {
                ++res.done;
                record_latency(now_ns() - c->started_ns);
            } else {
                ++res.failed;
            }
            conn_close(ep, c);
            if (!stopping && conn_start(ep, c) != 0)
                ++res.connect_errors;
        }
        /* Connections past their deadline, every 100 ms. */
        if (now - last_sweep > 100000000ull) {
            last_sweep = now;
            for (unsigned i = 0; i != cfg.concurrency; ++i) {
                conn_t *c = &conns[i];
                /* started_ns may be later than now: connections restarted in this pass. */
                if (c->state != C_FREE && now > c->started_ns && now - c->started_ns > CONN_DEADLINE_NS) {
                    ++res.timeouts;
                    ++res.failed;
                    conn_close(ep, c);
                    if (!stopping && conn_start(ep, c) != 0)
                        ++res.connect_errors;
                }
            }
        }
        if (stopping)
            break;
    }
    uint64_t end = now_ns();
    long long cpu1 = cfg.server_pid != 0 ? server_cpu_ns() : 0;
    double self1 = self_cpu_s();
    for (unsigned i = 0; i != cfg.concurrency; ++i)
        if (conns[i].state != C_FREE)
            conn_close(ep, &conns[i]);

    double secs = (double)(end - started_measure) / 1e9;
    /* Latency percentiles by sorting (counting would do; a few hundred thousand values sort fast). */
    uint32_t p50 = 0, p99 = 0, mx = 0;
    if (res.nlat != 0) {
        qsort(res.lat_us, res.nlat, sizeof(uint32_t), cmp_u32);
        p50 = res.lat_us[res.nlat / 2];
        p99 = res.lat_us[(size_t)((double)res.nlat * 0.99)];
        mx = res.lat_us[res.nlat - 1];
    }
    double server_cpu = cfg.server_pid != 0 && cpu0 >= 0 && cpu1 >= 0 ? (double)(cpu1 - cpu0) / 1e9 : -1;
    printf("{\"tool\":\"connrate\",\"ws\":%s,\"concurrency\":%u,\"seconds\":%.3f,\"handshakes\":%llu,\"failed\":%llu,"
           "\"connect_errors\":%llu,\"timeouts\":%llu,\"first_bad_status\":%d,\"per_second\":%.1f,"
           "\"latency_us\":{\"p50\":%u,\"p99\":%u,\"max\":%u},\"generator_cpu_seconds\":%.3f",
           cfg.ws ? "true" : "false", cfg.concurrency, secs, (unsigned long long)res.done, (unsigned long long)res.failed,
           (unsigned long long)res.connect_errors, (unsigned long long)res.timeouts, res.first_bad_status,
           secs > 0 ? (double)res.done / secs : 0.0, p50, p99, mx, self1 - self0);
    if (server_cpu >= 0)
        printf(",\"server_cpu_seconds\":%.3f,\"server_cpu_cores\":%.2f,\"per_server_cpu_second\":%.1f,\"server_cpu_us_per_"
               "handshake\":%.2f",
               server_cpu, secs > 0 ? server_cpu / secs : 0.0, server_cpu > 0 ? (double)res.done / server_cpu : 0.0,
               res.done != 0 ? server_cpu * 1e6 / (double)res.done : 0.0);
    printf("}\n");
    free(res.lat_us);
    free(conns);
    free(events);
    close(ep);
    return res.done != 0 && res.failed * 100 <= res.done ? 0 : 1;
}

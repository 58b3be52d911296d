/*
 * pushedge-bench: a load generator for pushedge (and nchan) on one machine.
 *
 * It opens --connections subscribers of one transport (ws, ws-deflate, sse, poll) spread
 * round-robin over --channels channels, waits until every one is ready, measures the server's
 * RSS, then publishes --messages JSON messages at --rate per second over HTTP keep-alive and
 * measures what arrives: publish-to-receive latency (CLOCK_MONOTONIC, embedded in the payload),
 * deliveries per second, lost and duplicated messages, and the server's CPU per delivery. The
 * result is ONE JSON line on stdout; progress and diagnostics go to stderr.
 *
 *   build-rel/edge/pushedge --threads 1 --listen 127.0.0.1:18080 &
 *   build-rel/tests/load/pushedge-bench --url http://127.0.0.1:18080 --transport ws \
 *       --connections 10000 --channels 1 --messages 200 --rate 20 --server-pid $!
 *   (nchan: --sub-path '/sub/{channel}' --pub-path '/pub/{channel}', see tests/load/nchan.conf.in)
 *   (several nodes on one engine: --sub-url URL per node spreads the subscribers round-robin,
 *    publishing still goes to --url; tests/load/compare.sh runs all of this side by side)
 *   (--churn S: subscribers close and reconnect with their cursor all along, every S seconds on
 *    average; tests/load/soak.sh runs the four transports that way for tens of minutes)
 *   (TLS: --sub-url https://127.0.0.1:18443 (or --tls) makes the subscribers wss / https SSE /
 *    https poll clients; publishing stays on the clear --url. bench_tls.c, and the TLS scenario
 *    of tests/load/compare.sh --only tls)
 *   (more subscribers than one process's descriptor limit: --role sub in several processes and
 *    --role pub in one, sharing --run-id and --channel-prefix; tests/load/scaleout.mjs runs
 *    100,000 subscribers over several nodes that way)
 *
 * Shape. Subscriber threads (one per core by default) each run their own epoll loop over
 * every T-th connection (bench_sub.c); one publisher thread paces the POSTs (bench_pub.c); the
 * main thread only sequences the phases (connect, settle, publish, drain) from counters the
 * others publish atomically, and merges their private histograms after joining them. Messages are
 * recognised by the "pe" marker in the payload rather than by pushedge's envelope, which is what
 * lets the same tool measure nchan, whose subscribers receive the raw published body.
 *
 * The generator's own CPU over the publish phase (generator_cpu_cores: 1.0 is one core busy) is
 * in the result: a run where it nears the threads given measures the generator, not the server.
 *
 * Split roles (--role). A "sub" process connects, then prints {"event":"ready",...} as a line on
 * stdout and waits for a line "published N" on its stdin (every channel then expects N
 * messages): it ends once every ready connection has all of them, --drain-wait seconds after
 * that line, at EOF on stdin or at --timeout, and prints its result line. A "pub" process opens
 * no subscriber and publishes at once. The latency is still one clock: CLOCK_MONOTONIC is the
 * machine's, so the publisher's send time in the payload and the receiver's clock agree.
 * --hist adds the sparse histograms to the result (overall and per message) for merging.
 *
 * Bounds. Targets and source addresses must be in 127.0.0.0/8; every phase has a deadline and
 * --timeout ends the whole run (the JSON then says "timed_out": true and reports what it has).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "bench.h"

const pb_config_t *pb_cfg;
atomic_int pb_stop;
pb_pub_state_t pb_pub;
atomic_uint_fast32_t *pb_ready_per_channel;

static pb_config_t cfg;
static volatile sig_atomic_t interrupted;

static const char *const transport_names[] = {"ws", "ws-deflate", "sse", "poll"};

static void
usage(FILE *out)
{
    fputs("usage: pushedge-bench [options]\n"
          "  --url http://127.0.0.1:8080       server (loopback only); publishes go here (clear text)\n"
          "  --sub-url URL                     subscribe here instead, round-robin; repeatable, at most 8 (--url);\n"
          "                                    https:// or wss:// subscribes over TLS\n"
          "  --tls                             every subscriber over TLS (a --sub-url's scheme aside)\n"
          "  --tls-ca FILE                     verify the server's certificate against this CA (default: no check)\n"
          "  --tls-sni NAME                    server name to send (SNI) and, with --tls-ca, to check\n"
          "  --tls-resume                      resume the thread's last TLS session on new connections\n"
          "  --tls-version 1.2|1.3             only this version (default: either, the server picks)\n"
          "  --tls-groups LIST                 key exchange groups, OpenSSL syntax (e.g. X25519:P-256)\n"
          "  --transport ws|ws-deflate|sse|poll subscriber transport (ws)\n"
          "  --connections N                   subscribers (100)\n"
          "  --channels K                      channels, subscribers spread round-robin (1)\n"
          "  --channel-prefix P                channel names P0..P(K-1) (pb<run id>_, fresh per run)\n"
          "  --threads N                       subscriber threads (one per core)\n"
          "  --sub-path T, --path T            subscribe target, {channel} replaced (pushedge's per transport)\n"
          "  --pub-path T                      publish target (/api/publish?channel={channel})\n"
          "  --ready auto|ack|handshake        when a subscriber counts as ready (auto: ack on pushedge paths)\n"
          "  --source-addrs A-B|A,B,..|COUNT   local addresses to bind (127.0.0.2-127.0.0.9; 0: none)\n"
          "  --connect-rate R                  new connections per second (5000)\n"
          "  --connect-timeout S               bound of the connect phase (60)\n"
          "  --settle S                        wait after connecting, before measuring RSS (1)\n"
          "  --messages M                      messages to publish (100; with --duration: rate * duration)\n"
          "  --rate R                          messages per second, 0: unpaced (100)\n"
          "  --duration S                      stop publishing after S seconds\n"
          "  --size BYTES                      payload size (128); --json1k: 1024\n"
          "  --publishers P                    publishing keep-alive connections, at most 64 (4)\n"
          "  --publish-channel I               publish everything to channel I instead of round-robin\n"
          "  --publish-redis redis://H:P       publish straight into Redis (FCALL pushedge_publish), not over HTTP\n"
          "  --drain-wait S                    grace for deliveries after the last publish answer (5)\n"
          "  --idle S                          idle scenario: connect, measure, hold S seconds, no publishing\n"
          "  --churn S                         each subscriber reconnects after 0.5-1.5 S seconds, resuming from\n"
          "                                    its cursor (pushedge's paths only; 0: off)\n"
          "  --server-pid PID[,PID]            server processes for RSS and CPU (repeatable)\n"
          "  --timeout S                       bound of the whole run (120)\n"
          "  --role both|sub|pub               split subscribers and publisher over processes (both; see the header)\n"
          "  --run-id N                        the run id in every marker (random); processes of one run share it\n"
          "  --hist                            add the latency histograms (overall, and per message for the first 64)\n"
          "  --verbose                         log every connection failure\n",
          out);
}

static void
bad_option(const char *opt, const char *val)
{
    fprintf(stderr, "pushedge-bench: invalid value for --%s: %s\n", opt, val);
    exit(2);
}

static double
parse_num(const char *opt, const char *val, double min, double max)
{
    char *end;
    errno = 0;
    double d = strtod(val, &end);
    if (errno != 0 || end == val || *end != '\0' || d < min || d > max)
        bad_option(opt, val);
    return d;
}

static int
is_loopback(struct in_addr a)
{
    return (ntohl(a.s_addr) >> 24) == 127;
}

/* Returns 1 for a TLS scheme (https://, wss://), else 0. */
static int
parse_url(const char *opt, const char *url, struct sockaddr_in *out, char host_hdr[64])
{
    const char *p = url;
    int tls = 0;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strncmp(p, "ws://", 5) == 0) {
        p += 5;
    } else if (strncmp(p, "https://", 8) == 0) {
        p += 8;
        tls = 1;
    } else if (strncmp(p, "wss://", 6) == 0) {
        p += 6;
        tls = 1;
    }
    char host[64];
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof(host))
        bad_option(opt, url);
    memcpy(host, p, hl);
    host[hl] = '\0';
    p += hl;
    long port = tls ? 443 : 80;
    if (*p == ':') {
        char *end;
        port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535 || (*end != '\0' && *end != '/'))
            bad_option(opt, url);
    }
    struct in_addr a;
    if (strcmp(host, "localhost") == 0)
        inet_pton(AF_INET, "127.0.0.1", &a);
    else if (inet_pton(AF_INET, host, &a) != 1)
        bad_option(opt, url); /* no DNS: a name could leave the machine */
    if (!is_loopback(a)) {
        fprintf(stderr, "pushedge-bench: refusing target %s: only 127.0.0.0/8 is allowed\n", host);
        exit(2);
    }
    *out = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = a};
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, ip, sizeof(ip));
    snprintf(host_hdr, 64, "%s:%ld", ip, port);
    return tls;
}

static void
add_src(const char *val, struct in_addr a)
{
    if (!is_loopback(a)) {
        fprintf(stderr, "pushedge-bench: refusing source address outside 127.0.0.0/8: %s\n", val);
        exit(2);
    }
    if (cfg.nsrc == PB_MAX_SRC)
        bad_option("source-addrs", val);
    cfg.src[cfg.nsrc++] = a;
}

static void
parse_sources(const char *val)
{
    cfg.nsrc = 0;
    char *copy = strdup(val), *save = NULL;
    if (strchr(val, '.') == NULL) {
        /* A count: 127.0.0.2 and up, leaving 127.0.0.1 to everything else on the machine. */
        uint32_t n = (uint32_t)parse_num("source-addrs", val, 0, PB_MAX_SRC);
        for (uint32_t i = 0; i != n; ++i)
            add_src(val, (struct in_addr){htonl(0x7f000002u + i)});
        free(copy);
        return;
    }
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(tok, '-');
        struct in_addr a, b;
        if (dash != NULL)
            *dash = '\0';
        if (inet_pton(AF_INET, tok, &a) != 1)
            bad_option("source-addrs", val);
        b = a;
        if (dash != NULL && inet_pton(AF_INET, dash + 1, &b) != 1)
            bad_option("source-addrs", val);
        if (ntohl(b.s_addr) < ntohl(a.s_addr) || ntohl(b.s_addr) - ntohl(a.s_addr) >= PB_MAX_SRC)
            bad_option("source-addrs", val);
        for (uint32_t h = ntohl(a.s_addr); h <= ntohl(b.s_addr); ++h)
            add_src(val, (struct in_addr){htonl(h)});
    }
    free(copy);
}

static void
parse_pids(const char *val)
{
    char *copy = strdup(val), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (cfg.npid == PB_MAX_PIDS)
            bad_option("server-pid", val);
        cfg.pid[cfg.npid++] = (pid_t)parse_num("server-pid", tok, 1, 1 << 30);
    }
    free(copy);
}

static uint32_t
random_u32(void)
{
    uint32_t r = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(&r, sizeof(r), 1, f) != 1)
        r = (uint32_t)time(NULL) ^ (uint32_t)getpid() << 16;
    if (f != NULL)
        fclose(f);
    return r % 1000000000u; /* printed in decimal in every marker: keep it short */
}

static void
parse_args(int argc, char **argv)
{
    enum {
        O_URL = 256,
        O_SUB_URL,
        O_TRANSPORT,
        O_CONNS,
        O_CHANNELS,
        O_PREFIX,
        O_THREADS,
        O_SUB,
        O_PUB,
        O_READY,
        O_SRC,
        O_CRATE,
        O_CTIMEOUT,
        O_SETTLE,
        O_MESSAGES,
        O_RATE,
        O_DURATION,
        O_SIZE,
        O_JSON1K,
        O_PUBLISHERS,
        O_PUBCHAN,
        O_DRAIN,
        O_IDLE,
        O_PID,
        O_TIMEOUT,
        O_VERBOSE,
        O_PUBREDIS,
        O_CHURN,
        O_TLS,
        O_TLS_CA,
        O_TLS_SNI,
        O_TLS_RESUME,
        O_TLS_VERSION,
        O_TLS_GROUPS,
        O_ROLE,
        O_RUN_ID,
        O_HIST,
        O_HELP
    };
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"sub-url", required_argument, NULL, O_SUB_URL},
        {"transport", required_argument, NULL, O_TRANSPORT},
        {"connections", required_argument, NULL, O_CONNS},
        {"channels", required_argument, NULL, O_CHANNELS},
        {"channel-prefix", required_argument, NULL, O_PREFIX},
        {"threads", required_argument, NULL, O_THREADS},
        {"sub-path", required_argument, NULL, O_SUB},
        {"path", required_argument, NULL, O_SUB},
        {"pub-path", required_argument, NULL, O_PUB},
        {"ready", required_argument, NULL, O_READY},
        {"source-addrs", required_argument, NULL, O_SRC},
        {"connect-rate", required_argument, NULL, O_CRATE},
        {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
        {"settle", required_argument, NULL, O_SETTLE},
        {"messages", required_argument, NULL, O_MESSAGES},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"size", required_argument, NULL, O_SIZE},
        {"json1k", no_argument, NULL, O_JSON1K},
        {"publishers", required_argument, NULL, O_PUBLISHERS},
        {"publish-channel", required_argument, NULL, O_PUBCHAN},
        {"drain-wait", required_argument, NULL, O_DRAIN},
        {"idle", required_argument, NULL, O_IDLE},
        {"server-pid", required_argument, NULL, O_PID},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"publish-redis", required_argument, NULL, O_PUBREDIS},
        {"churn", required_argument, NULL, O_CHURN},
        {"tls", no_argument, NULL, O_TLS},
        {"tls-ca", required_argument, NULL, O_TLS_CA},
        {"tls-sni", required_argument, NULL, O_TLS_SNI},
        {"tls-resume", no_argument, NULL, O_TLS_RESUME},
        {"tls-version", required_argument, NULL, O_TLS_VERSION},
        {"tls-groups", required_argument, NULL, O_TLS_GROUPS},
        {"role", required_argument, NULL, O_ROLE},
        {"run-id", required_argument, NULL, O_RUN_ID},
        {"hist", no_argument, NULL, O_HIST},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *url = "http://127.0.0.1:8080", *prefix = NULL, *ready = "auto", *sources = "127.0.0.2-127.0.0.9";
    int messages_given = 0, tls_all = 0;
    long long run_id = -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    cfg = (pb_config_t){.transport = PB_WS,
                        .connections = 100,
                        .channels = 1,
                        .threads = ncpu > 0 ? (uint32_t)ncpu : 1,
                        .publishers = 4,
                        .size = 128,
                        .publish_channel = -1,
                        .messages = 100,
                        .rate = 100,
                        .connect_rate = 5000,
                        .connect_timeout = 60,
                        .drain_wait = 5,
                        .settle = 1,
                        .timeout = 120};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_URL:
            url = optarg;
            break;
        case O_SUB_URL:
            if (cfg.nsub_urls == PB_MAX_SUB_URLS)
                bad_option("sub-url", optarg);
            cfg.sub_tls[cfg.nsub_urls] =
                (uint8_t)parse_url("sub-url", optarg, &cfg.sub_addr[cfg.nsub_urls], cfg.sub_host_hdr[cfg.nsub_urls]);
            cfg.nsub_urls++;
            break;
        case O_TRANSPORT: {
            size_t i;
            for (i = 0; i != sizeof(transport_names) / sizeof(transport_names[0]); ++i)
                if (strcmp(optarg, transport_names[i]) == 0)
                    break;
            if (i == sizeof(transport_names) / sizeof(transport_names[0]))
                bad_option("transport", optarg);
            cfg.transport = (pb_transport_t)i;
            break;
        }
        case O_CONNS:
            cfg.connections = (uint32_t)parse_num("connections", optarg, 0, 1e7);
            break;
        case O_CHANNELS:
            cfg.channels = (uint32_t)parse_num("channels", optarg, 1, 1e6);
            break;
        case O_PREFIX:
            prefix = optarg;
            break;
        case O_THREADS:
            cfg.threads = (uint32_t)parse_num("threads", optarg, 1, PB_MAX_THREADS);
            break;
        case O_SUB:
            cfg.sub_path = optarg;
            break;
        case O_PUB:
            cfg.pub_path = optarg;
            break;
        case O_READY:
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "ack") != 0 && strcmp(optarg, "handshake") != 0)
                bad_option("ready", optarg);
            ready = optarg;
            break;
        case O_SRC:
            sources = optarg;
            break;
        case O_CRATE:
            cfg.connect_rate = parse_num("connect-rate", optarg, 1, 1e7);
            break;
        case O_CTIMEOUT:
            cfg.connect_timeout = parse_num("connect-timeout", optarg, 0.001, 86400);
            break;
        case O_SETTLE:
            cfg.settle = parse_num("settle", optarg, 0, 3600);
            break;
        case O_MESSAGES:
            cfg.messages = (uint64_t)parse_num("messages", optarg, 0, 1e12);
            messages_given = 1;
            break;
        case O_RATE:
            cfg.rate = parse_num("rate", optarg, 0, 1e9);
            break;
        case O_DURATION:
            cfg.duration = parse_num("duration", optarg, 0.001, 86400);
            break;
        case O_SIZE:
            cfg.size = (uint32_t)parse_num("size", optarg, 0, 1 << 24);
            break;
        case O_JSON1K:
            cfg.size = 1024;
            break;
        case O_PUBLISHERS:
            cfg.publishers = (uint32_t)parse_num("publishers", optarg, 1, PB_MAX_PUBLISHERS);
            break;
        case O_PUBCHAN:
            cfg.publish_channel = (int64_t)parse_num("publish-channel", optarg, 0, 1e6);
            break;
        case O_DRAIN:
            cfg.drain_wait = parse_num("drain-wait", optarg, 0, 3600);
            break;
        case O_IDLE:
            cfg.idle = parse_num("idle", optarg, 0.001, 86400);
            break;
        case O_PID:
            parse_pids(optarg);
            break;
        case O_TIMEOUT:
            cfg.timeout = parse_num("timeout", optarg, 0.001, 86400);
            break;
        case O_PUBREDIS: {
            if (strncmp(optarg, "redis://", 8) != 0)
                bad_option("publish-redis", optarg);
            char hdr[64];
            parse_url("publish-redis", optarg + 8, &cfg.redis_addr, hdr);
            cfg.publish_redis = 1;
            break;
        }
        case O_CHURN:
            cfg.churn = parse_num("churn", optarg, 0, 86400);
            break;
        case O_TLS:
            tls_all = 1;
            break;
        case O_TLS_CA:
            if (access(optarg, R_OK) != 0)
                bad_option("tls-ca", optarg);
            cfg.tls_ca = optarg;
            break;
        case O_TLS_SNI:
            if (*optarg == '\0' || strlen(optarg) > 253)
                bad_option("tls-sni", optarg);
            cfg.tls_sni = optarg;
            break;
        case O_TLS_RESUME:
            cfg.tls_resume = 1;
            break;
        case O_TLS_VERSION:
            if (strcmp(optarg, "1.2") == 0)
                cfg.tls_version = 12;
            else if (strcmp(optarg, "1.3") == 0)
                cfg.tls_version = 13;
            else
                bad_option("tls-version", optarg);
            break;
        case O_TLS_GROUPS:
            cfg.tls_groups = optarg;
            break;
        case O_VERBOSE:
            cfg.verbose = 1;
            break;
        case O_ROLE:
            if (strcmp(optarg, "both") == 0)
                cfg.role = PB_ROLE_BOTH;
            else if (strcmp(optarg, "sub") == 0)
                cfg.role = PB_ROLE_SUB;
            else if (strcmp(optarg, "pub") == 0)
                cfg.role = PB_ROLE_PUB;
            else
                bad_option("role", optarg);
            break;
        case O_RUN_ID:
            run_id = (long long)parse_num("run-id", optarg, 0, 999999999);
            break;
        case O_HIST:
            cfg.hist = 1;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pushedge-bench: unexpected argument: %s\n", argv[optind]);
        exit(2);
    }
    if (parse_url("url", url, &cfg.target, cfg.host_hdr) != 0) {
        fprintf(stderr, "pushedge-bench: --url %s: publishing is clear text; subscribe over TLS with --sub-url https://...\n", url);
        exit(2);
    }
    if (cfg.nsub_urls == 0) {
        cfg.sub_addr[0] = cfg.target;
        memcpy(cfg.sub_host_hdr[0], cfg.host_hdr, sizeof(cfg.host_hdr));
        cfg.nsub_urls = 1;
    }
    for (uint32_t i = 0; i != cfg.nsub_urls; ++i) {
        cfg.sub_tls[i] |= (uint8_t)tls_all;
        cfg.tls |= cfg.sub_tls[i];
    }
    if (!cfg.tls && (cfg.tls_ca != NULL || cfg.tls_sni != NULL || cfg.tls_resume || cfg.tls_version != 0 || cfg.tls_groups != NULL))
        bad_option("tls-*", "no subscriber uses TLS (give --tls or a --sub-url https://...)");
    parse_sources(sources);
    if (cfg.publish_channel >= (int64_t)cfg.channels)
        bad_option("publish-channel", "beyond --channels");
    if (cfg.duration > 0 && !messages_given) {
        if (cfg.rate <= 0)
            bad_option("duration", "needs --rate or --messages");
        cfg.messages = (uint64_t)(cfg.rate * cfg.duration);
    }
    if (cfg.messages > UINT32_MAX)
        bad_option("messages", "sequence numbers are 32-bit per channel");

    int defaults = cfg.sub_path == NULL;
    if (cfg.churn > 0 && !defaults)
        bad_option("churn", "resuming needs pushedge's cursors: not with --sub-path");
    if (cfg.sub_path == NULL)
        cfg.sub_path = cfg.transport == PB_SSE    ? "/sse?channel={channel}"
                       : cfg.transport == PB_POLL ? "/poll?channel={channel}"
                                                  : "/ws?channel={channel}";
    if (cfg.pub_path == NULL)
        cfg.pub_path = "/api/publish?channel={channel}";
    /* pushedge confirms a subscription ("subscribed" op, SSE's live id line); nchan does not, and
     * has it in place once the handshake is answered. */
    cfg.ready_ack = strcmp(ready, "ack") == 0 || (strcmp(ready, "auto") == 0 && defaults);
    if (cfg.transport == PB_POLL) {
        cfg.ready_ack = 0;
        if (!defaults)
            fprintf(stderr, "pushedge-bench: warning: --transport poll speaks pushedge's cursor protocol (since=, \"cursor\")\n");
    }

    cfg.run_id = run_id >= 0 ? (uint32_t)run_id : random_u32();
    if (cfg.role == PB_ROLE_PUB)
        cfg.connections = 0;
    if (cfg.role != PB_ROLE_BOTH && (run_id < 0 || prefix == NULL))
        bad_option("role", "a split run needs the same --run-id and --channel-prefix in every process");
    if (cfg.role == PB_ROLE_SUB && (cfg.churn > 0 || cfg.idle > 0))
        bad_option("role", "sub: no --churn or --idle");
    if (cfg.hist)
        cfg.seq_hists = cfg.messages < PB_MAX_SEQ_HIST ? (uint32_t)cfg.messages : PB_MAX_SEQ_HIST;
    char gen_prefix[32];
    if (prefix == NULL) {
        /* A fresh prefix per run: long-polls start at cursor 0, and no earlier run's history
         * should be replayed to them. Letters, digits and '_' only, for nchan's (\w+). */
        snprintf(gen_prefix, sizeof(gen_prefix), "pb%u_", cfg.run_id);
        prefix = gen_prefix;
    }
    cfg.channel = pb_malloc(cfg.channels * sizeof(char *));
    cfg.sub_target = pb_malloc(cfg.channels * sizeof(char *));
    cfg.pub_target = pb_malloc(cfg.channels * sizeof(char *));
    for (uint32_t i = 0; i != cfg.channels; ++i) {
        char name[256];
        snprintf(name, sizeof(name), "%s%u", prefix, i);
        cfg.channel[i] = strdup(name);
        cfg.sub_target[i] = pb_expand(cfg.sub_path, name);
        cfg.pub_target[i] = pb_expand(cfg.pub_path, name);
    }
}

static void
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        fprintf(stderr, "pushedge-bench: setrlimit(RLIMIT_NOFILE): %s\n", strerror(errno));
    getrlimit(RLIMIT_NOFILE, &rl);
    /* stdio, epoll fds, publishers, /proc reads */
    rlim_t need = (rlim_t)cfg.connections + cfg.publishers + cfg.threads + 32;
    if (need > rl.rlim_cur)
        fprintf(
            stderr, "pushedge-bench: warning: %u connections need ~%llu fds but RLIMIT_NOFILE is %llu: expect about %llu to fail\n",
            cfg.connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur, (unsigned long long)(need - rl.rlim_cur));
}

static void
on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t run_deadline;

/* Sleeps ~10 ms; returns 0 when the run must end (timeout or signal). */
static int
tick(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return !interrupted && pb_now_ns() < run_deadline;
}

static pb_shared_t shared[PB_MAX_THREADS];

/* --role sub: reads what arrived on stdin; on a complete "published N" line stores N in *n and
 * returns 1; 0: nothing complete yet; -1: EOF or error (the orchestrator is gone). Waits at most
 * 10 ms, as tick() does. */
static int
read_control(uint64_t *n)
{
    static char line[128];
    static size_t len;
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    if (poll(&pfd, 1, 10) <= 0)
        return 0;
    ssize_t r = read(0, line + len, sizeof(line) - 1 - len);
    if (r <= 0)
        return r < 0 && errno == EINTR ? 0 : -1;
    len += (size_t)r;
    line[len] = '\0';
    char *nl = strchr(line, '\n');
    if (nl == NULL) {
        if (len == sizeof(line) - 1)
            len = 0; /* no such line is that long: drop it */
        return 0;
    }
    unsigned long long v;
    int ok = sscanf(line, "published %llu", &v) == 1;
    len = 0;
    if (!ok) {
        fprintf(stderr, "pushedge-bench: ignoring control line: %.*s\n", (int)(nl - line), line);
        return 0;
    }
    *n = v;
    return 1;
}

static uint64_t
sum_shared(size_t field_offset)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i != cfg.threads; ++i)
        s += atomic_load_explicit((atomic_uint_fast64_t *)((char *)&shared[i] + field_offset), memory_order_relaxed);
    return s;
}

static uint64_t
max_shared(size_t field_offset)
{
    uint64_t m = 0;
    for (uint32_t i = 0; i != cfg.threads; ++i) {
        uint64_t v = atomic_load_explicit((atomic_uint_fast64_t *)((char *)&shared[i] + field_offset), memory_order_relaxed);
        if (v > m)
            m = v;
    }
    return m;
}

#define SUM(f) sum_shared(offsetof(pb_shared_t, f))
#define MAX(f) max_shared(offsetof(pb_shared_t, f))

static uint64_t
expected_total(void)
{
    uint64_t e = 0;
    for (uint32_t i = 0; i != cfg.channels; ++i)
        e += (uint64_t)atomic_load(&pb_pub.ok_per_channel[i]) * atomic_load(&pb_ready_per_channel[i]);
    return e;
}

static double
cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* The only free text in the report is the user's --sub-path. */
static void
print_json_text(const char *s)
{
    for (; *s != '\0'; ++s) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned)*s);
        else
            putchar(*s);
    }
}

static void
print_opt_long(const char *name, long long v, int known)
{
    if (known)
        printf(",\"%s\":%lld", name, v);
    else
        printf(",\"%s\":null", name);
}

static void
print_opt_double(const char *name, double v, int known)
{
    if (known)
        printf(",\"%s\":%.3f", name, v);
    else
        printf(",\"%s\":null", name);
}

int
main(int argc, char **argv)
{
    parse_args(argc, argv);
    pb_cfg = &cfg;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    pb_pub.ok_per_channel = calloc(cfg.channels, sizeof(*pb_pub.ok_per_channel));
    pb_ready_per_channel = calloc(cfg.channels, sizeof(*pb_ready_per_channel));
    if (pb_pub.ok_per_channel == NULL || pb_ready_per_channel == NULL)
        pb_die("out of memory");

    fprintf(stderr, "pushedge-bench: %u %s subscribers on %u channel(s) (%s...) of %s, %u thread(s), run %u\n", cfg.connections,
            transport_names[cfg.transport], cfg.channels, cfg.sub_target[0], cfg.host_hdr, cfg.threads, cfg.run_id);

    uint64_t t0 = pb_now_ns();
    run_deadline = t0 + (uint64_t)(cfg.timeout * 1e9);
    long rss_before = cfg.npid != 0 ? pb_server_rss_kb() : -1, rss_after = -1;
    if (cfg.npid != 0 && rss_before < 0)
        fprintf(stderr, "pushedge-bench: warning: cannot read /proc/<pid>/status of --server-pid\n");

    /* ---- connect ---- */
    pb_sub_thread_t *threads[PB_MAX_THREADS];
    pthread_t pub_tid;
    uint64_t connect_start = pb_now_ns();
    for (uint32_t i = 0; i != cfg.threads; ++i)
        threads[i] = pb_sub_start(i, &shared[i]);
    if (pb_pub_start(&pub_tid) != 0)
        pb_die("cannot start the publisher thread");
    int alive = 1;
    uint64_t next_report = connect_start + 1000000000u;
    for (;;) {
        uint32_t done = 0;
        for (uint32_t i = 0; i != cfg.threads; ++i)
            done += (uint32_t)atomic_load(&shared[i].connect_done);
        if (done == cfg.threads)
            break;
        if (!(alive = tick()))
            break;
        if (pb_now_ns() >= next_report) {
            next_report += 1000000000u;
            fprintf(stderr, "pushedge-bench: connect: %llu ready, %llu failed of %u\n", (unsigned long long)SUM(opened),
                    (unsigned long long)SUM(failed), cfg.connections);
        }
    }
    uint64_t last_ready = MAX(last_ready_ns);
    double connect_seconds = (double)((last_ready > connect_start ? last_ready : pb_now_ns()) - connect_start) / 1e9;
    uint64_t opened = SUM(opened);
    fprintf(stderr, "pushedge-bench: connect: %llu ready, %llu failed in %.2f s\n", (unsigned long long)opened,
            (unsigned long long)SUM(failed), connect_seconds);

    /* ---- settle, measure ---- */
    uint64_t settle_end = pb_now_ns() + (uint64_t)(cfg.settle * 1e9);
    while (alive && pb_now_ns() < settle_end)
        alive = tick();
    if (cfg.npid != 0)
        rss_after = pb_server_rss_kb();
    uint64_t closed_before_hold = SUM(closed);

    /* ---- idle hold or publish + drain ---- */
    long long cpu_before = -1, cpu_after = -1;
    double gen_before = 0, gen_after = 0; /* the generator's own CPU over the measured phase */
    uint64_t gen_t0 = 0, gen_t1 = 0;
    uint64_t pub_start = 0;
    double idle_held = 0;
    if (cfg.idle > 0) {
        uint64_t hold_start = pb_now_ns(), hold_end = hold_start + (uint64_t)(cfg.idle * 1e9);
        cpu_before = cfg.npid != 0 ? pb_server_cpu_us() : -1;
        gen_before = cpu_seconds(), gen_t0 = pb_now_ns();
        next_report = hold_start + 5000000000u;
        while (alive && pb_now_ns() < hold_end) {
            alive = tick();
            if (pb_now_ns() >= next_report) {
                next_report += 5000000000u;
                fprintf(stderr, "pushedge-bench: idle: %llu open\n", (unsigned long long)(opened - SUM(closed)));
            }
        }
        idle_held = (double)(pb_now_ns() - hold_start) / 1e9;
        cpu_after = cfg.npid != 0 ? pb_server_cpu_us() : -1;
        gen_after = cpu_seconds(), gen_t1 = pb_now_ns();
    } else if (cfg.role == PB_ROLE_SUB && alive) {
        /* Ready: tell the orchestrator, then take deliveries until told how many to expect and
         * all have come (or --drain-wait after that line). */
        printf("{\"event\":\"ready\",\"opened\":%llu,\"failed\":%llu,\"closed\":%llu,\"connect_seconds\":%.3f}\n",
               (unsigned long long)opened, (unsigned long long)SUM(failed), (unsigned long long)SUM(closed), connect_seconds);
        fflush(stdout);
        cpu_before = cfg.npid != 0 ? pb_server_cpu_us() : -1;
        gen_before = cpu_seconds(), gen_t0 = pb_now_ns();
        uint64_t drain_end = UINT64_MAX, expect;
        int known = 0;
        next_report = pb_now_ns() + 5000000000u;
        while (alive) {
            if (known && SUM(unique) >= expected_total())
                break;
            if (pb_now_ns() >= drain_end)
                break;
            int r = read_control(&expect);
            if (r < 0) {
                fprintf(stderr, "pushedge-bench: stdin closed before the publish count came: reporting\n");
                break;
            }
            if (r > 0 && !known) {
                for (uint32_t i = 0; i != cfg.channels; ++i)
                    atomic_store(&pb_pub.ok_per_channel[i], (uint_fast32_t)expect);
                known = 1;
                drain_end = pb_now_ns() + (uint64_t)(cfg.drain_wait * 1e9);
            }
            alive = !interrupted && pb_now_ns() < run_deadline;
            if (pb_now_ns() >= next_report) {
                next_report += 5000000000u;
                fprintf(stderr, "pushedge-bench: sub: %llu delivered, %llu open\n", (unsigned long long)SUM(unique),
                        (unsigned long long)(opened - SUM(closed)));
            }
        }
        cpu_after = cfg.npid != 0 ? pb_server_cpu_us() : -1;
        gen_after = cpu_seconds(), gen_t1 = pb_now_ns();
    } else if (alive && (opened != 0 || cfg.role == PB_ROLE_PUB) && cfg.messages != 0) {
        cpu_before = cfg.npid != 0 ? pb_server_cpu_us() : -1;
        gen_before = cpu_seconds(), gen_t0 = pb_now_ns();
        atomic_store(&pb_pub.go, 1);
        next_report = pb_now_ns() + 1000000000u;
        while (alive && !atomic_load(&pb_pub.done)) {
            alive = tick();
            if (pb_now_ns() >= next_report) {
                next_report += 1000000000u;
                fprintf(stderr,
                        "pushedge-bench: publish: %llu sent, %llu ok, %llu errors; %llu of %llu delivered; %llu reconnects\n",
                        (unsigned long long)atomic_load(&pb_pub.sent), (unsigned long long)atomic_load(&pb_pub.ok),
                        (unsigned long long)atomic_load(&pb_pub.errors), (unsigned long long)SUM(unique),
                        (unsigned long long)expected_total(), (unsigned long long)SUM(reconnected));
            }
        }
        uint64_t drain_end = pb_now_ns() + (uint64_t)(cfg.drain_wait * 1e9);
        while (alive && SUM(unique) < expected_total() && pb_now_ns() < drain_end)
            alive = tick();
        cpu_after = cfg.npid != 0 ? pb_server_cpu_us() : -1;
        gen_after = cpu_seconds(), gen_t1 = pb_now_ns();
        pub_start = atomic_load(&pb_pub.start_ns);
    }
    int timed_out = !alive && !interrupted;
    if (timed_out)
        fprintf(stderr, "pushedge-bench: --timeout reached, reporting what was measured\n");

    /* ---- stop, merge, report ---- */
    uint64_t stop_ns = pb_now_ns();
    atomic_store(&pb_stop, 1);
    pthread_join(pub_tid, NULL);
    pb_result_t total;
    memset(&total, 0, sizeof(total));
    if (cfg.seq_hists != 0 && (total.seq_hist = calloc(cfg.seq_hists, sizeof(pb_hist_t))) == NULL)
        pb_die("out of memory");
    uint64_t last_rx = MAX(last_rx_ns), failed = SUM(failed), closed = SUM(closed);
    for (uint32_t i = 0; i != cfg.threads; ++i) {
        pb_result_t r;
        pb_sub_join(threads[i], &r);
        pb_hist_merge(&total.hist, &r.hist);
        for (uint32_t s = 0; s != cfg.seq_hists; ++s)
            pb_hist_merge(&total.seq_hist[s], &r.seq_hist[s]);
        free(r.seq_hist);
        total.unique += r.unique;
        total.dup += r.dup;
        total.foreign += r.foreign;
        total.skipped += r.skipped;
        total.lost += r.lost;
        total.extra += r.extra;
        total.protocol_errors += r.protocol_errors;
        total.server_closes += r.server_closes;
        total.deflated += r.deflated;
        total.deflate_refused += r.deflate_refused;
        total.churned += r.churned;
        total.reconnected += r.reconnected;
        total.retries += r.retries;
        total.gaps += r.gaps;
        total.tls_handshakes += r.tls_handshakes;
        total.tls_resumed += r.tls_resumed;
        total.tls_failed += r.tls_failed;
        if (total.tls_protocol[0] == '\0' && r.tls_protocol[0] != '\0') {
            memcpy(total.tls_protocol, r.tls_protocol, sizeof(total.tls_protocol));
            memcpy(total.tls_cipher, r.tls_cipher, sizeof(total.tls_cipher));
            memcpy(total.tls_alpn, r.tls_alpn, sizeof(total.tls_alpn));
        }
    }
    if (cfg.idle > 0)
        total.lost = 0; /* nothing was expected */

    uint64_t ok = atomic_load(&pb_pub.ok), pub_end = atomic_load(&pb_pub.end_ns);
    double pub_seconds = pub_start != 0 ? (double)((pub_end != 0 ? pub_end : stop_ns) - pub_start) / 1e9 : 0;
    double delivery_seconds = pub_start != 0 && last_rx > pub_start ? (double)(last_rx - pub_start) / 1e9 : 0;
    int rss_known = rss_before >= 0 && rss_after >= 0;
    int cpu_known = cpu_before >= 0 && cpu_after >= 0;

    printf("{\"tool\":\"pushedge-bench\",\"transport\":\"%s\",\"target\":\"%s\",\"sub_path\":\"", transport_names[cfg.transport],
           cfg.host_hdr);
    print_json_text(cfg.sub_path);
    printf("\",\"sub_servers\":%u,\"threads\":%u,\"channels\":%u", cfg.nsub_urls, cfg.threads, cfg.channels);
    printf(",\"connections_requested\":%u,\"connections_opened\":%llu,\"connections_failed\":%llu,\"connections_closed\":%llu",
           cfg.connections, (unsigned long long)opened, (unsigned long long)failed, (unsigned long long)closed);
    printf(",\"connect_seconds\":%.3f,\"connect_rate\":%.1f", connect_seconds,
           connect_seconds > 0 ? (double)opened / connect_seconds : 0);
    printf(",\"messages_requested\":%llu,\"messages_published\":%llu,\"publish_errors\":%llu,\"size\":%u,\"rate\":%.1f,\"publish_"
           "seconds\":%.3f",
           (unsigned long long)(cfg.idle > 0 ? 0 : cfg.messages), (unsigned long long)ok,
           (unsigned long long)atomic_load(&pb_pub.errors), cfg.size, cfg.idle > 0 ? 0 : cfg.rate, pub_seconds);
    printf(",\"expected_deliveries\":%llu,\"deliveries\":%llu,\"deliveries_per_s\":%.1f,\"lost\":%llu,\"duplicated\":%llu",
           (unsigned long long)(total.unique + total.lost - total.extra), (unsigned long long)total.unique,
           delivery_seconds > 0 ? (double)total.unique / delivery_seconds : 0, (unsigned long long)total.lost,
           (unsigned long long)total.dup);
    printf(",\"unexpected\":%llu,\"foreign\":%llu,\"protocol_errors\":%llu,\"server_closes\":%llu", (unsigned long long)total.extra,
           (unsigned long long)total.foreign, (unsigned long long)total.protocol_errors, (unsigned long long)total.server_closes);
    if (cfg.churn > 0)
        printf(",\"churn_s\":%.3f,\"churned\":%llu,\"reconnected\":%llu,\"retries\":%llu", cfg.churn,
               (unsigned long long)total.churned, (unsigned long long)total.reconnected, (unsigned long long)total.retries);
    printf(",\"gaps\":%llu", (unsigned long long)total.gaps);
    printf(",\"tls\":%s", cfg.tls ? "true" : "false");
    if (cfg.tls)
        printf(",\"tls_protocol\":\"%s\",\"tls_cipher\":\"%s\",\"tls_alpn\":\"%s\",\"tls_handshakes\":%llu,\"tls_resumed\":%llu,"
               "\"tls_failed\":%llu,\"tls_verified\":%s",
               total.tls_protocol, total.tls_cipher, total.tls_alpn, (unsigned long long)total.tls_handshakes,
               (unsigned long long)total.tls_resumed, (unsigned long long)total.tls_failed, cfg.tls_ca != NULL ? "true" : "false");
    if (cfg.transport == PB_WS_DEFLATE)
        printf(",\"compressed_messages\":%llu,\"deflate_refused\":%llu", (unsigned long long)total.deflated,
               (unsigned long long)total.deflate_refused);
    printf(",\"latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu}",
           (unsigned long long)pb_hist_quantile(&total.hist, 0.50), (unsigned long long)pb_hist_quantile(&total.hist, 0.90),
           (unsigned long long)pb_hist_quantile(&total.hist, 0.99), (unsigned long long)pb_hist_quantile(&total.hist, 0.999),
           (unsigned long long)total.hist.max);
    print_opt_long("rss_before_kb", rss_before, rss_before >= 0);
    print_opt_long("rss_after_kb", rss_after, rss_after >= 0);
    print_opt_long("rss_per_conn_bytes", opened != 0 ? (long long)((rss_after - rss_before) * 1024 / (long long)opened) : 0,
                   rss_known && opened != 0);
    print_opt_double("server_cpu_us_per_delivery", total.unique != 0 ? (double)(cpu_after - cpu_before) / (double)total.unique : 0,
                     cpu_known && total.unique != 0);
    print_opt_double("server_cpu_seconds", (double)(cpu_after - cpu_before) / 1e6, cpu_known);
    double gen_cpu = gen_after - gen_before, gen_wall = (double)(gen_t1 - gen_t0) / 1e9;
    print_opt_double("generator_cpu_cores", gen_wall > 0 ? gen_cpu / gen_wall : 0, gen_t1 != 0);
    print_opt_double("generator_cpu_us_per_delivery", total.unique != 0 ? gen_cpu * 1e6 / (double)total.unique : 0,
                     gen_t1 != 0 && total.unique != 0);
    if (cfg.hist) {
        printf(",\"run_id\":%u,\"hist\":", cfg.run_id);
        pb_hist_print_sparse(&total.hist);
        printf(",\"per_message\":[");
        for (uint32_t s = 0; s != cfg.seq_hists; ++s) {
            printf("%s{\"seq\":%u,\"n\":%llu,\"max\":%llu,\"hist\":", s != 0 ? "," : "", s,
                   (unsigned long long)total.seq_hist[s].total, (unsigned long long)total.seq_hist[s].max);
            pb_hist_print_sparse(&total.seq_hist[s]);
            putchar('}');
        }
        putchar(']');
    }
    free(total.seq_hist);
    if (cfg.idle > 0)
        printf(",\"idle_seconds\":%.3f,\"closed_during_idle\":%llu", idle_held, (unsigned long long)(closed - closed_before_hold));
    printf(",\"generator_cpu_seconds\":%.3f,\"wall_seconds\":%.3f,\"timed_out\":%s,\"interrupted\":%s}\n", cpu_seconds(),
           (double)(pb_now_ns() - t0) / 1e9, timed_out ? "true" : "false", interrupted ? "true" : "false");
    fflush(stdout);
    return 0;
}

#!/usr/bin/env bash
# compare.sh: pushedge against nchan, the physical floor and its own Redis engine, in one run, on
# one machine, with one generator (pushedge-bench), printed as one side-by-side table.
#
#   tests/load/compare.sh [--quick] [--only a,b,c,d,e,f,p,growth,tls] [--out DIR] [--build DIR]
#                         [--tls-build DIR] [--pub-modes h1,h2,batch]
#                         [--pub-targets pe,redis1,nchan,nchanredis,nginx200,floor,peer] [--peer-build DIR]
#
# Servers, each a fresh process per run (and fresh channels: pushedge-bench picks a new prefix):
#   pushedge  build-rel/edge/pushedge --threads 1 (memory engine)
#   nchan     Debian's nginx + libnginx-mod-nchan from tests/load/nchan.conf.in, one worker
#   floor     build-rel/tests/load/pushedge-floor: one write() per subscriber, nothing else
#   redis1    pushedge --redis, with its own redis-server on a free loopback port
#   redis2    two pushedge nodes on that Redis; subscribers alternate between them, every
#             message is published to node 1 (so half the deliveries cross Redis to node 2)
#   petls     pushedge --listen-tls beside its --listen: subscribers over TLS, publishes in clear
#   nchantls  nginx + nchan from tests/load/nchan-tls.conf.in, the same way
#   ngpub     nginx from tests/load/nchan-pub.conf.in (scenario p): nchan's publisher on its memory
#             store (/pub/{channel}), and `location / { return 200 }`, the do-nothing responder
#             ("nginx200"), on an HTTP/1.1 and an HTTP/2 (clear text) port
#   ngpubredis  the same with nchan on Redis (nchan_redis_url, nchan_use_redis), its own redis-server
# The TLS scenario's pushedge, clear and TLS alike, is --tls-build's (default --build's): a build
# of a branch with TLS listeners while main has none. Both TLS servers use one throwaway ECDSA
# P-256 certificate made at run time (openssl), so they do the same cryptography.
# Pinning: every server-side process (pushedge nodes, nginx, redis-server, the floor) runs on
# CPU 0, the generator (pushedge-bench --threads 1, its publisher thread included) on CPU 1. With
# Redis the server side therefore still has one core in total, as with the memory engine; the
# --server-pid passed to the bench (RSS, CPU) is the pushedge node(s) only, not redis-server.
#
# Scenarios (N = 10,000; --quick: 1,000):
#   a  fan-out: N ws (and sse) subscribers on one channel, 128 B messages; a rate ladder of a few
#      seconds per step (offered 50k..600k deliveries/s at N = 10,000), stopping at the first
#      step with a loss or delivering under 85% of the offer; reported: the best deliveries/s
#      of a lossless step
#   b  latency: N ws subscribers on one channel at 2 messages/s: p50/p99 (best of --repeat)
#   c  many channels: N subscribers on N channels, 2,000 publishes/s: p50/p99
#   d  idle: 18,000 ws, then 18,000 sse connections (--quick: 2,000): server RSS per connection
#   e  deflate: N subscribers, 1 KiB JSON at 50k deliveries/s, ws-deflate vs ws: server CPU per
#      delivery (lowest of --repeat: noise on this shared machine only ever adds)
#   f  Redis: (a, ws) and (c) with redis1 and redis2
#   p  publishing (issue 17), no subscribers, one channel, 100-byte JSON, h2load (nghttp2-client)
#      on CPU 1 for --pub-seconds (default 4; --quick 2) after 1 s of warm-up, best of --repeat:
#      h1     HTTP/1.1, 32 keep-alive connections, one request at a time each
#      h2     HTTP/2, 8 connections x 32 concurrent streams
#      batch  POST /api/batch, 100 messages per request (one channel), HTTP/1.1, 8 connections
#      against pushedge (memory), redis1, nchan (memory and Redis: h1 and h2; it has no batch
#      endpoint), nginx200 (the same requests answered by `return 200`: the floor of HTTP
#      handling, h1 and h2 and the batch bodies) and pushedge-floor (h1, and the batch bodies to
#      its /api/publish). Reported: publishes (messages) per second answered 2xx, the server
#      side's CPU per publish, and the ratios issue 17 asks for. --pub-modes and --pub-targets
#      keep only some of the modes and targets (for repeated quiet runs of one row); the target
#      "peer" (only when listed, with --peer-build DIR) is that build's pushedge on the memory
#      engine, measured in the same run, interleaved (e.g. the main branch against a change).
#   growth: idle ws RSS/connection and fan-out CPU/delivery (ws, 50k deliveries/s offered) at
#      1k, 5k, 10k, 18k connections for pushedge and nchan -> growth.csv, growth.svg
#   tls: (a)'s ladder, ws and sse, for pushedge clear, pushedge TLS, nchan clear and nchan TLS
#      (best lossless deliveries/s; p99 and server and generator CPU per delivery at the first
#      step, 50k deliveries/s); then, where perf works, one pushedge TLS ws run at 50k/s under
#      `perf record` -> perf-tls-ws.txt (time per library and the top symbols). Not in the
#      default list: it needs a TLS build.
# Noise: this machine is shared. Before each run the script waits (at most 10 s) for the machine
# to be quiet; after it, "foreign_cores" (busy CPU not spent by the server processes or the
# generator, per wall second) and "steal_cores" (hypervisor steal) are added to the run's JSON,
# and a run above 0.25 cores of either is repeated once; what stays noisy is listed in the notes.
# Output directory (--out, default build-rel/compare-<time>): runs.jsonl (every bench result,
# with run/scenario/server/loadavg added), table.md, growth.csv, growth.svg, logs/.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build-rel
QUICK=0
ONLY=a,b,c,d,e,f,p,growth
PUB_S=
OUT=
REPEAT=
TLS_BUILD=
PUB_MODES=h1,h2,batch
PUB_TARGETS=pe,redis1,nchan,nchanredis,nginx200,floor
PEER_BUILD=
usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --build) BUILD=${2:?--build needs a directory}; shift ;;
    --tls-build) TLS_BUILD=${2:?--tls-build needs a directory}; shift ;;
    --repeat) REPEAT=${2:?--repeat needs a number}; shift ;;
    --pub-seconds) PUB_S=${2:?--pub-seconds needs a number}; shift ;;
    --pub-modes) PUB_MODES=${2:?--pub-modes needs a list}; shift ;;
    --pub-targets) PUB_TARGETS=${2:?--pub-targets needs a list}; shift ;;
    --peer-build) PEER_BUILD=${2:?--peer-build needs a directory}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

if [ $QUICK = 1 ]; then
    N=1000 IDLE_N=2000 STEP_S=2 LAT_MSGS=6 MANY_S=2 GROWTH_NS="250 500 1000 2000"
    REPEAT=${REPEAT:-1} PUB_S=${PUB_S:-2}
else
    N=10000 IDLE_N=18000 STEP_S=4 LAT_MSGS=20 MANY_S=5 GROWTH_NS="1000 5000 10000 18000"
    REPEAT=${REPEAT:-2} PUB_S=${PUB_S:-4}
fi
SCALE=$((10000 / N))           # ladder rates are per 10,000 subscribers: same offered deliveries/s
LADDER="5 10 15 20 30 40 60"   # messages/s at 10,000 subscribers
DEFLATE_RATE=5                 # messages/s at 10,000 subscribers (50k deliveries/s)
GROWTH_DPS=50000               # offered deliveries/s of the growth series' fan-out runs
BENCH_TIMEOUT=150

PE=$BUILD/edge/pushedge
BENCH=$BUILD/tests/load/pushedge-bench
FLOOR=$BUILD/tests/load/pushedge-floor
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
[ -n "$OUT" ] || OUT=$BUILD/compare-$(date +%Y%m%d-%H%M%S)

# ---- build ------------------------------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -De2e=false >/dev/null || { echo "compare.sh: meson setup failed" >&2; exit 1; }
fi
meson compile -C "$BUILD" >/dev/null || { echo "compare.sh: meson compile -C $BUILD failed" >&2; exit 1; }
for f in "$PE" "$BENCH" "$FLOOR"; do [ -x "$f" ] || { echo "compare.sh: missing $f" >&2; exit 1; }; done
command -v jq >/dev/null || { echo "compare.sh: needs jq" >&2; exit 1; }
PE_PEER=
if [[ ",$PUB_TARGETS," == *",peer,"* ]]; then
    [ -n "$PEER_BUILD" ] || { echo "compare.sh: the target peer needs --peer-build DIR" >&2; exit 1; }
    PEER_BUILD=$(cd "$PEER_BUILD" && pwd) || exit 1
    meson compile -C "$PEER_BUILD" edge/pushedge >/dev/null || { echo "compare.sh: meson compile -C $PEER_BUILD failed" >&2; exit 1; }
    PE_PEER=$PEER_BUILD/edge/pushedge
fi
if want p; then
    command -v h2load >/dev/null || { echo "compare.sh: the p scenario needs h2load (apt-get install nghttp2-client)" >&2; exit 1; }
fi
PE_TLS=$PE # the pushedge of the TLS scenario (clear and TLS runs alike)
if want tls; then
    if [ -n "$TLS_BUILD" ]; then
        TLS_BUILD=$(cd "$TLS_BUILD" && pwd) || exit 1
        meson compile -C "$TLS_BUILD" edge/pushedge >/dev/null || { echo "compare.sh: meson compile -C $TLS_BUILD failed" >&2; exit 1; }
        PE_TLS=$TLS_BUILD/edge/pushedge
    fi
    "$PE_TLS" --help 2>&1 | grep -- --listen-tls >/dev/null || { echo "compare.sh: $PE_TLS has no --listen-tls (give --tls-build DIR)" >&2; exit 1; }
    command -v openssl >/dev/null || { echo "compare.sh: the tls scenario needs openssl" >&2; exit 1; }
fi

mkdir -p "$OUT/logs" || exit 1
LOGS=$OUT/logs
RUNS=$OUT/runs.jsonl
: >"$RUNS"
WORK=$(mktemp -d /tmp/pushedge-compare.XXXXXX)
if want tls; then
    # Throwaway: made for this run, deleted with $WORK.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>"$WORK/openssl.log" ||
        { echo "compare.sh: openssl could not make a certificate: $(cat "$WORK/openssl.log")" >&2; exit 1; }
fi

# ---- processes --------------------------------------------------------------------------------
PIDS=() # every process this script started and has not reaped yet

stop_pids() { # PID...: TERM, up to 5 s, then KILL; reaps them
    local p i alive
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 50); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    local keep=() q
    for q in "${PIDS[@]}"; do
        for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
        keep+=("$q")
    done
    PIDS=("${keep[@]}")
}
cleanup() {
    [ ${#PIDS[@]} -gt 0 ] && stop_pids "${PIDS[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT_NEXT=$((24000 + RANDOM % 4000))
next_port() { # sets PORT to a loopback port nobody listens on (below the ephemeral range)
    while :; do
        PORT_NEXT=$((PORT_NEXT + 1))
        [ $PORT_NEXT -ge 32000 ] && PORT_NEXT=24000
        (exec 3<>/dev/tcp/127.0.0.1/$PORT_NEXT) 2>/dev/null || break
    done
    PORT=$PORT_NEXT
}
wait_http() { # URL PID: until 2xx (10 s), while PID lives
    local i code
    for i in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")
        [[ $code == 2* ]] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Every start_* sets S_URL (where to publish), S_SUB (extra bench args), S_BENCH_PIDS (for
# --server-pid) and appends to S_STOP (PIDs to stop after the run). Never called in $(...): the
# background process must be this shell's child.
S_STOP=()
start_pushedge() { # NAME [pushedge args...]
    local name=$1; shift
    next_port
    taskset -c 0 "${PE_BIN:-$PE}" --threads 1 --listen 127.0.0.1:$PORT --log-level warn --drain-timeout 1 "$@" >"$LOGS/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid"); S_STOP+=("$pid")
    wait_http "http://127.0.0.1:$PORT/readyz" "$pid" || { echo "compare.sh: pushedge ($name) did not get ready, see $LOGS/$name.log" >&2; return 1; }
    S_LAST_PID=$pid S_LAST_PORT=$PORT
}
start_redis() { # NAME
    next_port
    taskset -c 0 redis-server --port $PORT --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$LOGS/$1.log" 2>&1 &
    local pid=$! i
    PIDS+=("$pid"); S_STOP+=("$pid")
    for i in $(seq 100); do
        [ "$(redis-cli -p $PORT ping 2>/dev/null)" = PONG ] && { REDIS_PORT=$PORT; return 0; }
        sleep 0.1
    done
    echo "compare.sh: redis-server did not start, see $LOGS/$1.log" >&2
    return 1
}
start_server() { # KIND NAME: pe | nchan | floor | redis1 | redis2
    local kind=$1 name=$2
    S_STOP=() S_SUB=() S_BENCH_PIDS= S_H2URL=
    case $kind in
    pe)
        start_pushedge "$name" || return 1
        S_URL=http://127.0.0.1:$S_LAST_PORT S_BENCH_PIDS=$S_LAST_PID ;;
    peer)
        PE_BIN=$PE_PEER start_pushedge "$name" || return 1
        S_URL=http://127.0.0.1:$S_LAST_PORT S_BENCH_PIDS=$S_LAST_PID ;;
    floor)
        next_port
        taskset -c 0 "$FLOOR" --listen 127.0.0.1:$PORT >"$LOGS/$name.log" 2>&1 &
        local pid=$!
        PIDS+=("$pid"); S_STOP+=("$pid")
        wait_http "http://127.0.0.1:$PORT/healthz" "$pid" || return 1
        S_URL=http://127.0.0.1:$PORT S_BENCH_PIDS=$pid ;;
    petls)
        next_port
        local tport=$PORT
        start_pushedge "$name" --listen-tls 127.0.0.1:$tport --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" || return 1
        S_URL=http://127.0.0.1:$S_LAST_PORT S_BENCH_PIDS=$S_LAST_PID
        S_SUB=(--sub-url https://127.0.0.1:$tport) ;;
    nchan | nchantls)
        local dir=$WORK/$name conf=nchan.conf.in tport=''
        if [ "$kind" = nchantls ]; then
            next_port
            conf=nchan-tls.conf.in tport=$PORT
        fi
        next_port
        mkdir -p "$dir/tmp"
        sed -e "s/@PORT@/$PORT/" -e "s/@TLS_PORT@/$tport/" -e "s|@CERT@|$WORK/cert.pem|" -e "s|@KEY@|$WORK/key.pem|" \
            -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|" "$ROOT/tests/load/$conf" >"$dir/nginx.conf"
        taskset -c 0 nginx -p "$dir/" -c nginx.conf -e error.log -g 'daemon off;' >"$LOGS/$name.log" 2>&1 &
        local master=$! worker='' i
        PIDS+=("$master"); S_STOP+=("$master")
        for i in $(seq 100); do
            worker=$(pgrep -P "$master" | head -n1)
            [ -n "$worker" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/")" != 000 ] && break
            kill -0 "$master" 2>/dev/null || break
            worker=
            sleep 0.1
        done
        [ -n "$worker" ] || { echo "compare.sh: nginx did not start, see $LOGS/$name.log and $dir/error.log" >&2; cp "$dir/error.log" "$LOGS/$name.error.log" 2>/dev/null; return 1; }
        S_URL=http://127.0.0.1:$PORT S_BENCH_PIDS=$worker
        S_SUB=(--sub-path '/sub/{channel}' --pub-path '/pub/{channel}')
        if [ -n "$tport" ]; then S_SUB+=(--sub-url https://127.0.0.1:$tport); fi ;;
    ngpub | ngpubredis)
        local dir=$WORK/$name redis_line='' h2port
        if [ "$kind" = ngpubredis ]; then
            start_redis "$name.redis" || return 1
            redis_line="nchan_redis_url \"redis://127.0.0.1:$REDIS_PORT\"; nchan_use_redis on;"
        fi
        next_port
        h2port=$PORT
        next_port
        mkdir -p "$dir/tmp"
        sed -e "s/@PORT@/$PORT/" -e "s/@H2_PORT@/$h2port/" -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|" -e "s|@REDIS@|$redis_line|" \
            "$ROOT/tests/load/nchan-pub.conf.in" >"$dir/nginx.conf"
        taskset -c 0 nginx -p "$dir/" -c nginx.conf -e error.log -g 'daemon off;' >"$LOGS/$name.log" 2>&1 &
        local master=$! worker='' i
        PIDS+=("$master"); S_STOP+=("$master")
        for i in $(seq 100); do
            worker=$(pgrep -P "$master" | head -n1)
            [ -n "$worker" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/")" = 200 ] && break
            kill -0 "$master" 2>/dev/null || break
            worker=
            sleep 0.1
        done
        [ -n "$worker" ] || { echo "compare.sh: nginx did not start, see $LOGS/$name.log and $dir/error.log" >&2; cp "$dir/error.log" "$LOGS/$name.error.log" 2>/dev/null; return 1; }
        S_URL=http://127.0.0.1:$PORT S_H2URL=http://127.0.0.1:$h2port S_BENCH_PIDS=$worker ;;
    redis1)
        start_redis "$name.redis" || return 1
        start_pushedge "$name" --redis "redis://127.0.0.1:$REDIS_PORT" || return 1
        S_URL=http://127.0.0.1:$S_LAST_PORT S_BENCH_PIDS=$S_LAST_PID ;;
    redis2)
        start_redis "$name.redis" || return 1
        start_pushedge "$name.node1" --redis "redis://127.0.0.1:$REDIS_PORT" || return 1
        local p1=$S_LAST_PID u1=http://127.0.0.1:$S_LAST_PORT
        start_pushedge "$name.node2" --redis "redis://127.0.0.1:$REDIS_PORT" || return 1
        S_URL=$u1 S_BENCH_PIDS=$p1,$S_LAST_PID
        S_SUB=(--sub-url "$u1" --sub-url "http://127.0.0.1:$S_LAST_PORT") ;;
    esac
}

NOTES=()
note() { NOTES+=("$*"); echo "  note: $*" >&2; }
declare -A R # results: scenario.server[.transport].metric -> number
RUNNO=0
LAST= # the JSON file of the last run, empty if it produced none

# Machine-wide CPU ticks that are busy / stolen, and the ticks of given PIDs (/proc/stat, utime+stime).
stat_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }
pid_ticks() {
    local p t=0
    for p in "$@"; do
        [ -r /proc/$p/stat ] && t=$((t + $(sed 's/.*) //' /proc/$p/stat | awk '{ print $12 + $13 }')))
    done
    echo $t
}
HZ=$(getconf CLK_TCK)
FOREIGN_MAX=0.25 # cores used by other processes (or stolen by the hypervisor) that make a run suspect
RETRY_UNTIL=$(($(date +%s) + 20 * 60)) # no waiting for quiet nor repeating after 20 minutes

wait_quiet() { # before a run: up to 10 s for the machine to use less than FOREIGN_MAX cores
    local i a b
    for i in $(seq 10); do
        [ "$(date +%s)" -ge $RETRY_UNTIL ] && return
        a=$(stat_busy); sleep 0.5; b=$(stat_busy)
        awk -v a="$a" -v b="$b" -v hz="$HZ" -v m=$FOREIGN_MAX 'BEGIN { split(a, x, " "); split(b, y, " "); exit !((y[1] - x[1]) / hz / 0.5 < m) }' && return
        [ $i = 1 ] && echo "  (the machine is busy: waiting up to 10 s)" >&2
    done
}

# run KIND SCENARIO LABEL [bench args...]: fresh server(s), one bench run, servers stopped. A run
# during which other processes (someone else's tests) or the hypervisor took more than
# FOREIGN_MAX of a core is repeated once; both are kept in runs.jsonl, the second one counts.
run() {
    local try
    for try in 1 2; do
        wait_quiet
        "${RUN_ONCE:-run_once}" "$@" || return 1
        awkf "exit !($(j foreign_cores) > $FOREIGN_MAX || $(j steal_cores) > $FOREIGN_MAX)" || return 0
        if [ $try = 1 ] && [ "$(date +%s)" -lt $RETRY_UNTIL ]; then
            echo "  (foreign CPU $(j foreign_cores) cores, steal $(j steal_cores): repeating)" >&2
        else
            note "$(j run): other processes used $(j foreign_cores) cores and the hypervisor stole $(j steal_cores) during the run$([ $try = 2 ] && echo ' (after one retry)')"
            return 0
        fi
    done
    return 0
}
run_once() {
    local kind=$1 scen=$2 label=$3; shift 3
    RUNNO=$((RUNNO + 1))
    local key
    key=$(printf '%03d-%s-%s-%s' $RUNNO "$scen" "$kind" "$label")
    LAST=
    if ! start_server "$kind" "$key"; then
        note "$key: the server did not start"
        [ ${#S_STOP[@]} -gt 0 ] && stop_pids "${S_STOP[@]}"
        return 1
    fi
    local la rc ours b0 b1 o0 o1
    la=$(cut -d' ' -f1-3 /proc/loadavg)
    mapfile -t ours < <(printf '%s\n' "${S_STOP[@]}" ${S_BENCH_PIDS//,/ } | sort -u)
    b0=$(stat_busy) o0=$(pid_ticks "${ours[@]}")
    local perf_pid=''
    if [ -n "${PROFILE:-}" ]; then
        # Samples the server (its first pid) only, from the moment the bench says its connections
        # are ready: the handshakes are not the fan-out. perf's own CPU shows as foreign_cores.
        (
            for _ in $(seq 1200); do grep -q ' failed in ' "$LOGS/$key.err" 2>/dev/null && break; sleep 0.1; done
            exec perf record -F 999 -o "$PERF_DATA" -p "${S_BENCH_PIDS%%,*}"
        ) >"$LOGS/$key.perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    timeout $((BENCH_TIMEOUT + 30)) taskset -c 1 "$BENCH" --threads 1 --timeout $BENCH_TIMEOUT --url "$S_URL" \
        --server-pid "$S_BENCH_PIDS" "${S_SUB[@]}" "$@" >"$LOGS/$key.json" 2>"$LOGS/$key.err"
    rc=$?
    b1=$(stat_busy) o1=$(pid_ticks "${ours[@]}")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null
        wait "$perf_pid" 2>/dev/null
        stop_pids "$perf_pid"
    fi
    stop_pids "${S_STOP[@]}"
    if [ $rc -ne 0 ] || ! jq -e . "$LOGS/$key.json" >/dev/null 2>&1; then
        note "$key: pushedge-bench exited $rc without a result (see $LOGS/$key.err)"
        return 1
    fi
    # foreign: busy CPU time not spent by the server processes or the generator, in cores.
    local fc sc
    local fc sc g w
    read -r g w < <(jq -r '"\(.generator_cpu_seconds) \(.wall_seconds)"' "$LOGS/$key.json")
    read -r fc sc < <(awk -v b0="$b0" -v b1="$b1" -v o=$((o1 - o0)) -v hz="$HZ" -v g="$g" -v w="$w" 'BEGIN {
        split(b0, x, " "); split(b1, y, " "); f = ((y[1] - x[1]) - o) / hz - g
        if (f < 0 || w <= 0) f = 0
        printf "%.2f %.2f\n", (w > 0 ? f / w : 0), (w > 0 ? (y[2] - x[2]) / hz / w : 0) }')
    jq -c --arg run "$key" --arg s "$scen" --arg k "$kind" --arg l "$label" --arg la "$la" --argjson fc "$fc" --argjson sc "$sc" \
        '. + {run: $run, scenario: $s, server: $k, label: $l, loadavg: $la, foreign_cores: $fc, steal_cores: $sc}' \
        "$LOGS/$key.json" >"$LOGS/$key.run.json"
    cat "$LOGS/$key.run.json" >>"$RUNS"
    LAST=$LOGS/$key.run.json
    local opened req
    opened=$(j connections_opened) req=$(j connections_requested)
    [ "$opened" != "$req" ] && note "$key: only $opened of $req connections ready ($(j connections_failed) failed)"
    [ "$(j timed_out)" = true ] && note "$key: the bench hit its --timeout"
    [ "$(j protocol_errors)" != 0 ] && note "$key: $(j protocol_errors) protocol errors"
    printf '  %-34s %s\n' "$key" "$(jq -r '"\(.deliveries) deliveries, \(.deliveries_per_s|floor)/s, lost \(.lost), p50 \(.latency_us.p50/1000) ms, p99 \(.latency_us.p99/1000) ms, rss/conn \(.rss_per_conn_bytes) B, cpu/delivery \(.server_cpu_us_per_delivery) us, foreign \(.foreign_cores)/\(.steal_cores)"' "$LAST")" >&2
    return 0
}
j() { [ -n "$LAST" ] && jq -r ".$1" "$LAST"; } # FIELD of the last run

awkf() { awk "BEGIN { $1 }"; }
clean() { # LAST's run was complete and lossless
    [ -n "$LAST" ] && [ "$(j lost)" = 0 ] && [ "$(j duplicated)" = 0 ] && [ "$(j publish_errors)" = 0 ] &&
        [ "$(j connections_opened)" = "$(j connections_requested)" ] && [ "$(j timed_out)" = false ]
}

# fanout KIND TRANSPORT SCEN: the rate ladder -> R[SCEN.KIND.TRANSPORT.{dps,rate,p99}]
fanout() {
    local kind=$1 tr=$2 scen=$3 base rate offered dps best=0 bestrate='' bestp99='' bestgen=''
    for base in $LADDER; do
        rate=$((base * SCALE)) offered=$((base * 10000))
        run "$kind" "$scen" "$tr-r$rate" --transport "$tr" --connections $N --rate $rate --duration $STEP_S --connect-rate 8000 || break
        dps=$(j deliveries_per_s)
        if [ "$base" = 5 ] && clean; then # the first step, 50k deliveries/s: the fixed-rate figures
            R[$scen.$kind.$tr.p99at50k]=$(j latency_us.p99) R[$scen.$kind.$tr.cpu50k]=$(j server_cpu_us_per_delivery)
            R[$scen.$kind.$tr.gen50k]=$(j generator_cpu_us_per_delivery) R[$scen.$kind.$tr.gencores50k]=$(j generator_cpu_cores)
        fi
        if clean && awkf "exit !($dps > $best)"; then best=$dps bestrate=$rate bestp99=$(j latency_us.p99) bestgen=$(j generator_cpu_cores); fi
        clean || break
        awkf "exit !($dps < 0.85 * $offered)" && break
    done
    R[$scen.$kind.$tr.dps]=$best
    R[$scen.$kind.$tr.rate]=$bestrate
    R[$scen.$kind.$tr.p99]=$bestp99
    R[$scen.$kind.$tr.gencores]=$bestgen
    # One generator thread on one core: near a full core, the ceiling measured is the generator's.
    [ -n "$bestgen" ] && awkf "exit !($bestgen > 0.85)" && note "$scen $kind $tr: the generator used $bestgen cores at the best step: the ceiling may be the generator's, not the server's"
    [ "$base" = 60 ] && clean && note "$scen $kind $tr: the ladder's top step ($((60 * SCALE)) msgs/s) was still sustained: the ceiling is higher"
}

# many KIND SCEN: N subscribers on N channels, 2,000 publishes/s -> R[SCEN.KIND.{p50,p99}]
many() {
    run "$1" "$2" many --transport ws --connections $N --channels $N --rate 2000 --duration $MANY_S --publishers 16 \
        --connect-rate 8000 || return
    clean || note "$2 $1 many channels: lost $(j lost), dup $(j duplicated), publish errors $(j publish_errors)"
    R[$2.$1.p50]=$(j latency_us.p50) R[$2.$1.p99]=$(j latency_us.p99) R[$2.$1.pubrate]=$(jq -r '.messages_published / .publish_seconds' "$LAST")
}

# prun_once KIND SCENARIO LABEL MODE PATH (through run, with RUN_ONCE=prun_once): fresh server(s),
# one h2load run on CPU 1 (MODE h1: 32 HTTP/1.1 connections; h2: 8 HTTP/2 connections x 32
# streams; batch: the 100-message batch body, 8 HTTP/1.1 connections), servers stopped. The run's
# JSON (publishes/s answered 2xx, server-side CPU: every process of the server, Redis included)
# goes to runs.jsonl like a pushedge-bench result; P_TARGET names what was measured.
prun_once() {
    local kind=$1 scen=$2 label=$3 mode=$4 path=$5
    RUNNO=$((RUNNO + 1))
    local key
    key=$(printf '%03d-%s-%s-%s' $RUNNO "$scen" "$kind" "$label")
    LAST=
    if ! start_server "$kind" "$key"; then
        note "$key: the server did not start"
        [ ${#S_STOP[@]} -gt 0 ] && stop_pids "${S_STOP[@]}"
        return 1
    fi
    local url=$S_URL body=$WORK/pub-body.json per=1 args=()
    case $mode in
    h1) args=(--h1 -c 32 -m 1) ;;
    h2) url=${S_H2URL:-$S_URL} args=(-c 8 -m 32) ;;
    batch) args=(--h1 -c 8 -m 1) body=$WORK/pub-batch.json per=100 ;;
    esac
    local la ours b0 b1 o0 o1 t0 t1 errs=''
    la=$(cut -d' ' -f1-3 /proc/loadavg)
    mapfile -t ours < <(printf '%s\n' "${S_STOP[@]}" ${S_BENCH_PIDS//,/ } | sort -u)
    b0=$(stat_busy) o0=$(pid_ticks "${ours[@]}") t0=$(date +%s.%N)
    (
        timeout $((PUB_S + 60)) taskset -c 1 h2load "${args[@]}" -t 1 -D "$PUB_S" --warm-up-time 1 -d "$body" \
            -H 'content-type: application/json' "$url$path" >"$LOGS/$key.out" 2>&1
        echo "rc $?"
        times
    ) >"$LOGS/$key.times" 2>&1
    b1=$(stat_busy) o1=$(pid_ticks "${ours[@]}") t1=$(date +%s.%N)
    # pushedge's own count of publishes the engine refused (a batch answers 200 with per-item errors).
    case $kind in pe | redis1) errs=$(curl -s --max-time 2 "$S_URL/metrics" | awk '$1 == "pushedge_publish_errors_total" { print $2 }') ;; esac
    stop_pids "${S_STOP[@]}"
    local rc secs ok non2xx gen
    rc=$(awk '$1 == "rc" { print $2 }' "$LOGS/$key.times")
    # "finished in 4.00s, ..." (or ms), "status codes: N 2xx, N 3xx, N 4xx, N 5xx"; `times` (after the rc line): the shell's, then its children's user and sys.
    secs=$(sed -n 's/^finished in \([0-9.]*\)\(m\{0,1\}s\),.*/\1 \2/p' "$LOGS/$key.out" | awk '{ print ($2 == "ms" ? $1 / 1000 : $1) }')
    read -r ok non2xx < <(awk '/^status codes:/ { gsub(",", ""); print $3, $5 + $7 + $9 }' "$LOGS/$key.out")
    gen=$(sed -n 3p "$LOGS/$key.times" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); n += a[1] * 60 + a[2] } print n }')
    if [ "$rc" != 0 ] || [ -z "$secs" ] || [ -z "$ok" ]; then
        note "$key: h2load exited ${rc:-?} without a result (see $LOGS/$key.out)"
        return 1
    fi
    local json
    json=$(awk -v b0="$b0" -v b1="$b1" -v o=$((o1 - o0)) -v hz="$HZ" -v g="${gen:-0}" -v t0="$t0" -v t1="$t1" \
        -v secs="$secs" -v ok="$ok" -v bad="$non2xx" -v per=$per -v warm=1 'BEGIN {
        w = t1 - t0; split(b0, x, " "); split(b1, y, " ")
        f = ((y[1] - x[1]) - o) / hz - g; if (f < 0) f = 0
        rate = ok * per / secs
        cores = o / hz / w
        printf "{\"publishes_per_s\": %.0f, \"requests_2xx\": %d, \"requests_other\": %d, \"per_request\": %d, \"seconds\": %.3f, \"wall_seconds\": %.3f, \"server_cpu_cores\": %.3f, \"server_cpu_us_per_publish\": %.3f, \"generator_cpu_cores\": %.3f, \"foreign_cores\": %.2f, \"steal_cores\": %.2f}",
            rate, ok, bad, per, secs, w, cores, (rate > 0 ? cores / rate * 1e6 : 0), g / w, f / w, (y[2] - x[2]) / hz / w }')
    jq -c --arg run "$key" --arg s "$scen" --arg k "$kind" --arg t "${P_TARGET:-$kind}" --arg l "$label" --arg m "$mode" --arg la "$la" \
        --arg errs "$errs" '. + {run: $run, scenario: $s, server: $k, target: $t, label: $l, mode: $m, loadavg: $la,
        publish_errors: (if $errs == "" then null else ($errs | tonumber) end)}' <<<"$json" >"$LOGS/$key.run.json"
    cat "$LOGS/$key.run.json" >>"$RUNS"
    LAST=$LOGS/$key.run.json
    [ "$non2xx" != 0 ] && note "$key: $non2xx requests answered other than 2xx"
    [ -n "$errs" ] && [ "$errs" != 0 ] && note "$key: pushedge counted $errs publish errors"
    printf '  %-34s %s\n' "$key" "$(jq -r '"\(.publishes_per_s) publishes/s, server \(.server_cpu_cores) cores, \(.server_cpu_us_per_publish) us/publish, h2load \(.generator_cpu_cores) cores, foreign \(.foreign_cores)/\(.steal_cores)"' "$LAST")" >&2
    return 0
}

echo "== pushedge compare: $(date -u '+%Y-%m-%d %H:%M UTC')" >&2
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), fd limit $(ulimit -Hn)"
VERSIONS="$("$PE" --version)$(want tls && [ "$PE_TLS" != "$PE" ] && echo " (tls scenario: $("$PE_TLS" --version))"), $(openssl version | cut -d' ' -f1-2), $(nginx -v 2>&1 | sed 's/^nginx version: //') + nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), $(redis-server --version | awk '{ print $3 }' | sed 's/v=/redis /')"
echo "machine:  $MACHINE" >&2
echo "versions: $VERSIONS" >&2
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg); N=$N, idle N=$IDLE_N, out: $OUT" >&2
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)

# ---- scenarios ----------------------------------------------------------------------------------
if want a; then
    echo "== (a) fan-out: $N subscribers, one channel, 128 B, rate ladder" >&2
    for tr in ws sse; do
        for kind in pe nchan floor; do fanout $kind $tr a; done
    done
fi

if want b; then
    echo "== (b) latency: $N ws subscribers, 2 messages/s" >&2
    for i in $(seq "$REPEAT"); do
        for kind in pe nchan floor; do
            run $kind b "lat$i" --transport ws --connections $N --rate 2 --messages $LAT_MSGS --connect-rate 8000 || continue
            clean || note "b $kind run $i: lost $(j lost)"
            p99=$(j latency_us.p99)
            if [ -z "${R[b.$kind.p99]:-}" ] || [ "$p99" -lt "${R[b.$kind.p99]}" ]; then
                R[b.$kind.p99]=$p99 R[b.$kind.p50]=$(j latency_us.p50)
            fi
        done
    done
fi

if want c; then
    echo "== (c) many channels: $N subscribers on $N channels, 2,000 publishes/s" >&2
    for kind in pe nchan; do many $kind c; done
fi

if want d; then
    echo "== (d) idle: $IDLE_N connections" >&2
    for tr in ws sse; do
        for kind in pe nchan; do
            run $kind d "idle-$tr" --transport $tr --connections $IDLE_N --idle 3 --settle 2 --connect-rate 6000 --connect-timeout 60 || continue
            R[d.$kind.$tr.rss]=$(j rss_per_conn_bytes)
        done
    done
fi

if want e; then
    echo "== (e) deflate: $N subscribers, 1 KiB JSON, $((DEFLATE_RATE * 10000)) deliveries/s" >&2
    for i in $(seq "$REPEAT"); do
        for tr in ws ws-deflate; do
            run pe e "$tr$i" --transport $tr --connections $N --json1k --rate $((DEFLATE_RATE * SCALE)) --duration $STEP_S --connect-rate 8000 || continue
            clean || note "e $tr run $i: lost $(j lost)"
            if [ $tr = ws-deflate ]; then
                [ "$(j compressed_messages)" = 0 ] && note "e run $i: ws-deflate delivered no compressed message"
                [ "$(j deflate_refused)" != 0 ] && note "e run $i: $(j deflate_refused) connections refused deflate"
            fi
            c=$(j server_cpu_us_per_delivery)
            if [ -z "${R[e.pe.$tr.cpu]:-}" ] || awkf "exit !($c < ${R[e.pe.$tr.cpu]})"; then R[e.pe.$tr.cpu]=$c; fi
            R[e.pe.$tr.all]="${R[e.pe.$tr.all]:-}${R[e.pe.$tr.all]:+ / }$c"
        done
    done
fi

if want f; then
    echo "== (f) Redis engine: (a, ws) and (c), one and two nodes" >&2
    for kind in redis1 redis2; do
        fanout $kind ws f
        many $kind f
    done
fi

if want p; then
    echo "== (p) publishing: no subscribers, one channel, 100-byte JSON, h2load for ${PUB_S} s: h1 32 connections, h2 8 x 32 streams, batch 100 messages x 8 connections" >&2
    # 100 bytes of JSON, and a batch of 100 such messages to one channel.
    printf '{"n":1,"text":"%s"}' "$(printf 'x%.0s' $(seq 80))" >"$WORK/pub-body.json"
    { printf '['; for i in $(seq 100); do [ "$i" -gt 1 ] && printf ','; printf '{"channel":"bench","data":'; cat "$WORK/pub-body.json"; printf '}'; done; printf ']'; } >"$WORK/pub-batch.json"
    for i in $(seq "$REPEAT"); do
        for mode in h1 h2 batch; do
            [[ ",$PUB_MODES," == *",$mode,"* ]] || continue
            for target in pe peer redis1 nchan nchanredis nginx200 floor; do
                [[ ",$PUB_TARGETS," == *",$target,"* ]] || continue
                srv=$target path=/api/publish?channel=bench
                [ $mode = batch ] && path=/api/batch
                case $target in
                nchan | nchanredis)
                    [ $mode = batch ] && continue # no batch endpoint
                    srv=ngpub path=/pub/bench
                    [ $target = nchanredis ] && srv=ngpubredis ;;
                nginx200) srv=ngpub path=/floor ;;
                floor)
                    [ $mode = h2 ] && continue    # HTTP/1.1 only
                    path=/api/publish?channel=bench ;; # the batch body, published as one message
                esac
                P_TARGET=$target RUN_ONCE=prun_once run $srv p "$target-$mode$i" $mode "$path" || continue
                r=$(j publishes_per_s)
                R[p.$target.$mode.all]="${R[p.$target.$mode.all]:-}${R[p.$target.$mode.all]:+ / }$r"
                if [ -z "${R[p.$target.$mode]:-}" ] || [ "$r" -gt "${R[p.$target.$mode]}" ]; then
                    R[p.$target.$mode]=$r R[p.$target.$mode.cpu]=$(j server_cpu_us_per_publish) R[p.$target.$mode.gen]=$(j generator_cpu_cores)
                fi
            done
        done
    done
fi

if want growth; then
    echo "== growth: idle ws RSS and fan-out CPU at $GROWTH_NS connections" >&2
    echo "server,connections,idle_rss_per_conn_bytes,fanout_cpu_us_per_delivery,fanout_deliveries_per_s" >"$OUT/growth.csv"
    for kind in pe nchan; do
        for n in $GROWTH_NS; do
            rss='' cpu='' dps=''
            run $kind growth "idle$n" --transport ws --connections $n --idle 2 --settle 2 --connect-rate 6000 && rss=$(j rss_per_conn_bytes)
            rate=$(awkf "printf \"%.3f\", $GROWTH_DPS / $n")
            run $kind growth "fan$n" --transport ws --connections $n --rate "$rate" --duration $STEP_S --connect-rate 6000 &&
                { clean || note "growth $kind $n: lost $(j lost)"; cpu=$(j server_cpu_us_per_delivery) dps=$(j deliveries_per_s); }
            echo "$([ $kind = pe ] && echo pushedge || echo nchan),$n,$rss,$cpu,$dps" >>"$OUT/growth.csv"
        done
    done
    python3 - "$OUT/growth.csv" "$OUT/growth.svg" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
series = {}
for r in rows:
    series.setdefault(r["server"], []).append(r)
colors = {"pushedge": "#1f77b4", "nchan": "#d62728"}
W, H, PW, PH, ML, MT = 900, 380, 330, 250, 80, 50
panels = [("idle_rss_per_conn_bytes", "idle WebSocket: server RSS per connection (KiB)", 1 / 1024),
          ("fanout_cpu_us_per_delivery", "fan-out: server CPU per delivery (µs)", 1)]
xs = sorted({int(r["connections"]) for r in rows})
xmax = max(xs) if xs else 1
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
for i, (field, title, k) in enumerate(panels):
    x0 = ML + i * (PW + 120)
    vals = [float(r[field]) * k for r in rows if r[field] not in ("", "null")]
    ymax = max(vals) * 1.15 if vals else 1
    ymax = ymax if ymax > 0 else 1
    X = lambda v: x0 + v / xmax * PW
    Y = lambda v: MT + PH - v / ymax * PH
    out.append(f'<text x="{x0 + PW / 2}" y="{MT - 20}" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<line x1="{x0}" y1="{MT + PH}" x2="{x0 + PW}" y2="{MT + PH}" stroke="black"/>')
    out.append(f'<line x1="{x0}" y1="{MT}" x2="{x0}" y2="{MT + PH}" stroke="black"/>')
    for t in range(6):
        v = ymax * t / 5
        out.append(f'<line x1="{x0 - 4}" y1="{Y(v):.1f}" x2="{x0 + PW}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 8}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for x in xs:
        out.append(f'<text x="{X(x):.1f}" y="{MT + PH + 16}" text-anchor="middle">{x:,}</text>')
    out.append(f'<text x="{x0 + PW / 2}" y="{MT + PH + 34}" text-anchor="middle">connections</text>')
    for name, rs in series.items():
        pts = [(int(r["connections"]), float(r[field]) * k) for r in rs if r[field] not in ("", "null")]
        if not pts:
            continue
        c = colors.get(name, "black")
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="' +
                   " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"/>')
for j, name in enumerate(series):
    out.append(f'<rect x="{ML + j * 110}" y="{H - 18}" width="12" height="12" fill="{colors.get(name, "black")}"/>')
    out.append(f'<text x="{ML + j * 110 + 18}" y="{H - 8}">{name}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
fi

if want tls; then
    echo "== (tls) fan-out over TLS: $N subscribers, one channel, 128 B, rate ladder; pushedge and nchan, clear and TLS" >&2
    for tr in ws sse; do
        for kind in pe petls nchan nchantls; do PE_BIN=$PE_TLS fanout $kind $tr tls; done
    done
    # Where the time goes: one pushedge TLS ws run at 50k deliveries/s with the server sampled.
    if command -v perf >/dev/null && perf record -o "$WORK/perf.probe" -- true >/dev/null 2>&1; then
        PERF_DATA=$WORK/perf.data
        PE_BIN=$PE_TLS PROFILE=1 run petls tls-perf ws-r$((5 * SCALE)) --transport ws --connections $N --rate $((5 * SCALE)) \
            --duration $STEP_S --connect-rate 8000 --settle 2
        if [ -s "$PERF_DATA" ]; then
            {
                echo "# perf record -F 999 of pushedge (TLS, ws, $N subscribers, 50k deliveries/s) during the bench run"
                echo "## share of samples per library"
                perf report -i "$PERF_DATA" --stdio --no-children --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
                echo "## top symbols"
                perf report -i "$PERF_DATA" --stdio --no-children --sort dso,sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
            } >"$OUT/perf-tls-ws.txt"
        else
            note "tls: perf recorded nothing"
        fi
    else
        note "tls: perf is not usable here: no profile"
    fi
fi

# ---- table --------------------------------------------------------------------------------------
v() { echo "${R[$1]:-}"; }
fint() { [ -z "$1" ] && return; printf "%s" "$1" | awk '{ n = sprintf("%.0f", $1); s = ""; while (length(n) > 3) { s = "," substr(n, length(n) - 2) s; n = substr(n, 1, length(n) - 3) } printf "%s%s", n, s }'; }
fms() { [ -n "$1" ] && awkf "printf \"%.1f ms\", $1 / 1000"; }
fkib() { [ -n "$1" ] && awkf "printf \"%.1f KiB\", $1 / 1024"; }
fus() { [ -n "$1" ] && awkf "printf \"%.2f µs\", $1"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awkf "if ($2 != 0) printf \"%.2f\", $1 / $2"; }
rate_of() { [ -n "$(v "$1.rate")" ] && echo " @$(( $(v "$1.rate") / SCALE * 10000 / 1000 ))k"; }

TABLE=$OUT/table.md
{
    echo "machine: $MACHINE  "
    echo "versions: $VERSIONS  "
    echo "N = $N subscribers (idle: $IDLE_N); server on CPU 0, pushedge-bench --threads 1 on CPU 1; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); $(( ($(date +%s) - T0) / 60 )) min"
    if want a || want b || want c || want d || want e || want f; then
    echo
    echo "| scenario | metric | pushedge | nchan | floor | redis 1 node | redis 2 nodes | ratios | target |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for tr in ws sse; do
        pe=$(v a.pe.$tr.dps) nc=$(v a.nchan.$tr.dps) fl=$(v a.floor.$tr.dps)
        r1='' r2='' rr=''
        if [ $tr = ws ]; then
            r1=$(v f.redis1.ws.dps) r2=$(v f.redis2.ws.dps)
            rr="; memory/redis1 $(ratio "$pe" "$r1"), memory/redis2 $(ratio "$pe" "$r2")"
        fi
        echo "| (a) fan-out $tr, 128 B | deliveries/s, best lossless (@offered) | $(fint "$pe")$(rate_of a.pe.$tr) | $(fint "$nc")$(rate_of a.nchan.$tr) | $(fint "$fl")$(rate_of a.floor.$tr) | $(fint "$r1")$(rate_of f.redis1.$tr) | $(fint "$r2")$(rate_of f.redis2.$tr) | pe/nchan $(ratio "$pe" "$nc"), pe/floor $(ratio "$pe" "$fl")$rr | $([ $tr = ws ] && echo 'memory/redis <= 1.5') |"
    done
    echo "| (b) latency ws, 20k deliveries/s | p50 | $(fms "$(v b.pe.p50)") | $(fms "$(v b.nchan.p50)") | $(fms "$(v b.floor.p50)") | | | pe/floor $(ratio "$(v b.pe.p50)" "$(v b.floor.p50)"), pe/nchan $(ratio "$(v b.pe.p50)" "$(v b.nchan.p50)") | |"
    echo "| (b) latency ws, 20k deliveries/s | p99 | $(fms "$(v b.pe.p99)") | $(fms "$(v b.nchan.p99)") | $(fms "$(v b.floor.p99)") | | | pe/floor $(ratio "$(v b.pe.p99)" "$(v b.floor.p99)"), pe/nchan $(ratio "$(v b.pe.p99)" "$(v b.nchan.p99)") | pe/floor <= 1.2 |"
    echo "| (c) $N channels, 2,000 publishes/s | p50 | $(fms "$(v c.pe.p50)") | $(fms "$(v c.nchan.p50)") | | $(fms "$(v f.redis1.p50)") | $(fms "$(v f.redis2.p50)") | pe/nchan $(ratio "$(v c.pe.p50)" "$(v c.nchan.p50)") | |"
    echo "| (c) $N channels, 2,000 publishes/s | p99 | $(fms "$(v c.pe.p99)") | $(fms "$(v c.nchan.p99)") | | $(fms "$(v f.redis1.p99)") | $(fms "$(v f.redis2.p99)") | pe/nchan $(ratio "$(v c.pe.p99)" "$(v c.nchan.p99)"), redis1/memory $(ratio "$(v f.redis1.p99)" "$(v c.pe.p99)"), redis2/memory $(ratio "$(v f.redis2.p99)" "$(v c.pe.p99)") | p99 < 10 ms; redis/memory <= 1.5 |"
    echo "| (d) idle, $IDLE_N connections | RSS per WebSocket | $(fkib "$(v d.pe.ws.rss)") | $(fkib "$(v d.nchan.ws.rss)") | | | | pe/nchan $(ratio "$(v d.pe.ws.rss)" "$(v d.nchan.ws.rss)") | |"
    echo "| (d) idle, $IDLE_N connections | RSS per SSE stream | $(fkib "$(v d.pe.sse.rss)") | $(fkib "$(v d.nchan.sse.rss)") | | | | pe/nchan $(ratio "$(v d.pe.sse.rss)" "$(v d.nchan.sse.rss)") | <= 3 KiB (SSE) |"
    echo "| (e) 1 KiB JSON, $((DEFLATE_RATE * 10000 / 1000))k deliveries/s | server CPU per delivery, ws (runs: $(v e.pe.ws.all)) | $(fus "$(v e.pe.ws.cpu)") | | | | | | |"
    echo "| (e) 1 KiB JSON, $((DEFLATE_RATE * 10000 / 1000))k deliveries/s | server CPU per delivery, ws-deflate (runs: $(v e.pe.ws-deflate.all)) | $(fus "$(v e.pe.ws-deflate.cpu)") | | | | | deflate/plain $(ratio "$(v e.pe.ws-deflate.cpu)" "$(v e.pe.ws.cpu)") | <= 1.3 |"
    fi
    if want p; then
        echo
        echo "Publishing (p): no subscribers, one channel, 100-byte JSON; h2load on CPU 1 for $PUB_S s after 1 s of warm-up, best of $REPEAT (every run: its \"all\" list); the server side (Redis included) on CPU 0"
        echo
        echo "| publishes/s | pushedge memory | pushedge Redis | nchan memory | nchan Redis | nginx return 200 | pushedge-floor | ratios (goal) |"
        echo "|---|---|---|---|---|---|---|---|"
        pv() { fint "$(v "p.$1.$2")"; }
        pr() { ratio "$(v "p.$1.$3")" "$(v "p.$2.$3")"; }
        echo "| h1: HTTP/1.1, 32 connections | $(pv pe h1) | $(pv redis1 h1) | $(pv nchan h1) | $(pv nchanredis h1) | $(pv nginx200 h1) | $(pv floor h1) | memory/nginx200 $(pr pe nginx200 h1), memory/floor $(pr pe floor h1) (>= 0.9); Redis/nchan Redis $(pr redis1 nchanredis h1) (>= 2); memory/nchan $(pr pe nchan h1) |"
        echo "| h2: HTTP/2, 8 connections x 32 streams | $(pv pe h2) | $(pv redis1 h2) | $(pv nchan h2) | $(pv nchanredis h2) | $(pv nginx200 h2) | | memory $(pv pe h2) (>= 200,000); Redis/memory $(pr redis1 pe h2) (>= 0.5); memory/nginx200 $(pr pe nginx200 h2); Redis/nchan Redis $(pr redis1 nchanredis h2) |"
        echo "| batch: 100 messages per request, 8 connections (messages/s) | $(pv pe batch) | $(pv redis1 batch) | | | $(pv nginx200 batch) | $(pv floor batch) | memory $(pv pe batch) (>= 300,000), Redis $(pv redis1 batch) (>= 100,000) |"
        echo "| h1: server CPU per publish | $(fus "$(v p.pe.h1.cpu)") | $(fus "$(v p.redis1.h1.cpu)") | $(fus "$(v p.nchan.h1.cpu)") | $(fus "$(v p.nchanredis.h1.cpu)") | $(fus "$(v p.nginx200.h1.cpu)") | $(fus "$(v p.floor.h1.cpu)") | |"
        echo "| h2: server CPU per publish | $(fus "$(v p.pe.h2.cpu)") | $(fus "$(v p.redis1.h2.cpu)") | $(fus "$(v p.nchan.h2.cpu)") | $(fus "$(v p.nchanredis.h2.cpu)") | $(fus "$(v p.nginx200.h2.cpu)") | | |"
        echo "| batch: server CPU per message | $(fus "$(v p.pe.batch.cpu)") | $(fus "$(v p.redis1.batch.cpu)") | | | $(fus "$(v p.nginx200.batch.cpu)") | $(fus "$(v p.floor.batch.cpu)") | |"
        if [ -n "$PE_PEER" ]; then
            echo
            echo "Peer (--peer-build $PEER_BUILD, $("$PE_PEER" --version), memory engine), same run, interleaved: h1 $(pv peer h1) ($(fus "$(v p.peer.h1.cpu)")/publish; pushedge/peer $(pr pe peer h1)), h2 $(pv peer h2) ($(fus "$(v p.peer.h2.cpu)"); pushedge/peer $(pr pe peer h2)), batch $(pv peer batch) ($(fus "$(v p.peer.batch.cpu)"); pushedge/peer $(pr pe peer batch))"
        fi
        echo
        echo "Every run (publishes/s): $(for t in pe peer redis1 nchan nchanredis nginx200 floor; do for m in h1 h2 batch; do [ -n "$(v p.$t.$m.all)" ] && printf '%s %s: %s; ' $t $m "$(v p.$t.$m.all)"; done; done)"
    fi
    if want tls; then
        echo
        echo "TLS: $N subscribers on one channel, 128 B; subscribers over TLS (ECDSA P-256, $(jq -r 'select(.scenario == "tls" and .tls == true) | "\(.tls_protocol) \(.tls_cipher)"' "$RUNS" | head -n1)), publishes in clear text"
        echo
        echo "| transport | metric | pushedge clear | pushedge TLS | nchan clear | nchan TLS | pe TLS/clear (goal >= 0.6) | pe TLS/nchan TLS (goal >= 2) | nchan TLS/clear |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for tr in ws sse; do
            a=$(v tls.pe.$tr.dps) b=$(v tls.petls.$tr.dps) c=$(v tls.nchan.$tr.dps) d=$(v tls.nchantls.$tr.dps)
            echo "| $tr | deliveries/s, best lossless (@offered) | $(fint "$a")$(rate_of tls.pe.$tr) | $(fint "$b")$(rate_of tls.petls.$tr) | $(fint "$c")$(rate_of tls.nchan.$tr) | $(fint "$d")$(rate_of tls.nchantls.$tr) | $(ratio "$b" "$a") | $(ratio "$b" "$d") | $(ratio "$d" "$c") |"
            a=$(v tls.pe.$tr.p99at50k) b=$(v tls.petls.$tr.p99at50k) c=$(v tls.nchan.$tr.p99at50k) d=$(v tls.nchantls.$tr.p99at50k)
            echo "| $tr | p99 at 50k deliveries/s | $(fms "$a") | $(fms "$b") | $(fms "$c") | $(fms "$d") | $(ratio "$b" "$a") | $(ratio "$b" "$d") | $(ratio "$d" "$c") |"
            a=$(v tls.pe.$tr.cpu50k) b=$(v tls.petls.$tr.cpu50k) c=$(v tls.nchan.$tr.cpu50k) d=$(v tls.nchantls.$tr.cpu50k)
            echo "| $tr | server CPU per delivery at 50k/s | $(fus "$a") | $(fus "$b") | $(fus "$c") | $(fus "$d") | $(ratio "$b" "$a") | $(ratio "$b" "$d") | $(ratio "$d" "$c") |"
            a=$(v tls.pe.$tr.gen50k) b=$(v tls.petls.$tr.gen50k) c=$(v tls.nchan.$tr.gen50k) d=$(v tls.nchantls.$tr.gen50k)
            echo "| $tr | generator CPU per delivery at 50k/s | $(fus "$a") | $(fus "$b") | $(fus "$c") | $(fus "$d") | | | |"
            a=$(v tls.pe.$tr.gencores) b=$(v tls.petls.$tr.gencores) c=$(v tls.nchan.$tr.gencores) d=$(v tls.nchantls.$tr.gencores)
            echo "| $tr | generator cores busy at the best step (of 1) | $a | $b | $c | $d | | | |"
        done
        [ -f "$OUT/perf-tls-ws.txt" ] && echo && echo "Where pushedge's TLS time goes: perf-tls-ws.txt"
    fi
    if [ -f "$OUT/growth.csv" ] && want growth; then
        echo
        echo "Cost growth (growth.csv, growth.svg): idle ws RSS per connection / fan-out server CPU per delivery at $((GROWTH_DPS / 1000))k deliveries/s"
        echo
        echo "| connections | pushedge RSS | pushedge CPU | nchan RSS | nchan CPU |"
        echo "|---|---|---|---|---|"
        for n in $GROWTH_NS; do
            p=$(awk -F, -v n=$n '$1 == "pushedge" && $2 == n' "$OUT/growth.csv") q=$(awk -F, -v n=$n '$1 == "nchan" && $2 == n' "$OUT/growth.csv")
            echo "| $(fint $n) | $(fkib "$(echo "$p" | cut -d, -f3)") | $(fus "$(echo "$p" | cut -d, -f4)") | $(fkib "$(echo "$q" | cut -d, -f3)") | $(fus "$(echo "$q" | cut -d, -f4)") |"
        done
    fi
    if [ ${#NOTES[@]} -gt 0 ]; then
        echo
        echo "Notes:"
        for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
} >"$TABLE"
cat "$TABLE"
echo "(every run: $RUNS; table: $TABLE)" >&2

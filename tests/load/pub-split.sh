#!/usr/bin/env bash
# pub-split.sh: where a publish's CPU goes when pushedge and its Redis share one core: the node's
# and redis-server's CPU per publish, measured apart (compare.sh's p scenario reports their sum).
#
#   tests/load/pub-split.sh [--bin build-rel/edge/pushedge] [--seconds 4] [--repeat 3]
#                           [--mode h2|h1|batch] [--engines memory,redis]
#
# Per repeat and engine: a fresh redis-server (redis engine only) and a fresh pushedge --threads 1,
# both on CPU 0; h2load (nghttp2-client) on CPU 1 (h2: 8 connections x 32 streams; h1: 32
# HTTP/1.1 keep-alive connections; batch: POST /api/batch of 100 messages, 8 HTTP/1.1
# connections), 100-byte JSON to one channel, no subscribers; 1 s of load first (not counted),
# then --seconds measured. CPU from /proc/PID/stat (user + system ticks). Prints one line per run:
#   ENGINE MODE publishes/s node-us/publish redis-us/publish total-us/publish
# Bounded: every h2load run is limited by its own -D and by timeout; the servers are stopped by
# PID at exit. Loopback only.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/build-rel/edge/pushedge
SECS=4
REPEAT=3
MODE=h2
ENGINES=memory,redis
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --engines) ENGINES=$2; shift 2 ;;
    *) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
command -v h2load >/dev/null || { echo "pub-split.sh: needs h2load (apt-get install nghttp2-client)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "pub-split.sh: no pushedge at $BIN (meson compile -C build-rel)" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
printf '{"n":1,"text":"%s"}' "$(printf 'x%.0s' $(seq 80))" >"$WORK/body.json"
{ printf '['; for i in $(seq 100); do [ "$i" -gt 1 ] && printf ','; printf '{"channel":"bench","data":'; cat "$WORK/body.json"; printf '}'; done; printf ']'; } >"$WORK/batch.json"
HZ=$(getconf CLK_TCK)

one_run() { # ENGINE
    local engine=$1 rpid= ppid port rport args=() body=$WORK/body.json path='/api/publish?channel=bench' per=1
    port=$(free_port)
    if [ "$engine" = redis ]; then
        rport=$(free_port)
        taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
        rpid=$!
        PIDS+=("$rpid")
        for _ in $(seq 50); do [ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
        taskset -c 0 "$BIN" --threads 1 --listen "127.0.0.1:$port" --log-level warn --redis "redis://127.0.0.1:$rport" >"$WORK/pe.log" 2>&1 &
    else
        taskset -c 0 "$BIN" --threads 1 --listen "127.0.0.1:$port" --log-level warn >"$WORK/pe.log" 2>&1 &
    fi
    ppid=$!
    PIDS+=("$ppid")
    for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
    case $MODE in
    h1) args=(--h1 -c 32 -m 1) ;;
    h2) args=(-c 8 -m 32) ;;
    batch) args=(--h1 -c 8 -m 1) body=$WORK/batch.json path=/api/batch per=100 ;;
    esac
    local url="http://127.0.0.1:$port$path"
    timeout 30 taskset -c 1 h2load "${args[@]}" -t 1 -D 1 -d "$body" -H 'content-type: application/json' "$url" >/dev/null 2>&1
    local r0=0 r1=0 p0 p1 n
    [ -n "$rpid" ] && r0=$(ticks "$rpid")
    p0=$(ticks "$ppid")
    timeout $((SECS + 30)) taskset -c 1 h2load "${args[@]}" -t 1 -D "$SECS" -d "$body" -H 'content-type: application/json' "$url" >"$WORK/h2load.out" 2>&1
    [ -n "$rpid" ] && r1=$(ticks "$rpid")
    p1=$(ticks "$ppid")
    n=$(awk '/status codes:/ { print $3 }' "$WORK/h2load.out")
    kill "$ppid" 2>/dev/null; wait "$ppid" 2>/dev/null
    [ -n "$rpid" ] && { kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; }
    PIDS=()
    awk -v e="$engine" -v m="$MODE" -v n="${n:-0}" -v per=$per -v s="$SECS" -v r=$((r1 - r0)) -v p=$((p1 - p0)) -v hz="$HZ" 'BEGIN {
        msgs = n * per
        if (msgs == 0) { printf "%-6s %-5s no 2xx answers\n", e, m; exit }
        printf "%-6s %-5s %9d publishes/s  node %.2f  redis %.2f  total %.2f us/publish\n", e, m, msgs / s, p * 1e6 / hz / msgs, r * 1e6 / hz / msgs, (p + r) * 1e6 / hz / msgs
    }'
}

for _ in $(seq "$REPEAT"); do
    for e in ${ENGINES//,/ }; do one_run "$e"; done
done

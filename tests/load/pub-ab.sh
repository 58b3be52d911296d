#!/usr/bin/env bash
# pub-ab.sh: publishing throughput of two pushedge builds, before and after, interleaved in one
# run (issue 17): each round runs every (engine, load) pair on the "before" build, then at once
# on the "after" build, so that both see the same machine; the shared machine's drift then shows
# between rounds, not between the two builds.
#
#   tests/load/pub-ab.sh --before DIR --after DIR [--rounds 3] [--seconds 3]
#                        [--loads h1,h2,batch] [--engines memory,redis] [--out FILE]
#   tests/load/pub-ab.sh --after DIR ...   (one build alone: where its CPU goes)
#
# DIR is a build directory holding edge/pushedge (e.g. `git archive <commit> | tar -x -C SRC;
# meson setup SRC/build-rel SRC --buildtype=release -De2e=false; meson compile -C SRC/build-rel`).
# Each run: a fresh redis-server (engine redis; --save '' --appendonly no) and a fresh
# `pushedge --threads 1`, both pinned to CPU 0; h2load (nghttp2-client) pinned to CPU 1, a 1 s
# warm-up run then a measured run of --seconds, one channel, no subscribers, 100-byte JSON:
#   h1     32 HTTP/1.1 keep-alive connections, one request at a time each
#   h2     8 HTTP/2 connections x 32 concurrent streams
#   batch  POST /api/batch with 100 messages (one channel) per request, 8 HTTP/1.1 connections
# Reported per run: messages/s answered 2xx, and the server side's CPU per message (pushedge and
# redis-server, from /proc/PID/stat over the measured run, per message answered in it). Without
# --before, each run of the one build is reported with the node's and redis-server's CPU per
# message apart (they share CPU 0, so half the memory engine's rate through Redis, say, means both
# together at twice its CPU per message). Run it under the bench lock:
# flock /tmp/pushedge-bench.lock tests/load/pub-ab.sh ...
# Bounded: every h2load run is killed after --seconds + 30 s; servers are stopped by PID.
set -uo pipefail

BEFORE= AFTER= ROUNDS=3 SECS=3 LOADS=h1,h2,batch ENGINES=memory,redis OUT=
while [ $# -gt 0 ]; do
    case $1 in
    --before) BEFORE=${2:?}; shift ;;
    --after) AFTER=${2:?}; shift ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --seconds) SECS=${2:?}; shift ;;
    --loads) LOADS=${2:?}; shift ;;
    --engines) ENGINES=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    *) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done
[ -z "$BEFORE" ] || [ -x "$BEFORE/edge/pushedge" ] || { echo "pub-ab.sh: --before must be a build directory with edge/pushedge" >&2; exit 2; }
[ -x "$AFTER/edge/pushedge" ] || { echo "pub-ab.sh: --after must be a build directory with edge/pushedge" >&2; exit 2; }
command -v h2load >/dev/null || { echo "pub-ab.sh: needs h2load (apt-get install nghttp2-client)" >&2; exit 2; }
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] && [ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] || { echo "pub-ab.sh: --rounds 1-10, --seconds 1-60" >&2; exit 2; }

WORK=$(mktemp -d /tmp/pub-ab.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
printf '{"n":1,"text":"%s"}' "$(printf 'x%.0s' $(seq 80))" >"$WORK/body.json"
{ printf '['; for i in $(seq 100); do [ "$i" -gt 1 ] && printf ','; printf '{"channel":"bench","data":'; cat "$WORK/body.json"; printf '}'; done; printf ']'; } >"$WORK/batch.json"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
stop() { local p; for p in "$@"; do kill "$p" 2>/dev/null; done; for p in "$@"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null; done; PIDS=(); }

# run BUILD ENGINE LOAD -> prints "messages/s cpu_us_per_message node_us redis_us"
run() {
    local build=$1 engine=$2 load=$3 rport='' rpid='' pport ppid args=() url body per=1
    pport=$(free_port)
    if [ "$engine" = redis ]; then
        rport=$(free_port)
        taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
        rpid=$!
        PIDS+=("$rpid")
        for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
        args=(--redis "redis://127.0.0.1:$rport")
    fi
    taskset -c 0 "$build/edge/pushedge" --listen "127.0.0.1:$pport" --threads 1 "${args[@]}" >"$WORK/pe.log" 2>&1 &
    ppid=$!
    PIDS+=("$ppid")
    for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pport/readyz")" = 200 ] && break; sleep 0.1; done
    url="http://127.0.0.1:$pport/api/publish?channel=bench" body=$WORK/body.json
    case $load in
    h1) args=(--h1 -c 32 -m 1) ;;
    h2) args=(-c 8 -m 32) ;;
    batch) args=(--h1 -c 8 -m 1) url="http://127.0.0.1:$pport/api/batch" body=$WORK/batch.json per=100 ;;
    esac
    local pids=("$ppid") t0 t1 n0 n1
    [ -n "$rpid" ] && pids+=("$rpid")
    # Warm-up: a run of its own, not counted (connections, the stream's first 1,000 entries).
    timeout 30 taskset -c 1 h2load "${args[@]}" -t 1 -D 1 -d "$body" -H 'content-type: application/json' "$url" >/dev/null 2>&1
    t0=$(ticks "${pids[@]}") n0=$(ticks "$ppid")
    timeout $((SECS + 30)) taskset -c 1 h2load "${args[@]}" -t 1 -D "$SECS" -d "$body" \
        -H 'content-type: application/json' "$url" >"$WORK/h2load.out" 2>&1
    t1=$(ticks "${pids[@]}") n1=$(ticks "$ppid")
    stop "${pids[@]}"
    local secs ok
    secs=$(sed -n 's/^finished in \([0-9.]*\)\(m\{0,1\}s\),.*/\1 \2/p' "$WORK/h2load.out" | awk '{ print ($2 == "ms" ? $1 / 1000 : $1) }')
    ok=$(awk '/^status codes:/ { gsub(",", ""); print $3 }' "$WORK/h2load.out")
    if [ -z "$secs" ] || [ -z "$ok" ]; then
        echo "- - - -"
        return
    fi
    # CPU over the measured run per message answered 2xx in it (connection set-up and the
    # ramp-up of the first requests are in it; the warm-up run is not).
    awk -v ok="$ok" -v secs="$secs" -v per="$per" -v t="$((t1 - t0))" -v n="$((n1 - n0))" -v hz="$HZ" 'BEGIN {
        rate = ok * per / secs; msgs = ok * per; us = (msgs > 0 ? 1e6 / hz / msgs : 0)
        printf "%.0f %.2f %.2f %.2f\n", rate, t * us, n * us, (t - n) * us }'
}

# one_line ROUND ENGINE LOAD -> the table's line for one (engine, load) pair of a round
one_line() {
    local a ac an ar b bc
    if [ -z "$BEFORE" ]; then
        read -r a ac an ar < <(run "$AFTER" "$2" "$3")
        printf '%-6s %-7s %-6s %12s %10s %10s %10s' "$1" "$2" "$3" "$a" "$an" "$ar" "$ac"
        return
    fi
    read -r b bc _ < <(run "$BEFORE" "$2" "$3")
    read -r a ac _ < <(run "$AFTER" "$2" "$3")
    printf '%-6s %-7s %-6s %12s %12s %7s %14s %14s' "$1" "$2" "$3" "$b" "$a" \
        "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')" "$bc" "$ac"
}

START="$ROUNDS rounds, $SECS s per run; load at start $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')"
if [ -z "$BEFORE" ]; then
    echo "pub-ab: $AFTER ($("$AFTER/edge/pushedge" --version)) alone; $START"
    printf '%-6s %-7s %-6s %12s %10s %10s %10s\n' round engine load messages/s node_us redis_us total_us
else
    echo "pub-ab: before $BEFORE ($("$BEFORE/edge/pushedge" --version)), after $AFTER ($("$AFTER/edge/pushedge" --version)); $START"
    printf '%-6s %-7s %-6s %12s %12s %7s %14s %14s\n' round engine load before/s after/s ratio cpu_before_us cpu_after_us
fi
for r in $(seq "$ROUNDS"); do
    for engine in ${ENGINES//,/ }; do
        for load in ${LOADS//,/ }; do
            line=$(one_line "$r" "$engine" "$load")
            echo "$line"
            [ -n "$OUT" ] && echo "$line" >>"$OUT"
        done
    done
done
echo "load at end $(cut -d' ' -f1-3 /proc/loadavg)"

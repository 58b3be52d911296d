#!/usr/bin/env bash
# auth_bench.sh: what identity costs (issue 13 item 9), in one run on one machine.
#
#   tests/load/auth_bench.sh [--build DIR] [--rounds R] [--duration S] [--concurrency C]
#                            [--fanout-connections N] [--fanout-messages M] [--fanout-rate R]
#                            [--out FILE]
#
# (a) New connections per second: WebSocket handshakes subscribing to one channel, the token in
#     the query (?token=), closed at once by the client (tests/load/connrate.c), against
#       off     pushedge --auth off (no token),
#       anon    pushedge --auth optional, no token, a --public-channel (the token lookup only),
#       HS256, RS256 (2048-bit), ES256 (P-256)   the same server, a valid token each,
#     R rounds, the modes interleaved within each round so that the machine's load hits them
#     alike. The rate is handshakes per second of server CPU (connrate's
#     per_server_cpu_second): with --threads 1 that is what one core sustains, and it does not
#     depend on how busy the rest of the machine is, which the wall rate does. Reported: the
#     median over the rounds, and each mode as a ratio to `off` within the same round (median).
# (b) Fan-out with auth on versus off: pushedge-bench, N WebSocket subscribers on one channel
#     (with a token each on the auth server), M messages at R/s; server CPU per delivery, auth
#     server / off server, per round (median).
#
# Servers: build-rel/edge/pushedge --threads 1 pinned to CPU 0 (taskset), the generators to
# CPU 1. Tokens minted by PyJWT (tests/e2e/jwt_mint.py, Debian python3-jwt), keys made by openssl
# here, in a temporary directory removed at exit. Every number is printed and appended as JSON
# lines to --out (default build-rel/auth-bench-<time>.jsonl).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build-rel
ROUNDS=3
DURATION=4
CONCURRENCY=32
FAN_N=2000
FAN_M=300
FAN_RATE=50
OUT=
usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --fanout-connections) FAN_N=$2; shift 2 ;;
    --fanout-messages) FAN_M=$2; shift 2 ;;
    --fanout-rate) FAN_RATE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "auth_bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
PE=$BUILD/edge/pushedge
CONNRATE=$BUILD/tests/load/connrate
BENCH=$BUILD/tests/load/pushedge-bench
for b in "$PE" "$CONNRATE" "$BENCH"; do
    [ -x "$b" ] || { echo "auth_bench.sh: $b is missing: meson setup $BUILD --buildtype=release && ninja -C $BUILD" >&2; exit 2; }
done
PY=
for p in python3 /usr/bin/python3; do
    "$p" -c 'import jwt, cryptography' 2>/dev/null && { PY=$p; break; }
done
[ -n "$PY" ] || { echo "auth_bench.sh: python3-jwt (PyJWT) is needed to mint the tokens" >&2; exit 2; }
command -v jq >/dev/null || { echo "auth_bench.sh: jq is needed" >&2; exit 2; }
[ -n "$OUT" ] || OUT=$BUILD/auth-bench-$(date -u +%Y%m%dT%H%M%SZ).jsonl
PIN_S=() PIN_G=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_G=(taskset -c 1); fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pushedge-authbench.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- keys and tokens ---------------------------------------------------------------------------
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.key" 2>/dev/null &&
    openssl pkey -in "$WORK/rsa.key" -pubout -out "$WORK/rsa.pub" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/ec.key" 2>/dev/null &&
    openssl pkey -in "$WORK/ec.key" -pubout -out "$WORK/ec.pub" ||
    { echo "auth_bench.sh: openssl could not make the keys" >&2; exit 1; }
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
EXP=$(( $(date +%s) + 86400 ))
CLAIMS="{\"sub\":\"bench\",\"exp\":$EXP,\"channels\":[\"*\"]}"
TOKENS=$(printf '[{"kind":"token","alg":"HS256","secret":"%s","claims":%s},{"kind":"token","alg":"RS256","key":"%s","claims":%s},{"kind":"token","alg":"ES256","key":"%s","claims":%s}]' \
    "$SECRET" "$CLAIMS" "$WORK/rsa.key" "$CLAIMS" "$WORK/ec.key" "$CLAIMS" | "$PY" "$ROOT/tests/e2e/jwt_mint.py") ||
    { echo "auth_bench.sh: minting failed" >&2; exit 1; }
declare -A TOKEN
TOKEN[HS256]=$(jq -r '.[0]' <<<"$TOKENS")
TOKEN[RS256]=$(jq -r '.[1]' <<<"$TOKENS")
TOKEN[ES256]=$(jq -r '.[2]' <<<"$TOKENS")

# ---- servers -------------------------------------------------------------------------------------
PORT_NEXT=$((24000 + RANDOM % 4000))
next_port() {
    while :; do
        PORT_NEXT=$((PORT_NEXT + 1))
        [ $PORT_NEXT -ge 32000 ] && PORT_NEXT=24000
        (exec 3<>/dev/tcp/127.0.0.1/$PORT_NEXT) 2>/dev/null || break
    done
    PORT=$PORT_NEXT
}
start() { # NAME [VAR=value...] args...: sets <NAME>_PORT and <NAME>_PID
    local name=$1 i envs=()
    shift
    while [[ ${1:-} == *=* && ${1:-} != -* ]]; do envs+=("$1"); shift; done
    next_port
    env "${envs[@]}" "${PIN_S[@]}" "$PE" --threads 1 --listen 127.0.0.1:$PORT --log-level warn --drain-timeout 1 "$@" \
        >"$WORK/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for i in $(seq 100); do
        curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    printf -v "${name}_PORT" %s "$PORT"
    printf -v "${name}_PID" %s "$pid"
}
start OFF
# The secret through the environment, as docs/security.md advises (not on the command line).
start AUTH PUSHEDGE_JWT_SECRET="$SECRET" --auth optional --jwt-key "$WORK/rsa.pub" --jwt-key "$WORK/ec.pub" --public-channel 'anon.*'

echo "auth_bench: pushedge $("$PE" --version 2>&1 | head -1); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "auth_bench: results also in $OUT" >&2

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- (a) connections per second ----------------------------------------------------------------
MODES=(off anon HS256 RS256 ES256)
declare -A RATE RATIO
for r in $(seq "$ROUNDS"); do
    declare -A this=()
    for m in "${MODES[@]}"; do
        case $m in
        off) port=$OFF_PORT pid=$OFF_PID path="/ws?channel=bench" ;;
        anon) port=$AUTH_PORT pid=$AUTH_PID path="/ws?channel=anon.bench" ;;
        *) port=$AUTH_PORT pid=$AUTH_PID path="/ws?channel=bench&token=${TOKEN[$m]}" ;;
        esac
        line=$("${PIN_G[@]}" "$CONNRATE" --url "http://127.0.0.1:$port" --path "$path" --concurrency "$CONCURRENCY" \
            --warmup 1 --duration "$DURATION" --server-pid "$pid") || { echo "auth_bench.sh: connrate $m failed: $line" >&2; exit 1; }
        jq -c --arg mode "$m" --argjson round "$r" '{phase: "connrate", mode: $mode, round: $round} + .' <<<"$line" >>"$OUT"
        v=$(jq -r '.per_server_cpu_second' <<<"$line")
        this[$m]=$v
        RATE[$m]="${RATE[$m]:-} $v"
        printf 'round %d %-6s %8.0f handshakes per server-CPU second  (%6.0f/s wall, server %.2f cores, p99 %s us)\n' "$r" "$m" "$v" \
            "$(jq -r .per_second <<<"$line")" "$(jq -r .server_cpu_cores <<<"$line")" "$(jq -r .latency_us.p99 <<<"$line")"
    done
    for m in "${MODES[@]}"; do
        RATIO[$m]="${RATIO[$m]:-} $(awk -v a="${this[$m]}" -v b="${this[off]}" 'BEGIN { printf "%.3f", a / b }')"
    done
done
echo
echo "(a) new WebSocket connections per second per core (median of $ROUNDS rounds), ratio to --auth off within a round (median):"
for m in "${MODES[@]}"; do
    med=$(tr ' ' '\n' <<<"${RATE[$m]}" | grep . | median)
    rat=$(tr ' ' '\n' <<<"${RATIO[$m]}" | grep . | median)
    printf '  %-6s %8.0f /s   x%s   (rounds:%s)\n' "$m" "$med" "$rat" "${RATE[$m]}"
    jq -nc --arg mode "$m" --argjson rate "$med" --argjson ratio "$rat" '{phase: "connrate-summary", mode: $mode, per_core: $rate, ratio_to_off: $ratio}' >>"$OUT"
done

# ---- (b) fan-out with auth on and off --------------------------------------------------------------
echo
FAN_RATIOS=
for r in $(seq "$ROUNDS"); do
    declare -A cpu=()
    for m in off HS256; do
        if [ $m = off ]; then
            port=$OFF_PORT pid=$OFF_PID sub='/ws?channel={channel}'
        else
            port=$AUTH_PORT pid=$AUTH_PID sub="/ws?channel={channel}&token=${TOKEN[HS256]}"
        fi
        line=$("${PIN_G[@]}" "$BENCH" --url "http://127.0.0.1:$port" --transport ws --connections "$FAN_N" --channels 1 \
            --messages "$FAN_M" --rate "$FAN_RATE" --sub-path "$sub" --ready ack --threads 1 --server-pid "$pid" --timeout 120 2>"$WORK/bench.log")
        [ -n "$line" ] || { echo "auth_bench.sh: pushedge-bench failed:" >&2; tail -5 "$WORK/bench.log" >&2; exit 1; }
        jq -c --arg mode "$m" --argjson round "$r" '{phase: "fanout", mode: $mode, round: $round} + .' <<<"$line" >>"$OUT"
        cpu[$m]=$(jq -r '.server_cpu_us_per_delivery' <<<"$line")
        printf 'round %d fan-out %-5s %d subscribers: %s deliveries, lost %s, server %.3f us CPU per delivery, p99 %s us\n' "$r" "$m" "$FAN_N" \
            "$(jq -r .deliveries <<<"$line")" "$(jq -r .lost <<<"$line")" "${cpu[$m]}" "$(jq -r '.latency_us.p99 // "?"' <<<"$line")"
    done
    FAN_RATIOS="$FAN_RATIOS $(awk -v a="${cpu[HS256]}" -v b="${cpu[off]}" 'BEGIN { printf "%.3f", a / b }')"
done
rat=$(tr ' ' '\n' <<<"$FAN_RATIOS" | grep . | median)
echo
echo "(b) fan-out server CPU per delivery, auth (HS256 tokens) / off: x$rat (median; rounds:$FAN_RATIOS)"
jq -nc --argjson ratio "$rat" '{phase: "fanout-summary", cpu_per_delivery_auth_over_off: $ratio}' >>"$OUT"

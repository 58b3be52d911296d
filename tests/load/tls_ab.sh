#!/usr/bin/env bash
# tls_ab.sh: two pushedge binaries against each other on one TLS fan-out step, interleaved
# (A, B, A, B, ...), for changes whose effect is smaller than the noise between separate runs
# (docs/benchmarks.md "TLS: fan-out").
#
#   flock /tmp/pushedge-bench.lock tests/load/tls_ab.sh BIN_A BIN_B [REPEAT=3] [RATE=10] [N=10000] [TRANSPORT=ws]
#
# Each run: a fresh pushedge (--threads 1, memory engine, --listen plus --listen-tls with a
# throwaway P-256 certificate made here) on CPU 0; build-rel's pushedge-bench (--threads 1) on
# CPU 1 with N TLS subscribers on one channel, RATE messages/s of 128 B for 10 s (publishes in
# clear text). Prints one line per run: deliveries/s, loss, p99, server CPU per delivery and
# server RSS per connection at the end (busy connections). Bounded: every run under timeout.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
A=${1:?BIN_A} B=${2:?BIN_B} REPEAT=${3:-3} RATE=${4:-10} N=${5:-10000} TR=${6:-ws}
BENCH=$ROOT/build-rel/tests/load/pushedge-bench
[ -x "$BENCH" ] || { echo "tls_ab.sh: build $BENCH first" >&2; exit 1; }
WORK=$(mktemp -d)
SRV=
cleanup() {
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
    -days 1 -subj /CN=localhost 2>/dev/null || exit 1
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

one() { # LABEL BIN
    local p t
    p=$(port) t=$(port)
    taskset -c 0 "$2" --threads 1 --listen 127.0.0.1:$p --listen-tls 127.0.0.1:$t --tls-cert "$WORK/cert.pem" \
        --tls-key "$WORK/key.pem" --log-level warn &
    SRV=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    timeout 150 taskset -c 1 "$BENCH" --threads 1 --timeout 120 --url "http://127.0.0.1:$p" --sub-url "https://127.0.0.1:$t" \
        --server-pid "$SRV" --transport "$TR" --connections "$N" --rate "$RATE" --duration 10 --connect-rate 8000 \
        >"$WORK/out.json" 2>"$WORK/err.txt"
    kill "$SRV" 2>/dev/null
    wait "$SRV" 2>/dev/null
    SRV=
    jq -r --arg l "$1" '"\($l): \(.deliveries_per_s|floor) deliveries/s, lost \(.lost), p99 \(.latency_us.p99/1000) ms, cpu/delivery \(.server_cpu_us_per_delivery) us, rss/conn \(.rss_per_conn_bytes) B"' \
        "$WORK/out.json" 2>/dev/null || { echo "$1: no result"; tail -3 "$WORK/err.txt"; }
}

for i in $(seq "$REPEAT"); do
    one "A#$i" "$A"
    one "B#$i" "$B"
done

#!/usr/bin/env bash
# The soak: pushedge at its default thread count (one per core) for tens of minutes under
# steady mixed load, checking that it neither loses, repeats nor leaks anything and exits clean.
#
#   tests/load/soak.sh asan [MINUTES]      ASan+UBSan build (build-test), 30 minutes by default
#   tests/load/soak.sh release [MINUTES]   release build (build-rel), 10 minutes by default
#
# Load: four pushedge-bench runs at once, one per transport (WebSocket, WebSocket with
# permessage-deflate, SSE, long-poll), each with its own channels. Every subscriber closes after
# a random 0.5-1.5 x SOAK_CHURN seconds and reconnects resuming from its cursor (--churn), so
# connections come and go all along while publishes arrive at a steady rate; each run counts
# what every subscriber received against what was published (lost, duplicated).
#
# Memory: the server's VmRSS every 10 s. After SOAK_WARMUP seconds (the history has filled to
# --history-size per channel and the allocators have their working set), the median of the last
# third of the samples may exceed the median of the first third by at most SOAK_RSS_BOUND_PCT %
# or SOAK_RSS_BOUND_MIB MiB, whichever is larger; more is growth.
#
# Verdict (last line, exit status 0 only on PASS): every run ended in time with no loss, no
# duplicate, no publish or protocol error and no gap; no sanitizer report; the server exited 0
# after SIGTERM; memory flat.
#
# Knobs (environment; the defaults are what docs/benchmarks.md reports):
#   SOAK_CONNECTIONS=250 per transport   SOAK_CHANNELS=5 per transport   SOAK_RATE=25 messages/s
#   per transport   SOAK_SIZE=256 bytes   SOAK_CHURN=5 s   SOAK_HISTORY=250 messages per channel
#   SOAK_WARMUP=120 s   SOAK_RSS_BOUND_PCT=10   SOAK_RSS_BOUND_MIB=8   SOAK_DIR=logs (mktemp -d)
#   PUSHEDGE_BIN, PUSHEDGE_BENCH: executables to use instead of building.
# Loopback only; bounded: at most 240 minutes, every bench run has a --timeout.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:-}
case "$mode" in
asan) minutes=${2:-30} ;;
release) minutes=${2:-10} ;;
*)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ] || [ "$minutes" -gt 240 ]; then
    echo "soak: MINUTES must be 1-240" >&2
    exit 2
fi

conns=${SOAK_CONNECTIONS:-250}
channels=${SOAK_CHANNELS:-5}
rate=${SOAK_RATE:-25}
size=${SOAK_SIZE:-256}
churn=${SOAK_CHURN:-5}
history=${SOAK_HISTORY:-250}
warmup=${SOAK_WARMUP:-120}
bound_pct=${SOAK_RSS_BOUND_PCT:-10}
bound_mib=${SOAK_RSS_BOUND_MIB:-8}
dir=${SOAK_DIR:-$(mktemp -d /tmp/pushedge-soak.XXXXXX)}
mkdir -p "$dir"
duration=$((minutes * 60))

# ---- build ----
if [ -z "${PUSHEDGE_BENCH:-}" ] || { [ "$mode" = release ] && [ -z "${PUSHEDGE_BIN:-}" ]; }; then
    [ -f build-rel/build.ninja ] || meson setup build-rel --buildtype=release -De2e=false >/dev/null
    meson compile -C build-rel >/dev/null
fi
bench=${PUSHEDGE_BENCH:-build-rel/tests/load/pushedge-bench}
if [ -z "${PUSHEDGE_BIN:-}" ] && [ "$mode" = asan ]; then
    # The same build as tests/run.sh's.
    [ -f build-test/build.ninja ] || meson setup build-test -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
    meson compile -C build-test >/dev/null
fi
bin=${PUSHEDGE_BIN:-$([ "$mode" = asan ] && echo build-test/edge/pushedge || echo build-rel/edge/pushedge)}

# ---- server ----
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
# A 32 MiB quarantine (ASan's default is 256 MiB) still catches a use of recently freed memory,
# and fills within the warm-up, so that the quarantine filling up is not mistaken for growth.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:quarantine_size_mb=32}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$bin" --listen "127.0.0.1:$port" --history-size "$history" >"$dir/server.log" 2>&1 &
server=$!
bench_pids=()
stop_all() {
    for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    kill "$server" 2>/dev/null || true
}
trap stop_all EXIT
for _ in $(seq 100); do
    curl -sf -o /dev/null "$url/healthz" && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.2
done
curl -sf -o /dev/null "$url/healthz" || {
    cat "$dir/server.log"
    echo "soak: FAIL: the server did not start"
    exit 1
}
threads=$(grep -o '([0-9]* threads' "$dir/server.log" | head -1 | tr -dc 0-9)
echo "soak: $mode, $bin on $url, ${threads:-?} threads (cores: $(nproc)), $minutes min; logs in $dir"
echo "soak: per transport $conns subscribers on $channels channels, $rate messages/s of $size bytes, churn ${churn} s; history $history"

# ---- load ----
for tr in ws ws-deflate sse poll; do
    "$bench" --url "$url" --transport "$tr" --connections "$conns" --channels "$channels" --rate "$rate" \
        --duration "$duration" --size "$size" --churn "$churn" --connect-rate 500 --drain-wait 30 \
        --timeout $((duration + 300)) >"$dir/bench-$tr.json" 2>"$dir/bench-$tr.log" &
    bench_pids+=($!)
done

# ---- samples: VmRSS and CPU every 10 s while the runs last ----
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat" 2>/dev/null || echo -1; }
hz=$(getconf CLK_TCK)
start=$(date +%s)
cpu0=$(cpu_ticks)
: >"$dir/rss.tsv"
running() {
    for p in "${bench_pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}
next=$start
while running && kill -0 "$server" 2>/dev/null; do
    now=$(date +%s)
    if [ "$now" -ge "$next" ]; then
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status" 2>/dev/null || echo -1)
        printf '%d\t%s\t%s\n' $((now - start)) "$rss" "$(cpu_ticks)" >>"$dir/rss.tsv"
        next=$((next + 10))
    fi
    [ $((now - start)) -le $((duration + 600)) ] || break
    sleep 1
done
cpu1=$(cpu_ticks)
wall=$(($(date +%s) - start))
bench_status=0
for p in "${bench_pids[@]}"; do wait "$p" || bench_status=1; done
bench_pids=()

# ---- stop: SIGTERM drains, then the sanitizers' exit checks run ----
server_status=0
kill -TERM "$server" 2>/dev/null || true
wait "$server" || server_status=$?
trap - EXIT

python3 - "$dir" "$mode" "$warmup" "$bound_pct" "$bound_mib" "$server_status" "$bench_status" "$cpu0" "$cpu1" "$hz" "$wall" <<'PY'
import json, re, statistics, sys
d, mode, warmup, bound_pct, bound_mib, server_status, bench_status, cpu0, cpu1, hz, wall = sys.argv[1:]
warmup, bound_pct, bound_mib = float(warmup), float(bound_pct), float(bound_mib)
fail = []

runs = {}
for tr in ("ws", "ws-deflate", "sse", "poll"):
    try:
        runs[tr] = json.loads(open(f"{d}/bench-{tr}.json").read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        fail.append(f"{tr}: no result (see bench-{tr}.log)")
keys = ("messages_published", "deliveries", "lost", "duplicated", "reconnected", "retries", "publish_errors",
        "protocol_errors", "gaps", "connections_failed")
tot = {k: sum(r.get(k, 0) for r in runs.values()) for k in keys}
for tr, r in runs.items():
    print(f"soak: {tr:10s} published {r['messages_published']}, delivered {r['deliveries']} of "
          f"{r['expected_deliveries']}, lost {r['lost']}, duplicated {r['duplicated']}, reconnects {r.get('reconnected', 0)}, "
          f"retries {r.get('retries', 0)}, gaps {r['gaps']}, latency p50/p99/max {r['latency_us']['p50']}/"
          f"{r['latency_us']['p99']}/{r['latency_us']['max']} us")
    for k in ("lost", "duplicated", "publish_errors", "protocol_errors", "gaps", "connections_failed"):
        if r.get(k, 0):
            fail.append(f"{tr}: {k} {r[k]}")
    if r.get("timed_out") or r.get("interrupted"):
        fail.append(f"{tr}: the run did not finish in time")
    if r.get("messages_published", 0) == 0 or r.get("deliveries", 0) == 0:
        fail.append(f"{tr}: nothing published or delivered")
    if tr == "ws-deflate" and not r.get("compressed_messages"):
        fail.append("ws-deflate: no message arrived compressed")
if int(bench_status):
    fail.append("a bench run failed (see bench-*.log)")

log = open(f"{d}/server.log", errors="replace").read()
reports = re.findall(r"^.*(?:ERROR: \w*Sanitizer|runtime error:|WARNING: \w*Sanitizer).*$", log, re.M)
if reports:
    fail.append(f"sanitizer: {reports[0].strip()}")
if int(server_status) != 0:
    fail.append(f"the server exited with status {server_status}")

samples = []
for line in open(f"{d}/rss.tsv"):
    t, rss, _ = line.split("\t")
    if int(rss) > 0:
        samples.append((int(t), int(rss)))
print("soak: RSS (MiB) every 10 s: " + " ".join(f"{rss / 1024:.1f}" for _, rss in samples))
steady = [rss for t, rss in samples if t >= warmup]
if len(steady) < 6:
    fail.append(f"only {len(steady)} RSS samples after the {warmup:.0f} s warm-up")
else:
    third = len(steady) // 3
    first, last = statistics.median(steady[:third]), statistics.median(steady[-third:])
    growth = last - first
    allowed = max(first * bound_pct / 100, bound_mib * 1024)
    n = len(steady)
    ts = [t for t, rss in samples if t >= warmup]
    mt, mr = sum(ts) / n, sum(steady) / n
    slope = sum((t - mt) * (r - mr) for t, r in zip(ts, steady)) / max(1e-9, sum((t - mt) ** 2 for t in ts)) * 60
    print(f"soak: RSS after the {warmup:.0f} s warm-up: {n} samples, min {min(steady) / 1024:.1f}, max "
          f"{max(steady) / 1024:.1f} MiB; median of the first third {first / 1024:.1f}, of the last third "
          f"{last / 1024:.1f} MiB: {growth / 1024:+.1f} MiB (bound {allowed / 1024:.1f}); trend {slope:+.1f} KiB/min")
    if growth > allowed:
        fail.append(f"memory grew {growth / 1024:.1f} MiB after the warm-up (bound {allowed / 1024:.1f})")

cpu = (int(cpu1) - int(cpu0)) / int(hz) if int(cpu0) >= 0 and int(cpu1) >= 0 else float("nan")
print(f"soak: total published {tot['messages_published']}, delivered {tot['deliveries']}, lost {tot['lost']}, "
      f"duplicated {tot['duplicated']}, reconnects {tot['reconnected']}; server CPU {cpu:.0f} s in {wall} s "
      f"({100 * cpu / max(1, int(wall)):.0f}% of one core)")
print(f"soak: {'FAIL: ' + '; '.join(fail) if fail else 'PASS'} ({mode})")
sys.exit(1 if fail else 0)
PY

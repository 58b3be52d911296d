#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds with ASan+UBSan, starts
# a private redis-server on a free loopback port, runs every meson suite (unit, e2e, e2e-redis, chaos, ...),
# a short fuzz run and the ThreadSanitizer script (tests/tsan.sh, when present), and ends with
# one line "N passed, N failed, N skipped". Exit status 0 only if nothing failed.
#   FUZZ_SECONDS=N   seconds per fuzz target (default 15; 0 leaves fuzzing out)
#   TSAN=0           leaves the ThreadSanitizer step out
#   CI=true          warnings are errors, and nothing may be skipped: a missing Redis, node,
#                    Chromium, proxy or compiler fails the run, naming what is missing.
# See docs/testing.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

deploy/install-deps.sh --test || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

# Third-party JS clients for the e2e suites (pinned by tests/package-lock.json).
if [ ! -d tests/node_modules ] || [ tests/package-lock.json -nt tests/node_modules ]; then
    (cd tests && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
fi

build=${PUSHEDGE_TEST_BUILD:-build-test}
werror=false
[ "${CI:-}" = "true" ] && werror=true
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=$werror >/dev/null ||
        { echo "meson setup failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
else
    # A build directory from an earlier run keeps its options: make werror match this run.
    meson configure "$build" -Dwerror=$werror >/dev/null ||
        { echo "meson configure failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
fi
if ! meson compile -C "$build"; then
    echo "build failed"
    echo "0 passed, 1 failed, 0 skipped"
    exit 1
fi

# A private Redis for the suites that need one (never the machine's own).
tmp=$(mktemp -d)
redis_pid=
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if command -v redis-server >/dev/null; then
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" --daemonize no \
        >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    export PUSHEDGE_TEST_REDIS_URL="redis://127.0.0.1:$port"
fi

# LeakSanitizer with full allocation stacks (libh2o has no frame pointers; the fast unwinder
# stops inside it) and only the suppressions of tests/lsan.supp (docs/testing.md).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0:fast_unwind_on_malloc=0:malloc_context_size=30}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
skipped=0

# With CI=true a missing program fails the run here too, rather than making it quietly smaller:
# without node meson registers no e2e test at all, and without redis-server every e2e-redis
# file would fail one by one with the same message.
if [ "${CI:-}" = "true" ]; then
    for prog in node redis-server; do
        if ! command -v "$prog" >/dev/null; then
            echo "not ok - CI=true: $prog is not installed"
            failed=$((failed + 1))
        fi
    done
fi

meson test -C "$build" --print-errorlogs --num-processes 2
meson_status=$?

# meson's SKIP (exit 77: a file that cannot run here) is counted apart, and is a failure in CI.
read -r p f s < <(python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, os, sys
p = f = s = 0
ci = os.environ.get("CI") == "true"
try:
    for line in open(sys.argv[1]):
        t = json.loads(line)
        r = t.get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif r == "SKIP" and not ci:
            s += 1
        else:
            if r == "SKIP":
                print(f"not ok - {t.get('name')}: skipped, and CI=true allows no skip", file=sys.stderr)
            f += 1
except OSError:
    f += 1
print(p, f, s)
PY
)
passed=$((passed + p))
failed=$((failed + f))
skipped=$((skipped + s))
[ "$meson_status" -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1))

# Counts a step's TAP lines into passed/failed/skipped: "ok", "not ok", and as skipped an "ok"
# with a "# SKIP" directive or a "1..0 # SKIP why" plan (failures with CI=true). A non-zero exit
# with no "not ok" line is one failure.
count_tap() {
    local out=$1 status=$2 tp tf ts
    echo "$out" | grep -E '^(not )?ok |^1\.\.0 # SKIP|^Bail out!' || true
    tp=$(echo "$out" | grep -E '^ok ' | grep -cv '# SKIP')
    tf=$(echo "$out" | grep -cE '^not ok ')
    ts=$(echo "$out" | grep -cE '^ok .*# SKIP|^1\.\.0 # SKIP')
    if [ "$status" -ne 0 ] && [ "$tf" -eq 0 ]; then
        echo "$out" | tail -20
        tf=1
    fi
    if [ "${CI:-}" = "true" ] && [ "$ts" -ne 0 ]; then
        echo "not ok - $ts skipped, and CI=true allows no skip"
        tf=$((tf + ts))
        ts=0
    fi
    passed=$((passed + tp))
    failed=$((failed + tf))
    skipped=$((skipped + ts))
}

if [ "${FUZZ_SECONDS:-15}" != "0" ] && [ -x tests/fuzz/run.sh ]; then
    fuzz_out=$(FUZZ_SECONDS=${FUZZ_SECONDS:-15} tests/fuzz/run.sh 2>&1)
    count_tap "$fuzz_out" $?
fi

# ThreadSanitizer: its own build of the unit tests and of the suites most likely to cross
# threads (tests/tsan.sh prints "ok - NAME" / "not ok - NAME").
if [ "${TSAN:-1}" != "0" ] && [ -x tests/tsan.sh ]; then
    tsan_out=$(tests/tsan.sh 2>&1)
    count_tap "$tsan_out" $?
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds with ASan+UBSan, starts
# a private redis-server on a free loopback port, runs every meson suite (unit, e2e) and a short
# fuzz run, and ends with one line "N passed, N failed". Exit status 0 only if nothing failed.
#   FUZZ_SECONDS=N   seconds per fuzz target (default 15; 0 skips fuzzing)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

deploy/install-deps.sh --test || { echo "0 passed, 1 failed"; exit 1; }

# Third-party JS clients for the e2e suites (pinned by tests/package-lock.json).
if [ ! -d tests/node_modules ] || [ tests/package-lock.json -nt tests/node_modules ]; then
    (cd tests && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed"; echo "0 passed, 1 failed"; exit 1; }
fi

build=${PUSHEDGE_TEST_BUILD:-build-test}
werror=false
[ "${CI:-}" = "true" ] && werror=true
if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=$werror >/dev/null ||
        { echo "meson setup failed"; echo "0 passed, 1 failed"; exit 1; }
else
    # A build directory from an earlier run keeps its options: make werror match this run.
    meson configure "$build" -Dwerror=$werror >/dev/null ||
        { echo "meson configure failed"; echo "0 passed, 1 failed"; exit 1; }
fi
if ! meson compile -C "$build"; then
    echo "build failed"
    echo "0 passed, 1 failed"
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

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
meson test -C "$build" --print-errorlogs --num-processes 2
meson_status=$?

passed=0
failed=0
read -r p f < <(python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL", "SKIP"):
            p += 1
        else:
            f += 1
except OSError:
    f += 1
print(p, f)
PY
)
passed=$((passed + p))
failed=$((failed + f))
[ "$meson_status" -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1))

if [ "${FUZZ_SECONDS:-15}" != "0" ] && [ -x tests/fuzz/run.sh ]; then
    fuzz_out=$(FUZZ_SECONDS=${FUZZ_SECONDS:-15} tests/fuzz/run.sh 2>&1)
    fuzz_status=$?
    echo "$fuzz_out" | grep -E '^(not )?ok ' || true
    fp=$(echo "$fuzz_out" | grep -cE '^ok ')
    ff=$(echo "$fuzz_out" | grep -cE '^not ok ')
    [ "$fuzz_status" -ne 0 ] && [ "$ff" -eq 0 ] && { echo "$fuzz_out" | tail -20; ff=1; }
    passed=$((passed + fp))
    failed=$((failed + ff))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

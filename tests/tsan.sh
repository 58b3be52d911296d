#!/usr/bin/env bash
# ThreadSanitizer run (docs/tsan.md): builds build-tsan (-Db_sanitize=thread, its own directory,
# the ASan build-test is left alone), then runs the unit tests that start threads and the e2e
# suites most likely to cross threads with every server at --threads 4 or more, and stress once
# more with 2 loops pinned to one core. One line per suite, "ok - NAME" or "not ok - NAME"; exit
# status non-zero if any failed.
#
# A suite fails on its own checks, or when any process it started wrote a ThreadSanitizer
# report: reports go to files (TSAN_OPTIONS log_path), one per process, which this script
# collects per suite, so a report fails the suite even where a test does not look at its
# server's exit status. Servers also exit 66 on a report.
#
#   PUSHEDGE_TEST_REDIS_URL  also run the Redis variants (tests/run.sh sets it)
#   TSAN_BUILD               build directory (default build-tsan)
#   TSAN_THREADS             loops per server (default 4; fewer than 4 is raised to 4)
#   TSAN_SUITES              e2e suites to run (default: publish ws sse poll matrix drain stress)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${TSAN_BUILD:-build-tsan}
threads=${TSAN_THREADS:-4}
[ "$threads" -ge 4 ] 2>/dev/null || threads=4
suites=${TSAN_SUITES:-publish ws sse poll matrix drain stress}
redis_suites="stress publish"

failed=0
passed=0
result() { # result STATUS NAME
    if [ "$1" -eq 0 ]; then
        echo "ok - $2"
        passed=$((passed + 1))
    else
        echo "not ok - $2"
        failed=$((failed + 1))
    fi
}

# gcc's and clang's TSan runtimes both work with Debian's uninstrumented libraries (h2o,
# hiredis, jansson, OpenSSL): their memory accesses are not seen, but their locks and the
# allocator are intercepted. Whichever compiler meson picks (CC) is fine.
if [ ! -f "$build/build.ninja" ]; then
    nice meson setup "$build" -Db_sanitize=thread -Db_lundef=false >"$root/$build.setup.log" 2>&1 || {
        cat "$root/$build.setup.log"
        result 1 "tsan build"
        echo "$passed passed, $failed failed"
        exit 1
    }
    rm -f "$root/$build.setup.log"
fi
if ! nice meson compile -C "$build" >/dev/null; then
    nice meson compile -C "$build" 2>&1 | tail -40
    result 1 "tsan build"
    echo "$passed passed, $failed failed"
    exit 1
fi

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
# exitcode: a report makes the process exit 66 (TSan's default), tests that check the exit
# status see it; log_path: each process's reports in its own file, checked below; a report
# does not stop the process (halt_on_error=0), so one run shows every race it meets.
export TSAN_OPTIONS="exitcode=66:halt_on_error=0:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp:log_path=$reports/tsan"

# run_suite NAME COMMAND...: runs a suite; it fails on a non-zero exit or on any report file.
run_suite() {
    local name=$1
    shift
    rm -f "$reports"/tsan.*
    local out
    out=$("$@" 2>&1)
    local status=$?
    [ $status -ne 0 ] && echo "$out" | tail -60 | sed 's/^/#   /'
    if compgen -G "$reports/tsan.*" >/dev/null; then
        echo "# $name: ThreadSanitizer reports:"
        cat "$reports"/tsan.* | sed 's/^/#   /'
        status=1
    fi
    result $status "$name"
}

# Unit tests that start threads. The others are single-threaded parsers: TSan cannot find
# anything in them and slows their guard-page loops down by two orders of magnitude.
for t in engine; do
    run_suite "tsan-unit-$t" nice "$build/tests/unit/test_$t"
done

# E2E_SERVER_ARGS is appended to every server a suite starts whose test did not choose its own
# --threads (lib.mjs: the drain tests pin one loop on purpose). stress chooses its own
# counts (E2E_STRESS_THREADS, and 16 loops for its start-up scrape), so it gets no override.
e2e() { # e2e ENGINE SUITE
    local engine=$1 suite=$2 args="--threads $threads"
    [ "$suite" = stress ] && args=
    env PUSHEDGE_BIN="$root/$build/edge/pushedge" PUSHEDGE_HAS_WS=1 E2E_ENGINE="$engine" \
        E2E_SERVER_ARGS="$args" E2E_STRESS_THREADS="$threads" \
        nice node --test --test-reporter=spec "tests/e2e/$suite.test.mjs"
}

for s in $suites; do
    run_suite "tsan-e2e-$s" e2e memory "$s"
done
if [ -n "${PUSHEDGE_TEST_REDIS_URL:-}" ]; then
    for s in $redis_suites; do
        case " $suites " in *" $s "*) run_suite "tsan-e2e-redis-$s" e2e redis "$s" ;; esac
    done
else
    echo "# PUSHEDGE_TEST_REDIS_URL is not set: the Redis variants did not run"
    [ "${CI:-}" = "true" ] && result 1 "tsan-e2e-redis (no Redis in CI)"
fi

# Two loops on one core: every wake-up of one loop by the other is a context switch in the
# middle of whatever the other was doing.
if command -v taskset >/dev/null; then
    run_suite "tsan-e2e-stress-2threads-1core" env PUSHEDGE_BIN="$root/$build/edge/pushedge" PUSHEDGE_HAS_WS=1 \
        E2E_STRESS_THREADS=2 taskset -c 0 nice node --test --test-reporter=spec tests/e2e/stress.test.mjs
else
    result 1 "tsan-e2e-stress-2threads-1core (taskset missing)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

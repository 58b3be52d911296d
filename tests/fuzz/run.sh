#!/bin/sh
# Builds the libFuzzer targets with clang and runs each for a bounded time, printing TAP:
#   ok 1 - fuzz_cursor 20s, 1234567 execs
# Exit status is non-zero if a build fails or any target crashes, leaks or times out.
#
#   tests/fuzz/run.sh            short run (CI): FUZZ_SECONDS per target, corpus left as it is
#   tests/fuzz/run.sh --long     long run: 600 s per target, then new inputs merged into the
#                                committed corpus (same as FUZZ_SECONDS=600 FUZZ_MERGE=1)
#   tests/fuzz/run.sh [--long] fuzz_config fuzz_query    only these targets
#
# Environment:
#   FUZZ_SECONDS    run time per target (default 20; 600 with --long)
#   FUZZ_MERGE      1: merge the inputs that add coverage into tests/fuzz/corpus/<target>/
#                   (libFuzzer -merge=1: only inputs with new coverage are added, none removed)
#   FUZZ_BUILD_DIR  meson build directory (default <repo>/build-fuzz; created if missing)
#   FUZZ_CC         compiler (default clang; libFuzzer needs clang)
#   NINJA           ninja binary (default ninja)
#   CI=true         a missing clang or meson fails instead of skipping
#
# Each target starts from its committed corpus (tests/fuzz/corpus/<target>/, seeds plus what
# earlier long runs merged) and fuzzes a temporary copy of it; without FUZZ_MERGE the new inputs
# are dropped with the copy, so a CI run never changes the tree. On failure the temporary
# directory (crash input, full log) is kept and named. docs/fuzzing.md has the details. Works
# from any current directory. Checklist when adding a target: tests/fuzz/meson.build, a
# corpus/<target>/ directory, and TARGETS below.
set -u

TARGETS="fuzz_cursor fuzz_stream_id fuzz_json_minify fuzz_query fuzz_ws_deflate fuzz_ws_frame fuzz_json_member fuzz_ws_handshake fuzz_config fuzz_redis_reply fuzz_redis_url fuzz_jwt"

merge=${FUZZ_MERGE:-0}
if [ "${1:-}" = --long ]; then
    shift
    : "${FUZZ_SECONDS:=600}"
    merge=1
fi
if [ $# -gt 0 ]; then
    for t in "$@"; do
        case " $TARGETS " in
        *" $t "*) ;;
        *)
            echo "Bail out! unknown target '$t' (known: $TARGETS)"
            exit 2
            ;;
        esac
    done
    TARGETS="$*"
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
cc=${FUZZ_CC:-clang}

case $seconds in
'' | *[!0-9]*)
    echo "Bail out! FUZZ_SECONDS must be a whole number of seconds (got '$seconds')"
    exit 2
    ;;
esac
# A missing compiler skips the run, except with CI=true, where it is a failure naming it.
skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "Bail out! CI=true forbids skipping: $1"
        exit 1
    fi
    echo "1..0 # SKIP $1"
    exit 0
}
command -v "$cc" >/dev/null 2>&1 || skip "$cc not found (libFuzzer needs clang)"
command -v meson >/dev/null 2>&1 || skip "meson not found"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pushedge-fuzz.XXXXXX") || exit 2
keep=0
cleanup() {
    if [ "$keep" = 0 ]; then
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints a file as TAP comments (TAP readers ignore "#" lines).
comment() {
    sed 's/^/# /' "$1"
}

# Build (or reuse) the fuzz build directory. A directory configured without -Dfuzz=true is
# reconfigured; one configured with another compiler fails in meson.build with a clear error.
if [ ! -f "$build/build.ninja" ]; then
    if ! CC=$cc meson setup "$build" "$root" -Dfuzz=true -De2e=false >"$tmp/setup.log" 2>&1; then
        echo "Bail out! meson setup $build failed"
        comment "$tmp/setup.log"
        exit 1
    fi
elif ! meson configure "$build" -Dfuzz=true >"$tmp/setup.log" 2>&1; then
    echo "Bail out! meson configure $build failed"
    comment "$tmp/setup.log"
    exit 1
fi
# ninja rather than `meson compile <target>`: meson resolves target names from the previous
# configuration, so a target added to meson.build since then would be "not found"; ninja
# regenerates build.ninja first. Only the fuzz targets are built, not the server.
ninja_targets=
for target in $TARGETS; do
    ninja_targets="$ninja_targets tests/fuzz/$target"
done
# shellcheck disable=SC2086 # a word list
if ! "${NINJA:-ninja}" -C "$build" $ninja_targets >"$tmp/build.log" 2>&1; then
    echo "Bail out! building the fuzz targets failed"
    comment "$tmp/build.log"
    exit 1
fi

# shellcheck disable=SC2086
set -- $TARGETS
echo "1..$#"
n=0
failed=0
for target in $TARGETS; do
    n=$((n + 1))
    work="$tmp/$target"
    mkdir -p "$work/corpus"
    cp -R "$here/corpus/$target/." "$work/corpus/"
    dict_arg=
    if [ -f "$here/${target#fuzz_}.dict" ]; then
        dict_arg="-dict=$here/${target#fuzz_}.dict"
    fi
    # -timeout: a single input running 10 s is a hang worth reporting, not a slow machine.
    # -artifact_prefix: crash/leak/timeout files go to the temporary directory, never the cwd.
    "$build/tests/fuzz/$target" ${dict_arg:+"$dict_arg"} -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
    if [ "$rc" = 0 ] && [ -n "$execs" ]; then
        echo "ok $n - $target ${seconds}s, $execs execs"
        if [ "$merge" = 1 ]; then
            before=$(find "$here/corpus/$target" -type f | wc -l)
            if "$build/tests/fuzz/$target" -merge=1 -timeout=10 "$here/corpus/$target" "$work/corpus" >"$work/merge.log" 2>&1; then
                after=$(find "$here/corpus/$target" -type f | wc -l)
                echo "# $target: merged $((after - before)) new inputs into tests/fuzz/corpus/$target ($after in all)"
            else
                echo "# $target: merging failed; see $work/merge.log"
                keep=1
            fi
        fi
    else
        failed=$((failed + 1))
        keep=1
        echo "not ok $n - $target failed (exit status $rc)"
        tail -n 60 "$work/log" | sed 's/^/# /'
        for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
            [ -f "$f" ] && echo "# reproduce: $build/tests/fuzz/$target $f"
        done
        echo "# log and inputs kept in $work"
    fi
done

[ "$failed" = 0 ]

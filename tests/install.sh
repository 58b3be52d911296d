#!/usr/bin/env bash
# The install a service uses (docs/operations.md, "Installing as a service"): a release build
# installed under a temporary prefix must serve the demo page and the client from
# <prefix>/share/pushedge/web with no --web-root, and a missing asset must be named at start.
# Prints TAP. Usage: tests/install.sh [SOURCE_DIR]
set -uo pipefail
src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
echo "1..4"
fail() { echo "not ok $1 - $2"; [ -f "$tmp/log" ] && sed 's/^/# /' "$tmp/log" | tail -20; exit 1; }

meson setup "$tmp/build" "$src" --buildtype=release --prefix="$tmp/prefix" -De2e=false >"$tmp/setup.log" 2>&1 &&
    meson compile -C "$tmp/build" edge/pushedge >"$tmp/compile.log" 2>&1 &&
    meson install -C "$tmp/build" --no-rebuild >"$tmp/install.log" 2>&1 ||
    { cat "$tmp"/*.log | sed 's/^/# /' | tail -30; fail 1 "meson install into a temporary prefix"; }
[ -f "$tmp/prefix/share/pushedge/web/index.html" ] && [ -f "$tmp/prefix/share/pushedge/web/src/pushedge.js" ] ||
    fail 1 "the web assets are installed under share/pushedge/web"
echo "ok 1 - meson install puts the binary in bin/ and the web assets in share/pushedge/web"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() {
    "$tmp/prefix/bin/pushedge" --listen "127.0.0.1:$port" >"$tmp/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
        sleep 0.1
    done
    return 1
}
stop() { kill "$pid"; wait "$pid"; local rc=$?; pid=; return $rc; }
run || fail 2 "the installed binary starts"
page=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")
js=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/pushedge.js")
stop || fail 2 "the installed binary exits 0 on SIGTERM"
[ "$page" = 200 ] && [ "$js" = 200 ] || fail 2 "GET / and /pushedge.js from the installed copy (got $page, $js)"
grep -q "no demo page\|no JS client" "$tmp/log" && fail 2 "no warning about assets when they are installed"
echo "ok 2 - the installed binary serves / and /pushedge.js from its prefix without --web-root"

rm "$tmp/prefix/share/pushedge/web/src/pushedge.js"
run || fail 3 "starts without the client file"
js=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/pushedge.js")
stop || fail 3 "exits 0"
grep -q "no JS client at $tmp/prefix/share/pushedge/web/src/pushedge.js" "$tmp/log" || fail 3 "a missing client is named in the start log"
echo "ok 3 - a missing asset is named at start"
[ "$js" = 404 ] || fail 4 "GET /pushedge.js answers 404 when the file is missing (got $js)"
echo "ok 4 - and GET /pushedge.js answers 404"

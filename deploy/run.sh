#!/usr/bin/env bash
# Quick start: installs what is missing, builds pushedge (release) and runs it on the embedded
# engine with the demo page at http://127.0.0.1:8080/. Arguments are passed to pushedge.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release -De2e=false >/dev/null
meson compile -C build >/dev/null
exec ./build/edge/pushedge "$@"

#!/usr/bin/env bash
# Quick start: installs what is missing, builds pushedge (release) and runs it on the embedded
# engine with the demo page at http://127.0.0.1:8080/. Arguments are passed to pushedge.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "run.sh: checking dependencies (deploy/install-deps.sh)" >&2
deploy/install-deps.sh
if [ ! -f build/build.ninja ]; then
    echo "run.sh: configuring the release build in build/ (the first time takes about a minute)" >&2
    meson setup build --buildtype=release -De2e=false >/dev/null
fi
echo "run.sh: building" >&2
meson compile -C build >/dev/null
echo "run.sh: starting pushedge; the demo page is at http://127.0.0.1:8080/ unless --listen says otherwise" >&2
exec ./build/edge/pushedge "$@"

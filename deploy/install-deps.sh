#!/usr/bin/env bash
# Installs what pushedge needs on Debian 12, skipping what is already there.
#   deploy/install-deps.sh          build and run dependencies
#   deploy/install-deps.sh --test   also what the test suite needs (redis-server, redis-sentinel, node, clang)
# Runs as root (or through sudo when it is available).
set -euo pipefail

pkgs=(gcc libc6-dev meson ninja-build pkg-config libh2o-evloop-dev libhiredis-dev
      libjansson-dev libssl-dev zlib1g-dev)
if [ "${1:-}" = "--test" ]; then
    pkgs+=(redis-server curl clang libclang-rt-14-dev python3)
    # The Sentinel suite (tests/e2e/sentinel.test.mjs) runs three redis-sentinel processes.
    pkgs+=(redis-sentinel)
    # The browser suite: Debian's Chromium (driven by npm's playwright-core) and the hostile
    # proxies it runs the JS client through.
    pkgs+=(chromium squid tinyproxy haproxy nginx)
    # promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/deploy/); python3-yaml
    # parses the Kubernetes manifests of deploy/k8s/.
    pkgs+=(prometheus python3-yaml)
    # tests/e2e/auth_matrix.test.mjs mints its tokens with PyJWT (an implementation independent
    # of pushedge's), through the system python3.
    pkgs+=(python3-jwt python3-cryptography)
    # The JS suites run on Debian's nodejs (18.20) when no other node is installed, as on a
    # fresh machine: tests/package.json pins playwright-core to 1.61, the last release that
    # supports Node 18 (1.62 requires Node 20); any newer node works as well. npm depends on
    # ca-certificates, which it needs to reach its registry.
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

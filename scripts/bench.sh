#!/usr/bin/env bash
# Runs `remap bench` with the peer crate (`userfaultfd` 0.9) built in, after installing what the
# peer feature needs: its -sys crate runs bindgen, which needs libclang at build time.
#
# Usage: scripts/bench.sh [remap bench options...]   e.g. scripts/bench.sh --quick --json
set -euo pipefail
cd "$(dirname "$0")/.."

# Asked for by package name, as .ci/run does: a library search (`ldconfig -p | grep libclang`) can
# be satisfied by libclang-cpp or a bare libclang1, neither of which gives bindgen libclang.so
# and clang's headers.
if [ "$(dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null)" != 'install ok installed' ]; then
    if command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-cache policy libclang-dev | sed -n '1,3p' >&2
        apt-get install -y -qq libclang-dev >&2
    else
        echo "bench.sh: libclang not found and apt-get unavailable; install libclang for bindgen" >&2
        exit 2
    fi
fi

exec cargo run --release -p remap-cli --features peer -- bench "$@"

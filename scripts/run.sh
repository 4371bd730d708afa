#!/usr/bin/env bash
# Installs the build packages, builds Sluice and runs the relay on its embedded
# defaults in the foreground (Ctrl-C stops it). Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build
exec ./build/sluice serve "$@"

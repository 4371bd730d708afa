#!/usr/bin/env bash
# The reliability torture suite. `torture.sh` = the short mode that `make check`
# also runs; `torture.sh long` = 100 kill -9 rounds, more chaos traffic.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || meson setup build || exit 1
ninja -C build || exit 1
[ "${1:-}" = long ] && export TORTURE=long
SLUICE_BIN=$PWD/build/sluice /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
    tests/integration/test_torture.py

#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each one for
# FUZZ_SECONDS over its seed corpus. A crash is saved under build-fuzz/crashes/.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-10}
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args=-fsanitize=fuzzer-no-link -Dbuildtype=debugoptimized >build-fuzz.setup.log 2>&1 ||
        { echo "meson setup build-fuzz failed:"; cat build-fuzz.setup.log; exit 1; }
    rm -f build-fuzz.setup.log
fi
ninja -C build-fuzz >/tmp/sluice-fuzz-build.log 2>&1 || { echo "ninja -C build-fuzz failed:"; tail -60 /tmp/sluice-fuzz-build.log; exit 1; }
mkdir -p build-fuzz/crashes
status=0
for bin in build-fuzz/tests/fuzz/fuzz_*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name=${bin##*/fuzz_}
    work=build-fuzz/corpus/$name
    mkdir -p "$work"
    seeds=tests/fuzz/corpus/$name
    [ -d "$seeds" ] || seeds=""
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=build-fuzz/crashes/"$name"- "$work" $seeds >build-fuzz/"$name".log 2>&1; then
        echo "fuzz ok $name ($(grep -oE 'stat::number_of_executed_units: *[0-9]+' build-fuzz/$name.log | awk '{print $2}') runs)"
    else
        echo "fuzz FAIL $name"; tail -30 build-fuzz/"$name".log; status=1
    fi
done
exit $status

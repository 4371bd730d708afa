#!/usr/bin/env bash
# Runs every test: unit tests (plain build and ASan+UBSan build), black-box
# integration tests against the daemon, and a short run of every fuzz target.
# Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# Installs the build and test packages first (a bare Debian 12 needs them all).
if ! scripts/deps.sh test; then
    echo "scripts/deps.sh test failed: the test packages could not be installed"
    echo "0 passed, 1 failed"
    exit 1
fi
export SLUICE_TESTDATA=${SLUICE_TESTDATA:-$root/../shared/testdata}
PY=/usr/bin/python3
passed=0
failed=0
failures=()

count_meson() { # dir label
    local dir=$1 label=$2 log
    log=$(mktemp)
    meson test -C "$dir" --suite unit --print-errorlogs >"$log" 2>&1
    local ok fail cases_ok cases_fail testlog=$dir/meson-logs/testlog.txt
    local f t
    ok=$(grep -E '^Ok:' "$log" | awk '{print $2}')
    f=$(grep -E '^Fail:' "$log" | awk '{print $2}')
    t=$(grep -E '^Timeout:' "$log" | awk '{print $2}')
    ok=${ok:-0}
    fail=$(( ${f:-0} + ${t:-0} ))
    # count test cases (cmocka prints "[  PASSED  ] N test(s)." per program);
    # a failing program counts at least once even if it died before printing
    cases_ok=$(grep -hoE '^\[  PASSED  \] [0-9]+ test' "$testlog" | awk '{s+=$4} END {print s+0}')
    cases_fail=$(grep -hoE '^\[  FAILED  \] [0-9]+ test' "$testlog" | awk '{s+=$4} END {print s+0}')
    [ "$cases_fail" -lt "$fail" ] && cases_fail=$fail
    passed=$((passed + cases_ok)); failed=$((failed + cases_fail))
    echo "$label: $ok programs passed, $fail failed ($cases_ok test cases passed, $cases_fail failed)"
    if [ "$fail" -ne 0 ] || [ "$ok" -eq 0 ]; then
        grep -E 'FAIL|TIMEOUT' "$log" | head -20
        failures+=("$label")
        [ "$ok" -eq 0 ] && [ "$fail" -eq 0 ] && failed=$((failed + 1))
        tail -60 "$log"
    fi
    rm -f "$log"
}

build() { # dir meson-args...  (quiet when it works; the tool's own output when it fails)
    local dir=$1 log; shift
    log=$(mktemp)
    # a folder the run command set up before the test packages (cmocka) were
    # installed has no unit tests: set it up again so they are found
    local setup=(setup "$dir" "$@")
    [ -f "$dir/build.ninja" ] && setup=(setup --reconfigure "$dir" "$@")
    if ! meson "${setup[@]}" >"$log" 2>&1; then
        echo "meson ${setup[*]} failed:"; cat "$log"; rm -f "$log"; return 1
    fi
    if ! ninja -C "$dir" >"$log" 2>&1; then
        echo "ninja -C $dir failed:"; tail -60 "$log"; rm -f "$log"; return 1
    fi
    rm -f "$log"
}

echo "== include levels (scripts/layers.txt)"
if $PY scripts/check_layers.py; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("layers"); fi

echo "== build (gcc, -Wall -Wextra -Werror)"
if build build; then count_meson build "unit"; else failed=$((failed + 1)); failures+=("build"); fi

echo "== build (clang, ASan+UBSan)"
if CC=clang build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        count_meson build-asan "unit (asan+ubsan)"
else
    failed=$((failed + 1)); failures+=("asan build")
fi

echo "== integration (pytest, real clients and servers)"
if [ -x build/sluice ]; then
    log=$(mktemp)
    SLUICE_BIN=$root/build/sluice SLUICE_ASAN_BIN=$root/build-asan/sluice \
        $PY -m pytest -q -p no:cacheprovider tests/integration >"$log" 2>&1
    rc=$?
    tail -40 "$log"
    line=$(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)
    p=$(echo "$line" | grep -oE '[0-9]+ passed' | awk '{print $1}')
    f=$(echo "$line" | grep -oE '[0-9]+ failed' | awk '{print $1}')
    e=$(echo "$line" | grep -oE '[0-9]+ error' | awk '{print $1}')
    p=${p:-0}; f=$(( ${f:-0} + ${e:-0} ))
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -ne 0 ] && failures+=("integration")
    rm -f "$log"
fi

echo "== integration under ASan+UBSan (the daemon built with sanitizers; SMTP, delivery, DKIM intake)"
if [ -x build-asan/sluice ]; then
    log=$(mktemp)
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    SLUICE_BIN=$root/build-asan/sluice \
        $PY -m pytest -q -p no:cacheprovider tests/integration \
        -k "smtp_ or delivery or dkim_intake or observability or policy_ or queue_transfer" >"$log" 2>&1
    rc=$?
    tail -15 "$log"
    line=$(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)
    p=$(echo "$line" | grep -oE '[0-9]+ passed' | awk '{print $1}')
    f=$(echo "$line" | grep -oE '[0-9]+ failed' | awk '{print $1}')
    e=$(echo "$line" | grep -oE '[0-9]+ error' | awk '{print $1}')
    p=${p:-0}; f=$(( ${f:-0} + ${e:-0} ))
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -ne 0 ] && failures+=("integration (asan)")
    rm -f "$log"
fi

echo "== fuzz smoke (libFuzzer, ${FUZZ_SECONDS:-10}s per target)"
if FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh >/tmp/sluice-fuzz.log 2>&1; then
    n=$(grep -c '^fuzz ok' /tmp/sluice-fuzz.log)
    passed=$((passed + n)); echo "fuzz: $n targets clean"
else
    n=$(grep -c '^fuzz ok' /tmp/sluice-fuzz.log); bad=$(grep -c '^fuzz FAIL' /tmp/sluice-fuzz.log)
    passed=$((passed + n)); failed=$((failed + (bad > 0 ? bad : 1))); failures+=("fuzz")
    tail -40 /tmp/sluice-fuzz.log
fi

[ ${#failures[@]} -gt 0 ] && echo "failing parts: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# STARTTLS + AUTH PLAIN submission, one connection per 10 KiB message, at
# concurrency 50, with the TLS handshakes on the event loop ([server]
# threads = 0) and on 1 and 2 handshake threads, interleaved, end to end to
# an smtp-sink upstream. Writes bench/results/tls-threads.md (msg/s, p50,
# p99, relay CPU seconds per 1,000 messages, peak RSS).
#   SLUICE_BIN      default build/sluice (sluice-loadgen beside it)
#   BENCH_SECONDS   per run (default 8)
#   BENCH_REPEAT    interleaved passes, medians reported (default 3)
#   BENCH_THREADS   default "0 1 2"
#   BENCH_OUT       default bench/results/tls-threads.md
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
LOADGEN=${LOADGEN:-$(dirname "$SLUICE_BIN")/sluice-loadgen}
SECONDS_PER=${BENCH_SECONDS:-8}
REPEAT=${BENCH_REPEAT:-3}
THREADS=${BENCH_THREADS:-0 1 2}
OUT=${BENCH_OUT:-$ROOT/bench/results/tls-threads.md}
PY=/usr/bin/python3
CMDLINE="$(env | { grep -E '^(BENCH_[A-Z_]+|SLUICE_BIN)=' || true; } | sort | tr '\n' ' ')bench/tls_threads.sh"
for t in "$SLUICE_BIN" "$LOADGEN"; do [ -x "$t" ] || { echo "bench: no $t (build first)" >&2; exit 1; }; done
command -v smtp-sink >/dev/null || { echo "bench: smtp-sink missing (apt-get install postfix)" >&2; exit 1; }

TMP=$(mktemp -d /var/tmp/sluice-tlsthreads.XXXXXX)
chmod 755 "$TMP"
SINK_PID= SL_PID=
cleanup() {
    [ -n "$SL_PID" ] && kill "$SL_PID" 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"
SINK_PORT=$(bench_port)
bench_start_sink "$SINK_PORT" "$TMP" || exit 1

PASS="correct horse battery staple"
run_one() { # threads -> one line: msgs/s p50 p99 cpu_per_1000 rss_mib
    local th=$1 d="$TMP/sl-$1" p
    rm -rf "$d"; mkdir -p "$d"
    p=$(bench_port)
    cat >"$d/sluice.conf" <<EOF
[server]
hostname = bench.test
user = root
listen_submission = 127.0.0.1:$p
listen_smtps =
var_dir = $d/var
relay_networks =
threads = $th
[limits]
max_connections = 12000
max_connections_per_ip = 2000
max_unauth_connections_per_ip = 2000
[log]
file = $d/sluice.log
level = warn
[http]
listen =
[upstream sink]
host = 127.0.0.1
port = $SINK_PORT
tls = none
verify = none
max_connections = 20
messages_per_connection = 1000
EOF
    printf '%s\n' "$PASS" | SLUICE_CONFIG="$d/sluice.conf" "$SLUICE_BIN" creds add app --password --init >/dev/null
    "$SLUICE_BIN" serve -c "$d/sluice.conf" >"$d/stdout.log" 2>&1 &
    SL_PID=$!
    bench_wait_port "$p" || { echo "sluice did not start: $(cat "$d/stdout.log")" >&2; exit 1; }
    local t0 t1
    t0=$(awk '{print $14+$15}' "/proc/$SL_PID/stat")
    "$LOADGEN" --port "$p" --tls starttls --insecure --auth "app:$PASS" -c 50 -d "$SECONDS_PER" \
        --size 10240 --json >"$d/lg.json"
    t1=$(awk '{print $14+$15}' "/proc/$SL_PID/stat")
    local rss
    rss=$(awk '/VmHWM/{print $2}' "/proc/$SL_PID/status")
    kill -TERM "$SL_PID"; wait "$SL_PID" 2>/dev/null || true; SL_PID=
    $PY - "$d/lg.json" "$t0" "$t1" "$(getconf CLK_TCK)" "$rss" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ticks = int(sys.argv[3]) - int(sys.argv[2]); hz = int(sys.argv[4])
acc = j["accepted"]
cpu = ticks / hz / acc * 1000 if acc else float("nan")
print(f'{j["msg_per_s"]:.0f} {j["latency_ms"]["p50"]:.1f} {j["latency_ms"]["p99"]:.1f} {cpu:.2f} {int(sys.argv[5]) / 1024:.0f} {j.get("failed", 0)}')
EOF
}

declare -A rows
for rep in $(seq "$REPEAT"); do
    for th in $THREADS; do
        line=$(run_one "$th")
        echo "pass $rep threads=$th: $line" >&2
        rows[$th]+="$line"$'\n'
    done
done

{
    echo "# STARTTLS + AUTH with handshake threads"
    echo
    echo "$(nproc) cores, $(date -u +%Y-%m-%d), \`$CMDLINE\`: c=50, 10 KiB, one connection per message,"
    echo "end to end to smtp-sink; $REPEAT interleaved passes of ${SECONDS_PER} s, medians."
    echo
    echo "| [server] threads | msg/s | p50 ms | p99 ms | relay CPU s / 1000 msg | peak RSS MiB | failed |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for th in $THREADS; do
        printf '%s' "${rows[$th]}" | $PY -c '
import sys, statistics as st
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
cols = list(zip(*rows))
med = [st.median(c) for c in cols]
print("| '"$th"' | %.0f | %.1f | %.1f | %.2f | %.0f | %.0f |" % tuple(med))'
    done
} >"$OUT"
cat "$OUT"

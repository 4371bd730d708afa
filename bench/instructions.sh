#!/usr/bin/env bash
# Instructions the daemon executes per relayed message, counted by
# valgrind's callgrind (repeatable whatever else the machine is doing):
# plaintext submission of MESSAGES messages of 10 KiB at concurrency 10,
# end to end to an smtp-sink upstream, minus an idle start and stop of the
# same configuration. Prints the count and the top functions.
#   SLUICE_BIN   default build/sluice (sluice-loadgen beside it)
#   MESSAGES     default 3000
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
LOADGEN=${LOADGEN:-$(dirname "$SLUICE_BIN")/sluice-loadgen}
MESSAGES=${MESSAGES:-3000}
for t in valgrind callgrind_annotate smtp-sink; do
    command -v "$t" >/dev/null || { echo "bench: $t missing (apt-get install valgrind postfix)" >&2; exit 1; }
done
TMP=$(mktemp -d /var/tmp/sluice-instr.XXXXXX)
chmod 755 "$TMP"
SINK_PID= VG_PID=
cleanup() {
    [ -n "$VG_PID" ] && kill "$VG_PID" 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"
SINK_PORT=$(bench_port) PORT=$(bench_port)
bench_start_sink "$SINK_PORT" "$TMP" || exit 1
cat >"$TMP/sluice.conf" <<EOF
[server]
hostname = bench.test
user = root
listen_submission = 127.0.0.1:$PORT
listen_smtps =
relay_networks = 127.0.0.1/32
threads = 0
[limits]
max_connections_per_ip = 2000
max_unauth_connections_per_ip = 2000
[log]
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
total() { callgrind_annotate "$1" | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'; }
run() { # name messages
    rm -rf "$TMP/var"
    SLUICE_SERVER_VAR_DIR="$TMP/var" valgrind --tool=callgrind --callgrind-out-file="$TMP/$1.out" \
        "$SLUICE_BIN" serve -c "$TMP/sluice.conf" >"$TMP/$1.log" 2>&1 &
    VG_PID=$!
    bench_wait_port "$PORT" || { echo "sluice did not start: $(cat "$TMP/$1.log")" >&2; exit 1; }
    if [ "$2" -gt 0 ]; then
        "$LOADGEN" --port "$PORT" -c 10 -n "$2" --size 10240 | grep -E '^(messages|errors)'
    fi
    kill -TERM "$VG_PID"; wait "$VG_PID" 2>/dev/null || true; VG_PID=
}
run idle 0
run load "$MESSAGES"
idle=$(total "$TMP/idle.out") load=$(total "$TMP/load.out")
echo "instructions: idle start/stop $idle, with $MESSAGES messages $load"
echo "per message: $(( (load - idle) / MESSAGES ))"
callgrind_annotate "$TMP/load.out" | sed -n '/file:function/,$p' | sed -n 2,16p

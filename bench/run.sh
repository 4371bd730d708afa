#!/usr/bin/env bash
# Sluice measured beside Postfix on this machine, in one run: one smtp-sink as
# the common upstream, a private Postfix instance and Sluice both relaying to
# it, then bench/driver.py drives the matrix and writes bench/results/latest.md.
# Needs root (Postfix's master must start as root) and Debian's postfix package.
#
# Environment:
#   QUICK=1                 10 KiB at concurrency 1, 10, 50 only
#   BENCH_SIZES="1 10 100"  message sizes in KiB
#   BENCH_CONCURRENCY="1 10 50 200"
#   BENCH_COUNT             messages per smtp-source run (default 3000; QUICK 2000)
#   BENCH_LAT_COUNT         messages per latency-client run (default 1000; QUICK 500)
#   BENCH_REPEAT            passes over the matrix, medians reported (default 3)
#   BENCH_IDLE_CONNS        idle connections opened to Sluice (default 10000)
#   BENCH_RELAYS            "postfix sluice" (default), or one of them
#   BENCH_TMPDIR            where the temporary directory goes (default /var/tmp); it
#                           must be a real disk, not tmpfs, or the spools are not durable
#   BENCH_OUT               results file (default bench/results/latest.md)
#   BENCH_KEEP=1            keep the temporary directory (logs, spools) afterwards
#   SLUICE_BIN              default build/sluice
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
PY=/usr/bin/python3
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
CMDLINE="$(env | { grep -E '^(QUICK|BENCH_[A-Z_]+|SLUICE_BIN)=' || true; } | sort | tr '\n' ' ')"
CMDLINE="${CMDLINE}bench/run.sh${*:+ $*}"

if [ "${QUICK:-0}" = 1 ]; then
    SIZES=${BENCH_SIZES:-10}
    CONCS=${BENCH_CONCURRENCY:-1 10 50}
    COUNT=${BENCH_COUNT:-2000}
    LAT_COUNT=${BENCH_LAT_COUNT:-500}
else
    SIZES=${BENCH_SIZES:-1 10 100}
    CONCS=${BENCH_CONCURRENCY:-1 10 50 200}
    COUNT=${BENCH_COUNT:-3000}
    LAT_COUNT=${BENCH_LAT_COUNT:-1000}
fi
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
REPEAT=${BENCH_REPEAT:-3}
RELAYS=${BENCH_RELAYS:-postfix sluice}
OUT=${BENCH_OUT:-$BENCH/results/latest.md}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: a private Postfix instance can only be started by root"
[ -x "$SLUICE_BIN" ] || die "no Sluice binary at $SLUICE_BIN (build with: make build)"
for t in smtp-source smtp-sink postfix postconf cc; do
    command -v "$t" >/dev/null || die "$t not found (install with: scripts/deps.sh test)"
done

# Descriptors for 10,000 idle connections (Sluice and the client inherit this).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMPBASE=${BENCH_TMPDIR:-/var/tmp}
[ "$(stat -f -c %T "$TMPBASE")" != tmpfs ] || die "$TMPBASE is tmpfs; set BENCH_TMPDIR to a directory on disk"
TMP=$(mktemp -d "$TMPBASE/sluice-bench.XXXXXX")
chmod 755 "$TMP"   # Postfix daemons run as user postfix and must reach their queue
PF="$TMP/postfix"
SINK_PID= SLUICE_PID= SLUICE_IDLE_PID= PF_STARTED=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PF_STARTED" ]; then
        postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
        local mpid
        mpid=$(cat "$PF/queue/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
        for _ in $(seq 50); do
            [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null || break
            sleep 0.2
        done
        if [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null; then
            postfix -c "$PF/etc" abort >/dev/null 2>&1 || kill -KILL "$mpid" 2>/dev/null || true
        fi
    fi
    if [ -n "$SLUICE_PID" ] && ! kill -0 "$SLUICE_PID" 2>/dev/null; then
        local st=0
        wait "$SLUICE_PID" 2>/dev/null || st=$?
        echo "bench: Sluice had stopped before the end of the run (exit status $st); its log ends:" >&2
        tail -n 3 "$SL/sluice.log" >&2 2>/dev/null || true
    elif [ -n "$SLUICE_PID" ]; then
        kill -TERM "$SLUICE_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SLUICE_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SLUICE_PID" 2>/dev/null || true
    fi
    if [ -n "$SLUICE_IDLE_PID" ]; then
        kill -TERM "$SLUICE_IDLE_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SLUICE_IDLE_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SLUICE_IDLE_PID" 2>/dev/null || true
    fi
    [ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "bench: logs and spools kept in $TMP" >&2
        [ "${BENCH_KEEP:-0}" = 1 ] || echo "bench: (remove with rm -rf $TMP)" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until something listens on 127.0.0.1:$1 (at most ~10 s).
wait_port() {
    for _ in $(seq 100); do
        "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))" \
            2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

SINK_PORT=$(free_port)
PF_PORT=$(free_port)
SL_PORT=$(free_port)
while [ "$PF_PORT" = "$SINK_PORT" ]; do PF_PORT=$(free_port); done
while [ "$SL_PORT" = "$SINK_PORT" ] || [ "$SL_PORT" = "$PF_PORT" ]; do SL_PORT=$(free_port); done

# 1. The common upstream. -c keeps a running "mesg=N" counter on stdout.
sink_user=()
[ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" -c -m 512 "127.0.0.1:$SINK_PORT" 1024 >"$TMP/sink.out" 2>"$TMP/sink.err" &
SINK_PID=$!
wait_port "$SINK_PORT" || die "smtp-sink did not start: $(cat "$TMP/sink.err")"

# 2. A private Postfix: its own config, queue and data directories; defaults
# elsewhere (durable queue with fsync, in_flow_delay, connection cache).
if [[ " $RELAYS " == *" postfix "* ]]; then
    mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
    chown postfix "$PF/data"
    cat >"$PF/etc/main.cf" <<EOF
# Private benchmark instance; nothing here touches /etc/postfix.
compatibility_level = 3.6
config_directory = $PF/etc
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
# 200 concurrent clients need 200 smtpd processes (the default limit is 100).
default_process_limit = 250
EOF
    # The services of Debian's master.cf that a relay uses, without chroot;
    # no local delivery, smtpd on its own loopback port, postlogd for maillog_file.
    cat >"$PF/etc/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    postfix -c "$PF/etc" check >"$TMP/postfix-start.log" 2>&1 || true
    PF_STARTED=1
    postfix -c "$PF/etc" start >>"$TMP/postfix-start.log" 2>&1 || true
    if ! wait_port "$PF_PORT"; then
        cat "$TMP/postfix-start.log" "$PF/maillog" >&2 2>/dev/null || true
        die "the private Postfix did not start"
    fi
fi

# 3. Sluice: relay from 127.0.0.1 without AUTH (as Postfix's mynetworks), one
# upstream to the sink. Connection limits raised for the idle-connection test,
# which uses a second, otherwise untouched instance (sluice-idle) so that the
# memory it reads is not what the matrix left in the first one.
# Builds that serve metrics listen on 127.0.0.1:9025 by default; each bench
# instance gets a free port instead, so two instances (or another Sluice on the
# machine) do not collide. Older builds without [http] get no section.
http_section() {
    if "$SLUICE_BIN" config dump 2>/dev/null | grep '^\[http\]' >/dev/null; then
        printf '\n[http]\nlisten = 127.0.0.1:%s\n' "$(free_port)"
    fi
}
write_sluice_conf() { # DIR PORT
    cat >"$1/sluice.conf" <<EOF
[server]
hostname = sluice.bench.test
listen_submission = 127.0.0.1:$2
listen_smtps =
var_dir = $1/var
relay_networks = 127.0.0.1/32
shutdown_grace = 5s

[limits]
max_connections = 12000
max_connections_per_ip = 2000

[log]
file = $1/sluice.log
$(http_section)

[upstream sink]
host = 127.0.0.1
port = $SINK_PORT
tls = none
verify = none
max_connections = 20
messages_per_connection = 1000
EOF
    "$SLUICE_BIN" config check "$1/sluice.conf" >/dev/null || die "Sluice rejects $1/sluice.conf"
}
if [[ " $RELAYS " == *" sluice "* ]]; then
    SL="$TMP/sluice"
    mkdir -p "$SL"
    write_sluice_conf "$SL" "$SL_PORT"
    "$SLUICE_BIN" serve -c "$SL/sluice.conf" >"$SL/stdout.log" 2>&1 &
    SLUICE_PID=$!
    if ! wait_port "$SL_PORT"; then
        cat "$SL/stdout.log" "$SL/sluice.log" >&2 2>/dev/null || true
        die "Sluice did not start"
    fi
    if [ "$IDLE_CONNS" -gt 0 ]; then
        SLI="$TMP/sluice-idle"
        SLI_PORT=$(free_port)
        mkdir -p "$SLI"
        write_sluice_conf "$SLI" "$SLI_PORT"
        "$SLUICE_BIN" serve -c "$SLI/sluice.conf" >"$SLI/stdout.log" 2>&1 &
        SLUICE_IDLE_PID=$!
        wait_port "$SLI_PORT" || die "the second Sluice did not start: $(tail -3 "$SLI/sluice.log")"
    fi
fi

# 4. The group-commit probe, built here so the run needs nothing prebuilt.
cc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$TMP/fsync_ceiling" "$BENCH/fsync_ceiling.c"

args=(--sink-out "$TMP/sink.out" --sink-port "$SINK_PORT" --tmp "$TMP" --out "$OUT" --json-out "$TMP/results.json"
      --sizes "$SIZES" --concs "$CONCS" --count "$COUNT" --lat-count "$LAT_COUNT" --repeat "$REPEAT"
      --fsync-bin "$TMP/fsync_ceiling" --idle-conns "$IDLE_CONNS" --sluice-bin "$SLUICE_BIN"
      --command-line "$CMDLINE")
[ -n "$PF_STARTED" ] && args+=(--relay "postfix:$PF_PORT:$PF/queue/pid/master.pid:$PF/maillog")
[ -n "$SLUICE_PID" ] && args+=(--relay "sluice:$SL_PORT:$SLUICE_PID:$SL/sluice.log")
[ -n "$SLUICE_IDLE_PID" ] && args+=(--relay "sluice-idle:$SLI_PORT:$SLUICE_IDLE_PID:$SLI/sluice.log")
echo "bench: temp dir $TMP; sink :$SINK_PORT, Postfix :$PF_PORT, Sluice :$SL_PORT"
"$PY" "$BENCH/driver.py" "${args[@]}"

#!/usr/bin/env bash
# Sluice measured beside Postfix on this machine, in one run: one smtp-sink as
# the common upstream, a private Postfix instance (STARTTLS submission with
# Cyrus SASL on a sasldb, OpenDKIM as a milter on a third listener) and Sluice
# (password and API-key credentials, a DKIM key) both relaying to it. Then
# bench/workloads.py runs the submission workloads with sluice-loadgen and
# writes bench/results/workloads.md, and/or bench/driver.py runs the older
# smtp-source matrix and writes bench/results/latest.md.
# Needs root (Postfix's master must start as root) and Debian's postfix,
# sasl2-bin, libsasl2-modules, opendkim and opendkim-tools packages.
#
# Environment:
#   BENCH_SUITE             workloads (default: TLS, AUTH, DKIM rows with sluice-loadgen),
#                           matrix (sizes x concurrency, plaintext, smtp-source), or both
#   BENCH_SECONDS           seconds per workload run (default 10; QUICK 5)
#   BENCH_WL_REPEAT         passes over the workloads, medians reported (default 2)
#   BENCH_WL_OUT            workloads results file (default bench/results/workloads.md)
#   LOADGEN                 default sluice-loadgen beside SLUICE_BIN
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
LOADGEN=${LOADGEN:-$(dirname "$SLUICE_BIN")/sluice-loadgen}
SUITE=${BENCH_SUITE:-workloads}
CMDLINE="$(env | { grep -E '^(QUICK|BENCH_[A-Z_]+|SLUICE_BIN|LOADGEN)=' || true; } | sort | tr '\n' ' ')"
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
if [ "${QUICK:-0}" = 1 ]; then WL_SECONDS=${BENCH_SECONDS:-5}; else WL_SECONDS=${BENCH_SECONDS:-10}; fi
WL_REPEAT=${BENCH_WL_REPEAT:-2}
WL_OUT=${BENCH_WL_OUT:-$BENCH/results/workloads.md}
case "$SUITE" in workloads | matrix | both) ;; *) echo "bench: BENCH_SUITE is workloads, matrix or both" >&2; exit 2 ;; esac
[ "$SUITE" = workloads ] && IDLE_CONNS=0   # the idle-connection test belongs to the matrix
RELAYS=${BENCH_RELAYS:-postfix sluice}
OUT=${BENCH_OUT:-$BENCH/results/latest.md}

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: a private Postfix instance can only be started by root"
[ -x "$SLUICE_BIN" ] || die "no Sluice binary at $SLUICE_BIN (build with: make build)"
for t in smtp-source smtp-sink postfix postconf cc openssl saslpasswd2 opendkim; do
    command -v "$t" >/dev/null || die "$t not found (install with: scripts/deps.sh test)"
done
[ -x "$LOADGEN" ] || die "no load generator at $LOADGEN (it is built with Sluice: make build)"
getent passwd opendkim >/dev/null || die "no opendkim user (install with: scripts/deps.sh test)"

# Descriptors for 10,000 idle connections (Sluice and the client inherit this).
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TMPBASE=${BENCH_TMPDIR:-/var/tmp}
[ "$(stat -f -c %T "$TMPBASE")" != tmpfs ] || die "$TMPBASE is tmpfs; set BENCH_TMPDIR to a directory on disk"
TMP=$(mktemp -d "$TMPBASE/sluice-bench.XXXXXX")
chmod 755 "$TMP"   # Postfix (user postfix) and Sluice (user sluice) must reach their state
PF="$TMP/postfix"
SINK_PID= SLUICE_PID= SLUICE_IDLE_PID= PF_STARTED= DKIM_PID= DK=

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
    [ -n "$DKIM_PID" ] && kill -TERM "$DKIM_PID" 2>/dev/null || true
    [ -n "$DK" ] && rm -rf "$DK"
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

# Distinct free loopback ports, one per listener.
PORTS=()
new_port() {
    local p
    while :; do
        p=$(free_port)
        [[ " ${PORTS[*]} " == *" $p "* ]] || break
    done
    PORTS+=("$p")
}
new_port; SINK_PORT=${PORTS[-1]}
new_port; PF_PORT=${PORTS[-1]}
new_port; PF_SUB_PORT=${PORTS[-1]}
new_port; PF_DKIM_PORT=${PORTS[-1]}
new_port; MILTER_PORT=${PORTS[-1]}
new_port; SL_PORT=${PORTS[-1]}

# One certificate (ECDSA P-256, as Sluice generates for itself) and one DKIM
# key (RSA 2048) shared by both relays, so both do the same cryptography.
mkdir -p "$TMP/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=relay.bench.test -addext subjectAltName=DNS:relay.bench.test \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" 2>"$TMP/openssl.log" || die "openssl: $(cat "$TMP/openssl.log")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/dkim.key" 2>>"$TMP/openssl.log" \
    || die "openssl: $(cat "$TMP/openssl.log")"
chmod 644 "$TMP/tls/cert.pem"
chmod 600 "$TMP/tls/key.pem" "$TMP/dkim.key"
# Mail From: this domain is signed (the DKIM rows); the other rows use bench.test.
DKIM_DOMAIN=dkim.bench.test DKIM_SELECTOR=bench
# The secret of the password rows. Postfix has no API keys: its API-key row
# logs in with Sluice's key as the password of a second SASL user.
AUTH_PASS="correct horse battery staple"

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
# Submission (the services in master.cf turn these on): TLS with the shared
# certificate, Cyrus SASL on a sasldb, OpenDKIM as a milter.
smtpd_tls_cert_file = $TMP/tls/cert.pem
smtpd_tls_key_file = $TMP/tls/key.pem
smtpd_tls_session_cache_database = btree:$PF/data/smtpd_scache
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $PF/etc/sasl
smtpd_sasl_local_domain = bench.test
milter_default_action = tempfail
# One log line per milter-added signature: how the driver checks that every
# message of a DKIM row was signed.
milter_header_checks = regexp:$PF/etc/milter_header_checks
EOF
    printf '%s\n' '/^DKIM-Signature:/ WARN dkim-signed' >"$PF/etc/milter_header_checks"
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
tlsmgr     unix  - - n 1000? 1 tlsmgr
127.0.0.1:$PF_SUB_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$PF_DKIM_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission-dkim
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_milters=inet:127.0.0.1:$MILTER_PORT
EOF
    # Cyrus SASL: PLAIN and LOGIN checked against a sasldb that smtpd (user
    # postfix) can read; the users are USER@bench.test (smtpd_sasl_local_domain).
    mkdir -p "$PF/etc/sasl"
    cat >"$PF/etc/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $PF/etc/sasl/sasldb2
EOF
    # OpenDKIM: signs mail From the DKIM domain with the shared key; it runs as
    # its own user, which must own the key. It refuses a configuration or key
    # under a directory others may write (/var/tmp), hence a directory in /run.
    DK=$(mktemp -d /run/sluice-bench-opendkim.XXXXXX)
    install -m 600 -o opendkim -g opendkim "$TMP/dkim.key" "$DK/bench.private"
    chown opendkim:opendkim "$DK"
    cat >"$DK/opendkim.conf" <<EOF
Syslog no
Mode s
Socket inet:$MILTER_PORT@127.0.0.1
Domain $DKIM_DOMAIN
Selector $DKIM_SELECTOR
KeyFile $DK/bench.private
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
UserID opendkim
PidFile $DK/opendkim.pid
EOF
    opendkim -f -x "$DK/opendkim.conf" >"$DK/opendkim.log" 2>&1 &
    DKIM_PID=$!
    wait_port "$MILTER_PORT" || die "OpenDKIM did not start: $(cat "$DK/opendkim.log")"
    printf '%s' "$AUTH_PASS" | saslpasswd2 -p -c -f "$PF/etc/sasl/sasldb2" -u bench.test app \
        || die "saslpasswd2 failed"
    chown root:postfix "$PF/etc/sasl/sasldb2"
    chmod 640 "$PF/etc/sasl/sasldb2"
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
# The same for the HTTPS API (default 127.0.0.1:8443).
api_section() {
    if "$SLUICE_BIN" config dump 2>/dev/null | grep '^\[api\]' >/dev/null; then
        printf '\n[api]\nlisten = 127.0.0.1:%s\n' "$(free_port)"
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
$(api_section)

[tls]
cert = $TMP/tls/cert.pem
key = $TMP/tls/key.pem

[dkim]
key_dir = $1/dkim

[upstream sink]
host = 127.0.0.1
port = $SINK_PORT
tls = none
verify = none
max_connections = 20
messages_per_connection = 1000
EOF
    "$SLUICE_BIN" config check "$1/sluice.conf" >/dev/null || die "Sluice rejects $1/sluice.conf"
    # The key Sluice signs mail From the DKIM domain with (the one OpenDKIM has).
    mkdir -p "$1/dkim"
    install -m 600 "$TMP/dkim.key" "$1/dkim/$DKIM_SELECTOR._domainkey.$DKIM_DOMAIN.key"
}
if [[ " $RELAYS " == *" sluice "* ]]; then
    SL="$TMP/sluice"
    mkdir -p "$SL"
    write_sluice_conf "$SL" "$SL_PORT"
    # A password credential and an API-key credential, both allowed the two
    # sender domains of the workloads.
    printf '%s\n' "$AUTH_PASS" | SLUICE_CONFIG="$SL/sluice.conf" "$SLUICE_BIN" creds add app --password --init \
        --allow-from '*@bench.test' --allow-from "*@$DKIM_DOMAIN" >/dev/null || die "sluice creds add app failed"
    API_KEY=$(SLUICE_CONFIG="$SL/sluice.conf" "$SLUICE_BIN" creds add api --api-key --json \
        --allow-from '*@bench.test' --allow-from "*@$DKIM_DOMAIN" |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["api_key"])') || die "sluice creds add api failed"
    if [ -n "$PF_STARTED" ]; then
        printf '%s' "$API_KEY" | saslpasswd2 -p -c -f "$PF/etc/sasl/sasldb2" -u bench.test api \
            || die "saslpasswd2 failed"
    fi
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
echo "bench: temp dir $TMP; sink :$SINK_PORT, Postfix :$PF_PORT (submission :$PF_SUB_PORT, with OpenDKIM :$PF_DKIM_PORT), Sluice :$SL_PORT"
if [ "$SUITE" != matrix ]; then
    # Secrets go to the driver in a file, not on a command line others can read.
    umask 077
    printf 'password=%s\napi_key=%s\n' "$AUTH_PASS" "${API_KEY:-}" >"$TMP/secrets"
    umask 022
    wl=(--loadgen "$LOADGEN" --sink-out "$TMP/sink.out" --out "$WL_OUT" --json-out "$TMP/workloads.json"
        --seconds "$WL_SECONDS" --repeat "$WL_REPEAT" --secrets "$TMP/secrets" --cafile "$TMP/tls/cert.pem"
        --sni relay.bench.test --dkim-domain "$DKIM_DOMAIN" --sluice-bin "$SLUICE_BIN" --command-line "$CMDLINE")
    [ -n "$PF_STARTED" ] && wl+=(--postfix "$PF_PORT:$PF_SUB_PORT:$PF_DKIM_PORT:$PF/queue/pid/master.pid:$DKIM_PID:$PF/maillog")
    [ -n "$SLUICE_PID" ] && wl+=(--sluice "$SL_PORT:$SLUICE_PID:$SL/sluice.log")
    "$PY" "$BENCH/workloads.py" "${wl[@]}"
fi
[ "$SUITE" = workloads ] || "$PY" "$BENCH/driver.py" "${args[@]}"

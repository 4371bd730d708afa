#!/usr/bin/env bash
# Cost of authentication and policy per message: builds bench/auth_bench.c
# against the library of a build directory and runs it; then, against a
# running relay, messages/s with one AUTH per connection of 50 messages and
# with one AUTH per message (the first checked with argon2id, the others
# answered by the login cache, [auth] cache_ttl).
#   BUILD_DIR    default build (needs its level libraries: `meson setup build && ninja -C build`)
#   ITERATIONS   per-message check loops (default 100000)
#   MESSAGES     messages for the end-to-end part (default 200)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ITERATIONS=${ITERATIONS:-100000}
MESSAGES=${MESSAGES:-200}
LEVEL_LIBS=$(printf "%s\n" "$BUILD_DIR"/src/libsluice_level*.a | sort -r)
[ -f "${LEVEL_LIBS%%$'\n'*}" ] || { echo "no $BUILD_DIR/src/libsluice_level*.a; build first" >&2; exit 1; }
TMP=$(mktemp -d /tmp/sluice-authbench.XXXXXX)
chmod 755 "$TMP"  # started as root, the relay runs as user sluice and must reach var/
trap 'kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT
PID=
LIBS=$(pkg-config --libs libevent libevent_openssl libevent_pthreads openssl inih libargon2 \
       jansson sqlite3 libunbound libcurl)
cc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -I"$ROOT/src" -o "$TMP/auth_bench" \
   "$ROOT/bench/auth_bench.c" -Wl,--start-group $LEVEL_LIBS -Wl,--end-group $LIBS -lpthread -lm
echo "## Policy and authentication cost ($(nproc) cores, $(date -u +%Y-%m-%d))"
echo
"$TMP/auth_bench" "$ITERATIONS"

# end to end: a relay with the capture upstream, plaintext AUTH on loopback
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SLUICE_SERVER_VAR_DIR="$TMP/var" SLUICE_SERVER_LISTEN_SUBMISSION="127.0.0.1:$PORT" \
       SLUICE_SERVER_LISTEN_SMTPS="" SLUICE_AUTH_ALLOW_PLAINTEXT_LOOPBACK=true \
       SLUICE_SERVER_HOSTNAME=bench.test SLUICE_LOG_LEVEL=warn
SLUICE=${SLUICE_BIN:-$BUILD_DIR/sluice}
printf '%s\n' "correct horse battery" | "$SLUICE" creds add shop --password --init \
    --allow-from '*@shop.example' >/dev/null
"$SLUICE" serve >"$TMP/serve.log" 2>&1 &
PID=$!
/usr/bin/python3 - "$PORT" "$MESSAGES" <<'EOF'
import smtplib, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
msg = (b"From: orders@shop.example\r\nTo: a@example.net\r\nSubject: bench\r\n\r\n"
       + b"Thank you for your order.\r\n" * 40)

def run(per_conn):
    t = time.monotonic()
    sent = 0
    while sent < n:
        with smtplib.SMTP("127.0.0.1", port) as c:
            c.login("shop", "correct horse battery")
            for _ in range(min(per_conn, n - sent)):
                c.sendmail("orders@shop.example", ["a@example.net"], msg)
                sent += 1
    return n / (time.monotonic() - t)

a, b = run(50), run(1)
print()
print("| end to end, one client, capture upstream | messages/s |\n| --- | --- |")
print(f"| AUTH once per connection of 50 messages | {a:.0f} |")
print(f"| AUTH for every message (argon2id once, then the login cache) | {b:.0f} |")
EOF

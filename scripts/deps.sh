#!/usr/bin/env bash
# Installs the Debian 12 packages Sluice needs. `deps.sh` = build and run;
# `deps.sh test` = also everything the test suite and benchmarks use.
set -euo pipefail
build=(build-essential pkg-config meson ninja-build libevent-dev libssl-dev libinih-dev
       libargon2-dev libjansson-dev libsqlite3-dev libunbound-dev libcurl4-openssl-dev openssl
       publicsuffix)
test=(clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest python3-aiosmtpd python3-dkim
      python3-spf python3-yaml swaks postfix procps iproute2)
want=("${build[@]}")
[ "${1:-}" = test ] && want+=("${test[@]}")
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing: ${missing[*]}"
# postfix asks questions unless told not to; it is only used by the benchmarks and tests
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

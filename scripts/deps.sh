#!/usr/bin/env bash
# Installs the Debian 12 packages Sluice needs. `deps.sh` = build and run;
# `deps.sh test` = also everything the test suite and benchmarks use.
# Works on a bare Debian 12 (debootstrap minbase) as root, or with sudo.
set -euo pipefail
build=(build-essential pkg-config meson ninja-build libevent-dev libssl-dev libinih-dev
       libargon2-dev libjansson-dev libsqlite3-dev libpq-dev libunbound-dev nettle-dev libcurl4-openssl-dev
       openssl ca-certificates publicsuffix passwd)
# swaks needs Net::SSLeay and IO::Socket::SSL for STARTTLS; faketime for clock-step tests;
# podman (with runc, CNI plugins, fuse-overlayfs) and debootstrap build and run the container
# image in tests/integration/test_container.py; curl and nodejs are HTTP API clients in test_api.py
test=(clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest python3-aiosmtpd python3-dkim
      python3-spf python3-yaml swaks libnet-ssleay-perl libio-socket-ssl-perl postfix procps
      iproute2 faketime git sasl2-bin libsasl2-modules opendkim opendkim-tools postgresql php-cli
      bsd-mailx podman runc containernetworking-plugins fuse-overlayfs debootstrap curl nodejs)
want=("${build[@]}")
[ "${1:-}" = test ] && want+=("${test[@]}")
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "deps.sh: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
        SUDO=sudo
    fi
    echo "deps.sh: installing ${missing[*]}"
    # postfix asks questions unless told not to; it is only used by the benchmarks and tests
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The daemon drops root privileges to this account when started as root.
if [ "$(id -u)" -eq 0 ] && ! getent passwd sluice >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sluice
fi

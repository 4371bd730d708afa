#!/usr/bin/env bash
# Builds the Sluice image with podman: deploy/container/build.sh [TAG]
#
# With no registry reachable, the Debian 12 base image is made once from
# Debian packages (debootstrap minbase, `podman import`) and kept: it is made
# again only when no image of that name exists. Where a registry is reachable
# set SLUICE_BASE_IMAGE=docker.io/library/debian:12-slim and it is pulled as
# usual. Layers are cached by podman, so a rebuild with no change takes
# seconds.
#
# Environment: SLUICE_BASE_IMAGE (default localhost/debian:12-slim, made here
# when missing), PODMAN (default "podman --runtime /usr/sbin/runc" when runc
# exists: crun fails on some cgroup set-ups), DEBIAN_MIRROR (for debootstrap).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=${1:-localhost/sluice:latest}
base=${SLUICE_BASE_IMAGE:-localhost/debian:12-slim}
if [ -z "${PODMAN:-}" ]; then
    PODMAN=podman
    [ -x /usr/sbin/runc ] && PODMAN="podman --runtime /usr/sbin/runc"
fi
# podman's default ulimits can exceed what the host allows a container
ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

if ! $PODMAN image exists "$base"; then
    case "$base" in
    localhost/*)
        command -v debootstrap >/dev/null || {
            echo "build.sh: $base is missing and debootstrap is not installed" >&2
            exit 1
        }
        mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' \
            /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
        mirror=${mirror:-http://deb.debian.org/debian}
        d=$(mktemp -d)
        trap 'rm -rf "$d"' EXIT
        echo "build.sh: making $base with debootstrap from $mirror"
        debootstrap --variant=minbase bookworm "$d" "$mirror" >/dev/null
        # the same cleanup the slim image does: no apt lists, no docs
        rm -rf "$d"/var/lib/apt/lists/* "$d"/usr/share/doc/* "$d"/usr/share/man/*
        tar -C "$d" -c . | $PODMAN import - "$base" >/dev/null
        rm -rf "$d"
        trap - EXIT
        ;;
    *) $PODMAN pull "$base" ;;
    esac
fi

$PODMAN build "${ulimits[@]}" --layers --format docker --build-arg "BASE_IMAGE=$base" \
    -f "$here/Dockerfile" -t "$tag" "$root"

#!/usr/bin/env bash
# Runs deploy/kube/sluice.yaml (or FILE) with `podman kube play` on one host:
#   deploy/kube/play.sh [FILE]          start (replacing a running copy)
#   deploy/kube/play.sh --down [FILE]   stop and remove the pod and its secrets (the volume stays)
#
# podman 4.3 takes secretKeyRef values from its own secret store, as a JSON
# map of key to base64 value, and keeps a Secret given in the YAML in a form
# it cannot read back: so each Secret of the file becomes a podman secret
# here and the rest of the file is played. A claim whose volume exists (an
# earlier run, with its spool) is left out: podman would refuse to make it. kube play has no --ulimit or
# --runtime flag; they come from a containers.conf (CONTAINERS_CONF).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
down=false
[ "${1:-}" = --down ] && { down=true; shift; }
file=${1:-$here/sluice.yaml}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "${CONTAINERS_CONF:-}" ]; then
    runtime=""
    [ -x /usr/sbin/runc ] && runtime='[engine]
runtime = "runc"'
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n%s\n' \
        "$runtime" >"$work/containers.conf"
    export CONTAINERS_CONF=$work/containers.conf
fi
/usr/bin/python3 - "$file" "$work" <<'PY'
import json, subprocess, sys, yaml
src, work = sys.argv[1], sys.argv[2]
def volume_exists(name):
    return subprocess.run(["podman", "volume", "exists", name]).returncode == 0
docs = [d for d in yaml.safe_load_all(open(src)) if d]
rest = []
for d in docs:
    if d.get("kind") == "Secret":
        data = dict(d.get("data") or {})
        data = {k: (v or "") for k, v in data.items()}
        with open(f"{work}/secret.{d['metadata']['name']}", "w") as f:
            json.dump(data, f)
    elif d.get("kind") == "PersistentVolumeClaim" and volume_exists(d["metadata"]["name"]):
        pass  # kept from an earlier run: podman would refuse to create it again
    else:
        rest.append(d)
with open(f"{work}/play.yaml", "w") as f:
    yaml.safe_dump_all(rest, f)
PY
if $down; then
    podman kube down "$work/play.yaml"
    for s in "$work"/secret.*; do
        [ -e "$s" ] && podman secret rm "${s##*/secret.}" >/dev/null 2>&1 || true
    done
    exit 0
fi
for s in "$work"/secret.*; do
    [ -e "$s" ] || continue
    name=${s##*/secret.}
    podman secret rm "$name" >/dev/null 2>&1 || true
    podman secret create "$name" "$s" >/dev/null
done
podman kube play --replace "$work/play.yaml"

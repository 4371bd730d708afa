#!/usr/bin/env bash
# Regenerates the key reference in docs/CONFIG.md (everything after the
# "generated" marker) from the binary's own key table.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/sluice}
marker='<!-- generated: sluice config docs -->'
grep -qF "$marker" docs/CONFIG.md || { echo "gen_config_docs: marker missing in docs/CONFIG.md" >&2; exit 1; }
tmp=$(mktemp)
sed "/^$marker\$/q" docs/CONFIG.md >"$tmp"
"$bin" config docs >>"$tmp"
mv "$tmp" docs/CONFIG.md

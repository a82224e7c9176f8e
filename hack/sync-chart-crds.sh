#!/usr/bin/env bash
# Copy the ModelDeployment CRD (single source of truth: crds/) into the Helm chart.
# Helm does not package symlinks, so the chart carries a copy; tests/chart/unit/test_chart_render.py
# fails when the copy differs. Run after every change to crds/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/charts/modelplane/files/crds"
mkdir -p "$dest"
rm -f "$dest"/*.yaml
cp "$root"/crds/*.yaml "$dest"/
echo "synced $(ls "$root"/crds/*.yaml | wc -l) CRD file(s) into ${dest#"$root"/}"

#!/usr/bin/env bash
# Render deploy/modelplane.yaml, the plain manifest bundle for users without Helm, from the
# chart: release "modelplane" in namespace "modelplane-system", every namespace watched, one
# replica, the CRD left to crds/. Install with
#   kubectl apply --server-side -f crds/ -f deploy/modelplane.yaml
# tests/chart/unit/test_chart_render.py fails when the committed bundle differs from a fresh render.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
helm="${HELM:-${MODELPLANE_CACHE:-$HOME/.cache/modelplane}/bin/helm}"
out="${1:-$root/deploy/modelplane.yaml}"
{
  cat <<'YAML'
# modelplane operator: plain manifests rendered from charts/modelplane by hack/render-bundle.sh.
# Do not edit; change the chart and re-run the script. Install (the CRD comes from crds/):
#   kubectl apply --server-side -f crds/ -f deploy/modelplane.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: modelplane-system
  labels:
    pod-security.kubernetes.io/enforce: restricted
YAML
  "$helm" template modelplane "$root/charts/modelplane" \
    --namespace modelplane-system \
    --set crds.enabled=false
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "rendered ${out#"$root"/}"

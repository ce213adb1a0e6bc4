#!/usr/bin/env bash
# Validates every manifest kcache ships or generates, in strict mode (unknown fields
# are errors), for each Kubernetes version kcache supports:
#   - crds/cachecluster.yaml (checked to be what crdgen prints now),
#   - examples/*.yaml, and what `kcache-operator render` prints for each of them.
# Built-in kinds go through kubernetes-validate. It has no schema for custom
# resources and only warns about them, so those warnings are allowed for exactly
# CacheCluster and the Prometheus Operator kinds, and CacheClusters are checked
# against the CRD's own openAPIV3Schema by scripts/validate-custom-resources.py
# (their CEL rules are evaluated by kcache-crd's Rust tests).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${KCACHE_VENV:-$PWD/.venv}"
versions=(1.33 1.34 1.35 1.36 1.37)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo run -q -p kcache-crd --bin crdgen > "$work/crd.yaml"
if ! cmp -s "$work/crd.yaml" crds/cachecluster.yaml; then
  echo "crds/cachecluster.yaml is stale: run cargo run -p kcache-crd --bin crdgen > crds/cachecluster.yaml"
  exit 1
fi

rendered=()
for example in examples/*.yaml; do
  out="$work/rendered-$(basename "$example")"
  cargo run -q -p kcache-operator -- render -f "$example" > "$out"
  rendered+=("$out")
done

version_args=()
for v in "${versions[@]}"; do version_args+=(-k "$v"); done
status=0
"$venv/bin/kubernetes-validate" --strict "${version_args[@]}" \
  crds/cachecluster.yaml examples/*.yaml "${rendered[@]}" > "$work/report" || status=$?
custom="^WARN .* Couldn't find schema for kind (CacheCluster with api version kcache\.io/v1alpha1|(ServiceMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1) "
if unexpected="$(grep -v '^INFO ' "$work/report" | grep -Ev "$custom")"; then
  echo "$unexpected"
  echo "kubernetes-validate failed"
  exit 1
fi
if [[ $status != 0 ]]; then
  cat "$work/report"
  exit "$status"
fi
passed="$(grep -c '^INFO ' "$work/report")"
skipped="$(grep -c '^WARN ' "$work/report" || true)"
echo "kubernetes-validate --strict (${versions[*]}): $passed object checks passed, $skipped custom-resource checks left to the CRD schema"

"$venv/bin/python" scripts/validate-custom-resources.py crds/cachecluster.yaml examples/*.yaml

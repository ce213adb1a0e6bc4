#!/usr/bin/env bash
# Checks the Helm chart charts/kcache-operator with real Helm (through helm-python-sdk):
# lint, render with defaults and with every value set, kubernetes-validate --strict for
# Kubernetes 1.33-1.37 (ServiceMonitor and PrometheusRule against prometheus-operator's
# CRDs), RBAC, the operator's env contract and refused values. The
# checks themselves, and what each asserts, are in chart.py beside this file.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${KCACHE_VENV:-$PWD/.venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build -q -p kcache-operator
# The ServiceMonitor and PrometheusRule CRDs of the prometheus-operator release the real
# control plane pins (e2e/controlplane/prometheus-operator/go.mod), from the Go module.
module_dir="$(cd e2e/controlplane/prometheus-operator &&
  go mod download -json github.com/prometheus-operator/prometheus-operator |
  "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
"$venv/bin/python" scripts/checks/chart.py "$work" target/debug/kcache-operator \
  "$module_dir/example/prometheus-operator-crd"

#!/usr/bin/env bash
# Installs the Helm chart with real Helm (helm-python-sdk) into kcache-local's cluster on
# the real control plane: the operator runs from the chart's Deployment under the
# chart's RBAC alone, reconciles the CacheCluster the release creates to Available, the
# API server confirms the RBAC is what the operator needs and no more, and `helm
# uninstall` leaves only the CRD. It runs in a network namespace of its own (the pod
# network; scripts/netns.sh, root), is bounded by `timeout`, and stops kcache-local and
# its pods at the end. See chart-install.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${KCACHE_VENV:-$PWD/.venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build -q -p kcache-node -p kcache-operator -p kcache-e2e --bins
# The real control plane's binaries (built once per pin, then cached; test.sh exports it).
KCACHE_CONTROLPLANE_BIN="${KCACHE_CONTROLPLANE_BIN:-$(e2e/controlplane/build.sh)}"
export KCACHE_CONTROLPLANE_BIN
timeout --kill-after=30 480 scripts/netns.sh \
  "$venv/bin/python" scripts/checks/chart-install.py "$work" target/debug 10.244.0.0

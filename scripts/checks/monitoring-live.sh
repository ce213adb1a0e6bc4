#!/usr/bin/env bash
# Runs a real Prometheus (Debian's package) against three live kcache nodes and the
# operator under a short workload, and evaluates every dashboard panel's and every
# alert's PromQL through its HTTP API. Everything binds 127.0.0.1 and stops at the end;
# the whole check is bounded by `timeout`. The checks are in monitoring-live.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/checks/prometheus-tools.sh

venv="${KCACHE_VENV:-$PWD/.venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build -q -p kcache-node -p kcache-cli -p kcache-operator -p kcache-e2e --bins
timeout --kill-after=20 300 "$venv/bin/python" scripts/checks/monitoring-live.py "$work" target/debug

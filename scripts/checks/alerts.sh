#!/usr/bin/env bash
# Checks the kcache alert rules with a real Prometheus (Debian's promtool): the
# chart's PrometheusRule and the one the operator renders for a CacheCluster pass
# `promtool check rules`, are the same node alerts, and pass the unit tests in
# charts/kcache-operator/tests/ (every alert fires in one case and stays quiet in
# another). The checks are in alerts.py beside this file.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/checks/prometheus-tools.sh

venv="${KCACHE_VENV:-$PWD/.venv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build -q -p kcache-operator
"$venv/bin/python" scripts/checks/alerts.py "$work" target/debug/kcache-operator

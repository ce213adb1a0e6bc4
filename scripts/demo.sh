#!/usr/bin/env bash
# The README's first command: builds kcache, starts a local Kubernetes (API emulator,
# StatefulSet and EndpointSlice controllers, a kubelet that runs pods as processes on
# 127.0.0.N, cluster DNS) with the kcache operator, applies the example CacheCluster,
# waits for it to be Ready, drives a workload through its headless Service, prints a
# summary and the kubectl line to paste, and runs until Ctrl-C (`--exit` stops after
# the summary). Needs nothing but cargo.
#
#   scripts/demo.sh [--exit] [--kubeconfig PATH]     (any `kcache-local demo` flag)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building (cargo build --release: kcache-local, kcache-node, kcache)"
cargo build --release --quiet -p kcache-e2e -p kcache-node -p kcache-cli
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
# The kubeconfig (and pod logs beside it) go under target/ unless --kubeconfig says otherwise.
export KCACHE_LOCAL_KUBECONFIG="${KCACHE_LOCAL_KUBECONFIG:-$PWD/target/kcache-local/kubeconfig}"
exec "$bin/kcache-local" demo "$@"

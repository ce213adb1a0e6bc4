#!/usr/bin/env bash
# Keeps the README's first command true: runs the demo end to end and stops, then checks
# the summary says what the README promises (three ready pods, every key written found).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
scripts/demo.sh --exit --kubeconfig "$dir/kubeconfig" | tee "$dir/out"
ready=$(grep -cE '^  pod demo-[0-2] .*ready=true$' "$dir/out" || true)
[[ "$ready" == 3 ]] || { echo "demo check: expected 3 ready pods in the summary, saw $ready" >&2; exit 1; }
grep -qE '^  keys written 2000, items in the cluster 2000 over 3 nodes$' "$dir/out" \
  || { echo "demo check: the summary does not show 2000 keys over 3 nodes" >&2; exit 1; }
grep -qE 'hits 2000, misses 2000' "$dir/out" \
  || { echo "demo check: not every written key was read back" >&2; exit 1; }
echo "demo check: 3/3 pods ready, 2000/2000 keys read back"

#!/usr/bin/env bash
# Keeps the benchmark harness working: a seconds-long run of bench/run.sh against
# kcache, and against Redis and memcached when they could be installed. It checks that
# every step runs and the report is written, never how fast anything was.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
OUT=$out timeout 600 bench/run.sh --smoke >"$out/log" 2>&1 || { cat "$out/log"; exit 1; }
for f in runs.jsonl results.md results.json; do
  [[ -s $out/$f ]] || { echo "bench smoke: $f missing"; cat "$out/log"; exit 1; }
done
grep -q '"label":"get/kcache"' "$out/runs.jsonl" || { echo "bench smoke: no kcache GET run"; exit 1; }
echo "bench smoke: $(wc -l <"$out/runs.jsonl") runs, report written"

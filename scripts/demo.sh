#!/usr/bin/env bash
# The README's first command: builds kcache, starts one node on 127.0.0.1, does a
# round trip with the kcache CLI, shows stats and metrics, and leaves the node
# running until Ctrl-C (or stops it at once with --exit).
#
# (The local control plane with the operator and a 3-node cluster replaces this once
# the e2e work lands.)
set -euo pipefail
cd "$(dirname "$0")/.."

exit_after=0
[[ "${1:-}" == "--exit" ]] && exit_after=1
grpc="${KCACHE_DEMO_GRPC:-127.0.0.1:7000}"
admin="${KCACHE_DEMO_ADMIN:-127.0.0.1:7001}"

echo "== building (cargo build --release)"
cargo build --release --quiet -p kcache-node -p kcache-client
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

http_get() { # a tiny HTTP GET with bash alone, so the demo needs no curl
  local host=${1%%:*} port=${1##*:} path=$2
  exec 3<>"/dev/tcp/$host/$port"
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3
  sed '1,/^\r$/d' <&3
  exec 3>&-
}

echo "== starting kcache-node (gRPC $grpc, admin $admin, 64MiB)"
"$bin/kcache-node" --grpc-addr "$grpc" --admin-addr "$admin" --max-memory 64MiB \
  --node-id demo-0 --log warn &
node=$!
trap 'kill $node 2>/dev/null; wait $node 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if http_get "$admin" /readyz 2>/dev/null | grep -q ready; then break; fi
  kill -0 $node 2>/dev/null || { echo "kcache-node exited; is $grpc or $admin in use?" >&2; exit 1; }
  sleep 0.1
done

kc() { echo "\$ kcache $*"; "$bin/kcache" --addr "$grpc" "$@"; }
kc set greeting "hello from kcache" --ttl 10m
kc get greeting -v
kc incr visits 1
kc incr visits 41
kc set greeting "replaced?" --nx || echo "(exit $?: not stored, the key exists)"
kc get nothing || echo "(exit $?: a miss)"
kc stats
kc topology
echo "\$ curl http://$admin/metrics | grep ^kcache_"
http_get "$admin" /metrics | grep -E '^kcache_(requests_total|items|memory|hits|misses)' | head -12

if [[ $exit_after == 1 ]]; then
  echo "== demo done"
  exit 0
fi
echo
echo "kcache-node is running: try  $bin/kcache --addr $grpc get greeting   (Ctrl-C stops it)"
wait $node

#!/usr/bin/env bash
# Profiles one kcache node under `kcache bench` and writes a flamegraph and a
# breakdown of where its CPU goes, by layer (kernel TCP, h2, tonic/prost, the store…).
#
#   bench/profile.sh [get|set|multi|pipeline] [seconds]
#
# Writes bench/results/flamegraph-<workload>.svg and prints the breakdown. The node
# runs on core 0 and the load generator on core 1, as in bench/run.sh. Needs `perf`
# (Debian: linux-perf) and inferno (`cargo install inferno`); both are installed when
# missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKLOAD=${1:-get}
SECONDS_PROFILED=${2:-4}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"

if ! command -v perf >/dev/null && [[ $(id -u) == 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install --quiet inferno
fi
export PATH=$HOME/.cargo/bin:$PATH

cargo build --release --quiet -p kcache-cli -p kcache-node
BIN=${CARGO_TARGET_DIR:-target}/release
SERVER_CPU=(); CLIENT_CPU=()
if [[ $(nproc) -ge 2 ]]; then SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1); fi

ADDR=127.0.0.1:17200
"${SERVER_CPU[@]}" "$BIN/kcache-node" --grpc-addr $ADDR --admin-addr 127.0.0.1:17201 \
  --max-memory 256MiB --log warn &
NODE=$!
trap 'kill $NODE 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/17200) 2>/dev/null && break; sleep 0.1; done

"${CLIENT_CPU[@]}" "$BIN/kcache" bench --target kcache-pipeline --servers $ADDR \
  --workload load --keys 100000 --depth 16 >/dev/null
case $WORKLOAD in
  get|set) args=(--target kcache --workload "$WORKLOAD") ;;
  multi) args=(--target kcache-multi --workload get --depth 16) ;;
  pipeline) args=(--target kcache-pipeline --workload get --depth 16) ;;
  *) echo "unknown workload $WORKLOAD (get, set, multi, pipeline)" >&2; exit 2 ;;
esac
"${CLIENT_CPU[@]}" "$BIN/kcache" bench --servers $ADDR --keys 100000 \
  --duration "$((SECONDS_PROFILED + 3))s" "${args[@]}" &
LOAD=$!
sleep 1.5
DATA=$(mktemp)
perf record -q -F 1500 --call-graph dwarf,32768 -p $NODE -o "$DATA" -- sleep "$SECONDS_PROFILED" \
  2>/dev/null
wait $LOAD
FOLDED=$(mktemp)
perf script -i "$DATA" 2>/dev/null | inferno-collapse-perf >"$FOLDED"
inferno-flamegraph --minwidth 0.5 --title "kcache-node, $WORKLOAD, $(date -u +%F)" <"$FOLDED" \
  >"$OUT/flamegraph-$WORKLOAD.svg"
rm -f "$DATA"

# Where the node's CPU goes, by the first matching layer of each sampled stack.
python3 - "$FOLDED" <<'EOF'
import collections, sys
layers = [
    ("kernel: TCP send (incl. loopback delivery)", ("writev", "sendmsg")),
    ("kernel: TCP receive", ("recvfrom", "libc_recv")),
    ("kernel: epoll / idle", ("epoll_wait",)),
    ("store", ("kcache_node::store",)),
    ("cluster / placement", ("kcache_node::cluster", "placement")),
    ("metrics", ("kcache_node::metrics", "prometheus")),
    ("protobuf encode/decode", ("prost", "tonic::codec", "tonic_prost")),
    ("kcache service", ("kcache_node::service",)),
    ("h2 (HPACK)", ("hpack",)),
    ("h2 (framing, streams)", ("h2::",)),
    ("hyper", ("hyper",)),
    ("tonic / tower routing", ("tonic", "axum", "tower")),
    ("tokio scheduler", ("tokio",)),
]
share, total = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    name = next((name for name, keys in layers if any(k in stack for k in keys)), "other")
    share[name] += n
for name, n in share.most_common():
    print(f"{n / max(total, 1):6.1%}  {name}")
EOF
rm -f "$FOLDED"
echo "flamegraph: $OUT/flamegraph-$WORKLOAD.svg" >&2

#!/usr/bin/env bash
# Runs a command in a new network namespace whose loopback interface also carries
# 10.244.0.0/24, the pod network of a local cluster on the real control plane (a real
# kube-apiserver refuses loopback endpoint addresses, so pods cannot use 127.0.0.N
# there). Nothing in the namespace can reach, or be reached from, any other network.
#
#   scripts/netns.sh target/release/kcache-local demo --real --pod-network 10.244.0.0
#
# Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN).
set -euo pipefail
network="${KCACHE_NETNS_NETWORK:-10.244.0.1/24}"
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  ip addr add "$0" dev lo
  exec "$@"
' "$network" "$@"

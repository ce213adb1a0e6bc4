#!/usr/bin/env bash
# Runs every test of kcache. On a fresh machine it first installs what the tests need
# (Python tools into .venv, Debian packages with apt-get when root), so it is also
# what CI runs (.ci/run calls exactly this).
#
#   scripts/test.sh          everything
#   scripts/test.sh --quick  skip lint (fmt, clippy)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

# Incremental compilation pays off only when the same tree is rebuilt after small edits;
# here it would add gigabytes to target/ for nothing (a CI machine's disk is not large).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Each step says how much disk is left and when it began, so a full disk or a slow
# run names the step that did it.
step() { echo "== $* ($(df -h --output=avail . | tail -1 | tr -d ' ') free, ${SECONDS}s in)"; }

# Python tools for manifest checks (kubernetes-validate, Helm's SDK) live in .venv.
export KCACHE_VENV="$PWD/.venv"
if [[ -f scripts/requirements.txt ]]; then
  if [[ ! -x "$KCACHE_VENV/bin/python" ]]; then
    python3 -m venv "$KCACHE_VENV"
  fi
  "$KCACHE_VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi

# Debian tools the tests use: openssl (the real control plane's certificates), ip and
# unshare (the network namespace the real-control-plane leg of the e2e suite runs in,
# and those node/tests/partition.rs cuts a member off in), iptables (that cut),
# redis-cli (a client of the nodes' Redis port in node/tests/redis_clients.rs).
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
command -v iptables >/dev/null || missing+=(iptables)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if (( ${#missing[@]} )); then
  step "apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [[ $quick == 0 ]]; then
  # A machine without rustfmt or clippy still runs every test, and says loudly what it
  # could not check.
  if cargo fmt --version >/dev/null 2>&1; then
    step "cargo fmt --check"
    cargo fmt --all -- --check
  else
    echo "!! WARNING: rustfmt is not installed (rustup component add rustfmt): formatting NOT checked" >&2
  fi
  if cargo clippy --version >/dev/null 2>&1; then
    step "cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
  else
    echo "!! WARNING: clippy is not installed (rustup component add clippy): lints NOT checked" >&2
  fi
fi

# The real control plane the e2e suite also runs on (e2e/tests/controlplane.rs): etcd,
# kube-apiserver, kube-controller-manager and kubectl built from the Go modules pinned in
# e2e/controlplane/go.mod, once per pin (about 9 minutes cold on 2 cores; a warm run only
# hashes the pin). Without Go this fails here rather than skipping the real-cluster tests.
step "e2e/controlplane/build.sh"
KCACHE_CONTROLPLANE_BIN="$(e2e/controlplane/build.sh)"
export KCACHE_CONTROLPLANE_BIN
# kubectl of the same release, ahead of whatever kubectl the machine has: the e2e suite
# drives both clusters with it.
export PATH="$KCACHE_CONTROLPLANE_BIN:$PATH"

step "cargo test"
# --no-fail-fast: one failing test binary does not hide the failures of those after it.
cargo test --workspace --locked --no-fail-fast

# The e2e scenarios again, on the real control plane. A real kube-apiserver refuses
# loopback endpoint addresses, so they run in a network namespace of their own whose
# lo carries the pod network 10.244.0.0/24 (scripts/netns.sh; needs root, as CI is).
step "e2e suite on the real control plane"
KCACHE_E2E_CONTROL_PLANE=real KCACHE_LOCAL_POD_NETWORK=10.244.0.0 \
  scripts/netns.sh cargo test --offline --locked --no-fail-fast -p kcache-e2e \
  --test flow --test scale --test kill --test invalid --test statefulset --test rollout --test security

# Further checks, one script each (manifest validation, chart lint, ...).
for check in scripts/checks/*.sh; do
  [[ -e "$check" ]] || continue
  step "$check"
  bash "$check"
done
step "all tests passed"

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

# Python tools for manifest checks (kubernetes-validate, Helm's SDK) live in .venv.
export KCACHE_VENV="$PWD/.venv"
if [[ -f scripts/requirements.txt ]]; then
  if [[ ! -x "$KCACHE_VENV/bin/python" ]]; then
    python3 -m venv "$KCACHE_VENV"
  fi
  "$KCACHE_VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
fi

if [[ $quick == 0 ]]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# The real control plane the e2e suite also runs on (e2e/tests/controlplane.rs): etcd,
# kube-apiserver, kube-controller-manager and kubectl built from the Go modules pinned in
# e2e/controlplane/go.mod, once per pin (about 9 minutes cold on 2 cores; a warm run only
# hashes the pin). Without Go this fails here rather than skipping the real-cluster tests.
echo "== e2e/controlplane/build.sh"
KCACHE_CONTROLPLANE_BIN="$(e2e/controlplane/build.sh)"
export KCACHE_CONTROLPLANE_BIN

echo "== cargo test"
cargo test --workspace --locked

# The e2e scenarios again, on the real control plane. A real kube-apiserver refuses
# loopback endpoint addresses, so they run in a network namespace of their own whose
# lo carries the pod network 10.244.0.0/24 (scripts/netns.sh; needs root, as CI is).
echo "== e2e suite on the real control plane"
KCACHE_E2E_CONTROL_PLANE=real KCACHE_LOCAL_POD_NETWORK=10.244.0.0 \
  scripts/netns.sh cargo test --offline --locked -p kcache-e2e \
  --test flow --test scale --test kill --test invalid

# Further checks, one script each (manifest validation, chart lint, ...).
for check in scripts/checks/*.sh; do
  [[ -e "$check" ]] || continue
  echo "== $check"
  bash "$check"
done
echo "all tests passed"

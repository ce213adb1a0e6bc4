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

# Further checks, one script each (manifest validation, chart lint, ...).
for check in scripts/checks/*.sh; do
  [[ -e "$check" ]] || continue
  echo "== $check"
  bash "$check"
done
echo "all tests passed"

#!/usr/bin/env bash
# Builds the real control plane pinned by go.mod (kube-apiserver, kube-controller-manager,
# etcd, and the kubectl of the same release) into a cache folder outside the repository,
# and prints that folder's bin dir on stdout (progress goes to stderr); the CRDs of the
# prometheus-operator release pinned in prometheus-operator/go.mod go to ../crds beside it.
# The folder is named after a hash of the pins and this script, so a build happens once
# per pin and a warm run only hashes five files.
#
#   bin=$(e2e/controlplane/build.sh)       # then: export KCACHE_CONTROLPLANE_BIN=$bin
#
# Needs only Go (the version go.mod names, or newer) and the Go module proxy.
# KCACHE_CACHE_DIR moves the cache (default ~/.cache/kcache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! command -v go >/dev/null; then
  echo "build.sh: go is not on PATH; the real control plane is built from Go modules" >&2
  exit 1
fi

cache="${KCACHE_CACHE_DIR:-$HOME/.cache/kcache}/controlplane"
pins=(go.mod go.sum prometheus-operator/go.mod prometheus-operator/go.sum build.sh)
key="$(cat "${pins[@]}" | sha256sum | cut -c1-16)"
out="$cache/$key"
bin="$out/bin"
# The CRDs prometheus-operator ships, for ServiceMonitor and PrometheusRule objects.
crds="$out/crds/prometheus-operator"
binaries=(kube-apiserver kube-controller-manager etcd kubectl)

complete() {
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
  [[ -f "$crds/monitoring.coreos.com_servicemonitors.yaml" ]]
}

if complete; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
# Parallel callers (several test binaries at once) wait for one build instead of racing.
exec 9>"$cache/$key.lock"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

start=$SECONDS
# The module and build caches this build fills (a few GB) are of no use once the
# binaries exist, and a pin change rebuilds from scratch anyway: keep them in a scratch
# folder that goes when the build ends, so the binaries are all that stays on disk.
# A build killed outright (SIGKILL, a CI timeout) leaves its folders behind; with the
# lock held, any still there are stale.
rm -rf "$cache/$key".go.* "$cache/$key".tmp.*
scratch="$(mktemp -d "$cache/$key.go.XXXXXX")"
mkdir -p "$scratch/tmp"
export GOMODCACHE="$scratch/mod" GOCACHE="$scratch/build" GOTMPDIR="$scratch/tmp"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
tmp=""
trap 'rm -rf "$scratch" ${tmp:+"$tmp"}' EXIT
echo "build.sh: downloading modules (go mod download)" >&2
go mod download

# Stamp the release into the binaries the way the Kubernetes release build does, so
# `kubectl version` and /version report it rather than v0.0.0-master.
version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
# The module proxy records the release time (RFC 3339) but not the commit.
built="$(go list -m -json k8s.io/kubernetes | sed -n 's/.*"Time": "\([^"]*\)".*/\1/p')"
major="${version#v}"
major="${major%%.*}"
minor="${version#v*.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=${built:-1970-01-01T00:00:00Z}"
done

tmp="$(mktemp -d "$cache/$key.tmp.XXXXXX")"
mkdir -p "$tmp/bin" "$tmp/crds/prometheus-operator"
echo "build.sh: downloading the prometheus-operator CRDs" >&2
module="$(cd prometheus-operator && go mod download -json github.com/prometheus-operator/prometheus-operator |
  sed -n 's/.*"Dir": "\([^"]*\)".*/\1/p')"
cp "$module"/example/prometheus-operator-crd/*.yaml "$tmp/crds/prometheus-operator/"
echo "build.sh: building ${binaries[*]} $version (CGO_ENABLED=0, -trimpath)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3
# The etcd server package's directory is server/v3, so go names its binary "server".
mv "$tmp/bin/server" "$tmp/bin/etcd"
chmod -R u+w,go+rX "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
tmp=""
echo "build.sh: built in $((SECONDS - start))s into $bin" >&2
echo "$bin"

#!/usr/bin/env bash
# Builds h2spec, pinned by go.mod/go.sum here, into a cache folder outside the
# repository and prints the binary's path on stdout (progress goes to stderr). The
# folder is named after a hash of the pins and this script, so a build happens once
# per pin (about 10 s) and a warm run only hashes four files.
#
#   h2spec=$(e2e/h2spec/build.sh)
#
# Needs only Go and the Go module proxy. KCACHE_CACHE_DIR moves the cache (default
# ~/.cache/kcache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! command -v go >/dev/null; then
  echo "build.sh: go is not on PATH; h2spec is built from its Go module" >&2
  exit 1
fi

cache="${KCACHE_CACHE_DIR:-$HOME/.cache/kcache}/h2spec"
key="$(cat go.mod go.sum tools.go build.sh | sha256sum | cut -c1-16)"
bin="$cache/$key/h2spec"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache/$key"
echo "build.sh: building h2spec $(go list -m -f '{{.Version}}' github.com/summerwind/h2spec)" >&2
go mod download
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/summerwind/h2spec/cmd/h2spec
mv "$bin.tmp" "$bin"
echo "$bin"

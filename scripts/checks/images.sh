#!/usr/bin/env bash
# Builds the node and operator images with buildah (Debian's package) and runs them:
# no registry is reachable here, so images/local.Containerfile assembles them FROM
# scratch out of the binaries cargo built and the Debian libraries they link (the
# registry-based images/Dockerfile is the one to publish; docs/images.md). Asserts the
# images run as 65532 with the right entrypoint, that the node image serves gRPC and
# /readyz on 127.0.0.1 (a set and a get through it, from the host's CLI) and that the
# operator image runs. Storage is a temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v buildah >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
  fi
fi
command -v buildah >/dev/null || { echo "buildah is needed (apt-get install buildah)" >&2; exit 1; }

work="$(mktemp -d)"
node_run=""
cleanup() {
  [[ -n $node_run ]] && kill "$node_run" 2>/dev/null && wait "$node_run" 2>/dev/null
  buildah "${store[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$work"
}
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
trap cleanup EXIT

cargo build -q -p kcache-node -p kcache-cli -p kcache-operator
stage="$work/stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/etc"
cp target/debug/kcache-node target/debug/kcache target/debug/kcache-operator "$stage/bin/"
# Debug info is most of a debug build; the images need none of it.
strip --strip-debug "$stage"/bin/*
for lib in $(ldd "$stage"/bin/* | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
  install -D "$(readlink -f "$lib")" "$stage/lib$lib"
done
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$stage/etc/passwd"
echo 'nonroot:x:65532:' >"$stage/etc/group"

for image in node operator; do
  buildah "${store[@]}" bud -q --isolation chroot -f images/local.Containerfile --target "$image" \
    -t "localhost/kcache-$image:check" "$stage" >/dev/null
  user=$(buildah "${store[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "localhost/kcache-$image:check")
  entrypoint=$(buildah "${store[@]}" inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "localhost/kcache-$image:check")
  [[ $user == 65532:65532 ]] || { echo "kcache-$image runs as '$user', not 65532:65532"; exit 1; }
  [[ $entrypoint == "[/usr/local/bin/kcache-$image]" ]] || { echo "kcache-$image entrypoint: $entrypoint"; exit 1; }
  echo "image kcache-$image: built FROM scratch, user $user, entrypoint $entrypoint"
done

version=$(buildah "${store[@]}" run --isolation chroot "$(buildah "${store[@]}" from -q localhost/kcache-operator:check)" \
  -- /usr/local/bin/kcache-operator --version)
[[ $version == "kcache-operator "* ]] || { echo "the operator image printed '$version'"; exit 1; }
echo "image kcache-operator: runs ($version)"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(port) admin=$(port)
container=$(buildah "${store[@]}" from -q localhost/kcache-node:check)
buildah "${store[@]}" run --isolation chroot "$container" -- /usr/local/bin/kcache-node \
  --grpc-addr "127.0.0.1:$grpc" --admin-addr "127.0.0.1:$admin" --max-memory 16MiB >"$work/node.log" 2>&1 &
node_run=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "the node in its image never got ready"; cat "$work/node.log"; exit 1; }
pid=$(ss -ltnpH "sport = :$admin" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[[ $uid == 65532 ]] || { echo "the node in its image runs as uid $uid"; exit 1; }
target/debug/kcache --addr "127.0.0.1:$grpc" set image-check works >/dev/null
got=$(target/debug/kcache --addr "127.0.0.1:$grpc" get image-check)
[[ $got == works ]] || { echo "get through the node image returned '$got'"; exit 1; }
kill "$pid" 2>/dev/null || true
wait "$node_run" 2>/dev/null || true
node_run=""
echo "image kcache-node: serves on 127.0.0.1 as uid $uid; set and get through it from the host CLI"

#!/usr/bin/env bash
# Keeps the CLI's dependencies out of what we ship as services: the node, the operator
# and the client library link none of the crates only `kcache` (cli/, kcache-cli) needs
# for its progress bar, latency histograms and argument parsing. A crate that starts
# depending on kcache-cli, or a CLI dependency moved back into kcache-client, fails here
# with the path that pulls it in.
#
#   scripts/checks/lean-deps.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# package:crates it must not link (normal dependencies: what its binary or library
# carries; dev-dependencies may use the CLI).
checks=(
  "kcache-node:indicatif hdrhistogram"
  "kcache-operator:indicatif hdrhistogram"
  "kcache-client:indicatif hdrhistogram clap"
)
err=$(mktemp)
trap 'rm -f "$err"' EXIT
failed=0
for check in "${checks[@]}"; do
  package=${check%%:*}
  for crate in ${check#*:}; do
    # -i inverts the tree: it prints how $package reaches $crate, or nothing. A crate
    # nothing in the workspace uses any more is not in Cargo.lock, which cargo reports
    # as an error: that is a pass; any other error is not.
    if ! path=$(cargo tree --locked --quiet -p "$package" -e normal -i "$crate" 2>"$err"); then
      grep -q "did not match any packages" "$err" || { cat "$err" >&2; exit 1; }
      path=
    fi
    if [[ -n $path ]]; then
      echo "lean deps: $package links $crate:" >&2
      echo "$path" >&2
      failed=1
    fi
  done
done
((failed == 0)) || exit 1
echo "lean deps: kcache-node, kcache-operator and kcache-client link no CLI-only crate"

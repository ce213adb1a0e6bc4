#!/usr/bin/env bash
# Runs each cargo-fuzz target of kcache-node (node/fuzz) for FUZZ_SECONDS (default 60)
# and fails on any crash, printing the executions each target made.
#
#   scripts/checks/fuzz.sh                        # every target briefly (the test command)
#   FUZZ_SECONDS=1800 scripts/checks/fuzz.sh      # longer, by hand
#   FUZZ_SECONDS=600 scripts/checks/fuzz.sh store_ops   # one target
#
# Stable Rust: cargo-fuzz's libFuzzer instrumentation (-Cpasses=sancov-module and
# -Cllvm-args) is stable; only the sanitizers need nightly, so the targets are built
# with --sanitizer none (Rust's own checks, debug assertions and the targets'
# invariants find the bugs here; memory errors need unsafe code, which the node
# forbids). cargo-fuzz (pinned) is installed once into ~/.cache/kcache/cargo-fuzz; the
# fuzz build and the growing corpus live in ~/.cache/kcache too, so a machine pays for
# the first build once. A crash leaves its input in node/fuzz/artifacts/<target>/;
# replay it with
#   cargo fuzz run --sanitizer none --codegen-units 16 --fuzz-dir node/fuzz \
#     --target-dir ~/.cache/kcache/fuzz-target <target> node/fuzz/artifacts/<target>/crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_FUZZ_VERSION=0.13.2
seconds="${FUZZ_SECONDS:-60}"
cache="${KCACHE_CACHE_DIR:-$HOME/.cache/kcache}"
tool="$cache/cargo-fuzz-$CARGO_FUZZ_VERSION"
fuzz_dir=node/fuzz
targets=("$@")
(( ${#targets[@]} )) || targets=(requests resp store_ops)

if [[ ! -x "$tool/bin/cargo-fuzz" ]]; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tool" >&2
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
    --root "$tool" --target-dir "$build"
  rm -rf "$build"
  trap - EXIT
fi
export PATH="$tool/bin:$PATH"

target_dir="$cache/fuzz-target"
# 16 codegen units instead of cargo-fuzz's 1: the cold build (every dependency of the
# node, instrumented) takes a fraction of the time, the runs are somewhat slower.
fuzz_flags=(--sanitizer none --codegen-units 16 --fuzz-dir "$fuzz_dir" --target-dir "$target_dir")
echo "fuzz.sh: building ${targets[*]} (sanitizer none)" >&2
start=$SECONDS
for target in "${targets[@]}"; do
  cargo fuzz build "${fuzz_flags[@]}" "$target"
done
echo "fuzz.sh: built in $((SECONDS - start))s" >&2

failed=0
for target in "${targets[@]}"; do
  corpus="$cache/fuzz-corpus/$target"
  mkdir -p "$corpus" "$fuzz_dir/artifacts/$target"
  seeds=()
  [[ -d "$fuzz_dir/seeds/$target" ]] && seeds=("$fuzz_dir/seeds/$target")
  log="$(mktemp)"
  echo "== fuzz $target for ${seconds}s"
  if cargo fuzz run "${fuzz_flags[@]}" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"$log" 2>&1; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1)"
    echo "fuzz $target: ${execs:-?} executions, $cov, corpus $(find "$corpus" -type f | wc -l) inputs, no crash"
  else
    failed=1
    tail -60 "$log"
    echo "!! fuzz $target FAILED; the input is in $fuzz_dir/artifacts/$target/" >&2
  fi
  rm -f "$log"
done
exit "$failed"

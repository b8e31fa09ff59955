#!/usr/bin/env bash
# Fuzzes the archive readers: the tar index and streaming pass (tar_index),
# manifest.json (manifest_json) and index.json (index_json).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Each target runs for SECONDS (default 60) from the kept corpus in
# fuzz/corpus/<target>; new inputs go to a scratch copy, so the kept corpus
# only changes when someone adds a case on purpose. A crash fails the script
# and leaves the input in fuzz/artifacts/<target>/.
# cargo fuzz needs nightly-only compiler flags: RUSTC_BOOTSTRAP=1 lets the
# stable toolchain take them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tar_index manifest_json index_json)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s" >&2
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  if ! cargo fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" >&2 || true
done

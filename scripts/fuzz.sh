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
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tar_index manifest_json index_json)

# The targets are built the way `cargo fuzz build --sanitizer none` builds
# them (coverage instrumentation for libFuzzer, debug assertions), without
# installing cargo-fuzz: that saves CI a few minutes. The archive readers are
# safe Rust, so AddressSanitizer would find nothing a panic does not.
# `--target` keeps the instrumentation off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$PWD/fuzz/target"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --quiet --release --manifest-path fuzz/Cargo.toml --target "$host" --bins
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p fuzz/artifacts

for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s" >&2
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  mkdir -p "fuzz/artifacts/$target"
  if ! "fuzz/target/$host/release/$target" "$scratch/$target" "fuzz/corpus/$target" \
    -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" >&2 || true
done

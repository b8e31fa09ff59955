#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain:
# installs the test dependencies, checks formatting and lints, runs every test
# (real registries on loopback, skopeo, the Docker Engine round trip).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

echo "== format and lints" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fuzz (each target ${HOIST_FUZZ_SECONDS:-60}s from the kept corpus)" >&2
scripts/fuzz.sh "${HOIST_FUZZ_SECONDS:-60}"

echo "== tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests; run them first so its summary closes the output.
  cargo test --workspace --locked --doc --quiet
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

#!/usr/bin/env bash
# Reading a large archive: builds a > 1 GB `docker save` archive from real
# files (/usr/share as a layer, and again as ~50,000 loose entries beside the
# image) and incompressible data, then times
#   - indexing it (`hoist inspect`: one pass over the tar headers),
#   - the same through the streaming pass (`hoist inspect -` from a pipe),
#   - `--verify` (SHA-256 of every layer) from the file and from the pipe,
# against `sha256sum` of the same bytes and `skopeo inspect docker-archive:`,
# and the peak memory of --verify. Numbers are warm-cache (the archive was
# just written) and best of RUNS.
#
#   bench/archive.sh [WORKDIR]      RUNS=3 RANDOM_MB=800 by default
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-3}"
random_mb="${RANDOM_MB:-800}"
work="${1:-$(mktemp -d /tmp/hoist-bench.XXXXXX)}"
mkdir -p "$work"
target="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== building hoist (release)" >&2
cargo build --release --quiet -p hoist
hoist="$target/release/hoist"

archive="$work/big.tar"
if [ ! -f "$archive" ]; then
  echo "== writing the archive in $work" >&2
  root="$work/root"
  rm -rf "$root" && mkdir -p "$root"
  tar -C /usr -cf "$work/files.tar" share
  mkdir -p "$work/random/data"
  head -c "$((random_mb * 1024 * 1024))" /dev/urandom >"$work/random/data/random.bin"
  tar -C "$work/random" -cf "$work/random.tar" data
  layers=()
  diff_ids=()
  for layer in files random; do
    hex="$(sha256sum "$work/$layer.tar" | cut -d' ' -f1)"
    mkdir -p "$root/$hex"
    mv "$work/$layer.tar" "$root/$hex/layer.tar"
    echo 1.0 >"$root/$hex/VERSION"
    echo "{\"id\":\"$hex\"}" >"$root/$hex/json"
    layers+=("\"$hex/layer.tar\"")
    diff_ids+=("\"sha256:$hex\"")
  done
  rm -rf "$work/random"
  config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(IFS=,; echo "${diff_ids[*]}")]}}"
  config_hex="$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)"
  printf '%s' "$config" >"$root/$config_hex.json"
  echo "[{\"Config\":\"$config_hex.json\",\"RepoTags\":[\"hoist-bench:big\"],\"Layers\":[$(IFS=,; echo "${layers[*]}")]}]" >"$root/manifest.json"
  # /usr/share again, unpacked beside the image: ~50,000 entries no image
  # refers to, so the header pass has real work.
  tar -cf "$archive" -C "$root" . -C /usr share
  rm -rf "$root"
fi

bytes="$(stat -c %s "$archive")"
entries="$(tar -tf "$archive" | wc -l)"
layer_bytes="$("$hoist" inspect --json "$archive" | python3 -c 'import json,sys; print(sum(l["size"] for i in json.load(sys.stdin)["images"] for l in i["layers"]))')"
cat "$archive" >/dev/null # warm the page cache

# best of $runs, in seconds
best() {
  local best_time=""
  for _ in $(seq "$runs"); do
    local start end t
    start="$(date +%s.%N)"
    "$@" >/dev/null
    end="$(date +%s.%N)"
    t="$(echo "$end - $start" | bc -l)"
    if [ -z "$best_time" ] || [ "$(echo "$t < $best_time" | bc -l)" = 1 ]; then best_time="$t"; fi
  done
  printf '%.3f' "$best_time"
}
rate() { echo "scale=0; $1 / $2 / 1000000" | bc -l; }

index="$(best "$hoist" inspect "$archive")"
index_stream="$(best sh -c "cat '$archive' | '$hoist' inspect -")"
verify="$(best "$hoist" inspect --verify "$archive")"
verify_stream="$(best sh -c "cat '$archive' | '$hoist' inspect --verify -")"
sha="$(best sha256sum "$archive")"
# Peak memory (max RSS, KiB) of the streaming verify: bounded whatever the archive size.
rss_stream="$( { /usr/bin/time -f %M sh -c "cat '$archive' | '$hoist' inspect --verify - >/dev/null"; } 2>&1 | tail -n 1)"
rss_file="$( { /usr/bin/time -f %M "$hoist" inspect --verify "$archive" >/dev/null; } 2>&1 | tail -n 1)"
skopeo_line="skopeo not installed"
if command -v skopeo >/dev/null; then
  skopeo="$(best skopeo inspect "docker-archive:$archive")"
  skopeo_line="skopeo inspect docker-archive:   ${skopeo} s  ($(echo "scale=1; $skopeo / $index" | bc -l)x hoist's index time)"
fi

cat <<REPORT
archive: $bytes bytes, $entries entries, layers $layer_bytes bytes ($(nproc) CPUs, best of $runs, warm cache)
hoist inspect (header index):     ${index} s
hoist inspect - (streaming pass): ${index_stream} s  ($(rate "$bytes" "$index_stream") MB/s)
hoist inspect --verify:           ${verify} s  ($(rate "$layer_bytes" "$verify") MB/s of layers)
hoist inspect --verify -:         ${verify_stream} s  ($(rate "$layer_bytes" "$verify_stream") MB/s of layers)
sha256sum of the archive:         ${sha} s  ($(rate "$bytes" "$sha") MB/s)
peak RSS, --verify from the file: ${rss_file} KiB; from the pipe: ${rss_stream} KiB
$skopeo_line
REPORT

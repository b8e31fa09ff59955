#!/usr/bin/env bash
# Push benchmark: hoist against skopeo 1.9 and against the registry's own ingest
# rate, on a realistic ~1.3 GB `docker save` archive and a loopback registry.
# See bench/README.md for what each number means.
#
# Environment:
#   HOIST_BENCH_DIR  work dir for the cached archive and registry storage (default /var/tmp/hoist-bench)
#   RUNS             repetitions of the hoist/skopeo comparison and none/curl (default 3)
#   SWEEP_RUNS       repetitions of the --jobs and gzip level sweeps (default $RUNS)
#   SKIP_SWEEPS=1    skip the --jobs and level sweeps
#   CARGO_TARGET_DIR where cargo builds hoist (default <repo>/target)
set -Eeuo pipefail
# Say where a failing command stopped the run; set -e alone exits silently.
trap 'log "error: line $LINENO: $BASH_COMMAND failed"' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${HOIST_BENCH_DIR:-/var/tmp/hoist-bench}
RUNS=${RUNS:-3}
SWEEP_RUNS=${SWEEP_RUNS:-$RUNS}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
HOIST=$TARGET/release/hoist
ARCHIVE=$WORK/archive.tar
LAYERS=$WORK/layers          # the archive unpacked, for curl's uploads
RESULTS=$WORK/results.tsv    # one line per measured command: label wall cpu rss_kb bytes
REG_PID=""
REG_PORT=""
# Budgets for the real-file layers, in bytes; chosen so the archive totals ~1.3 GB.
SYSLIB_BUDGET=$((480 * 1024 * 1024))
TOOLCHAIN_BUDGET=$((540 * 1024 * 1024))
RANDOM_BYTES=$((200 * 1024 * 1024))

source "$REPO/bench/lib.sh"

check_tools() { need_bench_tools "it builds the archive"; }

build_hoist() {
    log "building hoist (release)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --locked -p hoist -p hoist-testkit --bins)
}

# Prints paths of the regular files and symlinks under DIR, in a stable order,
# taking each file that still fits in BUDGET bytes: a real tree trimmed to a size.
# A hardlinked file counts once, as tar stores it once (Debian hardlinks its Mesa drivers).
file_list() {
    local dir=$1 budget=$2
    # -H: the toolchain dir may be a symlink. awk reads to the end (no early exit)
    # so that sort does not die of SIGPIPE under pipefail.
    find -H "$dir" \( -type f -o -type l \) -printf '%i %s %p\n' | LC_ALL=C sort -k3 |
        awk -v max="$budget" '{
            size = seen[$1]++ ? 0 : $2
            if (s + size <= max) { s += size; print substr($0, length($1) + length($2) + 3) }
        }'
}

# The toolchain layer: the active Rust toolchain's real compiler and libraries
# (like the Go toolchain of the reference measurement); /usr/share and /usr/bin
# where there is no rustup.
toolchain_dir() {
    local sysroot
    if sysroot=$(rustc --print sysroot 2>/dev/null) && [[ -d $sysroot/lib ]]; then
        echo "$sysroot"
    else
        echo /usr/share
    fi
}

# Builds the archive once with the Docker Engine, so it is a genuine `docker save`
# (the classic layout on Engine 20.10: <id>/layer.tar, <config>.json, manifest.json).
# Four layers: system libraries, a toolchain, incompressible bytes, one tiny file.
build_archive() {
    if [[ -s $ARCHIVE ]]; then
        log "reusing $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
        return
    fi
    local ctx=$WORK/context tc
    rm -rf "$ctx" && mkdir -p "$ctx"
    tc=$(toolchain_dir)
    log "layer 1: system libraries from /usr/lib/x86_64-linux-gnu"
    file_list /usr/lib/x86_64-linux-gnu "$SYSLIB_BUDGET" | sed 's|^/||' >"$ctx/syslib.list"
    tar -C / -cf "$ctx/syslib.tar" --no-recursion -T "$ctx/syslib.list"
    log "layer 2: toolchain from $tc"
    file_list "$tc" "$TOOLCHAIN_BUDGET" | sed 's|^/||' >"$ctx/toolchain.list"
    tar -C / -cf "$ctx/toolchain.tar" --no-recursion -T "$ctx/toolchain.list"
    log "layer 3: $((RANDOM_BYTES >> 20)) MiB of random bytes"
    head -c "$RANDOM_BYTES" /dev/urandom >"$ctx/random.bin"
    echo "hoist bench" >"$ctx/tiny.txt"
    # ADD of a local tar unpacks it, so layers 1-2 hold the real trees.
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD syslib.tar /
ADD toolchain.tar /
COPY random.bin /data/random.bin
COPY tiny.txt /etc/tiny.txt
DOCKERFILE
    rm -f "$ctx"/*.list
    log "docker build + docker save"
    # The classic builder: BuildKit is not installed with Engine 20.10 here.
    DOCKER_BUILDKIT=0 docker build -q -t hoist-bench/app:1 "$ctx" >/dev/null
    docker save -o "$ARCHIVE.part" hoist-bench/app:1
    docker rmi hoist-bench/app:1 >/dev/null
    mv "$ARCHIVE.part" "$ARCHIVE"
    rm -rf "$ctx"
    log "archive: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
}

# Unpacks the archive once so curl can upload each uncompressed layer as is.
unpack_layers() {
    if [[ -s $LAYERS/manifest.json ]]; then return; fi
    rm -rf "$LAYERS" && mkdir -p "$LAYERS"
    tar -C "$LAYERS" -xf "$ARCHIVE"
}

# "path digest" per layer: the layer tar and its diff_id (the sha256 of its bytes).
layer_files() {
    local config
    config=$(jq -r '.[0].Config' "$LAYERS/manifest.json")
    paste -d' ' <(jq -r '.[0].Layers[]' "$LAYERS/manifest.json" | sed "s|^|$LAYERS/|") \
        <(jq -r '.rootfs.diff_ids[]' "$LAYERS/$config")
}

# A registry on loopback with fresh storage.
start_registry() {
    stop_registry
    launch_registry "$WORK/registry"
    REG_PID=$LAUNCHED_PID REG_PORT=$LAUNCHED_PORT
}

stop_registry() {
    kill_wait "$REG_PID"
    REG_PID=""
}

# Sum of the layer sizes in the pushed manifest: the compressed bytes a tool wrote.
layer_bytes() {
    local repo=$1 tag=$2
    curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$REG_PORT/v2/$repo/manifests/$tag" | jq '[.layers[].size] | add'
}

servers_cpu() { cpu_of "$REG_PID"; }
# Each line gets a "-" byte field; record_bytes fills it in.
TIMED_TAIL=" -"

# Replaces the "-" byte field of the last results line.
record_bytes() {
    sed -i "\$s/ -\$/ $1/" "$RESULTS"
}

dest() { echo "127.0.0.1:$REG_PORT/bench/app:1"; }

# GNU time runs programs, not shell functions, so the command lines are arrays.
HOIST_PUSH=("$HOIST" push --quiet --progress none)

# skopeo remembers which blobs a registry has in this cache; "cold" means without it.
clear_skopeo_cache() {
    rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb \
        "${XDG_DATA_HOME:-$HOME/.local/share}/containers/cache/blob-info-cache-v1.boltdb"
}

SKOPEO_COPY=(skopeo copy -q --dest-tls-verify=false "docker-archive:$ARCHIVE")

# One hoist round: cold (fresh registry, empty cache), then warm (same registry, cache kept).
round_hoist() {
    local cache=$WORK/hoist-cache
    rm -rf "$cache"
    start_registry
    timed hoist_cold "${HOIST_PUSH[@]}" --cache-dir "$cache" "$ARCHIVE" "$(dest)"
    record_bytes "$(layer_bytes bench/app 1)"
    timed hoist_warm "${HOIST_PUSH[@]}" --cache-dir "$cache" "$ARCHIVE" "$(dest)"
    stop_registry
}

# One unmeasured cold push by each tool: the first push after a quiet spell
# ran ~25 % slower, its registry using more CPU, and always hit hoist, which
# went first.
warm_up() {
    log "warm-up (not measured)"
    start_registry
    "${HOIST_PUSH[@]}" --no-cache "$ARCHIVE" "$(dest)" >/dev/null
    stop_registry
    clear_skopeo_cache
    start_registry
    "${SKOPEO_COPY[@]}" "docker://$(dest)" >/dev/null
    stop_registry
}

round_skopeo() {
    clear_skopeo_cache
    start_registry
    timed skopeo_cold "${SKOPEO_COPY[@]}" "docker://$(dest)"
    record_bytes "$(layer_bytes bench/app 1)"
    timed skopeo_warm "${SKOPEO_COPY[@]}" "docker://$(dest)"
    stop_registry
}

# Monolithic upload of one uncompressed layer: POST opens the upload, one PUT
# carries the whole body and the digest. Streams from the file (-T).
curl_upload_one() {
    local port=$1 path=$2 digest=$3 loc
    loc=$(curl -fsS -o /dev/null -D - -X POST "http://127.0.0.1:$port/v2/bench/raw/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    [[ -n $loc ]] || return 1
    [[ $loc == http* ]] || loc="http://127.0.0.1:$port$loc"
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
        -T "$path" "$loc&digest=$digest"
}

# Every layer, two at a time as hoist's default `--jobs 2` sends them: the
# registry hashes each upload on one thread, so one at a time would understate
# what it can ingest.
curl_upload() {
    local port=$1
    layer_files | xargs -P 2 -L 1 bash -c 'curl_upload_one "$0" "$1" "$2"' "$port"
}
export -f curl_upload curl_upload_one layer_files
export LAYERS

# --compression none against curl, each into a fresh registry: the registry's own ingest rate.
round_none_vs_curl() {
    start_registry
    timed hoist_none "${HOIST_PUSH[@]}" --no-cache --compression none "$ARCHIVE" "$(dest)"
    record_bytes "$(layer_bytes bench/app 1)"
    start_registry
    timed curl_raw bash -c 'curl_upload "$1"' _ "$REG_PORT"
    record_bytes "$RAW_BYTES"
    stop_registry
}

# Cold pushes with each --jobs value, interleaved so load changes hit all alike.
sweep_jobs() {
    local r j
    for r in $(seq "$SWEEP_RUNS"); do
        for j in 1 2 3 4; do
            start_registry
            timed "jobs_$j" "${HOIST_PUSH[@]}" --no-cache --jobs "$j" "$ARCHIVE" "$(dest)"
            record_bytes "$(layer_bytes bench/app 1)"
        done
    done
    stop_registry
}

sweep_levels() {
    local r l
    for r in $(seq "$SWEEP_RUNS"); do
        for l in 1 2 3 6; do
            start_registry
            timed "gzip_$l" "${HOIST_PUSH[@]}" --no-cache --compression "gzip:$l" "$ARCHIVE" "$(dest)"
            record_bytes "$(layer_bytes bench/app 1)"
        done
    done
    stop_registry
}

# Standard input may not be supported yet; a failure is reported, not fatal.
try_stdin() {
    start_registry
    if cat "$ARCHIVE" | timed hoist_stdin "${HOIST_PUSH[@]}" --no-cache - "$(dest)"; then
        record_bytes "$(layer_bytes bench/app 1)"
        STDIN_NOTE="supported"
    else
        STDIN_NOTE="failed: $(head -2 "$WORK/cmd.log" | tr '\n' ' ')"
    fi
    stop_registry
}

# median LABEL FIELD (2 wall, 3 cpu, 4 rss_kb, 5 registry cpu, 6 bytes)
median() {
    awk -v l="$1" -v f="$2" '$1 == l && $f != "-" { print $f }' "$RESULTS" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
minof() {
    awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g | head -1
}
maxof() {
    awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g | tail -1
}
count() { awk -v l="$1" '$1 == l' "$RESULTS" | wc -l; }
calc() { python3 -c "print(format($1, '$2'))"; }

report() {
    local hw hc hb sw sc sb mb=1048576
    hw=$(median hoist_cold 2) hc=$(median hoist_cold 3) hb=$(median hoist_cold 6)
    sw=$(median skopeo_cold 2) sc=$(median skopeo_cold 3) sb=$(median skopeo_cold 6)
    local nw cw
    nw=$(median hoist_none 2) cw=$(median curl_raw 2)
    local out
    out=$(
        echo "# hoist push benchmark, $(date -u '+%F %H:%M') UTC"
        echo
        echo "- machine: $(nproc) cores, $(free -g | awk '/Mem/ { print $2 }') GiB; load before: $LOAD_BEFORE; after: $(uptime | sed 's/.*load average: //')"
        # The last commit that changed hoist itself, not the benchmark.
        echo "- hoist $(git -C "$REPO" log -1 --format=%h -- crates Cargo.toml Cargo.lock)$(git -C "$REPO" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty'), $(skopeo --version), registry $(docker-registry --version 2>/dev/null | awk '{ print $3 }')"
        echo "- archive: $(calc "$(stat -c %s "$ARCHIVE") / $mb" .0f) MiB classic \`docker save\` from Engine $(docker version --format '{{.Server.Version}}'); layers (MiB, uncompressed): $(layer_files | while read -r p _; do calc "$(stat -c %s "$p") / $mb" .0f; done | paste -sd' ')"
        echo "- medians of $RUNS runs (sweeps: $SWEEP_RUNS), run alternately; cpu = user + sys of the tool; registry cpu = the registry process's during the run; peak = the tool's max resident memory over the runs"
        echo
        echo "| run | wall s | (min–max) | cpu s | registry cpu s | peak MiB | layer MiB | ÷ skopeo's | n |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        local l
        for l in hoist_cold skopeo_cold hoist_warm skopeo_warm hoist_none curl_raw hoist_stdin \
            jobs_1 jobs_2 jobs_3 jobs_4 gzip_1 gzip_2 gzip_3 gzip_6; do
            [[ $(count "$l") -gt 0 ]] || continue
            local b r=-
            b=$(median "$l" 6)
            if [[ $b == nan ]]; then
                b=-
            else
                [[ $l == *none* || $l == curl* ]] || r=$(calc "$b / $sb" .3f)
                b=$(calc "$b / $mb" .1f)
            fi
            printf '| %s | %.2f | %.2f–%.2f | %.2f | %.2f | %.1f | %s | %s | %d |\n' "$l" "$(median "$l" 2)" \
                "$(minof "$l" 2)" "$(maxof "$l" 2)" "$(median "$l" 3)" "$(median "$l" 5)" \
                "$(calc "$(maxof "$l" 4) / 1024" .1f)" "$b" "$r" "$(count "$l")"
        done
        echo
        echo "| ratio | value | target |"
        echo "|---|---:|---|"
        echo "| cold wall, skopeo / hoist | $(calc "$sw / $hw" .2f)× | ≥ 2.5× |"
        echo "| cold cpu, hoist / skopeo | $(calc "$hc / $sc" .2f) | ≤ 0.35 |"
        echo "| cold bytes, hoist / skopeo | $(calc "$hb / $sb" .3f) | ≤ 1.05 |"
        echo "| warm wall, hoist / skopeo | $(calc "$(median hoist_warm 2) / $(median skopeo_warm 2)" .2f) | ≤ 1 |"
        echo "| none rate / curl rate | $(calc "$RAW_BYTES / $nw / $mb" .0f) / $(calc "$RAW_BYTES / $cw / $mb" .0f) MiB/s = $(calc "$cw / $nw * 100" .0f) % | ≥ 80 % |"
        echo "| hoist peak memory, cold default (max of runs) | $(calc "$(maxof hoist_cold 4) / 1024" .1f) MiB | ≤ 64 MB |"
        echo
        echo "Standard input (\`cat ARCHIVE | hoist push - DEST\`): $STDIN_NOTE"
    )
    echo "$out"
    # Each run adds a section to the day's file, so runs under different load stay side by side.
    local file=$REPO/bench/results/push-$(date -u +%F).md
    mkdir -p "$(dirname "$file")"
    { [[ -s $file ]] && echo; echo "$out"; } >>"$file"
    log "added to ${file#"$REPO"/}; raw numbers in $RESULTS"
}

main() {
    check_tools
    mkdir -p "$WORK"
    trap stop_registry EXIT
    build_hoist
    build_archive
    unpack_layers
    RAW_BYTES=$(layer_files | while read -r p _; do stat -c %s "$p"; done | paste -sd+ | bc)
    # Read the archive once so every run finds it in the page cache alike.
    cat "$ARCHIVE" "$LAYERS"/*/layer.tar >/dev/null
    unset HOIST_CACHE_DIR
    LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
    : >"$RESULTS"
    warm_up
    local r
    for r in $(seq "$RUNS"); do
        log "round $r of $RUNS"
        # Who goes first alternates, so neither always meets the machine as the other left it.
        if ((r % 2)); then
            round_hoist
            round_skopeo
        else
            round_skopeo
            round_hoist
        fi
        round_none_vs_curl
    done
    if [[ ${SKIP_SWEEPS:-0} != 1 ]]; then
        sweep_jobs
        sweep_levels
    fi
    try_stdin
    report
}

# `bench/push.sh archive` only builds (or finds) the archive and prints its path.
if [[ ${1:-} == archive ]]; then
    check_tools
    mkdir -p "$WORK"
    build_archive
    echo "$ARCHIVE"
else
    main "$@"
fi

#!/usr/bin/env bash
# Pull benchmark: `hoist pull` against `skopeo copy docker://… docker-archive:…`
# on the ~1.3 GB image of bench/push.sh, held in a loopback registry.
# See bench/README.md for what each number means.
#
# Environment:
#   HOIST_BENCH_DIR  work dir for the cached archive and registry storage (default /var/tmp/hoist-bench)
#   RUNS             repetitions, run alternately (default 3)
#   COMPRESSION      how the image's layers are stored in the registry (default gzip:2, as hoist pushes)
#   CARGO_TARGET_DIR where cargo builds hoist (default <repo>/target)
set -Eeuo pipefail
trap 'log "error: line $LINENO: $BASH_COMMAND failed"' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${HOIST_BENCH_DIR:-/var/tmp/hoist-bench}
RUNS=${RUNS:-3}
COMPRESSION=${COMPRESSION:-gzip:2}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
HOIST=$TARGET/release/hoist
OUT=$WORK/pulled             # where the pulled archives go (same disk as the registry)
RESULTS=$WORK/pull-results.tsv
REG_PID=""
REG_PORT=""

source "$REPO/bench/lib.sh"

check_tools() { need_bench_tools "it builds the image and loads the result"; }

# A loopback registry with fresh storage.
start_registry() {
    launch_registry "$WORK/pull-registry"
    REG_PID=$LAUNCHED_PID REG_PORT=$LAUNCHED_PORT
}

stop_registry() {
    kill_wait "$REG_PID"
    REG_PID=""
}

servers_cpu() { cpu_of "$REG_PID"; }

ref() { echo "127.0.0.1:$REG_PORT/bench/app:1"; }

HOIST_PULL=("$HOIST" pull --quiet --progress none)

# The page cache holds the written archive until it is flushed; every tool
# starts from the same state: no earlier output, dirty pages written back.
fresh_out() {
    rm -rf "$OUT" && mkdir -p "$OUT"
    sync
}

round_hoist() {
    fresh_out
    timed hoist_file "${HOIST_PULL[@]}" "$(ref)" "$OUT/hoist.tar"
    fresh_out
    # Standard output into a file: the streaming path, in plan order.
    timed hoist_stdout sh -c '"$0" pull --quiet --progress none "$1" - >"$2"' "$HOIST" "$(ref)" "$OUT/hoist-stdout.tar"
}

round_skopeo() {
    fresh_out
    timed skopeo "${SKOPEO_COPY[@]}" "docker://$(ref)" "docker-archive:$OUT/skopeo.tar:bench/app:1"
}

# The archives are what they should be: hoist's verify (every layer against
# its diff_id) on both of hoist's outputs, skopeo's own reading back, and
# Docker loading hoist's archive as the image whose ID is the config digest.
check_archives() {
    fresh_out
    "${HOIST_PULL[@]}" "$(ref)" "$OUT/hoist.tar" >/dev/null
    "$HOIST" inspect --verify "$OUT/hoist.tar" | tail -1
    "${HOIST_PULL[@]}" "$(ref)" - 2>/dev/null | "$HOIST" inspect --verify - | tail -1
    cmp <("${HOIST_PULL[@]}" "$(ref)" - 2>/dev/null) "$OUT/hoist.tar" && log "file and stdout archives are byte-identical"
    local config loaded
    config=$("$HOIST" inspect --json "$OUT/hoist.tar" | jq -r '.images[0].config')
    loaded=$(docker load -i "$OUT/hoist.tar")
    log "docker load: $loaded"
    [[ $(docker image inspect --format '{{.Id}}' "$(ref)") == "$config" ]] || die "docker loaded another image"
    docker rmi "$(ref)" >/dev/null
    "${SKOPEO_COPY[@]}" "docker://$(ref)" "docker-archive:$OUT/skopeo.tar:bench/app:1"
    skopeo inspect "docker-archive:$OUT/skopeo.tar" | jq -r '"skopeo archive: " + .Digest'
    CHECKED="hoist inspect --verify passed (file and stdout); stdout and file archives byte-identical; docker load gave image $config"
    fresh_out
}

SKOPEO_COPY=(skopeo copy -q --src-tls-verify=false)

median() {
    awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
minof() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g | head -1; }
maxof() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g | tail -1; }
count() { awk -v l="$1" '$1 == l' "$RESULTS" | wc -l; }
calc() { python3 -c "print(format($1, '$2'))"; }

report() {
    local hw hc sw sc tw tc mb=1048576 stored
    hw=$(median hoist_file 2) hc=$(median hoist_file 3)
    tw=$(median hoist_stdout 2) tc=$(median hoist_stdout 3)
    sw=$(median skopeo 2) sc=$(median skopeo 3)
    stored=$(curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$REG_PORT/v2/bench/app/manifests/1" | jq '[.layers[].size] | add')
    local out
    out=$(
        echo "# hoist pull benchmark, $(date -u '+%F %H:%M') UTC"
        echo
        echo "- machine: $(nproc) cores, $(free -g | awk '/Mem/ { print $2 }') GiB; load before: $LOAD_BEFORE; after: $(uptime | sed 's/.*load average: //')"
        echo "- hoist $(git -C "$REPO" log -1 --format=%h -- crates Cargo.toml Cargo.lock)$(git -C "$REPO" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty'), $(skopeo --version), registry $(docker-registry --version 2>/dev/null | awk '{ print $3 }')"
        echo "- image: bench/push.sh's $(calc "$(stat -c %s "$ARCHIVE") / $mb" .0f) MiB \`docker save\`, pushed by hoist with \`--compression $COMPRESSION\`: $(calc "$stored / $mb" .0f) MiB of layers in the registry"
        echo "- medians of $RUNS runs, alternating who goes first; cpu = user + sys of the tool; peak = max resident memory over the runs"
        echo "- hoist_file: \`hoist pull REF FILE\`; hoist_stdout: \`hoist pull REF - > FILE\` (the in-order streaming path); skopeo: \`skopeo copy docker://REF docker-archive:FILE\`"
        echo "- checked: $CHECKED"
        echo
        echo "| run | wall s | (min–max) | cpu s | registry cpu s | peak MiB | n |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        local l
        for l in hoist_file hoist_stdout skopeo; do
            [[ $(count "$l") -gt 0 ]] || continue
            printf '| %s | %.2f | %.2f–%.2f | %.2f | %.2f | %.1f | %d |\n' "$l" "$(median "$l" 2)" \
                "$(minof "$l" 2)" "$(maxof "$l" 2)" "$(median "$l" 3)" "$(median "$l" 5)" \
                "$(calc "$(maxof "$l" 4) / 1024" .1f)" "$(count "$l")"
        done
        echo
        echo "| ratio | file | stdout | target |"
        echo "|---|---:|---:|---|"
        echo "| wall, skopeo / hoist | $(calc "$sw / $hw" .2f)× | $(calc "$sw / $tw" .2f)× | ≥ 4× |"
        echo "| cpu, hoist / skopeo | $(calc "$hc / $sc" .2f) | $(calc "$tc / $sc" .2f) | ≤ 0.35 |"
        echo "| hoist peak memory (max of runs) | $(calc "$(maxof hoist_file 4) / 1024" .1f) MiB | $(calc "$(maxof hoist_stdout 4) / 1024" .1f) MiB | ≤ 64 MB |"
    )
    echo "$out"
    local file=$REPO/bench/results/pull-$(date -u +%F).md
    mkdir -p "$(dirname "$file")"
    { [[ -s $file ]] && echo; echo "$out"; } >>"$file"
    log "added to ${file#"$REPO"/}; raw numbers in $RESULTS"
}

main() {
    check_tools
    mkdir -p "$WORK"
    trap 'stop_registry; rm -rf "$OUT"' EXIT
    log "building hoist (release)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --locked -p hoist -p hoist-testkit --bins)
    ARCHIVE=$("$REPO/bench/push.sh" archive)
    start_registry
    log "pushing the image into the registry ($COMPRESSION)"
    "$HOIST" push --quiet --progress none --no-cache --compression "$COMPRESSION" "$ARCHIVE" "$(ref)" >/dev/null
    check_archives
    LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
    : >"$RESULTS"
    log "warm-up (not measured)"
    round_hoist >/dev/null 2>&1 || true
    round_skopeo >/dev/null 2>&1 || true
    : >"$RESULTS"
    local r
    for r in $(seq "$RUNS"); do
        log "round $r of $RUNS"
        if ((r % 2)); then
            round_hoist
            round_skopeo
        else
            round_skopeo
            round_hoist
        fi
    done
    fresh_out
    report
}

main "$@"

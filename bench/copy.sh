#!/usr/bin/env bash
# Copy benchmark: `hoist copy` against `skopeo copy docker://… docker://…` and
# against curl, on the ~1.3 GB image of bench/push.sh held in a loopback
# registry and copied into another, fresh for every run; and a copy within
# the source registry. See bench/README.md for what each number means.
#
# Environment:
#   HOIST_BENCH_DIR  work dir for the cached archive and registry storage (default /var/tmp/hoist-bench)
#   RUNS             repetitions, run alternately (default 3)
#   SKIP_SWEEP=1     skip the --jobs sweep
#   COMPRESSION      how the image's layers are stored in the source (default gzip:2, as hoist pushes)
#   CARGO_TARGET_DIR where cargo builds hoist (default <repo>/target)
set -Eeuo pipefail
trap 'log "error: line $LINENO: $BASH_COMMAND failed"' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${HOIST_BENCH_DIR:-/var/tmp/hoist-bench}
RUNS=${RUNS:-3}
COMPRESSION=${COMPRESSION:-gzip:2}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
HOIST=$TARGET/release/hoist
RESULTS=$WORK/copy-results.tsv   # label wall cpu rss_kb registries_cpu (both)
BLOBS=$WORK/copy-blobs           # the source's blobs as files, for curl's uploads
SRC_PID="" SRC_PORT="" DST_PID="" DST_PORT=""

source "$REPO/bench/lib.sh"

check_tools() { need_bench_tools "it builds the image and pulls the copy"; }


# A fresh destination registry for the next run (the last one stopped).
fresh_destination() {
    kill_wait "$DST_PID"
    sync
    launch_registry "$WORK/copy-dst"
    DST_PID=$LAUNCHED_PID DST_PORT=$LAUNCHED_PORT
}

servers_cpu() { echo "$(cpu_of "$SRC_PID") + $(cpu_of "$DST_PID")" | bc; }

src() { echo "127.0.0.1:$SRC_PORT/bench/app:1"; }
dst() { echo "127.0.0.1:$DST_PORT/bench/app:1"; }

HOIST_COPY=("$HOIST" copy --quiet --progress none)
SKOPEO_COPY=(skopeo copy -q --src-tls-verify=false --dest-tls-verify=false)

# Every blob the source image names (config, then layers): "digest size" lines.
source_blobs() {
    curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:${1:-$SRC_PORT}/v2/bench/app/manifests/1" |
        jq -r '[.config] + .layers | .[] | "\(.digest) \(.size)"'
}

# Opens an upload on the destination; prints its Location.
curl_open() {
    local port=$1 loc
    loc=$(curl -fsS -o /dev/null -D - -X POST "http://127.0.0.1:$port/v2/bench/app/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    [[ -n $loc ]] || return 1
    [[ $loc == http* ]] || loc="http://127.0.0.1:$port$loc"
    echo "$loc"
}

# One blob, a GET on the source piped into one PUT on the destination.
curl_pipe_one() {
    local src=$1 dst=$2 digest=$3 loc
    loc=$(curl_open "$dst")
    curl -fsS "http://127.0.0.1:$src/v2/bench/app/blobs/$digest" |
        curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T - "$loc&digest=$digest"
}

# One blob from its file (in the page cache): what the destination ingests.
curl_file_one() {
    local dst=$1 digest=$2 loc
    loc=$(curl_open "$dst")
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
        -T "$BLOBS/${digest#sha256:}" "$loc&digest=$digest"
}
# Two at a time, largest first, as a registry hashes each upload on one thread.
curl_pipe() {
    source_blobs "$1" | sort -k2 -nr | cut -d' ' -f1 | xargs -P 2 -I{} bash -c 'curl_pipe_one "$0" "$1" {}' "$1" "$2"
}
curl_file() {
    source_blobs "$1" | sort -k2 -nr | cut -d' ' -f1 | xargs -P 2 -I{} bash -c 'curl_file_one "$0" {}' "$2"
}
export -f source_blobs curl_open curl_pipe_one curl_file_one curl_pipe curl_file
export BLOBS

round() {
    local tool
    for tool in "$@"; do
        fresh_destination
        case $tool in
            hoist) timed hoist "${HOIST_COPY[@]}" "$(src)" "$(dst)" ;;
            skopeo) timed skopeo "${SKOPEO_COPY[@]}" "docker://$(src)" "docker://$(dst)" ;;
            curl_pipe) timed curl_pipe bash -c 'curl_pipe "$1" "$2"' _ "$SRC_PORT" "$DST_PORT" ;;
            curl_file) timed curl_file bash -c 'curl_file "$1" "$2"' _ "$SRC_PORT" "$DST_PORT" ;;
        esac
    done
}

MIRRORS=0
# hoist and skopeo copying into another repository of the source registry.
round_same() {
    local tool
    for tool in "$@"; do
        MIRRORS=$((MIRRORS + 1))
        case $tool in
            hoist) timed hoist_same "${HOIST_COPY[@]}" "$(src)" "127.0.0.1:$SRC_PORT/mirror/h$MIRRORS:1" ;;
            skopeo) timed skopeo_same "${SKOPEO_COPY[@]}" "docker://$(src)" "docker://127.0.0.1:$SRC_PORT/mirror/s$MIRRORS:1" ;;
        esac
    done
}

# The copies are what they should be: the source's digest at the
# destination (hoist's and skopeo's), every blob verified by skopeo, and
# Docker pulling hoist's copy as the image whose ID is the config digest.
check_copies() {
    local digest config copied
    digest=$(skopeo inspect --raw --tls-verify=false "docker://$(src)" | sha256sum | cut -d' ' -f1)
    fresh_destination
    "${HOIST_COPY[@]}" "$(src)" "$(dst)" >/dev/null
    copied=$(skopeo inspect --raw --tls-verify=false "docker://$(dst)" | sha256sum | cut -d' ' -f1)
    [[ $copied == "$digest" ]] || die "hoist's copy has digest $copied, the source $digest"
    rm -rf "$WORK/copy-check" && skopeo copy -q --src-tls-verify=false "docker://$(dst)" "dir:$WORK/copy-check"
    rm -rf "$WORK/copy-check"
    config=$(skopeo inspect --raw --tls-verify=false "docker://$(dst)" | jq -r .config.digest)
    docker pull -q "$(dst)" >/dev/null
    [[ $(docker image inspect --format '{{.Id}}' "$(dst)") == "$config" ]] || die "docker pulled another image"
    docker rmi "$(dst)" >/dev/null
    fresh_destination
    "${SKOPEO_COPY[@]}" "docker://$(src)" "docker://$(dst)"
    copied=$(skopeo inspect --raw --tls-verify=false "docker://$(dst)" | sha256sum | cut -d' ' -f1)
    [[ $copied == "$digest" ]] || die "skopeo's copy has digest $copied, the source $digest"
    "${HOIST_COPY[@]}" "$(src)" "127.0.0.1:$SRC_PORT/mirror/check:1" >/dev/null
    "$HOIST" copy --quiet --progress none --output json "$(src)" "127.0.0.1:$SRC_PORT/mirror/check2:1" |
        jq -e '[.images[0].blobs[].action] | all(. == "mounted")' >/dev/null || die "a same-registry copy did not mount every blob"
    CHECKED="the copy's digest is the source's (sha256:$digest, hoist and skopeo); skopeo copied hoist's copy to dir: (every blob verified); docker pull of it gave image $config; a same-registry copy mounted every blob"
}

median() {
    awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
minof() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g | head -1; }
maxof() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -g | tail -1; }
count() { awk -v l="$1" '$1 == l' "$RESULTS" | wc -l; }
calc() { python3 -c "print(format($1, '$2'))"; }

report() {
    local hw sw pw fw mb=1048576 bytes total
    hw=$(median hoist 2) sw=$(median skopeo 2) pw=$(median curl_pipe 2) fw=$(median curl_file 2)
    bytes=$(source_blobs | awk '{ s += $2 } END { print s }')
    total=$(stat -c %s "$ARCHIVE")
    local out
    out=$(
        echo "# hoist copy benchmark, $(date -u '+%F %H:%M') UTC"
        echo
        echo "- machine: $(nproc) cores, $(free -g | awk '/Mem/ { print $2 }') GiB; load before: $LOAD_BEFORE; after: $(uptime | sed 's/.*load average: //')"
        echo "- hoist $(git -C "$REPO" log -1 --format=%h -- crates Cargo.toml Cargo.lock)$(git -C "$REPO" diff --quiet HEAD -- crates Cargo.toml Cargo.lock || echo '+dirty'), $(skopeo --version), registry $(docker-registry --version 2>/dev/null | awk '{ print $3 }')"
        echo "- image: bench/push.sh's $(calc "$total / $mb" .0f) MiB \`docker save\`, pushed by hoist with \`--compression $COMPRESSION\`: $(calc "$bytes / $mb" .0f) MiB in $(source_blobs | wc -l) blobs in the source registry"
        echo "- each run copies into a fresh destination registry on loopback; medians of $RUNS runs, alternating who goes first; cpu = user + sys of the tool; registries cpu = both registries'; peak = max resident memory over the runs"
        echo "- hoist: \`hoist copy SRC DEST\` (--jobs 4); skopeo: \`skopeo copy docker://SRC docker://DEST\`; curl_pipe: \`curl GET | curl -T - PUT\` per blob, two at a time; curl_file: curl uploading the same blobs from files in the page cache, two at a time (the destination's ingest rate); *_same: a copy into another repository of the source registry"
        echo "- checked: $CHECKED"
        echo
        echo "| run | wall s | (min–max) | MiB/s | cpu s | registries cpu s | peak MiB | n |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        local l
        for l in hoist skopeo curl_pipe curl_file hoist_same skopeo_same jobs_1 jobs_2 jobs_3 jobs_4; do
            [[ $(count "$l") -gt 0 ]] || continue
            printf '| %s | %.2f | %.2f–%.2f | %s | %.2f | %.2f | %.1f | %d |\n' "$l" "$(median "$l" 2)" \
                "$(minof "$l" 2)" "$(maxof "$l" 2)" "$([[ $l == *same ]] && echo - || calc "$bytes / $(median "$l" 2) / $mb" .0f)" \
                "$(median "$l" 3)" "$(median "$l" 5)" "$(calc "$(maxof "$l" 4) / 1024" .1f)" "$(count "$l")"
        done
        echo
        echo "| ratio | measured | target |"
        echo "|---|---:|---|"
        echo "| wall, skopeo / hoist | $(calc "$sw / $hw" .2f)× | ≥ 1.25× |"
        echo "| hoist rate / curl_file rate (the destination's ingest) | $(calc "$fw / $hw * 100" .0f) % | ≥ 90 % |"
        echo "| hoist rate / curl_pipe rate | $(calc "$pw / $hw * 100" .0f) % | |"
        echo "| hoist peak memory (max of runs) | $(calc "$(maxof hoist 4) / 1024" .1f) MiB | ≤ 64 MB |"
        echo "| same-registry copy, wall | $(median hoist_same 2) s | < 0.5 s |"
    )
    echo "$out"
    local file=$REPO/bench/results/copy-$(date -u +%F).md
    mkdir -p "$(dirname "$file")"
    { [[ -s $file ]] && echo; echo "$out"; } >>"$file"
    log "added to ${file#"$REPO"/}; raw numbers in $RESULTS"
}

main() {
    check_tools
    mkdir -p "$WORK"
    trap 'kill_wait "$SRC_PID"; kill_wait "$DST_PID"; rm -rf "$BLOBS"' EXIT
    log "building hoist (release)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --locked -p hoist)
    ARCHIVE=$("$REPO/bench/push.sh" archive)
    launch_registry "$WORK/copy-src"
    SRC_PID=$LAUNCHED_PID SRC_PORT=$LAUNCHED_PORT
    log "pushing the image into the source registry ($COMPRESSION)"
    "$HOIST" push --quiet --progress none --no-cache --compression "$COMPRESSION" "$ARCHIVE" "$(src)" >/dev/null
    # curl_file uploads the same blobs from files, read once here into the page cache.
    rm -rf "$BLOBS" && mkdir -p "$BLOBS"
    local digest size
    while read -r digest size; do
        curl -fsS -o "$BLOBS/${digest#sha256:}" "http://127.0.0.1:$SRC_PORT/v2/bench/app/blobs/$digest"
    done < <(source_blobs)
    cat "$BLOBS"/* >/dev/null
    check_copies
    LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
    : >"$RESULTS"
    log "warm-up (not measured)"
    round hoist skopeo curl_pipe curl_file >/dev/null 2>&1 || true
    : >"$RESULTS"
    local r
    for r in $(seq "$RUNS"); do
        log "round $r of $RUNS"
        if ((r % 2)); then
            round hoist skopeo curl_pipe curl_file
            round_same hoist skopeo
        else
            round curl_file curl_pipe skopeo hoist
            round_same skopeo hoist
        fi
    done
    if [[ -z ${SKIP_SWEEP:-} ]]; then
        log "--jobs sweep"
        local j order=(1 2 3 4)
        for r in $(seq "$RUNS"); do
            # Round-robin, each round starting one later: load drifts hit every setting alike.
            for j in "${order[@]:r % 4}" "${order[@]:0:r % 4}"; do
                fresh_destination
                timed "jobs_$j" "${HOIST_COPY[@]}" --jobs "$j" "$(src)" "$(dst)"
            done
        done
    fi
    report
}

main "$@"

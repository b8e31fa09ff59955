#!/usr/bin/env bash
# hoist serve benchmark: an upload through the service with curl against
# `hoist push -` of the same file from the same disk, into a fresh loopback
# registry each time, on the ~1.3 GB archive of bench/push.sh; then the
# service's peak memory with four uploads in flight at once.
#
# Targets (issue 14): the upload through the service takes at most 1.2x the
# time of `hoist push -`; the service stays at or under 100 MB with four uploads.
#
# Environment:
#   HOIST_BENCH_DIR  work dir for the cached archive and registry storage (default /var/tmp/hoist-bench)
#   RUNS             repetitions of the serve/push comparison (default 3)
#   SERVE_ARGS       more flags for hoist serve (e.g. "--chunk-size 4M")
#   CARGO_TARGET_DIR where cargo builds hoist (default <repo>/target)
set -Eeuo pipefail
trap 'log "error: line $LINENO: $BASH_COMMAND failed"' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${HOIST_BENCH_DIR:-/var/tmp/hoist-bench}
RUNS=${RUNS:-3}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
HOIST=$TARGET/release/hoist
RESULTS=$WORK/serve-results.tsv # label wall_s peak_rss_kb
REG_PID="" REG_PORT="" SERVE_PID="" SERVE_PORT="" SERVE_RSS=0

source "$REPO/bench/lib.sh"

start_registry() {
    stop_registry
    launch_registry "$WORK/serve-registry"
    REG_PID=$LAUNCHED_PID REG_PORT=$LAUNCHED_PORT
}

stop_registry() {
    kill_wait "$REG_PID"
    REG_PID=""
}

# Starts `hoist serve` under GNU time (its peak memory goes to $WORK/serve.time).
start_serve() {
    SERVE_PORT=$(free_port)
    /usr/bin/time -f '%e %M' -o "$WORK/serve.time" \
        "$HOIST" serve --registry "127.0.0.1:$REG_PORT" --listen "127.0.0.1:$SERVE_PORT" ${SERVE_ARGS:-} \
        >"$WORK/serve.log" 2>&1 &
    SERVE_PID=$!
    answers "http://127.0.0.1:$SERVE_PORT/healthz" || die "hoist serve did not start: $(cat "$WORK/serve.log")"
}

# Stops the service (SIGTERM to hoist, GNU time's child); sets SERVE_RSS, its peak in KiB.
# Not in a $(subshell): only this shell can wait for its child.
stop_serve() {
    pkill -TERM -P "$SERVE_PID" || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
    SERVE_RSS=$(awk '{ print $2 }' "$WORK/serve.time")
}

cleanup() {
    [[ -z $SERVE_PID ]] || pkill -TERM -P "$SERVE_PID" 2>/dev/null || true
    stop_registry
}
trap cleanup EXIT

# Wall seconds of `hoist push -` of the archive into a fresh registry.
round_push() {
    start_registry
    /usr/bin/time -f '%e %M' -o "$WORK/push.time" \
        "$HOIST" push --progress none - "127.0.0.1:$REG_PORT/bench/app:1" <"$ARCHIVE" >/dev/null
    read -r wall rss <"$WORK/push.time"
    echo "push $wall $rss" >>"$RESULTS"
    log "$(printf 'hoist push -   %6.2fs  %4d MB' "$wall" $((rss / 1024)))"
}

# Wall seconds of `curl -T` of the archive through the service into a fresh registry.
round_serve() {
    start_registry
    start_serve
    local code
    code=$(/usr/bin/time -f '%e' -o "$WORK/curl.time" curl -sS -o "$WORK/answer.json" -w '%{http_code}' \
        -T "$ARCHIVE" "http://127.0.0.1:$SERVE_PORT/api/push?dest=127.0.0.1:$REG_PORT/bench/app:1")
    [[ $code == 200 ]] || die "the service answered $code: $(cat "$WORK/answer.json")"
    local wall rss
    wall=$(cat "$WORK/curl.time")
    stop_serve
    rss=$SERVE_RSS
    echo "serve $wall $rss" >>"$RESULTS"
    log "$(printf 'curl -T serve  %6.2fs  service %4d MB' "$wall" $((rss / 1024)))"
}

# Four uploads at once into four repositories; the service's peak memory.
round_four() {
    start_registry
    start_serve
    local pids=() i
    local started=$SECONDS
    for i in 1 2 3 4; do
        curl -sS -o "$WORK/answer-$i.json" -w '%{http_code}\n' -T "$ARCHIVE" \
            "http://127.0.0.1:$SERVE_PORT/api/push?dest=127.0.0.1:$REG_PORT/bench/app$i:1" >"$WORK/code-$i" &
        pids+=($!)
    done
    wait "${pids[@]}"
    for i in 1 2 3 4; do
        [[ $(cat "$WORK/code-$i") == 200 ]] || die "upload $i: $(cat "$WORK/answer-$i.json")"
    done
    local rss
    stop_serve
    rss=$SERVE_RSS
    echo "four $((SECONDS - started)) $rss" >>"$RESULTS"
    log "four at once: $((SECONDS - started))s, service peak $((rss / 1024)) MB"
}

median() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$RESULTS" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

report() {
    local push serve ratio four_rss serve_rss
    push=$(median push 2)
    serve=$(median serve 2)
    ratio=$(python3 -c "print(format($serve / $push, '.2f'))")
    serve_rss=$(median serve 3)
    four_rss=$(awk '$1 == "four" { print $3 }' "$RESULTS" | sort -n | tail -1)
    cat <<EOF
| measure | value | target |
|---|---|---|
| \`hoist push -\` of the archive (median of $RUNS) | ${push} s | |
| \`curl -T\` through \`hoist serve\` (median of $RUNS) | ${serve} s | |
| serve / push | ${ratio}x | <= 1.2x |
| service peak memory, one upload (median) | $((serve_rss / 1024)) MB | |
| service peak memory, four uploads at once | $((four_rss / 1024)) MB | <= 100 MB |

Archive: $(du -h "$ARCHIVE" | cut -f1) ($ARCHIVE); machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F).
EOF
}

main() {
    for tool in docker-registry curl python3; do command -v "$tool" >/dev/null || die "$tool is missing"; done
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
    mkdir -p "$WORK"
    ARCHIVE=$("$REPO/bench/push.sh" archive)
    log "building hoist (release)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --locked -p hoist)
    : >"$RESULTS"
    for r in $(seq "$RUNS"); do
        log "round $r of $RUNS"
        # Who goes first alternates, so neither always meets the machine as the other left it.
        if ((r % 2)); then round_push; round_serve; else round_serve; round_push; fi
    done
    round_four
    report
}

main "$@"

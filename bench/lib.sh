# What every benchmark script shares; sourced after WORK is set.

log() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is missing (apt-get install $2)"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# launch_registry DIR: a distribution registry on a free loopback port with
# fresh storage in DIR (like the testkit's TestRegistry; never the packaged
# config, which listens on all interfaces). Sets LAUNCHED_PID and
# LAUNCHED_PORT; call it outside $(...), so that this shell can wait for it.
launch_registry() {
    local dir=$1 port
    rm -rf "$dir" && mkdir -p "$dir/storage"
    port=$(free_port)
    cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: hoist-bench-secret
YAML
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    LAUNCHED_PID=$!
    LAUNCHED_PORT=$port
    answers "http://127.0.0.1:$port/v2/" || die "docker-registry did not start; its log: $(cat "$dir/registry.log")"
}

# answers URL: whether URL answers 2xx within 10 s.
answers() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# kill_wait PID: stops a process this shell started (nothing when PID is empty).
kill_wait() {
    [[ -n ${1:-} ]] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# need_bench_tools WHY: what push, pull and copy benchmarks all run, and the
# Docker Engine (which builds the image; WHY says what else it does).
need_bench_tools() {
    need docker docker.io
    need docker-registry docker-registry
    need skopeo skopeo
    need curl curl
    need jq jq
    need python3 python3
    # The shell keyword `time` cannot report peak memory; GNU time can.
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
    docker info >/dev/null 2>&1 || die "the Docker Engine is not reachable (docker info fails); $1"
}

# cpu_of PID: CPU seconds (user + system, all threads) the process has used so far.
cpu_of() {
    if [[ -n ${1:-} && -r /proc/$1/stat ]]; then
        # Fields 14-15 are utime and stime in clock ticks; the command name (field 2) has no spaces here.
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
    else
        echo 0
    fi
}

# timed LABEL CMD...: runs CMD under GNU time and appends "LABEL wall cpu
# rss_kb servers_cpu$TIMED_TAIL" to $RESULTS. The calling script defines
# servers_cpu (its registries' CPU so far): on two cores they compete with
# the tool, so they explain wall times that CPU time alone does not.
timed() {
    local label=$1
    shift
    local t=$WORK/time.out out=$WORK/cmd.log reg0 reg
    reg0=$(servers_cpu)
    if ! /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" >"$out" 2>&1; then
        log "FAILED: $label: $*"
        tail -5 "$out" >&2
        return 1
    fi
    reg=$(echo "$(servers_cpu) - $reg0" | bc)
    read -r wall user sys rss <"$t"
    printf '%s %s %s %s %s%s\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$reg" "${TIMED_TAIL:-}" >>"$RESULTS"
    log "$(printf '%-13s wall %6.2fs  cpu %6.2fs  rss %4d MB  registry cpu %6.2fs' "$label" "$wall" \
        "$(echo "$user + $sys" | bc)" $((rss / 1024)) "$reg")"
}

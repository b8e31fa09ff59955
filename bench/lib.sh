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
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && return
        sleep 0.1
    done
    die "docker-registry did not start; its log: $(cat "$dir/registry.log")"
}

# kill_wait PID: stops a process this shell started (nothing when PID is empty).
kill_wait() {
    [[ -n ${1:-} ]] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

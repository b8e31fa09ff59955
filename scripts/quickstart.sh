#!/usr/bin/env bash
# Quick start: build hoist, start a local registry on loopback, push a sample
# archive to it, and show what arrived. Stops the registry when done.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

if ! command -v docker-registry >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || ! command -v nasm >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  say "installing the registry (Debian package docker-registry) and what building ISA-L needs (nasm, make)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-registry curl busybox-static \
    nasm make >/dev/null
fi

say "building hoist (release)"
cargo build --release --locked -p hoist -p hoist-testkit --bins
hoist=target/release/hoist

work=$(mktemp -d)
registry_pid=""
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: 127.0.0.1:$port}
YAML
say "starting a registry on 127.0.0.1:$port"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

archive="$work/sample.tar"
use_docker=false
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && [ -x /bin/busybox ]; then
  use_docker=true
  say "making a sample archive with docker save (a busybox image)"
  mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  ln -s busybox "$work/rootfs/bin/sh"
  echo "pushed by hoist" >"$work/rootfs/etc/hoist-sample"
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  docker import "$work/rootfs.tar" hoist-sample:1.0 >/dev/null
  docker save -o "$archive" hoist-sample:1.0
  docker rmi hoist-sample:1.0 >/dev/null
else
  say "making a sample archive (no Docker Engine here: a generated docker-save archive)"
  target/release/hoist-fixture sample "$archive"
fi

say "what the archive holds: hoist inspect"
"$hoist" inspect "$archive"

dest="127.0.0.1:$port/sample/hoist-sample:1.0"
say "pushing: hoist push $archive $dest"
start=$(date +%s%N)
result=$("$hoist" push "$archive" "$dest")
end=$(date +%s%N)
echo "$result"
echo "pushed in $(( (end - start) / 1000000 )) ms" >&2

say "the registry now has"
curl -fs "http://127.0.0.1:$port/v2/sample/hoist-sample/tags/list"; echo
curl -fs -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "http://127.0.0.1:$port/v2/sample/hoist-sample/manifests/1.0"; echo

if $use_docker; then
  say "docker pull $dest && docker run it"
  docker pull -q "$dest"
  docker run --rm "$dest" /bin/busybox cat /etc/hoist-sample
  docker rmi "$dest" >/dev/null
fi

say "done"
cat >&2 <<TEXT
hoist printed the pushed reference and its manifest digest:
  $result
To check a push yourself: skopeo inspect --tls-verify=false docker://$dest
(the registry stops now; run your own with: docker-registry serve CONFIG)
TEXT

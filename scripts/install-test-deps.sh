#!/usr/bin/env bash
# Installs what hoist's tests need on a Debian machine: the real registry
# (CNCF distribution), skopeo (the independent checker) and a static busybox
# (the runnable image in the Docker round trip), curl and headless Chromium
# with its WebDriver (hoist serve's API and page), and what building hoist needs
# beyond the Rust toolchain. Idempotent and quiet.
set -euo pipefail

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v xz >/dev/null 2>&1 || need+=(xz-utils) # xz-wrapped archive fixtures
command -v curl >/dev/null 2>&1 || need+=(curl)    # hoist serve's API, as its users call it
# hoist serve's page, driven like a person would in a real headless browser.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Building hoist: ISA-L (the fast gzip behind --compression gzip:1-3) is built
# from source (vendor/isal-sys) with make and its assembler.
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v make >/dev/null 2>&1 || need+=(make)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The packaged registry service listens on all interfaces with the default
# config; tests start their own loopback instances, so keep it stopped.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true

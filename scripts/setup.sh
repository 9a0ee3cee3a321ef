#!/usr/bin/env bash
# Installs and starts what Gofer's build and tests need, when missing. Idempotent: safe to run
# again and again. Needs root (or sudo) for apt and dockerd.
#
#   Docker engine (docker.io) running at /var/run/docker.sock
#   busybox-static           (tiny local images, FROM scratch; no registry needed)
#   openssl                  (test certificates for the HTTPS tests)
#   Go (golang-go)           (Go SDKs and gRPC plugins)
#   grpc-go, protobuf-go     (Debian's Go sources: there is no Go module proxy; see scripts/go-plugins.sh)
#   protoc + Go generators   (to check the committed *.pb.go are fresh)
#   rustfmt, clippy and the wasm32-wasip2 target
#   buf                      (lints proto/; from the npm registry into ~/.cache/gofer-buf)
#   prometheus               (a real scraper of /metrics in the operations tests)
#   chromium + playwright-core (the web UI's browser tests; playwright-core from npm with the
#                            lockfile in tests/browser, no browser download)
#   componentize-py, moto, mdbook, a single-node Swarm, Podman (see below)
#
# `setup.sh --run` installs and starts only what `make run` and docs/getting-started.md need:
# Docker, busybox-static, curl and the wasm32-wasip2 target. It leaves the machine's Docker alone
# otherwise (no Swarm), so trying Gofer does not take the test suite's few minutes of installs.
set -euo pipefail

case "${1:-}" in
  --run) only_run=1 ;;
  "") only_run= ;;
  *) echo "usage: setup.sh [--run]" >&2; exit 2 ;;
esac

log() { printf '[setup] %s\n' "$*" >&2; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ -z "$only_run" ]; then
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  for package in golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev golang-google-protobuf-dev \
                 protobuf-compiler protoc-gen-go protoc-gen-go-grpc; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq "${missing[@]}" >/dev/null
fi

start_docker() {
  docker info >/dev/null 2>&1 && return
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd"
    sudo_if_needed sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  log "dockerd did not come up; see /var/log/dockerd.log"
  exit 1
}

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi
if [ -n "$only_run" ]; then
  start_docker
  exit 0
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

BUF_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/gofer-buf
if [ ! -x "$BUF_DIR/node_modules/.bin/buf" ]; then
  command -v npm >/dev/null 2>&1 || sudo_if_needed apt-get install -y -qq npm >/dev/null
  log "installing buf into $BUF_DIR"
  npm install --silent --no-audit --no-fund --prefix "$BUF_DIR" @bufbuild/buf@1.75.0 >/dev/null
fi

# playwright-core drives Debian's chromium in the web UI's tests (tests/browser/ui.mjs).
BROWSER_TESTS="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
wanted=$(node -p "require('$BROWSER_TESTS/package.json').dependencies['playwright-core']")
installed=$(node -p "require('$BROWSER_TESTS/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$wanted" != "$installed" ]; then
  log "installing playwright-core into tests/browser/node_modules"
  (cd "$BROWSER_TESTS" && npm ci --silent --no-audit --no-fund >/dev/null)
fi

# componentize-py (PyPI, pinned) builds the example Python plugin.
bash "$(dirname "$0")/python-plugin.sh" --setup
# moto (PyPI, pinned): the S3-compatible server the object store tests start.
bash "$(dirname "$0")/moto.sh" --setup
# mdbook (crates.io, pinned) builds the documentation site.
bash "$(dirname "$0")/docs.sh" --setup

start_docker
# A single-node Swarm on loopback for the Swarm scheduler's tests (`make test-engines`).
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != "active" ]; then
  log "starting a single-node Docker Swarm"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
# Podman and its Docker-compatible service, for the Podman scheduler's test.
bash "$(dirname "$0")/podman.sh"
log "ready: $(docker version --format 'docker {{.Server.Version}}'), $(podman --version), $(go version | cut -d' ' -f3), $(rustc --version)"

#!/usr/bin/env bash
# Podman's Docker-compatible service for the Podman scheduler's test (scheduler.engine = "podman").
# Idempotent; scripts/setup.sh runs it, and the test runs it again (fast when all is ready):
#   - installs Debian's podman (4.3) when it is missing;
#   - loads the test image (gofer-busybox:local) from Docker into Podman's own store;
#   - on machines whose root lacks CAP_SYS_RESOURCE and has hybrid cgroups (this project's CI
#     sandbox), where Podman's defaults fail ("setrlimit RLIMIT_NPROC: operation not permitted",
#     "crun: cgroups in hybrid mode not supported"), writes a containers.conf drop-in with
#     ulimits within the current hard limits and runc as the runtime;
#   - starts `podman system service` on /run/podman/podman.sock (Gofer's default for podman as
#     root) unless it answers there already.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
image=${GOFER_TEST_IMAGE:-gofer-busybox:local}
socket=/run/podman/podman.sock
log() { echo "[podman] $*"; }

if ! command -v podman >/dev/null 2>&1; then
  log "installing podman"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
bash "$ROOT/scripts/build-busybox-image.sh"
if ! podman image exists "$image"; then
  log "loading $image into Podman's store"
  docker save "$image" | podman load -q >/dev/null
fi
if ! podman run --rm "$image" true >/dev/null 2>&1; then
  dropin=/etc/containers/containers.conf.d/50-gofer-sandbox.conf
  log "podman cannot run containers with its defaults here; writing $dropin"
  mkdir -p "$(dirname "$dropin")"
  nofile=$(ulimit -Hn)
  cat > "$dropin" <<CONF
# Written by Gofer's scripts/podman.sh: Podman's default ulimits and crun fail on this machine.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
  podman run --rm "$image" true >/dev/null || { log "podman still cannot run a container"; exit 1; }
fi
if ! curl -sf --unix-socket "$socket" http://podman/_ping >/dev/null 2>&1; then
  log "starting podman system service on $socket"
  mkdir -p "$(dirname "$socket")"
  nohup podman system service --time=0 "unix://$socket" >/var/log/podman-service.log 2>&1 &
  for _ in $(seq 1 100); do
    curl -sf --unix-socket "$socket" http://podman/_ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf --unix-socket "$socket" http://podman/_ping >/dev/null || { log "the service did not answer; see /var/log/podman-service.log"; exit 1; }
fi

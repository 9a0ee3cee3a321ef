#!/usr/bin/env bash
# Builds the tiny local image `gofer-busybox:local` (FROM scratch + Debian's static busybox) that
# tests, demos and benchmarks run. No registry is needed. Idempotent: skips when the image exists,
# unless --force.
set -euo pipefail
image=${GOFER_TEST_IMAGE:-gofer-busybox:local}
if [ "${1:-}" != "--force" ] && docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp /bin/busybox "$context/busybox"
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$context" >/dev/null 2>&1
echo "built $image"

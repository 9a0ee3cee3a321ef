#!/usr/bin/env bash
# The quick start (`make run`): build Gofer, start a development server on embedded defaults,
# build a tiny local image (no registry), register and deploy the example DAG pipeline, run it with
# live progress, and leave the server running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gofer-target}"

if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
  bash scripts/setup.sh --run
fi
docker info >/dev/null 2>&1 || { echo "Docker is not running: start it (bash scripts/setup.sh --run, as root or with sudo) and try again" >&2; exit 1; }
bash scripts/build-busybox-image.sh
cargo build -q -p gofer
gofer="$CARGO_TARGET_DIR/debug/gofer"

"$gofer" service start &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
url="${GOFER_API_BASE_URL:-http://127.0.0.1:8080}"
for _ in $(seq 1 200); do
  curl -fs -H 'gofer-api-version: v0' "$url/api/system/metadata" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "the server did not start (is port 8080 taken? set GOFER_SERVER__BIND)" >&2; exit 1; }
  sleep 0.05
done

"$gofer" pipeline config register --file examples/hello.json --deploy
"$gofer" run start hello --follow || true
cat <<MSG

The server is running at $url (development mode, data in ${XDG_DATA_HOME:-~/.local/share}/gofer).
Open the web UI: $url/  (pipelines, live runs and logs, plugins, events)
hello is subscribed to the interval trigger: a run starts every 30 s on its own; watch them come:
  $gofer run list hello
In another terminal try:
  $gofer pipeline get hello
  $gofer run start hello --follow --var GREETING=hi
  $gofer event stream --history
Press Ctrl-C to stop it.
MSG
wait $server

#!/usr/bin/env bash
# Times a new user's first steps (docs/getting-started.md): `make run` until its first run has
# ended, then writing, building and dropping in a trigger plugin until that trigger has started a
# run. Each is timed from a fresh data home on a free port.
#
#   scripts/bench-first-run.sh          with the build caches as they are (CARGO_TARGET_DIR)
#   scripts/bench-first-run.sh --cold   `make run` builds Gofer into an empty target folder, as
#                                       on a fresh machine (about 6 minutes on 2 cores)
#
# The plugin project always builds cold, in its own target/, as it does for a reader. What a
# fresh machine adds on top is installing Docker and busybox-static from apt and fetching the
# crates (measured once and reported in docs/getting-started.md).
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d)
if [ "${1:-}" = "--cold" ]; then
  export CARGO_TARGET_DIR="$scratch/target"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gofer-target}"
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export XDG_DATA_HOME="$scratch/data" GOFER_SERVER__BIND="127.0.0.1:$port" GOFER_API_BASE_URL="http://127.0.0.1:$port"
gofer="$CARGO_TARGET_DIR/debug/gofer"
server=
cleanup() {
  [ -z "$server" ] || kill -TERM -- "-$server" 2>/dev/null || true
  [ -z "$server" ] || wait "$server" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

seconds_since() { python3 -c "import time; print(f'{time.time() - $1:.1f}')"; }

start=$(date +%s.%N)
setsid make run >"$scratch/make-run.log" 2>&1 &
server=$!
until grep -q "The server is running" "$scratch/make-run.log"; do
  kill -0 "$server" 2>/dev/null || { cat "$scratch/make-run.log" >&2; echo "make run failed" >&2; exit 1; }
  sleep 0.5
done
first_run=$(seconds_since "$start")

start=$(date +%s.%N)
(
  cd "$scratch"
  "$gofer" plugin new my-trigger --kind trigger --lang rust >/dev/null
  cd my-trigger
  env -u CARGO_TARGET_DIR cargo test -q >/dev/null 2>&1
  env -u CARGO_TARGET_DIR cargo build -q --release --target wasm32-wasip2
  cp target/wasm32-wasip2/release/my_trigger.wasm "$XDG_DATA_HOME/gofer/plugins/"
)
built=$(seconds_since "$start")
until "$gofer" plugin get my-trigger 2>/dev/null | grep -q my-trigger; do sleep 0.2; done
"$gofer" subscription create hello my-trigger every-2s -s every=2s >/dev/null
until "$gofer" run list hello 2>/dev/null | grep -q "my-trigger trigger"; do sleep 0.2; done
triggered=$(seconds_since "$start")

echo "| step | seconds |"
echo "|---|---|"
echo "| make run until its first run has ended ($( [ "${1:-}" = "--cold" ] && echo cold build || echo build caches as they were)) | $first_run |"
echo "| plugin new + cargo test + wasm32-wasip2 release build + copy (cold plugin target) | $built |"
echo "| ... until the new trigger has started a run | $triggered |"

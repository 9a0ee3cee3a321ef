#!/usr/bin/env bash
# Fuzzes the REST API with schemathesis (from PyPI, in a venv under ~/.cache) against a fresh
# development server, checking that no generated request gets a server error (5xx).
# `PATCH /api/system` is left out: pausing runs makes run starts answer 503 on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gofer-target}"
venv="$HOME/.cache/gofer-schemathesis"
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
cargo build -q -p gofer
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CARGO_TARGET_DIR/debug/gofer" service start --bind "127.0.0.1:$port" --data-dir "$data" 2>"$data/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 200); do
  curl -fs -H 'gofer-api-version: v0' "http://127.0.0.1:$port/api/system/metadata" >/dev/null 2>&1 && break
  sleep 0.05
done
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
  -H "gofer-api-version: v0" --max-examples "${FUZZ_EXAMPLES:-60}" \
  --phases examples,fuzzing,stateful \
  --exclude-path-regex 'attach|/logs$' --exclude-operation-id update_system_preferences \
  -c not_a_server_error

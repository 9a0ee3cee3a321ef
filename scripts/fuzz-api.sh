#!/usr/bin/env bash
# Fuzzes the REST API with schemathesis (from PyPI, in a venv under ~/.cache), checking that no
# generated request gets a server error (5xx). Two passes, each on a fresh server:
#   1. development mode (no auth: every route is reached);
#   2. authentication on, as a restricted token (role: read/write in namespaces `^team-.*` and
#      pipelines `^app.*`, plus events and plugins), so the 401/403 paths and the filtered lists
#      are fuzzed too;
#   3. the team boundary: every operation of the OpenAPI document aimed at another team's
#      namespace, also through percent-encoded and path-traversing ids, with tokens scoped to
#      one team and to the default namespace; any 2xx (or a glimpse of the other team) fails.
#      That walk is the end-to-end test security::no_operation_crosses_the_team_boundary.
# `PATCH /api/system` is left out: pausing runs makes run starts answer 503 on purpose.
# FUZZ_EXAMPLES (default 60) sets the examples per operation; FUZZ_PASSES="dev auth boundary" the
# passes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gofer-target}"
venv="$HOME/.cache/gofer-schemathesis"
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
cargo build -q -p gofer

server=""
data=""
cleanup() {
  [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  [ -n "$data" ] && rm -rf "$data"
  server=""
  data=""
}
trap cleanup EXIT

# start_server [ARGS...]: a fresh server on a free port; sets $base.
start_server() {
  data=$(mktemp -d)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  GOFER_SECRETS__ENCRYPTION_KEY=0123456789abcdef0123456789abcdef \
    "$CARGO_TARGET_DIR/debug/gofer" service start --bind "127.0.0.1:$port" --data-dir "$data" "$@" \
    2>"$data/server.log" &
  server=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    curl -fs -H 'gofer-api-version: v0' "$base/api/system/metadata" >/dev/null 2>&1 && return
    sleep 0.05
  done
  echo "fuzz: the server did not start:" >&2
  cat "$data/server.log" >&2
  exit 1
}

# api TOKEN METHOD PATH [BODY]: one JSON request; prints the body.
api() {
  curl -fsS -X "$2" -H 'gofer-api-version: v0' -H "Authorization: Bearer $1" \
    -H 'content-type: application/json' ${4:+--data "$4"} "$base$3"
}

fuzz() {
  "$venv/bin/schemathesis" run "$base/api/openapi.json" \
    -H "gofer-api-version: v0" "$@" --max-examples "${FUZZ_EXAMPLES:-60}" \
    --phases examples,fuzzing,stateful \
    --exclude-path-regex 'attach|/logs$' --exclude-operation-id update_system_preferences \
    -c not_a_server_error
}

for pass in ${FUZZ_PASSES:-dev auth boundary}; do
  case "$pass" in
    dev)
      echo "== fuzz pass: development mode"
      start_server
      fuzz
      ;;
    auth)
      echo "== fuzz pass: authentication on, restricted token"
      start_server --auth
      root=$(curl -fsS -X POST -H 'gofer-api-version: v0' "$base/api/tokens/bootstrap" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
      api "$root" POST /api/namespaces '{"id":"team-a","name":"team a","description":""}' >/dev/null
      api "$root" POST /api/roles '{"id":"team","description":"fuzzing","permissions":[{"resources":["namespaces:^team-.*","pipelines:^app.*","configs","deployments","runs","task_executions","objects","subscriptions","events","plugins:.*"],"actions":["read","write","delete"]}]}' >/dev/null
      team=$(api "$root" POST /api/tokens '{"user":"fuzzer","roles":["team"],"expires":0}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
      fuzz -H "Authorization: Bearer $team"
      ;;
    boundary)
      echo "== fuzz pass: every operation across the team boundary"
      cargo test -q -p gofer --test it -- --exact security::no_operation_crosses_the_team_boundary
      ;;
    *) echo "fuzz: unknown pass '$pass' (use dev, auth, boundary)" >&2; exit 2 ;;
  esac
  cleanup
done

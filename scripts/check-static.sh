#!/usr/bin/env bash
# Checks that the release binary is statically linked and that it serves the API and runs the CLI,
# from a directory with no Rust toolchain on PATH. Prints its size, start-up time and idle RSS.
set -euo pipefail
bin=${1:?usage: check-static.sh PATH/TO/gofer [COMMIT]}
commit=${2:-}
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

cp "$bin" "$work/gofer"
if ldd "$work/gofer" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
  echo "static: $(file -b "$work/gofer" | cut -d, -f1-2)"
else
  echo "FAIL: $bin is dynamically linked:"; ldd "$work/gofer"; exit 1
fi
size=$(stat -c %s "$work/gofer")
version=$("$work/gofer" --version)
if [ -n "$commit" ] && ! grep -q "(commit $commit, built [0-9-]*)" <<<"$version"; then
  echo "FAIL: --version does not name commit $commit and a build date: $version"; exit 1
fi
echo "version: $version"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start=$(date +%s%N)
env -i PATH=/usr/bin:/bin HOME="$work" "$work/gofer" service start --bind "127.0.0.1:$port" --data-dir "$work/data" 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 500); do
  curl -fs -H 'gofer-api-version: v0' "http://127.0.0.1:$port/api/system/metadata" >/dev/null 2>&1 && break
  sleep 0.01
done
ready=$(( ($(date +%s%N) - start) / 1000000 ))
env -i PATH=/usr/bin:/bin HOME="$work" "$work/gofer" --api-base-url "http://127.0.0.1:$port" namespace list | grep -q default \
  || { echo "FAIL: the CLI could not list namespaces"; cat "$work/server.log"; exit 1; }
# Read whole before searching: `curl | grep -q` fails under pipefail when grep stops reading early.
page=$(curl -fs "http://127.0.0.1:$port/docs/" || true)
grep -q "<title>Introduction - Gofer</title>" <<<"$page" \
  || { echo "FAIL: the manual is not served at /docs/"; exit 1; }
page=$(curl -fs "http://127.0.0.1:$port/docs/configuration.html" || true)
grep -q "objects.s3.bucket" <<<"$page" \
  || { echo "FAIL: /docs/configuration.html is not the configuration page"; exit 1; }
echo "manual: served at /docs/"
sleep 0.5
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid"
echo "ok: size $((size / 1024 / 1024)) MiB, start to healthy ${ready} ms, idle RSS $((rss / 1024)) MiB"

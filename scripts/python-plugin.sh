#!/usr/bin/env bash
# Builds the example Python plugin (examples/plugin-python) into a WebAssembly component with
# componentize-py, pinned, installed from PyPI into a virtualenv under ~/.cache (once).
#
#   scripts/python-plugin.sh [OUT]     writes OUT/py-tally.wasm (default target/plugins-py)
#   scripts/python-plugin.sh --setup   only installs componentize-py (scripts/setup.sh runs it)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COMPONENTIZE_PY_VERSION=0.25.1
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/gofer-py/componentize-py-$COMPONENTIZE_PY_VERSION
install() {
  [ -x "$VENV/bin/componentize-py" ] && return
  python3 -m venv --help >/dev/null 2>&1 || apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
}
if [ "${1:-}" = --setup ]; then
  install
  exit 0
fi
install
OUT=$(mkdir -p "${1:-$ROOT/target/plugins-py}" && cd "${1:-$ROOT/target/plugins-py}" && pwd)

# Built from a copy: componentize-py leaves __pycache__ beside the sources it reads.
SOURCES=$(mktemp -d)
trap 'rm -rf "$SOURCES"' EXIT
cp "$ROOT/examples/plugin-python/app.py" "$SOURCES/"
cd "$SOURCES"
"$VENV/bin/componentize-py" -d "$ROOT/wit/0.2.0" -w task componentize app -o "$OUT/py-tally.wasm.tmp" >/dev/null
mv "$OUT/py-tally.wasm.tmp" "$OUT/py-tally.wasm"
echo "built $OUT/py-tally.wasm"

#!/usr/bin/env bash
# The documentation site: docs/ as an mdBook (book.toml), built into target/book.
#
#   scripts/docs.sh --setup   installs mdbook (crates.io, pinned) under ~/.cache once
#   scripts/docs.sh build     builds the book; any mdbook warning (a broken {{#include}}, ...) is
#                             an error, then every link and anchor is checked
#                             (scripts/check-docs-links.py)
#   scripts/docs.sh serve     builds it and serves it on http://127.0.0.1:3000
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MDBOOK_VERSION=0.5.4
TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/gofer-tools/mdbook-$MDBOOK_VERSION
MDBOOK=$TOOLS/bin/mdbook
if [ ! -x "$MDBOOK" ]; then
  echo "[docs] installing mdbook $MDBOOK_VERSION (once)"
  # Its own target dir, removed afterwards: the tool is all that is kept.
  CARGO_TARGET_DIR="$TOOLS/build" cargo install --quiet "mdbook@$MDBOOK_VERSION" --locked \
    --no-default-features --features search --root "$TOOLS"
  rm -rf "$TOOLS/build"
fi
case "${1:-}" in
  --setup) exit 0 ;;
  build|serve) ;;
  *) echo "usage: scripts/docs.sh --setup | build | serve" >&2; exit 2 ;;
esac
log=$("$MDBOOK" build "$ROOT" 2>&1) || { echo "$log"; exit 1; }
if grep -E "WARN|ERROR" <<<"$log"; then
  echo "[docs] mdbook reported problems (above): the book is not built cleanly" >&2
  exit 1
fi
python3 "$ROOT/scripts/check-docs-links.py"
echo "[docs] built $ROOT/target/book ($(find "$ROOT/target/book" -name '*.html' | wc -l) pages)"
if [ "$1" = serve ]; then
  echo "[docs] serving on http://127.0.0.1:3000/ (Ctrl-C stops)"
  exec python3 -m http.server 3000 --bind 127.0.0.1 --directory "$ROOT/target/book"
fi

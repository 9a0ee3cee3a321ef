#!/usr/bin/env bash
# moto's S3-compatible server (PyPI, pinned), installed into a virtualenv under ~/.cache (once):
# the real S3 API the object store tests run against (objects.engine = "s3").
#
#   scripts/moto.sh --setup        only installs it (scripts/setup.sh runs this)
#   scripts/moto.sh --path         prints the moto_server executable's path (installs it first)
set -euo pipefail

MOTO_VERSION=5.2.6
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/gofer-py/moto-$MOTO_VERSION
if [ ! -x "$VENV/bin/moto_server" ]; then
  python3 -m venv --help >/dev/null 2>&1 || apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[s3,server]==$MOTO_VERSION"
fi
case "${1:-}" in
  --setup) ;;
  --path) echo "$VENV/bin/moto_server" ;;
  *) echo "usage: scripts/moto.sh --setup | --path" >&2; exit 2 ;;
esac

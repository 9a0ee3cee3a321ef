#!/usr/bin/env bash
# Builds, tests and regenerates the Go plugin SDK (sdk-go/plugin) and its examples, offline.
#
#   scripts/go-plugins.sh build [OUT]   the example plugins and test fixtures + manifests into OUT
#                                       (target/plugins-go)
#   scripts/go-plugins.sh test          go vet + go test of the SDK and examples
#   scripts/go-plugins.sh generate      regenerate the committed *.pb.go from proto/
#   scripts/go-plugins.sh check         fail if the committed *.pb.go are not what proto/ gives
#   scripts/go-plugins.sh project DIR test|build
#                                       vet and test, or build, a plugin project made by
#                                       `gofer plugin new --lang go` (its executable into DIR)
#
# There is no Go module proxy here, so grpc-go and protobuf come from Debian's packages
# (/usr/share/gocode, installed by scripts/setup.sh). The module's own go.mod only names its
# requirements; this script writes a second go.mod outside the tree (-modfile) that replaces them
# with Debian's sources, and empty stub modules for those only named in dependencies' go.mod files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=$ROOT/sdk-go/plugin
GOCODE=/usr/share/gocode/src
WORK=${GOFER_GO_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/gofer-go}
export GO111MODULE=on GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOFLAGS=-mod=mod

die() { printf 'go-plugins: %s\n' "$*" >&2; exit 1; }

# modfile [SOURCE_DIR [MODFILE]]: a copy of SOURCE_DIR/go.mod (the SDK's) at MODFILE
# ($WORK/go.mod) whose requirements resolve to Debian's sources.
modfile() {
  local source=${1:-$MODULE} target=${2:-$WORK/go.mod}
  [ -d "$GOCODE/google.golang.org/grpc" ] ||
    die "grpc-go sources are missing in $GOCODE; run scripts/setup.sh (Debian golang-google-grpc-dev)"
  mkdir -p "$WORK/stubs"
  cp "$source/go.mod" "$target"
  : > "${target%.mod}.sum"
  local edits=()
  for m in google.golang.org/grpc google.golang.org/protobuf google.golang.org/genproto \
           github.com/golang/protobuf github.com/google/go-cmp golang.org/x/net \
           golang.org/x/sys golang.org/x/text golang.org/x/oauth2; do
    edits+=("-replace=$m=$GOCODE/$m")
  done
  for m in github.com/cncf/udpa/go github.com/envoyproxy/go-control-plane github.com/golang/glog \
           github.com/google/uuid golang.org/x/term cloud.google.com/go/compute/metadata \
           google.golang.org/appengine golang.org/x/lint golang.org/x/tools honnef.co/go/tools \
           golang.org/x/mod; do
    mkdir -p "$WORK/stubs/$m"
    echo "module $m" > "$WORK/stubs/$m/go.mod"
    edits+=("-replace=$m=$WORK/stubs/$m")
  done
  (cd "$source" && go mod edit -modfile="$target" "${edits[@]}")
}

gomod() { (cd "$MODULE" && go "$1" -modfile="$WORK/go.mod" "${@:2}"); }

case "${1:-}" in
  build)
    OUT=$(mkdir -p "${2:-$ROOT/target/plugins-go}" && cd "${2:-$ROOT/target/plugins-go}" && pwd)
    modfile
    for example in go-ticker go-echo; do
      gomod build -trimpath -o "$OUT/$example" "./examples/$example"
      cp "$MODULE/examples/$example/$example.toml" "$OUT/"
    done
    # Test fixtures (misbehaving on purpose), beside the examples.
    for fixture in go-cutter; do
      gomod build -trimpath -o "$OUT/$fixture" "./fixtures/$fixture"
      cp "$MODULE/fixtures/$fixture/$fixture.toml" "$OUT/"
    done
    echo "built $(cd "$OUT" && ls | tr '\n' ' ')in $OUT"
    ;;
  test)
    modfile
    gomod vet ./...
    gomod test ./...
    ;;
  project)
    DIR=$(cd "${2:?give the project folder}" && pwd)
    [ -f "$DIR/go.mod" ] || die "$DIR has no go.mod"
    NAME=$(basename "$DIR")
    mkdir -p "$WORK/projects"
    PROJECT_MOD=$WORK/projects/$NAME.mod
    modfile "$DIR" "$PROJECT_MOD"
    project() { (cd "$DIR" && go "$1" -modfile="$PROJECT_MOD" "${@:2}"); }
    case "${3:-}" in
      test) project vet ./... && project test -count=1 ./... ;;
      build) project build -trimpath -o "$DIR/$NAME" . && echo "built $DIR/$NAME" ;;
      *) die "project DIR test|build" ;;
    esac
    ;;
  generate | check)
    command -v protoc-gen-go-grpc >/dev/null ||
      die "protoc-gen-go-grpc is missing; run scripts/setup.sh (Debian protoc-gen-go-grpc)"
    generated=$(mktemp -d); trap 'rm -rf "$generated"' EXIT
    protoc -I "$ROOT/proto" --go_out="$generated" --go_opt=paths=source_relative \
      --go-grpc_out="$generated" --go-grpc_opt=paths=source_relative gofer/plugin/v1/plugin.proto
    if [ "$1" = generate ]; then
      cp "$generated"/gofer/plugin/v1/*.go "$MODULE/proto/pluginv1/"
    elif ! diff -r "$generated/gofer/plugin/v1" "$MODULE/proto/pluginv1" >/dev/null; then
      die "sdk-go/plugin/proto/pluginv1 is stale; run scripts/go-plugins.sh generate"
    fi
    ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac

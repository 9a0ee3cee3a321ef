#!/usr/bin/env bash
# The release archive: dist/NAME.tar.gz holds NAME/ laid out like a prefix, so that unpacking it
# into /usr/local (or `make install`) puts everything where the system looks for it:
#
#   bin/gofer                                   the static binary
#   share/man/man1/gofer.1                      the man page
#   share/bash-completion/completions/gofer     completions for bash, zsh and fish
#   share/zsh/site-functions/_gofer
#   share/fish/vendor_completions.d/gofer.fish
#   share/doc/gofer/README.md, CHANGELOG.md
#
# The archive is reproducible: sorted names, fixed times and owners, gzip without a timestamp.
#
#   release-archive.sh pack DIST NAME      from DIST/NAME, DIST/gofer.1, DIST/completions/
#   release-archive.sh check NAME [COMMIT] checks dist/NAME.tar.gz's SHA-256, installs it with
#                                          `make install` into a scratch root and checks each part
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
  local dist=$1 name=$2
  local root="$dist/.pack/$name"
  rm -rf "$dist/.pack"
  mkdir -p "$root/bin" "$root/share/man/man1" "$root/share/bash-completion/completions" \
           "$root/share/zsh/site-functions" "$root/share/fish/vendor_completions.d" "$root/share/doc/gofer"
  install -m 0755 "$dist/$name" "$root/bin/gofer"
  install -m 0644 "$dist/gofer.1" "$root/share/man/man1/gofer.1"
  install -m 0644 "$dist/completions/gofer.bash" "$root/share/bash-completion/completions/gofer"
  install -m 0644 "$dist/completions/gofer.zsh" "$root/share/zsh/site-functions/_gofer"
  install -m 0644 "$dist/completions/gofer.fish" "$root/share/fish/vendor_completions.d/gofer.fish"
  install -m 0644 README.md CHANGELOG.md "$root/share/doc/gofer/"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dist/.pack" -cf - "$name" \
    | gzip -n -9 > "$dist/$name.tar.gz"
  rm -rf "$dist/.pack"
  (cd "$dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
}

check() {
  local archive=dist/$1.tar.gz commit=${2:-}
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  (cd "$(dirname "$archive")" && sha256sum --check --quiet "$(basename "$archive").sha256")
  # `make install`, into a scratch root.
  make --no-print-directory -s install DESTDIR="$work/root" PREFIX=/usr/local >/dev/null
  local prefix=$work/root/usr/local
  for part in bin/gofer share/man/man1/gofer.1 share/bash-completion/completions/gofer \
              share/zsh/site-functions/_gofer share/fish/vendor_completions.d/gofer.fish \
              share/doc/gofer/README.md share/doc/gofer/CHANGELOG.md; do
    [ -s "$prefix/$part" ] || { echo "FAIL: the archive has no $part"; exit 1; }
  done
  local version
  version=$("$prefix/bin/gofer" --version)
  if [ -n "$commit" ] && ! grep -q "(commit $commit," <<<"$version"; then
    echo "FAIL: the archive's gofer is not commit $commit: $version"; exit 1
  fi
  grep -q '^\.TH gofer 1' "$prefix/share/man/man1/gofer.1" || { echo "FAIL: gofer.1 is not a man page"; exit 1; }
  # The bash completion, sourced as bash-completion would, completes a subcommand.
  local completed
  completed=$(bash -c 'source "$1"; COMP_WORDS=(gofer pipel); COMP_CWORD=1; COMP_LINE="gofer pipel"; COMP_POINT=${#COMP_LINE};
                      _gofer gofer pipel gofer; printf "%s\n" "${COMPREPLY[@]}"' _ "$prefix/share/bash-completion/completions/gofer")
  grep -qx pipeline <<<"$completed" || { echo "FAIL: the bash completion does not complete 'pipel': $completed"; exit 1; }
  # Reproducible: packing what it holds again gives the same bytes.
  local name
  name=$(basename "$archive" .tar.gz)
  mkdir -p "$work/again"
  tar -xzf "$archive" -C "$work/again"
  local again
  again=$(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/again" -cf - "$name" | gzip -n -9 | sha256sum)
  [ "${again%% *}" = "$(sha256sum < "$archive" | cut -d' ' -f1)" ] \
    || { echo "FAIL: packing the archive's contents again gives other bytes: it is not reproducible"; exit 1; }
  echo "archive: $(basename "$archive"), $(( $(stat -c %s "$archive") / 1024 / 1024 )) MiB, $(tar -tzf "$archive" | grep -vc '/$') files; installs bin/gofer ($version), its man page, completions and docs"
}

case "${1:-}" in
  pack) pack "${2:?DIST}" "${3:?NAME}" ;;
  check) check "${2:?NAME}" "${3:-}" ;;
  *) echo "usage: release-archive.sh pack DIST NAME | check NAME [COMMIT]" >&2; exit 2 ;;
esac

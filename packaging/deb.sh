#!/bin/sh
# packaging/deb.sh OUT.deb: a .deb of the six tools, man pages and shell
# completions, from `make install DESTDIR=...` of the binaries already
# built (run `make` first). Reproducible: every mtime is the last commit's
# (SOURCE_DATE_EPOCH), man pages are `gzip -n`, files are owned by root in
# the archive, and the binaries carry no build paths (the Makefile's build
# remaps them); two runs give byte-identical files (`make deb-check`).
set -eu
out=${1:?usage: deb.sh OUT.deb}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM

make --no-print-directory install DESTDIR="$stage" PREFIX=/usr >/dev/null
# As dh_strip does (Debian policy 10.1): no symbols, no build notes.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage"/usr/bin/*
gzip -9n "$stage"/usr/share/man/man1/*.1
doc="$stage/usr/share/doc/image-tools"
mkdir -p "$doc"
# A native package's changelog.gz is in Debian's format; the project's
# own notes ride along as NEWS.md.gz.
gzip -9nc CHANGELOG.md > "$doc/NEWS.md.gz"
{
  echo "image-tools ($version) unstable; urgency=medium"
  echo
  echo "  * Release $version; the changes are in /usr/share/doc/image-tools/NEWS.md.gz."
  echo
  echo " -- image-tools developers <dev@image-tools.invalid>  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.gz"
# The crates compiled into the binaries, with their licences.
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: image-tools"
  echo
  echo "Files: *"
  echo "Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) image-tools developers"
  echo "License: Apache-2.0"
  echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
  echo
  echo "Comment: Rust crates compiled into the binaries (name version: licence)"
  cargo tree -e normal --workspace --prefix none -f '{p}: {l}' --locked --offline 2>/dev/null |
    grep -v "$here" | sed 's/ (\*)//; s/^/ /' | LC_ALL=C sort -u
} > "$doc/copyright"

mkdir -p "$stage/DEBIAN"
(cd "$stage" && find usr -type f | LC_ALL=C sort | xargs md5sum) > "$stage/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: image-tools
Version: $version
Architecture: $arch
Maintainer: image-tools developers <dev@image-tools.invalid>
Installed-Size: $size
Depends: libc6, libgcc-s1, libsqlite3-0
Recommends: qemu-utils, jq
Section: admin
Priority: optional
Homepage: https://image-tools.invalid/
Description: Unix filter tools for OpenStack image plumbing
 imginfo-parse, vhd-chain, cachewalk, glance-dump, glance-load and
 checksum-tee read and write JSON Lines, so operators pipe them together
 and into jq: qemu-img info parsing and image acceptance checks, XenServer
 VHD chains, the Nova _base and Glance image caches, Glance replication and
 a cloud-wide image header audit.
CONTROL
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chmod -R u+rwX,go+rX,go-w "$stage"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"

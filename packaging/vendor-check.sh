#!/bin/sh
# The offline build the README gives packagers, run as written: in a copy
# of the committed tree, `cargo vendor` into vendor/ with its config in
# .cargo/config.toml, then `make CARGOFLAGS="--locked --offline"` with an
# empty CARGO_HOME, so nothing can come from the registry or its cache.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
mkdir "$d/src" "$d/home"
(cd "$root" && git ls-files -z | xargs -0 tar -cf - --) | tar -xf - -C "$d/src"
cd "$d/src"
# The README's two commands.
mkdir -p .cargo && cargo vendor --locked vendor > .cargo/config.toml 2>"$d/vendor.log" ||
  { cat "$d/vendor.log" >&2; echo "vendor-check: cargo vendor failed" >&2; exit 1; }
if ! CARGO_HOME="$d/home" make CARGOFLAGS="--locked --offline" >"$d/build.log" 2>&1; then
  tail -40 "$d/build.log" >&2
  echo "vendor-check: the offline build from vendored crates failed" >&2
  exit 1
fi
for t in imginfo-parse checksum-tee vhd-chain cachewalk glance-dump glance-load; do
  ./target/release/$t --version >/dev/null
done
echo "vendor-check: built offline from $(ls vendor | wc -l) vendored crates, empty CARGO_HOME"

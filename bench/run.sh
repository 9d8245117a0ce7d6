#!/bin/sh
# `make bench`: imginfo-parse against what an operator would otherwise run
# (a Python filter over oslo.utils QemuImgInfo, the parser the OpenStack
# services use; 9.2.0 is its last release that reads human text), in the
# same run, on the same input, whole process against whole process; prints
# the ratio. Both write one JSON line per image.
# Usage: sh bench/run.sh BIN_DIR
set -eu
bin=${1:?usage: run.sh BIN_DIR}
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/../tests/fixtures/qemu/10.0.2"
venv="$here/.venv"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

if [ ! -x "$venv/bin/python" ]; then
  echo "bench: installing oslo.utils==9.2.0 into bench/.venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'oslo.utils==9.2.0'
fi

# Copies of every single-image capture of the corpus: about 20,000 images.
copies=${BENCH_COPIES:-400}
for kind in json human.txt; do
  one="$work/one.$kind"
  : > "$one"
  for f in "$corpus"/*."$kind"; do
    case "$f" in *.chain.*|*inject*|*missing*|*-url*) continue ;; esac
    cat "$f" >> "$one"
  done
  i=0
  : > "$work/all.$kind"
  while [ "$i" -lt "$copies" ]; do cat "$one" >> "$work/all.$kind"; i=$((i + 1)); done
done

now_ns() { date +%s%N; }
best_of_3() { # prints the fastest of three runs, in ns
  best=
  for _ in 1 2 3; do
    t0=$(now_ns); "$@" > "$work/out" ; t1=$(now_ns)
    t=$((t1 - t0))
    if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
  done
  echo "$best"
}

for kind in json human.txt; do
  fmt=${kind%.txt}
  ours=$(best_of_3 sh -c "'$bin/imginfo-parse' -q < '$work/all.$kind'")
  n_ours=$("$bin/imginfo-parse" -q < "$work/all.$kind" | wc -l)
  theirs=$(best_of_3 sh -c "'$venv/bin/python' '$here/oslo_filter.py' $fmt < '$work/all.$kind'")
  n_theirs=$("$venv/bin/python" "$here/oslo_filter.py" "$fmt" < "$work/all.$kind" | wc -l)
  awk -v a="$ours" -v b="$theirs" -v na="$n_ours" -v nb="$n_theirs" -v fmt="$fmt" 'BEGIN {
    printf "%-5s imginfo-parse: %6d images in %7.1f ms (%5.1f us/image)\n", fmt, na, a / 1e6, a / 1e3 / na
    printf "%-5s oslo.utils:    %6d images in %7.1f ms (%5.1f us/image)\n", fmt, nb, b / 1e6, b / 1e3 / nb
    printf "%-5s ratio: imginfo-parse is %.1fx as fast\n", fmt, b / a
  }'
done

# Native probe against spawning qemu-img per image (what Nova, Cinder and
# Glance do): 1000 images of mixed formats made by the fixture script; the
# fastest of three runs each, page cache warm for both.
if ! command -v qemu-img >/dev/null 2>&1; then
  echo "probe: qemu-img not installed; skipping the native-vs-qemu-img comparison"
  exit 0
fi
KEEP_IMAGES="$work/img" bash "$here/../tests/fixtures/qemu/make-fixtures.sh" "$work/caps" >/dev/null
mkdir -p "$work/many"
singles=$(awk -F '\t' '$1 ~ /\.json$/ && $1 !~ /\.chain\./ && $2 == 0 { n = split($3, a, " "); f = a[n]; if (f !~ /^json:/ && f !~ /^-/) print f }' "$work/caps/MANIFEST.tsv" | sort -u)
i=0
while [ "$i" -lt 1000 ]; do
  for f in $singles; do
    [ "$i" -ge 1000 ] && break
    cp --sparse=always "$work/img/$f" "$work/many/$i.${f##*.}"
    i=$((i + 1))
  done
done
cd "$work/many"
"$bin/imginfo-parse" -q -- * > "$work/native.jsonl" || true
native=$(best_of_3 sh -c "'$bin/imginfo-parse' -q -- * || true")
qemu=$(best_of_3 sh -c 'for f in *; do qemu-img info --output=json "$f" > /dev/null 2>&1 || true; done')
n=$(wc -l < "$work/native.jsonl")
awk -v a="$native" -v b="$qemu" -v n="$n" 'BEGIN {
  printf "probe imginfo-parse (native): %4d images in %8.1f ms (%7.1f us/image)\n", n, a / 1e6, a / 1e3 / n
  printf "probe qemu-img info per image: %4d images in %8.1f ms (%7.1f us/image)\n", n, b / 1e6, b / 1e3 / n
  printf "probe ratio: the native probe is %.0fx as fast\n", b / a
}'

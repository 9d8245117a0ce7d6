#!/bin/sh
# `make bench`: the native probe against spawning `qemu-img info
# --output=json` per image (what Nova, Cinder and Glance do), whole process
# against whole process, in the same run, on a mixed corpus holding every
# format the native probe knows: the fixture images (make-fixtures.sh:
# qcow2, qcow, qed, luks, vmdk variants, vpc, vhdx, vdi, parallels, ISO,
# GPT, MBR, raw) and the committed hostile images (bochs, cloop, a UDIF
# disk named *.dmg, broken headers qemu-img refuses too). The corpus takes
# the formats in turn (each as often as the others, its files in turn), so
# a slow format is not hidden by a crowd of fast ones. Prints the images of
# each format, both times, the ratio; the native probe runs on every core
# (its default --jobs) and, for information, on one (--jobs 1). Fastest of
# five runs each, alternating, page cache warm for both.
# Usage: sh bench/probe.sh BIN_DIR   (BENCH_PROBE_IMAGES=N, default 1100)
set -eu
bin=${1:?usage: probe.sh BIN_DIR}
here=$(cd "$(dirname "$0")" && pwd)
ip="$bin/imginfo-parse"
[ -x "$ip" ] || { echo "probe: $ip missing: run 'make build' first" >&2; exit 2; }
if ! command -v qemu-img >/dev/null 2>&1; then
  echo "probe: qemu-img not installed; skipping the native-vs-qemu-img comparison"
  exit 0
fi
for t in genisoimage xorriso; do
  if ! command -v "$t" >/dev/null 2>&1; then
    echo "probe: $t not installed (make-fixtures.sh needs it); skipping the native-vs-qemu-img comparison"
    exit 0
  fi
done
total=${BENCH_PROBE_IMAGES:-1100}
work=$(mktemp -d "${TMPDIR:-/tmp}/probe-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The sources: every single-image fixture, every hostile image, and the
# UDIF disk once more as *.dmg (qemu's dmg probe goes by the name).
KEEP_IMAGES="$work/img" bash "$here/../tests/fixtures/qemu/make-fixtures.sh" "$work/caps" >/dev/null
mkdir -p "$work/src"
n=0
for f in $(awk -F '\t' '$1 ~ /\.json$/ && $1 !~ /\.chain\./ && $2 == 0 { n = split($3, a, " "); f = a[n]; if (f !~ /^json:/ && f !~ /^-/) print f }' "$work/caps/MANIFEST.tsv" | sort -u) \
  "$here"/../tests/fixtures/hostile/images/* "$here/../tests/fixtures/hostile/images/udif.img=udif.dmg"; do
  case "$f" in */expect.tsv) continue ;; esac
  case "$f" in *=*) name=${f#*=}; f=${f%%=*} ;; *) name=${f##*/} ;; esac
  case "$f" in /*) ;; *) f="$work/img/$f" ;; esac
  n=$((n + 1))
  cp --sparse=always "$f" "$work/src/$n-$name"
done

# Each source's format as the probe reads it: a qemu format, a layout qemu
# reads as raw (iso, gpt, mbr), or `error` (a header both refuse).
(cd "$work/src" && "$ip" -q --jobs 1 -- * || true) |
  jq -r '[.path // .info.filename,
          if .error then "error"
          elif .info.format == "raw" and ((.info.detected_formats // []) | length) > 1
          then .info.detected_formats[1] else .info.format end] | @tsv' > "$work/kinds.tsv"

# The corpus: the formats in turn, each format's files in turn.
mkdir -p "$work/many"
awk -F '\t' -v total="$total" -v src="$work/src" -v dst="$work/many" '
  { if (!($2 in count)) { kinds[nk++] = $2; count[$2] = 0 }
    files[$2, count[$2]++] = $1 }
  END {
    for (i = 0; i < total; i++) {
      k = kinds[i % nk]; j = int(i / nk) % count[k]; f = files[k, j]
      ext = f; sub(/^.*\./, "", ext)
      printf "%s/%s\t%s/%d.%s\t%s\n", src, f, dst, i, ext, k
    }
  }' "$work/kinds.tsv" > "$work/plan.tsv"
while IFS="$(printf '\t')" read -r from to _; do
  cp --sparse=always "$from" "$to"
done < "$work/plan.tsv"

now_ns() { date +%s%N; }
# Five rounds; in each, every side runs once (alternating); the fastest
# of each side is kept, in ns.
cd "$work/many"
native() { "$ip" -q "$@" -- * > "$work/out" || true; }
qemu() { for f in *; do qemu-img info --output=json "$f" > /dev/null 2>&1 || true; done; }
best_native=; best_one=; best_qemu=
for _ in 1 2 3 4 5; do
  for side in native one qemu; do
    t0=$(now_ns)
    case $side in
      native) native ;;
      one) native --jobs 1 ;;
      qemu) qemu ;;
    esac
    t=$(($(now_ns) - t0))
    eval "b=\${best_$side}"
    if [ -z "$b" ] || [ "$t" -lt "$b" ]; then eval "best_$side=$t"; fi
  done
done
"$ip" -q -- * > "$work/native.jsonl" || true
n=$(wc -l < "$work/native.jsonl")
printf 'probe corpus: %d images:' "$n"
cut -f3 "$work/plan.tsv" | sort | uniq -c | awk '{ printf " %s %d", $2, $1 }'
echo
cores=$(nproc 2>/dev/null || echo "?")
awk -v a="$best_native" -v o="$best_one" -v b="$best_qemu" -v n="$n" -v cores="$cores" 'BEGIN {
  printf "probe imginfo-parse (native, %s cores): %5d images in %8.1f ms (%7.1f us/image)\n", cores, n, a / 1e6, a / 1e3 / n
  printf "probe imginfo-parse (native, --jobs 1): %5d images in %8.1f ms (%7.1f us/image)\n", n, o / 1e6, o / 1e3 / n
  printf "probe qemu-img info per image:          %5d images in %8.1f ms (%7.1f us/image)\n", n, b / 1e6, b / 1e3 / n
  printf "probe ratio: the native probe is %.0fx as fast (%.0fx on one core)\n", b / a, b / o
}'

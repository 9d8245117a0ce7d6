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

# `jq -c .` on the JSON: only re-printing each document compactly, no
# key renamed, nothing checked or ordered; the floor of any JSON filter.
once() { # one run, in ns
  t0=$(now_ns); "$@" > "$work/out"; t1=$(now_ns)
  echo $((t1 - t0))
}
if command -v jq >/dev/null 2>&1; then
  # Fastest of five each, alternating.
  ours=; jqt=
  for _ in 1 2 3 4 5; do
    t=$(once sh -c "'$bin/imginfo-parse' -q < '$work/all.json'")
    if [ -z "$ours" ] || [ "$t" -lt "$ours" ]; then ours=$t; fi
    t=$(once sh -c "jq -c . < '$work/all.json'")
    if [ -z "$jqt" ] || [ "$t" -lt "$jqt" ]; then jqt=$t; fi
  done
  n_jq=$(jq -c . < "$work/all.json" | wc -l)
  awk -v a="$ours" -v b="$jqt" -v nb="$n_jq" -v mb="$(wc -c < "$work/all.json")" 'BEGIN {
    printf "json  imginfo-parse: %6d documents (%.1f MB) in %7.1f ms\n", nb, mb / 1e6, a / 1e6
    printf "json  jq -c .:       %6d documents (%.1f MB) in %7.1f ms\n", nb, mb / 1e6, b / 1e6
    printf "json  ratio: imginfo-parse is %.1fx as fast as jq -c .\n", b / a
  }'
else
  echo "json  jq not installed (apt-get install jq); skipping the comparison with jq -c ."
fi

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
  # jq cannot read the text; its floor on the JSON of the same images is
  # the yardstick for both forms.
  if [ "$fmt" = human ] && [ -n "${jqt:-}" ]; then
    awk -v a="$ours" -v b="$jqt" 'BEGIN {
      printf "human ratio: imginfo-parse on the text is %.1fx as fast as jq -c . on the same images'"'"' JSON (goal >= 3)\n", b / a }'
  fi
done

# The native probe against qemu-img per image: bench/probe.sh (make bench
# runs it next), on a corpus of every format the probe knows.

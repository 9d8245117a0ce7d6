#!/bin/sh
# `make bench`: cachewalk nova against what Nova does today to learn which
# base files are in use (one `qemu-img info --output=json` per instance
# disk), in the same run, on a synthetic compute host: 1000 instance
# directories, each with a real qcow2 `disk` made by `qemu-img create -b
# ../_base/<fp> -F raw`, and 10 000 base files (sparse raw files named by
# the SHA-1 of an image id, a tenth of them backing the disks). Wall clock,
# fastest of three each, warm cache. Prints both times, the ratio (goal
# >= 40x) and whether the walk takes under 0.5 s (goal); checks that the
# walk found every disk's backing file in use.
# Usage: sh bench/cachewalk.sh BIN_DIR   (BENCH_QUICK=1: 100 disks, 1000 files)
set -eu
bin=${1:?usage: cachewalk.sh BIN_DIR}
cw="$bin/cachewalk"
[ -x "$cw" ] || { echo "cachewalk-bench: $cw missing: run 'make build' first" >&2; exit 2; }
command -v qemu-img >/dev/null 2>&1 || { echo "cachewalk-bench: qemu-img not found: skipping" >&2; exit 0; }
command -v python3 >/dev/null 2>&1 || { echo "cachewalk-bench: python3 not found: skipping" >&2; exit 0; }

if [ "${BENCH_QUICK:-0}" = 1 ]; then n_inst=100; n_base=1000; else n_inst=1000; n_base=10000; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cachewalk-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
root="$work/instances"
mkdir -p "$root/_base"

echo "cachewalk-bench: building $n_inst instance disks and $n_base base files in $work" >&2
# Base files: sparse, 1 GiB apparent, named like Nova names them.
python3 - "$root/_base" "$n_base" <<'PY'
import hashlib, os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    name = hashlib.sha1(("image-%05d" % i).encode()).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.truncate(1 << 30)
PY
i=0
while [ "$i" -lt "$n_inst" ]; do
  fp=$(printf 'image-%05d' $(( i % (n_base / 10) * 10 ))  | sha1sum | cut -c1-40)
  mkdir "$root/inst-$i"
  qemu-img create -q -f qcow2 -u -F raw -b "../_base/$fp" "$root/inst-$i/disk" 1G
  i=$(( i + 1 ))
done

now_ns() { date +%s%N; }
best_of_3() {
  best=
  for _ in 1 2 3; do
    t0=$(now_ns); "$@" > /dev/null; t1=$(now_ns)
    d=$(( t1 - t0 ))
    if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
  done
  echo "$best"
}
nova_loop() {
  for d in "$root"/*/disk; do qemu-img info --output=json "$d"; done
}
# Earlier benches leave gigabytes being written back: let that finish
# first, so neither side is timed against the kernel's writeback.
sync
echo "cachewalk-bench: timing (fastest of 3)" >&2
t_cw=$(best_of_3 "$cw" nova "$root" --instances /dev/null --host bench)
t_qi=$(best_of_3 nova_loop)

used=$("$cw" nova "$root" --instances /dev/null --host bench | grep -c '"in_use":"yes"' || true)
want=$(( n_inst < n_base / 10 ? n_inst : n_base / 10 ))
secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
ratio=$(awk -v a="$t_qi" -v b="$t_cw" 'BEGIN { printf "%.0f", a / b }')
echo "cachewalk-bench: $n_inst instance disks, $n_base base files (load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  %-52s %8ss\n' "cachewalk nova (walk, backing chains, open files)" "$(secs "$t_cw")"
printf '  %-52s %8ss\n' "qemu-img info --output=json per disk (Nova today)" "$(secs "$t_qi")"
printf '  %-52s %7sx   goal >= 40  %s\n' "speed-up" "$ratio" "$(awk -v r="$ratio" 'BEGIN { print (r >= 40) ? "met" : "MISSED" }')"
printf '  %-52s %8ss   goal < 0.5  %s\n' "walk time" "$(secs "$t_cw")" "$(awk -v t="$t_cw" 'BEGIN { print (t < 5e8) ? "met" : "MISSED" }')"
if [ "$used" -eq "$want" ]; then
  echo "  correctness: every one of the $want backing files the disks name is in use"
else
  echo "  correctness: FAIL: $used base files in use, expected $want"
  exit 1
fi

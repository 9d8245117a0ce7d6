#!/bin/sh
# `make bench`: how `cachewalk nova` scales with the host. The same
# synthetic compute host as bench/cachewalk.sh (instance directories with a
# qcow2 `disk` backed by `../_base/<fp>`, and ten times as many raw base
# files, a tenth of them in use) at 1x, 3x and 10x: 1 000 / 10 000,
# 3 000 / 30 000 and 10 000 / 100 000 instance directories / base files.
# Prints the walk's time at each size (fastest of three, warm cache), its
# CPU time (user + system, all threads; what a busy host does not change
# much) and both per file read (disks + base files); goals: 10x under 3 s,
# and linear (the CPU per file at 10x within 1.5 times that at 1x).
#
# qemu-img writes one overlay; each disk is a sparse copy of it with the
# 40-hex-digit name of its base file put in place of the template's (same
# length: the header's offsets stay valid), as building 10 000 disks with
# qemu-img would take minutes. A sample is checked with `qemu-img info`.
# Scratch: ~12 KiB allocated per disk, none per base file (sparse).
# Usage: sh bench/cachewalk-scale.sh BIN_DIR   (BENCH_QUICK=1: 0.1x, 0.3x, 1x)
set -eu
bin=${1:?usage: cachewalk-scale.sh BIN_DIR}
cw="$bin/cachewalk"
[ -x "$cw" ] || { echo "cachewalk-scale: $cw missing: run 'make build' first" >&2; exit 2; }
command -v qemu-img >/dev/null 2>&1 || { echo "cachewalk-scale: qemu-img not found: skipping" >&2; exit 0; }
command -v python3 >/dev/null 2>&1 || { echo "cachewalk-scale: python3 not found: skipping" >&2; exit 0; }

if [ "${BENCH_QUICK:-0}" = 1 ]; then unit=100; else unit=1000; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/cachewalk-scale.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
root="$work/instances"
mkdir -p "$root/_base"
template_fp=0000000000000000000000000000000000000000
qemu-img create -q -f qcow2 -u -F raw -b "../_base/$template_fp" "$work/template.qcow2" 1G

# Grow the host to N instance directories and 10 N base files (what is
# there already stays).
grow() {
  python3 - "$root" "$work/template.qcow2" "$template_fp" "$1" <<'PY'
import hashlib, os, sys
root, template, tfp, n_inst = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
n_base = 10 * n_inst
base = os.path.join(root, "_base")
def fp(i):
    return hashlib.sha1(("image-%06d" % i).encode()).hexdigest()
for i in range(n_base):
    p = os.path.join(base, fp(i))
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.truncate(1 << 30)
head = open(template, "rb").read()
at = head.find(b"../_base/" + tfp)
assert at > 0 and head.count(tfp) == 1, "template without its backing name"
# Only the 4 KiB blocks that hold something are written: the copies stay
# as sparse as qemu-img's file.
blocks = [(o, head[o:o + 4096]) for o in range(0, len(head), 4096) if any(head[o:o + 4096])]
for i in range(n_inst):
    d = os.path.join(root, "inst-%06d" % i)
    if os.path.isdir(d):
        continue
    os.mkdir(d)
    name = fp(i * 10 % n_base).encode()
    with open(os.path.join(d, "disk"), "wb") as f:
        for o, b in blocks:
            f.seek(o)
            f.write(b.replace(tfp, name))
        f.truncate(len(head))
PY
}

# Fastest of three: "wall_ns cpu_ns" (CPU: the child's user + system).
best_of_3() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
best = None
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic_ns()
    subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
    wall = time.monotonic_ns() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = int((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e9)
    best = (wall, cpu) if best is None else (min(best[0], wall), min(best[1], cpu))
print(*best)
PY
}

echo "cachewalk-scale: 1x = $unit instance directories, $(( unit * 10 )) base files, in $work" >&2
t_1=
for k in 1 3 10; do
  n_inst=$(( unit * k ))
  n_base=$(( n_inst * 10 ))
  echo "cachewalk-scale: building ${k}x" >&2
  grow "$n_inst"
  # The copies are real qcow2 images to qemu: a sample, named as written.
  for i in 0 $(( n_inst / 2 )) $(( n_inst - 1 )); do
    disk=$(printf '%s/inst-%06d/disk' "$root" "$i")
    want=$(printf 'image-%06d' $(( i * 10 % n_base )) | sha1sum | cut -c1-40)
    qemu-img info --output=json "$disk" | grep -q "\"backing-filename\": \"../_base/$want\"" || {
      echo "cachewalk-scale: $disk is not the qcow2 image it should be:" >&2
      qemu-img info "$disk" >&2 || true
      exit 1
    }
  done
  set -- $(best_of_3 "$cw" nova "$root" --instances /dev/null --host bench)
  t=$1 cpu=$2
  used=$("$cw" nova "$root" --instances /dev/null --host bench | grep -c '"in_use":"yes"' || true)
  if [ "$used" -ne "$n_inst" ]; then
    echo "cachewalk-scale: FAIL at ${k}x: $used base files in use, expected $n_inst" >&2
    exit 1
  fi
  files=$(( n_inst + n_base ))
  per=$(( t / files ))
  cpu_per=$(( cpu / files ))
  [ -n "$t_1" ] || { t_1=$t; cpu_per_1=$cpu_per; }
  eval "t_$k=\$t; per_$k=\$per; cpu_$k=\$cpu; cpu_per_$k=\$cpu_per"
done

secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
echo "cachewalk-scale: cachewalk nova, fastest of 3, warm cache (load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  %-39s %8s %8s %9s %9s\n' "" "wall" "CPU" "wall/file" "CPU/file"
for k in 1 3 10; do
  eval "t=\$t_$k; per=\$per_$k; cpu=\$cpu_$k; cpu_per=\$cpu_per_$k"
  printf '  %3sx %6s instance dirs %7s base files %7ss %7ss %6s ns %6s ns\n' \
    "$k" "$(( unit * k ))" "$(( unit * k * 10 ))" "$(secs "$t")" "$(secs "$cpu")" "$per" "$cpu_per"
done
if [ "$unit" = 1000 ]; then
  printf '  %-52s %8ss   goal < 3    %s\n' "10x walk time" "$(secs "$t_10")" \
    "$(awk -v t="$t_10" 'BEGIN { print (t < 3e9) ? "met" : "MISSED" }')"
fi
printf '  %-52s %8s    goal <= 1.5 %s\n' "CPU per file, 10x / 1x" \
  "$(awk -v a="$cpu_per_10" -v b="$cpu_per_1" 'BEGIN { printf "%.2f", a / b }')" \
  "$(awk -v a="$cpu_per_10" -v b="$cpu_per_1" 'BEGIN { print (a <= 1.5 * b) ? "met" : "MISSED" }')"

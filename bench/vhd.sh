#!/bin/sh
# `make bench`: vhd-chain flatten against qemu-img convert, in the same run.
# Builds a 3-deep XenServer chain (0.vhd leaf, 1.vhd, 2.vhd base) of a 4 GiB
# virtual disk with 1 GiB of guest-visible data allocated (base 512 MiB, mid
# and leaf 256 MiB each, 2 MiB-aligned, plus two small overwrites of base
# data so the merge order matters), and an equivalent single-file dynamic VHD
# holding the same writes. Times (wall clock, fastest of five, warm page
# cache, output removed before each run) `vhd-chain flatten DIR -o out.vhd`
# and `qemu-img convert -f vpc -O vpc single.vhd conv.vhd` (and, for
# information, the convert followed by `sync`: flatten fsyncs its output
# before the rename, qemu-img leaves it in the page cache); prints MB/s (10^6 bytes/s) of allocated
# data, the ratio against the goal (>= 0.8x qemu-img's throughput), the time
# for a 16 GiB virtual disk with the same allocated data (goal < 1.2x the
# 4 GiB time), flatten's peak RSS at both sizes (goal: constant memory), and
# checks with qemu-img compare that the flattened disk reads as the single
# file does (FAIL and exit 1 otherwise).
# Usage: sh bench/vhd.sh BIN_DIR   (BENCH_QUICK=1 shrinks every size 4x)
set -eu
bin=${1:?usage: vhd.sh BIN_DIR}
vc="$bin/vhd-chain"
[ -x "$vc" ] || { echo "vhd-bench: $vc missing: run 'make build' first" >&2; exit 2; }
have() { command -v "$1" >/dev/null 2>&1; }
for t in qemu-img qemu-io python3; do
  have "$t" || { echo "vhd-bench: $t not found: skipping the VHD bench" >&2; exit 0; }
done

MiB=1048576
if [ "${BENCH_QUICK:-0}" = 1 ]; then q=4; else q=1; fi
V4=$(( 4096 * MiB / q ))      # the virtual disk of the main comparison
V16=$(( 4 * V4 ))             # the scaling check: 4x larger, same allocation
R=$(( 128 * MiB / q ))        # one written range
O=$(( 16 * MiB / q ))         # an overwrite of base data by mid / leaf
ALLOC=$(( 8 * R ))            # guest-visible allocated bytes (1 GiB)

work=$(mktemp -d "${TMPDIR:-/tmp}/vhd-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

have_time=false
[ -x /usr/bin/time ] && /usr/bin/time -f %M true >/dev/null 2>&1 && have_time=true

# make_differencing CHILD PARENT: CHILD becomes a differencing disk of
# PARENT: disk type 4 in both footer copies, the parent's footer UUID in the
# dynamic header, checksums redone (tests/chain.rs's snippet, patching in
# place instead of rewriting the whole file).
make_differencing() {
  python3 - "$1" "$2" <<'EOF'
import os, struct, sys
def fix(b, at):
    b[at:at + 4] = b'\0' * 4
    b[at:at + 4] = struct.pack('>I', (~sum(b)) & 0xffffffff)
child, parent = sys.argv[1], sys.argv[2]
with open(parent, 'rb') as f:
    f.seek(-512, os.SEEK_END)
    puuid = f.read(512)[68:84]
with open(child, 'r+b') as f:
    end = f.seek(0, os.SEEK_END)
    for off in (0, end - 512):
        f.seek(off); b = bytearray(f.read(512))
        b[60:64] = struct.pack('>I', 4); fix(b, 64)
        f.seek(off); f.write(b)
    f.seek(512); h = bytearray(f.read(1024))
    h[40:56] = puuid; fix(h, 36)
    f.seek(512); f.write(h)
EOF
}

# The writes, as qemu-io -c arguments, for a virtual disk of $1 bytes:
# ranges at eighths of the disk, so the larger disk spreads the same data
# over a 4x larger block table.
base_writes() { e=$(( $1 / 8 ))
  echo "write -P 0x11 0 $R"
  echo "write -P 0x22 $(( 2 * e )) $R"
  echo "write -P 0x33 $(( 4 * e )) $R"
  echo "write -P 0x44 $(( 6 * e )) $R"; }
mid_writes() { e=$(( $1 / 8 ))
  echo "write -P 0x55 $(( 1 * e )) $R"
  echo "write -P 0x66 $(( 5 * e )) $R"
  echo "write -P 0x77 $(( 4 * e + 2 * O )) $O"; }
leaf_writes() { e=$(( $1 / 8 ))
  echo "write -P 0x88 $(( 3 * e )) $R"
  echo "write -P 0x99 $(( 8 * e - R )) $R"
  echo "write -P 0xaa $(( 4 * O )) $O"; }
# qemu_write FILE WRITES...: run the write lines (one per line) on FILE.
qemu_write() {
  f=$1; shift
  printf '%s\n' "$@" > "$work/cmds"
  set --
  while IFS= read -r c; do [ -z "$c" ] || set -- "$@" -c "$c"; done < "$work/cmds"
  qemu-io -f vpc "$@" "$f" > /dev/null
}
new_vhd() { qemu-img create -q -f vpc -o subformat=dynamic "$1" "$2"; }

# make_chain DIR VSIZE: 2.vhd (base), 1.vhd, 0.vhd (leaf) in DIR.
make_chain() {
  mkdir -p "$1"
  for n in 0 1 2; do new_vhd "$1/$n.vhd" "$2"; done
  qemu_write "$1/2.vhd" "$(base_writes "$2")"
  qemu_write "$1/1.vhd" "$(mid_writes "$2")"
  qemu_write "$1/0.vhd" "$(leaf_writes "$2")"
  make_differencing "$1/1.vhd" "$1/2.vhd"
  make_differencing "$1/0.vhd" "$1/1.vhd"
  cat "$1"/*.vhd > /dev/null   # into the page cache
}

now_ns() { date +%s%N; }
# best_of OUT CMD...: runs CMD five times (stdout discarded), each after
# removing its output file OUT and a sync, so every run writes a new file
# into freshly freed page cache (an existing output would cost one tool
# the unlink of 1 GiB of cache and the other nothing); prints the fastest
# wall-clock time in ns, then the peak RSS in KiB of any run (/usr/bin/time
# -f %M, else VmHWM polled from /proc, else "").
best_of() {
  best=; rss=; out=$1; shift
  for _ in 1 2 3 4 5; do
    rm -f "$out"
    sync
    t0=$(now_ns)
    r=$(peak_rss_kib "$@") || { echo "vhd-bench: FAIL: $* exited non-zero" >&2; exit 1; }
    t1=$(now_ns)
    d=$(( t1 - t0 ))
    if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
    if [ -n "$r" ] && { [ -z "$rss" ] || [ "$r" -gt "$rss" ]; }; then rss=$r; fi
  done
  echo "$best $rss"
}
# peak_rss_kib CMD...: runs CMD once (stdout discarded); prints its peak RSS
# in KiB, or nothing when it cannot be measured.
peak_rss_kib() {
  if $have_time; then
    /usr/bin/time -f %M -o "$work/rss" "$@" > /dev/null && cat "$work/rss"
  elif [ -r /proc/self/status ]; then
    "$@" > /dev/null & p=$!; m=
    while v=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$p/status" 2>/dev/null) && [ -n "$v" ]; do
      m=$v; sleep 0.05
    done
    wait "$p"; echo "$m"
  else
    "$@" > /dev/null
  fi
}
secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
mbps() { awk -v b="$ALLOC" -v n="$1" 'BEGIN { printf "%.0f", b / (n / 1e9) / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# verdict VALUE OP GOAL: "met" or "MISSED".
verdict() { awk -v v="$1" -v g="$3" -v op="$2" \
  'BEGIN { ok = (op == ">=") ? (v >= g) : (v < g); print ok ? "met" : "MISSED" }'; }

echo "vhd-bench: building the chains and the single-file image in $work" >&2
make_chain "$work/c4" "$V4"
new_vhd "$work/single.vhd" "$V4"
qemu_write "$work/single.vhd" "$(base_writes "$V4")" "$(mid_writes "$V4")" "$(leaf_writes "$V4")"
cat "$work/single.vhd" > /dev/null
make_chain "$work/c16" "$V16"

echo "vhd-bench: timing (fastest of 5)" >&2
res=$(best_of "$work/out.vhd" "$vc" flatten "$work/c4" -o "$work/out.vhd") || { echo "  correctness: FAIL"; exit 1; }
set -- $res; t_vc=$1; rss4=${2:-}
res=$(best_of "$work/conv.vhd" qemu-img convert -f vpc -O vpc -o subformat=dynamic "$work/single.vhd" "$work/conv.vhd") || { echo "  correctness: FAIL"; exit 1; }
set -- $res; t_qi=$1; rssq=${2:-}
res=$(best_of "$work/conv.vhd" sh -c 'qemu-img convert -f vpc -O vpc -o subformat=dynamic "$1" "$2" && sync' sh "$work/single.vhd" "$work/conv.vhd") || { echo "  correctness: FAIL"; exit 1; }
set -- $res; t_qs=$1
res=$(best_of "$work/out16.vhd" "$vc" flatten "$work/c16" -o "$work/out16.vhd") || { echo "  correctness: FAIL"; exit 1; }
set -- $res; t_16=$1; rss16=${2:-}

# Correctness: the flattened chains read as the single file does.
fail=0
if ! qemu-img compare -q -f vpc -F vpc "$work/single.vhd" "$work/out.vhd"; then
  echo "vhd-bench: FAIL: flattened 3-deep chain differs from the single-file image" >&2; fail=1
fi
# The 16 GiB chain: its data lies elsewhere, so compare against its own
# single file (built only for this check).
new_vhd "$work/single16.vhd" "$V16"
qemu_write "$work/single16.vhd" "$(base_writes "$V16")" "$(mid_writes "$V16")" "$(leaf_writes "$V16")"
if ! qemu-img compare -q -f vpc -F vpc "$work/single16.vhd" "$work/out16.vhd"; then
  echo "vhd-bench: FAIL: flattened 16 GiB-class chain differs from its single-file image" >&2; fail=1
fi

gv4=$(( V4 / MiB )); gv16=$(( V16 / MiB )); am=$(( ALLOC / MiB ))
rel=$(ratio "$t_qi" "$t_vc")      # our throughput / qemu-img's
scale=$(ratio "$t_16" "$t_vc")
echo "vhd-bench: ${gv4} MiB virtual disk, 3-deep chain, ${am} MiB allocated"
printf '  %-44s %8ss %7s MB/s\n' "vhd-chain flatten (chain dir)" "$(secs "$t_vc")" "$(mbps "$t_vc")"
printf '  %-44s %8ss %7s MB/s\n' "qemu-img convert -O vpc (single file)" "$(secs "$t_qi")" "$(mbps "$t_qi")"
printf '  %-44s %8sx   goal >= 0.80  %s\n' "throughput vs qemu-img" "$rel" "$(verdict "$rel" ">=" 0.8)"
printf '  %-44s %8ss %7s MB/s\n' "qemu-img convert + sync (durable, as flatten)" "$(secs "$t_qs")" "$(mbps "$t_qs")"
printf '  %-44s %8sx\n' "throughput vs qemu-img convert + sync" "$(ratio "$t_qs" "$t_vc")"
printf '  %-44s %8ss %7s MB/s\n' "vhd-chain flatten, ${gv16} MiB virtual disk" "$(secs "$t_16")" "$(mbps "$t_16")"
printf '  %-44s %8sx   goal <  1.20  %s\n' "time ${gv16} MiB / ${gv4} MiB virtual" "$scale" "$(verdict "$scale" "<" 1.2)"
if [ -n "$rss4" ] && [ -n "$rss16" ]; then
  printf '  %-44s %6s KiB / %s KiB (qemu-img convert: %s KiB)\n' \
    "flatten peak RSS, ${gv4} / ${gv16} MiB virtual" "$rss4" "$rss16" "${rssq:-?}"
else
  echo "  flatten peak RSS: not measured (no /usr/bin/time nor /proc)"
fi
if [ "$fail" = 0 ]; then
  echo "  correctness: qemu-img compare: both flattened chains identical to their single-file images"
else
  echo "  correctness: FAIL"
  exit 1
fi

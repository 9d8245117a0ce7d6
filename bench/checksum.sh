#!/bin/sh
# `make bench`: checksum-tee against what an operator would otherwise run to
# get several digests of one stream (a tee pipeline into md5sum and sha1sum,
# or one single-core hasher per digest), in the same run, on the same file of
# incompressible data, warm in the page cache; wall clock, fastest of three
# runs each. Each checksum-tee row runs exactly the command the README's
# table shows, in the bench's directory with the file named data (-a
# computes exactly the digests listed); the goal of each is 0.9x openssl's
# rate for the slower digest of its set (issue 20). Prints rates in MB/s (10^6 bytes/s), ratios against their goals,
# the peak RSS, and checks checksum-tee's digests against coreutils'.
# Usage: sh bench/checksum.sh BIN_DIR   (BENCH_SIZE=256M for a quick run)
set -eu
bin=${1:?usage: checksum.sh BIN_DIR}
ct="$bin/checksum-tee"
[ -x "$ct" ] || { echo "checksum-bench: $ct missing: run 'make build' first" >&2; exit 2; }
# The rows name the tool as the README does: found first in BIN_DIR.
PATH="$(cd "$bin" && pwd):$PATH"; export PATH

# Size: BENCH_SIZE in bytes or with an IEC suffix (K, M, G, T; 1G = 1 GiB,
# the size of the README's rows).
size_arg=${BENCH_SIZE:-1G}
if command -v numfmt >/dev/null 2>&1; then
  size=$(numfmt --from=iec "$size_arg")
else
  case "$size_arg" in
    *[Kk]) size=$(( ${size_arg%?} * 1024 )) ;;
    *[Mm]) size=$(( ${size_arg%?} * 1024 * 1024 )) ;;
    *[Gg]) size=$(( ${size_arg%?} * 1024 * 1024 * 1024 )) ;;
    *[Tt]) size=$(( ${size_arg%?} * 1024 * 1024 * 1024 * 1024 )) ;;
    *) size=$(( size_arg )) ;;
  esac
fi
case "$size" in ''|*[!0-9]*|0) echo "checksum-bench: bad BENCH_SIZE '$size_arg'" >&2; exit 2 ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/checksum-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
f="$work/data"

have() { command -v "$1" >/dev/null 2>&1; }
have_openssl=false; have openssl && have_openssl=true
have_bash=false; have bash && have_bash=true
have_time=false; [ -x /usr/bin/time ] && /usr/bin/time -f %M true >/dev/null 2>&1 && have_time=true

# Incompressible data, fast: AES-CTR keystream if openssl exists.
echo "checksum-bench: generating $size bytes of incompressible data in $work" >&2
if $have_openssl; then
  openssl enc -aes-128-ctr -pass pass:x -nosalt < /dev/zero 2>/dev/null | head -c "$size" > "$f"
else
  head -c "$size" /dev/urandom > "$f"
fi
got=$(wc -c < "$f")
[ "$got" -eq "$size" ] || { echo "checksum-bench: wrote $got bytes, wanted $size" >&2; exit 2; }
cat "$f" > /dev/null   # into the page cache

now_ns() { date +%s%N; }
# best_of_3 IN OUT CMD...: runs CMD three times, stdin from the file IN (opened
# afresh for each run), stdout to OUT (/dev/null for the data streams: a
# file would add 2 GiB of writes; a small digest output is kept for the
# checks); prints the fastest wall-clock time in ns.
best_of_3() {
  in=$1; out=$2; shift 2
  best=
  for _ in 1 2 3; do
    t0=$(now_ns); "$@" < "$in" > "$out"; t1=$(now_ns)
    t=$((t1 - t0))
    if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
  done
  echo "$best"
}
rate() { awk -v b="$size" -v t="$1" 'BEGIN { printf "%.0f", b / 1e6 / (t / 1e9) }'; }
line() { printf '%-44s %8s MB/s\n' "$1" "$(rate "$2")"; }

# 1. The README's rows, run exactly as shown there (the data file as
#    stdin, the bytes passed through to /dev/null, the digests to a report
#    file), the very string printed, through sh -c; timed alone.
cd "$work"
row1='checksum-tee -a md5,sha1 --report r1 < data > /dev/null'
row2='checksum-tee -a md5,sha512 --report r2 < data > /dev/null'
t_ct_ms=$(best_of_3 /dev/null /dev/null sh -c "$row1")

# The peak RSS of the md5+sha1 row, on one more (untimed) run.
rss_kib=
if $have_time; then
  /usr/bin/time -f %M -o "$work/rss" "$ct" -a md5,sha1 --report "$work/r1b" < "$f" > /dev/null
  rss_kib=$(tail -n 1 "$work/rss")
elif [ -r /proc/self/status ]; then
  # No /usr/bin/time: poll VmHWM while it lives.
  "$ct" -a md5,sha1 --report "$work/r1b" < "$f" > /dev/null &
  pid=$!
  rss_kib=0
  while kill -0 "$pid" 2>/dev/null; do
    h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$h" ] && [ "$h" -gt "$rss_kib" ]; then rss_kib=$h; fi
    sleep 0.02
  done
  wait "$pid"
  [ "$rss_kib" -gt 0 ] || rss_kib=
fi

# Diagnostic: checksum-tee with md5 alone (the slowest digest of the pair).
t_ct_md5=$(best_of_3 "$f" /dev/null "$ct" -a md5 --report "$work/r0")

# 2. The tee pipeline an operator writes by hand (bash does not wait for
#    the md5sum in >(...), but it trails tee by one pipe buffer at most).
t_tee=
if $have_bash; then
  # shellcheck disable=SC2016 # $1 is for the inner bash
  t_tee=$(best_of_3 /dev/null /dev/null bash -c 'tee >(md5sum > /dev/null) < "$1" | sha1sum > /dev/null' _ "$f")
fi

# 3. openssl, one digest at a time (single core).
t_o_md5=; t_o_sha1=; t_o_sha512=
if $have_openssl; then
  t_o_md5=$(best_of_3 /dev/null /dev/null openssl dgst -md5 "$f")
  t_o_sha1=$(best_of_3 /dev/null /dev/null openssl dgst -sha1 "$f")
  t_o_sha512=$(best_of_3 /dev/null /dev/null openssl dgst -sha512 "$f")
fi

# 4. checksum-tee md5+sha512 (the second row).
t_ct2=$(best_of_3 /dev/null /dev/null sh -c "$row2")

# 5. coreutils, one digest at a time (single core).
t_sha512sum=$(best_of_3 /dev/null "$work/sha512sum.out" sha512sum "$f")
t_md5sum=$(best_of_3 /dev/null "$work/md5sum.out" md5sum "$f")
sha1sum "$f" > "$work/sha1sum.out"

# Correctness: checksum-tee's report against coreutils.
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([0-9a-f]*\)\"\{0,1\}[,}].*/\1/p" "$2"; }
fail=0
check() { # LABEL GOT WANT
  if [ -n "$2" ] && [ "$2" = "$3" ]; then
    echo "correct: $1 matches ($2)"
  else
    echo "FAIL: $1: checksum-tee '$2', expected '$3'"; fail=1
  fi
}
want_md5=$(cut -d ' ' -f 1 "$work/md5sum.out")
want_sha1=$(cut -d ' ' -f 1 "$work/sha1sum.out")
want_sha512=$(cut -d ' ' -f 1 "$work/sha512sum.out")
check "md5 (md5+sha1 run) vs md5sum" "$(field md5 "$work/r1")" "$want_md5"
check "sha1 (md5+sha1 run) vs sha1sum" "$(field sha1 "$work/r1")" "$want_sha1"
check "bytes (md5+sha1 run)" "$(field bytes "$work/r1")" "$size"
check "md5 (md5+sha512 run) vs md5sum" "$(field md5 "$work/r2")" "$want_md5"
check "sha512 (md5+sha512 run) vs sha512sum" "$(field sha512 "$work/r2")" "$want_sha512"
check "bytes (md5+sha512 run)" "$(field bytes "$work/r2")" "$size"
check "md5 (md5-only run) vs md5sum" "$(field md5 "$work/r0")" "$want_md5"
# -a computes exactly what it lists: no SHA-512 in the md5+sha1 run.
if [ -z "$(field sha512 "$work/r1")" ]; then
  echo "correct: the md5+sha1 run computed no sha512"
else
  echo "FAIL: the md5+sha1 run computed sha512 too"; fail=1
fi

echo
echo "checksum-tee benchmark: $size bytes, page cache warm, fastest of 3 runs, $(nproc 2>/dev/null || echo '?') CPUs"
line "$row1" "$t_ct_ms"
line "$row2" "$t_ct2"
line "checksum-tee -a md5 (diagnostic)" "$t_ct_md5"
if [ -n "$t_tee" ]; then line "tee >(md5sum) | sha1sum" "$t_tee"; else echo "tee >(md5sum) | sha1sum: skipped (bash not installed)"; fi
if $have_openssl; then
  line "openssl dgst -md5" "$t_o_md5"
  line "openssl dgst -sha1" "$t_o_sha1"
  line "openssl dgst -sha512" "$t_o_sha512"
else
  echo "openssl dgst: skipped (openssl not installed)"
fi
line "md5sum" "$t_md5sum"
line "sha512sum" "$t_sha512sum"

# ratio LABEL OURS_NS THEIRS_NS GOAL: rate ratio = theirs_time / ours_time.
ratio() {
  awk -v l="$1" -v a="$2" -v b="$3" -v g="$4" 'BEGIN {
    r = b / a
    printf "ratio %-52s %6.3f (goal >= %s): %s\n", l, r, g, (r >= g ? "met" : "MISSED")
  }'
}
echo
# slower_openssl NS_A NAME_A NS_B NAME_B: the slower digest of a set.
slower_ns() { if [ "$1" -ge "$2" ]; then echo "$1"; else echo "$2"; fi; }
slower_name() { if [ "$1" -ge "$3" ]; then echo "$2"; else echo "$4"; fi; }
if $have_openssl; then
  ratio "checksum-tee md5+sha1 vs openssl $(slower_name "$t_o_md5" md5 "$t_o_sha1" sha1) (slower):" \
    "$t_ct_ms" "$(slower_ns "$t_o_md5" "$t_o_sha1")" 0.9
else
  echo "ratio checksum-tee md5+sha1 vs slower openssl md5/sha1: skipped (openssl not installed)"
fi
if [ -n "$t_tee" ]; then
  ratio "checksum-tee md5+sha1 vs tee pipeline:" "$t_ct_ms" "$t_tee" 1.7
  # One MD5 stream cannot be split across cores: a tool bound by md5 at
  # openssl's rate gets at most this ratio over the pipeline.
  if $have_openssl; then
    awk -v a="$t_o_md5" -v b="$t_tee" 'BEGIN {
      printf "info  openssl md5 vs tee pipeline (ceiling for an md5-bound tool): %.3f\n", b / a }'
  fi
else
  echo "ratio checksum-tee md5+sha1 vs tee pipeline: skipped (bash not installed)"
fi
if $have_openssl; then
  ratio "checksum-tee md5+sha512 vs openssl $(slower_name "$t_o_md5" md5 "$t_o_sha512" sha512) (slower):" \
    "$t_ct2" "$(slower_ns "$t_o_md5" "$t_o_sha512")" 0.9
else
  echo "ratio checksum-tee md5+sha512 vs slower openssl md5/sha512: skipped (openssl not installed)"
fi
# Without openssl (CI), the same comparisons against coreutils, for information.
slower=$t_md5sum; [ "$t_sha512sum" -gt "$slower" ] && slower=$t_sha512sum
awk -v a="$t_ct_ms" -v b="$t_md5sum" -v c="$t_ct2" -v d="$slower" 'BEGIN {
  printf "info  checksum-tee md5+sha1 vs md5sum: %.3f; md5+sha512 vs slower of md5sum/sha512sum: %.3f (no goal)\n", b / a, d / c
}'
if [ -n "$rss_kib" ]; then
  awk -v k="$rss_kib" 'BEGIN {
    m = k / 1024
    printf "peak RSS checksum-tee md5+sha1: %.1f MiB (goal < 64): %s\n", m, (m < 64 ? "met" : "MISSED")
  }'
else
  echo "peak RSS checksum-tee md5+sha1: skipped (no /usr/bin/time and no /proc)"
fi

if [ "$fail" -ne 0 ]; then
  echo "FAIL: checksum-tee digests differ from coreutils"
  exit 1
fi

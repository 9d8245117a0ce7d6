#!/bin/sh
# `make bench`: the cloud-wide header audit against a real local Glance 33
# (tests/glance-server: uWSGI, 1 process, 1 thread, file store, "headerauth")
# holding BENCH_AUDIT_IMAGES images (default 200: raw images of incompressible
# data, 1 MiB to 256 MiB, at most 10 GiB in all, and a few qcow2). Ours:
# `glance-dump --metaonly | imginfo-parse --check --from-glance`, which reads
# each image's headers with a few bounded Range requests. The competitor, what
# an operator runs without our tools: for each image (ids given for free),
# `curl -o file .../file`, `qemu-img info --output=json file`, rm, one after
# the other. Both answer "what is each image really"; ours moves kilobytes
# where the competitor moves the whole cloud, so the gap grows with image size.
# Wall clock, fastest of 2 (3 below 50 images), warm page cache. Prints the
# stored bytes, the bytes each moved (the uWSGI access log, and the audit's
# own --summary), times, ratios (competitor / audit; goal >= 50x), the time
# with --jobs 1 (default 4), the audit's Range requests per image and the
# latency of one Range request; exits 1 unless the audit passes the clean set.
# Usage: sh bench/audit.sh BIN_DIR   (BENCH_AUDIT_IMAGES=20 for a quick run)
set -eu
bin=${1:?usage: audit.sh BIN_DIR}
gd="$bin/glance-dump"; ip="$bin/imginfo-parse"
for t in "$gd" "$ip"; do
  [ -x "$t" ] || { echo "audit-bench: $t missing: run 'make build' first" >&2; exit 2; }
done
repo=$(cd "$(dirname "$0")/.." && pwd)
gs="$repo/tests/glance-server"
GLANCE_VENV=${GLANCE_VENV:-$repo/target/glance-venv}; export GLANCE_VENV
have() { command -v "$1" >/dev/null 2>&1; }
skip() { echo "audit-bench: skipped: $*" >&2; exit 0; }
fail() { echo "audit-bench: FAIL: $*" >&2; exit 1; }
# Glance 33 needs Python >= 3.11: start-glance.sh builds its venv with it.
have "${GLANCE_PYTHON:-python3.11}" || skip "${GLANCE_PYTHON:-python3.11} not found (Glance 33 needs it)"
for t in curl jq python3 bash openssl qemu-img; do have "$t" || skip "$t not found"; done
n=${BENCH_AUDIT_IMAGES:-200}
case "$n" in ''|*[!0-9]*|0) echo "audit-bench: bad BENCH_AUDIT_IMAGES '$n'" >&2; exit 2 ;; esac
rounds=2; [ "$n" -ge 50 ] || rounds=3

# The plan, one line per image: FORMAT MIB. Every 40th (from the 20th) is an
# empty 1 GiB qcow2, every 25th 256 MiB raw, the rest cycle 1..128 MiB; an
# image that would take the total over 10 GiB shrinks to 1 MiB.
work=$(mktemp -d "${TMPDIR:-/tmp}/audit-bench.XXXXXX")
cleanup() { [ ! -d "$work/g/run" ] || "$gs/stop-glance.sh" "$work/g" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
awk -v n="$n" 'BEGIN { split("1 4 8 16 32 64 128", c, " "); cap = 10 * 1024
  for (i = 1; i <= n; i++) {
    if (i % 40 == 20) { print "qcow2 0"; continue }
    s = (i % 25 == 0) ? 256 : c[(i - 1) % 7 + 1]
    if (t + s > cap) s = 1
    if (t + s > cap) exit 1
    t += s; print "raw " s } }' > "$work/plan" || { echo "audit-bench: $n images do not fit in 10 GiB" >&2; exit 2; }
mib=$(awk '{ t += $2 } END { print t }' "$work/plan")
# The store is not sparse: it, the sources and one competitor download.
need=$(( (mib + 2 * 256 + 1024) * 1024 ))
avail=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
[ "$avail" -ge "$need" ] || skip "needs $((need / 1024)) MiB free in $work, $((avail / 1024)) MiB available"

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
echo "audit-bench: starting Glance (building $GLANCE_VENV first takes 1-2 minutes)" >&2
G=$("$gs/start-glance.sh" "$work/g" "$(port)") || fail "Glance did not start"
log="$work/g/log/uwsgi.log"

# headerauth: every request names its identity in these headers. `Expect:`
# (empty) stops curl's 100-continue handshake on uploads, which uWSGI does not
# answer: curl would idle 1 s waiting for it.
gcurl() { curl -sS -f -H 'X-Identity-Status: Confirmed' -H 'X-User-Id: tester' \
  -H 'X-Project-Id: project-1' -H 'X-Roles: admin,member,reader' -H 'Expect:' "$@"; }
tool() { tb=$1; shift
  "$tb" --header 'X-Identity-Status: Confirmed' --header 'X-User-Id: tester' \
    --header 'X-Project-Id: project-1' --header 'X-Roles: admin,member,reader' "$@"; }

echo "audit-bench: creating $n images ($mib MiB) in $G" >&2
mkdir "$work/src"
openssl enc -aes-128-ctr -pass pass:x -nosalt < /dev/zero 2>/dev/null | head -c $((256 << 20)) > "$work/src/256"
for s in 1 4 8 16 32 64 128; do head -c $((s << 20)) "$work/src/256" > "$work/src/$s"; done
qemu-img create -q -f qcow2 "$work/src/0" 1G
i=0; t0=$(date +%s)
while read -r fmt s; do
  i=$((i + 1))
  id=$(gcurl -H 'Content-Type: application/json' "$G/v2/images" \
    -d '{"name":"audit-'"$i"'","disk_format":"'"$fmt"'","container_format":"bare"}' | jq -r .id)
  gcurl -T "$work/src/$s" -H 'Content-Type: application/octet-stream' "$G/v2/images/$id/file"
  echo "$id" >> "$work/ids"
  [ $((i % 20)) -ne 0 ] || echo "audit-bench: $i/$n uploaded ($(( $(date +%s) - t0 )) s)" >&2
done < "$work/plan"
rm -rf "$work/src"

now_ns() { date +%s%N; }
# logged FROM: bytes uWSGI logged as sent for GET /v2/images/ID/file from line FROM.
logged() { tail -n +"$1" "$log" | awk '/ GET \/v2\/images\/[^ ]*\/file => generated / {
  for (i = 1; i < NF; i++) if ($i == "generated") s += $(i + 1) } END { printf "%.0f\n", s }'; }
# timed VAR BYTES CMD...: run CMD, keep the fastest time in VAR, the bytes of
# the file GETs it caused in BYTES.
timed() { v=$1; b=$2; shift 2; m=$(( $(wc -l < "$log") + 1 ))
  t0=$(now_ns); "$@" || fail "$* failed"; d=$(( $(now_ns) - t0 ))
  eval "$b=\$(logged $m)"
  eval "c=\${$v:-}"; if [ -z "$c" ] || [ "$d" -lt "$c" ]; then eval "$v=$d"; fi; }
# Exit status: imginfo-parse's (0: every image acceptable); a glance-dump
# failure shows as fewer images in the summary.
audit() { o=$1; shift
  tool "$gd" --url "$G" --metaonly --no-members | tool "$ip" --check --summary --from-glance "$G" "$@" > "$work/$o"; }
listing() { tool "$gd" --url "$G" --metaonly --no-members > /dev/null; }
compete() { while read -r id; do
    gcurl -o "$work/img" "$G/v2/images/$id/file" || return 1
    qemu-img info --output=json "$work/img" > /dev/null || return 1
    rm -f "$work/img"
  done < "$work/ids"; }

echo "audit-bench: timing the audit and the competitor (fastest of $rounds)" >&2
t_a=; t_a1=; t_c=; t_l=; b_a=; b_a1=; b_c=; b_l=
for r in $(seq "$rounds"); do
  if [ "$r" = 2 ]; then timed t_c b_c compete; timed t_a1 b_a1 audit audit1.jsonl --jobs 1; timed t_a b_a audit audit.jsonl
  else timed t_a b_a audit audit.jsonl; timed t_a1 b_a1 audit audit1.jsonl --jobs 1; timed t_c b_c compete; fi
  timed t_l b_l listing; echo "audit-bench: round $r done" >&2
done
# One Range request of 64 KiB (what a probe starts with), fastest of 5.
id=$(head -n 1 "$work/ids"); lat=
for _ in 1 2 3 4 5; do
  l=$(gcurl -o /dev/null -r 0-65535 -w '%{time_total}' "$G/v2/images/$id/file")
  lat=$(awk -v a="$l" -v b="${lat:-$l}" 'BEGIN { print (a < b) ? a : b }')
done

sum=$(jq -c 'select(.summary) | .summary' "$work/audit.jsonl")
stored=$(jq -s '[.[] | .image.size // empty] | add' "$work/audit.jsonl")
b_sum=$(echo "$sum" | jq .bytes_read)
nq=$(grep -c '^qcow2' "$work/plan" || true)
echo "$sum" | jq -e --argjson n "$n" '.images == $n and .probed == $n and .acceptable == $n and .unacceptable == 0 and .errors == 0' >/dev/null ||
  fail "the audit did not pass the clean set: $sum"
jq -e -s --argjson q "$nq" '[.[] | select(.info.format == "qcow2" and .check.acceptable)] | length == $q' "$work/audit.jsonl" >/dev/null ||
  fail "the audit did not find the $nq qcow2 images"
jq -e 'select(.summary) | .summary.unacceptable == 0' "$work/audit1.jsonl" >/dev/null || fail "--jobs 1 differs"
reqs=$(jq -r -s '[.[] | .probe.requests // empty] | "\(min) min, \(add / length) mean, \(max) max"' "$work/audit.jsonl")

secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
row() { printf '  %-50s %10ss %14s bytes\n' "$1" "$(secs "$2")" "$3"; }
r_t=$(ratio "$t_c" "$t_a")
echo "audit-bench: $n images ($nq qcow2), $stored bytes stored, one local Glance 33 (uWSGI, 1 process, 1 thread), fastest of $rounds, $(nproc 2>/dev/null || echo '?') CPUs"
row "audit: glance-dump | imginfo-parse --check (jobs 4)" "$t_a" "$b_a"
[ "$b_sum" = "$b_a" ] || printf '  %-50s %26s bytes\n' "  (its --summary bytes_read)" "$b_sum"
row "  of which glance-dump --metaonly --no-members" "$t_l" "$b_l"
row "audit with --jobs 1" "$t_a1" "$b_a1"
row "competitor: curl -o file; qemu-img info; rm" "$t_c" "$b_c"
printf '  %-50s %10sx   goal >= 50    %s\n' "time: competitor / audit" "$r_t" \
  "$(awk -v r="$r_t" 'BEGIN { print (r >= 50) ? "met" : "MISSED" }')"
printf '  %-50s %10sx\n' "bytes: competitor / audit" "$(ratio "$b_c" "$b_a")"
per() { awk -v t="$1" -v n="$n" 'BEGIN { printf "%.2f", t / n / 1e6 }'; }
printf '  %-50s %10s ms\n' "audit per image" "$(per "$t_a")" "competitor per image" "$(per "$t_c")"
printf '  %-50s %s\n' "audit Range requests per image" "$reqs"
printf '  %-50s %10s ms\n' "one 64 KiB Range request (curl, fastest of 5)" "$(awk -v l="$lat" 'BEGIN { printf "%.2f", l * 1000 }')"
echo "  correctness: the audit (jobs 4 and 1) found every image acceptable, $nq of them qcow2"

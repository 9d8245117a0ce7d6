#!/bin/sh
# `make bench`: the cloud-wide header audit against a real local Glance 33
# (tests/glance-server: uWSGI with BENCH_AUDIT_WORKERS processes, default
# 4, 1 thread each, file store, "headerauth") holding BENCH_AUDIT_IMAGES
# images (default 200: raw images of incompressible data, 1 MiB to 256 MiB,
# at most 10 GiB in all, and a few qcow2). Ours:
# `glance-dump --metaonly | imginfo-parse --check --from-glance --jobs W`
# (W = the workers), which reads each image's headers with at most two
# Range requests (one for a small image). The competitor, what an operator
# runs without our tools: for each image (ids given for free),
# `curl -o file .../file`, `qemu-img info --output=json file`, rm, one after
# the other. Both answer "what is each image really"; ours moves kilobytes
# where the competitor moves the whole cloud, so the gap grows with image
# size and shrinks with the request latency.
#
# Two settings, each timed fastest of 2 (3 below 50 images), sides
# alternating, warm page cache:
# 1. loopback: 127.0.0.1 of this host, unshaped;
# 2. shaped (root only, with ip netns and tc): the same Glance restarted in
#    a network namespace of its own whose loopback is a 1 Gbit/s link (tbf,
#    MTU 1500), every client in it too. No delay is added: this kernel has
#    no netem (nor fq/etf to delay packets by their timestamps), and a
#    user-space relay would cap the competitor's transfers, so it is not
#    used; the output says so. Nothing outside the namespace is shaped, and
#    the namespace (with its qdisc) goes on exit.
# Each prints the bytes and the requests of image data each side caused
# (from the uWSGI access log), times, ratios (competitor / audit; goal
# >= 50x, under 1 % of the bytes), the audit with --jobs 1 and --jobs W
# (the scaling with the workers), the audit's requests per image and the
# latency of one Range request; exits 1 unless the audit passes the clean
# set. Usage: sh bench/audit.sh BIN_DIR   (BENCH_AUDIT_IMAGES=20 for a quick
# run; BENCH_AUDIT_SHAPED=0 skips the shaped setting)
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
workers=${BENCH_AUDIT_WORKERS:-4}
case "$workers" in ''|*[!0-9]*|0) echo "audit-bench: bad BENCH_AUDIT_WORKERS '$workers'" >&2; exit 2 ;; esac

# The plan, one line per image: FORMAT MIB. Every 40th (from the 20th) is an
# empty 1 GiB qcow2, every 25th 256 MiB raw, the rest cycle 1..128 MiB; an
# image that would take the total over 10 GiB shrinks to 1 MiB.
work=$(mktemp -d "${TMPDIR:-/tmp}/audit-bench.XXXXXX")
ns=
# The Glance first (it may live in the namespace), then the namespace (its
# loopback and qdisc go with it), then the files.
cleanup() {
  [ ! -d "$work/g/run" ] || "$gs/stop-glance.sh" "$work/g" 2>/dev/null || true
  [ -z "$ns" ] || ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
awk -v n="$n" 'BEGIN { split("1 4 8 16 32 64 128", c, " "); cap = 10 * 1024
  for (i = 1; i <= n; i++) {
    if (i % 40 == 20) { print "qcow2 0"; continue }
    if (i % 40 == 10) { print "vhdx v"; continue }
    s = (i % 25 == 0) ? 256 : c[(i - 1) % 7 + 1]
    if (t + s > cap) s = 1
    if (t + s > cap) exit 1
    t += s; print "raw " s } }' > "$work/plan" || { echo "audit-bench: $n images do not fit in 10 GiB" >&2; exit 2; }
mib=$(awk '{ t += ($1 == "vhdx") ? 8 : $2 } END { print t }' "$work/plan")
# The store is not sparse: it, the sources and one competitor download.
need=$(( (mib + 2 * 256 + 1024) * 1024 ))
avail=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
[ "$avail" -ge "$need" ] || skip "needs $((need / 1024)) MiB free in $work, $((avail / 1024)) MiB available"

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
echo "audit-bench: starting Glance with $workers workers (building $GLANCE_VENV first takes 1-2 minutes)" >&2
gport=$(port)
G=$(GLANCE_WORKERS=$workers "$gs/start-glance.sh" "$work/g" "$gport") || fail "Glance did not start"
log="$work/g/log/uwsgi.log"

# headerauth: every request names its identity in these headers. `Expect:`
# (empty) stops curl's 100-continue handshake on uploads, which uWSGI does not
# answer: curl would idle 1 s waiting for it.
gcurl() { curl -sS -f -H 'X-Identity-Status: Confirmed' -H 'X-User-Id: tester' \
  -H 'X-Project-Id: project-1' -H 'X-Roles: admin,member,reader' -H 'Expect:' "$@"; }

echo "audit-bench: creating $n images ($mib MiB) in $G" >&2
mkdir "$work/src"
openssl enc -aes-128-ctr -pass pass:x -nosalt < /dev/zero 2>/dev/null | head -c $((256 << 20)) > "$work/src/256"
for s in 1 4 8 16 32 64 128; do head -c $((s << 20)) "$work/src/256" > "$work/src/$s"; done
qemu-img create -q -f qcow2 "$work/src/0" 1G
# A VHDX as qemu-img makes it (8 MiB): its metadata and BAT lie where its
# region table says, 2 and 3 MiB in.
qemu-img create -q -f vhdx "$work/src/v" 10G
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
nq=$(grep -c '^qcow2' "$work/plan" || true)
nv=$(grep -c '^vhdx' "$work/plan" || true)

# Each side is one `sh -c` (in the namespace, when shaped: one
# `ip netns exec` each). $1 the Glance, $2 the tools' directory, $3 the
# work dir; the audit's --jobs and output file after.
H="--header 'X-Identity-Status: Confirmed' --header 'X-User-Id: tester' --header 'X-Project-Id: project-1' --header 'X-Roles: admin,member,reader'"
AUDIT="\"\$2/glance-dump\" --url \"\$1\" --metaonly --no-members $H | \"\$2/imginfo-parse\" --check --summary --from-glance \"\$1\" --jobs \"\$4\" $H > \"\$3/\$5\""
LISTING="\"\$2/glance-dump\" --url \"\$1\" --metaonly --no-members $H > /dev/null"
COMPETE='while read -r id; do
  curl -sS -f -H "X-Identity-Status: Confirmed" -H "X-User-Id: tester" -H "X-Project-Id: project-1" \
    -H "X-Roles: admin,member,reader" -o "$3/img" "$1/v2/images/$id/file" || exit 1
  qemu-img info --output=json "$3/img" > /dev/null || exit 1
  rm -f "$3/img"
done < "$3/ids"'
inns() { if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi; }
side() { script=$1; shift; inns sh -c "$script" sh "$G" "$bin" "$work" "$@"; }
audit() { side "$AUDIT" "$@"; }
listing() { side "$LISTING"; }
compete() { side "$COMPETE"; }

now_ns() { date +%s%N; }
# logged FROM: "BYTES REQUESTS" uWSGI logged for GET /v2/images/ID/file from
# line FROM (it logs a request once its response is out: let it settle).
logged() { sleep 0.3; tail -n +"$1" "$log" | awk '/ GET \/v2\/images\/[^ ]*\/file => generated / {
  q++; for (i = 1; i < NF; i++) if ($i == "generated") s += $(i + 1) } END { printf "%.0f %d\n", s, q }'; }
# timed KEY CMD...: run CMD; keep its fastest time in t_KEY, the bytes and
# requests of image data it caused in b_KEY and q_KEY.
timed() { k=$1; shift; m=$(( $(wc -l < "$log") + 1 ))
  t0=$(now_ns); "$@" || fail "$* failed"; d=$(( $(now_ns) - t0 ))
  set -- $(logged "$m"); eval "b_$k=$1 q_$k=$2"
  eval "c=\${t_$k:-}"; if [ -z "$c" ] || [ "$d" -lt "$c" ]; then eval "t_$k=$d"; fi; }
secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
row() { printf '  %-52s %9ss %14s bytes %6s requests\n' "$1" "$(secs "$2")" "$3" "$4"; }
per() { awk -v t="$1" -v n="$n" 'BEGIN { printf "%.2f", t / n / 1e6 }'; }

# measure LABEL: time both sides, check the audit, print the table.
measure() {
  label=$1
  t_a=; t_a1=; t_c=; t_l=
  echo "audit-bench: [$label] timing the audit and the competitor (fastest of $rounds)" >&2
  for r in $(seq "$rounds"); do
    if [ "$r" = 2 ]; then timed c compete; timed a1 audit 1 audit1.jsonl; timed a audit "$workers" audit.jsonl
    else timed a audit "$workers" audit.jsonl; timed a1 audit 1 audit1.jsonl; timed c compete; fi
    timed l listing; echo "audit-bench: [$label] round $r done" >&2
  done
  # One Range request of 64 KiB (what a probe starts with), fastest of 5.
  id=$(head -n 1 "$work/ids"); lat=
  for _ in 1 2 3 4 5; do
    l=$(inns curl -sS -f -H 'X-Identity-Status: Confirmed' -H 'X-User-Id: tester' \
      -H 'X-Project-Id: project-1' -H 'X-Roles: admin,member,reader' \
      -o /dev/null -r 0-65535 -w '%{time_total}' "$G/v2/images/$id/file")
    lat=$(awk -v a="$l" -v b="${lat:-$l}" 'BEGIN { print (a < b) ? a : b }')
  done

  sum=$(jq -c 'select(.summary) | .summary' "$work/audit.jsonl")
  stored=$(jq -s '[.[] | .image.size // empty] | add' "$work/audit.jsonl")
  echo "$sum" | jq -e --argjson n "$n" '.images == $n and .probed == $n and .acceptable == $n and .unacceptable == 0 and .errors == 0' >/dev/null ||
    fail "[$label] the audit did not pass the clean set: $sum"
  jq -e -s --argjson q "$nq" '[.[] | select(.info.format == "qcow2" and .check.acceptable)] | length == $q' "$work/audit.jsonl" >/dev/null ||
    fail "[$label] the audit did not find the $nq qcow2 images"
  jq -e 'select(.summary) | .summary.unacceptable == 0' "$work/audit1.jsonl" >/dev/null || fail "[$label] --jobs 1 differs"
  # The records of --jobs W and --jobs 1 alike, in the same order.
  [ "$(jq -c 'select(.image) | [.image.id, .info.format]' "$work/audit.jsonl")" = \
    "$(jq -c 'select(.image) | [.image.id, .info.format]' "$work/audit1.jsonl")" ] ||
    fail "[$label] --jobs $workers and --jobs 1 differ"
  jq -e -s --argjson v "$nv" '[.[] | select(.info.format == "vhdx" and .check.acceptable)] | length == $v' "$work/audit.jsonl" >/dev/null ||
    fail "[$label] the audit did not find the $nv VHDX images"
  # Requests per image, by format: "raw: 190 x 2, 5 x 1; vhdx: 5 x 3".
  reqs=$(jq -r -s '[.[] | select(.probe.requests) | {f: .info.format, q: .probe.requests}] | group_by(.f)
    | map("\(.[0].f): " + (group_by(.q) | map("\(length) x \(.[0].q)") | join(", "))) | join("; ")' "$work/audit.jsonl")
  [ "$(echo "$sum" | jq .requests)" = "$q_a" ] ||
    echo "audit-bench: [$label] note: the audit counted $(echo "$sum" | jq .requests) requests, uWSGI logged $q_a" >&2
  r_t=$(ratio "$t_c" "$t_a")
  pct=$(awk -v a="$b_a" -v c="$b_c" 'BEGIN { printf "%.3f", 100 * a / c }')
  echo "audit-bench: [$label] $n images ($nq qcow2, $nv VHDX), $stored bytes stored, Glance 33 (uWSGI, $workers processes, 1 thread), fastest of $rounds, $(nproc 2>/dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
  [ -z "$2" ] || echo "  link: $2"
  row "audit: glance-dump | imginfo-parse --check (jobs $workers)" "$t_a" "$b_a" "$q_a"
  row "  of which glance-dump --metaonly --no-members" "$t_l" "$b_l" "$q_l"
  row "audit with --jobs 1" "$t_a1" "$b_a1" "$q_a1"
  row "competitor: curl -o file; qemu-img info; rm" "$t_c" "$b_c" "$q_c"
  # The goal is for a link (the download side pays for every byte); on
  # loopback bytes are nearly free and the ratio is information only.
  if [ "$label" = shaped ]; then
    printf '  %-52s %9sx   goal >= 50    %s\n' "time: competitor / audit" "$r_t" \
      "$(awk -v r="$r_t" 'BEGIN { print (r >= 50) ? "met" : "MISSED" }')"
  else
    printf '  %-52s %9sx   (no goal on loopback: the goal is for the shaped link)\n' "time: competitor / audit" "$r_t"
  fi
  printf '  %-52s %9sx   (%s %% of the bytes; goal < 1 %%: %s)\n' "bytes: competitor / audit" "$(ratio "$b_c" "$b_a")" "$pct" \
    "$(awk -v p="$pct" 'BEGIN { print (p < 1) ? "met" : "MISSED" }')"
  printf '  %-52s %9sx\n' "requests: competitor / audit" "$(ratio "$q_c" "$q_a")"
  printf '  %-52s %9sx   (%s workers)\n' "scaling: audit --jobs 1 / --jobs $workers" "$(ratio "$t_a1" "$t_a")" "$workers"
  printf '  %-52s %9s ms\n' "audit per image" "$(per "$t_a")" "competitor per image" "$(per "$t_c")"
  printf '  %-52s %s\n' "audit Range requests per image, by format" "$reqs"
  printf '  %-52s %9s ms\n' "one 64 KiB Range request (curl, fastest of 5)" "$(awk -v l="$lat" 'BEGIN { printf "%.2f", l * 1000 }')"
  echo "  correctness: the audit (jobs $workers and 1, same records in the same order) found every image acceptable, $nq of them qcow2, $nv VHDX"
}

measure loopback ""

# The shaped setting: a namespace of our own, its loopback 1 Gbit/s.
shaped_skip() { echo "audit-bench: shaped link skipped: $*" >&2; exit 0; }
[ "${BENCH_AUDIT_SHAPED:-1}" != 0 ] || shaped_skip "BENCH_AUDIT_SHAPED=0"
[ "$(id -u)" = 0 ] || shaped_skip "not root (a network namespace and tc need it)"
have ip && have tc || shaped_skip "ip or tc not found"
name="audit-bench-$$"
ip netns add "$name" 2>/dev/null || shaped_skip "ip netns add failed"
ns=$name
ip -n "$ns" link set lo mtu 1500 up || shaped_skip "cannot bring up the namespace's loopback"
# burst: 64 KiB at 1 Gbit/s is 0.5 ms of line rate (tbf needs >= the MTU).
ip netns exec "$ns" tc qdisc add dev lo root handle 1: tbf rate 1gbit burst 64kb latency 20ms ||
  shaped_skip "tc tbf failed"
delay="no added delay: netem is not in this kernel"
ip netns exec "$ns" tc qdisc add dev lo parent 1:1 netem delay 250us 2>/dev/null &&
  delay="netem 250 us each way (0.5 ms RTT)"
"$gs/stop-glance.sh" "$work/g" 2>/dev/null
G=$(ip netns exec "$ns" env GLANCE_WORKERS="$workers" "$gs/start-glance.sh" "$work/g" "$gport") ||
  fail "Glance did not start in the namespace"
measure shaped "a network namespace's loopback, tbf 1 Gbit/s (burst 64 KiB), MTU 1500; $delay"

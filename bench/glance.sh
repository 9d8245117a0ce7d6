#!/bin/sh
# `make bench`: glance-dump and glance-load moving one image of incompressible
# data (BENCH_SIZE, default 1 GiB) against two real local Glance 33 servers
# (tests/glance-server: uWSGI, file store, "headerauth"), next to curl doing
# the same transfer in the same run. Download: `curl GET .../file -o out`
# against `glance-dump --dir D` (lists, downloads, hashes sha512, the hash
# Glance has, while downloading, verifies, fsyncs); and, as the fair
# competitor with the same guarantees, `curl | tee file | sha512sum` + sync, output removed and a sync before each run
# (plus, for information, curl followed by `sync`). Upload to the second
# server: curl's PUT of the file into an image it created beforehand (only the
# PUT is timed) against `glance-load` fed glance-dump's record under a fresh
# id (its time includes the POST creating the image and the GET verifying it).
# Wall clock, fastest of three (middle round in reverse order), warm page
# cache; run it on a quiet box (Glance hashes every upload on one core, so
# other load moves the upload times by seconds). Prints MB/s (10^6 bytes/s),
# the ratios (curl time / our time; goal >= 0.9), either tool's peak RSS
# over its runs (goal < 64 MiB); exits 1 unless every transfer verified.
# Usage: sh bench/glance.sh BIN_DIR   (BENCH_SIZE=64M for a quick run)
set -eu
bin=${1:?usage: glance.sh BIN_DIR}
gd="$bin/glance-dump"; gl="$bin/glance-load"
for t in "$gd" "$gl"; do
  [ -x "$t" ] || { echo "glance-bench: $t missing: run 'make build' first" >&2; exit 2; }
done
repo=$(cd "$(dirname "$0")/.." && pwd)
gs="$repo/tests/glance-server"
GLANCE_VENV=${GLANCE_VENV:-$repo/target/glance-venv}; export GLANCE_VENV
have() { command -v "$1" >/dev/null 2>&1; }
skip() { echo "glance-bench: skipped: $*" >&2; exit 0; }
# Glance 33 needs Python >= 3.11: start-glance.sh builds its venv with it.
have "${GLANCE_PYTHON:-python3.11}" || skip "${GLANCE_PYTHON:-python3.11} not found (Glance 33 needs it)"
for t in curl jq python3 bash openssl; do have "$t" || skip "$t not found"; done

# Size: BENCH_SIZE in bytes or with an IEC suffix (as bench/checksum.sh).
size_arg=${BENCH_SIZE:-1G}
if have numfmt; then size=$(numfmt --from=iec "$size_arg"); else
  case "$size_arg" in
    *[Kk]) size=$(( ${size_arg%?} * 1024 )) ;;
    *[Mm]) size=$(( ${size_arg%?} * 1024 * 1024 )) ;;
    *[Gg]) size=$(( ${size_arg%?} * 1024 * 1024 * 1024 )) ;;
    *) size=$(( size_arg )) ;;
  esac
fi
case "$size" in ''|*[!0-9]*|0) echo "glance-bench: bad BENCH_SIZE '$size_arg'" >&2; exit 2 ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/glance-bench.XXXXXX")
# Stopping the servers and removing their state dirs is the whole cleanup:
# the images die with them (ids can never be reused anyway).
cleanup() {
  for s in "$work/ga" "$work/gb"; do [ ! -d "$s/run" ] || "$gs/stop-glance.sh" "$s" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
have_time=false
[ -x /usr/bin/time ] && /usr/bin/time -f %M true >/dev/null 2>&1 && have_time=true

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
uuid() { python3 -c 'import uuid;print(uuid.uuid4())'; }
# One after the other: the first start may build the shared venv.
echo "glance-bench: starting two Glance servers (building $GLANCE_VENV first takes 1-2 minutes)" >&2
A=$("$gs/start-glance.sh" "$work/ga" "$(port)") || { echo "glance-bench: FAIL: Glance A did not start" >&2; exit 1; }
B=$("$gs/start-glance.sh" "$work/gb" "$(port)") || { echo "glance-bench: FAIL: Glance B did not start" >&2; exit 1; }

# headerauth: every request names its identity in these headers. `Expect:`
# (empty) stops curl's 100-continue handshake on uploads, which uWSGI does not
# answer: curl would idle 1 s waiting for it; glance-load never sends it.
gcurl() { curl -sS -f -H 'X-Identity-Status: Confirmed' -H 'X-User-Id: tester' \
  -H 'X-Project-Id: project-1' -H 'X-Roles: admin,member,reader' -H 'Expect:' "$@"; }
# tool BIN ARGS...: one of our tools with the same headers, under
# /usr/bin/time when present (peak RSS in KiB into $work/rss).
tool() { b=$1; shift
  set -- "$b" --header 'X-Identity-Status: Confirmed' --header 'X-User-Id: tester' \
    --header 'X-Project-Id: project-1' --header 'X-Roles: admin,member,reader' "$@"
  rm -f "$work/rss"
  if $have_time; then /usr/bin/time -f %M -o "$work/rss" "$@"; else "$@"; fi; }
new_image() { # URL NAME: create an empty raw image, print its id
  gcurl -H 'Content-Type: application/json' "$1/v2/images" \
    -d '{"name":"'"$2"'","disk_format":"raw","container_format":"bare"}' | jq -r .id; }

echo "glance-bench: generating $size bytes of incompressible data, uploading them to $A" >&2
f="$work/data"
openssl enc -aes-128-ctr -pass pass:x -nosalt < /dev/zero 2>/dev/null | head -c "$size" > "$f"
id=$(new_image "$A" bench)
gcurl -T "$f" -H 'Content-Type: application/octet-stream' "$A/v2/images/$id/file"

now_ns() { date +%s%N; }
# timed VAR CMD...: run CMD (stdout discarded), keep the fastest time in VAR.
timed() { v=$1; shift
  t0=$(now_ns); "$@" > /dev/null; d=$(( $(now_ns) - t0 ))
  eval "c=\${$v:-}"; if [ -z "$c" ] || [ "$d" -lt "$c" ]; then eval "$v=$d"; fi; }
# peak VAR: the largest RSS (KiB) seen by `tool` so far, in VAR.
peak() { [ -s "$work/rss" ] || return 0; r=$(tail -n 1 "$work/rss")
  eval "c=\${$1:-}"; if [ -z "$c" ] || [ "$r" -gt "$c" ]; then eval "$1=$r"; fi; }
dump() { tool "$gd" --url "$A" --dir "$work/dump" > "$work/dump.jsonl"; }
load() { tool "$gl" --url "$B" < "$work/load.in" > "$work/load.out"; }
curl_sync() { gcurl -o "$work/out" "$A/v2/images/$id/file" && sync; }
# What an operator runs for a verified, durable copy without our tools.
curl_verify() { gcurl "$A/v2/images/$id/file" | tee "$work/out" | sha512sum > "$work/sum" && sync; }
fail() { echo "glance-bench: FAIL: $*" >&2; exit 1; }

# Each run after a sync (no tool pays for another's writeback), output
# removed first (every run writes a new file). The middle round runs in
# reverse order: the box drifts, and a tool always going first or second
# would carry any order effect into its best time.
dl_c() { rm -f "$work/out"; sync; timed t_cd gcurl -o "$work/out" "$A/v2/images/$id/file"
  cmp -s "$f" "$work/out" || fail "curl's download differs from the data"; }
dl_s() { rm -f "$work/out"; sync; timed t_cds curl_sync; }
dl_v() { rm -f "$work/out"; sync; timed t_cdv curl_verify; }
dl_g() { rm -rf "$work/dump"; sync; timed t_gd dump; peak rss_gd
  jq -e '.dump.action == "downloaded" and .dump.verified == true' "$work/dump.jsonl" >/dev/null ||
    fail "glance-dump did not download and verify: $(cat "$work/dump.jsonl")"; }
echo "glance-bench: timing downloads from $A (fastest of 3)" >&2
t_cd=; t_cds=; t_cdv=; t_gd=; rss_gd=
for r in 1 2 3; do if [ "$r" = 2 ]; then dl_g; dl_v; dl_s; dl_c; else dl_c; dl_s; dl_v; dl_g; fi; done
cmp -s "$f" "$work/dump/$id.img" || fail "glance-dump's $id.img differs from the data"
rm -f "$work/out"

# Upload to B; glance-load sends the .img the last glance-dump run left.
ul_c() { nid=$(new_image "$B" bench-curl); sync
  timed t_cu gcurl -T "$f" -H 'Content-Type: application/octet-stream' "$B/v2/images/$nid/file"
  gcurl "$B/v2/images/$nid" | jq -e --argjson n "$size" '.status == "active" and .size == $n' >/dev/null ||
    fail "curl's upload to $B is not an active image of $size bytes"; }
ul_g() { jq -c --arg id "$(uuid)" '.image.id=$id' "$work/dump.jsonl" > "$work/load.in"; sync
  timed t_gl load; peak rss_gl
  [ "$(jq -r .load.action "$work/load.out")" = created ] ||
    fail "glance-load did not create the image: $(cat "$work/load.out")"; }
echo "glance-bench: timing uploads to $B (fastest of 3, after an untimed one)" >&2
t_cu=; t_gl=; rss_gl=
# The first upload into a fresh Glance can run faster than later ones (an
# empty store, a fresh worker): spend it on neither tool.
ul_c; t_cu=
for r in 1 2 3; do if [ "$r" = 2 ]; then ul_g; ul_c; else ul_c; ul_g; fi; done

secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
mbps() { awk -v b="$size" -v n="$1" 'BEGIN { printf "%.0f", b / (n / 1e9) / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v g="$3" -v op="$2" \
  'BEGIN { ok = (op == ">=") ? (v >= g) : (v < g); print ok ? "met" : "MISSED" }'; }
row() { printf '  %-48s %8ss %6s MB/s\n' "$1" "$(secs "$2")" "$(mbps "$2")"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss_row() { # LABEL KIB
  if [ -n "$2" ]; then m=$(mib "$2")
    printf '  %-48s %7s MiB    goal < 64     %s\n' "$1" "$m" "$(verdict "$m" "<" 64)"
  else printf '  %-48s not measured (no /usr/bin/time)\n' "$1"; fi; }

r_d=$(ratio "$t_cd" "$t_gd"); r_u=$(ratio "$t_cu" "$t_gl")
echo "glance-bench: $size bytes, two local Glance 33 (uWSGI, 1 process, 1 thread), fastest of 3, $(nproc 2>/dev/null || echo '?') CPUs"
row "download: curl GET -o file" "$t_cd"
row "download: curl GET -o file, then sync" "$t_cds"
row "download: curl | tee | sha512sum, then sync" "$t_cdv"
row "download: glance-dump --dir (hash, verify, fsync)" "$t_gd"
printf '  %-48s %8sx   goal >= 0.90  %s\n' "glance-dump vs curl" "$r_d" "$(verdict "$r_d" ">=" 0.9)"
printf '  %-48s %8sx\n' "glance-dump vs curl + sync (durable, as it)" "$(ratio "$t_cds" "$t_gd")"
printf '  %-48s %8sx\n' "glance-dump vs curl|sha512sum + sync (same work)" "$(ratio "$t_cdv" "$t_gd")"
row "upload: curl PUT -T file (the PUT alone)" "$t_cu"
row "upload: glance-load (POST, PUT, GET to verify)" "$t_gl"
printf '  %-48s %8sx   goal >= 0.90  %s\n' "glance-load vs curl" "$r_u" "$(verdict "$r_u" ">=" 0.9)"
rss_row "peak RSS glance-dump (max of 3 runs)" "$rss_gd"
rss_row "peak RSS glance-load (max of 3 runs)" "$rss_gl"
echo "  correctness: curl and glance-dump downloads equal the data; glance-load created and verified each image"

#!/usr/bin/env bash
# tests/fleet/test-fleet.sh DEB VENV: examples/fleet/fleet.yml run by real
# ansible-core (VENV/bin/ansible-playbook) against hosts on this machine
# (`make test-fleet`). Each host has its own Nova instances path made with
# qemu-img and its own tools_prefix where the playbook unpacks DEB:
#
#   clean:   compute-1 (an overlay on _base), compute-2 (the same, and
#            Glance records that verify), compute-3 (two instances, a
#            swap file whose name is not UTF-8)
#   planted: compute-4 a raw disk and a _base file carrying a qcow2 header
#            (audit: unsafe twice; --check: not acceptable),
#            compute-5 a _base file that is not its Glance image (verify:
#            mismatch, unsafe), compute-6 no instances path (cachewalk's
#            error record), compute-7 unreachable (ssh to a closed port)
#
# The clean group alone must exit 0 with no unsafe record and no error; the
# whole inventory must exit non-zero with 7 hosts, 4 unsafe records and 2
# errors; every record of both streams has a host. The fleet line of the
# whole run is printed last (counted from its stream with jq, and the same
# as the one the playbook printed). Ansible's output goes to
# target/fleet-test/*.log.
set -euo pipefail
deb=$(realpath "${1:?usage: test-fleet.sh DEB VENV}")
venv=$(realpath "${2:?usage: test-fleet.sh DEB VENV}")
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$here/target/fleet-test
rm -rf "$work"
mkdir -p "$work/hosts"
fail() { echo "test-fleet: $*" >&2; exit 1; }

# Contained: ansible's own state and temporary files stay under $work.
export ANSIBLE_HOME=$work/ansible-home ANSIBLE_LOCAL_TEMP=$work/ansible-tmp \
  ANSIBLE_REMOTE_TEMP=$work/ansible-tmp ANSIBLE_HOST_KEY_CHECKING=False \
  ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=False \
  ANSIBLE_SSH_ARGS='-o ConnectTimeout=5 -o BatchMode=yes'

# A Nova instances path: _base/<sha1(image id)> a raw image, and per
# instance a qcow2 overlay on it (disk.info says qcow2).
image_id=fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0
fp=$(printf %s "$image_id" | sha1sum | cut -d' ' -f1)
nova_host() { # DIR INSTANCE...
  local dir=$1; shift
  mkdir -p "$dir/_base"
  qemu-img create -q -f raw "$dir/_base/$fp" 4M
  printf 'image bytes of %s\n' "$image_id" | dd of="$dir/_base/$fp" conv=notrunc status=none
  local vm
  for vm in "$@"; do
    mkdir -p "$dir/$vm"
    qemu-img create -q -f qcow2 -F raw -b "$dir/_base/$fp" "$dir/$vm/disk"
    printf '{"%s": "qcow2"}\n' "$dir/$vm/disk" > "$dir/$vm/disk.info"
  done
}
# glance-dump's records for the image cached in DIR's _base, as on an
# image host: the path of the data and the image's size and digests.
glance_records() { # DIR OUT
  python3 - "$1/_base/$fp" "$image_id" > "$2" <<'PY'
import hashlib, json, os, sys
path, iid = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
print(json.dumps({"path": path, "image": {"id": iid, "disk_format": "raw", "size": len(data),
  "checksum": hashlib.md5(data).hexdigest(), "os_hash_algo": "sha512",
  "os_hash_value": hashlib.sha512(data).hexdigest()}}))
PY
}

# gather.py alone on what a broken host could send: a 16 MiB record, a
# line that is not UTF-8, a truncated line, and a tool that exited 2 with
# no output. The stream stays valid ASCII JSON, every bad line an error.
g=$work/gather
mkdir -p "$g/a" "$g/b"
python3 - "$g" <<'PY'
import json, sys
d = sys.argv[1]
with open(f"{d}/a/audit.jsonl", "wb") as f:
    f.write(json.dumps({"path": "x" * (16 << 20), "audit": {"verdict": "ok"}}).encode() + b"\n")
    f.write(b'{"path": "\xff"}\n{"audit":\n')
open(f"{d}/b/audit.jsonl", "wb").close()
json.dump({"a": {"status": {"cachewalk": 1}}, "b": {"status": {"cachewalk": 2}}}, open(f"{d}/status.json", "w"))
PY
set +e
gline=$("$venv/bin/python" "$here/examples/fleet/gather.py" "$g" "$g/fleet.jsonl")
grc=$?
set -e
[ "$grc" = 1 ] && [ "$gline" = "fleet: 2 hosts, 4 records, 0 unsafe, 3 errors" ] || fail "gather.py: exit $grc, $gline"
jq -e -s 'map(.error.kind // "ok") == ["ok", "bad_json", "bad_json", "exit_status"]' "$g/fleet.jsonl" > /dev/null ||
  fail "gather.py: not the records expected"
! LC_ALL=C grep -q -P '[^\x00-\x7f]' "$g/fleet.jsonl" || fail "gather.py: a byte that is not ASCII"

h=$work/hosts
nova_host "$h/compute-1/instances" vm-1
nova_host "$h/compute-2/instances" vm-1
glance_records "$h/compute-2/instances" "$h/compute-2/glance.jsonl"
nova_host "$h/compute-3/instances" vm-1 vm-2
# A swap file whose name is not UTF-8: its records carry path_bytes, and
# the stream must stay valid JSON.
qemu-img create -q -f raw "$h/compute-3/instances/_base/swap_512"$'\xff' 1M
# A raw disk (disk.info) whose first cluster the guest made a qcow2 header
# naming /etc/shadow: what cachewalk's audit is for (CVE-2026-24708).
nova_host "$h/compute-4/instances" vm-1
qemu-img create -q -f qcow2 -u -F raw -b /etc/shadow "$work/evil.qcow2" 1G
mkdir -p "$h/compute-4/instances/vm-2"
cp "$work/evil.qcow2" "$h/compute-4/instances/vm-2/disk"
truncate -s 4M "$h/compute-4/instances/vm-2/disk"
printf '{"%s": "raw"}\n' "$h/compute-4/instances/vm-2/disk" > "$h/compute-4/instances/vm-2/disk.info"
# And the same bytes as a cached image (Nova converts to raw): the audit
# and --check both refuse it.
cp "$work/evil.qcow2" "$h/compute-4/instances/_base/$(printf evil | sha1sum | cut -d' ' -f1)"
# Glance's record, then a byte of the cached copy changed.
nova_host "$h/compute-5/instances" vm-1
glance_records "$h/compute-5/instances" "$h/compute-5/glance.jsonl"
printf X | dd of="$h/compute-5/instances/_base/$fp" bs=1 seek=100 conv=notrunc status=none
mkdir -p "$h/compute-6"

inv=$work/hosts.ini
{
  echo "[clean]"
  echo "compute-1 instances_path=$h/compute-1/instances tools_prefix=$h/compute-1/prefix"
  echo "compute-2 instances_path=$h/compute-2/instances tools_prefix=$h/compute-2/prefix glance_records=$h/compute-2/glance.jsonl"
  echo "compute-3 instances_path=$h/compute-3/instances tools_prefix=$h/compute-3/prefix"
  echo "[planted]"
  echo "compute-4 instances_path=$h/compute-4/instances tools_prefix=$h/compute-4/prefix"
  echo "compute-5 instances_path=$h/compute-5/instances tools_prefix=$h/compute-5/prefix glance_records=$h/compute-5/glance.jsonl"
  echo "compute-6 instances_path=$h/compute-6/instances tools_prefix=$h/compute-6/prefix"
  echo "compute-7 tools_prefix=$h/compute-7/prefix ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1"
  echo "[all:vars]"
  echo "ansible_connection=local"
  echo "ansible_python_interpreter=$venv/bin/python"
} > "$inv"

# RUN NAME PATTERN: ansible-playbook, its status, and the checks that hold
# for every run; sets rc and line.
run() {
  local name=$1 pattern=$2
  mkdir -p "$work/$name"
  set +e
  # As the README shows it, from a directory that gets ./fleet-out.
  (cd "$work/$name" && "$venv/bin/ansible-playbook" -i "$inv" -f 50 "$here/examples/fleet/fleet.yml" \
    -e deb="$deb" -e fleet_hosts="$pattern") > "$work/$name.log" 2>&1
  rc=$?
  set -e
  local stream=$work/$name/fleet-out/fleet.jsonl
  [ -f "$stream" ] || { tail -n 30 "$work/$name.log" >&2; fail "$name: no stream (exit $rc)"; }
  jq -e -s 'all(.[]; has("host") and (.host | type) == "string")' "$stream" > /dev/null ||
    fail "$name: a record without a host"
  line=$(jq -r -s '"fleet: \(map(.host) | unique | length) hosts, \(length) records, " +
    "\(map(select(.audit.verdict? == "unsafe" or .check.acceptable? == false or .checksums.verified? == false)) | length) unsafe, " +
    "\(map(select(has("error"))) | length) errors"' "$stream")
  grep -qF "\"msg\": \"$line\"" "$work/$name.log" ||
    fail "$name: the playbook did not print '$line' (see $work/$name.log)"
}

run clean clean
[ "$rc" -eq 0 ] || { tail -n 30 "$work/clean.log" >&2; fail "clean hosts: exit $rc, expected 0"; }
[[ $line == "fleet: 3 hosts, "*" records, 0 unsafe, 0 errors" ]] || fail "clean hosts: $line"
clean_line=$line
# What the clean hosts hold: 1 + 1 + 2 instance disks and 1 + 1 + 2 _base
# files, each audited (8), the _base files checked (4), compute-2's one
# record verified.
[[ $clean_line == "fleet: 3 hosts, 13 records, "* ]] || fail "clean hosts: $clean_line, expected 13 records"
jq -e -s '[.[] | select(.host == "compute-3" and .path_bytes)] | length == 2' "$work/clean/fleet-out/fleet.jsonl" > /dev/null ||
  fail "clean hosts: the non-UTF-8 name is not in two records"

run all all
[ "$rc" -ne 0 ] || fail "planted hosts: exit 0, expected non-zero"
stream=$work/all/fleet-out/fleet.jsonl
[[ $line == "fleet: 7 hosts, "*" records, 4 unsafe, 2 errors" ]] || fail "planted hosts: $line"
jq -e -s '
  ([.[] | select(.audit.verdict? == "unsafe") | .host] == ["compute-4", "compute-4"]) and
  ([.[] | select(.check.acceptable? == false) | .host] == ["compute-4"]) and
  ([.[] | select(.checksums.verified? == false) | .host] == ["compute-5"]) and
  ([.[] | select(has("error")) | .host] == ["compute-6", "compute-7"]) and
  ([.[] | select(.host == "compute-7") | .error.kind] == ["host_failed"])' "$stream" > /dev/null ||
  fail "planted hosts: the unsafe records or errors are not the planted ones ($stream)"
# The README's filter (examples/fleet/README.md), run where it says.
shown=$(cd "$work/all" && jq -r 'select(.audit.verdict == "unsafe") | "\(.host) \(.audit.rel_path) \(.audit.flags | join(","))"' fleet-out/fleet.jsonl)
evil=_base/$(printf evil | sha1sum | cut -d' ' -f1)
[ "$shown" = "compute-4 vm-2/disk format_confusion,backing_outside_base
compute-4 $evil format_confusion,backing_outside_base" ] || fail "README filter: $shown"
echo "$line"

#!/bin/sh
# `make demo`: imginfo-parse over the sample qemu-img captures in examples/.
# Usage: sh examples/demo.sh BIN_DIR
set -eu
bin=${1:?usage: demo.sh BIN_DIR}
PATH="$bin:$PATH"
export PATH
cd "$(dirname "$0")" || exit 2
pretty() { if command -v jq >/dev/null 2>&1; then jq -c "$@"; else cat; fi; }

echo "# qemu-img info --backing-chain (QEMU 10 text): one record per image"
imginfo-parse < chain.human.txt | pretty '.info | {filename, format, virtual_size, backing_chain_depth, backing_filename}'

echo
echo "# QEMU 2.x text, old size and snapshot layouts"
imginfo-parse < qemu-2.x.human.txt | pretty '.info | {filename, virtual_size, actual_size, approximate, snapshots: [.snapshots[] | {name, date_local}]}'

echo
echo "# a 3-extent VMDK from qemu-img's JSON: nested extents never overwrite the image's size"
imginfo-parse < vmdk-5g.json | pretty '.info | {virtual_size, create_type: .format_specific.data.create_type, extents: [.format_specific.data.extents[].virtual_size]}'

echo
echo "# a backing file name with newlines forging 'virtual size: 1 TiB' lines: flagged, exit status 2"
status=0
out=$(imginfo-parse --quiet < forged-backing.human.txt) || status=$?
printf '%s\n' "$out" | pretty '{ambiguous: .info.ambiguous, error: .error.kind}'
echo "exit status: $status"
[ "$status" -eq 2 ]

echo
echo "# image files read natively (no qemu-img), judged as an upload gate would (exit 2: one header is broken)"
hostile=../tests/fixtures/hostile/images
status=0
out=$(imginfo-parse --quiet --check "$hostile/clean-v3.qcow2" "$hostile/backing-passwd.qcow2" \
  "$hostile/datafile.qcow2" "$hostile/abs-extent.vmdk" "$hostile/poly.iso" "$hostile/truncated.qcow2") || status=$?
printf '%s\n' "$out" | pretty '{path: (.path | split("/") | last), format: .info.format, acceptable: .check.acceptable, failures: [.check.failures[].check]}'
echo "exit status: $status"
[ "$status" -eq 2 ]

echo
echo "# the whole record, as tools down the pipe see it"
imginfo-parse < snapshots.json

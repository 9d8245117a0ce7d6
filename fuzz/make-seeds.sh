#!/usr/bin/env bash
# make-seeds.sh - build the fuzz seed corpora in fuzz/seeds/<target>/: small
# valid inputs for every fuzz target (fuzz/entries.rs), from which the
# fuzzer mutates. Images are made by qemu-img (small clusters, zero tails
# cut where the format allows, so the whole corpus stays near 2 MiB); the
# qemu-img captures of tests/fixtures/qemu/ and the hostile images of
# tests/fixtures/hostile/ are linked, not copied. The seeds are committed
# (and replayed by tests/tests/fuzz_regressions.rs), so nothing but a
# rebuild of the corpus needs this script.
#
# Needs qemu-img (qemu-utils), python3, sfdisk (fdisk), genisoimage, tar
# and gzip. Run from the repository root:
#   bash fuzz/make-seeds.sh
set -euo pipefail
export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=1700000000
for t in qemu-img python3 sfdisk genisoimage tar gzip; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] ||
        { echo "make-seeds.sh: $t not found" >&2; exit 2; }
done
PATH=$PATH:/usr/sbin
root=$(cd "$(dirname "$0")/.." && pwd)
seeds=$root/fuzz/seeds
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

q() { qemu-img create -q "$@"; }
# keep TARGET FILE [NAME]: copy a made file into the target's seeds.
keep() { mkdir -p "$seeds/$1"; cp -- "$2" "$seeds/$1/${3:-$(basename "$2")}"; }
# link TARGET PATH-FROM-ROOT: link a committed fixture into the seeds.
link() {
    mkdir -p "$seeds/$1"
    ln -sfn "../../../$2" "$seeds/$1/$(basename "$2")"
}
# cut FILE LEN: keep the first LEN bytes.
cut() { truncate -s "$2" "$1"; }
# text TARGET NAME CONTENT: a seed written verbatim (printf %s).
text() { mkdir -p "$seeds/$1"; printf '%s' "$3" > "$seeds/$1/$2"; }

rm -rf "$seeds"
mkdir -p "$seeds"
hostile=tests/fixtures/hostile/images

# --- qcow2: 512-byte clusters keep a whole image in a few KiB.
q -f qcow2 -o cluster_size=512 v3.qcow2 1M;                    keep qcow2 v3.qcow2
q -f qcow2 -o cluster_size=512,compat=0.10 v2.qcow2 1M;        keep qcow2 v2.qcow2
q -f qcow2 -o cluster_size=512,lazy_refcounts=on lazy.qcow2 1M; keep qcow2 lazy.qcow2
q -f qcow2 -o cluster_size=512,compression_type=zstd zstd.qcow2 1M; keep qcow2 zstd.qcow2
q -f qcow2 -o cluster_size=512,refcount_bits=1 rc1.qcow2 1M;   keep qcow2 rc1.qcow2
q -f qcow2 -o cluster_size=16384,extended_l2=on extl2.qcow2 1M; keep qcow2 extl2.qcow2
q -f qcow2 -o cluster_size=512 -u -b base.raw -F raw backing.qcow2 1M; keep qcow2 backing.qcow2
q -f qcow2 -o cluster_size=512,data_file=data.raw,data_file_raw=on datafile-raw.qcow2 64K
keep qcow2 datafile-raw.qcow2
q -f qcow2 -o cluster_size=512 snap.qcow2 1M
qemu-img snapshot -c first snap.qcow2
qemu-img snapshot -c second snap.qcow2;                        keep qcow2 snap.qcow2
for f in clean-v3 aes backing-passwd backing-json badbacking corrupt datafile \
    hugebits hugesize big truncated unknown-bit; do
    link qcow2 "$hostile/$f.qcow2"
done

# --- qcow (version 1).
q -f qcow -u -b base.raw -F raw v1-backing.qcow 1M;     keep qcow v1-backing.qcow
link qcow "$hostile/v1.qcow"

# --- QED: 4 KiB clusters, a two-cluster L1 table (qemu refuses its own one-cluster tables).
q -f qed -o cluster_size=4096,table_size=2 small.qed 1M;  keep qed small.qed
q -f qed -o cluster_size=4096,table_size=2 -u -b base.raw -F raw backing.qed 1M
keep qed backing.qed
link qed "$hostile/banned.qed"

# --- LUKS: AES-128-CBC keeps the key material (and so the payload
# offset) at 580 KiB, the smallest qemu-img makes.
q -f luks --object secret,id=s0,data=fuzz \
    -o key-secret=s0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256 \
    cbc.luks 4K
keep luks cbc.luks

# --- VMDK: one sparse image; the other subformats' descriptors (the
# extents they name are never opened).
q -f vmdk sparse.vmdk 1M;                               keep vmdk sparse.vmdk
for sub in monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    mkdir -p "$sub" && (cd "$sub" && q -f vmdk -o subformat=$sub,adapter_type=lsilogic d.vmdk 1M)
    keep vmdk "$sub/d.vmdk" "$sub.vmdk"
done
for f in clean-stream flat parent abs-extent; do link vmdk "$hostile/$f.vmdk"; done

# --- VHD (vpc): dynamic, fixed, and a differencing child (qemu-img cannot
# make one: a dynamic disk patched to type 4 with its parent's UUID, as
# tools/vhd-chain/tests/support does).
q -f vpc -o subformat=dynamic dynamic.vhd 1M;           keep vhd dynamic.vhd
q -f vpc -o subformat=dynamic,force_size=on forced.vhd 1M; keep vhd forced.vhd
q -f vpc -o subformat=fixed fixed.vhd 16K;              keep vhd fixed.vhd
q -f vpc -o subformat=dynamic child.vhd 1M
python3 - dynamic.vhd child.vhd <<'EOF'
import sys
def fix(b, at):
    b[at:at + 4] = bytes(4)
    s = sum(b) & 0xffffffff
    b[at:at + 4] = ((~s) & 0xffffffff).to_bytes(4, "big")
parent = open(sys.argv[1], "rb").read()
puuid = parent[-512 + 68:-512 + 84]
b = bytearray(open(sys.argv[2], "rb").read())
for at in (0, len(b) - 512):
    f = b[at:at + 512]
    f[60:64] = (4).to_bytes(4, "big")
    fix(f, 64)
    b[at:at + 512] = f
h = b[512:1536]
h[40:56] = puuid
fix(h, 36)
b[512:1536] = h
open(sys.argv[2], "wb").write(b)
EOF
keep vhd child.vhd
# A dynamic VHD with data: qemu-img's blocks are 2 MiB, so this one is
# written here with 4 KiB blocks, two of them allocated (partial bitmap,
# data under a clear bit), so the readers' data paths have a seed.
python3 - blocks.vhd <<'EOF'
import struct, sys
SECTOR = 512
def chs(size):
    ts = size // SECTOR
    if ts > 65535 * 16 * 255:
        ts = 65535 * 16 * 255
    if ts >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = ts // spt
    else:
        spt = 17
        cth = ts // spt
        heads = (cth + 1023) // 1024
        if heads < 4:
            heads = 4
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = ts // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = ts // spt
    return (cth // heads) << 16 | heads << 8 | spt
def fix(b, at):
    b[at:at + 4] = bytes(4)
    b[at:at + 4] = struct.pack(">I", (~sum(b)) & 0xffffffff)
size, block, entries = 1 << 20, 4096, 256
footer = bytearray(512)
footer[0:8] = b"conectix"
struct.pack_into(">IIQI", footer, 8, 2, 0x00010000, 512, 1700000000 - 946684800)
footer[28:32] = b"fuzz"
struct.pack_into(">I", footer, 32, 0x00010000)
footer[36:40] = b"Wi2k"
struct.pack_into(">QQII", footer, 40, size, size, chs(size), 3)
footer[68:84] = bytes(range(1, 17))
fix(footer, 64)
header = bytearray(1024)
header[0:8] = b"cxsparse"
struct.pack_into(">QQIII", header, 8, 0xffffffffffffffff, 1536, 0x00010000, entries, block)
fix(header, 36)
bat = [0xffffffff] * entries
data_start = 1536 + entries * 4          # 2560
blocks = {0: (0xF0, 0x11), 5: (0xFF, 0x55)}
body = bytearray()
at = data_start
for n, (bits, pat) in sorted(blocks.items()):
    bat[n] = at // SECTOR
    bitmap = bytearray(512); bitmap[0] = bits
    data = bytearray([pat]) * block
    if n == 0:
        data[6 * 512:7 * 512] = b"\xee" * 512   # data under a clear bit
    body += bitmap + data
    at += 512 + block
out = footer + header + b"".join(struct.pack(">I", e) for e in bat) + body + footer
open(sys.argv[1], "wb").write(out)
EOF
keep vhd blocks.vhd
link vhd "$hostile/vhd-hugeoffset.vhd"

# --- VHDX: qemu-img's image is 8 MiB (log at 1 MiB, BAT at 2 MiB,
# metadata at 3 MiB). Rebuilt compact: an empty log, the metadata region
# moved to 1 MiB, the BAT left beyond the end (it reads as zeros: no block
# present); headers and region tables re-checksummed. 1.07 MiB.
q -f vhdx big.vhdx 1M
python3 - big.vhdx small.vhdx <<'EOF'
import struct, sys
T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    T.append(c)
def crc32c(b):
    c = 0xffffffff
    for x in b:
        c = T[(c ^ x) & 0xff] ^ (c >> 8)
    return c ^ 0xffffffff
def sealed(block):
    block[4:8] = bytes(4)
    block[4:8] = struct.pack("<I", crc32c(block))
    return block
d = bytearray(open(sys.argv[1], "rb").read())
MIB, KIB = 1 << 20, 1 << 10
rt = d[192 * KIB:256 * KIB]
meta_old = None
for i in range(struct.unpack_from("<I", rt, 8)[0]):
    e = 16 + 32 * i
    off, length, req = struct.unpack_from("<QII", rt, e + 16)
    if rt[e:e + 4] == bytes.fromhex("06a27c8b"):  # metadata
        meta_old = off
        struct.pack_into("<Q", rt, e + 16, MIB)
    else:  # BAT
        struct.pack_into("<Q", rt, e + 16, 2 * MIB)
rt = sealed(rt)
meta = d[meta_old:meta_old + 64 * KIB]
n = struct.unpack_from("<H", meta, 10)[0]
end = max(struct.unpack_from("<II", meta, 32 + 32 * i + 16)[0]
          + struct.unpack_from("<II", meta, 32 + 32 * i + 16)[1] for i in range(n))
out = bytearray(MIB + end)
out[:192 * KIB] = d[:192 * KIB]
for h in (64 * KIB, 128 * KIB):
    hd = out[h:h + 4 * KIB]
    struct.pack_into("<I", hd, 68, 0)  # log length
    out[h:h + 4 * KIB] = sealed(hd)
out[192 * KIB:256 * KIB] = rt
out[256 * KIB:320 * KIB] = rt
out[MIB:MIB + end] = d[meta_old:meta_old + end]
open(sys.argv[2], "wb").write(out)
EOF
keep vhdx small.vhdx

# --- VDI (a static one holds a whole 1 MiB block: left out).
q -f vdi dynamic.vdi 1M;                                keep vdi dynamic.vdi

# --- Parallels: the header holds everything qemu reads of an empty image.
q -f parallels p.parallels 1M && cut p.parallels 512;   keep parallels p.parallels
q -f parallels -o cluster_size=4K p4k.parallels 1M && cut p4k.parallels 512
keep parallels p4k.parallels

# --- ISO 9660: the volume descriptors (from 32 KiB) are what is read.
mkdir -p isoroot && echo hello > isoroot/README
genisoimage -quiet -V FUZZ -J -R -o tiny.iso isoroot && cut tiny.iso 40960
keep iso tiny.iso
link iso "$hostile/poly.iso"

# --- Partition tables: MBR (one sector) and GPT (primary and backup).
truncate -s 64K mbr.img
printf 'label: dos\nstart=1, size=64, type=83\n' | sfdisk -q mbr.img
cut mbr.img 512;                                        keep partition mbr.img
truncate -s 48K gpt.img
printf 'label: gpt\nfirst-lba: 34\nstart=34, size=16, type=L\n' | sfdisk -q gpt.img
keep partition gpt.img

# --- probe: one of each, auto-detected.
for f in qcow2/v3.qcow2 qcow/v1-backing.qcow qed/small.qed vmdk/sparse.vmdk vmdk/monolithicFlat.vmdk \
    vhd/dynamic.vhd vhd/fixed.vhd vhdx/small.vhdx vdi/dynamic.vdi parallels/p.parallels \
    iso/tiny.iso partition/mbr.img partition/gpt.img luks/cbc.luks; do
    mkdir -p "$seeds/probe"
    ln -sfn "../$f" "$seeds/probe/$(basename "$f")"
done
link probe "$hostile/poly.iso"
printf 'raw bytes\n' > "$seeds/probe/raw.img"

# --- qemu-img output: every capture of the fixture corpus.
for f in "$root"/tests/fixtures/qemu/10.0.2/*.json "$root"/tests/fixtures/qemu/old/*.expect.json; do
    link imginfo_json "${f#"$root"/}"
done
for f in "$root"/tests/fixtures/qemu/10.0.2/*.human.txt "$root"/tests/fixtures/qemu/old/*.human.txt; do
    link imginfo_human "${f#"$root"/}"
done

# --- JSON Lines records.
text jsonl records.jsonl '{"path":"a.qcow2","info":{"format":"qcow2","virtual_size":1073741824}}
{"path":"b.img","error":{"tool":"imginfo-parse","kind":"not_found","message":"b.img: no such file","line":2}}

{"image":{"id":"4fe257e0-c119-408e-9053-0be3f4940d6d","size":2305843009213693952,"tags":[]}}
'
text jsonl bad.jsonl '{"path":"x"
[1,2]
"text"
{"a":1e400,"b":-0.0,"c":"\ud800"}
'

# --- Sizes (a user's and qemu's human ones).
n=0
for s in 512 10G 10GiB '1.5 GiB' 64M 2e3 '1e+03 MiB' '0.977 GiB' 761M 4.2G \
    '64 MiB (67108864 bytes)' '10G (10737418240 bytes)' '2.19 MiB' '512 B' 0 inf \
    16EiB 18446744073709551615 '1.25 T'; do
    n=$((n + 1)); text size "$(printf '%02d' $n)" "$s"
done

# --- Times.
n=0
for s in 1795626000 2026-11-25T17:00:00Z '2026-11-25 17:00:00+00:00' \
    2026-11-25T17:00:00.123456Z 0000-01-01T00:00:00Z 9999-12-31T23:59:60Z; do
    n=$((n + 1)); text time "$(printf '%02d' $n)" "$s"
done

# --- vhd-chain: the VHD seeds, and XenServer-style tarballs of them.
for f in dynamic.vhd forced.vhd fixed.vhd child.vhd blocks.vhd; do
    for t in vhd_check vhd_read; do
        mkdir -p "$seeds/$t" && ln -sfn "../vhd/$f" "$seeds/$t/$f"
    done
done
mkdir -p xs && cp child.vhd xs/0.vhd && cp dynamic.vhd xs/1.vhd
tar --format=gnu --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
    -C xs -cf chain.tar 0.vhd 1.vhd
keep vhd_tar chain.tar
tar --format=pax --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
    -C xs -cf - . | gzip -9n > dot-pax.tgz
keep vhd_tar dot-pax.tgz
mkdir -p old && cp dynamic.vhd old/snap.vhd && cp fixed.vhd old/base.vhd
tar --format=ustar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
    -C old -cf - snap.vhd base.vhd | gzip -9n > old-style.tgz
keep vhd_tar old-style.tgz

# --- cachewalk: an instance inventory and a disk.info.
text cachewalk_inventory instances.jsonl '{"uuid":"6a1e8e3c-2f0b-4b8e-9d51-0c3f1f2a7b10","name":"instance-0000000a","host":"compute-1","image_ref":"4fe257e0-c119-408e-9053-0be3f4940d6d","kernel_id":"","task_state":"resize_migrated","vm_state":"active","swap_mb":512,"ephemeral_gb":[1,2],"ephemeral_format":"ext4"}
{"uuid":"b","host":"compute-2","image_ref":"used-here","ephemeral_gb":20,"swap_mb":null}
{"error":{"kind":"not_found"}}
'
text cachewalk_disk_info disk.info '{"/var/lib/nova/instances/6a1e8e3c-2f0b-4b8e-9d51-0c3f1f2a7b10/disk": "qcow2", "/var/lib/nova/instances/6a1e8e3c-2f0b-4b8e-9d51-0c3f1f2a7b10/disk.eph0": "raw", "/var/lib/nova/instances/6a1e8e3c-2f0b-4b8e-9d51-0c3f1f2a7b10/disk.swap": "raw"}'

# --- glance-load: dump metadata, ours (v2) and glance-replicator's (v1).
text glance_load_meta v2.json '{"id":"4fe257e0-c119-408e-9053-0be3f4940d6d","name":"cirros","status":"active","visibility":"public","disk_format":"qcow2","container_format":"bare","size":21430272,"virtual_size":117440512,"checksum":"1d3062cd89af34e419f7100277f38b2b","os_hash_algo":"sha512","os_hash_value":"553d220ed58cfee7dafe003c446a9f197ab5edf8ffc09396c74187cf83873c877e7ae041cb80f3b91489acf687183adcd689b53b38e3ddd22e627e7f98a09c46","min_disk":0,"min_ram":0,"protected":false,"tags":["a"],"os_distro":"cirros","created_at":"2026-11-22T18:13:35Z"}'
text glance_load_meta v1.json '{"status": "active", "virtual_size": null, "name": "cirros-test", "deleted": false, "container_format": "bare", "created_at": "2026-11-22T18:13:35.277990", "disk_format": "raw", "updated_at": "2026-11-22T18:13:35.381449", "properties": {"os_distro": "cirros", "gone": null, "name": "not the name", "n": 3}, "owner": null, "protected": false, "min_ram": 64, "checksum": "ca192a1bde18c914cd9828513156361f", "min_disk": 0, "is_public": true, "deleted_at": null, "id": "4fe257e0-c119-408e-9053-0be3f4940d6d", "size": 2000000, "location": "file:///var/lib/glance/images/x"}'

du -sh --apparent-size "$seeds"
find "$seeds" -mindepth 1 -maxdepth 1 -type d | sort | while read -r d; do
    printf '%-22s %3d\n' "$(basename "$d")" "$(find "$d" -mindepth 1 | wc -l)"
done

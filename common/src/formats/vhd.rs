//! VHD (qemu's `vpc` driver): the 512-byte footer, the dynamic disk header
//! and the block allocation table, read the way qemu 10.0's `block/vpc.c`
//! opens an image.
//!
//! Where qemu looks:
//! - `conectix` at offset 0 (dynamic and differencing disks keep a footer
//!   copy there): qemu's probe picks `vpc`, and the file is opened as a
//!   *dynamic* disk whatever the footer's type field says.
//! - otherwise the last 512 bytes: qemu opens the file as a *fixed* disk,
//!   but only with `-f vpc`; probing calls it `raw`. We report it with
//!   `qemu_probes: false`, and only when qemu `-f vpc` would open it: the
//!   cookie, the checksum, the type field 2 (fixed; qemu says "invalid VPC
//!   image" otherwise) and a size within 2040 GiB. Anything else there is
//!   `Ok(None)`, never an error, so that a raw disk stays raw.
//!
//! "The file length" is qemu's: rounded up to whole 512-byte sectors, with
//! zeros read past the real end (so a 511-byte footer at the end of a
//! `512k + 511` file is found, as in qemu).
//!
//! The footer checksum must match (qemu: "Incorrect header checksum").
//! The virtual size is qemu 10's: the CHS product for creators `vpc ` and
//! `qemu`, unless the geometry is the maximum 65535/16/255; the current
//! size (footer offset 48) for every other creator (`win `, `wa\0\0`,
//! `qem2`, `d2v `, `tap\0`, `CTXS`, anything unknown). The original size
//! (offset 40) is never used. More than `0xff000000` sectors is refused.
//!
//! For a dynamic open qemu reads the 1024-byte header at the footer's data
//! offset (reads past the end of the file give zeros, as in qemu), wants
//! `cxsparse`, a power-of-two block size of at least 512, a BAT of at
//! most `0x1fffffff` entries covering the virtual size, and the BAT and
//! every allocated block inside the file. It does not check the header
//! checksum and never reads the footer at the end of a dynamic disk.
//! qemu has no backing-file support for `vpc`: a differencing disk is
//! opened as a plain dynamic disk and **no backing file is reported**
//! (`qemu-img create -b` says "Backing file not supported"), so the parent
//! name and locators appear only under `header`.
//!
//! `info` keys: `format` (`vpc`), `virtual_size`, `cluster_size` (the
//! block size, present unless the footer's type field says fixed, as in
//! qemu's `vpc_get_info`; printed as a 32-bit signed value like qemu, so a
//! 2 GiB block size is `-2147483648`), `encrypted` (false), `dirty_flag`
//! (false).
//!
//! `header` keys (facts qemu does not print):
//! - `footer_source`: `start` (copy at offset 0) or `end` (last 512 bytes);
//! - `opened_as`: `dynamic` or `fixed`, how qemu opens it (by location);
//! - `disk_type`: `fixed`, `dynamic`, `differencing` or `unknown` (the
//!   footer's type field); `disk_type_code`: its raw value;
//! - `creator_app`: the 4 creator bytes as a string (NULs kept, other
//!   non-UTF-8 bytes replaced); `creator_version`: `major.minor`;
//!   `creator_os`: the 4 host-OS bytes as a string;
//! - `original_size`, `current_size`: bytes, as stored;
//! - `geometry`: `{cylinders, heads, sectors}`; `size_source`: `chs` or
//!   `current_size`, which one gave `virtual_size`;
//! - `footer_checksum_ok`: always true in an `Ok` result (qemu refuses
//!   the image otherwise);
//! - `end_footer_ok`: for `footer_source: start`, whether the last 512
//!   bytes also hold a footer with a valid checksum (qemu never looks);
//!   `end_footer_matches`: whether that copy equals the one at 0;
//! - `uuid`: the footer's unique id (hyphenated hex, stored byte order);
//!   `timestamp`: seconds since 2000-01-01 UTC; `saved_state`: bool;
//!   `hidden`: blktap's hidden flag (footer byte 85), bool;
//! - dynamic opens only: `dynamic_header_offset`,
//!   `dynamic_header_checksum_ok`, `block_size`, `max_table_entries`,
//!   `table_offset`, `allocated_blocks` (BAT entries not `0xFFFFFFFF`);
//! - differencing disks (type 4) read as dynamic: `parent_uuid`,
//!   `parent_timestamp`, `parent_name` (the UTF-16BE header field, up to
//!   the first NUL) and `parent_locators`: a list of `{platform,
//!   data_space, data_length, data_offset, path}` where `path` is the
//!   decoded locator (`W2ku`/`W2ru` UTF-16LE, `MacX` UTF-8) or null when it
//!   is not inside the file or larger than 4 KiB.

use super::bytes::{be16, be32, be64};
use super::{FormatError, Parsed, Reader};
use serde_json::{Map, Value, json};

const FOOTER: usize = 512;
const DYN_HEADER: usize = 1024;
/// qemu's VHD_MAX_SECTORS: 2040 GiB.
const MAX_SECTORS: u64 = 0xff00_0000;
/// 65535 * 16 * 255, the largest geometry.
const MAX_GEOMETRY: u64 = 65535 * 16 * 255;
/// qemu refuses more BAT entries than `INT_MAX / 4`.
const MAX_TABLE_ENTRIES: u32 = 0x1fff_ffff;
/// Largest locator payload we decode.
const MAX_LOCATOR: u32 = 4096;

/// The VHD checksum: NOT of the byte sum, with the 4 bytes at `skip`
/// taken as zero.
pub(crate) fn vhd_checksum(buf: &[u8], skip: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, b) in buf.iter().enumerate() {
        if i < skip || i >= skip + 4 {
            sum = sum.wrapping_add(u32::from(*b));
        }
    }
    !sum
}

/// A 16-byte id as lower-case hyphenated hex, in stored byte order.
pub(crate) fn uuid_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for i in 0..16 {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let v = b.get(i).copied().unwrap_or(0);
        s.push_str(&format!("{v:02x}"));
    }
    s
}

/// Four header bytes as a string (NULs kept, invalid UTF-8 replaced).
fn tag(b: &[u8], o: usize) -> String {
    String::from_utf8_lossy(b.get(o..o + 4).unwrap_or(&[])).into_owned()
}

fn footer_valid(f: &[u8]) -> bool {
    f.len() == FOOTER && f.starts_with(b"conectix") && vhd_checksum(f, 64) == be32(f, 64)
}

/// The file length as qemu's format drivers see it: whole sectors.
fn qemu_len(r: &Reader) -> u64 {
    r.len().div_ceil(512) * 512
}

/// UTF-16 code units to a string (lossy), stopping at the first NUL.
fn utf16(b: &[u8], big_endian: bool) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Read `len` bytes at `offset`, zero-filling past the end of the file as
/// qemu's block layer does.
fn read_padded(r: &Reader, offset: u64, len: usize) -> Result<Vec<u8>, FormatError> {
    let mut v = r.read_upto(offset, len)?;
    v.resize(len, 0);
    Ok(v)
}

fn disk_type_name(t: u32) -> &'static str {
    match t {
        2 => "fixed",
        3 => "dynamic",
        4 => "differencing",
        _ => "unknown",
    }
}

/// Parse the VHD footer (and dynamic header), if the bytes are VHD.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    let head = r.read_upto(0, FOOTER)?;
    if head.starts_with(b"conectix") {
        let mut f = head;
        f.resize(FOOTER, 0);
        return parse_footer(r, f, true);
    }
    let len = qemu_len(r);
    if len < FOOTER as u64 {
        return Ok(None);
    }
    let f = read_padded(r, len - FOOTER as u64, FOOTER)?;
    // A raw disk that happens to end in something like a footer stays raw
    // unless qemu -f vpc would open it: cookie, checksum, type fixed (qemu:
    // "invalid VPC image" otherwise) and a size qemu accepts. qemu's probe
    // never picks this case, so an error here must not stop probing.
    if !footer_valid(&f) || be32(&f, 60) != 2 {
        return Ok(None);
    }
    Ok(parse_footer(r, f, false).ok().flatten())
}

/// Everything after qemu has found its footer.
fn parse_footer(
    r: &Reader,
    footer: Vec<u8>,
    at_start: bool,
) -> Result<Option<Parsed>, FormatError> {
    if vhd_checksum(&footer, 64) != be32(&footer, 64) {
        return Err(r.invalid("incorrect footer checksum"));
    }

    let cyls = u64::from(be16(&footer, 56));
    let heads = u64::from(footer.get(58).copied().unwrap_or(0));
    let secs = u64::from(footer.get(59).copied().unwrap_or(0));
    let chs = cyls * heads * secs;
    let creator = footer.get(28..32).unwrap_or(&[]);
    let use_chs = creator == b"vpc " || creator == b"qemu";
    let current_size = be64(&footer, 48);
    let (total_sectors, size_source) = if !use_chs || chs == MAX_GEOMETRY {
        (current_size / 512, "current_size")
    } else {
        (chs, "chs")
    };
    if total_sectors > MAX_SECTORS {
        return Err(r.invalid(format!(
            "virtual size of {total_sectors} sectors exceeds 2040 GiB"
        )));
    }
    let disk_type = be32(&footer, 60);

    let mut h = Map::new();
    h.insert(
        "footer_source".into(),
        if at_start { "start" } else { "end" }.into(),
    );
    h.insert(
        "opened_as".into(),
        if at_start { "dynamic" } else { "fixed" }.into(),
    );
    h.insert("disk_type".into(), disk_type_name(disk_type).into());
    h.insert("disk_type_code".into(), disk_type.into());
    h.insert("creator_app".into(), tag(&footer, 28).into());
    h.insert(
        "creator_version".into(),
        format!("{}.{}", be16(&footer, 32), be16(&footer, 34)).into(),
    );
    h.insert("creator_os".into(), tag(&footer, 36).into());
    h.insert("original_size".into(), be64(&footer, 40).into());
    h.insert("current_size".into(), current_size.into());
    h.insert(
        "geometry".into(),
        json!({"cylinders": cyls, "heads": heads, "sectors": secs}),
    );
    h.insert("size_source".into(), size_source.into());
    h.insert("footer_checksum_ok".into(), true.into());
    h.insert(
        "uuid".into(),
        uuid_string(footer.get(68..84).unwrap_or(&[])).into(),
    );
    h.insert("timestamp".into(), be32(&footer, 24).into());
    h.insert(
        "saved_state".into(),
        (footer.get(84).copied().unwrap_or(0) != 0).into(),
    );
    h.insert(
        "hidden".into(),
        (footer.get(85).copied().unwrap_or(0) != 0).into(),
    );

    let mut cluster_size = 0u32;
    if at_start {
        let len = qemu_len(r);
        if len >= FOOTER as u64 {
            let end = read_padded(r, len - FOOTER as u64, FOOTER)?;
            h.insert("end_footer_ok".into(), footer_valid(&end).into());
            h.insert("end_footer_matches".into(), (end == footer).into());
        } else {
            h.insert("end_footer_ok".into(), false.into());
            h.insert("end_footer_matches".into(), false.into());
        }
        let block_size = parse_dynamic(r, &footer, total_sectors, disk_type, &mut h)?;
        cluster_size = block_size;
    }

    let mut info = Map::new();
    info.insert("format".into(), "vpc".into());
    info.insert("virtual_size".into(), (total_sectors * 512).into());
    // qemu's vpc_get_info: the block size unless the type field says
    // fixed; qemu keeps it in an `int`, so 2 GiB prints as negative.
    if disk_type != 2 && cluster_size != 0 {
        info.insert("cluster_size".into(), (cluster_size as i32).into());
    }
    info.insert("encrypted".into(), false.into());
    info.insert("dirty_flag".into(), false.into());
    info.insert("header".into(), Value::Object(h));
    Ok(Some(Parsed {
        kind: "vpc",
        qemu_probes: at_start,
        info,
    }))
}

/// The dynamic-disk part of qemu's open; returns the block size.
fn parse_dynamic(
    r: &Reader,
    footer: &[u8],
    total_sectors: u64,
    disk_type: u32,
    h: &mut Map<String, Value>,
) -> Result<u32, FormatError> {
    let len = qemu_len(r);
    let data_offset = be64(footer, 16);
    let hdr = read_padded(r, data_offset, DYN_HEADER)?;
    if !hdr.starts_with(b"cxsparse") {
        return Err(r.invalid(format!(
            "no dynamic header (cxsparse) at offset {data_offset}"
        )));
    }
    let block_size = be32(&hdr, 32);
    if !block_size.is_power_of_two() || block_size < 512 {
        return Err(r.invalid(format!("invalid block size {block_size}")));
    }
    let bitmap_size = (u64::from(block_size) / (8 * 512) + 511) & !511;
    let entries = be32(&hdr, 28);
    if total_sectors * 512 / u64::from(block_size) > 0xffff_ffff {
        return Err(r.invalid("too many blocks"));
    }
    if entries > MAX_TABLE_ENTRIES {
        return Err(r.invalid(format!("max table entries too large ({entries})")));
    }
    if u64::from(entries) * u64::from(block_size) < total_sectors * 512 {
        return Err(r.invalid("block allocation table too small for the virtual size"));
    }
    let table_offset = be64(&hdr, 16);
    let table_len = u64::from(entries) * 4;
    let table_end = table_offset
        .checked_add(table_len)
        .and_then(|e| e.checked_add(511))
        .map(|e| e & !511)
        .ok_or_else(|| r.invalid(format!("table offset {table_offset} out of range")))?;
    if table_end > len {
        return Err(r.truncated(format!(
            "block allocation table ({entries} entries at {table_offset}) past the end of the file"
        )));
    }
    let mut free = table_end;
    let mut allocated = 0u64;
    let mut off = 0u64;
    while off < table_len {
        let n = usize::try_from((table_len - off).min(super::MAX_READ as u64)).unwrap_or(0);
        let chunk = read_padded(r, table_offset + off, n)?;
        for e in chunk.chunks_exact(4) {
            let v = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            if v != 0xffff_ffff {
                allocated += 1;
                let next = 512 * u64::from(v) + bitmap_size + u64::from(block_size);
                free = free.max(next);
            }
        }
        off += n as u64;
    }
    if free > len {
        return Err(r.truncated(format!(
            "data blocks end at {free}, past the end of the file ({len})"
        )));
    }

    h.insert("dynamic_header_offset".into(), data_offset.into());
    h.insert(
        "dynamic_header_checksum_ok".into(),
        (vhd_checksum(&hdr, 36) == be32(&hdr, 36)).into(),
    );
    h.insert("block_size".into(), block_size.into());
    h.insert("max_table_entries".into(), entries.into());
    h.insert("table_offset".into(), table_offset.into());
    h.insert("allocated_blocks".into(), allocated.into());
    if disk_type == 4 {
        h.insert(
            "parent_uuid".into(),
            uuid_string(hdr.get(40..56).unwrap_or(&[])).into(),
        );
        h.insert("parent_timestamp".into(), be32(&hdr, 56).into());
        h.insert(
            "parent_name".into(),
            utf16(hdr.get(64..576).unwrap_or(&[]), true).into(),
        );
        let mut locs = Vec::new();
        for i in 0..8usize {
            let e = 576 + 24 * i;
            let platform = be32(&hdr, e);
            if platform == 0 {
                continue;
            }
            let data_len = be32(&hdr, e + 8);
            let data_off = be64(&hdr, e + 16);
            let path = locator_path(r, platform, data_off, data_len)?;
            locs.push(json!({
                "platform": tag(&hdr, e),
                "data_space": be32(&hdr, e + 4),
                "data_length": data_len,
                "data_offset": data_off,
                "path": path,
            }));
        }
        h.insert("parent_locators".into(), Value::Array(locs));
    }
    Ok(block_size)
}

/// Decode a parent locator's payload, if it is small and inside the file.
fn locator_path(r: &Reader, platform: u32, off: u64, len: u32) -> Result<Value, FormatError> {
    if len == 0 || len > MAX_LOCATOR || off.checked_add(u64::from(len)).is_none_or(|e| e > r.len())
    {
        return Ok(Value::Null);
    }
    let data = r.read(off, len as usize)?;
    Ok(match &platform.to_be_bytes() {
        b"W2ku" | b"W2ru" => utf16(&data, false).into(),
        b"MacX" => String::from_utf8_lossy(&data).into_owned().into(),
        _ => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn put64(b: &mut [u8], o: usize, v: u64) {
        b[o..o + 8].copy_from_slice(&v.to_be_bytes());
    }

    /// A footer with the given creator, size and geometry.
    fn footer(creator: &[u8; 4], size: u64, chs: (u16, u8, u8), dtype: u32) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        put32(&mut f, 8, 2);
        put32(&mut f, 12, 0x0001_0000);
        put64(&mut f, 16, if dtype == 2 { u64::MAX } else { 512 });
        f[28..32].copy_from_slice(creator);
        put32(&mut f, 32, 0x0005_0003);
        f[36..40].copy_from_slice(b"Wi2k");
        put64(&mut f, 40, size);
        put64(&mut f, 48, size);
        f[56..58].copy_from_slice(&chs.0.to_be_bytes());
        f[58] = chs.1;
        f[59] = chs.2;
        put32(&mut f, 60, dtype);
        f[68..84].copy_from_slice(&[0x11; 16]);
        fix_footer(&mut f);
        f
    }
    fn fix_footer(f: &mut [u8]) {
        let c = vhd_checksum(f, 64);
        put32(f, 64, c);
    }

    /// A dynamic image: footer, header at 512, BAT at 1536, end footer.
    fn dynamic(f: &[u8], entries: u32, block: u32) -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        h[..8].copy_from_slice(b"cxsparse");
        put64(&mut h, 8, u64::MAX);
        put64(&mut h, 16, 1536);
        put32(&mut h, 24, 0x0001_0000);
        put32(&mut h, 28, entries);
        put32(&mut h, 32, block);
        let c = vhd_checksum(&h, 36);
        put32(&mut h, 36, c);
        let bat = (entries as usize * 4).div_ceil(512) * 512;
        let mut img = f.to_vec();
        img.extend_from_slice(&h);
        img.extend(std::iter::repeat_n(0xffu8, bat));
        img.extend_from_slice(f);
        img
    }

    fn parse_buf(b: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "vpc"), "x.vhd")
    }

    const SIX_MIB: u64 = 6 << 20;
    // 180/4/17 = 6266880 bytes, below 6 MiB
    const SIX_CHS: (u16, u8, u8) = (180, 4, 17);

    fn vsize(p: &Parsed) -> u64 {
        p.info["virtual_size"].as_u64().unwrap()
    }

    #[test]
    fn qemu_size_rules_per_creator() {
        for (creator, want) in [
            (b"qemu", 6_266_880u64),
            (b"vpc ", 6_266_880),
            (b"win ", SIX_MIB),
            (b"qem2", SIX_MIB),
            (b"wa\0\0", SIX_MIB),
            (b"d2v ", SIX_MIB),
            (b"tap\0", SIX_MIB),
            (b"CTXS", SIX_MIB),
            (b"xyz ", SIX_MIB),
        ] {
            let img = dynamic(&footer(creator, SIX_MIB, SIX_CHS, 3), 3, 2 << 20);
            let p = parse_buf(&img).unwrap().unwrap();
            assert_eq!(vsize(&p), want, "creator {creator:?}");
            assert!(p.qemu_probes);
            assert_eq!(p.info["cluster_size"], 2 << 20);
        }
        // maximal geometry: current size even for qemu/vpc
        let img = dynamic(&footer(b"qemu", SIX_MIB, (65535, 16, 255), 3), 3, 2 << 20);
        assert_eq!(vsize(&parse_buf(&img).unwrap().unwrap()), SIX_MIB);
    }

    #[test]
    fn never_uses_original_size() {
        let mut f = footer(b"win ", SIX_MIB, SIX_CHS, 3);
        put64(&mut f, 40, 1 << 20);
        fix_footer(&mut f);
        let p = parse_buf(&dynamic(&f, 3, 2 << 20)).unwrap().unwrap();
        assert_eq!(vsize(&p), SIX_MIB);
        assert_eq!(p.info["header"]["original_size"], 1 << 20);
    }

    #[test]
    fn fixed_vhd_is_found_at_the_end_and_not_probed() {
        let mut img = vec![0u8; 4096];
        img.extend_from_slice(&footer(b"qemu", 4096, (0, 0, 0), 2));
        // chs product 0 for creator qemu gives 0: use win to check size
        let p = parse_buf(&img).unwrap().unwrap();
        assert!(!p.qemu_probes);
        assert_eq!(p.info["header"]["footer_source"], "end");
        assert!(p.info.get("cluster_size").is_none());
        let mut img = vec![0u8; 4096];
        img.extend_from_slice(&footer(b"win ", 4096, SIX_CHS, 2));
        assert_eq!(vsize(&parse_buf(&img).unwrap().unwrap()), 4096);
    }

    #[test]
    fn bad_end_footer_is_not_vhd_but_bad_start_footer_is_an_error() {
        let mut img = vec![0u8; 4096];
        let mut f = footer(b"win ", 4096, SIX_CHS, 2);
        f[100] ^= 1;
        img.extend_from_slice(&f);
        assert!(parse_buf(&img).unwrap().is_none());
        let mut img = dynamic(&footer(b"win ", SIX_MIB, SIX_CHS, 3), 3, 2 << 20);
        img[100] ^= 1;
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn end_footer_rules_follow_qemu() {
        let data = vec![0u8; 4096];
        // type field must say fixed
        let mut img = data.clone();
        img.extend_from_slice(&footer(b"win ", 4096, SIX_CHS, 3));
        assert!(parse_buf(&img).unwrap().is_none());
        // a footer qemu would refuse (size) is raw, not an error
        let mut f = footer(b"win ", 4096, SIX_CHS, 2);
        put64(&mut f, 48, u64::MAX);
        fix_footer(&mut f);
        let mut img = data.clone();
        img.extend_from_slice(&f);
        assert!(parse_buf(&img).unwrap().is_none());
        // a 511-byte footer at the end of a 512k+511 file (its last,
        // reserved byte is zero) is found, as qemu finds it
        let mut img = data.clone();
        img.extend_from_slice(&footer(b"win ", 4096, SIX_CHS, 2)[..511]);
        assert_eq!(vsize(&parse_buf(&img).unwrap().unwrap()), 4096);
        // a whole footer at the end of an unaligned file is not
        let mut img = vec![0u8; 4000];
        img.extend_from_slice(&footer(b"win ", 4096, SIX_CHS, 2));
        assert!(parse_buf(&img).unwrap().is_none());
    }

    #[test]
    fn cluster_size_is_a_c_int_and_absent_for_type_fixed() {
        let img = dynamic(&footer(b"win ", SIX_MIB, SIX_CHS, 3), 1, 1 << 31);
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info["cluster_size"], -2_147_483_648i64);
        // cookie at 0 with type 2: opened as dynamic, no cluster size
        let mut f = footer(b"win ", SIX_MIB, SIX_CHS, 2);
        put64(&mut f, 16, 512);
        fix_footer(&mut f);
        let img = dynamic(&f, 3, 2 << 20);
        let p = parse_buf(&img).unwrap().unwrap();
        assert!(p.info.get("cluster_size").is_none());
        assert_eq!(p.info["header"]["opened_as"], "dynamic");
        assert_eq!(p.info["header"]["disk_type"], "fixed");
    }

    #[test]
    fn not_vhd() {
        assert!(parse_buf(&[]).unwrap().is_none());
        assert!(parse_buf(&[0u8; 100]).unwrap().is_none());
        assert!(parse_buf(&[0u8; 10000]).unwrap().is_none());
    }

    #[test]
    fn checksum_is_not_of_byte_sum() {
        let f = footer(b"qemu", SIX_MIB, SIX_CHS, 3);
        let sum: u32 = f
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, b)| u32::from(*b))
            .sum();
        assert_eq!(be32(&f, 64), !sum);
    }

    #[test]
    fn hostile_fields_are_errors() {
        let good = || footer(b"win ", SIX_MIB, SIX_CHS, 3);
        // size beyond 2040 GiB
        let mut f = good();
        put64(&mut f, 48, u64::MAX);
        fix_footer(&mut f);
        assert!(parse_buf(&dynamic(&f, 3, 2 << 20)).is_err());
        // block size not a power of two / too small
        for bs in [0u32, 256, 3 << 20] {
            assert!(parse_buf(&dynamic(&good(), 3, bs)).is_err(), "{bs}");
        }
        // BAT too small
        assert!(parse_buf(&dynamic(&good(), 2, 2 << 20)).is_err());
        // huge BAT (beyond the file)
        let mut img = dynamic(&good(), 3, 2 << 20);
        put32(&mut img, 512 + 28, 0x1fff_ffff);
        assert!(parse_buf(&img).is_err());
        put32(&mut img, 512 + 28, u32::MAX);
        assert!(parse_buf(&img).is_err());
        // table offset near 2^64
        let mut img = dynamic(&good(), 3, 2 << 20);
        put64(&mut img, 512 + 16, u64::MAX - 10);
        assert!(parse_buf(&img).is_err());
        // allocated block past the end
        let mut img = dynamic(&good(), 3, 2 << 20);
        put32(&mut img, 1536, 5);
        assert!(parse_buf(&img).is_err());
        // data offset past the end / near 2^64
        for off in [1u64 << 40, u64::MAX] {
            let mut f = good();
            put64(&mut f, 16, off);
            fix_footer(&mut f);
            assert!(parse_buf(&dynamic(&f, 3, 2 << 20)).is_err());
        }
    }

    #[test]
    fn allocated_block_inside_the_file_is_fine() {
        let f = footer(b"win ", SIX_MIB, SIX_CHS, 3);
        let mut img = dynamic(&f, 3, 2 << 20);
        let end = img.split_off(img.len() - 512);
        let sector = (img.len() / 512) as u32;
        put32(&mut img, 1536, sector);
        img.extend(std::iter::repeat_n(0u8, 512 + (2 << 20)));
        img.extend_from_slice(&end);
        let p = parse_buf(&img).unwrap().unwrap();
        assert_eq!(p.info["header"]["allocated_blocks"], 1);
        assert_eq!(p.info["header"]["end_footer_ok"], true);
    }

    #[test]
    fn differencing_reports_parent_only_in_header() {
        let f = footer(b"tap\0", SIX_MIB, SIX_CHS, 4);
        let mut img = dynamic(&f, 3, 2 << 20);
        let h = 512;
        img[h + 40..h + 56].copy_from_slice(&[0x22; 16]);
        let name: Vec<u8> = "base.vhd"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        img[h + 64..h + 64 + name.len()].copy_from_slice(&name);
        // one W2ru locator pointing at the end footer region (inside the file)
        let loc: Vec<u8> = ".\\base.vhd"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let loc_off = img.len() as u64;
        img.extend_from_slice(&loc);
        img.extend(std::iter::repeat_n(0u8, 512 - loc.len()));
        let e = h + 576;
        img[e..e + 4].copy_from_slice(b"W2ru");
        put32(&mut img, e + 4, 512);
        put32(&mut img, e + 8, loc.len() as u32);
        put64(&mut img, e + 16, loc_off);
        // a second locator far outside the file
        let e2 = e + 24;
        img[e2..e2 + 4].copy_from_slice(b"MacX");
        put32(&mut img, e2 + 8, 17);
        put64(&mut img, e2 + 16, u64::MAX - 3);
        let p = parse_buf(&img).unwrap().unwrap();
        assert!(p.info.get("backing_filename").is_none());
        let hd = &p.info["header"];
        assert_eq!(hd["disk_type"], "differencing");
        assert_eq!(hd["parent_name"], "base.vhd");
        assert_eq!(hd["parent_uuid"], uuid_string(&[0x22; 16]));
        assert_eq!(hd["parent_locators"][0]["path"], ".\\base.vhd");
        assert!(hd["parent_locators"][1]["path"].is_null());
        assert_eq!(hd["creator_app"], "tap\u{0}");
    }

    #[test]
    fn every_prefix_is_handled() {
        let f = footer(b"qemu", SIX_MIB, SIX_CHS, 3);
        let img = dynamic(&f, 3, 2 << 20);
        for n in 0..img.len() {
            let b = img[..n].to_vec();
            match parse_buf(&b) {
                // qemu needs the footer, the header and the 3 BAT entries
                // (bytes 1536..1548; it rounds the file up to whole
                // sectors), not the end footer
                Ok(Some(_)) => assert!(n >= 1548, "{n}"),
                Ok(None) | Err(_) => assert!(n < 1548, "{n}"),
            }
        }
        let mut fixed = vec![0u8; 2048];
        fixed.extend_from_slice(&footer(b"win ", 2048, SIX_CHS, 2));
        for n in 0..fixed.len() {
            let b = fixed[..n].to_vec();
            let r = parse_buf(&b);
            // qemu reads the last (zero-padded) sector: once the cookie,
            // type and checksum are in it, the rest reads as zeros and
            // the footer still checks out; it never errors
            if n < 2048 + 68 {
                assert!(matches!(r, Ok(None)), "{n}");
            } else {
                assert!(r.is_ok(), "{n}");
            }
        }
    }
}

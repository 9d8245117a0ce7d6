//! Partition tables: GPT (with its protective MBR) and plain MBR. qemu reads
//! such disks as raw (`qemu_probes: false`); this is a detail reported
//! beside qemu's view (`info.partition_table`), so garbage gives
//! `Ok(None)`, never an error.
//!
//! - **MBR**: `55 AA` at 510, and not a FAT boot sector (2 FATs at 0x10 and
//!   media byte 0xF8 at 0x15, as oslo's inspector tells them apart); every
//!   entry's boot flag 0x00 or 0x80; at least one non-empty entry.
//!   Logical partitions inside an extended partition are not followed.
//! - **GPT**: a valid MBR with a 0xEE (protective) entry, and `EFI PART` at
//!   LBA 1 for 512-byte sectors, else for 4096-byte sectors. One result per
//!   call: GPT when found, else MBR.
//!
//! Keys of the info:
//!
//! - `type`: `"gpt"` or `"mbr"`;
//! - `partitions`: `[{number, type, start_lba, sectors, ...}]`, non-empty
//!   entries only. MBR: `number` 1–4, `type` the hex code (`"0x83"`),
//!   `bootable` (flag 0x80). GPT: `number` the entry index + 1, `type` the
//!   type GUID (`"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"`), `sectors` from
//!   first and last LBA (0 if last < first), `guid` (the partition's
//!   unique GUID), `name` (UTF-16LE, lossy);
//! - `partitions_within_file`: every listed partition ends within the
//!   file (`(start_lba + sectors) × sector size ≤ length`; for GPT also
//!   that the entry array was read). A hybrid ISO's table always does:
//!   its partitions cover the ISO, the EFI image inside it or an EFI
//!   partition appended after it. `--check` uses it to tell an ISO's boot
//!   record from a second layout;
//! - MBR only: `disk_signature` (u32 at 440, as `"0x…"`);
//! - GPT only: `sector_size` (512 or 4096), `disk_guid`, `header_crc_ok`
//!   (CRC32 of the header with its CRC field zeroed, over the header size
//!   if it is 92..=sector size), `entries_crc_ok` (false when the entry
//!   array is unreadable: past the end, entry size under 128 or not a
//!   multiple of 8, or more than 1 MiB), `entries_read` (whether the entry
//!   array could be read at all), `hybrid_mbr` (the MBR has entries besides
//!   the 0xEE one), `protective_mbr_ok` (oslo's rule: the 0xEE entry is the
//!   only one, it is entry 1 and starts at LBA 1).

use super::bytes::{le16, le32, le64};
use super::{FormatError, Parsed, Reader};
use serde::Serialize;

/// A partition table (module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Table {
    /// GPT (behind a protective MBR).
    Gpt(Gpt),
    /// MBR.
    Mbr(Mbr),
}

/// A GPT's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpt {
    /// Always `gpt`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The sector size it was found at.
    pub sector_size: u64,
    /// Disk GUID.
    pub disk_guid: String,
    /// Whether the header CRC holds.
    pub header_crc_ok: bool,
    /// Whether the entries could be read.
    pub entries_read: bool,
    /// Whether their CRC holds.
    pub entries_crc_ok: bool,
    /// The used entries.
    pub partitions: Vec<GptPartition>,
    /// Whether every partition ends within the file.
    pub partitions_within_file: bool,
    /// Whether the MBR also lists other partitions.
    pub hybrid_mbr: bool,
    /// Whether the protective MBR is the standard one.
    pub protective_mbr_ok: bool,
}

/// A used GPT entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GptPartition {
    /// 1-based entry number.
    pub number: usize,
    /// Type GUID.
    #[serde(rename = "type")]
    pub kind: String,
    /// Partition GUID.
    pub guid: String,
    /// First LBA.
    pub start_lba: u64,
    /// Length in sectors (saturating).
    pub sectors: u64,
    /// Name (UTF-16LE).
    pub name: String,
}

/// An MBR's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mbr {
    /// Always `mbr`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Whether every partition ends within the file.
    pub partitions_within_file: bool,
    /// The used entries.
    pub partitions: Vec<MbrPartition>,
    /// The disk signature (`0x` and 8 hex digits).
    pub disk_signature: String,
}

/// A used MBR entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MbrPartition {
    /// 1-based entry number.
    pub number: usize,
    /// Type byte (`0x` and 2 hex digits).
    #[serde(rename = "type")]
    pub kind: String,
    /// First LBA.
    pub start_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
    /// Whether the boot flag is set.
    pub bootable: bool,
}

/// Parse the partition table, if the bytes have one.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    if r.len() < 512 {
        return Ok(None);
    }
    let Ok(s0) = r.read(0, 512) else {
        return Ok(None);
    };
    if s0.get(510..512) != Some([0x55u8, 0xAA].as_slice()) {
        return Ok(None);
    }
    if s0.get(0x10) == Some(&2) && s0.get(0x15) == Some(&0xF8) {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut protective: Option<(usize, u32)> = None;
    for i in 0..4 {
        let e = s0.get(446 + 16 * i..446 + 16 * (i + 1)).unwrap_or(&[]);
        let boot = e.first().copied().unwrap_or(0);
        if boot != 0 && boot != 0x80 {
            return Ok(None);
        }
        let ptype = e.get(4).copied().unwrap_or(0);
        if ptype == 0 {
            continue;
        }
        let start = le32(e, 8);
        if ptype == 0xEE && protective.is_none() {
            protective = Some((i, start));
        }
        parts.push(MbrPartition {
            number: i + 1,
            kind: format!("0x{ptype:02x}"),
            start_lba: start,
            sectors: le32(e, 12),
            bootable: boot == 0x80,
        });
    }
    if parts.is_empty() {
        return Ok(None);
    }
    if let Some((idx, start)) = protective {
        for ss in [512u64, 4096] {
            if let Some(mut g) = gpt(r, ss) {
                g.partitions_within_file = g.entries_read
                    && within_file(
                        r.len(),
                        ss,
                        g.partitions.iter().map(|p| (p.start_lba, p.sectors)),
                    );
                g.hybrid_mbr = parts.len() > 1;
                g.protective_mbr_ok = parts.len() == 1 && idx == 0 && start == 1;
                return Ok(Some(layout(super::Format::Gpt, Table::Gpt(g))));
            }
        }
    }
    let mbr = Mbr {
        kind: "mbr",
        partitions_within_file: within_file(
            r.len(),
            512,
            parts
                .iter()
                .map(|p| (u64::from(p.start_lba), u64::from(p.sectors))),
        ),
        partitions: parts,
        disk_signature: format!("0x{:08x}", le32(&s0, 440)),
    };
    Ok(Some(layout(super::Format::Mbr, Table::Mbr(mbr))))
}

/// A partition table found: a layout qemu reads as raw.
fn layout(kind: super::Format, table: Table) -> Parsed {
    Parsed::layout(kind, super::Details::Partition(table))
}

/// Whether every partition (`(start, sectors)`) ends within a file of
/// `len` bytes, for sectors of `ss` bytes; overflow is "no".
fn within_file(len: u64, ss: u64, mut parts: impl Iterator<Item = (u64, u64)>) -> bool {
    parts.all(|(start, n)| {
        start
            .checked_add(n)
            .and_then(|end| end.checked_mul(ss))
            .is_some_and(|end| end <= len)
    })
}

/// The GPT at LBA 1 for sector size `ss`, if there is one.
fn gpt(r: &Reader, ss: u64) -> Option<Gpt> {
    let h = r.read(ss, ss as usize).ok()?;
    if h.get(..8) != Some(b"EFI PART".as_slice()) {
        return None;
    }
    let hsize = le32(&h, 12) as usize;
    let header_crc_ok = (92..=h.len()).contains(&hsize) && {
        let mut c = h.get(..hsize)?.to_vec();
        c.get_mut(16..20)?.fill(0);
        crc32(&c) == le32(&h, 16)
    };
    let entries_lba = le64(&h, 72);
    let num = u64::from(le32(&h, 80));
    let esz = u64::from(le32(&h, 84));
    let disk_guid = guid(h.get(56..72)?);
    let total = num.checked_mul(esz);
    let off = entries_lba.checked_mul(ss);
    let readable = esz >= 128
        && esz % 8 == 0
        && total.is_some_and(|t| t <= super::MAX_READ as u64)
        && matches!((off, total), (Some(o), Some(t)) if o.checked_add(t).is_some_and(|e| e <= r.len()));
    let entries = match (readable, off, total) {
        (true, Some(o), Some(t)) => r.read(o, t as usize).ok(),
        _ => None,
    };
    let mut parts = Vec::new();
    if let Some(e) = &entries {
        for (i, ent) in e.chunks(esz as usize).enumerate() {
            let t = ent.get(..16).unwrap_or(&[]);
            if t.len() < 16 || t.iter().all(|&c| c == 0) {
                continue;
            }
            let first = le64(ent, 32);
            let last = le64(ent, 40);
            // `last - first + 1` overflows for an entry spanning every
            // LBA (0 to 2^64 - 1, fuzz/regressions/partition): 2^64 sectors
            // do not fit, so it saturates (no real table comes close).
            let sectors = if last >= first {
                (last - first).saturating_add(1)
            } else {
                0
            };
            let units: Vec<u16> = (0..36)
                .map(|k| le16(ent, 56 + 2 * k))
                .take_while(|&u| u != 0)
                .collect();
            parts.push(GptPartition {
                number: i + 1,
                kind: guid(t),
                guid: guid(ent.get(16..32).unwrap_or(&[])),
                start_lba: first,
                sectors,
                name: String::from_utf16_lossy(&units),
            });
        }
    }
    Some(Gpt {
        kind: "gpt",
        sector_size: ss,
        disk_guid,
        header_crc_ok,
        entries_read: entries.is_some(),
        entries_crc_ok: entries.as_ref().is_some_and(|e| crc32(e) == le32(&h, 88)),
        partitions: parts,
        // Set by the caller, which knows the MBR.
        partitions_within_file: false,
        hybrid_mbr: false,
        protective_mbr_ok: false,
    })
}

/// A mixed-endian GUID as text.
fn guid(b: &[u8]) -> String {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        g(8),
        g(9),
        g(10),
        g(11),
        g(12),
        g(13),
        g(14),
        g(15)
    )
}

/// CRC-32 (IEEE 802.3), as GPT uses: `crc32fast`'s (PCLMULQDQ where the
/// CPU has it; already linked through flate2).
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr_entry(b: &mut [u8], i: usize, boot: u8, ptype: u8, start: u32, n: u32) {
        let o = 446 + 16 * i;
        b[o] = boot;
        b[o + 4] = ptype;
        b[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
        b[o + 12..o + 16].copy_from_slice(&n.to_le_bytes());
    }

    fn disk(gpt: bool) -> Vec<u8> {
        let mut b = vec![0u8; 64 * 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        if !gpt {
            mbr_entry(&mut b, 0, 0x80, 0x83, 2048, 4096);
            mbr_entry(&mut b, 1, 0, 0x82, 6144, 100);
            return b;
        }
        mbr_entry(&mut b, 0, 0, 0xEE, 1, 63);
        // entries at LBA 2: one EFI system partition
        let mut e = vec![0u8; 128 * 128];
        let esp = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        e[..16].copy_from_slice(&esp);
        e[32..40].copy_from_slice(&34u64.to_le_bytes());
        e[40..48].copy_from_slice(&40u64.to_le_bytes());
        for (k, c) in "EFI".encode_utf16().enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&c.to_le_bytes());
        }
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[56] = 0xAB;
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&e).to_le_bytes());
        let c = crc32(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        b[512..604].copy_from_slice(&h);
        b[1024..1024 + e.len()].copy_from_slice(&e);
        b
    }

    fn run(b: &[u8]) -> Option<Parsed> {
        let v = b.to_vec();
        parse(&Reader::new(&v, "partition"), "x").unwrap()
    }

    #[test]
    fn mbr() {
        let p = run(&disk(false)).unwrap();
        assert_eq!(p.kind, "mbr");
        let parts = p.info()["partitions"].as_array().unwrap().clone();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0]["type"], "0x83");
        assert_eq!(parts[0]["bootable"], true);
        assert_eq!(parts[1]["start_lba"], 6144);
        // This disk's partitions lie past its 64 sectors.
        assert_eq!(p.info()["partitions_within_file"], false);
        let mut b = disk(false);
        b.resize(6244 * 512, 0);
        assert_eq!(run(&b).unwrap().info()["partitions_within_file"], true);
        b.truncate(6244 * 512 - 1);
        assert_eq!(run(&b).unwrap().info()["partitions_within_file"], false);
        // Start + sectors overflowing u32 or u64 arithmetic is "no".
        let mut b = disk(false);
        mbr_entry(&mut b, 2, 0, 0x83, u32::MAX, u32::MAX);
        assert_eq!(run(&b).unwrap().info()["partitions_within_file"], false);
    }

    #[test]
    fn gpt_table() {
        let p = run(&disk(true)).unwrap();
        assert_eq!(p.kind, "gpt");
        assert_eq!(p.info()["header_crc_ok"], true);
        assert_eq!(p.info()["entries_crc_ok"], true);
        assert_eq!(p.info()["protective_mbr_ok"], true);
        assert_eq!(p.info()["partitions_within_file"], true);
        let parts = p.info()["partitions"].as_array().unwrap().clone();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(parts[0]["sectors"], 7);
        assert_eq!(parts[0]["name"], "EFI");
        // A corrupted header CRC is reported, not fatal.
        let mut b = disk(true);
        b[512 + 40] ^= 1;
        assert_eq!(run(&b).unwrap().info()["header_crc_ok"], false);
        // Hostile entry counts: not read.
        let mut b = disk(true);
        b[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        let p = run(&b).unwrap();
        assert_eq!(p.info()["entries_read"], false);
        assert_eq!(p.info()["partitions"], serde_json::json!([]));
        // Unread entries: where the partitions lie is not known.
        assert_eq!(p.info()["partitions_within_file"], false);
    }

    #[test]
    fn gpt_with_4k_sectors() {
        let d = disk(true);
        let mut b = vec![0u8; 64 * 4096];
        b[..512].copy_from_slice(&d[..512]);
        // Header at LBA 1 (4096), entries at LBA 2 (8192).
        b[4096..4096 + 92].copy_from_slice(&d[512..604]);
        b[8192..8192 + 128 * 128].copy_from_slice(&d[1024..1024 + 128 * 128]);
        let p = run(&b).unwrap();
        assert_eq!(p.kind, "gpt");
        assert_eq!(p.info()["sector_size"], 4096);
        assert_eq!(p.info()["header_crc_ok"], true);
        assert_eq!(p.info()["entries_crc_ok"], true);
        assert_eq!(p.info()["partitions"][0]["name"], "EFI");
    }

    #[test]
    fn not_tables() {
        assert!(run(&[0u8; 1024]).is_none());
        let mut b = disk(false);
        b[446] = 0x12; // bad boot flag
        assert!(run(&b).is_none());
        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        assert!(run(&b).is_none()); // no partitions
        let mut b = disk(false);
        b[0x10] = 2;
        b[0x15] = 0xF8; // FAT boot sector
        assert!(run(&b).is_none());
    }

    #[test]
    fn mutated_tables_never_panic() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        for i in 0..2000 {
            let mut b = disk(i % 2 == 0);
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % 1200) as usize;
                b[at] = (seed >> 40) as u8;
            }
            let _ = run(&b);
        }
    }

    #[test]
    fn every_prefix_is_safe() {
        for img in [disk(true), disk(false)] {
            for n in 0..img.len() {
                let _ = run(&img[..n]);
            }
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}

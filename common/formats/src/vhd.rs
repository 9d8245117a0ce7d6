//! VHD: the one typed layer for the format (Microsoft VHD 1.0 plus the
//! blktap extensions XenServer writes; notes/vhd.md section 2), and
//! qemu's reading of it (`vpc`, below).
//!
//! The layer: [`Footer`], [`DynamicHeader`] with its [`ParentLocator`]s,
//! the BAT ([`decode_bat`], [`encode_bat`]), sector bitmaps
//! ([`bitmap_bytes`], [`bit`]), blktap's batmap ([`BatmapHeader`],
//! [`batmap_checksum`]), [`Geometry`], UUIDs ([`uuid_string`],
//! [`parse_uuid`]) and the checksum ([`checksum`]). Each structure decodes
//! from any bytes (short input reads as zeros, nothing panics), encodes
//! back byte for byte, and names every field once. Policies (qemu's open
//! here; vhd-chain's check, read, layout, write and relink) decide what to
//! accept.
//!
//! **blktap's hidden-flag quirk has one home**, [`Footer::hidden_quirk`]:
//! early blktap set the hidden byte (footer offset 85) without updating
//! the checksum, so libvhd also accepts a footer whose checksum only
//! matches with that byte cleared, when the creator starts with `tap` and
//! its version is 0.1 or 1.1 (libvhd's `vhd_validate_footer`; `vhd-util
//! check` compares the two footer copies the same way). Every blktap-side
//! policy uses [`Footer::checksum_accepted`] and [`Footer::same_as`];
//! qemu knows nothing of it and uses [`Footer::checksum_valid`].
//!
//! **qemu's `vpc` driver** ([`open_qemu`], [`parse`]): the footer, the
//! dynamic disk header and the block allocation table, read the way qemu
//! 10.0's `block/vpc.c` opens an image.
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

use super::bytes::{be32, be64};
use super::{FormatError, Parsed, Reader};
use serde::Serialize;

// ---------------------------------------------------------------------
// The format
// ---------------------------------------------------------------------

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Bytes of a footer.
pub const FOOTER_LEN: usize = 512;
/// Bytes of a dynamic header.
pub const HEADER_LEN: usize = 1024;
/// The footer cookie.
pub const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// The footer cookie, for messages.
pub const FOOTER_COOKIE_NAME: &str = "conectix";
/// The dynamic header cookie.
pub const HEADER_COOKIE: [u8; 8] = *b"cxsparse";
/// The dynamic header cookie, for messages.
pub const HEADER_COOKIE_NAME: &str = "cxsparse";
/// The cookie blktap writes over a footer while a journaled resize runs.
pub const POISON_COOKIE: [u8; 8] = *b"v_poison";
/// The batmap header cookie.
pub const BATMAP_COOKIE: [u8; 8] = *b"tdbatmap";
/// A BAT entry for a block that is not allocated.
pub const UNALLOCATED: u32 = 0xffff_ffff;
/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 UTC).
pub const VHD_EPOCH: u64 = 946_684_800;
/// The footer's file format version and the header's version.
pub const FORMAT_VERSION: u32 = 0x0001_0000;
/// Footer feature bit that must be set.
pub const FEATURE_RESERVED: u32 = 0x2;
/// Footer feature bit: a temporary disk.
pub const FEATURE_TEMPORARY: u32 = 0x1;
/// The footer's data offset and the header's data offset when unused.
pub const NO_OFFSET: u64 = u64::MAX;
/// blktap's creator application.
pub const TAP_CREATOR: [u8; 4] = *b"tap\0";
/// blktap's current creator version (VHD_CURRENT_VERSION, 1.3).
pub const TAP_VERSION: u32 = 0x0001_0003;
/// The current batmap version (1.2).
pub const BATMAP_VERSION: u32 = 0x0001_0002;
/// Batmap version 1.1, whose checksum summed signed chars.
pub const BATMAP_VERSION_SIGNED: u32 = 0x0001_0001;
/// Parent locator entries in a header.
pub const LOCATORS: usize = 8;
/// Bytes of the header's parent name field (UTF-16BE).
pub const PARENT_NAME_LEN: usize = 512;

/// The VHD checksum: NOT of the byte sum, with the 4 bytes at `skip`
/// (the checksum field) taken as zero.
pub fn checksum(buf: &[u8], skip: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, b) in buf.iter().enumerate() {
        if i < skip || i >= skip + 4 {
            sum = sum.wrapping_add(u32::from(*b));
        }
    }
    !sum
}

/// `n` bytes rounded up to whole sectors.
pub fn padded(n: u64) -> u64 {
    n.div_ceil(SECTOR).saturating_mul(SECTOR)
}

fn arr<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(o..) {
        let n = s.len().min(N);
        a[..n].copy_from_slice(&s[..n]);
    }
    a
}

fn put(b: &mut [u8], o: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(o..o + v.len()) {
        d.copy_from_slice(v);
    }
}

/// A 16-byte id as lower-case hyphenated hex, in stored byte order
/// (bytes missing from a short slice read as zeros).
pub fn uuid_string(b: &[u8]) -> String {
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

/// A Microsoft GUID (as VHDX and VirtualBox store ids: the first three
/// fields little-endian) as lower-case hyphenated hex.
pub fn guid_string(b: &[u8]) -> String {
    let mut u = [0u8; 16];
    if let Some(s) = b.get(..16) {
        u.copy_from_slice(s);
    }
    u[..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    uuid_string(&u)
}

/// The inverse of [`uuid_string`] (hyphens anywhere are ignored).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|c| *c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let t = std::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(t, 16).ok()?;
    }
    Some(out)
}

/// The current time as a VHD timestamp (0 before 2000, saturating).
pub fn timestamp_now() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(unix.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

/// Why bytes are not a usable footer or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VhdError {
    /// No `conectix` cookie.
    #[error("no footer cookie (conectix)")]
    NoFooterCookie,
    /// The `v_poison` cookie: a journaled resize was interrupted.
    #[error("footer cookie is v_poison: an interrupted resize")]
    Poisoned,
    /// The footer checksum does not match (nor does blktap's quirk).
    #[error("footer checksum {stored:#010x}, computed {computed:#010x}")]
    FooterChecksum {
        /// As stored.
        stored: u32,
        /// As computed.
        computed: u32,
    },
    /// No `cxsparse` cookie.
    #[error("no dynamic header cookie (cxsparse)")]
    NoHeaderCookie,
    /// The dynamic header checksum does not match.
    #[error("dynamic header checksum {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// As stored.
        stored: u32,
        /// As computed.
        computed: u32,
    },
}

/// The footer's disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// 2.
    Fixed,
    /// 3.
    Dynamic,
    /// 4.
    Differencing,
}

impl DiskType {
    /// From the footer field (`None` for 0, 1, 5, 6 and the rest).
    pub fn from_code(code: u32) -> Option<DiskType> {
        match code {
            2 => Some(DiskType::Fixed),
            3 => Some(DiskType::Dynamic),
            4 => Some(DiskType::Differencing),
            _ => None,
        }
    }

    /// The footer field.
    pub fn code(self) -> u32 {
        match self {
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
        }
    }

    /// The name in records.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// Cylinders, heads, sectors per track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

impl Geometry {
    /// The largest geometry, 65535/16/255.
    pub const MAX: Geometry = Geometry {
        cylinders: 65535,
        heads: 16,
        sectors: 255,
    };

    /// The geometry for `size` bytes as the spec's appendix, blktap's
    /// `vhd_chs` and `vhd-util` compute it (notes section 2.4): rounded
    /// down, capped at [`Geometry::MAX`].
    pub fn for_size(size: u64) -> Geometry {
        let secs = size.div_ceil(SECTOR).clamp(1, 65535 * 16 * 255);
        let (spt, heads, cth);
        if secs >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cth = secs / spt;
        } else {
            let mut s = 17;
            let mut c = secs / s;
            let mut h = c.div_ceil(1024).max(4);
            if c >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                c = secs / s;
            }
            if c >= h * 1024 {
                s = 63;
                h = 16;
                c = secs / s;
            }
            spt = s;
            heads = h;
            cth = c;
        }
        // cylinders < 65536, heads <= 16, spt <= 255 by construction
        Geometry {
            cylinders: u16::try_from(cth / heads).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }

    /// The footer field: C<<16 | H<<8 | S (blktap compares these).
    pub fn packed(self) -> u32 {
        (u32::from(self.cylinders) << 16) | (u32::from(self.heads) << 8) | u32::from(self.sectors)
    }

    /// From the footer field.
    pub fn from_packed(v: u32) -> Geometry {
        let [c1, c0, heads, sectors] = v.to_be_bytes();
        Geometry {
            cylinders: u16::from_be_bytes([c1, c0]),
            heads,
            sectors,
        }
    }

    /// C*H*S, in sectors.
    pub fn total_sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }
}

impl std::fmt::Display for Geometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.cylinders, self.heads, self.sectors)
    }
}

/// Footer field offsets (notes section 2.2).
mod foot {
    pub const COOKIE: usize = 0;
    pub const FEATURES: usize = 8;
    pub const VERSION: usize = 12;
    pub const DATA_OFFSET: usize = 16;
    pub const TIMESTAMP: usize = 24;
    pub const CREATOR_APP: usize = 28;
    pub const CREATOR_VERSION: usize = 32;
    pub const CREATOR_OS: usize = 36;
    pub const ORIGINAL_SIZE: usize = 40;
    pub const CURRENT_SIZE: usize = 48;
    pub const GEOMETRY: usize = 56;
    pub const DISK_TYPE: usize = 60;
    pub const CHECKSUM: usize = 64;
    pub const UUID: usize = 68;
    pub const SAVED_STATE: usize = 84;
    pub const HIDDEN: usize = 85;
    pub const RESERVED: usize = 86;
}

/// Bytes 86..511 of a footer.
pub const FOOTER_RESERVED_LEN: usize = FOOTER_LEN - foot::RESERVED;

/// The 512-byte hard disk footer (notes section 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// `conectix` (or `v_poison`, or anything: decoding never refuses).
    pub cookie: [u8; 8],
    /// Feature bits ([`FEATURE_RESERVED`], [`FEATURE_TEMPORARY`]).
    pub features: u32,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The dynamic header's offset; [`NO_OFFSET`] for fixed disks.
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// `tap\0`, `qemu`, `vpc `, `win `, ...
    pub creator_app: [u8; 4],
    /// Major << 16 | minor.
    pub creator_version: u32,
    /// `Wi2k`, `Mac `, or 0 (blktap).
    pub creator_os: [u8; 4],
    /// Bytes, informational.
    pub original_size: u64,
    /// Bytes: the virtual size, for readers that trust it.
    pub current_size: u64,
    /// Cylinders, heads, sectors.
    pub geometry: Geometry,
    /// The raw type field ([`Footer::disk_type`] decodes it).
    pub disk_type_code: u32,
    /// As stored.
    pub checksum: u32,
    /// Unique id, raw bytes.
    pub uuid: [u8; 16],
    /// Saved state (0 or 1).
    pub saved_state: u8,
    /// blktap's hidden flag (0 or 1), in the spec's reserved area.
    pub hidden: u8,
    /// Bytes 86..511 (zero in the spec).
    pub reserved: [u8; FOOTER_RESERVED_LEN],
}

/// How a footer's checksum compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FooterChecksum {
    /// It matches.
    Valid,
    /// It matches only with the hidden byte cleared: blktap's quirk
    /// ([`Footer::hidden_quirk`]).
    HiddenQuirk,
    /// It does not match.
    Mismatch {
        /// As stored.
        stored: u32,
        /// As computed.
        computed: u32,
    },
}

impl Footer {
    /// A footer with the `conectix` cookie and every other field zero.
    pub fn blank() -> Footer {
        Footer {
            cookie: FOOTER_COOKIE,
            features: 0,
            format_version: 0,
            data_offset: 0,
            timestamp: 0,
            creator_app: [0; 4],
            creator_version: 0,
            creator_os: [0; 4],
            original_size: 0,
            current_size: 0,
            geometry: Geometry::default(),
            disk_type_code: 0,
            checksum: 0,
            uuid: [0; 16],
            saved_state: 0,
            hidden: 0,
            reserved: [0; FOOTER_RESERVED_LEN],
        }
    }

    /// Every field of `b` (up to 512 bytes; missing bytes read as zeros).
    pub fn decode(b: &[u8]) -> Footer {
        Footer {
            cookie: arr(b, foot::COOKIE),
            features: be32(b, foot::FEATURES),
            format_version: be32(b, foot::VERSION),
            data_offset: be64(b, foot::DATA_OFFSET),
            timestamp: be32(b, foot::TIMESTAMP),
            creator_app: arr(b, foot::CREATOR_APP),
            creator_version: be32(b, foot::CREATOR_VERSION),
            creator_os: arr(b, foot::CREATOR_OS),
            original_size: be64(b, foot::ORIGINAL_SIZE),
            current_size: be64(b, foot::CURRENT_SIZE),
            geometry: Geometry::from_packed(be32(b, foot::GEOMETRY)),
            disk_type_code: be32(b, foot::DISK_TYPE),
            checksum: be32(b, foot::CHECKSUM),
            uuid: arr(b, foot::UUID),
            saved_state: b.get(foot::SAVED_STATE).copied().unwrap_or(0),
            hidden: b.get(foot::HIDDEN).copied().unwrap_or(0),
            reserved: arr(b, foot::RESERVED),
        }
    }

    /// A footer blktap would use: cookie `conectix` and a checksum that
    /// matches, the hidden quirk allowed ([`Footer::checksum_accepted`]).
    pub fn parse(b: &[u8]) -> Result<Footer, VhdError> {
        let f = Footer::decode(b);
        if f.is_poisoned() {
            return Err(VhdError::Poisoned);
        }
        if !f.has_cookie() {
            return Err(VhdError::NoFooterCookie);
        }
        match f.checksum_state() {
            FooterChecksum::Valid | FooterChecksum::HiddenQuirk => Ok(f),
            FooterChecksum::Mismatch { stored, computed } => {
                Err(VhdError::FooterChecksum { stored, computed })
            }
        }
    }

    /// The 512 bytes, with the checksum as stored in [`Footer::checksum`].
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        put(&mut b, foot::COOKIE, &self.cookie);
        put(&mut b, foot::FEATURES, &self.features.to_be_bytes());
        put(&mut b, foot::VERSION, &self.format_version.to_be_bytes());
        put(&mut b, foot::DATA_OFFSET, &self.data_offset.to_be_bytes());
        put(&mut b, foot::TIMESTAMP, &self.timestamp.to_be_bytes());
        put(&mut b, foot::CREATOR_APP, &self.creator_app);
        put(
            &mut b,
            foot::CREATOR_VERSION,
            &self.creator_version.to_be_bytes(),
        );
        put(&mut b, foot::CREATOR_OS, &self.creator_os);
        put(
            &mut b,
            foot::ORIGINAL_SIZE,
            &self.original_size.to_be_bytes(),
        );
        put(&mut b, foot::CURRENT_SIZE, &self.current_size.to_be_bytes());
        put(
            &mut b,
            foot::GEOMETRY,
            &self.geometry.packed().to_be_bytes(),
        );
        put(&mut b, foot::DISK_TYPE, &self.disk_type_code.to_be_bytes());
        put(&mut b, foot::CHECKSUM, &self.checksum.to_be_bytes());
        put(&mut b, foot::UUID, &self.uuid);
        b[foot::SAVED_STATE] = self.saved_state;
        b[foot::HIDDEN] = self.hidden;
        put(&mut b, foot::RESERVED, &self.reserved);
        b
    }

    /// The checksum these fields should carry.
    pub fn computed_checksum(&self) -> u32 {
        checksum(&self.encode(), foot::CHECKSUM)
    }

    /// Store the computed checksum.
    pub fn seal(&mut self) {
        self.checksum = self.computed_checksum();
    }

    /// [`Footer::seal`], then [`Footer::encode`].
    pub fn sealed(&self) -> [u8; FOOTER_LEN] {
        let mut f = self.clone();
        f.seal();
        f.encode()
    }

    /// The cookie is `conectix`.
    pub fn has_cookie(&self) -> bool {
        self.cookie == FOOTER_COOKIE
    }

    /// The cookie is `v_poison`.
    pub fn is_poisoned(&self) -> bool {
        self.cookie == POISON_COOKIE
    }

    /// The disk type, when it is one of the three.
    pub fn disk_type(&self) -> Option<DiskType> {
        DiskType::from_code(self.disk_type_code)
    }

    /// The creator application starts with `tap` (libvhd compares three
    /// bytes).
    pub fn is_tap(&self) -> bool {
        self.creator_app.starts_with(b"tap")
    }

    /// blktap's hidden-flag quirk (module docs), the one rule: early
    /// blktap (`tap` 0.1 or 1.1) set `hidden` without updating the
    /// checksum, so such a footer may carry the checksum of the same
    /// footer with `hidden` cleared. Whether it does is
    /// [`Footer::checksum_state`]; whether two copies agree under it is
    /// [`Footer::same_as`].
    pub fn hidden_quirk(&self) -> bool {
        self.hidden != 0
            && self.is_tap()
            && (self.creator_version == 0x0000_0001 || self.creator_version == 0x0001_0001)
    }

    /// This footer with `hidden` cleared.
    fn unhidden(&self) -> Footer {
        Footer {
            hidden: 0,
            ..self.clone()
        }
    }

    /// How the stored checksum compares (module docs).
    pub fn checksum_state(&self) -> FooterChecksum {
        let computed = self.computed_checksum();
        if computed == self.checksum {
            FooterChecksum::Valid
        } else if self.hidden_quirk() && self.unhidden().computed_checksum() == self.checksum {
            FooterChecksum::HiddenQuirk
        } else {
            FooterChecksum::Mismatch {
                stored: self.checksum,
                computed,
            }
        }
    }

    /// The checksum matches exactly (qemu's rule).
    pub fn checksum_valid(&self) -> bool {
        self.checksum_state() == FooterChecksum::Valid
    }

    /// The checksum matches, or matches under blktap's hidden quirk
    /// (blktap's rule, and every blktap-side policy's).
    pub fn checksum_accepted(&self) -> bool {
        !matches!(self.checksum_state(), FooterChecksum::Mismatch { .. })
    }

    /// Whether `copy` (the footer copy at offset 0) says the same as this
    /// footer (the one at the end), allowing blktap's hidden quirk in the
    /// copy, as `vhd-util check` compares them.
    pub fn same_as(&self, copy: &Footer) -> bool {
        self == copy || (copy.hidden_quirk() && *self == copy.unhidden())
    }
}

/// Dynamic header field offsets (notes section 2.5).
mod head {
    pub const COOKIE: usize = 0;
    pub const DATA_OFFSET: usize = 8;
    pub const TABLE_OFFSET: usize = 16;
    pub const VERSION: usize = 24;
    pub const MAX_TABLE_ENTRIES: usize = 28;
    pub const BLOCK_SIZE: usize = 32;
    pub const CHECKSUM: usize = 36;
    pub const PARENT_UUID: usize = 40;
    pub const PARENT_TIMESTAMP: usize = 56;
    pub const RESERVED1: usize = 60;
    pub const PARENT_NAME: usize = 64;
    pub const LOCATORS: usize = 576;
    pub const LOCATOR_LEN: usize = 24;
    pub const RESERVED2: usize = 768;
}

/// Bytes 768..1023 of a dynamic header.
pub const HEADER_RESERVED_LEN: usize = HEADER_LEN - head::RESERVED2;

/// A parent locator platform code: `W2ku`.
pub const LOCATOR_W2KU: [u8; 4] = *b"W2ku";
/// `W2ru`.
pub const LOCATOR_W2RU: [u8; 4] = *b"W2ru";
/// `MacX`.
pub const LOCATOR_MACX: [u8; 4] = *b"MacX";
/// Every platform code the spec defines.
pub const LOCATOR_CODES: [[u8; 4]; 6] = [
    *b"Wi2r",
    *b"Wi2k",
    LOCATOR_W2RU,
    LOCATOR_W2KU,
    *b"Mac ",
    LOCATOR_MACX,
];

/// One of the header's eight parent locator entries (notes section 2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParentLocator {
    /// Platform code; all zero for an empty entry.
    pub code: [u8; 4],
    /// Data space: sectors below 512, bytes when a multiple of 512.
    pub data_space: u32,
    /// Payload bytes.
    pub data_length: u32,
    /// Zero.
    pub reserved: u32,
    /// Absolute file offset of the payload.
    pub data_offset: u64,
}

impl ParentLocator {
    fn decode(b: &[u8]) -> ParentLocator {
        ParentLocator {
            code: arr(b, 0),
            data_space: be32(b, 4),
            data_length: be32(b, 8),
            reserved: be32(b, 12),
            data_offset: be64(b, 16),
        }
    }

    fn encode(&self, b: &mut [u8]) {
        put(b, 0, &self.code);
        put(b, 4, &self.data_space.to_be_bytes());
        put(b, 8, &self.data_length.to_be_bytes());
        put(b, 12, &self.reserved.to_be_bytes());
        put(b, 16, &self.data_offset.to_be_bytes());
    }

    /// No platform code.
    pub fn is_empty(&self) -> bool {
        self.code == [0; 4]
    }

    /// The platform code as text (lossy).
    pub fn code_string(&self) -> String {
        String::from_utf8_lossy(&self.code).into_owned()
    }

    /// libvhd's `vhd_parent_locator_size`: the data space in bytes (below
    /// 512 it counts sectors, a multiple of 512 bytes); 0 when invalid.
    pub fn space_bytes(&self) -> u64 {
        let s = u64::from(self.data_space);
        if s < SECTOR {
            s * SECTOR
        } else if s.is_multiple_of(SECTOR) {
            s
        } else {
            0
        }
    }

    /// The payload decoded as a path: `W2ku`/`W2ru` UTF-16LE, `MacX`
    /// UTF-8 (lossy); `None` for other codes.
    pub fn decode_path(&self, data: &[u8]) -> Option<String> {
        match self.code {
            LOCATOR_W2KU | LOCATOR_W2RU => Some(utf16(data, false)),
            LOCATOR_MACX => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        }
    }

    /// The payload libvhd writes for `rel` (a path relative to the child,
    /// `./NAME` or `../dir/NAME`): `MacX` is `file://` and the path in
    /// UTF-8 (`vhd_macx_encode_location`); `W2ku`/`W2ru` get `.\` in front
    /// of a relative path (replacing a leading `./`), every `/` turned
    /// into `\`, in UTF-16LE without BOM or terminator
    /// (`vhd_w2u_encode_location`). `None` for other codes.
    pub fn encode_path(code: [u8; 4], rel: &str) -> Option<Vec<u8>> {
        match code {
            LOCATOR_MACX => Some(format!("file://{rel}").into_bytes()),
            LOCATOR_W2KU | LOCATOR_W2RU => {
                let s = if rel.starts_with('/') {
                    rel.to_string()
                } else {
                    format!(".\\{}", rel.strip_prefix("./").unwrap_or(rel))
                };
                Some(
                    s.replace('/', "\\")
                        .encode_utf16()
                        .flat_map(u16::to_le_bytes)
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

/// The 1024-byte dynamic disk header (notes section 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicHeader {
    /// `cxsparse` (decoding never refuses).
    pub cookie: [u8; 8],
    /// Unused: [`NO_OFFSET`].
    pub data_offset: u64,
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// BAT entries.
    pub max_table_entries: u32,
    /// Data bytes per block (a power of two).
    pub block_size: u32,
    /// As stored.
    pub checksum: u32,
    /// The parent footer's unique id (differencing disks).
    pub parent_uuid: [u8; 16],
    /// The parent's modification time (VHD epoch).
    pub parent_timestamp: u32,
    /// Bytes 60..63 (zero).
    pub reserved1: u32,
    /// The parent's name, UTF-16BE, NUL-padded.
    pub parent_name: [u8; PARENT_NAME_LEN],
    /// The parent locator entries.
    pub locators: [ParentLocator; LOCATORS],
    /// Bytes 768..1023 (zero).
    pub reserved2: [u8; HEADER_RESERVED_LEN],
}

impl DynamicHeader {
    /// A header with the `cxsparse` cookie and every other field zero.
    pub fn blank() -> DynamicHeader {
        DynamicHeader {
            cookie: HEADER_COOKIE,
            data_offset: 0,
            table_offset: 0,
            version: 0,
            max_table_entries: 0,
            block_size: 0,
            checksum: 0,
            parent_uuid: [0; 16],
            parent_timestamp: 0,
            reserved1: 0,
            parent_name: [0; PARENT_NAME_LEN],
            locators: [ParentLocator::default(); LOCATORS],
            reserved2: [0; HEADER_RESERVED_LEN],
        }
    }

    /// Every field of `b` (up to 1024 bytes; missing bytes read as zeros).
    pub fn decode(b: &[u8]) -> DynamicHeader {
        let mut locators = [ParentLocator::default(); LOCATORS];
        for (i, l) in locators.iter_mut().enumerate() {
            let at = head::LOCATORS + head::LOCATOR_LEN * i;
            *l = ParentLocator::decode(&arr::<{ head::LOCATOR_LEN }>(b, at));
        }
        DynamicHeader {
            cookie: arr(b, head::COOKIE),
            data_offset: be64(b, head::DATA_OFFSET),
            table_offset: be64(b, head::TABLE_OFFSET),
            version: be32(b, head::VERSION),
            max_table_entries: be32(b, head::MAX_TABLE_ENTRIES),
            block_size: be32(b, head::BLOCK_SIZE),
            checksum: be32(b, head::CHECKSUM),
            parent_uuid: arr(b, head::PARENT_UUID),
            parent_timestamp: be32(b, head::PARENT_TIMESTAMP),
            reserved1: be32(b, head::RESERVED1),
            parent_name: arr(b, head::PARENT_NAME),
            locators,
            reserved2: arr(b, head::RESERVED2),
        }
    }

    /// A header blktap would use: cookie `cxsparse` and a matching
    /// checksum (qemu checks neither the checksum nor anything else here).
    pub fn parse(b: &[u8]) -> Result<DynamicHeader, VhdError> {
        let h = DynamicHeader::decode(b);
        if !h.has_cookie() {
            return Err(VhdError::NoHeaderCookie);
        }
        let computed = h.computed_checksum();
        if computed != h.checksum {
            return Err(VhdError::HeaderChecksum {
                stored: h.checksum,
                computed,
            });
        }
        Ok(h)
    }

    /// The 1024 bytes, with the checksum as stored.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put(&mut b, head::COOKIE, &self.cookie);
        put(&mut b, head::DATA_OFFSET, &self.data_offset.to_be_bytes());
        put(&mut b, head::TABLE_OFFSET, &self.table_offset.to_be_bytes());
        put(&mut b, head::VERSION, &self.version.to_be_bytes());
        put(
            &mut b,
            head::MAX_TABLE_ENTRIES,
            &self.max_table_entries.to_be_bytes(),
        );
        put(&mut b, head::BLOCK_SIZE, &self.block_size.to_be_bytes());
        put(&mut b, head::CHECKSUM, &self.checksum.to_be_bytes());
        put(&mut b, head::PARENT_UUID, &self.parent_uuid);
        put(
            &mut b,
            head::PARENT_TIMESTAMP,
            &self.parent_timestamp.to_be_bytes(),
        );
        put(&mut b, head::RESERVED1, &self.reserved1.to_be_bytes());
        put(&mut b, head::PARENT_NAME, &self.parent_name);
        for (i, l) in self.locators.iter().enumerate() {
            let at = head::LOCATORS + head::LOCATOR_LEN * i;
            l.encode(&mut b[at..at + head::LOCATOR_LEN]);
        }
        put(&mut b, head::RESERVED2, &self.reserved2);
        b
    }

    /// The checksum these fields should carry.
    pub fn computed_checksum(&self) -> u32 {
        checksum(&self.encode(), head::CHECKSUM)
    }

    /// The stored checksum matches.
    pub fn checksum_valid(&self) -> bool {
        self.computed_checksum() == self.checksum
    }

    /// Store the computed checksum.
    pub fn seal(&mut self) {
        self.checksum = self.computed_checksum();
    }

    /// [`DynamicHeader::seal`], then [`DynamicHeader::encode`].
    pub fn sealed(&self) -> [u8; HEADER_LEN] {
        let mut h = self.clone();
        h.seal();
        h.encode()
    }

    /// The cookie is `cxsparse`.
    pub fn has_cookie(&self) -> bool {
        self.cookie == HEADER_COOKIE
    }

    /// The parent name up to the first NUL, if it is valid UTF-16BE.
    pub fn parent_name(&self) -> Result<String, std::string::FromUtf16Error> {
        String::from_utf16(&utf16_units(&self.parent_name, true))
    }

    /// The parent name, invalid UTF-16 replaced.
    pub fn parent_name_lossy(&self) -> String {
        utf16(&self.parent_name, true)
    }

    /// Set the parent name (UTF-16BE, the rest zeroed); `Err(bytes
    /// needed)` when it does not fit in [`PARENT_NAME_LEN`] bytes.
    pub fn set_parent_name(&mut self, name: &str) -> Result<(), usize> {
        let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        if units.len() > PARENT_NAME_LEN {
            return Err(units.len());
        }
        self.parent_name = [0; PARENT_NAME_LEN];
        self.parent_name[..units.len()].copy_from_slice(&units);
        Ok(())
    }

    /// Bytes of the BAT on disk ([`DynamicHeader::max_table_entries`]
    /// entries, padded to whole sectors).
    pub fn bat_bytes(&self) -> u64 {
        padded(u64::from(self.max_table_entries) * 4)
    }
}

/// Bytes of a block's sector bitmap: one bit per sector, whole sectors.
pub fn bitmap_bytes(block_size: u64) -> u64 {
    padded((block_size / SECTOR).div_ceil(8))
}

/// Bit `i` of a sector bitmap or batmap (MSB first); false past the end.
pub fn bit(map: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|b| map.get(b))
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

/// Set bit `i` (MSB first), if it is in `map`.
pub fn set_bit(map: &mut [u8], i: u64) {
    if let Some(b) = usize::try_from(i / 8).ok().and_then(|b| map.get_mut(b)) {
        *b |= 0x80 >> (i % 8);
    }
}

/// BAT entries from their on-disk bytes (a trailing partial entry is
/// ignored).
pub fn decode_bat(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|e| u32::from_be_bytes([e[0], e[1], e[2], e[3]]))
        .collect()
}

/// `entries` BAT entries on disk, padded with zeros to whole sectors;
/// entries past `bat` are [`UNALLOCATED`].
pub fn encode_bat(bat: &[u32], entries: usize) -> Vec<u8> {
    let len = usize::try_from(padded(entries as u64 * 4)).unwrap_or(0);
    let mut b = vec![0u8; len];
    for i in 0..entries {
        let e = bat.get(i).copied().unwrap_or(UNALLOCATED);
        put(&mut b, i * 4, &e.to_be_bytes());
    }
    b
}

/// Batmap header field offsets (notes section 2.9).
mod bmap {
    pub const COOKIE: usize = 0;
    pub const MAP_OFFSET: usize = 8;
    pub const MAP_SECTORS: usize = 16;
    pub const VERSION: usize = 20;
    pub const CHECKSUM: usize = 24;
    pub const REST: usize = 28;
}

/// Bytes 28..511 of a batmap header (marker, keyhash, reserved).
pub const BATMAP_REST_LEN: usize = 512 - bmap::REST;

/// blktap's batmap header: one sector right after the BAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatmapHeader {
    /// `tdbatmap`.
    pub cookie: [u8; 8],
    /// Absolute offset of the map.
    pub map_offset: u64,
    /// Sectors of the map.
    pub map_sectors: u32,
    /// [`BATMAP_VERSION`] (or 1.1).
    pub version: u32,
    /// [`batmap_checksum`] of the map.
    pub checksum: u32,
    /// Marker, keyhash and reserved bytes, kept as they are.
    pub rest: [u8; BATMAP_REST_LEN],
}

impl BatmapHeader {
    /// Every field of `b` (missing bytes read as zeros).
    pub fn decode(b: &[u8]) -> BatmapHeader {
        BatmapHeader {
            cookie: arr(b, bmap::COOKIE),
            map_offset: be64(b, bmap::MAP_OFFSET),
            map_sectors: be32(b, bmap::MAP_SECTORS),
            version: be32(b, bmap::VERSION),
            checksum: be32(b, bmap::CHECKSUM),
            rest: arr(b, bmap::REST),
        }
    }

    /// A version-1.2 header for a map of `map_sectors` at `map_offset`.
    pub fn new(map_offset: u64, map_sectors: u32) -> BatmapHeader {
        BatmapHeader {
            cookie: BATMAP_COOKIE,
            map_offset,
            map_sectors,
            version: BATMAP_VERSION,
            checksum: 0,
            rest: [0; BATMAP_REST_LEN],
        }
    }

    /// The 512 bytes.
    pub fn encode(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        put(&mut b, bmap::COOKIE, &self.cookie);
        put(&mut b, bmap::MAP_OFFSET, &self.map_offset.to_be_bytes());
        put(&mut b, bmap::MAP_SECTORS, &self.map_sectors.to_be_bytes());
        put(&mut b, bmap::VERSION, &self.version.to_be_bytes());
        put(&mut b, bmap::CHECKSUM, &self.checksum.to_be_bytes());
        put(&mut b, bmap::REST, &self.rest);
        b
    }

    /// The cookie is `tdbatmap`.
    pub fn has_cookie(&self) -> bool {
        self.cookie == BATMAP_COOKIE
    }

    /// Bytes of the map.
    pub fn map_bytes(&self) -> u64 {
        u64::from(self.map_sectors) * SECTOR
    }
}

/// Bytes of the map a batmap checksum covers for a disk of
/// `current_size`: `current_size >> 24`, in whole sectors, at least one.
pub fn batmap_checksum_len(current_size: u64) -> u64 {
    padded((current_size >> 24).max(1))
}

/// The batmap checksum of `map` for a disk of `current_size` bytes: NOT
/// of the byte sum over [`batmap_checksum_len`] bytes (missing bytes are
/// zeros); version 1.1 summed signed chars, a bug 1.2 fixed.
pub fn batmap_checksum(map: &[u8], current_size: u64, version: u32) -> u32 {
    let n = usize::try_from(batmap_checksum_len(current_size)).unwrap_or(usize::MAX);
    let signed = version == BATMAP_VERSION_SIGNED;
    let sum = map.iter().take(n).fold(0u32, |a, &b| {
        let v = if signed {
            (b as i8) as i32 as u32
        } else {
            u32::from(b)
        };
        a.wrapping_add(v)
    });
    !sum
}

fn utf16_units(b: &[u8], big_endian: bool) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .take_while(|u| *u != 0)
        .collect()
}

/// UTF-16 code units to a string (lossy), stopping at the first NUL.
fn utf16(b: &[u8], big_endian: bool) -> String {
    String::from_utf16_lossy(&utf16_units(b, big_endian))
}

// ---------------------------------------------------------------------
// qemu's open (`vpc`): a policy over the layer
// ---------------------------------------------------------------------

/// Largest BAT a reader holds in memory (16 Mi entries; a 2040 GiB disk
/// with 2 MiB blocks needs 1 Mi): the bound every VHD policy shares.
pub const MAX_BAT_BYTES: u64 = 64 << 20;
/// qemu's VHD_MAX_SECTORS: 2040 GiB.
const MAX_SECTORS: u64 = 0xff00_0000;
/// qemu refuses more BAT entries than `INT_MAX / 4`.
const MAX_TABLE_ENTRIES: u32 = 0x1fff_ffff;
/// Largest locator payload we decode.
const MAX_LOCATOR: u32 = 4096;

/// What qemu's open found (module docs, "Where qemu looks").
#[derive(Debug, Clone)]
pub struct QemuOpen {
    /// The footer qemu uses (checksum valid).
    pub footer: Footer,
    /// Found at offset 0 (opened as dynamic) rather than at the end
    /// (opened as fixed).
    pub at_start: bool,
    /// The virtual size in sectors, as qemu computes it.
    pub total_sectors: u64,
    /// Whether that came from the CHS geometry (else `current_size`).
    pub size_from_chs: bool,
    /// For `at_start`: whether the last 512 bytes hold a valid footer,
    /// and whether it equals the copy at 0.
    pub end_footer: Option<(bool, bool)>,
    /// For `at_start`: the dynamic header, where it is, and the BAT
    /// entries that are allocated.
    pub dynamic: Option<QemuDynamic>,
}

/// The dynamic part of [`QemuOpen`].
#[derive(Debug, Clone)]
pub struct QemuDynamic {
    /// Its offset (the footer's data offset).
    pub offset: u64,
    /// The header (checksum not checked, as qemu).
    pub header: DynamicHeader,
    /// BAT entries not [`UNALLOCATED`].
    pub allocated: u64,
}

/// The file length as qemu's format drivers see it: whole sectors.
fn qemu_len(r: &Reader) -> u64 {
    r.len().div_ceil(512) * 512
}

/// Read `len` bytes at `offset`, zero-filling past the end of the file as
/// qemu's block layer does.
fn read_padded(r: &Reader, offset: u64, len: usize) -> Result<Vec<u8>, FormatError> {
    let mut v = r.read_upto(offset, len)?;
    v.resize(len, 0);
    Ok(v)
}

/// Open the bytes the way qemu 10's `vpc` driver does (module docs):
/// `Ok(None)` when they are not a VHD qemu would open.
pub fn open_qemu(r: &Reader) -> Result<Option<QemuOpen>, FormatError> {
    let head = r.read_upto(0, FOOTER_LEN)?;
    if head.starts_with(&FOOTER_COOKIE) {
        return open_footer(r, Footer::decode(&head), true).map(Some);
    }
    let len = qemu_len(r);
    if len < FOOTER_LEN as u64 {
        return Ok(None);
    }
    let f = Footer::decode(&read_padded(r, len - FOOTER_LEN as u64, FOOTER_LEN)?);
    // A raw disk that happens to end in something like a footer stays raw
    // unless qemu -f vpc would open it: cookie, checksum, type fixed (qemu:
    // "invalid VPC image" otherwise) and a size qemu accepts. qemu's probe
    // never picks this case, so an error here must not stop probing.
    if !f.has_cookie() || !f.checksum_valid() || f.disk_type() != Some(DiskType::Fixed) {
        return Ok(None);
    }
    Ok(open_footer(r, f, false).ok())
}

/// Everything after qemu has found its footer.
fn open_footer(r: &Reader, footer: Footer, at_start: bool) -> Result<QemuOpen, FormatError> {
    if !footer.checksum_valid() {
        return Err(r.invalid("incorrect footer checksum"));
    }
    let chs = footer.geometry.total_sectors();
    let use_chs = footer.creator_app == *b"vpc " || footer.creator_app == *b"qemu";
    // qemu compares the product, not the three fields.
    let size_from_chs = use_chs && chs != Geometry::MAX.total_sectors();
    let total_sectors = if size_from_chs {
        chs
    } else {
        footer.current_size / 512
    };
    if total_sectors > MAX_SECTORS {
        return Err(r.invalid(format!(
            "virtual size of {total_sectors} sectors exceeds 2040 GiB"
        )));
    }
    let mut open = QemuOpen {
        footer,
        at_start,
        total_sectors,
        size_from_chs,
        end_footer: None,
        dynamic: None,
    };
    if at_start {
        let len = qemu_len(r);
        open.end_footer = Some(if len >= FOOTER_LEN as u64 {
            let end = Footer::decode(&read_padded(r, len - FOOTER_LEN as u64, FOOTER_LEN)?);
            (end.has_cookie() && end.checksum_valid(), end == open.footer)
        } else {
            (false, false)
        });
        open.dynamic = Some(open_dynamic(r, &open.footer, total_sectors)?);
    }
    Ok(open)
}

/// The dynamic-disk part of qemu's open.
fn open_dynamic(
    r: &Reader,
    footer: &Footer,
    total_sectors: u64,
) -> Result<QemuDynamic, FormatError> {
    let len = qemu_len(r);
    let data_offset = footer.data_offset;
    let hdr = DynamicHeader::decode(&read_padded(r, data_offset, HEADER_LEN)?);
    if !hdr.has_cookie() {
        return Err(r.invalid(format!(
            "no dynamic header (cxsparse) at offset {data_offset}"
        )));
    }
    let block_size = hdr.block_size;
    if !block_size.is_power_of_two() || block_size < 512 {
        return Err(r.invalid(format!("invalid block size {block_size}")));
    }
    let bitmap_size = (u64::from(block_size) / (8 * 512) + 511) & !511;
    let entries = hdr.max_table_entries;
    if total_sectors * 512 / u64::from(block_size) > 0xffff_ffff {
        return Err(r.invalid("too many blocks"));
    }
    if entries > MAX_TABLE_ENTRIES {
        return Err(r.invalid(format!("max table entries too large ({entries})")));
    }
    if u64::from(entries) * u64::from(block_size) < total_sectors * 512 {
        return Err(r.invalid("block allocation table too small for the virtual size"));
    }
    let table_offset = hdr.table_offset;
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
        for v in decode_bat(&read_padded(r, table_offset + off, n)?) {
            if v != UNALLOCATED {
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
    Ok(QemuDynamic {
        offset: data_offset,
        header: hdr,
        allocated,
    })
}

/// Four bytes as a string (NULs kept, invalid UTF-8 replaced).
fn tag(b: &[u8; 4]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn disk_type_name(code: u32) -> &'static str {
    DiskType::from_code(code).map_or("unknown", DiskType::name)
}

/// What a VHD reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Footer and header facts (module docs).
    pub header: Header,
}

/// The footer (and dynamic header) facts, as reported (module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// `start` or `end`.
    pub footer_source: &'static str,
    /// `dynamic` or `fixed`: how qemu opens it.
    pub opened_as: &'static str,
    /// The disk type's name (`unknown` for other codes).
    pub disk_type: &'static str,
    /// The disk type field.
    pub disk_type_code: u32,
    /// Creator application (four bytes as text).
    pub creator_app: String,
    /// `major.minor`.
    pub creator_version: String,
    /// Creator host OS (four bytes as text).
    pub creator_os: String,
    /// Original size field.
    pub original_size: u64,
    /// Current size field.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: GeometryFacts,
    /// `chs` or `current_size`: where qemu takes the size from.
    pub size_source: &'static str,
    /// Always true (a footer whose checksum fails is not opened).
    pub footer_checksum_ok: bool,
    /// The UUID.
    pub uuid: String,
    /// The timestamp field.
    pub timestamp: u32,
    /// Saved-state flag.
    pub saved_state: bool,
    /// blktap's hidden flag.
    pub hidden: bool,
    /// Footer at the start: whether the end copy is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_footer_ok: Option<bool>,
    /// Footer at the start: whether the end copy equals it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_footer_matches: Option<bool>,
    /// The dynamic header's facts (dynamic and differencing disks).
    #[serde(flatten)]
    pub dynamic: Option<DynamicFacts>,
}

/// CHS geometry as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeometryFacts {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

/// Dynamic-header facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicFacts {
    /// Where it is.
    pub dynamic_header_offset: u64,
    /// Whether its checksum holds (qemu does not check).
    pub dynamic_header_checksum_ok: bool,
    /// Block size.
    pub block_size: u32,
    /// BAT entries.
    pub max_table_entries: u32,
    /// BAT offset.
    pub table_offset: u64,
    /// BAT entries allocated.
    pub allocated_blocks: u64,
    /// A differencing disk's parent.
    #[serde(flatten)]
    pub parent: Option<ParentFacts>,
}

/// A differencing disk's parent, as its header names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParentFacts {
    /// Parent UUID.
    pub parent_uuid: String,
    /// Parent timestamp.
    pub parent_timestamp: u32,
    /// Parent name (UTF-16BE, up to the first NUL).
    pub parent_name: String,
    /// The non-empty parent locators.
    pub parent_locators: Vec<LocatorFacts>,
}

/// A parent locator entry and its decoded path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocatorFacts {
    /// Platform code (four bytes as text).
    pub platform: String,
    /// Data space field.
    pub data_space: u32,
    /// Payload bytes.
    pub data_length: u32,
    /// Payload offset.
    pub data_offset: u64,
    /// The decoded path; null when not inside the file or too large.
    pub path: Option<String>,
}

/// Parse the VHD footer (and dynamic header), if the bytes are VHD: the
/// [`open_qemu`] facts as `info` (module docs).
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    let Some(open) = open_qemu(r)? else {
        return Ok(None);
    };
    let footer = &open.footer;
    let disk_type = footer.disk_type_code;
    let g = footer.geometry;

    let mut cluster_size = 0u32;
    let mut dynamic = None;
    if let Some(d) = &open.dynamic {
        let hdr = &d.header;
        cluster_size = hdr.block_size;
        let mut parent = None;
        if footer.disk_type() == Some(DiskType::Differencing) {
            let mut locs = Vec::new();
            for l in hdr.locators.iter().filter(|l| !l.is_empty()) {
                locs.push(LocatorFacts {
                    platform: tag(&l.code),
                    data_space: l.data_space,
                    data_length: l.data_length,
                    data_offset: l.data_offset,
                    path: locator_path(r, l)?,
                });
            }
            parent = Some(ParentFacts {
                parent_uuid: uuid_string(&hdr.parent_uuid),
                parent_timestamp: hdr.parent_timestamp,
                parent_name: hdr.parent_name_lossy(),
                parent_locators: locs,
            });
        }
        dynamic = Some(DynamicFacts {
            dynamic_header_offset: d.offset,
            dynamic_header_checksum_ok: hdr.checksum_valid(),
            block_size: hdr.block_size,
            max_table_entries: hdr.max_table_entries,
            table_offset: hdr.table_offset,
            allocated_blocks: d.allocated,
            parent,
        });
    }
    let header = Header {
        footer_source: if open.at_start { "start" } else { "end" },
        opened_as: if open.at_start { "dynamic" } else { "fixed" },
        disk_type: disk_type_name(disk_type),
        disk_type_code: disk_type,
        creator_app: tag(&footer.creator_app),
        creator_version: format!(
            "{}.{}",
            footer.creator_version >> 16,
            footer.creator_version & 0xffff
        ),
        creator_os: tag(&footer.creator_os),
        original_size: footer.original_size,
        current_size: footer.current_size,
        geometry: GeometryFacts {
            cylinders: g.cylinders,
            heads: g.heads,
            sectors: g.sectors,
        },
        size_source: if open.size_from_chs {
            "chs"
        } else {
            "current_size"
        },
        footer_checksum_ok: true,
        uuid: uuid_string(&footer.uuid),
        timestamp: footer.timestamp,
        saved_state: footer.saved_state != 0,
        hidden: footer.hidden != 0,
        end_footer_ok: open.end_footer.map(|(ok, _)| ok),
        end_footer_matches: open.end_footer.map(|(_, m)| m),
        dynamic,
    };
    Ok(Some(Parsed {
        kind: super::Format::Vpc,
        qemu_probes: open.at_start,
        virtual_size: open.total_sectors * 512,
        // qemu's vpc_get_info: the block size unless the type field says
        // fixed; qemu keeps it in an `int`, so 2 GiB prints as negative.
        cluster_size: (disk_type != 2 && cluster_size != 0)
            .then_some(i64::from(cluster_size as i32)),
        encrypted: false,
        dirty_flag: Some(false),
        backing: None,
        data_file: None,
        details: super::Details::Vpc(Box::new(Details { header })),
    }))
}

/// Decode a parent locator's payload, if it is small and inside the file.
fn locator_path(r: &Reader, l: &ParentLocator) -> Result<Option<String>, FormatError> {
    let (off, len) = (l.data_offset, l.data_length);
    if len == 0 || len > MAX_LOCATOR || off.checked_add(u64::from(len)).is_none_or(|e| e > r.len())
    {
        return Ok(None);
    }
    let data = r.read(off, len as usize)?;
    Ok(l.decode_path(&data))
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
        let c = checksum(f, 64);
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
        let c = checksum(&h, 36);
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
        p.info()["virtual_size"].as_u64().unwrap()
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
            assert_eq!(p.info()["cluster_size"], 2 << 20);
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
        assert_eq!(p.info()["header"]["original_size"], 1 << 20);
    }

    #[test]
    fn fixed_vhd_is_found_at_the_end_and_not_probed() {
        let mut img = vec![0u8; 4096];
        img.extend_from_slice(&footer(b"qemu", 4096, (0, 0, 0), 2));
        // chs product 0 for creator qemu gives 0: use win to check size
        let p = parse_buf(&img).unwrap().unwrap();
        assert!(!p.qemu_probes);
        assert_eq!(p.info()["header"]["footer_source"], "end");
        assert!(p.info().get("cluster_size").is_none());
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
        assert_eq!(p.info()["cluster_size"], -2_147_483_648i64);
        // cookie at 0 with type 2: opened as dynamic, no cluster size
        let mut f = footer(b"win ", SIX_MIB, SIX_CHS, 2);
        put64(&mut f, 16, 512);
        fix_footer(&mut f);
        let img = dynamic(&f, 3, 2 << 20);
        let p = parse_buf(&img).unwrap().unwrap();
        assert!(p.info().get("cluster_size").is_none());
        assert_eq!(p.info()["header"]["opened_as"], "dynamic");
        assert_eq!(p.info()["header"]["disk_type"], "fixed");
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
        assert_eq!(p.info()["header"]["allocated_blocks"], 1);
        assert_eq!(p.info()["header"]["end_footer_ok"], true);
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
        assert!(p.info().get("backing_filename").is_none());
        let hd = &p.info()["header"];
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

    /// A valid `tap` footer, hidden set the old-blktap way (checksum of
    /// the footer with hidden 0).
    fn quirk_footer(version: u32) -> Footer {
        let mut f = Footer::decode(&footer(b"tap\0", SIX_MIB, SIX_CHS, 3));
        f.creator_version = version;
        f.seal();
        f.hidden = 1;
        f
    }

    #[test]
    fn footer_and_header_round_trip_byte_for_byte() {
        let mut f = footer(b"tap\0", SIX_MIB, SIX_CHS, 4);
        f[85] = 1;
        f[300] = 9;
        assert_eq!(Footer::decode(&f).encode().to_vec(), f);
        let img = dynamic(&f, 3, 2 << 20);
        let mut h = img[512..1536].to_vec();
        h[600] = 7;
        h[900] = 3;
        assert_eq!(DynamicHeader::decode(&h).encode().to_vec(), h);
        // short input reads as zeros
        assert_eq!(Footer::decode(&f[..10]).features, 0);
        let mut b = vec![0u8; 512];
        b[..8].copy_from_slice(b"tdbatmap");
        b[100] = 5;
        assert_eq!(BatmapHeader::decode(&b).encode().to_vec(), b);
    }

    #[test]
    fn the_hidden_quirk_is_one_rule() {
        for v in [0x0000_0001, 0x0001_0001] {
            let f = quirk_footer(v);
            assert_eq!(f.checksum_state(), FooterChecksum::HiddenQuirk);
            assert!(f.checksum_accepted() && !f.checksum_valid());
            assert!(Footer::parse(&f.encode()).is_ok());
            // the end footer with hidden cleared and the quirky copy agree
            let mut end = f.clone();
            end.hidden = 0;
            assert!(end.same_as(&f));
            assert!(!f.same_as(&end));
        }
        // not for other versions, other creators, or hidden 0
        let f = quirk_footer(0x0001_0003);
        assert!(!f.checksum_accepted());
        assert!(matches!(
            Footer::parse(&f.encode()),
            Err(VhdError::FooterChecksum { .. })
        ));
        let mut f = quirk_footer(0x0001_0001);
        f.creator_app = *b"qemu";
        assert!(!f.checksum_accepted());
        // libvhd compares three bytes: `tap` with anything after it
        let mut f = Footer::decode(&footer(b"tapX", SIX_MIB, SIX_CHS, 3));
        f.creator_version = 0x0001_0001;
        f.seal();
        f.hidden = 1;
        assert!(f.checksum_accepted());
        // qemu's open knows nothing of it
        let img = dynamic(&quirk_footer(0x0001_0001).encode(), 3, 2 << 20);
        assert!(parse_buf(&img).is_err());
    }

    #[test]
    fn poison_and_cookies_are_typed() {
        let mut f = footer(b"tap\0", SIX_MIB, SIX_CHS, 3);
        f[..8].copy_from_slice(&POISON_COOKIE);
        assert_eq!(Footer::parse(&f), Err(VhdError::Poisoned));
        assert_eq!(Footer::parse(&[0u8; 512]), Err(VhdError::NoFooterCookie));
        assert_eq!(
            DynamicHeader::parse(&[0u8; 1024]),
            Err(VhdError::NoHeaderCookie)
        );
        let img = dynamic(&footer(b"tap\0", SIX_MIB, SIX_CHS, 3), 3, 2 << 20);
        let mut h = img[512..1536].to_vec();
        assert!(DynamicHeader::parse(&h).is_ok());
        h[100] ^= 1;
        assert!(matches!(
            DynamicHeader::parse(&h),
            Err(VhdError::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn geometry_matches_the_notes_table() {
        for (size, want) in [
            (1u64 << 20, (30, 4, 17)),
            (6 << 20, (180, 4, 17)),
            (10 << 20, (301, 4, 17)),
            (1 << 30, (2080, 16, 63)),
            (2 << 30, (4161, 16, 63)),
            (16 << 30, (33288, 16, 63)),
            (127 << 30, (65278, 16, 255)),
            (200 << 30, (65535, 16, 255)),
        ] {
            let g = Geometry::for_size(size);
            assert_eq!((g.cylinders, g.heads, g.sectors), want, "{size}");
            assert_eq!(Geometry::from_packed(g.packed()), g);
        }
        assert_eq!(Geometry::for_size(200 << 30), Geometry::MAX);
    }

    #[test]
    fn uuids_locators_bats_and_batmaps() {
        let b: Vec<u8> = (0u8..16).collect();
        let s = uuid_string(&b);
        assert_eq!(s, "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(parse_uuid(&s).unwrap().to_vec(), b);
        assert!(parse_uuid("xyz").is_none());

        let l = |space| ParentLocator {
            data_space: space,
            ..ParentLocator::default()
        };
        assert_eq!(l(1).space_bytes(), 512);
        assert_eq!(l(512).space_bytes(), 512);
        assert_eq!(l(1024).space_bytes(), 1024);
        assert_eq!(l(513).space_bytes(), 0);
        let macx = ParentLocator::encode_path(LOCATOR_MACX, "./base.vhd").unwrap();
        assert_eq!(macx, b"file://./base.vhd");
        let w = ParentLocator::encode_path(LOCATOR_W2RU, "../y/b.vhd").unwrap();
        let loc = ParentLocator {
            code: LOCATOR_W2RU,
            ..ParentLocator::default()
        };
        assert_eq!(loc.decode_path(&w).unwrap(), ".\\..\\y\\b.vhd");
        assert!(ParentLocator::encode_path(*b"Mac ", "x").is_none());

        let bat = encode_bat(&[7, UNALLOCATED], 3);
        assert_eq!(bat.len(), 512);
        assert_eq!(decode_bat(&bat[..12]), vec![7, UNALLOCATED, UNALLOCATED]);
        assert_eq!(bitmap_bytes(2 << 20), 512);
        assert_eq!(bitmap_bytes(512), 512);
        let mut m = vec![0u8; 2];
        set_bit(&mut m, 9);
        assert!(bit(&m, 9) && !bit(&m, 8) && !bit(&m, 100));

        // 1.1 summed signed chars
        let map = [0x80u8, 1];
        assert_eq!(batmap_checksum(&map, 1 << 20, BATMAP_VERSION), !0x81);
        assert_eq!(
            batmap_checksum(&map, 1 << 20, BATMAP_VERSION_SIGNED),
            !(0xffff_ff80u32.wrapping_add(1))
        );
    }
}

//! qcow2 header parser, following what qemu's `qcow2_do_open()` reads and
//! checks when `qemu-img info` opens an image (read-only, no I/O to the
//! guest data, no backing file): the header, the header extensions, the
//! backing file name, the snapshot table and the bitmap directory.
//!
//! `Ok(None)` unless the file starts with `QFI\xfb` and a version >= 2
//! (version 1 is [`super::qcow`]). Versions above 3 are an `Err`, as are
//! headers qemu refuses to open and tables that lie outside the file.
//! Deliberate differences from qemu, which zero-fills reads past the end of
//! the file: the refcount table, the active L1 table, the header
//! extensions, the backing name, the snapshot table and the bitmap
//! directory must lie inside the file. And unknown incompatible feature bits
//! (bit 5 and up) do not make the parse fail; they are reported in
//! `header.unknown_incompatible_features` so callers can refuse the image
//! themselves (qemu-img refuses to open it).
//!
//! Info keys (qemu's JSON shape, snake_case): `format` (`qcow2`),
//! `virtual_size`, `cluster_size`, `encrypted`, `dirty_flag`,
//! `backing_filename`, `full_backing_filename`, `backing_filename_format`,
//! `snapshots` (only when there are some) and `format_specific`
//! `{type: "qcow2", data}` with `compat`, `compression_type`,
//! `refcount_bits`, and for version 3 `lazy_refcounts`, `corrupt`,
//! `extended_l2`, `bitmaps` (when there are some), `data_file` (when the
//! data-file extension exists), `data_file_raw` (when the external data
//! file feature is set); `encrypt` (`{format: "aes"}` or the LUKS fields of
//! [`super::luks`] with `format: "luks"`) when qemu prints it. Names that
//! are not UTF-8 are kept lossily and also as base64 in `<key>_bytes`
//! (`backing_filename_bytes`, `full_backing_filename_bytes`,
//! `data_file_bytes`, snapshot `id_bytes` and
//! `name_bytes`, bitmap `name_bytes`).
//!
//! `header` (facts qemu does not print):
//! - `version`: 2 or 3;
//! - `incompatible_features`, `compatible_features`, `autoclear_features`:
//!   the feature bitmaps (0 for version 2);
//! - `unknown_incompatible_features`: incompatible bits qemu 10 does not
//!   know (bit 5 and up), 0 when none;
//! - `crypt_method`: 0 none, 1 AES, 2 LUKS;
//! - `header_length`: header length (72 for version 2);
//! - `cluster_bits`, `refcount_order`, `compression_type` (raw byte);
//! - `backing_file_offset`, `backing_file_size`;
//! - `l1_size`, `l1_table_offset`, `refcount_table_offset`,
//!   `refcount_table_clusters`;
//! - `nb_snapshots`, `snapshots_offset`;
//! - `has_data_file`: incompatible bit 2 (external data file) is set;
//! - `nb_bitmaps`: bitmaps in use (0 when the extension is absent or was
//!   invalidated by a program without bitmap support), and with bitmaps
//!   `bitmap_directory_offset`, `bitmap_directory_size`;
//! - `extensions`: every header extension as `{magic, length}`;
//! - `feature_names`: the feature-name table extension, if present, as
//!   `[{type, bit, name}]` (type 0 incompatible, 1 compatible, 2
//!   autoclear);
//! - `luks`: with LUKS encryption and a crypto header extension, the
//!   `header` facts of [`super::luks`] for the embedded LUKS header.

use super::bytes::{be16, be32, be64, cstr};
use super::luks;
use super::{Backing, FormatError, FormatSpecific, Parsed, Reader, text};
use serde::Serialize;

const MAGIC: &[u8; 4] = b"QFI\xfb";
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const MAX_SNAPSHOTS: u64 = 65536;
const MAX_SNAPSHOTS_SIZE: u64 = 1024 * MAX_SNAPSHOTS;
const MAX_SNAPSHOT_EXTRA_DATA: u32 = 1024;
const MAX_REFTABLE_SIZE: u64 = 8 << 20;
const MAX_L1_SIZE: u64 = 32 << 20;
const MAX_BITMAPS: u32 = 65535;
const MAX_BITMAP_DIRECTORY_SIZE: u64 = 1024 * 65535;
const MAX_BACKING_NAME: u64 = 1023;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_FEATURE_TABLE: u32 = 0x6803_F857;
const EXT_CRYPTO_HEADER: u32 = 0x0537_BE77;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_DATA_FILE: u32 = 0x4441_5441;

const INCOMPAT_DIRTY: u64 = 1;
const INCOMPAT_CORRUPT: u64 = 2;
const INCOMPAT_DATA_FILE: u64 = 4;
const INCOMPAT_COMPRESSION: u64 = 8;
const INCOMPAT_EXTL2: u64 = 16;
const INCOMPAT_MASK: u64 = 0x1f;
const COMPAT_LAZY_REFCOUNTS: u64 = 1;
const AUTOCLEAR_BITMAPS: u64 = 1;
const AUTOCLEAR_DATA_FILE_RAW: u64 = 2;

const BME_FLAG_IN_USE: u32 = 1;
const BME_FLAG_AUTO: u32 = 2;
const BME_RESERVED_FLAGS: u32 = 0xffff_fffc;
const BME_MAX_TABLE_SIZE: u32 = 0x0800_0000;
const BME_MAX_PHYS_SIZE: u64 = 0x2000_0000;
const BME_TABLE_RESERVED_MASK: u64 = 0xff00_0000_0000_01fe;
const BME_TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// `len` bytes at `off`, all inside the file (lengths come from headers,
/// so they are checked before any allocation).
pub(crate) fn read_exact(
    r: &Reader,
    off: u64,
    len: u64,
    what: &str,
) -> Result<Vec<u8>, FormatError> {
    if off.checked_add(len).is_none_or(|e| e > r.len()) {
        return Err(r.truncated(format!(
            "{what}: {len} bytes at offset {off} are beyond the end of the file"
        )));
    }
    let n =
        usize::try_from(len).map_err(|_| r.invalid(format!("{what}: length {len} too large")))?;
    r.read(off, n)
}

/// qemu's `qcow2_validate_table()`.
fn validate_table(
    r: &Reader,
    offset: u64,
    entries: u64,
    entry_len: u64,
    max_bytes: u64,
    cluster_size: u64,
    what: &str,
) -> Result<(), FormatError> {
    if entries > max_bytes / entry_len {
        return Err(r.invalid(format!("{what} too large")));
    }
    let size = entries * entry_len;
    if (i64::MAX as u64 - size) < offset || !offset.is_multiple_of(cluster_size) {
        return Err(r.invalid(format!("{what} offset invalid")));
    }
    Ok(())
}

/// What a qcow2 image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// Internal snapshots (none: not printed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Snapshot>,
    /// qemu's `format-specific` (`type: qcow2`).
    pub format_specific: FormatSpecific<Data>,
    /// Header facts qemu does not print.
    pub header: Header,
}

/// An internal snapshot, as `qemu-img info` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Its id (lossy text, at most 127 bytes).
    pub id: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_bytes: Option<String>,
    /// Its name (lossy text, at most 255 bytes).
    pub name: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<String>,
    /// VM state size; QAPI prints int64, so values >= 2^63 are negative.
    pub vm_state_size: i64,
    /// Creation time, seconds.
    pub date_sec: u32,
    /// Creation time, nanoseconds.
    pub date_nsec: u32,
    /// Guest clock, seconds.
    pub vm_clock_sec: u64,
    /// Guest clock, nanoseconds.
    pub vm_clock_nsec: u64,
    /// Instruction count, where recorded (int64 as QAPI prints it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icount: Option<i64>,
}

/// qemu's `ImageInfoSpecificQCow2`, snake_case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Data {
    /// `0.10` (v2) or `1.1` (v3).
    pub compat: &'static str,
    /// `zlib` or `zstd`.
    pub compression_type: &'static str,
    /// Refcount width in bits.
    pub refcount_bits: u64,
    /// v3 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_refcounts: Option<bool>,
    /// v3 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<bool>,
    /// v3 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_l2: Option<bool>,
    /// Persistent dirty bitmaps (v3; none: not printed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bitmaps: Vec<Bitmap>,
    /// The external data file's name (v3; lossy text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file_bytes: Option<String>,
    /// With a data file (v3): whether it is raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file_raw: Option<bool>,
    /// The encryption, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Encrypt>,
}

/// qcow2 encryption: `aes` (legacy) or `luks` with its header's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Encrypt {
    /// `aes` or `luks`.
    pub format: &'static str,
    /// For `luks`: qemu's LUKS facts.
    #[serde(flatten)]
    pub luks: Option<luks::Info>,
}

/// A persistent dirty bitmap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bitmap {
    /// Its name (lossy text).
    pub name: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<String>,
    /// Bytes per bit.
    pub granularity: u64,
    /// `in-use`, `auto`.
    pub flags: Vec<&'static str>,
}

/// qcow2 header facts qemu does not print (for the acceptance checks).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// Incompatible bits qemu does not know.
    pub unknown_incompatible_features: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Header length in bytes.
    pub header_length: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// log2 of the refcount width.
    pub refcount_order: u32,
    /// Compression type byte.
    pub compression_type: u8,
    /// Where the backing name is.
    pub backing_file_offset: u64,
    /// Its length.
    pub backing_file_size: u32,
    /// Active L1 entries.
    pub l1_size: u32,
    /// Active L1 offset.
    pub l1_table_offset: u64,
    /// Refcount table offset.
    pub refcount_table_offset: u64,
    /// Refcount table clusters.
    pub refcount_table_clusters: u32,
    /// Snapshot count.
    pub nb_snapshots: u32,
    /// Snapshot table offset.
    pub snapshots_offset: u64,
    /// Whether the external data file bit is set.
    pub has_data_file: bool,
    /// Bitmaps in the bitmaps extension (0 without one).
    pub nb_bitmaps: u32,
    /// With bitmaps: the directory's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmap_directory_offset: Option<u64>,
    /// With bitmaps: the directory's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmap_directory_size: Option<u64>,
    /// Every header extension, in order.
    pub extensions: Vec<Extension>,
    /// The feature-name table, if present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_names: Option<Vec<FeatureName>>,
    /// The embedded LUKS header's facts (LUKS encryption).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luks: Option<luks::Header>,
}

/// A header extension's magic and length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extension {
    /// Its magic.
    pub magic: u32,
    /// Its length in bytes.
    pub length: u32,
}

/// An entry of the feature-name table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    #[serde(rename = "type")]
    pub kind: u8,
    /// The bit.
    pub bit: u8,
    /// Its name (lossy text).
    pub name: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<String>,
}

struct Bitmaps {
    nb: u32,
    dir_size: u64,
    dir_offset: u64,
}

/// Parse the qcow2 header, if the bytes are qcow2.
pub fn parse(r: &Reader, name: &str) -> Result<Option<Parsed>, FormatError> {
    if r.len() < 8 {
        return Ok(None);
    }
    let head = r.read(0, 8)?;
    if head.get(..4) != Some(MAGIC.as_slice()) {
        return Ok(None);
    }
    let version = be32(&head, 4);
    if version < 2 {
        return Ok(None);
    }
    if version > 3 {
        return Err(r.invalid(format!("unsupported qcow2 version {version}")));
    }
    let fixed = if version == 2 { 72 } else { 104 };
    if r.len() < fixed {
        return Err(r.truncated(format!("header: {fixed} bytes, file has {}", r.len())));
    }
    let h = r.read_upto(0, 112)?;

    let backing_offset = be64(&h, 8);
    let backing_size = be32(&h, 16);
    let cluster_bits = be32(&h, 20);
    let size = be64(&h, 24);
    let crypt_method = be32(&h, 32);
    let l1_size = be32(&h, 36);
    let l1_offset = be64(&h, 40);
    let reftable_offset = be64(&h, 48);
    let reftable_clusters = be32(&h, 56);
    let nb_snapshots = be32(&h, 60);
    let snapshots_offset = be64(&h, 64);
    let (incompat, compat, autoclear, refcount_order, header_length) = if version == 2 {
        (0, 0, 0, 4, 72)
    } else {
        (
            be64(&h, 72),
            be64(&h, 80),
            be64(&h, 88),
            be32(&h, 96),
            be32(&h, 100),
        )
    };

    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(r.invalid(format!("unsupported cluster size: 2^{cluster_bits}")));
    }
    let cluster_size = 1u64 << cluster_bits;
    if version == 3 && header_length < 104 {
        return Err(r.invalid("header too short"));
    }
    if u64::from(header_length) > cluster_size {
        return Err(r.invalid("header exceeds cluster size"));
    }
    if u64::from(header_length) > r.len() {
        return Err(r.truncated(format!(
            "header length {header_length} is beyond the end of the file"
        )));
    }
    if backing_offset > cluster_size {
        return Err(r.invalid("invalid backing file offset"));
    }
    let ext_end = if backing_offset != 0 {
        backing_offset
    } else {
        cluster_size
    };

    let compression_type = if header_length > 104 {
        h.get(104).copied().unwrap_or(0)
    } else {
        0
    };
    let compression = match compression_type {
        0 => "zlib",
        1 => "zstd",
        t => return Err(r.invalid(format!("unknown compression type: {t}"))),
    };
    if (compression_type == 0) == (incompat & INCOMPAT_COMPRESSION != 0) {
        return Err(r.invalid("compression type and incompatible feature bit 3 disagree"));
    }
    let unknown_incompat = incompat & !INCOMPAT_MASK;
    let extended_l2 = incompat & INCOMPAT_EXTL2 != 0;
    if extended_l2 && cluster_bits < MIN_CLUSTER_BITS + 5 {
        return Err(r.invalid("unsupported subcluster size"));
    }
    if refcount_order > 6 {
        return Err(r.invalid("reference count entry width too large; may not exceed 64 bits"));
    }
    if crypt_method > 2 {
        return Err(r.invalid(format!("unsupported encryption method {crypt_method}")));
    }

    if reftable_clusters == 0 {
        return Err(r.invalid("image does not contain a reference count table"));
    }
    let rc = u64::from(reftable_clusters);
    validate_table(
        r,
        reftable_offset,
        rc,
        cluster_size,
        MAX_REFTABLE_SIZE,
        cluster_size,
        "reference count table",
    )?;
    if reftable_offset + rc * cluster_size > r.len() {
        return Err(r.truncated("reference count table is beyond the end of the file"));
    }
    let nbs = u64::from(nb_snapshots);
    validate_table(
        r,
        snapshots_offset,
        nbs,
        40,
        40 * MAX_SNAPSHOTS,
        cluster_size,
        "snapshot table",
    )?;
    let l1 = u64::from(l1_size);
    validate_table(
        r,
        l1_offset,
        l1,
        8,
        MAX_L1_SIZE,
        cluster_size,
        "active L1 table",
    )?;
    if l1_offset + l1 * 8 > r.len() {
        return Err(r.truncated("active L1 table is beyond the end of the file"));
    }
    let l2_bits = cluster_bits - if extended_l2 { 4 } else { 3 };
    let shift = cluster_bits + l2_bits;
    let l1_vm_state_index = size.wrapping_add((1u64 << shift) - 1) >> shift;
    if l1_vm_state_index > i32::MAX as u64 {
        return Err(r.invalid("image is too big"));
    }
    if l1 < l1_vm_state_index {
        return Err(r.invalid("L1 table is too small"));
    }
    let total_sectors = size / 512;
    if total_sectors > (i64::MAX as u64) / 512 {
        return Err(r.invalid("image is too big"));
    }
    let virtual_size = total_sectors * 512;

    // Header extensions.
    let mut backing_format: Option<Vec<u8>> = None;
    let mut data_file: Option<Vec<u8>> = None;
    let mut feature_names: Option<Vec<FeatureName>> = None;
    let mut encrypt: Option<Encrypt> = None;
    let mut luks_header: Option<luks::Header> = None;
    let mut bitmaps: Option<Bitmaps> = None;
    let mut extensions = Vec::new();
    let mut off = u64::from(header_length);
    while off < ext_end {
        let eh = read_exact(r, off, 8, "header extension")?;
        let magic = be32(&eh, 0);
        let len = be32(&eh, 4);
        off += 8;
        if off > ext_end || u64::from(len) > ext_end - off {
            return Err(r.invalid("header extension too large"));
        }
        if magic == EXT_END {
            break;
        }
        extensions.push(Extension { magic, length: len });
        let len64 = u64::from(len);
        match magic {
            EXT_BACKING_FORMAT => {
                if len >= 16 {
                    return Err(r.invalid(format!("backing format extension: len={len} too large")));
                }
                let b = read_exact(r, off, len64, "backing format")?;
                backing_format = Some(cstr(&b).to_vec());
            }
            EXT_FEATURE_TABLE => {
                let b = read_exact(r, off, len64, "feature name table")?;
                let names = b
                    .chunks_exact(48)
                    .map(|ent| {
                        let (name, name_bytes) = text(cstr(&ent[2..]));
                        FeatureName {
                            kind: ent[0],
                            bit: ent[1],
                            name,
                            name_bytes,
                        }
                    })
                    .collect();
                feature_names = Some(names);
            }
            EXT_CRYPTO_HEADER => {
                if crypt_method != 2 {
                    return Err(
                        r.invalid("crypto header extension only expected with LUKS encryption")
                    );
                }
                if len != 16 {
                    return Err(
                        r.invalid(format!("crypto header extension size {len}, expected 16"))
                    );
                }
                let b = read_exact(r, off, 16, "crypto header extension")?;
                let (c_off, c_len) = (be64(&b, 0), be64(&b, 8));
                if !c_off.is_multiple_of(cluster_size) {
                    return Err(r.invalid(
                        "encryption header offset is not a multiple of the cluster size",
                    ));
                }
                if c_len < luks::HEADER_LEN as u64 {
                    return Err(r.invalid("request for data outside of the encryption header"));
                }
                let lh = read_exact(r, c_off, luks::HEADER_LEN as u64, "LUKS header")?;
                let l = luks::parse_header(r, &lh)?;
                encrypt = Some(Encrypt {
                    format: "luks",
                    luks: Some(l.info),
                });
                luks_header = Some(l.header);
            }
            EXT_BITMAPS => {
                if len != 24 {
                    return Err(r.invalid("bitmaps extension: invalid extension length"));
                }
                if autoclear & AUTOCLEAR_BITMAPS != 0 {
                    let b = read_exact(r, off, 24, "bitmaps extension")?;
                    let nb = be32(&b, 0);
                    if be32(&b, 4) != 0 {
                        return Err(r.invalid("bitmaps extension: reserved field is not zero"));
                    }
                    let dir_size = be64(&b, 8);
                    let dir_offset = be64(&b, 16);
                    if nb > MAX_BITMAPS {
                        return Err(
                            r.invalid(format!("image has {nb} bitmaps, more than {MAX_BITMAPS}"))
                        );
                    }
                    if nb == 0 {
                        return Err(r.invalid("bitmaps extension with zero bitmaps"));
                    }
                    if !dir_offset.is_multiple_of(cluster_size) {
                        return Err(r.invalid("bitmaps extension: invalid bitmap directory offset"));
                    }
                    if dir_size > MAX_BITMAP_DIRECTORY_SIZE {
                        return Err(r.invalid("bitmaps extension: bitmap directory too large"));
                    }
                    bitmaps = Some(Bitmaps {
                        nb,
                        dir_size,
                        dir_offset,
                    });
                }
            }
            EXT_DATA_FILE => {
                let b = read_exact(r, off, len64, "data file name")?;
                data_file = Some(cstr(&b).to_vec());
            }
            _ => {}
        }
        off += (len64 + 7) & !7;
    }

    let has_data_file = incompat & INCOMPAT_DATA_FILE != 0;
    let data_file_raw = autoclear & AUTOCLEAR_DATA_FILE_RAW != 0;
    // qemu-img info (BDRV_O_NO_IO) never opens the data file, so neither a
    // missing data-file name nor data-file-raw without a data file is an
    // error there.
    if crypt_method == 2 && encrypt.is_none() {
        return Err(r.invalid("missing CRYPTO header for crypt method 2"));
    }
    if crypt_method == 1 {
        encrypt = Some(Encrypt {
            format: "aes",
            luks: None,
        });
    }

    // Backing file name.
    let mut backing: Option<Vec<u8>> = None;
    if backing_offset != 0 {
        let len = u64::from(backing_size);
        if len > MAX_BACKING_NAME.min(cluster_size - backing_offset) {
            return Err(r.invalid("backing file name too long"));
        }
        let b = read_exact(r, backing_offset, len, "backing file name")?;
        let n = cstr(&b);
        if !n.is_empty() {
            backing = Some(n.to_vec());
        }
    }

    let snapshots = read_snapshots(r, snapshots_offset, nb_snapshots)?;
    let bitmap_list = match &bitmaps {
        Some(b) => read_bitmaps(r, b, cluster_size, virtual_size)?,
        None => Vec::new(),
    };

    // Assemble qemu's info.
    let v3 = version == 3;
    let (data_file_text, data_file_bytes) = match data_file.as_deref().filter(|_| v3) {
        Some(d) => {
            let (t, b) = text(d);
            (Some(t), b)
        }
        None => (None, None),
    };
    let data = Data {
        compat: if version == 2 { "0.10" } else { "1.1" },
        compression_type: compression,
        refcount_bits: 1u64 << refcount_order,
        lazy_refcounts: v3.then_some(compat & COMPAT_LAZY_REFCOUNTS != 0),
        corrupt: v3.then_some(incompat & INCOMPAT_CORRUPT != 0),
        extended_l2: v3.then_some(extended_l2),
        bitmaps: if v3 { bitmap_list } else { Vec::new() },
        data_file: data_file_text,
        data_file_bytes,
        data_file_raw: (v3 && has_data_file).then_some(data_file_raw),
        encrypt,
    };
    let header = Header {
        version,
        incompatible_features: incompat,
        compatible_features: compat,
        autoclear_features: autoclear,
        unknown_incompatible_features: unknown_incompat,
        crypt_method,
        header_length,
        cluster_bits,
        refcount_order,
        compression_type,
        backing_file_offset: backing_offset,
        backing_file_size: backing_size,
        l1_size,
        l1_table_offset: l1_offset,
        refcount_table_offset: reftable_offset,
        refcount_table_clusters: reftable_clusters,
        nb_snapshots,
        snapshots_offset,
        has_data_file,
        nb_bitmaps: bitmaps.as_ref().map_or(0, |b| b.nb),
        bitmap_directory_offset: bitmaps.as_ref().map(|b| b.dir_offset),
        bitmap_directory_size: bitmaps.as_ref().map(|b| b.dir_size),
        extensions,
        feature_names,
        luks: luks_header,
    };
    let backing = backing.map(|b| {
        let bk = Backing::new(name, &b);
        match backing_format.as_ref().filter(|f| !f.is_empty()) {
            Some(f) => bk.with_format(f),
            None => bk,
        }
    });
    Ok(Some(Parsed {
        kind: super::Format::Qcow2,
        qemu_probes: true,
        virtual_size,
        cluster_size: Some(1i64 << cluster_bits),
        encrypted: crypt_method != 0,
        dirty_flag: Some(incompat & INCOMPAT_DIRTY != 0),
        backing,
        // The data file is named only in a v3 header (as qemu reports it).
        data_file: data_file.filter(|_| v3),
        details: super::Details::Qcow2(Box::new(Details {
            snapshots,
            format_specific: FormatSpecific {
                kind: "qcow2",
                data,
            },
            header,
        })),
    }))
}

/// The snapshot table, as `qcow2_read_snapshots()` reads it and
/// `qemu-img info` prints it.
fn read_snapshots(r: &Reader, table: u64, nb: u32) -> Result<Vec<Snapshot>, FormatError> {
    let mut out = Vec::new();
    let mut off = table;
    let mut table_length: u64 = 0;
    for i in 0..nb {
        table_length = table_length.next_multiple_of(8);
        off = off
            .checked_next_multiple_of(8)
            .ok_or_else(|| r.invalid("snapshot table offset overflows"))?;
        let h = read_exact(r, off, 40, "snapshot table")?;
        off += 40;
        let id_size = u64::from(be16(&h, 12));
        let name_size = u64::from(be16(&h, 14));
        let date_sec = be32(&h, 16);
        let date_nsec = be32(&h, 20);
        let vm_clock = be64(&h, 24);
        let mut vm_state_size = u64::from(be32(&h, 32));
        let extra_size = be32(&h, 36);
        if extra_size > MAX_SNAPSHOT_EXTRA_DATA {
            return Err(r.invalid(format!(
                "too much extra metadata in snapshot table entry {i}"
            )));
        }
        let extra_size = u64::from(extra_size);
        let known = extra_size.min(24);
        let extra = read_exact(r, off, known, "snapshot extra data")?;
        if extra_size >= 8 {
            vm_state_size = be64(&extra, 0);
        }
        let icount = if extra_size >= 24 {
            be64(&extra, 16)
        } else {
            u64::MAX
        };
        off += extra_size;
        let id = read_exact(r, off, id_size, "snapshot id")?;
        off += id_size;
        let nm = read_exact(r, off, name_size, "snapshot name")?;
        off += name_size;
        table_length += 40 + extra_size + id_size + name_size;
        if table_length > MAX_SNAPSHOTS_SIZE || off - table > i32::MAX as u64 {
            return Err(r.invalid("snapshot table is too big"));
        }
        // qemu copies id and name into char[128] and char[256].
        let id = cstr(&id);
        let nm = cstr(&nm);
        let (id, id_bytes) = text(&id[..id.len().min(127)]);
        let (name, name_bytes) = text(&nm[..nm.len().min(255)]);
        out.push(Snapshot {
            id,
            id_bytes,
            name,
            name_bytes,
            // QAPI prints these as int64, so values >= 2^63 come out negative.
            vm_state_size: vm_state_size as i64,
            date_sec,
            date_nsec,
            vm_clock_sec: vm_clock / 1_000_000_000,
            vm_clock_nsec: vm_clock % 1_000_000_000,
            icount: (icount != u64::MAX).then_some(icount as i64),
        });
    }
    Ok(out)
}

/// The bitmap directory, checked as `qcow2_load_dirty_bitmaps()` does.
fn read_bitmaps(
    r: &Reader,
    b: &Bitmaps,
    cluster_size: u64,
    len: u64,
) -> Result<Vec<Bitmap>, FormatError> {
    if b.dir_size == 0 {
        return Err(r.invalid("requested bitmap directory size is zero"));
    }
    let dir = read_exact(r, b.dir_offset, b.dir_size, "bitmap directory")?;
    let mut out = Vec::new();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut pos: usize = 0;
    let mut count: u32 = 0;
    while pos < dir.len() {
        if pos + 24 > dir.len() {
            return Err(r.invalid("broken bitmap directory"));
        }
        count += 1;
        if count > b.nb {
            return Err(r.invalid("more bitmaps found than specified in header extension"));
        }
        let e = &dir[pos..];
        let table_offset = be64(e, 0);
        let table_size = be32(e, 8);
        let flags = be32(e, 12);
        let ty = e[16];
        let gran = u32::from(e[17]);
        let name_size = usize::from(be16(e, 18));
        let extra = be32(e, 20);
        let entry = (24 + name_size as u64 + u64::from(extra)).next_multiple_of(8);
        if pos as u64 + entry > dir.len() as u64 {
            return Err(r.invalid("broken bitmap directory"));
        }
        if extra != 0 {
            return Err(r.invalid("bitmap extra data is not supported"));
        }
        if table_size == 0
            || table_offset == 0
            || !table_offset.is_multiple_of(cluster_size)
            || table_size > BME_MAX_TABLE_SIZE
            || !(9..=31).contains(&gran)
            || flags & BME_RESERVED_FLAGS != 0
            || name_size > 1023
            || ty != 1
        {
            return Err(r.invalid("bitmap doesn't satisfy the constraints"));
        }
        let phys = u64::from(table_size) * cluster_size;
        if phys > BME_MAX_PHYS_SIZE {
            return Err(r.invalid("bitmap doesn't satisfy the constraints"));
        }
        let in_use = flags & BME_FLAG_IN_USE != 0;
        if !in_use && len > ((phys * 8) << gran) {
            return Err(r.invalid("bitmap doesn't satisfy the constraints"));
        }
        let name = cstr(&e[24..24 + name_size]).to_vec();
        let dup = seen.contains(&name);
        if !in_use {
            if dup {
                return Err(r.invalid("bitmap already exists"));
            }
            // The bitmap table must have exactly the size the data needs.
            let need = if len == 0 {
                0
            } else {
                (((len - 1) >> gran) >> 6) + 1
            } * 8;
            if need.div_ceil(cluster_size) != u64::from(table_size) {
                return Err(r.invalid("bitmap table has the wrong size"));
            }
            let t = r.read_upto(table_offset, table_size as usize * 8)?;
            for ent in t.chunks_exact(8) {
                let v = be64(ent, 0);
                let o = v & BME_TABLE_OFFSET_MASK;
                if v & BME_TABLE_RESERVED_MASK != 0
                    || (o != 0 && (v & 1 != 0 || !o.is_multiple_of(cluster_size)))
                {
                    return Err(r.invalid("invalid bitmap table entry"));
                }
            }
        }
        if !dup {
            seen.push(name.clone());
        }
        let mut fl = Vec::new();
        if in_use {
            fl.push("in-use");
        }
        if flags & BME_FLAG_AUTO != 0 {
            fl.push("auto");
        }
        let (name, name_bytes) = text(&name);
        out.push(Bitmap {
            name,
            name_bytes,
            granularity: 1u64 << gran,
            flags: fl,
        });
        pos += entry as usize;
    }
    if count != b.nb {
        return Err(r.invalid("less bitmaps found than specified in header extension"));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const CS: usize = 4096;

    fn put32(v: &mut [u8], o: usize, x: u32) {
        v[o..o + 4].copy_from_slice(&x.to_be_bytes());
    }
    fn put64(v: &mut [u8], o: usize, x: u64) {
        v[o..o + 8].copy_from_slice(&x.to_be_bytes());
    }
    fn put16(v: &mut [u8], o: usize, x: u16) {
        v[o..o + 2].copy_from_slice(&x.to_be_bytes());
    }

    /// Push a header extension at `*off`.
    fn ext(v: &mut [u8], off: &mut usize, magic: u32, data: &[u8]) {
        put32(v, *off, magic);
        put32(v, *off + 4, data.len() as u32);
        v[*off + 8..*off + 8 + data.len()].copy_from_slice(data);
        *off += 8 + data.len().next_multiple_of(8);
    }

    /// A 64 MiB qcow2 v3 image with 4 KiB clusters: header and extensions
    /// in cluster 0 (backing name "base.raw" at 3000), refcount table in
    /// cluster 1, L1 (32 entries) in cluster 2, two snapshots in cluster 3,
    /// a bitmap directory in cluster 4 and its table in cluster 5.
    fn v3() -> Vec<u8> {
        let mut v = vec![0u8; 6 * CS];
        v[..4].copy_from_slice(MAGIC);
        put32(&mut v, 4, 3);
        put64(&mut v, 8, 3000);
        put32(&mut v, 16, 8);
        put32(&mut v, 20, 12);
        put64(&mut v, 24, 64 << 20);
        put32(&mut v, 36, 32);
        put64(&mut v, 40, 2 * CS as u64);
        put64(&mut v, 48, CS as u64);
        put32(&mut v, 56, 1);
        put32(&mut v, 60, 2);
        put64(&mut v, 64, 3 * CS as u64);
        put64(&mut v, 72, INCOMPAT_DIRTY);
        put64(&mut v, 80, COMPAT_LAZY_REFCOUNTS);
        put64(&mut v, 88, AUTOCLEAR_BITMAPS);
        put32(&mut v, 96, 4);
        put32(&mut v, 100, 112);
        let mut off = 112;
        ext(&mut v, &mut off, EXT_BACKING_FORMAT, b"raw");
        let mut ft = vec![0u8; 48];
        ft[0] = 0;
        ft[1] = 0;
        ft[2..7].copy_from_slice(b"dirty");
        ext(&mut v, &mut off, EXT_FEATURE_TABLE, &ft);
        let mut bm = vec![0u8; 24];
        put32(&mut bm, 0, 1);
        put64(&mut bm, 8, 32);
        put64(&mut bm, 16, 4 * CS as u64);
        ext(&mut v, &mut off, EXT_BITMAPS, &bm);
        ext(&mut v, &mut off, 0x1234_5678, b"unknown");
        v[3000..3008].copy_from_slice(b"base.raw");
        // Snapshots: one with icount, one v2-style (16 bytes extra) with a
        // non-UTF-8 name.
        let mut o = 3 * CS;
        for (i, (id, name, extra)) in [
            (&b"1"[..], &b"snap one"[..], 24usize),
            (b"2", b"n\xffx", 16),
        ]
        .iter()
        .enumerate()
        {
            o = o.next_multiple_of(8);
            put64(&mut v, o, 0x10000);
            put32(&mut v, o + 8, 32);
            put16(&mut v, o + 12, id.len() as u16);
            put16(&mut v, o + 14, name.len() as u16);
            put32(&mut v, o + 16, 1_700_000_000 + i as u32);
            put32(&mut v, o + 20, 500);
            put64(&mut v, o + 24, 3_000_000_123);
            put32(&mut v, o + 32, 7);
            put32(&mut v, o + 36, *extra as u32);
            o += 40;
            put64(&mut v, o, 1 << 33);
            put64(&mut v, o + 8, 64 << 20);
            if *extra == 24 {
                put64(&mut v, o + 16, 99);
            }
            o += extra;
            v[o..o + id.len()].copy_from_slice(id);
            o += id.len();
            v[o..o + name.len()].copy_from_slice(name);
            o += name.len();
        }
        // Bitmap directory: one entry "bm0", granularity 2^16, auto.
        let d = 4 * CS;
        put64(&mut v, d, 5 * CS as u64);
        put32(&mut v, d + 8, 1);
        put32(&mut v, d + 12, BME_FLAG_AUTO);
        v[d + 16] = 1;
        v[d + 17] = 16;
        put16(&mut v, d + 18, 3);
        v[d + 24..d + 27].copy_from_slice(b"bm0");
        v
    }

    fn parse_buf(v: &[u8]) -> Result<Option<Parsed>, FormatError> {
        let v = v.to_vec();
        let r = Reader::new(&v, "qcow2");
        parse(&r, "dir/top.qcow2")
    }

    #[test]
    fn v3_every_field_decodes() {
        let p = parse_buf(&v3()).unwrap().unwrap();
        let i = &p.info();
        assert_eq!(p.kind, "qcow2");
        assert!(p.qemu_probes);
        assert_eq!(i["format"], "qcow2");
        assert_eq!(i["virtual_size"], 64u64 << 20);
        assert_eq!(i["cluster_size"], 4096);
        assert_eq!(i["encrypted"], false);
        assert_eq!(i["dirty_flag"], true);
        assert_eq!(i["backing_filename"], "base.raw");
        assert_eq!(i["full_backing_filename"], "dir/base.raw");
        assert_eq!(i["backing_filename_format"], "raw");
        let d = &i["format_specific"]["data"];
        assert_eq!(i["format_specific"]["type"], "qcow2");
        assert_eq!(d["compat"], "1.1");
        assert_eq!(d["compression_type"], "zlib");
        assert_eq!(d["lazy_refcounts"], true);
        assert_eq!(d["refcount_bits"], 16);
        assert_eq!(d["corrupt"], false);
        assert_eq!(d["extended_l2"], false);
        assert!(d.get("data_file").is_none());
        assert!(d.get("data_file_raw").is_none());
        assert!(d.get("encrypt").is_none());
        assert_eq!(d["bitmaps"][0]["name"], "bm0");
        assert_eq!(d["bitmaps"][0]["granularity"], 65536);
        assert_eq!(d["bitmaps"][0]["flags"][0], "auto");
        let s = &i["snapshots"];
        assert_eq!(s[0]["id"], "1");
        assert_eq!(s[0]["name"], "snap one");
        assert_eq!(s[0]["vm_state_size"], 1u64 << 33);
        assert_eq!(s[0]["date_sec"], 1_700_000_000u32);
        assert_eq!(s[0]["date_nsec"], 500);
        assert_eq!(s[0]["vm_clock_sec"], 3);
        assert_eq!(s[0]["vm_clock_nsec"], 123);
        assert_eq!(s[0]["icount"], 99);
        assert!(s[1].get("icount").is_none());
        assert_eq!(s[1]["name"], "n\u{fffd}x");
        assert_eq!(s[1]["name_bytes"], system::text::base64(b"n\xffx"));
        let h = &i["header"];
        assert_eq!(h["version"], 3);
        assert_eq!(h["incompatible_features"], 1);
        assert_eq!(h["compatible_features"], 1);
        assert_eq!(h["autoclear_features"], 1);
        assert_eq!(h["unknown_incompatible_features"], 0);
        assert_eq!(h["crypt_method"], 0);
        assert_eq!(h["header_length"], 112);
        assert_eq!(h["nb_snapshots"], 2);
        assert_eq!(h["has_data_file"], false);
        assert_eq!(h["nb_bitmaps"], 1);
        assert_eq!(h["feature_names"][0]["name"], "dirty");
        assert_eq!(h["extensions"].as_array().map(Vec::len), Some(4));
        assert_eq!(h["extensions"][3]["magic"], 0x1234_5678);
    }

    #[test]
    fn v2_header_decodes() {
        let mut v = v3();
        put32(&mut v, 4, 2);
        // Extensions start at 72 in v2: end marker there, then clear the
        // v3 fields so only the snapshot table remains.
        v[72..3000].fill(0);
        let p = parse_buf(&v).unwrap().unwrap();
        let d = &p.info()["format_specific"]["data"];
        assert_eq!(d["compat"], "0.10");
        assert_eq!(d["refcount_bits"], 16);
        assert_eq!(d["compression_type"], "zlib");
        assert!(d.get("lazy_refcounts").is_none());
        assert!(d.get("corrupt").is_none());
        assert_eq!(p.info()["dirty_flag"], false);
        assert!(p.info().get("backing_filename_format").is_none());
        assert_eq!(p.info()["snapshots"].as_array().map(Vec::len), Some(2));
        assert_eq!(p.info()["header"]["header_length"], 72);
    }

    #[test]
    fn data_file_and_raw() {
        let mut v = v3();
        put64(&mut v, 72, INCOMPAT_DATA_FILE);
        put64(&mut v, 88, AUTOCLEAR_DATA_FILE_RAW);
        let mut off = 112;
        v[112..1000].fill(0);
        ext(&mut v, &mut off, EXT_DATA_FILE, b"img.data");
        let p = parse_buf(&v).unwrap().unwrap();
        let d = &p.info()["format_specific"]["data"];
        assert_eq!(d["data_file"], "img.data");
        assert_eq!(d["data_file_raw"], true);
        assert_eq!(p.info()["header"]["has_data_file"], true);
        assert!(d.get("bitmaps").is_none());
        // Bit set without the extension: qemu-img info still opens it.
        let mut w = v.clone();
        w[112..1000].fill(0);
        let p = parse_buf(&w).unwrap().unwrap();
        let d = &p.info()["format_specific"]["data"];
        assert!(d.get("data_file").is_none());
        assert_eq!(d["data_file_raw"], true);
        // Extension without the bit: the name is shown, data_file_raw not.
        put64(&mut v, 72, 0);
        let p = parse_buf(&v).unwrap().unwrap();
        let d = &p.info()["format_specific"]["data"];
        assert_eq!(d["data_file"], "img.data");
        assert!(d.get("data_file_raw").is_none());
    }

    #[test]
    fn luks_and_aes_encryption() {
        let mut v = v3();
        v.resize(8 * CS + crate::luks::tests::header().len(), 0);
        let lh = crate::luks::tests::header();
        v[8 * CS..8 * CS + lh.len()].copy_from_slice(&lh);
        put32(&mut v, 32, 2);
        let mut c = vec![0u8; 16];
        put64(&mut c, 0, 8 * CS as u64);
        put64(&mut c, 8, 4040 * 512);
        let mut off = 112;
        v[112..1000].fill(0);
        ext(&mut v, &mut off, EXT_CRYPTO_HEADER, &c);
        let p = parse_buf(&v).unwrap().unwrap();
        assert_eq!(p.info()["encrypted"], true);
        let e = &p.info()["format_specific"]["data"]["encrypt"];
        assert_eq!(e["format"], "luks");
        assert_eq!(e["cipher_alg"], "aes-256");
        assert_eq!(e["slots"][0]["active"], true);
        assert_eq!(p.info()["header"]["crypt_method"], 2);
        // LUKS without the crypto extension is refused, as by qemu-img.
        let mut w = v.clone();
        w[112..1000].fill(0);
        assert!(parse_buf(&w).is_err());
        // AES
        put32(&mut w, 32, 1);
        let p = parse_buf(&w).unwrap().unwrap();
        assert_eq!(
            p.info()["format_specific"]["data"]["encrypt"]["format"],
            "aes"
        );
        // The crypto extension with AES is refused.
        put32(&mut v, 32, 1);
        assert!(parse_buf(&v).is_err());
    }

    #[test]
    fn unknown_incompatible_bits_are_reported() {
        let mut v = v3();
        put64(&mut v, 72, 1 << 40 | 1 << 5);
        let p = parse_buf(&v).unwrap().unwrap();
        assert_eq!(
            p.info()["header"]["unknown_incompatible_features"],
            1u64 << 40 | 1 << 5
        );
    }

    #[test]
    fn zstd_and_refcount_order() {
        let mut v = v3();
        put32(&mut v, 100, 112);
        v[104] = 1;
        assert!(parse_buf(&v).is_err());
        put64(&mut v, 72, INCOMPAT_COMPRESSION);
        put32(&mut v, 96, 6);
        let p = parse_buf(&v).unwrap().unwrap();
        assert_eq!(
            p.info()["format_specific"]["data"]["compression_type"],
            "zstd"
        );
        assert_eq!(p.info()["format_specific"]["data"]["refcount_bits"], 64);
    }

    #[test]
    fn not_qcow2_is_none() {
        for ver in [0u32, 1] {
            let mut v = v3();
            put32(&mut v, 4, ver);
            assert!(parse_buf(&v).unwrap().is_none());
        }
        assert!(parse_buf(b"QFI\xfb\0\0").unwrap().is_none());
        assert!(parse_buf(b"QFI\xfa\0\0\0\x03").unwrap().is_none());
        let mut v = v3();
        put32(&mut v, 4, 4);
        assert!(parse_buf(&v).is_err());
    }

    #[test]
    fn truncation_never_panics() {
        // Everything qemu reads ends with the bitmap directory (the bitmap
        // table past the end reads as zeros, as in qemu).
        let v = v3();
        let end = 4 * CS + 32;
        for n in 0..end {
            assert!(!matches!(parse_buf(&v[..n]), Ok(Some(_))), "prefix {n}");
        }
        for n in end..v.len() {
            assert!(parse_buf(&v[..n]).unwrap().is_some(), "prefix {n}");
        }
    }

    #[test]
    fn hostile_fields_are_errors() {
        type Edit = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<Edit> = vec![
            Box::new(|v| put32(v, 20, 8)),
            Box::new(|v| put32(v, 20, 22)),
            Box::new(|v| put32(v, 20, u32::MAX)),
            Box::new(|v| put32(v, 100, 103)),
            Box::new(|v| put32(v, 100, u32::MAX)),
            Box::new(|v| put64(v, 8, u64::MAX)),
            Box::new(|v| put32(v, 16, 1024)),
            Box::new(|v| put32(v, 16, u32::MAX)),
            Box::new(|v| put64(v, 24, u64::MAX)),
            Box::new(|v| put64(v, 24, 1 << 62)),
            Box::new(|v| put32(v, 32, 3)),
            Box::new(|v| put32(v, 36, u32::MAX)),
            Box::new(|v| put32(v, 36, 1)),
            Box::new(|v| put64(v, 40, u64::MAX - 7)),
            Box::new(|v| put64(v, 40, 1 << 40)),
            Box::new(|v| put64(v, 48, !4095u64)),
            Box::new(|v| put64(v, 48, 100)),
            Box::new(|v| put32(v, 56, 0)),
            Box::new(|v| put32(v, 56, u32::MAX)),
            Box::new(|v| put32(v, 60, u32::MAX)),
            Box::new(|v| put32(v, 60, 1000)),
            Box::new(|v| put64(v, 64, !4095u64)),
            Box::new(|v| put64(v, 64, 1 << 40)),
            Box::new(|v| put32(v, 96, 7)),
            Box::new(|v| put64(v, 72, INCOMPAT_EXTL2)),
            Box::new(|v| put32(v, 112 + 4, u32::MAX)),
            Box::new(|v| put32(v, 112 + 4, 16)),
            Box::new(|v| put32(v, 128 + 4, 1 << 20)),
            // Bitmaps extension: count, reserved, directory size/offset.
            Box::new(|v| put32(v, 184 + 8, 2)),
            Box::new(|v| put32(v, 184 + 12, 1)),
            Box::new(|v| put64(v, 184 + 16, u64::MAX)),
            Box::new(|v| put64(v, 184 + 24, 17)),
            Box::new(|v| put64(v, 184 + 24, 1 << 40)),
            // Bitmap directory entry.
            Box::new(|v| v[4 * CS + 17] = 40),
            Box::new(|v| v[4 * CS + 16] = 2),
            Box::new(|v| put32(v, 4 * CS + 8, 2)),
            Box::new(|v| put32(v, 4 * CS + 20, u32::MAX)),
            Box::new(|v| put16(v, 4 * CS + 18, u16::MAX)),
            Box::new(|v| put64(v, 5 * CS, u64::MAX)),
            // Snapshot entries.
            Box::new(|v| put32(v, 3 * CS + 36, u32::MAX)),
            Box::new(|v| put16(v, 3 * CS + 12, u16::MAX)),
            Box::new(|v| put16(v, 3 * CS + 14, u16::MAX)),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut v = v3();
            f(&mut v);
            assert!(parse_buf(&v).is_err(), "case {i}");
        }
    }

    /// Deterministic xorshift for mutation tests.
    pub(crate) fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Overwrite a few random bytes or words in `region` of `v`.
    pub(crate) fn mutate(v: &mut [u8], region: std::ops::Range<usize>, st: &mut u64) {
        let n = 1 + xorshift(st) % 3;
        for _ in 0..n {
            let o = region.start + (xorshift(st) as usize) % (region.end - region.start);
            let x = xorshift(st);
            match x % 4 {
                0 => v[o] = (x >> 8) as u8,
                1 => v[o] ^= 1 << ((x >> 8) % 8),
                _ => {
                    let w = [0u64, u64::MAX, 1 << 63, 1, x >> 3][((x >> 8) % 5) as usize];
                    let end = (o + 8).min(v.len());
                    v[o..end].copy_from_slice(&w.to_be_bytes()[..end - o]);
                }
            }
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        let base = v3();
        let mut st = 0x9e37_79b9_7f4a_7c15;
        for region in [0..512, 3 * CS..3 * CS + 200, 4 * CS..4 * CS + 40, 0..6 * CS] {
            for _ in 0..3000 {
                let mut v = base.clone();
                mutate(&mut v, region.clone(), &mut st);
                let _ = parse_buf(&v);
            }
        }
    }

    #[test]
    fn many_snapshots_are_bounded() {
        let mut v = v3();
        put32(&mut v, 60, 65536);
        assert!(parse_buf(&v).is_err());
        put32(&mut v, 60, 65537);
        assert!(parse_buf(&v).is_err());
    }
}

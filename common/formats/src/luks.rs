//! LUKS (version 1) header parser, as qemu's `luks` driver reads it
//! (`crypto/block-luks.c`, opened with `QCRYPTO_BLOCK_OPEN_NO_IO` the way
//! `qemu-img info` does: the header is parsed and checked, nothing is
//! unlocked).
//!
//! The 592-byte big-endian header: magic `LUKS\xba\xbe` @0, version u16 @6,
//! cipher name [32] @8, cipher mode [32] @40 (`<mode>-<ivgen>[:<ivhash>]`),
//! hash spec [32] @72, payload offset u32 (sectors) @104, key bytes u32
//! @108, master-key digest [20] @112, salt [32] @132, master-key iterations
//! u32 @164, UUID [40] @168, then 8 key slots of 48 bytes @208 (active u32,
//! iterations u32, salt [32], key-material offset u32 in sectors, stripes
//! u32).
//!
//! `Ok(None)` unless the magic matches and the version is 1 (qemu's probe
//! requires both; anything else is raw to qemu). A header qemu would refuse
//! (strings not NUL-terminated, unknown cipher/mode/hash/ivgen, corrupt or
//! overlapping key slots, payload inside the header or beyond the end of
//! the file) is an `Err`.
//!
//! Info: `format` `luks`, `virtual_size` (file length minus the payload
//! offset, rounded up to 512 as qemu's block layer does), `encrypted` true,
//! `dirty_flag` false, and `format_specific` `{type: "luks", data}` with
//! qemu's `QCryptoBlockInfoLUKS` fields: `cipher_alg`, `cipher_mode`,
//! `ivgen_alg`, `ivgen_hash_alg` (only for `essiv`), `hash_alg`,
//! `payload_offset` (bytes), `master_key_iters`, `uuid`, `detached_header`
//! (always false here) and `slots[]` (`active`, `key_offset` in bytes, and
//! `iters`/`stripes` for active slots). `uuid_bytes` (base64) is added when
//! the UUID is not UTF-8.
//!
//! `header` (facts qemu does not print):
//! - `version`: the LUKS version (always 1 here);
//! - `key_bytes`: master key length in bytes;
//! - `payload_offset_sectors`: the raw payload offset field;
//! - `cipher_name`, `cipher_mode_spec`, `hash_spec`: the raw header strings.

use super::bytes::cstr;
use super::{FormatError, FormatSpecific, Parsed, Reader, bytes, text};
use serde::Serialize;

/// LUKS magic.
pub(crate) const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// Size of the LUKS1 header qemu reads.
pub(crate) const HEADER_LEN: usize = 592;

const SECTOR: u64 = 512;
const KEY_SLOT_OFFSET: u64 = 4096;
const NUM_SLOTS: usize = 8;
const STRIPES: u32 = 4000;
const SLOT_ENABLED: u32 = 0x00AC_71F3;
const SLOT_DISABLED: u32 = 0x0000_DEAD;

/// A parsed, checked LUKS header.
pub(crate) struct LuksHeader {
    /// qemu's `QCryptoBlockInfoLUKS`.
    pub(crate) info: Info,
    /// Facts for `header`.
    pub(crate) header: Header,
    /// Payload offset in bytes.
    pub(crate) payload_offset: u64,
}

/// qemu's `QCryptoBlockInfoLUKS`, snake_case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Info {
    /// Cipher algorithm, qemu's name (`aes-256`).
    pub cipher_alg: &'static str,
    /// Cipher mode (`xts`).
    pub cipher_mode: &'static str,
    /// IV generator (`plain64`, `essiv`).
    pub ivgen_alg: &'static str,
    /// ESSIV's hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivgen_hash_alg: Option<&'static str>,
    /// Key-derivation hash.
    pub hash_alg: &'static str,
    /// Where the payload starts, in bytes.
    pub payload_offset: u64,
    /// Master-key PBKDF2 iterations.
    pub master_key_iters: u32,
    /// The volume UUID (lossy text).
    pub uuid: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid_bytes: Option<String>,
    /// Always false: the header is in the image.
    pub detached_header: bool,
    /// The eight key slots.
    pub slots: Vec<Slot>,
}

/// One LUKS key slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slot {
    /// Whether the slot holds a key.
    pub active: bool,
    /// Where its key material starts, in bytes.
    pub key_offset: u64,
    /// PBKDF2 iterations (active slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iters: Option<u32>,
    /// Anti-forensic stripes (active slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripes: Option<u32>,
}

/// LUKS header facts qemu does not print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// LUKS version (1).
    pub version: u16,
    /// Master-key length.
    pub key_bytes: u32,
    /// Payload offset in sectors.
    pub payload_offset_sectors: u32,
    /// The cipher name as stored.
    pub cipher_name: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_name_bytes: Option<String>,
    /// The cipher mode as stored (`xts-plain64`).
    pub cipher_mode_spec: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_mode_spec_bytes: Option<String>,
    /// The hash as stored.
    pub hash_spec: String,
    /// Its bytes (base64) when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_spec_bytes: Option<String>,
}

/// What a LUKS image reports beyond the common fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    /// qemu's `format-specific` (`type: luks`).
    pub format_specific: FormatSpecific<Info>,
    /// Header facts.
    pub header: Header,
}

/// Key length in bytes of each qemu cipher algorithm, by LUKS name.
fn cipher_alg(name: &[u8], key_bytes: u32) -> Option<&'static str> {
    let sizes: &[(u32, &str)] = match name {
        b"aes" => &[(16, "aes-128"), (24, "aes-192"), (32, "aes-256")],
        b"cast5" => &[(16, "cast5-128")],
        b"serpent" => &[
            (16, "serpent-128"),
            (24, "serpent-192"),
            (32, "serpent-256"),
        ],
        b"twofish" => &[
            (16, "twofish-128"),
            (24, "twofish-192"),
            (32, "twofish-256"),
        ],
        b"sm4" => &[(16, "sm4")],
        _ => return None,
    };
    sizes.iter().find(|(k, _)| *k == key_bytes).map(|(_, n)| *n)
}

fn cipher_key_len(alg: &str) -> usize {
    match alg {
        "aes-192" | "serpent-192" | "twofish-192" => 24,
        "aes-256" | "serpent-256" | "twofish-256" => 32,
        _ => 16,
    }
}

fn cipher_mode(name: &[u8]) -> Option<&'static str> {
    match name {
        b"ecb" => Some("ecb"),
        b"cbc" => Some("cbc"),
        b"xts" => Some("xts"),
        b"ctr" => Some("ctr"),
        _ => None,
    }
}

/// qemu hash algorithm name and digest length.
fn hash_alg(name: &[u8]) -> Option<(&'static str, usize)> {
    match name {
        b"md5" => Some(("md5", 16)),
        b"sha1" => Some(("sha1", 20)),
        b"sha224" => Some(("sha224", 28)),
        b"sha256" => Some(("sha256", 32)),
        b"sha384" => Some(("sha384", 48)),
        b"sha512" => Some(("sha512", 64)),
        b"ripemd160" => Some(("ripemd160", 20)),
        b"sm3" => Some(("sm3", 32)),
        _ => None,
    }
}

fn ivgen_alg(name: &[u8]) -> Option<&'static str> {
    match name {
        b"plain" => Some("plain"),
        b"plain64" => Some("plain64"),
        b"essiv" => Some("essiv"),
        _ => None,
    }
}

/// Whether qemu finds an ESSIV cipher for `alg` keyed by a `digest`-byte hash.
fn essiv_ok(alg: &str, digest: usize) -> bool {
    if digest == cipher_key_len(alg) {
        return true;
    }
    let family = alg.split('-').next().unwrap_or("");
    matches!(family, "aes" | "serpent" | "twofish") && matches!(digest, 16 | 24 | 32)
}

/// Key-material length of a slot in sectors, rounded up to the header
/// alignment (qemu's `qcrypto_block_luks_splitkeylen_sectors`).
fn splitkey_sectors(key_bytes: u32, stripes: u32) -> u64 {
    let len = u64::from(key_bytes) * u64::from(stripes);
    let header_sectors = KEY_SLOT_OFFSET / SECTOR;
    len.div_ceil(SECTOR).div_ceil(header_sectors) * header_sectors
}

/// Parse and check a LUKS1 header in `h` (at least [`HEADER_LEN`] bytes).
pub(crate) fn parse_header(r: &Reader, h: &[u8]) -> Result<LuksHeader, FormatError> {
    if h.len() < HEADER_LEN {
        return Err(r.truncated("LUKS header"));
    }
    if h.get(..6) != Some(MAGIC.as_slice()) {
        return Err(r.invalid("volume is not in LUKS format"));
    }
    let version = bytes::be16(h, 6);
    if version != 1 {
        return Err(r.invalid(format!("LUKS version {version} is not supported")));
    }
    let field = |off: usize, len: usize| h.get(off..off + len).unwrap_or(&[]);
    let (name_f, mode_f, hash_f) = (field(8, 32), field(40, 32), field(72, 32));
    for (f, what) in [
        (name_f, "cipher name"),
        (mode_f, "cipher mode"),
        (hash_f, "hash spec"),
    ] {
        if !f.contains(&0) {
            return Err(r.invalid(format!("LUKS header {what} is not NUL terminated")));
        }
    }
    let payload_sectors = bytes::be32(h, 104);
    let key_bytes = bytes::be32(h, 108);
    let mk_iters = bytes::be32(h, 164);
    let header_sectors = KEY_SLOT_OFFSET / SECTOR;
    if u64::from(payload_sectors) < header_sectors {
        return Err(r.invalid("LUKS payload is overlapping with the header"));
    }
    if mk_iters == 0 {
        return Err(r.invalid("LUKS key iteration count is zero"));
    }
    let slot = |i: usize| {
        let o = 208 + 48 * i;
        (
            bytes::be32(h, o),
            bytes::be32(h, o + 4),
            bytes::be32(h, o + 40),
            bytes::be32(h, o + 44),
        )
    };
    for i in 0..NUM_SLOTS {
        let (active, iters, start, stripes) = slot(i);
        if stripes != STRIPES {
            return Err(r.invalid(format!("keyslot {i} is corrupted (stripes {stripes})")));
        }
        if active != SLOT_ENABLED && active != SLOT_DISABLED {
            return Err(r.invalid(format!("keyslot {i} state is corrupted")));
        }
        if active == SLOT_ENABLED && iters == 0 {
            return Err(r.invalid(format!("keyslot {i} iteration count is zero")));
        }
        let start = u64::from(start);
        let len = splitkey_sectors(key_bytes, stripes);
        if start < header_sectors {
            return Err(r.invalid(format!("keyslot {i} is overlapping with the header")));
        }
        if start + len > u64::from(payload_sectors) {
            return Err(r.invalid(format!("keyslot {i} is overlapping with the payload")));
        }
        for j in i + 1..NUM_SLOTS {
            let (_, _, start2, stripes2) = slot(j);
            let start2 = u64::from(start2);
            let len2 = splitkey_sectors(key_bytes, stripes2);
            if len > 0 && len2 > 0 && start < start2 + len2 && start2 < start + len {
                return Err(r.invalid(format!("keyslots {i} and {j} are overlapping")));
            }
        }
    }

    // <cipher-mode>-<iv-generator>[:<iv-hash>]
    let mode_spec = cstr(mode_f);
    let Some(dash) = mode_spec.iter().position(|&b| b == b'-') else {
        return Err(r.invalid("unexpected cipher mode string format"));
    };
    let mode_name = &mode_spec[..dash];
    let rest = &mode_spec[dash + 1..];
    let (iv_name, iv_hash) = match rest.iter().position(|&b| b == b':') {
        Some(c) => {
            let hn = &rest[c + 1..];
            let Some(hash) = hash_alg(hn) else {
                return Err(r.invalid("unsupported IV generator hash"));
            };
            (&rest[..c], Some(hash))
        }
        None => (rest, None),
    };
    let Some(mode) = cipher_mode(mode_name) else {
        return Err(r.invalid("unsupported cipher mode"));
    };
    let alg_key = if mode == "xts" {
        key_bytes / 2
    } else {
        key_bytes
    };
    let Some(alg) = cipher_alg(cstr(name_f), alg_key) else {
        return Err(r.invalid(format!("unsupported cipher with key size {alg_key} bytes")));
    };
    let Some((hash, _)) = hash_alg(cstr(hash_f)) else {
        return Err(r.invalid("unsupported hash algorithm"));
    };
    let Some(ivgen) = ivgen_alg(iv_name) else {
        return Err(r.invalid("unsupported IV generator"));
    };
    if ivgen == "essiv" {
        let Some((_, digest)) = iv_hash else {
            return Err(r.invalid("missing IV generator hash specification"));
        };
        if !essiv_ok(alg, digest) {
            return Err(r.invalid("no ESSIV cipher for this hash"));
        }
    }

    let payload_offset = u64::from(payload_sectors) * SECTOR;
    let slots = (0..NUM_SLOTS)
        .map(|i| {
            let (active, iters, start, stripes) = slot(i);
            let on = active == SLOT_ENABLED;
            Slot {
                active: on,
                key_offset: u64::from(start) * SECTOR,
                iters: on.then_some(iters),
                stripes: on.then_some(stripes),
            }
        })
        .collect();
    let (uuid, uuid_bytes) = text(cstr(field(168, 40)));
    let info = Info {
        cipher_alg: alg,
        cipher_mode: mode,
        ivgen_alg: ivgen,
        ivgen_hash_alg: iv_hash.filter(|_| ivgen == "essiv").map(|(hn, _)| hn),
        hash_alg: hash,
        payload_offset,
        master_key_iters: mk_iters,
        uuid,
        uuid_bytes,
        detached_header: false,
        slots,
    };
    let (cipher_name, cipher_name_bytes) = text(cstr(name_f));
    let (cipher_mode_spec, cipher_mode_spec_bytes) = text(mode_spec);
    let (hash_spec, hash_spec_bytes) = text(cstr(hash_f));
    let header = Header {
        version,
        key_bytes,
        payload_offset_sectors: payload_sectors,
        cipher_name,
        cipher_name_bytes,
        cipher_mode_spec,
        cipher_mode_spec_bytes,
        hash_spec,
        hash_spec_bytes,
    };
    Ok(LuksHeader {
        info,
        header,
        payload_offset,
    })
}

/// Parse the luks header, if the bytes are luks.
pub fn parse(r: &Reader, _name: &str) -> Result<Option<Parsed>, FormatError> {
    if r.len() < 8 {
        return Ok(None);
    }
    let head = r.read(0, 8)?;
    if head.get(..6) != Some(MAGIC.as_slice()) || bytes::be16(&head, 6) != 1 {
        return Ok(None);
    }
    let h = r.read(0, HEADER_LEN)?;
    let l = parse_header(r, &h)?;
    if l.payload_offset > r.len() {
        return Err(r.invalid(format!(
            "payload offset {} is beyond the end of the file ({})",
            l.payload_offset,
            r.len()
        )));
    }
    let virtual_size = (r.len() - l.payload_offset).div_ceil(SECTOR) * SECTOR;
    Ok(Some(Parsed {
        kind: super::Format::Luks,
        qemu_probes: true,
        virtual_size,
        cluster_size: None,
        encrypted: true,
        dirty_flag: Some(false),
        backing: None,
        data_file: None,
        details: super::Details::Luks(Box::new(Details {
            format_specific: FormatSpecific {
                kind: "luks",
                data: l.info,
            },
            header: l.header,
        })),
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid LUKS1 header (aes-256 xts-plain64 sha256, slot 0 active).
    pub(crate) fn header() -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..6].copy_from_slice(MAGIC);
        h[6..8].copy_from_slice(&1u16.to_be_bytes());
        h[8..11].copy_from_slice(b"aes");
        h[40..51].copy_from_slice(b"xts-plain64");
        h[72..78].copy_from_slice(b"sha256");
        h[104..108].copy_from_slice(&4040u32.to_be_bytes());
        h[108..112].copy_from_slice(&64u32.to_be_bytes());
        h[164..168].copy_from_slice(&1234u32.to_be_bytes());
        h[168..204].copy_from_slice(b"00000000-0000-4000-8000-000000000001");
        for i in 0..NUM_SLOTS {
            let o = 208 + 48 * i;
            let active = if i == 0 { SLOT_ENABLED } else { SLOT_DISABLED };
            h[o..o + 4].copy_from_slice(&active.to_be_bytes());
            h[o + 4..o + 8].copy_from_slice(&(if i == 0 { 5000u32 } else { 0 }).to_be_bytes());
            let start = 8 + 504 * i as u32;
            h[o + 40..o + 44].copy_from_slice(&start.to_be_bytes());
            h[o + 44..o + 48].copy_from_slice(&STRIPES.to_be_bytes());
        }
        h
    }

    fn image(len: usize) -> Vec<u8> {
        let mut v = header();
        v.resize(len, 0);
        v
    }

    #[test]
    fn valid_header_decodes() {
        let img = image(4040 * 512 + 1000);
        let r = Reader::new(&img, "luks");
        let p = parse(&r, "x.luks").unwrap().unwrap();
        assert_eq!(p.info()["format"], "luks");
        assert_eq!(p.info()["virtual_size"], 1024);
        assert_eq!(p.info()["encrypted"], true);
        let d = &p.info()["format_specific"]["data"];
        assert_eq!(d["cipher_alg"], "aes-256");
        assert_eq!(d["cipher_mode"], "xts");
        assert_eq!(d["ivgen_alg"], "plain64");
        assert!(d.get("ivgen_hash_alg").is_none());
        assert_eq!(d["hash_alg"], "sha256");
        assert_eq!(d["payload_offset"], 4040 * 512);
        assert_eq!(d["master_key_iters"], 1234);
        assert_eq!(d["uuid"], "00000000-0000-4000-8000-000000000001");
        assert_eq!(d["detached_header"], false);
        assert_eq!(d["slots"][0]["active"], true);
        assert_eq!(d["slots"][0]["iters"], 5000);
        assert_eq!(d["slots"][0]["stripes"], 4000);
        assert_eq!(d["slots"][0]["key_offset"], 4096);
        assert_eq!(d["slots"][1]["active"], false);
        assert!(d["slots"][1].get("iters").is_none());
        assert_eq!(p.info()["header"]["key_bytes"], 64);
    }

    #[test]
    fn essiv_prints_hash() {
        let mut img = image(4040 * 512);
        img[40..72].fill(0);
        img[40..56].copy_from_slice(b"cbc-essiv:sha256");
        img[108..112].copy_from_slice(&32u32.to_be_bytes());
        let r = Reader::new(&img, "luks");
        let p = parse(&r, "x").unwrap().unwrap();
        let d = &p.info()["format_specific"]["data"];
        assert_eq!(d["cipher_mode"], "cbc");
        assert_eq!(d["ivgen_alg"], "essiv");
        assert_eq!(d["ivgen_hash_alg"], "sha256");
        assert_eq!(p.info()["virtual_size"], 0);
    }

    #[test]
    fn not_luks_is_none() {
        for v in [
            vec![0u8; 600],
            b"LUKS\xba\xbe\x00\x02".to_vec(),
            b"LUKS".to_vec(),
        ] {
            let r = Reader::new(&v, "luks");
            assert!(parse(&r, "x").unwrap().is_none());
        }
    }

    #[test]
    fn truncation_never_panics() {
        let img = image(4040 * 512);
        for n in 0..HEADER_LEN + 8 {
            let v = img[..n].to_vec();
            let r = Reader::new(&v, "luks");
            assert!(!matches!(parse(&r, "x"), Ok(Some(_))), "prefix {n}");
        }
    }

    #[test]
    fn hostile_fields_are_errors() {
        let base = image(4040 * 512);
        type Edit = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<Edit> = vec![
            Box::new(|h| h[8..40].fill(b'a')),
            Box::new(|h| h[40..72].fill(b'x')),
            Box::new(|h| h[72..104].fill(b'y')),
            Box::new(|h| h[104..108].copy_from_slice(&u32::MAX.to_be_bytes())),
            Box::new(|h| h[104..108].copy_from_slice(&1u32.to_be_bytes())),
            Box::new(|h| h[108..112].copy_from_slice(&u32::MAX.to_be_bytes())),
            Box::new(|h| h[164..168].fill(0)),
            Box::new(|h| h[208 + 44..208 + 48].copy_from_slice(&u32::MAX.to_be_bytes())),
            Box::new(|h| h[208..212].copy_from_slice(&7u32.to_be_bytes())),
            Box::new(|h| h[208 + 4..208 + 8].fill(0)),
            Box::new(|h| h[208 + 40..208 + 44].copy_from_slice(&u32::MAX.to_be_bytes())),
            Box::new(|h| h[256 + 40..256 + 44].copy_from_slice(&8u32.to_be_bytes())),
            Box::new(|h| h[40..52].copy_from_slice(b"xts-essiv\0\0\0")),
            Box::new(|h| h[40..52].copy_from_slice(b"xts-plain:no")),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut h = base.clone();
            f(&mut h);
            let r = Reader::new(&h, "luks");
            assert!(parse(&r, "x").is_err(), "case {i}");
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        use crate::qcow2::tests::mutate;
        let base = image(4040 * 512);
        let mut st = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut v = base.clone();
            mutate(&mut v, 0..600, &mut st);
            let r = Reader::new(&v, "luks");
            let _ = parse(&r, "x");
        }
    }
}

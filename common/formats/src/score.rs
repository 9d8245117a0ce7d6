//! Which format driver qemu's probing picks, from the same inputs qemu
//! uses: the first 2048 bytes of the file, zero-padded past its end
//! (`BLOCK_PROBE_BUF_SIZE`; qemu reads past the end as zeros), and the
//! file name. Each function restates one driver's `bdrv_probe` (qemu 10.0,
//! `block/*.c`); `raw` always scores 1, so any other score above 1 means
//! qemu does **not** read the file as raw.
//!
//! This is the guard behind the parsers: a parser may be stricter than
//! qemu's probe (it reads the whole header), but the probe as a whole must
//! never call raw what qemu would open as something else. `probe()` holds
//! its answer against [`pick`].
//!
//! Ties: the highest score wins and, between equal scores, the driver qemu
//! registered last (its driver list is built head-first). Only two ties can
//! happen, because every other magic sits at offset 0: VDI's signature at
//! 0x40 beside another header, and a cloop file named `*.dmg`. Measured
//! with qemu-img 10.0.2 on real images with the VDI signature planted at
//! 0x40: parallels, vpc, vmdk, qed and vhdx win over vdi; vdi wins over
//! qcow2, qcow, luks and bochs; dmg (by name) wins over cloop. [`ORDER`]
//! lists the drivers so that the first of equal scores is qemu's choice.
//!
//! `vvfat` has no probe (it is a protocol, reached by a `fat:` name), so
//! no bytes ever select it.

use super::bytes::{be16, be32, le32};

/// How many bytes qemu's probe sees.
pub const PROBE_BUF: usize = 2048;

/// What qemu's probing chose, where it is not raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// The qemu driver name.
    pub format: &'static str,
    /// Its probe score (raw scores 1).
    pub score: u8,
}

type ScoreFn = fn(&[u8], &str) -> u8;

/// Drivers in the order that breaks ties as qemu does (see the module
/// documentation); raw (always 1) is left out.
pub const ORDER: &[(&str, ScoreFn)] = &[
    ("parallels", parallels),
    ("vpc", vpc),
    ("vmdk", vmdk),
    ("qed", qed),
    ("vhdx", vhdx),
    ("vdi", vdi),
    ("qcow2", qcow2),
    ("qcow", qcow),
    ("luks", luks),
    ("bochs", super::bochs::probe_score),
    ("dmg", dmg),
    ("cloop", cloop),
];

/// The first [`PROBE_BUF`] bytes as qemu sees them: `head` zero-padded.
pub fn padded(head: &[u8]) -> Vec<u8> {
    let mut b = head
        .get(..PROBE_BUF.min(head.len()))
        .unwrap_or(&[])
        .to_vec();
    b.resize(PROBE_BUF, 0);
    b
}

/// The driver qemu picks for a file of `len` bytes whose first bytes are
/// `head` and whose name is `name`; `None` when it reads it as raw (an
/// empty file is always raw: qemu does not probe it).
pub fn pick(head: &[u8], len: u64, name: &str) -> Option<Pick> {
    if len == 0 {
        return None;
    }
    let buf = padded(head);
    let mut best: Option<Pick> = None;
    for (format, f) in ORDER {
        let score = f(&buf, name);
        if score > 1 && best.is_none_or(|b| score > b.score) {
            best = Some(Pick { format, score });
        }
    }
    best
}

/// `block/parallels.c`: either magic and version 2.
pub fn parallels(buf: &[u8], _name: &str) -> u8 {
    let magic = buf.get(..16);
    let known = magic == Some(b"WithoutFreeSpace") || magic == Some(b"WithouFreSpacExt");
    if known && le32(buf, 16) == 2 { 100 } else { 0 }
}

/// `block/vpc.c`: the footer cookie at offset 0 (a fixed disk's footer
/// at the end is not probed).
pub fn vpc(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(&super::vhd::FOOTER_COOKIE) {
        100
    } else {
        0
    }
}

/// `block/vmdk.c`: `COWD` or `KDMV`, or a text descriptor.
pub fn vmdk(buf: &[u8], _name: &str) -> u8 {
    let magic = buf.get(..4);
    if magic == Some(b"COWD") || magic == Some(b"KDMV") || super::vmdk::probe_text(buf) {
        100
    } else {
        0
    }
}

/// `block/qed.c`: `QED\0`.
pub fn qed(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(b"QED\0") { 100 } else { 0 }
}

/// `block/vhdx.c`: `vhdxfile`.
pub fn vhdx(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(b"vhdxfile") { 100 } else { 0 }
}

/// `block/vdi.c`: the signature `0xbeda107f` (little-endian) at 0x40.
pub fn vdi(buf: &[u8], _name: &str) -> u8 {
    if le32(buf, 0x40) == 0xbeda_107f {
        100
    } else {
        0
    }
}

/// `block/qcow2.c`: `QFI\xfb` and a version of 2 or more.
pub fn qcow2(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(b"QFI\xfb") && be32(buf, 4) >= 2 {
        100
    } else {
        0
    }
}

/// `block/qcow.c`: `QFI\xfb` and version 1.
pub fn qcow(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(b"QFI\xfb") && be32(buf, 4) == 1 {
        100
    } else {
        0
    }
}

/// `crypto/block-luks.c` (through `block/crypto.c`): the LUKS magic and
/// version 1.
pub fn luks(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(b"LUKS\xba\xbe") && be16(buf, 6) == 1 {
        100
    } else {
        0
    }
}

/// `block/dmg.c`: only the name: longer than 4 bytes and ending in `.dmg`
/// (case matters). The bytes are not looked at.
pub fn dmg(_buf: &[u8], name: &str) -> u8 {
    if super::dmg::named_dmg(name) { 2 } else { 0 }
}

/// `block/cloop.c`: the start of the V2.0 shell-script header.
pub fn cloop(buf: &[u8], _name: &str) -> u8 {
    if buf.starts_with(super::cloop::MAGIC) {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_none() {
        assert_eq!(pick(&[0u8; 4096], 4096, "x"), None);
        assert_eq!(pick(b"", 0, "x.dmg"), None);
        assert_eq!(pick(b"hello", 5, "x.img"), None);
    }

    #[test]
    fn short_files_are_padded_with_zeros() {
        // "QED" plus one zero of padding is the QED magic.
        assert_eq!(pick(b"QED", 3, "x").map(|p| p.format), Some("qed"));
        // A version whose last byte is padding: 0x01000000 >= 2.
        assert_eq!(
            pick(b"QFI\xfb\x01", 5, "x").map(|p| p.format),
            Some("qcow2")
        );
        assert_eq!(pick(b"QFI\xfb", 4, "x"), None);
    }

    #[test]
    fn ties_go_as_qemu_measured() {
        let mut b = vec![0u8; 512];
        b[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        b[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        assert_eq!(pick(&b, 512, "x").map(|p| p.format), Some("vdi"));
        b[..8].copy_from_slice(&super::super::vhd::FOOTER_COOKIE);
        assert_eq!(pick(&b, 512, "x").map(|p| p.format), Some("vpc"));
        let mut c = vec![0u8; 512];
        c[..cloop_magic_len()].copy_from_slice(super::super::cloop::MAGIC);
        assert_eq!(
            pick(&c, 512, "x.dmg"),
            Some(Pick {
                format: "dmg",
                score: 2
            })
        );
        assert_eq!(pick(&c, 512, "x").map(|p| p.format), Some("cloop"));
    }

    fn cloop_magic_len() -> usize {
        super::super::cloop::MAGIC.len()
    }

    #[test]
    fn dmg_needs_more_than_the_suffix() {
        assert_eq!(dmg(&[], ".dmg"), 0);
        assert_eq!(dmg(&[], "a.dmg"), 2);
        assert_eq!(dmg(&[], "a.DMG"), 0);
        assert_eq!(dmg(&[], "dir/a.dmg"), 2);
    }
}

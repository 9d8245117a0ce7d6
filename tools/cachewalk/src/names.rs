//! What a file name in Nova's `_base` means (notes/caches.md sections
//! 1.2-1.3): our class, and the bucket Nova's `_scan_base_images` puts it
//! in, which is not always the same. Nova's rules, for an entry name `n`:
//! 1. `len(n) == 40` → "original";
//! 2. `len(n) > 42` and `n[40] == '_'` → the "resized" bucket (anything
//!    else long with an underscore at 40, sidecars of resized files
//!    included);
//! 3. `swap_<digits>` → swap; `ephemeral_<digits>_<7 chars>` → ephemeral;
//! 4. anything else is never looked at again.

use serde::Serialize;

/// Our class of a `_base` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// `<fingerprint>`: the image as downloaded (and converted to raw).
    Original,
    /// `<fingerprint>_<N>`: a pre-Grizzly resized copy (`N` in GiB, or in
    /// bytes in some releases' tests).
    ResizedLegacy,
    /// `<fingerprint>_sm`: a pre-2012 unresized copy.
    SmallLegacy,
    /// `swap_<MiB>`.
    Swap,
    /// `ephemeral_<GiB>_<7 hex digits>` (Kilo and later).
    Ephemeral,
    /// Older ephemeral names (`ephemeral_<n>_<GiB>_<os>`,
    /// `ephemeral_<GiB>_<os_type>`).
    EphemeralLegacy,
    /// A kernel, ramdisk or config drive cached under its raw image id.
    KernelRawId,
    /// `<name>.part` / `<name>.converted`: a download or conversion that
    /// never finished.
    PartialDownload,
    /// `<name>.sha1`: Essex's checksum sidecar.
    ChecksumSidecar,
    /// `<name>.info`: Folsom-Mitaka's JSON sidecar.
    InfoSidecar,
    /// Anything else.
    Unknown,
}

impl Class {
    /// The name records use (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Original => "original",
            Class::ResizedLegacy => "resized_legacy",
            Class::SmallLegacy => "small_legacy",
            Class::Swap => "swap",
            Class::Ephemeral => "ephemeral",
            Class::EphemeralLegacy => "ephemeral_legacy",
            Class::KernelRawId => "kernel_raw_id",
            Class::PartialDownload => "partial_download",
            Class::ChecksumSidecar => "checksum_sidecar",
            Class::InfoSidecar => "info_sidecar",
            Class::Unknown => "unknown",
        }
    }
}

/// Nova's bucket for a name (rules in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NovaClass {
    /// Rule 1.
    Original,
    /// Rule 2.
    Resized,
    /// Rule 3, swap.
    Swap,
    /// Rule 3, ephemeral.
    Ephemeral,
    /// Never considered: Nova neither uses nor removes it.
    Ignored,
}

/// What a `_base` name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// Our class.
    pub class: Class,
    /// Nova's bucket.
    pub nova: NovaClass,
    /// The image-id fingerprint (40 hex digits) the name starts with.
    pub fingerprint: Option<String>,
    /// The raw suffix after `<fingerprint>_` (`sm`, `10`, `10737418240`).
    pub resize_suffix: Option<String>,
    /// For a sidecar or partial download: the name it belongs to.
    pub belongs_to: Option<String>,
}

fn is_hex40(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A canonical image UUID (36 characters, hyphens at 8, 13, 18, 23).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Nova's bucket for `name` (module docs), by character count as Python
/// counts `len()` of a str.
pub fn nova_class(name: &str) -> NovaClass {
    // Counted without collecting: every name of a large cache comes here.
    let len = name.chars().count();
    if len == 40 {
        return NovaClass::Original;
    }
    if len > 42 && name.chars().nth(40) == Some('_') {
        return NovaClass::Resized;
    }
    let mut parts = name.split('_');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("swap"), Some(size), None, None) if digits(size) => NovaClass::Swap,
        (Some("ephemeral"), Some(size), Some(label), None)
            if digits(size) && label.chars().count() == 7 =>
        {
            NovaClass::Ephemeral
        }
        _ => NovaClass::Ignored,
    }
}

/// Classify a `_base` entry name.
pub fn classify(name: &str) -> Named {
    let nova = nova_class(name);
    let mut n = Named {
        class: Class::Unknown,
        nova,
        fingerprint: None,
        resize_suffix: None,
        belongs_to: None,
    };
    // Sidecars and staging files first: their stem says what they serve.
    for (ext, class) in [
        (".sha1", Class::ChecksumSidecar),
        (".info", Class::InfoSidecar),
        (".part", Class::PartialDownload),
        (".converted", Class::PartialDownload),
    ] {
        if let Some(stem) = name.strip_suffix(ext)
            && !stem.is_empty()
        {
            let inner = classify(stem);
            n.class = class;
            n.fingerprint = inner.fingerprint;
            n.resize_suffix = inner.resize_suffix;
            n.belongs_to = Some(stem.to_owned());
            return n;
        }
    }
    if is_hex40(name) {
        n.class = Class::Original;
        n.fingerprint = Some(name.to_ascii_lowercase());
        return n;
    }
    if let Some((fp, suffix)) = name.split_at_checked(40)
        && is_hex40(fp)
        && let Some(s) = suffix.strip_prefix('_')
    {
        if s == "sm" {
            n.class = Class::SmallLegacy;
        } else if digits(s) {
            n.class = Class::ResizedLegacy;
        } else {
            return n;
        }
        n.fingerprint = Some(fp.to_ascii_lowercase());
        n.resize_suffix = Some(s.to_owned());
        return n;
    }
    let parts: Vec<&str> = name.split('_').collect();
    match parts.as_slice() {
        ["swap", size] if digits(size) => n.class = Class::Swap,
        ["ephemeral", size, ext]
            if digits(size) && ext.len() == 7 && ext.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            n.class = Class::Ephemeral;
        }
        ["ephemeral", size, _] if digits(size) => n.class = Class::EphemeralLegacy,
        ["ephemeral", num, size, _] if digits(num) && digits(size) => {
            n.class = Class::EphemeralLegacy;
        }
        _ if is_uuid(name) || digits(name) => n.class = Class::KernelRawId,
        _ => {}
    }
    n
}

/// Whether cachewalk understands `class` as a cached image Nova itself
/// may remove once unused (what `remove` accepts at all).
pub fn removable(class: Class) -> bool {
    matches!(
        class,
        Class::Original
            | Class::ResizedLegacy
            | Class::SmallLegacy
            | Class::Swap
            | Class::Ephemeral
            | Class::EphemeralLegacy
    )
}

/// Nova's ephemeral file name for `size_gb` formatted with `fs_label`
/// (the `virt_mkfs` command, or `default_ephemeral_format`, or `vfat`):
/// `ephemeral_<GiB>_<first 7 hex digits of MD5(label)>`.
pub fn ephemeral_name(size_gb: u64, fs_label: &str) -> String {
    use md5::Digest;
    let hex = system::hash::hex(&md5::Md5::digest(fs_label.as_bytes()));
    format!("ephemeral_{size_gb}_{}", &hex[..7])
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0d5e6b61602d758984b3bf038267614d6016eb2a";

    #[test]
    fn every_name_class_and_novas_bucket() {
        let c = |n: &str| {
            let x = classify(n);
            (x.class, x.nova)
        };
        use Class as C;
        use NovaClass as N;
        assert_eq!(c(FP), (C::Original, N::Original));
        assert_eq!(c(&format!("{FP}_10")), (C::ResizedLegacy, N::Resized));
        assert_eq!(
            c(&format!("{FP}_10737418240")),
            (C::ResizedLegacy, N::Resized)
        );
        assert_eq!(c(&format!("{FP}_sm")), (C::SmallLegacy, N::Resized));
        assert_eq!(c("swap_512"), (C::Swap, N::Swap));
        assert_eq!(c("swap_x"), (C::Unknown, N::Ignored));
        assert_eq!(c("ephemeral_20_40d1321"), (C::Ephemeral, N::Ephemeral));
        // Grizzly-Juno names: Nova takes the 7-character ones only.
        assert_eq!(
            c("ephemeral_20_default"),
            (C::EphemeralLegacy, N::Ephemeral)
        );
        assert_eq!(c("ephemeral_20_linux"), (C::EphemeralLegacy, N::Ignored));
        assert_eq!(c("ephemeral_0_20_linux"), (C::EphemeralLegacy, N::Ignored));
        // Sidecars: ignored by Nova next to an original, but in the
        // resized bucket next to a resized file (and removed after 1 h).
        assert_eq!(c(&format!("{FP}.sha1")), (C::ChecksumSidecar, N::Ignored));
        assert_eq!(c(&format!("{FP}.info")), (C::InfoSidecar, N::Ignored));
        assert_eq!(c(&format!("{FP}_sm.info")), (C::InfoSidecar, N::Resized));
        assert_eq!(
            c(&format!("{FP}_10.sha1")),
            (C::ChecksumSidecar, N::Resized)
        );
        assert_eq!(c(&format!("{FP}.part")), (C::PartialDownload, N::Ignored));
        assert_eq!(
            c(&format!("{FP}.converted")),
            (C::PartialDownload, N::Ignored)
        );
        assert_eq!(
            c("fd0cb2f1-8375-44c9-b1f4-3e1f4c4a8ef0"),
            (C::KernelRawId, N::Ignored)
        );
        assert_eq!(c("42"), (C::KernelRawId, N::Ignored));
        // Any 40-character name is an original to Nova.
        let forty = "x".repeat(40);
        assert_eq!(c(&forty), (C::Unknown, N::Original));
        assert_eq!(
            c(&format!("{}_{}", "y".repeat(40), "zz")),
            (C::Unknown, N::Resized)
        );
        assert_eq!(c("notes.txt"), (C::Unknown, N::Ignored));
        // Python counts characters, not bytes; extra parts are no swap.
        assert_eq!(nova_class(&"é".repeat(40)), N::Original);
        assert_eq!(nova_class(&format!("{}_ab", "é".repeat(40))), N::Resized);
        assert_eq!(nova_class(&format!("{}_a", "é".repeat(40))), N::Ignored);
        assert_eq!(nova_class("swap_1_2"), N::Ignored);
        assert_eq!(nova_class("swap_"), N::Ignored);
        assert_eq!(nova_class("ephemeral_1_abcdefg_x"), N::Ignored);
        assert_eq!(nova_class("ephemeral_1_abcdéfg"), N::Ephemeral);
    }

    #[test]
    fn class_names_are_the_serialized_ones() {
        use Class as C;
        for c in [
            C::Original,
            C::ResizedLegacy,
            C::SmallLegacy,
            C::Swap,
            C::Ephemeral,
            C::EphemeralLegacy,
            C::KernelRawId,
            C::PartialDownload,
            C::ChecksumSidecar,
            C::InfoSidecar,
            C::Unknown,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn fingerprints_suffixes_and_owners() {
        let n = classify(&format!("{FP}_10.sha1"));
        assert_eq!(n.fingerprint.as_deref(), Some(FP));
        assert_eq!(n.resize_suffix.as_deref(), Some("10"));
        assert_eq!(n.belongs_to, Some(format!("{FP}_10")));
        let n = classify(&FP.to_uppercase());
        assert_eq!(n.fingerprint.as_deref(), Some(FP));
    }

    #[test]
    fn ephemeral_names_hash_the_label() {
        // md5("vfat") = 0706d669ba515649494d4829ffe1ea2c (md5sum)
        assert_eq!(ephemeral_name(20, "vfat"), "ephemeral_20_0706d66");
    }
}

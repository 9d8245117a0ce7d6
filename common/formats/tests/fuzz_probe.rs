//! Property tests (run in CI as part of `make test`): the native probe
//! never panics and never reads without bound, whatever the bytes: random
//! data, and real images (the committed hostile corpus) with random bytes
//! overwritten, extreme integers planted in header fields, and truncation.
#![cfg(test)]

use formats::{probe, score};
use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// The first 64 KiB of every image of the hostile corpus.
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hostile/images");
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e != "tsv"))
            .map(|p| {
                let mut b = std::fs::read(&p).unwrap();
                b.truncate(64 << 10);
                (p.to_string_lossy().into_owned(), b)
            })
            .collect();
        v.sort();
        assert!(v.len() >= 20);
        v.into_iter().map(|(_, b)| b).collect()
    })
}

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 511),
        Just(1 << 63),
        Just(u32::MAX as u64),
        Just(0x7fff_ffff),
        any::<u64>(),
    ]
}

/// `PROPTEST_CASES` raises the count for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = probe(&data, "x", None);
    }

    #[test]
    fn mutated_real_headers_never_panic(
        seed in 0usize..64,
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..8),
        plants in proptest::collection::vec((0usize..1024, extreme(), any::<bool>()), 0..4),
        cut in proptest::option::of(0usize..70000),
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        for (off, b) in flips {
            if let Some(x) = data.get_mut(off) { *x = b; }
        }
        for (off, v, big_endian) in plants {
            let bytes = if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            if off + 8 <= data.len() { data[off..off + 8].copy_from_slice(&bytes); }
        }
        if let Some(c) = cut { data.truncate(c); }
        if let Ok(p) = probe(&data, "dir/x", None) {
            let info = p.to_info();
            prop_assert!(info.contains_key("format"));
            prop_assert!(info["virtual_size"].is_u64());
        }
    }

    /// The probe never calls raw what qemu's probing opens as another
    /// format: it answers that format or fails naming it. Names ending in
    /// `.dmg` are drawn too (qemu's dmg probe goes by the name).
    #[test]
    fn never_raw_where_qemu_probes_a_format(
        seed in 0usize..64,
        flips in proptest::collection::vec((0usize..2048, any::<u8>()), 0..8),
        magic in 0usize..16,
        cut in proptest::option::of(0usize..4096),
        dmg_name in any::<bool>(),
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        // Plant a magic qemu probes for, sometimes.
        const MAGICS: &[(usize, &[u8])] = &[
            (0, b"QED\0"),
            (0, b"QFI\xfb\0\0\0\x03"),
            (0x40, b"\x7f\x10\xda\xbe"),
            (0, b"Bochs Virtual HD Image\0"),
            (0, b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"),
            (0, b"conectix"),
            (0, b"vhdxfile"),
            (0, b"KDMV"),
            (0, b"WithouFreSpacExt\x02\0\0\0"),
            (0, b"LUKS\xba\xbe\0\x01"),
        ];
        if let Some((at, m)) = MAGICS.get(magic) {
            if data.len() < at + m.len() { data.resize(at + m.len(), 0); }
            data[*at..at + m.len()].copy_from_slice(m);
        }
        for (off, b) in flips {
            if let Some(x) = data.get_mut(off) { *x = b; }
        }
        if let Some(c) = cut { data.truncate(c); }
        let name = if dmg_name { "dir/x.dmg" } else { "dir/x" };
        let pick = score::pick(&data, data.len() as u64, name);
        if let Ok(p) = probe(&data, name, None) {
            let format = p.format.as_str();
            match pick {
                Some(q) => prop_assert_eq!(format, q.format),
                None => prop_assert_eq!(format, "raw"),
            }
        }
    }

    #[test]
    fn forced_formats_never_panic(
        seed in 0usize..64,
        fmt in prop::sample::select(formats::known_formats()),
        cut in 0usize..70000,
    ) {
        let seeds = seeds();
        let mut data = seeds[seed % seeds.len()].clone();
        data.truncate(cut);
        let _ = probe(&data, "x", Some(fmt));
    }
}

//! The fuzz target for the VHD parsers (run in CI as part of `make test`;
//! `PROPTEST_CASES=100000 cargo test -p vhd-chain --test fuzz` for a long
//! run): real images (dynamic with big and small blocks, differencing,
//! fixed, blktap with a batmap) with random bytes overwritten, extreme
//! values planted in footer, header and BAT fields (checksums redone, so
//! the parsers get past them), and truncation, fed to every reader: the
//! chain reader, `check` (with `--data`), the layout reader, `resize` and
//! `info`. None may panic; each answers with a typed error or a result.
#![cfg(test)]

mod support;

use proptest::prelude::*;
use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;
use support::{Spec, build_vhd, fix_sum};
use vhd_chain::write::DynamicWriter;

const MIB: u64 = 1 << 20;

/// The seed images, as bytes.
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s.vhd");
        let mut v = Vec::new();
        let specs = [
            (4 * MIB, 2 * MIB, None, vec![(0, 8, 1), (4100, 3, 0)]),
            (MIB, 4096, None, vec![(0, 1, 2), (9, 17, 3), (2047, 1, 4)]),
            (
                2 * MIB,
                512,
                Some(([1; 16], "p.vhd".to_string())),
                vec![(3, 2, 5)],
            ),
        ];
        for (size, block, parent, runs) in specs {
            build_vhd(
                &p,
                &Spec {
                    size,
                    block,
                    creator: *b"tap\0",
                    uuid: [9; 16],
                    parent,
                    runs,
                },
            );
            v.push(std::fs::read(&p).unwrap());
        }
        // blktap layout with a batmap, from the crate's writer.
        let mut w = DynamicWriter::new(Cursor::new(Vec::new()), 4 * MIB, [3; 16], 1).unwrap();
        use std::io::Write;
        w.write_all(&vec![7u8; MIB as usize]).unwrap();
        w.write_hole(3 * MIB).unwrap();
        v.push(w.finish().unwrap().0.into_inner());
        // Fixed: data then the footer (type 2).
        let mut fixed = vec![0x5au8; 64 * 1024];
        let mut footer = v[0][..512].to_vec();
        footer[40..48].copy_from_slice(&(64u64 * 1024).to_be_bytes());
        footer[48..56].copy_from_slice(&(64u64 * 1024).to_be_bytes());
        footer[60..64].copy_from_slice(&2u32.to_be_bytes());
        footer[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        fix_sum(&mut footer, 64);
        fixed.extend_from_slice(&footer);
        v.push(fixed);
        v
    })
}

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(511),
        Just(512),
        Just(u64::MAX),
        Just(u64::MAX - 511),
        Just(1 << 63),
        Just(u64::from(u32::MAX)),
        Just(0x8000_0000),
        Just(1 << 41),
        any::<u64>(),
    ]
}

/// Field offsets (from the start of the footer or header) and widths.
const FOOTER_FIELDS: &[(usize, usize)] = &[(16, 8), (40, 8), (48, 8), (56, 4), (60, 4)];
const HEADER_FIELDS: &[(usize, usize)] = &[(8, 8), (16, 8), (28, 4), (32, 4)];

/// `PROPTEST_CASES` raises the count for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every reader over the file at `p`: none may panic.
fn exercise(p: &Path) {
    if let Ok(mut c) = vhd_chain::read::Chain::open(&[p.to_path_buf()])
        && c.virtual_size() <= 64 * MIB
    {
        let _ = c.digest(0, c.virtual_size());
        let _ = c.data_pieces(2 * MIB);
    }
    let opts = vhd_chain::check::Options {
        data: true,
        ignore_timestamps: true,
    };
    let _ = vhd_chain::check::check_file(p, &opts);
    if let Ok(f) = std::fs::File::open(p)
        && let Ok(l) = vhd_chain::layout::Layout::read(&f)
        && l.size <= 64 * MIB
    {
        let _ = vhd_chain::resize::resize(p, l.size + 4 * MIB, vhd_chain::patch::Mode::Copy);
    }
    let _ = vhd_chain::vhd_facts(p);
}

fn plant(b: &mut [u8], at: usize, width: usize, v: u64) {
    if at + width <= b.len() {
        let bytes = v.to_be_bytes();
        b[at..at + width].copy_from_slice(&bytes[8 - width..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    #[test]
    fn overwritten_bytes_never_panic(
        seed in 0usize..5,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<bool>()), 1..12),
    ) {
        let mut b = seeds()[seed].clone();
        let l = b.len();
        for (at, val, tail) in edits {
            // Mostly the metadata: the first 4 KiB and the end footer.
            let i = if tail { l - 1 - (usize::from(at) % 512) } else { usize::from(at) % l.min(4096) };
            b[i] = val;
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.vhd");
        std::fs::write(&p, &b).unwrap();
        exercise(&p);
    }

    #[test]
    fn extreme_fields_with_good_checksums_never_panic(
        seed in 0usize..5,
        footer_edits in proptest::collection::vec((0usize..5, extreme()), 0..3),
        header_edits in proptest::collection::vec((0usize..4, extreme()), 0..3),
        bat_edits in proptest::collection::vec((0usize..8, extreme()), 0..3),
        cut in prop_oneof![Just(None), (0usize..70_000).prop_map(Some)],
    ) {
        let mut b = seeds()[seed].clone();
        let l = b.len();
        for &foot in &[0usize, l - 512] {
            for (f, v) in &footer_edits {
                let (at, w) = FOOTER_FIELDS[*f];
                plant(&mut b, foot + at, w, *v);
            }
            fix_sum(&mut b[foot..foot + 512], 64);
        }
        if l > 1536 && &b[512..520] == b"cxsparse" {
            for (f, v) in &header_edits {
                let (at, w) = HEADER_FIELDS[*f];
                plant(&mut b, 512 + at, w, *v);
            }
            for (i, v) in &bat_edits {
                plant(&mut b, 1536 + 4 * i, 4, *v);
            }
            fix_sum(&mut b[512..1536], 36);
        }
        if let Some(n) = cut {
            b.truncate(n.min(l));
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.vhd");
        std::fs::write(&p, &b).unwrap();
        exercise(&p);
    }

    /// coalesce of a damaged child into a good parent: never a panic, and
    /// the parent is either unchanged or a good VHD.
    #[test]
    fn coalescing_a_damaged_child_never_panics(
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), any::<bool>()), 1..8),
    ) {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("p.vhd");
        build_vhd(&parent, &Spec::base(2 * MIB, 2 * MIB, 1, &[(0, 8, 1)]));
        let mut b = seeds()[2].clone();
        let l = b.len();
        for (at, val, tail) in edits {
            let i = if tail { l - 1 - (usize::from(at) % 512) } else { usize::from(at) % l.min(4096) };
            b[i] = val;
        }
        let child = t.path().join("c.vhd");
        std::fs::write(&child, &b).unwrap();
        let before = std::fs::read(&parent).unwrap();
        if vhd_chain::coalesce::coalesce(&child, Some(&parent), vhd_chain::patch::Mode::Copy).is_err() {
            prop_assert!(std::fs::read(&parent).unwrap() == before);
        } else {
            prop_assert!(vhd_chain::read::Chain::open(std::slice::from_ref(&parent)).is_ok());
        }
    }
}

//! Property tests (run in CI): the qemu-img output parsers never panic on
//! random bytes or on real captures with bytes changed, lines dropped or
//! duplicated, and indentation shifted.
#![cfg(test)]

use imginfo_parse::human::parse_block;
use imginfo_parse::input::{Doc, DocReader, InputMode};
use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

fn captures() -> &'static Vec<Vec<u8>> {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qemu/10.0.2");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let s = p.to_string_lossy();
                s.ends_with(".human.txt") || s.ends_with(".json")
            })
            .collect();
        v.sort();
        v.iter().map(|p| std::fs::read(p).unwrap()).collect()
    })
}

fn drive(input: &[u8], mode: InputMode) {
    let mut r = DocReader::new(input, mode);
    while let Some(doc) = r.next_doc().unwrap() {
        if let Doc::Human { lines, .. } = doc {
            let _ = parse_block(&lines);
        }
    }
}

/// `PROPTEST_CASES` raises the count for a longer run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        drive(&data, InputMode::Auto);
        drive(&data, InputMode::Human);
    }

    #[test]
    fn mutated_captures(
        pick in 0usize..200,
        flips in proptest::collection::vec((0usize..8192, prop::sample::select(
            vec![b' ', b'\n', b':', b'{', b'}', b'[', b']', b'"', b'\\', b'(', b')', b'0', b'9', 0xff, b'-', b'.'])), 0..12),
        cut in proptest::option::of(0usize..8192),
        indent in 0usize..6,
    ) {
        let caps = captures();
        let mut data = caps[pick % caps.len()].clone();
        for (off, b) in flips {
            if let Some(x) = data.get_mut(off) { *x = b; }
        }
        if let Some(c) = cut { data.truncate(c); }
        drive(&data, InputMode::Auto);
        // Shift every line's indentation.
        let shifted: Vec<u8> = data
            .split(|&b| b == b'\n')
            .flat_map(|l| std::iter::repeat_n(b' ', indent).chain(l.iter().copied()).chain([b'\n']))
            .collect();
        drive(&shifted, InputMode::Human);
    }
}

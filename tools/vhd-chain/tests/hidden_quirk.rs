//! blktap's hidden-flag quirk (notes/vhd.md section 2.3: early `tap` 0.1
//! and 1.1 set `hidden` without updating the footer checksum) is one rule
//! for every subcommand: a VHD whose footers carry it, which `check`
//! accepts and `cat` reads, is also resized and coalesced into, not "not
//! a VHD".
#![cfg(test)]

mod support;

use formats::vhd::{Footer, FooterChecksum};
use std::path::{Path, PathBuf};
use support::{Spec, build_vhd, fix_sum, model_runs};
use vhd_chain::check::{Options, check_file};
use vhd_chain::patch::Mode;
use vhd_chain::read::Chain;

const MIB: u64 = 1 << 20;

/// Turn both footers of `p` into old-blktap ones: creator `tap` 1.1,
/// checksum sealed, then `hidden` set without resealing.
fn make_quirky(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let l = b.len();
    for at in [0, l - 512] {
        let f = &mut b[at..at + 512];
        f[32..36].copy_from_slice(&0x0001_0001u32.to_be_bytes());
        fix_sum(f, 64);
        f[85] = 1;
        assert_eq!(
            Footer::decode(f).checksum_state(),
            FooterChecksum::HiddenQuirk
        );
    }
    std::fs::write(p, &b).unwrap();
}

fn raw(chain: &[PathBuf]) -> Vec<u8> {
    let mut v = Vec::new();
    Chain::open(chain).unwrap().copy_to(&mut v).unwrap();
    v
}

fn assert_valid(p: &Path) {
    let r = check_file(p, &Options::default()).unwrap();
    assert!(r.valid, "{}: {:#?}", p.display(), r.findings);
}

#[test]
fn a_quirky_footer_check_accepts_is_read_resized_and_coalesced_into() {
    let t = tempfile::tempdir().unwrap();
    let (child, parent) = (t.path().join("0.vhd"), t.path().join("1.vhd"));
    let size = 8 * MIB;
    let base_runs = [(0, 100, 0x11), (5000, 300, 0x22)];
    let child_runs = [(50, 100, 0x33), (9000, 8, 0x44)];
    build_vhd(&parent, &Spec::base(size, 2 * MIB, 0xb0, &base_runs));
    build_vhd(
        &child,
        &Spec::child(size, 2 * MIB, 0xc0, (0xb0, "1.vhd"), &child_runs),
    );
    make_quirky(&parent);

    // check accepts it, cat reads it.
    assert_valid(&parent);
    let mut want = vec![0u8; size as usize];
    model_runs(&mut want, &base_runs);
    assert!(raw(std::slice::from_ref(&parent)) == want);

    // resize grows it (a copy, so the parent stays quirky for coalesce).
    let grown = t.path().join("grown.vhd");
    std::fs::copy(&parent, &grown).unwrap();
    let done = vhd_chain::resize::resize(&grown, 2 * size, Mode::Copy).unwrap();
    assert_eq!(done.to_size, 2 * size);
    assert_valid(&grown);
    let mut want_grown = want.clone();
    want_grown.resize(2 * size as usize, 0);
    assert!(raw(&[grown]) == want_grown);

    // coalesce merges the child into it.
    model_runs(&mut want, &child_runs);
    assert!(raw(&[child.clone(), parent.clone()]) == want);
    let done = vhd_chain::coalesce::coalesce(&child, Some(&parent), Mode::Copy).unwrap();
    assert_eq!(done.sectors_coalesced, 108);
    assert_valid(&parent);
    assert!(raw(&[parent]) == want);
}

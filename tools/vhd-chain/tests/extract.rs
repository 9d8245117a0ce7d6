//! `extract` against real tarballs: good XenServer exports made the way
//! os-xenapi makes them (`tar -zc --directory=STAGING .`), and hostile ones,
//! made with GNU tar where it can and byte by byte where it cannot (devices as
//! non-root, lying sizes, pax renames, non-UTF-8 names, duplicates). Every
//! refusal must name the member, leave the scratch directory empty and
//! create nothing outside it.
#![cfg(test)]

use filter::ErrorKind;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use vhd_chain::extract::{ExtractError, Limits, Member, extract};

/// A test area: `root/src` (sources), `root/scratch` (the destination), and
/// the tarballs in `root`.
struct Area {
    root: TempDir,
}

impl Area {
    fn new() -> Area {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("src")).unwrap();
        fs::create_dir(root.path().join("scratch")).unwrap();
        Area { root }
    }
    fn root(&self) -> &Path {
        self.root.path()
    }
    fn src(&self) -> PathBuf {
        self.root().join("src")
    }
    fn scratch(&self) -> PathBuf {
        self.root().join("scratch")
    }
    fn tarball(&self) -> PathBuf {
        self.root().join("t.tgz")
    }
    /// Run a shell command in `root` (`$SRC`, `$ROOT` and `$T` are set).
    fn sh(&self, cmd: &str) {
        let out = Command::new("bash")
            .arg("-ec")
            .arg(cmd)
            .current_dir(self.root())
            .env("ROOT", self.root())
            .env("SRC", self.src())
            .env("T", self.tarball())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn write_tarball(&self, bytes: &[u8]) {
        fs::write(self.tarball(), bytes).unwrap();
    }
}

/// Every path under `root`, not following symlinks.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: reproducible, no extra dependency.
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Extract with `limits`, expect a refusal of `kind` naming `member`, and
/// check that the scratch directory is empty and nothing else under the
/// test root changed (the traversal targets live there).
fn refused(area: &Area, limits: &Limits, kind: ErrorKind, member: Option<&str>) -> ExtractError {
    let err = refused_any(area, limits, kind);
    assert_eq!(err.member(), member, "{err}");
    err
}

/// [`refused`] without the member check.
fn refused_any(area: &Area, limits: &Limits, kind: ErrorKind) -> ExtractError {
    let before = tree(area.root());
    let err = extract(&area.tarball(), &area.scratch(), limits).unwrap_err();
    eprintln!("refused: {err}");
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(
        fs::read_dir(area.scratch()).unwrap().count(),
        0,
        "scratch not empty after {err}"
    );
    assert_eq!(tree(area.root()), before, "files changed outside scratch");
    err
}

fn refused_default(area: &Area, kind: ErrorKind, member: &str) -> ExtractError {
    refused(area, &Limits::default(), kind, Some(member))
}

// ---------------------------------------------------------------- builders

/// A GNU header block with a raw name (no validation: hostile names welcome).
fn raw_header(name: &[u8], kind: u8, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_cksum();
    h
}

/// A member: header (declaring `declared`, default the data's length), data,
/// padding to 512.
fn raw_member(out: &mut Vec<u8>, name: &[u8], kind: u8, data: &[u8], declared: Option<u64>) {
    let h = raw_header(name, kind, declared.unwrap_or(data.len() as u64));
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// A pax `x` header carrying `records` for the next member.
fn pax_header(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
    let mut body = Vec::new();
    for (k, v) in records {
        // "<len> <key>=<value>\n", where len counts itself.
        let rest = k.len() + v.len() + 3;
        let len = (1..10)
            .map(|d| d + rest)
            .find(|n| n.to_string().len() + rest == *n)
            .unwrap();
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    raw_member(out, b"./PaxHeaders/x", b'x', &body, None);
}

fn end_of_archive(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; 1024]);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------- good archives

/// The os-xenapi layout: `./`, `./N.vhd` in readdir order, random contents.
fn xenserver_area(tar_flags: &str) -> (Area, Vec<Vec<u8>>) {
    let area = Area::new();
    let sizes = [1000usize, 70_001, 3 * 1024 * 1024 + 7];
    let mut contents = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let data = random_bytes(*n, i as u64 + 7);
        fs::write(area.src().join(format!("{i}.vhd")), &data).unwrap();
        contents.push(data);
    }
    area.sh(&format!(
        "touch -d @1700000000 \"$SRC\"/*.vhd && tar {tar_flags} --directory=\"$SRC\" -f \"$T\" ."
    ));
    (area, contents)
}

/// Member names in archive order, as GNU tar lists them.
fn listed(area: &Area, list_flags: &str) -> Vec<String> {
    let out = Command::new("tar")
        .args([list_flags, "-f"])
        .arg(area.tarball())
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| *l != "./")
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect()
}

fn check_good(area: &Area, contents: &[Vec<u8>], members: &[Member], order: &[String]) {
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, order.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(members.len(), contents.len());
    for m in members {
        let index = m.index.unwrap();
        let data = &contents[index as usize];
        assert_eq!(m.name, format!("{index}.vhd"));
        assert_eq!(m.path, area.scratch().join(&m.name));
        assert_eq!(m.size, data.len() as u64);
        assert_eq!(m.mtime, Some(1_700_000_000));
        assert!(fs::read(&m.path).unwrap() == *data, "{} differs", m.name);
        let mode = fs::metadata(&m.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        fs::read_dir(area.scratch()).unwrap().count(),
        contents.len()
    );
}

#[test]
fn xenserver_tarball_is_extracted_byte_exact_in_archive_order() {
    let (area, contents) = xenserver_area("-zc");
    let members = extract(&area.tarball(), &area.scratch(), &Limits::default()).unwrap();
    check_good(&area, &contents, &members, &listed(&area, "-tz"));
    // Records serialise for the step record.
    let v = serde_json::to_value(&members[0]).unwrap();
    assert!(v.get("name").is_some() && v.get("size").is_some() && v.get("mtime").is_some());
}

#[test]
fn plain_tar_and_pax_format_are_accepted() {
    for flags in ["-c", "-c --format=posix", "-zc --format=ustar"] {
        let (area, contents) = xenserver_area(flags);
        let members = extract(&area.tarball(), &area.scratch(), &Limits::default()).unwrap();
        let list = if flags.starts_with("-z") { "-tz" } else { "-t" };
        check_good(&area, &contents, &members, &listed(&area, list));
    }
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let (area, contents) = xenserver_area("-c");
    // Split the plain tar in two and gzip each half: `gzip -d` reads it back
    // as one stream, and so must we.
    area.sh("head -c 100000 \"$T\" | gzip > a.gz; tail -c +100001 \"$T\" | gzip > b.gz; cat a.gz b.gz > \"$T\"");
    let members = extract(&area.tarball(), &area.scratch(), &Limits::default()).unwrap();
    check_good(&area, &contents, &members, &listed(&area, "-tz"));
}

#[test]
fn names_without_dot_slash_and_an_empty_archive() {
    let area = Area::new();
    fs::write(area.src().join("0.vhd"), b"leaf").unwrap();
    fs::write(area.src().join("1.vhd"), b"base").unwrap();
    area.sh("touch -d @1700000000 \"$SRC\"/*.vhd; tar -czf \"$T\" -C \"$SRC\" 1.vhd 0.vhd");
    let members = extract(&area.tarball(), &area.scratch(), &Limits::default()).unwrap();
    let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["1.vhd", "0.vhd"]);
    assert_eq!(fs::read(area.scratch().join("0.vhd")).unwrap(), b"leaf");

    // An empty tar is a tarball with no members; the chain step says
    // chain_empty, not us.
    let area = Area::new();
    area.sh("tar -czf \"$T\" -T /dev/null");
    assert!(
        extract(&area.tarball(), &area.scratch(), &Limits::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn pax_path_that_renames_to_a_good_name_wins() {
    let area = Area::new();
    let mut t = Vec::new();
    pax_header(&mut t, &[("path", b"1.vhd"), ("mtime", b"1600000000.5")]);
    raw_member(&mut t, b"evil.txt", b'0', b"hello", None);
    end_of_archive(&mut t);
    area.write_tarball(&gzip(&t));
    let members = extract(&area.tarball(), &area.scratch(), &Limits::default()).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "1.vhd");
    assert_eq!(members[0].mtime, Some(1_600_000_000));
    assert_eq!(fs::read(area.scratch().join("1.vhd")).unwrap(), b"hello");
}

// ---------------------------------------------------------------- traversal

#[test]
fn dot_dot_member_is_refused() {
    let area = Area::new();
    fs::write(area.src().join("0.vhd"), b"x").unwrap();
    area.sh("tar -czPf \"$T\" --transform 's,^,../,' -C \"$SRC\" 0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, "../0.vhd");
    assert!(!area.root().join("0.vhd").exists());
}

#[test]
fn deep_traversal_is_refused() {
    let area = Area::new();
    fs::write(area.src().join("0.vhd"), b"root::0:0::/:/bin/sh\n").unwrap();
    area.sh("tar -czPf \"$T\" --transform 's,.*,x/../../etc/passwd,' -C \"$SRC\" 0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, "x/../../etc/passwd");
    assert!(!area.root().join("etc").exists());
}

#[test]
fn absolute_members_are_refused() {
    let area = Area::new();
    fs::write(area.src().join("0.vhd"), b"x").unwrap();
    let target = area.root().join("abs-0.vhd");
    area.sh("tar -czPf \"$T\" --transform \"s,.*,$ROOT/abs-0.vhd,\" -C \"$SRC\" 0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, target.to_str().unwrap());
    assert!(!target.exists());

    let existed = Path::new("/tmp/0.vhd").exists();
    area.sh("tar -czPf \"$T\" --transform 's,.*,/tmp/0.vhd,' -C \"$SRC\" 0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, "/tmp/0.vhd");
    assert_eq!(Path::new("/tmp/0.vhd").exists(), existed);
}

#[test]
fn pax_path_to_an_unsafe_name_is_refused() {
    let area = Area::new();
    let mut t = Vec::new();
    pax_header(&mut t, &[("path", b"../../evil")]);
    raw_member(&mut t, b"0.vhd", b'0', b"hello", None);
    end_of_archive(&mut t);
    area.write_tarball(&gzip(&t));
    refused_default(&area, ErrorKind::UnsafeMember, "../../evil");
    assert!(!area.root().join("../evil").exists());
}

#[test]
fn nested_members_and_directories_are_refused() {
    let area = Area::new();
    fs::create_dir(area.src().join("a")).unwrap();
    fs::write(area.src().join("a/0.vhd"), b"x").unwrap();
    area.sh("tar -czf \"$T\" -C \"$SRC\" a/0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, "a/0.vhd");
    assert!(!area.scratch().join("a").exists());

    // With the directory itself, the directory entry is the first refusal.
    area.sh("tar -czf \"$T\" -C \"$SRC\" a");
    refused_default(&area, ErrorKind::UnsafeMember, "a/");
}

// ---------------------------------------------------------------- types

#[test]
fn symlink_is_refused() {
    let area = Area::new();
    std::os::unix::fs::symlink("/etc/passwd", area.src().join("0.vhd")).unwrap();
    area.sh("tar -czf \"$T\" -C \"$SRC\" 0.vhd");
    let err = refused_default(&area, ErrorKind::UnsafeMember, "0.vhd");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn hardlink_is_refused_and_earlier_members_are_removed() {
    let area = Area::new();
    fs::write(area.src().join("0.vhd"), random_bytes(5000, 1)).unwrap();
    fs::hard_link(area.src().join("0.vhd"), area.src().join("1.vhd")).unwrap();
    area.sh("tar -czf \"$T\" -C \"$SRC\" 0.vhd 1.vhd");
    // 0.vhd is written first, then removed when 1.vhd (the link) is refused.
    let err = refused_default(&area, ErrorKind::UnsafeMember, "1.vhd");
    assert!(err.to_string().contains("hard link"), "{err}");
}

#[test]
fn fifo_is_refused() {
    let area = Area::new();
    area.sh("mkfifo \"$SRC/0.vhd\" && tar -czf \"$T\" -C \"$SRC\" 0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, "0.vhd");
}

#[test]
fn devices_are_refused() {
    for (kind, what) in [(b'3', "character device"), (b'4', "block device")] {
        let area = Area::new();
        let mut t = Vec::new();
        raw_member(&mut t, b"./0.vhd", b'0', b"good", None);
        raw_member(&mut t, b"./1.vhd", kind, b"", None);
        end_of_archive(&mut t);
        area.write_tarball(&gzip(&t));
        let err = refused_default(&area, ErrorKind::UnsafeMember, "./1.vhd");
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn sparse_members_are_refused() {
    // GNU format: type 'S'.
    let area = Area::new();
    area.sh("truncate -s 4M \"$SRC/0.vhd\"; printf x >> \"$SRC/0.vhd\"; tar -S -czf \"$T\" -C \"$SRC\" 0.vhd");
    refused_default(&area, ErrorKind::UnsafeMember, "0.vhd");
    // pax format 1.0: the header names GNUSparseFile.N/0.vhd.
    area.sh("tar -S --format=posix -czf \"$T\" -C \"$SRC\" 0.vhd");
    let err = refused_any(&area, &Limits::default(), ErrorKind::UnsafeMember);
    assert!(
        err.member().unwrap().starts_with("./GNUSparseFile."),
        "{err}"
    );
    assert!(err.to_string().contains("sparse"), "{err}");
    // pax format 0.1 keeps the name and says GNU.sparse.* in pax records.
    let area = Area::new();
    let mut t = Vec::new();
    pax_header(&mut t, &[("GNU.sparse.size", b"4194305")]);
    raw_member(&mut t, b"0.vhd", b'0', b"x", None);
    end_of_archive(&mut t);
    area.write_tarball(&gzip(&t));
    refused_default(&area, ErrorKind::UnsafeMember, "0.vhd");
}

#[test]
fn pax_global_header_is_refused() {
    let area = Area::new();
    let mut t = Vec::new();
    raw_member(
        &mut t,
        b"pax_global_header",
        b'g',
        b"20 comment=abcdefgh\n",
        None,
    );
    raw_member(&mut t, b"0.vhd", b'0', b"x", None);
    end_of_archive(&mut t);
    area.write_tarball(&t);
    refused_default(&area, ErrorKind::UnsafeMember, "pax_global_header");
}

// ---------------------------------------------------------------- names

#[test]
fn other_names_are_unexpected() {
    for name in ["evil.txt", "00.vhd", "0.VHD", "Snap.vhd", "disk.vhd"] {
        let area = Area::new();
        fs::write(area.src().join(name), b"x").unwrap();
        area.sh(&format!("tar -czf \"$T\" -C \"$SRC\" {name}"));
        refused_default(&area, ErrorKind::UnexpectedMember, name);
    }
}

#[test]
fn duplicates_are_refused() {
    for (a, b) in [(&b"0.vhd"[..], &b"0.vhd"[..]), (b"./0.vhd", b"0.vhd")] {
        let area = Area::new();
        let mut t = Vec::new();
        raw_member(&mut t, a, b'0', b"first", None);
        raw_member(&mut t, b"1.vhd", b'0', b"other", None);
        raw_member(&mut t, b, b'0', b"second", None);
        end_of_archive(&mut t);
        area.write_tarball(&gzip(&t));
        let err = refused_default(
            &area,
            ErrorKind::UnsafeMember,
            std::str::from_utf8(b).unwrap(),
        );
        assert!(err.to_string().contains("duplicate"), "{err}");
    }
}

#[test]
fn non_utf8_and_nul_names_are_refused() {
    let area = Area::new();
    let mut t = Vec::new();
    raw_member(&mut t, b"\xff\xfe.vhd", b'0', b"x", None);
    end_of_archive(&mut t);
    area.write_tarball(&gzip(&t));
    refused_default(&area, ErrorKind::UnsafeMember, "\\xff\\xfe.vhd");

    // A pax path can carry what a header cannot: a NUL, a newline.
    let mut t = Vec::new();
    pax_header(&mut t, &[("path", b"0.vhd\0../../x")]);
    raw_member(&mut t, b"0.vhd", b'0', b"x", None);
    end_of_archive(&mut t);
    area.write_tarball(&gzip(&t));
    refused_default(&area, ErrorKind::UnsafeMember, "0.vhd\\u{0}../../x");
}

#[test]
fn existing_file_or_symlink_in_dir_is_never_followed_or_replaced() {
    let area = Area::new();
    let outside = area.root().join("outside");
    std::os::unix::fs::symlink(&outside, area.scratch().join("0.vhd")).unwrap();
    fs::write(area.src().join("1.vhd"), b"one").unwrap();
    fs::write(area.src().join("0.vhd"), b"zero").unwrap();
    area.sh("tar -czf \"$T\" -C \"$SRC\" 1.vhd 0.vhd");
    let err = extract(&area.tarball(), &area.scratch(), &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.member(), Some("0.vhd"));
    assert!(!outside.exists());
    // Ours (1.vhd) removed, theirs (the symlink) left alone.
    assert!(!area.scratch().join("1.vhd").exists());
    assert!(
        fs::symlink_metadata(area.scratch().join("0.vhd"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn destination_must_exist_and_be_a_directory() {
    let area = Area::new();
    fs::write(area.src().join("0.vhd"), b"x").unwrap();
    area.sh("tar -czf \"$T\" -C \"$SRC\" 0.vhd");
    let missing = area.root().join("missing");
    let err = extract(&area.tarball(), &missing, &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!missing.exists());
    let err = extract(&area.tarball(), &area.tarball(), &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let err = extract(&missing, &area.scratch(), &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

// ---------------------------------------------------------------- limits

#[test]
fn gzip_of_a_few_mib_over_a_small_byte_limit() {
    let area = Area::new();
    area.sh("head -c 8M /dev/zero > \"$SRC/0.vhd\"; tar -czf \"$T\" -C \"$SRC\" 0.vhd");
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    refused(&area, &limits, ErrorKind::LimitExceeded, Some("0.vhd"));
}

/// `root/z.gz`: 64 MiB of zeros, gzip'd (about 64 KiB). Concatenated, these
/// make a 10 GiB stream from a few MiB of file.
fn zeros_gz(area: &Area) -> Vec<u8> {
    area.sh("head -c 64M /dev/zero | gzip -9 > z.gz");
    let z = fs::read(area.root().join("z.gz")).unwrap();
    fs::remove_file(area.root().join("z.gz")).unwrap();
    z
}

#[test]
fn gzip_bomb_member_stops_at_the_byte_limit_quickly() {
    let area = Area::new();
    let z = zeros_gz(&area);
    // A header declaring 10 GiB, then 10 GiB of zeros in 160 gzip members.
    let mut t = gzip(raw_header(b"0.vhd", b'0', 10 << 30).as_bytes());
    for _ in 0..160 {
        t.extend_from_slice(&z);
    }
    area.write_tarball(&t);
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    let start = Instant::now();
    refused(&area, &limits, ErrorKind::LimitExceeded, Some("0.vhd"));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn gzip_bomb_behind_the_end_marker_is_refused_quickly() {
    let area = Area::new();
    let z = zeros_gz(&area);
    let mut t = Vec::new();
    raw_member(&mut t, b"0.vhd", b'0', b"small", None);
    end_of_archive(&mut t);
    let mut t = gzip(&t);
    for _ in 0..160 {
        t.extend_from_slice(&z);
    }
    area.write_tarball(&t);
    let start = Instant::now();
    refused(&area, &Limits::default(), ErrorKind::LimitExceeded, None);
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn huge_gnu_long_name_is_refused_without_reading_it_into_memory() {
    let area = Area::new();
    let z = zeros_gz(&area);
    // A GNU long-name header claiming 10 GiB: the tar crate would read it
    // into memory whole.
    let mut t = gzip(raw_header(b"././@LongLink", b'L', 10 << 30).as_bytes());
    for _ in 0..160 {
        t.extend_from_slice(&z);
    }
    area.write_tarball(&t);
    let start = Instant::now();
    refused(&area, &Limits::default(), ErrorKind::LimitExceeded, None);
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn declared_size_over_the_limit_writes_nothing() {
    let area = Area::new();
    let mut t = Vec::new();
    raw_member(&mut t, b"0.vhd", b'0', b"ok", None);
    // Says 5 MiB, carries 100 bytes: refused on the header, before writing.
    raw_member(&mut t, b"1.vhd", b'0', &[7; 100], Some(5 << 20));
    area.write_tarball(&t);
    let limits = Limits {
        max_bytes: 1 << 20,
        ..Limits::default()
    };
    refused(&area, &limits, ErrorKind::LimitExceeded, Some("1.vhd"));
}

#[test]
fn byte_limit_counts_all_members() {
    let area = Area::new();
    let mut t = Vec::new();
    raw_member(&mut t, b"0.vhd", b'0', &[1; 600], None);
    raw_member(&mut t, b"1.vhd", b'0', &[2; 600], None);
    end_of_archive(&mut t);
    area.write_tarball(&t);
    let limits = Limits {
        max_bytes: 1000,
        ..Limits::default()
    };
    refused(&area, &limits, ErrorKind::LimitExceeded, Some("1.vhd"));
    let limits = Limits {
        max_bytes: 1200,
        ..Limits::default()
    };
    assert_eq!(
        extract(&area.tarball(), &area.scratch(), &limits)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn ten_thousand_members_hit_the_member_limit() {
    let area = Area::new();
    let mut t = Vec::new();
    for i in 0..10_000 {
        raw_member(&mut t, format!("./{i}.vhd").as_bytes(), b'0', b"v", None);
    }
    end_of_archive(&mut t);
    area.write_tarball(&gzip(&t));
    let err = refused(
        &area,
        &Limits::default(),
        ErrorKind::LimitExceeded,
        Some("./1000.vhd"),
    );
    assert!(err.to_string().contains("1000 members"), "{err}");
}

// ---------------------------------------------------------------- damage

#[test]
fn truncated_gzip_is_io_truncated() {
    let (area, _) = xenserver_area("-zc");
    let full = fs::read(area.tarball()).unwrap();
    for cut in [full.len() * 6 / 10, full.len() - 4] {
        area.write_tarball(&full[..cut]);
        let err = refused_any(&area, &Limits::default(), ErrorKind::Io);
        assert_eq!(err.detail(), Some("truncated"), "cut at {cut}: {err}");
    }
    // Cut inside the first header: never recognised as a tarball.
    area.write_tarball(&full[..40]);
    refused(&area, &Limits::default(), ErrorKind::NotATarball, None);
}

#[test]
fn truncated_plain_tar_member_is_io_truncated() {
    let area = Area::new();
    let mut t = Vec::new();
    raw_member(&mut t, b"0.vhd", b'0', &[1; 1000], None);
    raw_member(&mut t, b"1.vhd", b'0', &[2; 50], Some(100));
    t.truncate(t.len() - 512 + 50); // keep 50 of the 100 declared bytes
    area.write_tarball(&t);
    let err = refused(&area, &Limits::default(), ErrorKind::Io, Some("1.vhd"));
    assert_eq!(err.detail(), Some("truncated"));
}

#[test]
fn plain_tar_cut_between_members_is_io_truncated() {
    let area = Area::new();
    let mut t = Vec::new();
    raw_member(&mut t, b"0.vhd", b'0', &[1; 1000], None);
    raw_member(&mut t, b"1.vhd", b'0', &[2; 1000], None);
    // No end-of-archive blocks: a reader must not take EOF for the end.
    area.write_tarball(&t);
    let err = refused(&area, &Limits::default(), ErrorKind::Io, None);
    assert_eq!(err.detail(), Some("truncated"));
}

#[test]
fn corrupt_gzip_is_io_corrupt() {
    let (area, _) = xenserver_area("-zc");
    let mut full = fs::read(area.tarball()).unwrap();
    // Damage the CRC in the gzip trailer: everything inflates, the check fails.
    let n = full.len();
    full[n - 8] ^= 0xff;
    area.write_tarball(&full);
    let err = refused(&area, &Limits::default(), ErrorKind::Io, None);
    assert_eq!(err.detail(), Some("corrupt"));
}

#[test]
fn bytes_after_the_gzip_stream_are_damage() {
    // `gzip -d` ignores trailing zeros with a warning (exit 2); we refuse:
    // MultiGzDecoder reads them as a broken next member, and an image we
    // cannot verify end to end is not one to coalesce.
    let (area, _) = xenserver_area("-zc");
    area.sh("head -c 512 /dev/zero >> \"$T\"");
    let err = refused(&area, &Limits::default(), ErrorKind::Io, None);
    assert_eq!(err.detail(), Some("corrupt"));
}

#[test]
fn non_tarballs_are_not_a_tarball() {
    let area = Area::new();
    for bytes in [
        &b""[..],
        b"hello, world\n",
        &[b'x'; 4096],
        &gzip(&[b'x'; 4096]),
        b"\xfd7zXZ\0 and some more bytes",
        &random_bytes(1 << 16, 3),
    ] {
        area.write_tarball(bytes);
        refused(&area, &Limits::default(), ErrorKind::NotATarball, None);
    }
}

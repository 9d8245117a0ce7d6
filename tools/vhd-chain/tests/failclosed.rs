//! Fail closed (issue 16): a journal name never costs a file that is not
//! a journal of this very image; inputs never hang (FIFOs, devices,
//! directories as members) and a blocked run ends on SIGTERM; outputs
//! never replace a non-regular file nor an input; extraction is bounded
//! and a member that is not a VHD is refused from its first bytes;
//! non-UTF-8 names work and messages name each thing once.
#![cfg(test)]

mod support;
use test_support::{mkfifo, records};

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Spec, build_vhd};

const MIB: u64 = 1 << 20;

fn vc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vhd-chain"))
}

/// Run vhd-chain with `args` (stdin empty), killed if it takes more than
/// 5 s: nothing here may hang.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    run_cmd(vc().args(args).stdin(Stdio::null()))
}

fn run_cmd(c: &mut Command) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // Output is read while waiting (a full pipe must not look like a hang).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{c:?} hung for 5 s");
        }
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// The records printed.
/// The run failed with exit 2 and a record of `kind`.
fn refused(out: &Output, kind: &str) -> serde_json::Value {
    let recs = records(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{recs:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = recs
        .iter()
        .find(|r| r["error"].is_object())
        .unwrap_or_else(|| panic!("no error record: {recs:?}"))
        .clone();
    assert_eq!(r["error"]["kind"], kind, "{r}");
    r
}

/// A small dynamic VHD (4 MiB, some data).
fn small_vhd(p: &Path, uuid: u8) {
    build_vhd(
        p,
        &Spec::base(4 * MIB, 2 * MIB, uuid, &[(0, 64, 0x5a), (5000, 8, 0x6b)]),
    );
}

fn precious(p: &Path) -> Vec<u8> {
    let b = b"precious: never to be deleted or changed\n".repeat(100);
    fs::write(p, &b).unwrap();
    b
}

#[test]
fn a_journal_path_holding_anything_but_this_files_journal_is_left_alone() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let img = d.join("r.vhd");
    small_vhd(&img, 1);
    let img_bytes = fs::read(&img).unwrap();
    let keep = d.join("precious.txt");
    let keep_bytes = precious(&keep);
    let link = d.join("hardlink.vhd");
    fs::hard_link(&img, &link).unwrap();
    let sym = d.join("sym");
    std::os::unix::fs::symlink(&keep, &sym).unwrap();
    // A real, complete journal of another image (its resize crashed).
    let other = d.join("other.vhd");
    small_vhd(&other, 2);
    let other_bytes = fs::read(&other).unwrap();
    let other_j = d.join("other.journal");
    let mut c = vc();
    c.args([
        os("resize"),
        other.as_os_str(),
        os("200M"),
        os("--in-place"),
    ])
    .args([os("--journal"), other_j.as_os_str()])
    .env("VHD_CHAIN_TEST_CRASH_AFTER_WRITES", "1");
    let out = run_cmd(&mut c);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    let other_j_bytes = fs::read(&other_j).unwrap();

    let cases: [(&Path, &str); 6] = [
        (&keep, "already_exists"),
        (&img, "same_file"),
        (&link, "same_file"),
        (&sym, "already_exists"),
        (&other_j, "already_exists"),
        (d, "already_exists"),
    ];
    for (j, kind) in cases {
        let out = run(&[
            os("resize"),
            os("--in-place"),
            os("--journal"),
            j.as_os_str(),
            img.as_os_str(),
            os("200M"),
        ]);
        let r = refused(&out, kind);
        assert!(r["vhd"].is_null(), "{r}");
        assert!(fs::read(&img).unwrap() == img_bytes, "{j:?}: image changed");
        assert!(fs::read(&keep).unwrap() == keep_bytes, "{j:?}");
        assert!(fs::read(&other_j).unwrap() == other_j_bytes, "{j:?}");
        assert!(sym.symlink_metadata().unwrap().file_type().is_symlink());
    }
    // /etc/passwd as a journal: refused, not even opened for writing.
    if let Ok(passwd) = fs::read("/etc/passwd") {
        let out = run(&[
            os("resize"),
            os("--in-place"),
            os("--journal"),
            os("/etc/passwd"),
            img.as_os_str(),
            os("200M"),
        ]);
        refused(&out, "already_exists");
        assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
    }
    // The other image's journal still rolls it back.
    let mut c = vc();
    c.args([os("resize"), other.as_os_str(), os("4M"), os("--in-place")])
        .args([os("--journal"), other_j.as_os_str()]);
    let out = run_cmd(&mut c);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records(&out)[0]["vhd"]["journal"], "restored");
    assert!(fs::read(&other).unwrap() == other_bytes);
    assert!(!other_j.exists());
    // And with nothing in the way, the named journal is used and removed.
    let fresh = d.join("fresh.journal");
    let out = run(&[
        os("resize"),
        os("--in-place"),
        os("--journal"),
        fresh.as_os_str(),
        img.as_os_str(),
        os("200M"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!fresh.exists());
}

#[test]
fn coalesce_in_place_never_takes_a_foreign_file_as_its_journal() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (child, parent) = (d.join("0.vhd"), d.join("1.vhd"));
    build_vhd(&parent, &Spec::base(4 * MIB, 2 * MIB, 7, &[(0, 64, 0x11)]));
    build_vhd(
        &child,
        &Spec::child(4 * MIB, 2 * MIB, 8, (7, "1.vhd"), &[(8, 8, 0x22)]),
    );
    let (cb, pb) = (fs::read(&child).unwrap(), fs::read(&parent).unwrap());
    let keep = d.join("precious.txt");
    let keep_bytes = precious(&keep);
    for (j, kind) in [
        (&keep, "already_exists"),
        (&child, "already_exists"),
        (&parent, "same_file"),
    ] {
        let out = run(&[
            os("coalesce"),
            os("--in-place"),
            os("--journal"),
            j.as_os_str(),
            child.as_os_str(),
        ]);
        refused(&out, kind);
        assert!(fs::read(&child).unwrap() == cb, "{j:?}");
        assert!(fs::read(&parent).unwrap() == pb, "{j:?}");
        assert!(fs::read(&keep).unwrap() == keep_bytes, "{j:?}");
    }
}

/// `dir/0.vhd` (leaf) and `dir/1.vhd` (base), a good chain.
fn chain_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    build_vhd(
        &dir.join("1.vhd"),
        &Spec::base(4 * MIB, 2 * MIB, 7, &[(0, 64, 0x11)]),
    );
    build_vhd(
        &dir.join("0.vhd"),
        &Spec::child(4 * MIB, 2 * MIB, 8, (7, "1.vhd"), &[(8, 8, 0x22)]),
    );
}

/// `tar czf OUT -C DIR .`, as os-xenapi makes them.
fn tarball(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn fifos_devices_and_directories_as_vhds_are_refused_without_hanging() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // A chain whose leaf is a FIFO (nobody will ever write it).
    let fchain = d.join("fifo-chain");
    chain_dir(&fchain);
    fs::remove_file(fchain.join("0.vhd")).unwrap();
    mkfifo(&fchain.join("0.vhd"));
    // A chain whose base is a FIFO, and one whose leaf is a directory.
    let bchain = d.join("fifo-base");
    chain_dir(&bchain);
    fs::remove_file(bchain.join("1.vhd")).unwrap();
    mkfifo(&bchain.join("1.vhd"));
    let dchain = d.join("dir-chain");
    chain_dir(&dchain);
    fs::remove_file(dchain.join("0.vhd")).unwrap();
    fs::create_dir(dchain.join("0.vhd")).unwrap();
    let fifo = fchain.join("0.vhd");
    let out = d.join("out.vhd");
    let p = |x: &Path| x.as_os_str().to_owned();
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["flatten".into(), p(&fchain), "-o".into(), p(&out)],
        vec!["flatten".into(), "--dry-run".into(), p(&fchain)],
        vec!["flatten".into(), p(&dchain), "-o".into(), p(&out)],
        vec!["coalesce".into(), "--chain".into(), p(&fchain)],
        vec!["coalesce".into(), "--chain".into(), p(&bchain)],
        vec![
            "coalesce".into(),
            "--chain".into(),
            "--in-place".into(),
            p(&bchain),
        ],
        vec!["check".into(), p(&fifo)],
        vec!["check".into(), "--chain".into(), p(&fchain)],
        vec!["info".into(), p(&fifo)],
        vec!["info".into(), "/dev/zero".into()],
        vec!["cat".into(), p(&fchain)],
        vec!["cat".into(), p(&fifo)],
        vec!["cat".into(), "/dev/zero".into()],
        vec!["discover".into(), p(&fchain)],
        vec!["discover".into(), p(&dchain)],
        vec!["fix".into(), p(&bchain)],
        vec!["set-parent".into(), p(&fifo), p(&fchain.join("1.vhd"))],
        vec![
            "set-parent".into(),
            p(&bchain.join("0.vhd")),
            p(&bchain.join("1.vhd")),
        ],
        vec!["resize".into(), p(&fifo), "8M".into()],
        vec!["resize".into(), p(&fifo), "8M".into(), "--in-place".into()],
        vec!["coalesce".into(), p(&bchain.join("0.vhd"))],
    ];
    for args in cases {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
        let out = run(&a);
        let r = refused(&out, "not_regular");
        assert!(
            !String::from_utf8_lossy(&out.stderr).is_empty(),
            "{args:?}: nothing said on stderr"
        );
        let _ = r;
    }
    assert!(!out.exists());
    // Nothing was created beside the chains (no temporaries, no journals).
    for c in [&fchain, &bchain, &dchain] {
        assert_eq!(support::listing(c), vec!["0.vhd", "1.vhd"], "{c:?}");
    }
}

#[test]
fn a_tarball_may_come_from_a_pipe_a_fifo_or_stdin() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    chain_dir(&d.join("chain"));
    let tgz = d.join("image.tgz");
    tarball(&d.join("chain"), &tgz);
    // Through a FIFO, written by another process.
    let fifo = d.join("image.fifo");
    mkfifo(&fifo);
    let scratch = d.join("scratch");
    fs::create_dir(&scratch).unwrap();
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("sleep 0.2; cat \"$1\" > \"$2\"")
        .arg("sh")
        .arg(&tgz)
        .arg(&fifo)
        .spawn()
        .unwrap();
    let out = run(&[os("extract"), fifo.as_os_str(), scratch.as_os_str()]);
    assert!(writer.wait().unwrap().success());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(support::listing(&scratch), vec!["0.vhd", "1.vhd"]);
    // `-` is stdin: extract, and flatten to a file.
    let scratch2 = d.join("scratch2");
    fs::create_dir(&scratch2).unwrap();
    for args in [
        vec![os("extract"), os("-"), scratch2.as_os_str()],
        vec![
            os("flatten"),
            os("-"),
            os("-o"),
            d.join("flat.vhd").into_os_string().leak(),
        ],
    ] {
        let out = run_cmd(vc().args(&args).stdin(fs::File::open(&tgz).unwrap()));
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    assert_eq!(support::listing(&scratch2), vec!["0.vhd", "1.vhd"]);
    let out = run(&[os("check"), d.join("flat.vhd").as_os_str()]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_run_waiting_on_a_fifo_ends_on_sigterm() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let fifo = d.join("never.tgz");
    mkfifo(&fifo);
    let scratch = d.join("scratch");
    fs::create_dir(&scratch).unwrap();
    for args in [
        vec![os("extract"), fifo.as_os_str(), scratch.as_os_str()],
        vec![os("flatten"), fifo.as_os_str(), os("-o"), os("out.vhd")],
        vec![os("flatten"), os("--dry-run"), fifo.as_os_str()],
    ] {
        let child = vc()
            .args(&args)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let sent = Instant::now();
        let mut child = child;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(1),
                "{args:?}: still running a second after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(143), "{args:?}: {out:?}");
        assert_eq!(support::listing(d), vec!["never.tgz", "scratch"]);
        assert!(support::listing(&scratch).is_empty());
    }
}

#[test]
fn outputs_never_replace_non_regular_files_or_an_input() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    chain_dir(&d.join("chain"));
    let tgz = d.join("image.tgz");
    tarball(&d.join("chain"), &tgz);
    let tgz_bytes = fs::read(&tgz).unwrap();
    let member = d.join("chain/0.vhd");
    let member_bytes = fs::read(&member).unwrap();
    let fifo = d.join("out.fifo");
    mkfifo(&fifo);
    fs::create_dir(d.join("outdir")).unwrap();
    let keep = d.join("precious.txt");
    let keep_bytes = precious(&keep);
    std::os::unix::fs::symlink(&keep, d.join("out.link")).unwrap();
    let before = support::listing(d);
    for (src, out, kind) in [
        (&tgz, Path::new("/dev/null"), "not_regular"),
        (&tgz, &fifo, "not_regular"),
        (&tgz, &d.join("outdir"), "not_regular"),
        (&tgz, &d.join("out.link"), "not_regular"),
        (&tgz, &tgz, "same_file"),
        (&d.join("chain"), &member, "same_file"),
        (&d.join("chain"), &d.join("chain/1.vhd"), "same_file"),
    ] {
        let o = run(&[
            os("flatten"),
            src.as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--force"),
        ]);
        refused(&o, kind);
    }
    assert!(fs::read(&tgz).unwrap() == tgz_bytes);
    assert!(fs::read(&member).unwrap() == member_bytes);
    assert!(fs::read(&keep).unwrap() == keep_bytes);
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(support::listing(d), before);
    // A hard link of the child as its parent: never written over.
    let link = d.join("chain/link.vhd");
    fs::hard_link(&member, &link).unwrap();
    let o = run(&[os("set-parent"), member.as_os_str(), link.as_os_str()]);
    refused(&o, "same_file");
    let o = run(&[os("coalesce"), member.as_os_str(), link.as_os_str()]);
    refused(&o, "same_file");
    assert!(fs::read(&member).unwrap() == member_bytes);
    // --replace of a FIFO: refused, never opened.
    let o = run(&[os("flatten"), os("--replace"), fifo.as_os_str()]);
    refused(&o, "not_regular");
}

#[test]
fn dash_and_flags_that_do_nothing_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    chain_dir(&d.join("chain"));
    let c = d.join("chain");
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec![os("flatten"), c.as_os_str(), os("-o"), os("-")],
        vec![os("flatten"), os("-"), os("--replace")],
        vec![os("flatten"), c.as_os_str(), os("--dry-run"), os("--force")],
        vec![os("flatten"), c.as_os_str(), os("--force")],
        vec![os("flatten"), c.as_os_str()],
        vec![os("flatten")],
        vec![os("extract"), os("t.tgz"), os("-")],
        vec![os("check")],
        vec![
            os("resize"),
            os("x.vhd"),
            os("8M"),
            os("--journal"),
            os("j"),
        ],
    ];
    for args in cases {
        let o = run(&args);
        let r = refused(&o, "usage");
        assert!(r["error"]["message"].is_string(), "{args:?}");
    }
    assert_eq!(support::listing(d), vec!["chain"]);
}

/// Run `sh -c script` in `dir`.
fn sh(dir: &Path, script: &str) {
    let st = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

#[test]
fn a_zero_bomb_stops_at_max_bytes_in_extract_and_flatten() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // 64 MiB of zeros as 0.vhd: a tarball of about 64 KiB.
    sh(
        d,
        "mkdir src && head -c 64M /dev/zero > src/0.vhd && tar czf bomb.tgz -C src . && rm -r src && mkdir scratch",
    );
    assert!(fs::metadata(d.join("bomb.tgz")).unwrap().len() < (1 << 20));
    let o = run(&[
        os("extract"),
        os("--max-bytes"),
        os("16M"),
        d.join("bomb.tgz").as_os_str(),
        d.join("scratch").as_os_str(),
    ]);
    let r = refused(&o, "limit_exceeded");
    assert_eq!(r["error"]["detail"]["member"], "./0.vhd", "{r}");
    assert!(support::listing(&d.join("scratch")).is_empty());
    let mut c = vc();
    c.current_dir(d)
        .args(["flatten", "bomb.tgz", "-o", "out.vhd", "--max-bytes", "16M"])
        .stdin(Stdio::null());
    refused(&run_cmd(&mut c), "limit_exceeded");
    assert_eq!(support::listing(d), vec!["bomb.tgz", "scratch"]);
}

/// A tmpfs of `size` on `at`, unmounted when dropped; None (the test is
/// skipped, saying why) where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            assert!(
                std::env::var_os("CI").is_none(),
                "mount tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            {
                eprintln!("skipping: cannot mount a tmpfs");
            }
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn extraction_is_bounded_by_free_space_by_default() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    sh(
        d,
        "mkdir src && head -c 64M /dev/zero > src/0.vhd && tar czf bomb.tgz -C src . && rm -r src",
    );
    // 96 MiB free, less the 64 MiB reserve: 32 MiB may be written.
    let Some(fsys) = Tmpfs::mount(&d.join("small"), "96m") else {
        return;
    };
    fs::create_dir(fsys.0.join("scratch")).unwrap();
    let o = run(&[
        os("extract"),
        d.join("bomb.tgz").as_os_str(),
        fsys.0.join("scratch").as_os_str(),
    ]);
    let r = refused(&o, "no_space");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("can spare"),
        "{r}"
    );
    let mut c = vc();
    c.current_dir(&fsys.0)
        .arg("flatten")
        .arg(d.join("bomb.tgz"))
        .args(["-o", "out.vhd"])
        .stdin(Stdio::null());
    refused(&run_cmd(&mut c), "no_space");
    assert_eq!(support::listing(&fsys.0), vec!["scratch"]);
    assert!(support::listing(&fsys.0.join("scratch")).is_empty());
    // An explicit --max-bytes is still bounded by the free space.
    let o = run(&[
        os("extract"),
        os("--max-bytes"),
        os("1G"),
        d.join("bomb.tgz").as_os_str(),
        fsys.0.join("scratch").as_os_str(),
    ]);
    refused(&o, "no_space");
}

#[test]
fn a_member_that_is_not_a_vhd_is_refused_from_its_bytes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // 50 MB of text, not whole sectors: refused from its header, before a
    // byte is written (strace: the member's file is never created).
    sh(
        d,
        "mkdir src scratch && yes 'not a disk image, just text' | head -c 50000001 > src/0.vhd \
         && tar czf text.tgz -C src . && rm -r src",
    );
    let strace = Command::new("strace").arg("-V").output().is_ok();
    let log = d.join("strace.log");
    let mut c = if strace {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-e", "trace=openat,open,creat", "-o"])
            .arg(&log)
            .arg(env!("CARGO_BIN_EXE_vhd-chain"));
        c
    } else {
        vc()
    };
    c.args([
        os("extract"),
        d.join("text.tgz").as_os_str(),
        d.join("scratch").as_os_str(),
    ])
    .stdin(Stdio::null());
    let start = Instant::now();
    let o = run_cmd(&mut c);
    let r = refused(&o, "not_a_vhd");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(r["error"]["detail"]["member"], "./0.vhd", "{r}");
    assert!(support::listing(&d.join("scratch")).is_empty());
    if strace {
        let trace = fs::read_to_string(&log).unwrap();
        assert!(trace.contains("text.tgz"), "strace saw nothing: {trace}");
        assert!(
            !trace.contains("scratch/0.vhd"),
            "the member was created: {trace}"
        );
    }
    // Whole sectors of text: it could only be a fixed VHD, whose footer is
    // its end; refused there, and nothing is left.
    sh(
        d,
        "mkdir src && yes 'still just text' | head -c 8388608 > src/0.vhd \
         && tar czf text2.tgz -C src . && rm -r src",
    );
    for args in [
        vec![os("extract"), os("text2.tgz"), os("scratch")],
        vec![os("flatten"), os("text2.tgz"), os("-o"), os("out.vhd")],
    ] {
        let mut c = vc();
        c.current_dir(d).args(&args).stdin(Stdio::null());
        refused(&run_cmd(&mut c), "not_a_vhd");
    }
    assert!(support::listing(&d.join("scratch")).is_empty());
    assert!(!d.join("out.vhd").exists());
    // A real fixed VHD (its footer only at its end) and a chain pass.
    if support::have_qemu() {
        sh(
            d,
            "mkdir src && qemu-img create -q -f vpc -o subformat=fixed src/0.vhd 8M \
             && tar czf fixed.tgz -C src . && rm -r src",
        );
        let mut c = vc();
        c.current_dir(d)
            .args(["extract", "fixed.tgz", "scratch"])
            .stdin(Stdio::null());
        let o = run_cmd(&mut c);
        assert!(o.status.success(), "{o:?}");
    }
}

#[test]
fn non_utf8_names_work_and_round_trip_through_records() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let name = std::ffi::OsStr::from_bytes(b"chain-\xff\xfe");
    let c = d.join(name);
    chain_dir(&c);
    // discover: records with the exact bytes.
    let o = run(&[os("discover"), c.as_os_str()]);
    assert!(o.status.success(), "{o:?}");
    let recs = records(&o);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert!(r["path_bytes"].is_string(), "{r}");
        assert!(r["vhd"]["uuid"].is_string(), "{r}");
    }
    // Those records into info on stdin: the files are found by their bytes.
    let mut child = vc()
        .arg("info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &o.stdout).unwrap();
    drop(child.stdin.take());
    let o2 = child.wait_with_output().unwrap();
    assert!(o2.status.success(), "{o2:?}");
    let recs2 = records(&o2);
    assert_eq!(recs2.len(), 2);
    assert_eq!(recs2[0]["path_bytes"], recs[0]["path_bytes"]);
    // As arguments: info, check, cat, flatten of the directory.
    let leaf = c.join("0.vhd");
    for args in [
        vec![os("info"), leaf.as_os_str()],
        vec![os("check"), os("--chain"), c.as_os_str()],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {o:?}");
        assert!(records(&o).iter().all(|r| r["path_bytes"].is_string()));
    }
    let o = run(&[os("cat"), c.as_os_str()]);
    assert!(o.status.success());
    assert_eq!(o.stdout.len() as u64, 4 * MIB);
    let out = d.join(std::ffi::OsStr::from_bytes(b"flat-\xff.vhd"));
    let o = run(&[os("flatten"), c.as_os_str(), os("-o"), out.as_os_str()]);
    assert!(o.status.success(), "{o:?}");
    assert!(out.exists());
    assert!(records(&o)[0]["path_bytes"].is_string());
}

#[test]
fn messages_name_the_file_once() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::write(d.join("hello.txt"), b"hello\n").unwrap();
    for args in [
        vec!["info", "hello.txt"],
        vec!["check", "hello.txt"],
        vec!["cat", "hello.txt"],
        vec!["resize", "hello.txt", "1G"],
        vec!["flatten", "--replace", "hello.txt"],
        vec!["info", "missing.vhd"],
    ] {
        let mut c = vc();
        c.current_dir(d).args(&args).stdin(Stdio::null());
        let o = run_cmd(&mut c);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let file = if args[0] == "resize" {
            args[1]
        } else {
            args[args.len() - 1]
        };
        let r = &records(&o)[0];
        assert_eq!(r["path"], file, "{r}");
        let m = r["error"]["message"].as_str().unwrap();
        assert!(
            !m.contains(file),
            "{args:?}: the message names the file again: {m}"
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.matches(file).count(), 1, "{args:?}: {err}");
    }
}

//! Hostile Nova trees (issue 17): `cachewalk nova` and `remove` on
//! instances paths reached through links or typed relative, linked disks
//! and instance directories, deep chains, tenants' broken headers, `_base`
//! and `locks` swapped for links, forged records and a file swapped right
//! before the unlink (hook `cachewalk.nova.before_remove`). Real qemu-img
//! disks; decoys outside the tree are hashed before and after.
#![cfg(test)]

mod support;
use support::{DAY, NOW, fp, have_qemu};

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use test_support::records;

/// A file of `len` bytes with mtime `NOW - age`.
fn file(p: &Path, len: usize, age: i64) {
    support::file_of(p, len, 7, age);
}

/// A qcow2 disk at `p` backed by `backing` in format `fmt` (`-u`: the
/// backing file is not opened, as Nova's names need not resolve here).
fn qcow2(p: &Path, backing: &str, fmt: &str) {
    let out = Command::new("qemu-img")
        .args([
            "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt,
        ])
        .arg(p)
        .arg("1G")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cachewalk(
    args: &[&std::ffi::OsStr],
    stdin: &str,
    cwd: Option<&Path>,
    env: &[(&str, &str)],
) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachewalk"));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `cachewalk nova ROOT` (run in `cwd` when given), no inventory needed
/// beyond this host's (an empty one).
fn walk(root: &Path, cwd: Option<&Path>) -> Output {
    walk_in(root, "", cwd)
}

/// `cachewalk nova ROOT --instances -` with this inventory on stdin, run
/// in `cwd` when given.
fn walk_in(root: &Path, inventory: &str, cwd: Option<&Path>) -> Output {
    let now = NOW.to_string();
    cachewalk(
        &[
            "nova".as_ref(),
            root.as_os_str(),
            "--now".as_ref(),
            now.as_ref(),
            "--instances".as_ref(),
            "-".as_ref(),
            "--host".as_ref(),
            "c1".as_ref(),
        ],
        inventory,
        cwd,
        &[],
    )
}

fn remove(input: &str, env: &[(&str, &str)]) -> Output {
    let now = NOW.to_string();
    cachewalk(
        &["remove".as_ref(), "--now".as_ref(), now.as_ref()],
        input,
        None,
        env,
    )
}

/// rel_path → cache facet of the walk's entries.
fn by_rel(recs: &[Value]) -> BTreeMap<String, Value> {
    recs.iter()
        .filter(|r| r["cache"]["record"] == "entry")
        .map(|r| {
            (
                r["cache"]["rel_path"].as_str().unwrap().to_owned(),
                r["cache"].clone(),
            )
        })
        .collect()
}

/// Every record of the walk as text (what an operator would pipe, edited
/// or not, into remove).
fn all_records(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SHA-1 of every file under `dir` (links as their targets' names).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(p);
            } else if t.is_symlink() {
                m.insert(p.clone(), format!("-> {:?}", fs::read_link(&p).unwrap()));
            } else {
                m.insert(p.clone(), system::hash::hex(&fs::read(&p).unwrap()));
            }
        }
    }
    m
}

/// A scratch area: `tree` holds the instances path, `decoys` files that
/// must never change.
struct Scratch {
    _t: tempfile::TempDir,
    top: PathBuf,
    decoys: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Scratch {
    fn new() -> Scratch {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().canonicalize().unwrap();
        let decoys = top.join("decoys");
        fs::create_dir_all(decoys.join("_base")).unwrap();
        fs::create_dir_all(decoys.join("locks")).unwrap();
        for n in [fp("img-1"), fp("decoy"), "decoy".to_owned()] {
            file(&decoys.join(&n), 4096, 10 * DAY);
            file(&decoys.join("_base").join(&n), 4096, 10 * DAY);
        }
        file(
            &decoys.join("locks").join(format!("nova-{}", fp("img-1"))),
            0,
            10 * DAY,
        );
        let before = snapshot(&decoys);
        Scratch {
            _t: t,
            top,
            decoys,
            before,
        }
    }

    fn decoys_untouched(&self) {
        assert_eq!(snapshot(&self.decoys), self.before, "a decoy changed");
    }
}

/// The instances path at `root`: `_base/<fp(img-1)>` (old, unused by the
/// inventory), `locks/`, and one instance directory.
fn nova_tree(root: &Path) {
    fs::create_dir_all(root.join("_base")).unwrap();
    fs::create_dir_all(root.join("locks")).unwrap();
    fs::create_dir_all(root.join("inst-1")).unwrap();
    file(&root.join("_base").join(fp("img-1")), 4096, 10 * DAY);
    file(&root.join("_base").join(fp("spare")), 4096, 10 * DAY);
}

/// The base file the disk uses is in use, by the disk; the spare one is
/// still a candidate (the walk still frees what is free); remove of every
/// record deletes only the spare one.
fn assert_in_use_and_only_spare_goes(s: &Scratch, root: &Path, out: &Output, via: &str) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(out);
    let m = by_rel(&recs);
    let e = &m[&format!("_base/{}", fp("img-1"))];
    assert_eq!(e["in_use"], "yes", "{e}");
    assert_eq!(e["verdict"], "keep_in_use", "{e}");
    assert_eq!(e["used_by"], serde_json::json!([via]), "{e}");
    assert_eq!(m[&format!("_base/{}", fp("spare"))]["verdict"], "candidate");
    let r = records(&remove(&all_records(out), &[]));
    let deleted: Vec<&str> = r
        .iter()
        .filter(|x| x["cache"]["action"] == "deleted")
        .map(|x| x["cache"]["rel_path"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [format!("_base/{}", fp("spare"))]);
    assert!(root.join("_base").join(fp("img-1")).exists());
    s.decoys_untouched();
}

/// `ln -s /srv/nova/instances /var/lib/nova/instances`: disks name their
/// base by the link's path while the walk is given the real one, and the
/// other way round.
#[test]
fn a_symlinked_instances_path_keeps_the_base_in_use() {
    if !have_qemu() {
        return;
    }
    let s = Scratch::new();
    let real = s.top.join("srv/nova/instances");
    let link = s.top.join("var/lib/nova/instances");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    nova_tree(&real);
    symlink(&real, &link).unwrap();
    let by_link = link.join("_base").join(fp("img-1"));
    qcow2(&real.join("inst-1/disk"), by_link.to_str().unwrap(), "raw");
    let out = walk(&real, None);
    assert_in_use_and_only_spare_goes(&s, &real, &out, "inst-1:backing:disk");

    // The disk names the real path; the walk goes through the link.
    file(&real.join("_base").join(fp("spare")), 4096, 10 * DAY);
    let by_real = real.join("_base").join(fp("img-1"));
    fs::remove_file(real.join("inst-1/disk")).unwrap();
    qcow2(&real.join("inst-1/disk"), by_real.to_str().unwrap(), "raw");
    let out = walk(&link, None);
    assert_in_use_and_only_spare_goes(&s, &real, &out, "inst-1:backing:disk");
}

/// `cd /var/lib/nova; cachewalk nova instances`: the disk names the
/// absolute path, the walk the relative one.
#[test]
fn a_relative_instances_path_keeps_the_base_in_use() {
    if !have_qemu() {
        return;
    }
    let s = Scratch::new();
    let nova = s.top.join("var/lib/nova");
    let root = nova.join("instances");
    nova_tree(&root);
    let abs = root.join("_base").join(fp("img-1"));
    qcow2(&root.join("inst-1/disk"), abs.to_str().unwrap(), "raw");
    let out = walk(Path::new("instances"), Some(&nova));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = by_rel(&records(&out));
    let e = &m[&format!("_base/{}", fp("img-1"))];
    assert_eq!(e["verdict"], "keep_in_use", "{e}");
    assert_eq!(e["used_by"], serde_json::json!(["inst-1:backing:disk"]));
    // remove is given the records as written (root "instances") and runs
    // in the same directory.
    let now = NOW.to_string();
    let r = records(&cachewalk(
        &["remove".as_ref(), "--now".as_ref(), now.as_ref()],
        &all_records(&out),
        Some(&nova),
        &[],
    ));
    let deleted: Vec<&str> = r
        .iter()
        .filter(|x| x["cache"]["action"] == "deleted")
        .map(|x| x["cache"]["rel_path"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [format!("_base/{}", fp("spare"))]);
    assert!(abs.exists());
    s.decoys_untouched();
}

/// A reference that cannot be matched keeps what it could name: a path
/// that does not exist here (another host's mount) and a file outside
/// `_base` with the base file's name both keep `_base/<name>`.
#[test]
fn unmatched_references_keep_what_they_might_name() {
    if !have_qemu() {
        return;
    }
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    qcow2(
        &root.join("inst-1/disk"),
        &format!("/nonexistent/nova/instances/_base/{}", fp("img-1")),
        "raw",
    );
    fs::create_dir(root.join("inst-2")).unwrap();
    qcow2(
        &root.join("inst-2/disk"),
        s.decoys.join(fp("spare")).to_str().unwrap(),
        "raw",
    );
    file(&s.decoys.join(fp("spare")), 4096, 10 * DAY);
    let before = snapshot(&s.decoys);
    let out = walk(&root, None);
    assert!(out.status.success());
    let m = by_rel(&records(&out));
    let e = &m[&format!("_base/{}", fp("img-1"))];
    assert_eq!(e["verdict"], "keep_unknown", "{e}");
    assert_eq!(e["in_use"], "unknown");
    assert!(
        e["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("backing_unmatched:inst-1:backing:disk:/nonexistent/"),
        "{e}"
    );
    let o = &m[&format!("_base/{}", fp("spare"))];
    assert_eq!(o["verdict"], "keep_unknown", "{o}");
    assert!(
        o["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("backing_outside_base:inst-2:backing:disk:"),
        "{o}"
    );
    let r = records(&remove(&all_records(&out), &[]));
    assert!(r.iter().all(|x| x["cache"]["action"] != "deleted"), "{r:?}");
    assert_eq!(snapshot(&s.decoys), before);
}

/// Linked disks and instance directories are followed (read-only) as Nova
/// follows them: their base files are in use.
#[test]
fn linked_disks_and_instance_dirs_are_followed() {
    if !have_qemu() {
        return;
    }
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    file(&root.join("_base").join(fp("img-2")), 4096, 10 * DAY);
    let elsewhere = s.top.join("elsewhere");
    fs::create_dir_all(elsewhere.join("inst-2")).unwrap();
    // inst-1/disk is a link to a disk kept elsewhere.
    qcow2(
        &elsewhere.join("inst-1.qcow2"),
        root.join("_base").join(fp("img-1")).to_str().unwrap(),
        "raw",
    );
    symlink(elsewhere.join("inst-1.qcow2"), root.join("inst-1/disk")).unwrap();
    // inst-2 is a link to a directory kept elsewhere.
    qcow2(
        &elsewhere.join("inst-2/disk"),
        root.join("_base").join(fp("img-2")).to_str().unwrap(),
        "raw",
    );
    symlink(elsewhere.join("inst-2"), root.join("inst-2")).unwrap();
    let before = snapshot(&elsewhere);
    let out = walk(&root, None);
    assert!(out.status.success());
    let m = by_rel(&records(&out));
    for (img, via) in [
        ("img-1", "inst-1:backing:disk"),
        ("img-2", "inst-2:backing:disk"),
    ] {
        let e = &m[&format!("_base/{}", fp(img))];
        assert_eq!(e["verdict"], "keep_in_use", "{e}");
        assert_eq!(e["used_by"], serde_json::json!([via]), "{e}");
    }
    assert_eq!(m[&format!("_base/{}", fp("spare"))]["verdict"], "candidate");
    assert_eq!(snapshot(&elsewhere), before, "links are only read");
    s.decoys_untouched();
}

/// A chain of 20 qcow2 files inside `_base` (deeper than the old 16-step
/// limit) keeps every one of them, the raw bottom included; a chain that
/// loops ends without error.
#[test]
fn a_deep_chain_keeps_everything_below_it() {
    if !have_qemu() {
        return;
    }
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    let base = root.join("_base");
    let names: Vec<String> = (0..20).map(|i| fp(&format!("layer-{i}"))).collect();
    file(&base.join(&names[0]), 4096, 10 * DAY);
    for i in 1..names.len() {
        let fmt = if i == 1 { "raw" } else { "qcow2" };
        qcow2(&base.join(&names[i]), &names[i - 1], fmt);
        support::set_age(&base.join(&names[i]), 10 * DAY);
    }
    qcow2(
        &root.join("inst-1/disk"),
        &format!("../_base/{}", names[19]),
        "qcow2",
    );
    // A loop: a -> b -> a.
    let (a, b) = (fp("loop-a"), fp("loop-b"));
    qcow2(&base.join(&a), &b, "qcow2");
    qcow2(&base.join(&b), &a, "qcow2");
    for n in [&a, &b] {
        support::set_age(&base.join(n), 10 * DAY);
    }
    fs::create_dir(root.join("inst-2")).unwrap();
    qcow2(&root.join("inst-2/disk"), &format!("../_base/{a}"), "qcow2");
    let out = walk(&root, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = by_rel(&records(&out));
    for n in names.iter().chain([&a, &b]) {
        let e = &m[&format!("_base/{n}")];
        assert_eq!(e["verdict"], "keep_in_use", "{n}: {e}");
    }
    assert_eq!(m[&format!("_base/{}", fp("spare"))]["verdict"], "candidate");
}

/// A tenant's raw base file that starts with a broken qcow2 header, used
/// with backing format raw, is never read for a chain: the rest of the
/// host is judged. A raw instance disk (per disk.info) with a broken
/// header is not read either; an unreadable qcow2 disk keeps base files
/// with its own name in the reason.
#[test]
fn broken_headers_where_nova_expects_raw_stop_nothing() {
    if !have_qemu() {
        return;
    }
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    let mut bad = b"QFI\xfb\0\0\0\x03".to_vec();
    bad.extend_from_slice(&[0xff; 4096]);
    let tenant = fp("tenant");
    fs::write(root.join("_base").join(&tenant), &bad).unwrap();
    support::set_age(&root.join("_base").join(&tenant), 10 * DAY);
    qcow2(
        &root.join("inst-1/disk"),
        &format!("../_base/{tenant}"),
        "raw",
    );
    fs::create_dir(root.join("inst-2")).unwrap();
    fs::write(root.join("inst-2/disk"), &bad).unwrap();
    fs::write(
        root.join("inst-2/disk.info"),
        format!(
            "{{\"{}\": \"raw\"}}",
            root.join("inst-2/disk").to_str().unwrap()
        ),
    )
    .unwrap();
    let out = walk(&root, None);
    assert!(out.status.success());
    let m = by_rel(&records(&out));
    assert_eq!(m[&format!("_base/{tenant}")]["verdict"], "keep_in_use");
    assert_eq!(m[&format!("_base/{}", fp("spare"))]["verdict"], "candidate");
    assert_eq!(m[&format!("_base/{}", fp("img-1"))]["verdict"], "candidate");

    // A qcow2-looking disk nobody recorded as raw, that cannot be read:
    // kept unknown, and the reason names that disk.
    fs::create_dir(root.join("inst-3")).unwrap();
    fs::write(root.join("inst-3/disk"), &bad).unwrap();
    let out = walk(&root, None);
    let m = by_rel(&records(&out));
    let e = &m[&format!("_base/{}", fp("spare"))];
    assert_eq!(e["verdict"], "keep_unknown");
    let want = format!(
        "instance_disk_unreadable:{}:",
        root.join("inst-3/disk").display()
    );
    assert!(e["reasons"][0].as_str().unwrap().starts_with(&want), "{e}");
    assert_eq!(m[&format!("_base/{tenant}")]["verdict"], "keep_in_use");
}

fn walk_with(root: &Path, inventory: &str) -> Output {
    walk_in(root, inventory, None)
}

/// One tenant's unreadable disk keeps the base files its instance may
/// use (the inventory says which: its image's fingerprint and its
/// variants, every swap and ephemeral file), not the whole host; remove
/// given the same inventory frees the rest, without it keeps everything.
/// A disk Nova does not build from the instance's images (`disk.rescue`)
/// or of an instance the inventory does not name still keeps every file.
#[test]
fn an_unreadable_disk_keeps_only_its_instances_base_files() {
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    let base = root.join("_base");
    let own = fp("img-3");
    let variant = format!("{own}_10737418240");
    for n in [own.as_str(), variant.as_str(), "swap_512"] {
        file(&base.join(n), 4096, 10 * DAY);
    }
    let mut bad = b"QFI\xfb\0\0\0\x03".to_vec();
    bad.extend_from_slice(&[0xff; 4096]);
    fs::create_dir(root.join("inst-3")).unwrap();
    fs::write(root.join("inst-3/disk"), &bad).unwrap();
    let inv = "{\"uuid\":\"inst-3\",\"host\":\"c1\",\"image_ref\":\"img-3\"}\n";
    let out = walk_with(&root, inv);
    assert!(out.status.success());
    let m = by_rel(&records(&out));
    let why = format!(
        "instance_disk_unreadable:{}:",
        root.join("inst-3/disk").display()
    );
    // The image and its resized variants are the instance's (in use by
    // the inventory); a swap file of any size may be its disk's backing.
    for n in [own.as_str(), variant.as_str()] {
        assert_eq!(m[&format!("_base/{n}")]["verdict"], "keep_in_use");
    }
    let e = &m["_base/swap_512"];
    assert_eq!(e["verdict"], "keep_unknown", "{e}");
    assert!(e["reasons"][0].as_str().unwrap().starts_with(&why), "{e}");
    for n in [fp("img-1"), fp("spare")] {
        let e = &m[&format!("_base/{n}")];
        assert_eq!(e["verdict"], "candidate", "{n}: {e}");
    }

    // remove: the same inventory frees the rest (dry run); none keeps all.
    let inv_file = s.top.join("inv.jsonl");
    fs::write(&inv_file, inv).unwrap();
    let now = NOW.to_string();
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "remove".as_ref(),
            "--dry-run".as_ref(),
            "--now".as_ref(),
            now.as_ref(),
        ];
        args.extend_from_slice(extra);
        let r = records(&cachewalk(&args, &all_records(&out), None, &[]));
        r.iter()
            .map(|v| {
                (
                    v["cache"]["rel_path"].as_str().unwrap_or("").to_owned(),
                    v["cache"]["action"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let with = run(&["--instances".as_ref(), inv_file.as_os_str()]);
    assert_eq!(
        with[&format!("_base/{}", fp("spare"))],
        "would_delete",
        "{with:?}"
    );
    let without = run(&[]);
    assert_eq!(
        without[&format!("_base/{}", fp("spare"))],
        "still_in_use",
        "{without:?}"
    );
    // `-` is stdin, which holds the records.
    let dash = cachewalk(
        &["remove".as_ref(), "--instances".as_ref(), "-".as_ref()],
        "",
        None,
        &[],
    );
    assert_eq!(dash.status.code(), Some(2));

    // disk.rescue is built from another image: every file kept.
    fs::rename(root.join("inst-3/disk"), root.join("inst-3/disk.rescue")).unwrap();
    let m = by_rel(&records(&walk_with(&root, inv)));
    assert_eq!(
        m[&format!("_base/{}", fp("spare"))]["verdict"],
        "keep_unknown"
    );
    // An instance the inventory does not name: every file kept.
    fs::rename(root.join("inst-3/disk.rescue"), root.join("inst-3/disk")).unwrap();
    let m = by_rel(&records(&walk_with(&root, "")));
    assert_eq!(
        m[&format!("_base/{}", fp("spare"))]["verdict"],
        "keep_unknown"
    );
    s.decoys_untouched();
}

/// `_base` or `locks` that is a link: the walk is one error record (kind
/// symlink, the directory named), nothing judged; remove refuses the same
/// way and creates or deletes nothing through the link.
#[test]
fn linked_base_and_locks_are_refused() {
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    fs::remove_dir(root.join("inst-1")).unwrap();
    let out = walk(&root, None);
    let plan: String = records(&out)
        .iter()
        .filter(|r| r["cache"]["verdict"] == "candidate")
        .map(|r| format!("{r}\n"))
        .collect();
    assert_eq!(plan.lines().count(), 2, "{plan}");

    // locks/ swapped for a link to the decoys' locks.
    fs::rename(root.join("locks"), s.top.join("locks.real")).unwrap();
    symlink(s.decoys.join("locks"), root.join("locks")).unwrap();
    let out = walk(&root, None);
    assert_eq!(out.status.code(), Some(2));
    let r = records(&out);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["error"]["kind"], "symlink");
    assert_eq!(r[0]["path"], root.join("locks").to_str().unwrap());
    let out = remove(&plan, &[]);
    assert_eq!(out.status.code(), Some(2));
    for x in records(&out) {
        assert_eq!(x["cache"]["action"], "delete_failed", "{x}");
        assert_eq!(x["error"]["kind"], "symlink", "{x}");
    }
    assert!(root.join("_base").join(fp("img-1")).exists());
    s.decoys_untouched();
    fs::remove_file(root.join("locks")).unwrap();
    fs::rename(s.top.join("locks.real"), root.join("locks")).unwrap();

    // _base swapped for a link to the decoys' _base (same names).
    fs::rename(root.join("_base"), s.top.join("base.real")).unwrap();
    symlink(s.decoys.join("_base"), root.join("_base")).unwrap();
    let out = walk(&root, None);
    assert_eq!(out.status.code(), Some(2));
    let r = records(&out);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["error"]["kind"], "symlink");
    assert_eq!(r[0]["path"], root.join("_base").to_str().unwrap());
    let out = remove(&plan, &[]);
    for x in records(&out) {
        assert_eq!(x["error"]["kind"], "symlink", "{x}");
    }
    // --audit refuses it too.
    let out = cachewalk(
        &["nova".as_ref(), root.as_os_str(), "--audit".as_ref()],
        "",
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(records(&out)[0]["error"]["kind"], "symlink");
    assert!(s.top.join("base.real").join(fp("img-1")).exists());
    s.decoys_untouched();
}

/// Forged records: `rel_path` must be `<subdirectory>/<name>`, plain
/// names, a name Nova removes; `../decoy` and friends are refused (kind
/// refused) and the decoys stay.
#[test]
fn forged_rel_paths_are_refused() {
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    fs::remove_dir(root.join("inst-1")).unwrap();
    let out = walk(&root, None);
    let rec = records(&out)
        .into_iter()
        .find(|r| r["cache"]["rel_path"] == format!("_base/{}", fp("spare")))
        .unwrap();
    file(
        &root.join("locks").join(format!("nova-{}", fp("img-1"))),
        0,
        10 * DAY,
    );
    // Every forgery keeps dev/ino/size/mtime of the decoy it aims at.
    let forge = |rel: &str, target: &Path| -> String {
        let md = fs::metadata(target).unwrap();
        use std::os::unix::fs::MetadataExt;
        let mut r = rec.clone();
        r["path"] = root.join(rel).to_str().unwrap().into();
        r["cache"]["rel_path"] = rel.into();
        r["cache"]["dev"] = md.dev().into();
        r["cache"]["ino"] = md.ino().into();
        r["cache"]["size"] = md.len().into();
        format!("{r}\n")
    };
    let cases = [
        forge("../decoys/decoy", &s.decoys.join("decoy")),
        forge(&format!("../{}", fp("decoy")), &s.decoys.join(fp("decoy"))),
        forge(
            &format!("_base/../../decoys/{}", fp("decoy")),
            &s.decoys.join(fp("decoy")),
        ),
        forge(
            &format!("locks/nova-{}", fp("img-1")),
            &root.join("locks").join(format!("nova-{}", fp("img-1"))),
        ),
        forge("_base/", &root.join("_base")),
        forge(&format!("/{}", fp("decoy")), &s.decoys.join(fp("decoy"))),
    ];
    for c in &cases {
        let out = remove(c, &[]);
        assert_eq!(out.status.code(), Some(2), "{c}");
        let r = &records(&out)[0];
        assert_eq!(r["cache"]["action"], "skipped_not_candidate", "{r}");
        assert_eq!(r["error"]["kind"], "refused", "{r}");
    }
    s.decoys_untouched();
    assert!(
        root.join("locks")
            .join(format!("nova-{}", fp("img-1")))
            .exists()
    );
    // The genuine record still goes.
    let r = records(&remove(&format!("{rec}\n"), &[]));
    assert_eq!(r[0]["cache"]["action"], "deleted");
}

/// A file swapped in between the re-judgement and the unlink (hook
/// `cachewalk.nova.before_remove`) is another inode: it is left alone
/// (kind changed), and so are its sidecars and lock.
#[test]
fn a_file_swapped_before_the_unlink_is_left_alone() {
    let s = Scratch::new();
    let root = s.top.join("instances");
    nova_tree(&root);
    fs::remove_dir(root.join("inst-1")).unwrap();
    let out = walk(&root, None);
    let rec = records(&out)
        .into_iter()
        .find(|r| r["cache"]["rel_path"] == format!("_base/{}", fp("spare")))
        .unwrap();
    let target = root.join("_base").join(fp("spare"));
    let swap = format!(
        "printf new > '{0}.new' && mv '{0}.new' '{0}'",
        target.display()
    );
    let var = system::hook::var_name("cachewalk.nova.before_remove");
    let out = remove(&format!("{rec}\n"), &[(&var, &swap)]);
    assert_eq!(out.status.code(), Some(2));
    let r = &records(&out)[0];
    assert_eq!(r["cache"]["action"], "changed_since_walk", "{r}");
    assert_eq!(r["error"]["kind"], "changed", "{r}");
    assert_eq!(fs::read(&target).unwrap(), b"new");
    s.decoys_untouched();
}

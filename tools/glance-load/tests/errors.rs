//! What goes wrong, against a real Glance: a truncated or corrupt data
//! file, an old glance-replicator dump, 401/403, 400, 409, 415 and the
//! spoiled id it leaves (every later PUT is a 500); and a
//! 1 GiB livecopy in constant memory.
#![cfg(test)]

use glance_server::{
    AUTH, auth_flags, bytes_of, create, curl, curl_as, dump_text, glance_tool, have_bins, image,
    md5_hex, patch, run_tool, run_with_rss, start, upload,
};
use test_support::glance_server;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn load(url: &str, extra: &[&str], input: &str) -> (i32, Vec<Value>) {
    glance_tool("glance-load", url, extra, input)
}

fn load_bin() -> PathBuf {
    glance_server::bin("glance-load")
}

fn one_image(src: &str, dir: &Path, name: &str, seed: u32) -> (String, PathBuf) {
    let id = create(
        src,
        &format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"}}"#),
    );
    let f = dir.join(format!("{name}.raw"));
    std::fs::write(&f, bytes_of(seed, 200_000)).unwrap();
    upload(src, &id, &f);
    (id, f)
}

#[test]
fn failures_become_the_right_records() {
    if !have_bins(&["glance-dump", "glance-load"]) {
        return;
    }
    let Some(a) = start() else { return };
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("dump");

    // A truncated data file: refused before anything is written.
    let (id, _) = one_image(&a.url, t.path(), "cut", 1);
    let recs = dump_text(&a.url, &["--dir", d.to_str().unwrap()]);
    let img = d.join(format!("{id}.img"));
    let good = std::fs::read(&img).unwrap();
    std::fs::write(&img, &good[..150_000]).unwrap();
    let (code, out) = load(&b.url, &[], &recs);
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "bad_image");
    assert_eq!(out[0]["load"]["action"], "failed");
    assert!(image(&b.url, &id).is_none());

    // Same size, other bytes: the upload is abandoned before its last
    // byte; Glance keeps the image queued with no data, and a re-run with
    // the right file uploads into it.
    let mut bad = good.clone();
    bad[1000] ^= 0xff;
    std::fs::write(&img, &bad).unwrap();
    let (code, out) = load(&b.url, &[], &recs);
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "bad_image", "{out:?}");
    let q = image(&b.url, &id).unwrap();
    assert_eq!(q["status"], "queued");
    assert_eq!(q["size"], Value::Null);
    std::fs::write(&img, &good).unwrap();
    let (code, out) = load(&b.url, &[], &recs);
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out[0]["load"]["action"], "uploaded");
    assert_eq!(image(&b.url, &id).unwrap()["status"], "active");

    // 500: the store cannot be written (a file where its directory was).
    // The image stays queued with no data, so a retry is safe: tried, and
    // reported as a server error once the tries are spent; with the store
    // back, the next run uploads into the same image.
    let (sid, _) = one_image(&a.url, t.path(), "store", 3);
    let recs5 = dump_text(
        &a.url,
        &["--dir", d.to_str().unwrap(), "--filter", "name=store"],
    );
    let store = b.state().join("images");
    let aside = b.state().join("images.aside");
    std::fs::rename(&store, &aside).unwrap();
    std::fs::write(&store, b"not a directory").unwrap();
    let (code, out) = load(&b.url, &["--retries", "1"], &recs5);
    std::fs::remove_file(&store).unwrap();
    std::fs::rename(&aside, &store).unwrap();
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "server_error", "{out:?}");
    assert_eq!(out[0]["error"]["detail"]["http_status"], 500);
    assert_eq!(image(&b.url, &sid).unwrap()["status"], "queued");
    let (code, out) = load(&b.url, &[], &recs5);
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out[0]["load"]["action"], "uploaded");

    // 401: no identity at all.
    let (code, out) = run_tool(load_bin(), &["--url", &b.url], &recs);
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "permission_denied");
    assert_eq!(out[0]["error"]["detail"]["http_status"], 401);

    // 403: a member may not publish an image.
    let (pid, _) = one_image(&a.url, t.path(), "pub", 2);
    patch(
        &a.url,
        &pid,
        r#"[{"op":"replace","path":"/visibility","value":"public"}]"#,
    );
    let listing = dump_text(&a.url, &[]);
    let public: String = listing
        .lines()
        .filter(|l| l.contains(&pid))
        .map(|l| format!("{l}\n"))
        .collect();
    let member = [
        "X-Identity-Status: Confirmed",
        "X-User-Id: someone",
        "X-Project-Id: project-1",
        "X-Roles: member,reader",
    ];
    let mut args = vec!["--url", b.url.as_str(), "--source-url", a.url.as_str()];
    for h in member {
        args.extend(["--header", h]);
    }
    let src_auth = auth_flags("--source-header");
    args.extend(src_auth.iter().map(String::as_str));
    let (code, out) = run_tool(load_bin(), &args, &public);
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "permission_denied", "{out:?}");
    assert_eq!(out[0]["error"]["detail"]["http_status"], 403);
    assert!(out[0]["error"]["detail"]["request_id"].is_string());

    // 400: an additional property must be a string.
    let bad_prop = json!({"image": {"id": "0b7e3f9e-2f3c-4a55-8c1f-2a8d4c1e9d10", "name": "typed",
        "status": "queued", "disk_format": "raw", "container_format": "bare", "hw_count": 5}});
    let (code, out) = load(&b.url, &[], &format!("{bad_prop}\n"));
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "server_error");
    assert_eq!(out[0]["error"]["detail"]["http_status"], 400);

    // 409: a deleted id is burned: already_present, not an error.
    let burned = create(
        &b.url,
        r#"{"name":"burned","disk_format":"raw","container_format":"bare"}"#,
    );
    curl(&["-X", "DELETE", &format!("{}/v2/images/{burned}", b.url)]);
    let rec = json!({"image": {"id": burned, "name": "burned", "status": "queued",
        "disk_format": "raw", "container_format": "bare"}});
    let (code, out) = load(&b.url, &[], &format!("{rec}\n"));
    assert_eq!(code, 0);
    assert_eq!(out[0]["load"]["action"], "already_present");

    // 415: qcow2 with an external data file, declared raw. Our check
    // refuses it before anything is written...
    let q = t.path().join("x.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!(
            "data_file={}",
            t.path().join("x.data").to_str().unwrap()
        ))
        .arg(&q)
        .arg("1M")
        .status()
        .unwrap();
    assert!(st.success());
    let size = std::fs::metadata(&q).unwrap().len();
    let sid = "5d7c1a3e-9b8f-4e2d-a6c4-3f1e8b2d7a90";
    let rec = json!({"path": q, "image": {"id": sid, "name": "liar", "status": "active",
        "disk_format": "raw", "container_format": "bare", "size": size,
        "checksum": md5_hex(&q)}});
    let (code, out) = load(&b.url, &[], &format!("{rec}\n"));
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "format_mismatch");
    assert!(image(&b.url, sid).is_none());
    // ... and Glance refuses it with 415 when sent anyway,
    let (code, out) = load(&b.url, &["--no-format-check"], &format!("{rec}\n"));
    assert_eq!(code, 2);
    assert_eq!(out[0]["error"]["kind"], "format_mismatch");
    assert_eq!(out[0]["error"]["detail"]["http_status"], 415);
    // after which every PUT is a 500 and the id is spoiled.
    let (code, _) = curl_as(
        &AUTH,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            "x",
            &format!("{}/v2/images/{sid}/file", b.url),
        ],
    );
    assert_eq!(code, 500);
    let (code, out) = load(&b.url, &["--no-format-check"], &format!("{rec}\n"));
    assert_eq!(code, 1);
    assert_eq!(out[0]["load"]["action"], "spoiled");
    // Usage errors (no URL, not http(s)): tests/cli.rs.
}

/// An old glance-replicator dump (the layout of notes A.3, a v1 server's
/// metadata) loads into a v2 Glance: the v1 keys mapped, names that are
/// not UUIDs ignored, an active image without its .img skipped, a deleted
/// one skipped, a symlink refused, the .img's MD5 checked as it streams.
#[test]
fn an_old_replicator_dump_loads() {
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let data = bytes_of(9, 2_000_000);
    let active = "4fe257e0-c119-408e-9053-0be3f4940d6d";
    std::fs::write(d.join(format!("{active}.img")), &data).unwrap();
    let md5 = md5_hex(&d.join(format!("{active}.img")));
    let v1 = |id: &str, status: &str, size: Value, checksum: Value| {
        json!({"status": status, "virtual_size": null, "name": format!("v1-{status}"),
            "deleted": status == "deleted", "container_format": "bare",
            "created_at": "2026-11-22T18:13:35.277990", "disk_format": "raw",
            "updated_at": "2026-11-22T18:13:35.381449",
            "properties": {"os_distro": "cirros", "gone": null}, "owner": null,
            "protected": false, "min_ram": 64, "checksum": checksum, "min_disk": 0,
            "is_public": true, "deleted_at": null, "id": id, "size": size})
        .to_string()
    };
    std::fs::write(
        d.join(active),
        v1(active, "active", json!(2_000_000), json!(md5)),
    )
    .unwrap();
    let queued = "ab288a10-c153-4f21-ab1b-512553dbc029";
    std::fs::write(d.join(queued), v1(queued, "queued", json!(0), Value::Null)).unwrap();
    let nodata = "11111111-2222-4333-8444-555555555555";
    std::fs::write(d.join(nodata), v1(nodata, "active", json!(5), json!("x"))).unwrap();
    let deleted = "22222222-3333-4444-8555-666666666666";
    std::fs::write(
        d.join(deleted),
        v1(deleted, "deleted", json!(5), json!("x")),
    )
    .unwrap();
    std::fs::write(d.join("README"), "not an image").unwrap();
    let outside = t.path().join("outside.json");
    std::fs::write(&outside, v1(queued, "queued", json!(0), Value::Null)).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("33333333-4444-4555-8666-777777777777")).unwrap();

    let (code, out) = load(&b.url, &["--dir", d.to_str().unwrap()], "");
    assert_eq!(code, 2, "{out:#?}");
    let by_id = |id: &str| {
        out.iter()
            .find(|r| r["image"]["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {out:#?}"))
            .clone()
    };
    assert_eq!(out.len(), 5, "README ignored: {out:#?}");
    assert_eq!(by_id(active)["load"]["action"], "created");
    assert_eq!(by_id(active)["dump"]["format"], "v1");
    assert_eq!(by_id(queued)["load"]["action"], "created");
    assert_eq!(by_id(nodata)["load"]["action"], "skipped");
    assert_eq!(by_id(deleted)["load"]["action"], "skipped");
    let link = out
        .iter()
        .find(|r| r["error"]["kind"] == "symlink")
        .unwrap();
    assert!(link["path"].as_str().unwrap().ends_with("777777777777"));
    let img = image(&b.url, active).unwrap();
    assert_eq!(img["visibility"], "public");
    assert_eq!(img["os_distro"], "cirros");
    assert_eq!(img["checksum"], md5.as_str());
    assert!(img.get("gone").is_none());
    assert!(img.get("is_public").is_none());
    assert!(image(&b.url, nodata).is_none());

    // A re-run writes nothing; --dry-run plans nothing new.
    let (_, out) = load(&b.url, &["--dir", d.to_str().unwrap()], "");
    assert_eq!(by_id_action(&out, active), "unchanged");
    assert_eq!(by_id_action(&out, queued), "unchanged");

    // A truncated .img from an interrupted old dump is refused.
    let fresh = "44444444-5555-4666-8777-888888888888";
    std::fs::write(
        d.join(fresh),
        v1(fresh, "active", json!(2_000_000), json!(md5)),
    )
    .unwrap();
    std::fs::write(d.join(format!("{fresh}.img")), &data[..1_000_000]).unwrap();
    let (_, out) = load(&b.url, &["--dir", d.to_str().unwrap()], "");
    let r = out.iter().find(|r| r["image"]["id"] == fresh).unwrap();
    assert_eq!(r["error"]["kind"], "bad_image");
    assert!(image(&b.url, fresh).is_none());
}

fn by_id_action(out: &[Value], id: &str) -> String {
    out.iter()
        .find(|r| r["image"]["id"] == id)
        .map(|r| r["load"]["action"].as_str().unwrap_or("?").to_owned())
        .unwrap_or_default()
}

/// A 1 GiB image copies by livecopy in constant memory.
#[test]
fn a_gibibyte_livecopy_in_constant_memory() {
    if !have_bins(&["glance-dump", "glance-load"]) {
        return;
    }
    let Some(a) = start() else { return };
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("big.raw");
    // Sparse: the bytes do not matter here, only how many.
    std::fs::File::create(&f).unwrap().set_len(1 << 30).unwrap();
    let id = create(
        &a.url,
        r#"{"name":"big","disk_format":"raw","container_format":"bare"}"#,
    );
    upload(&a.url, &id, &f);
    std::fs::remove_file(&f).unwrap();
    let listing = dump_text(&a.url, &[]);
    let mut cmd = Command::new(load_bin());
    cmd.args(["--url", &b.url, "--source-url", &a.url]);
    cmd.args(auth_flags("--header"))
        .args(auth_flags("--source-header"));
    let (code, out, rss) = run_with_rss(cmd, listing.as_bytes());
    let rec: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(code, 0, "{rec}");
    assert_eq!(rec["load"]["action"], "created");
    let (x, y) = (image(&a.url, &id).unwrap(), image(&b.url, &id).unwrap());
    assert_eq!(x["os_hash_value"], y["os_hash_value"]);
    assert_eq!(y["size"], 1u64 << 30);
    eprintln!("glance-load livecopy of 1 GiB: peak RSS {} KiB", rss);
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
}

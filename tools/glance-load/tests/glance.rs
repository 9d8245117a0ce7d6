//! glance-dump from one real Glance piped into glance-load into another:
//! images created with their ids, data uploaded with its size and
//! verified, non-active images as metadata; a second run writes nothing;
//! a changed property is patched alone; other data under the same id is a
//! conflict; --dry-run writes nothing.
#![cfg(test)]

use glance_server::{AUTH, create, curl, dump_text, glance_tool, have_bins, patch, start, upload};
use test_support::glance_server;

use serde_json::Value;
use std::process::Command;

fn dump(url: &str, dir: &str) -> String {
    dump_text(url, &["--dir", dir])
}

fn load(url: &str, input: &str, extra: &[&str]) -> (i32, Vec<Value>) {
    glance_tool("glance-load", url, extra, input)
}

fn actions(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["load"]["action"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn replicate_between_two_real_glances() {
    if !have_bins(&["glance-dump", "glance-load"]) {
        return;
    }
    let Some(src) = start() else { return };
    let Some(dst) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data.bin");
    let bytes: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    let active = create(
        &src.url,
        r#"{"name":"cirros","disk_format":"raw","container_format":"bare","os_distro":"cirros","tags":["x"],"min_ram":64}"#,
    );
    upload(&src.url, &active, &data);
    let queued = create(
        &src.url,
        r#"{"name":"empty","disk_format":"qcow2","container_format":"bare"}"#,
    );
    let dir = t.path().join("dump");
    let records = dump(&src.url, dir.to_str().unwrap());

    // --compare before anything is copied: all missing, exit 1.
    let (code, recs) = load(&dst.url, &records, &["--compare"]);
    assert_eq!(code, 1);
    assert_eq!(actions(&recs), ["missing", "missing"]);

    // --dry-run: the plan, no writes.
    let (code, recs) = load(&dst.url, &records, &["--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(actions(&recs), ["would_create", "would_create"]);
    assert_eq!(
        curl(&[&format!("{}/v2/images", dst.url)])["images"],
        serde_json::json!([])
    );

    let (code, recs) = load(&dst.url, &records, &[]);
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(actions(&recs), ["created", "created"]);
    let a = curl(&[&format!("{}/v2/images/{active}", dst.url)]);
    let s = curl(&[&format!("{}/v2/images/{active}", src.url)]);
    for k in [
        "id",
        "name",
        "status",
        "size",
        "checksum",
        "os_hash_value",
        "os_distro",
        "tags",
        "min_ram",
        "disk_format",
    ] {
        assert_eq!(a[k], s[k], "{k}");
    }
    let q = curl(&[&format!("{}/v2/images/{queued}", dst.url)]);
    assert_eq!(q["status"], "queued");
    // The data itself, byte for byte.
    let got = Command::new("curl")
        .args(["-s", "-f"])
        .args(AUTH.iter().flat_map(|h| ["-H", h]))
        .arg(format!("{}/v2/images/{active}/file", dst.url))
        .output()
        .unwrap();
    assert!(got.stdout == bytes);

    // Now in sync, by --compare's reckoning too.
    let (code, recs) = load(&dst.url, &records, &["--compare"]);
    assert_eq!(code, 0, "{recs:?}");
    assert_eq!(actions(&recs), ["in_sync", "in_sync"]);

    // A second run writes nothing.
    let before = curl(&[&format!("{}/v2/images/{active}", dst.url)])["updated_at"].clone();
    let (_, recs) = load(&dst.url, &records, &[]);
    assert_eq!(actions(&recs), ["unchanged", "unchanged"]);
    assert_eq!(
        curl(&[&format!("{}/v2/images/{active}", dst.url)])["updated_at"],
        before
    );

    // A changed property is patched alone.
    patch(
        &src.url,
        &active,
        r#"[{"op":"replace","path":"/os_distro","value":"debian"}]"#,
    );
    let records = dump(&src.url, dir.to_str().unwrap());
    let (code, recs) = load(&dst.url, &records, &["--compare"]);
    assert_eq!(code, 1);
    assert_eq!(actions(&recs), ["diff", "in_sync"]);
    assert_eq!(
        recs[0]["load"]["differences"],
        serde_json::json!([{"key": "os_distro", "source": "debian", "target": "cirros"}])
    );
    let (_, recs) = load(&dst.url, &records, &[]);
    assert_eq!(actions(&recs), ["updated", "unchanged"]);
    assert_eq!(recs[0]["load"]["changes"], serde_json::json!(["os_distro"]));
    assert_eq!(
        curl(&[&format!("{}/v2/images/{active}", dst.url)])["os_distro"],
        "debian"
    );

    // Other data under the same id on the target: a conflict (exit 1).
    let other = t.path().join("other.bin");
    std::fs::write(&other, b"other data").unwrap();
    let clash = create(
        &src.url,
        r#"{"name":"clash","disk_format":"raw","container_format":"bare"}"#,
    );
    upload(&src.url, &clash, &data);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!(
            r#"{{"id":"{clash}","name":"clash","disk_format":"raw","container_format":"bare"}}"#
        ),
        &format!("{}/v2/images", dst.url),
    ]);
    upload(&dst.url, &clash, &other);
    let records = dump(&src.url, dir.to_str().unwrap());
    let (code, recs) = load(&dst.url, &records, &[]);
    assert_eq!(code, 1);
    assert_eq!(actions(&recs), ["unchanged", "unchanged", "conflict"]);
    let (_, recs) = load(&dst.url, &records, &["--compare"]);
    assert_eq!(actions(&recs), ["in_sync", "in_sync", "data_mismatch"]);
}

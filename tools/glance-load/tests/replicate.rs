//! The issue's "done when", between real Glances: a mixed set of images
//! (public, private, shared with members, hidden, protected, deactivated,
//! queued) replicated by `glance-dump --dir D` + `glance-load --dir D`
//! into one target and by livecopy (`glance-dump | glance-load
//! --source-url`) into another, each checked by a compare that finds
//! nothing and by the targets' own view; a second load writes nothing.
#![cfg(test)]

use glance_server::{
    AUTH, auth_flags, bytes_of, create, curl, curl_as, dump_text, glance_tool, have_bins, patch,
    start, upload,
};
use test_support::glance_server;

use serde_json::{Value, json};

fn dump(url: &str, extra: &[&str]) -> String {
    dump_text(url, extra)
}

fn load(url: &str, extra: &[&str], input: &str) -> (i32, Vec<Value>) {
    glance_tool("glance-load", url, extra, input)
}

/// The `load.action` of each record, by image name.
fn actions(recs: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = recs
        .iter()
        .map(|r| {
            (
                r["image"]["name"].as_str().unwrap_or("?").to_owned(),
                r["load"]["action"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn all(recs: &[Value], action: &str) -> bool {
    !recs.is_empty() && recs.iter().all(|r| r["load"]["action"] == action)
}

fn image(url: &str, id: &str) -> Value {
    curl(&[&format!("{url}/v2/images/{id}")])
}

fn members(url: &str, id: &str) -> Vec<String> {
    let v = curl(&[&format!("{url}/v2/images/{id}/members")]);
    let mut m: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_id"].as_str().unwrap().to_owned())
        .collect();
    m.sort();
    m
}

/// The source: one image of each kind the issue names. Their ids by name.
fn populate(src: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    let mut active = |name: &str, extra: &str, seed: u32| {
        let id = create(
            src,
            &format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"{extra}}}"#),
        );
        let f = dir.join(format!("{name}.raw"));
        std::fs::write(&f, bytes_of(seed, 300_000 + seed as usize * 1000)).unwrap();
        upload(src, &id, &f);
        ids.push((name.to_owned(), id.clone()));
        id
    };
    active(
        "public",
        r#","visibility":"public","os_distro":"cirros","tags":["a","b"],"min_ram":64"#,
        1,
    );
    active(
        "private",
        r#","visibility":"private","hw_disk_bus":"scsi""#,
        2,
    );
    let shared = active("shared", r#","visibility":"shared""#, 3);
    active("hidden", r#","os_hidden":true"#, 4);
    active("protected", r#","protected":true"#, 5);
    let deact = active("deactivated", "", 6);
    for m in ["project-2", "project-3"] {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"member":"{m}"}}"#),
            &format!("{src}/v2/images/{shared}/members"),
        ]);
    }
    // Only the member itself can accept.
    let (code, body) = curl_as(
        &[
            "X-Identity-Status: Confirmed",
            "X-User-Id: other",
            "X-Project-Id: project-2",
            "X-Roles: member,reader",
            "Content-Type: application/json",
        ],
        &[
            "-X",
            "PUT",
            "-d",
            r#"{"status":"accepted"}"#,
            &format!("{src}/v2/images/{shared}/members/project-2"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    curl(&[
        "-X",
        "POST",
        &format!("{src}/v2/images/{deact}/actions/deactivate"),
    ]);
    let q = create(
        src,
        r#"{"name":"queued","disk_format":"qcow2","container_format":"bare","os_distro":"none"}"#,
    );
    ids.push(("queued".to_owned(), q));
    ids.sort();
    ids
}

/// The target holds what the source does, seen through the API.
fn same_as_source(src: &str, dst: &str, ids: &[(String, String)]) {
    for (name, id) in ids {
        let a = image(src, id);
        let b = image(dst, id);
        for k in [
            "name",
            "status",
            "visibility",
            "os_hidden",
            "protected",
            "size",
            "checksum",
            "os_hash_value",
            "disk_format",
            "min_ram",
            "os_distro",
            "hw_disk_bus",
        ] {
            assert_eq!(a.get(k), b.get(k), "{name}: {k}");
        }
        let mut ta: Vec<Value> = a["tags"].as_array().unwrap().clone();
        let mut tb: Vec<Value> = b["tags"].as_array().unwrap().clone();
        ta.sort_by_key(Value::to_string);
        tb.sort_by_key(Value::to_string);
        assert_eq!(ta, tb, "{name}: tags");
        if a["visibility"] == "shared" {
            assert_eq!(members(src, id), members(dst, id), "{name}: members");
        }
    }
}

#[test]
fn mixed_set_by_dump_dir_and_by_livecopy() {
    if !have_bins(&["glance-dump", "glance-load"]) {
        return;
    }
    let Some(a) = start() else { return };
    let Some(b) = start() else { return };
    let Some(c) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let ids = populate(&a.url, t.path());
    let d = t.path().join("dump");
    let d = d.to_str().unwrap();

    // glance-dump --url A --dir D && glance-load --url B --dir D
    let records = dump(&a.url, &["--dir", d]);
    assert_eq!(records.lines().count(), 7);
    let (code, recs) = load(&b.url, &["--dir", d], "");
    assert_eq!(code, 0, "{recs:#?}");
    assert!(all(&recs, "created"), "{:?}", actions(&recs));
    let shared = recs
        .iter()
        .find(|r| r["image"]["name"] == "shared")
        .unwrap();
    assert_eq!(
        shared["load"]["members_added"],
        json!(["project-2", "project-3"])
    );
    // The acceptance needs project-2's own token: reported, not faked.
    assert_eq!(
        shared["load"]["members_status"],
        json!([{"member_id": "project-2", "source": "accepted", "target": "pending"}])
    );
    same_as_source(&a.url, &b.url, &ids);

    // The data, byte for byte, of the deactivated image too.
    for (name, id) in &ids {
        if name == "queued" {
            continue;
        }
        let get = |url: &str| {
            std::process::Command::new("curl")
                .args(["-s", "-f"])
                .args(AUTH.iter().flat_map(|h| ["-H", h]))
                .arg(format!("{url}/v2/images/{id}/file"))
                .output()
                .unwrap()
                .stdout
        };
        assert!(get(&a.url) == get(&b.url), "{name}: data");
    }

    // The compare finds nothing; a second load writes nothing.
    let listing = dump(&a.url, &[]);
    let (code, recs) = load(&b.url, &["--compare"], &listing);
    assert_eq!(code, 0, "{:?}", recs);
    assert!(all(&recs, "in_sync"), "{:#?}", recs);
    let stamps = |url: &str| -> Vec<Value> {
        ids.iter()
            .map(|(_, id)| image(url, id)["updated_at"].clone())
            .collect()
    };
    let before = stamps(&b.url);
    let (code, recs) = load(&b.url, &["--dir", d], "");
    assert_eq!(code, 0);
    assert!(all(&recs, "unchanged"), "{:?}", actions(&recs));
    assert_eq!(stamps(&b.url), before);

    // glance-dump --url A | glance-load --url C --source-url A
    let mut live = vec!["--source-url", a.url.as_str(), "--jobs", "3"];
    let src_auth = auth_flags("--source-header");
    live.extend(src_auth.iter().map(String::as_str));
    let (code, recs) = load(&c.url, &live, &listing);
    assert_eq!(code, 0, "{recs:#?}");
    assert!(all(&recs, "created"), "{:?}", actions(&recs));
    // --jobs keeps the input order.
    let names_in = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["image"]["name"].to_string())
            .collect()
    };
    let out: String = recs.iter().map(|r| format!("{r}\n")).collect();
    assert_eq!(names_in(&out), names_in(&listing));
    same_as_source(&a.url, &c.url, &ids);
    let (code, recs) = load(&c.url, &["--compare", "--strict"], &listing);
    assert_eq!(code, 0, "{recs:#?}");
    assert!(all(&recs, "in_sync"));

    // A property changed and one added on the target: compare shows both
    // (extra only counts with --strict); a load patches the first alone
    // and keeps the target's own key unless --prune-keys.
    let (_, pid) = ids.iter().find(|(n, _)| n == "private").unwrap();
    patch(
        &a.url,
        pid,
        r#"[{"op":"replace","path":"/hw_disk_bus","value":"virtio"}]"#,
    );
    patch(
        &c.url,
        pid,
        r#"[{"op":"add","path":"/site_note","value":"local"}]"#,
    );
    let listing = dump(&a.url, &[]);
    let (code, recs) = load(&c.url, &["--compare"], &listing);
    assert_eq!(code, 1);
    let r = recs.iter().find(|r| r["image"]["id"] == *pid).unwrap();
    assert_eq!(r["load"]["action"], "diff");
    assert_eq!(
        r["load"]["differences"],
        json!([{"key": "hw_disk_bus", "source": "virtio", "target": "scsi"}])
    );
    assert_eq!(r["load"]["extra"], json!(["site_note"]));
    // The replicator's dontreplicate: a change only in an excluded key is
    // neither sent nor reported.
    let skip = ["--exclude-key", "hw_disk_bus"];
    let (code, recs) = load(&c.url, &skip, &listing);
    assert_eq!(code, 0);
    assert!(all(&recs, "unchanged"), "{:?}", actions(&recs));
    let (code, recs) = load(&c.url, &[&["--compare"][..], &skip[..]].concat(), &listing);
    assert_eq!(code, 0);
    assert!(all(&recs, "in_sync"));
    let (code, recs) = load(&c.url, &live, &listing);
    assert_eq!(code, 0);
    let r = recs.iter().find(|r| r["image"]["id"] == *pid).unwrap();
    assert_eq!(r["load"]["action"], "updated");
    assert_eq!(r["load"]["changes"], json!(["hw_disk_bus"]));
    assert_eq!(image(&c.url, pid)["site_note"], "local");
    let (_, recs) = load(&c.url, &["--compare", "--strict"], &listing);
    let r = recs.iter().find(|r| r["image"]["id"] == *pid).unwrap();
    assert_eq!(r["load"]["action"], "diff");
    let (_, recs) = load(&c.url, &["--prune-keys"], &listing);
    let r = recs.iter().find(|r| r["image"]["id"] == *pid).unwrap();
    assert_eq!(r["load"]["changes"], json!(["-site_note"]));
    assert!(image(&c.url, pid).get("site_note").is_none());
    let (code, _) = load(&c.url, &["--compare", "--strict"], &listing);
    assert_eq!(code, 0);

    // Deactivation follows the source both ways.
    let (_, did) = ids.iter().find(|(n, _)| n == "deactivated").unwrap();
    curl(&[
        "-X",
        "POST",
        &format!("{}/v2/images/{did}/actions/reactivate", a.url),
    ]);
    let (_, recs) = load(&c.url, &[], &dump(&a.url, &[]));
    let r = recs.iter().find(|r| r["image"]["id"] == *did).unwrap();
    assert_eq!(r["load"]["changes"], json!(["status:reactivate"]));
    assert_eq!(image(&c.url, did)["status"], "active");
}

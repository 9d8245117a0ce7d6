//! Operator pipelines across the tools, against two real Glances:
//! replication with verification (`glance-dump --dir | checksum-tee
//! --verify | glance-load`), and every tool passing the others' facets
//! through (`glance-dump | cachewalk fname | imginfo-parse | checksum-tee
//! --verify | glance-load`) while glance-load still sends only `image`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "../glance-server/harness.rs"]
mod harness;
use harness::{AUTH, bytes_of, create, curl, start, upload};

use pipeline_tests::tool;
use serde_json::Value;
use std::process::Command;

/// Run `script` in bash with the tools first on PATH and `$A`, `$B`,
/// `$H` (the identity flags) set; its records and exit status.
fn pipeline(script: &str, a: &str, b: &str, dir: &std::path::Path) -> (i32, Vec<Value>) {
    let bin = tool("glance-load").unwrap();
    let h: Vec<String> = AUTH.iter().map(|x| format!("--header '{x}'")).collect();
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!(
            "H=\"{}\"; {script}",
            h.join(" ").replace('"', "\\\"")
        ))
        .current_dir(dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("A", a)
        .env("B", b)
        .output()
        .unwrap();
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), recs)
}

#[test]
fn replication_with_verification_and_facets_passed_through() {
    if tool("glance-load").is_err() || tool("checksum-tee").is_err() {
        assert!(std::env::var_os("CI").is_none(), "the tools are not built");
        return;
    }
    let Some(a) = start() else { return };
    let Some(b) = start() else { return };
    let t = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for (i, name) in ["one", "two"].iter().enumerate() {
        let id = create(
            &a.url,
            &format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"}}"#),
        );
        let f = t.path().join(name);
        std::fs::write(&f, bytes_of(40 + i as u32, 500_000)).unwrap();
        upload(&a.url, &id, &f);
        ids.push(id);
    }

    // Replication with verification: the dump re-read and checked against
    // Glance's hashes before anything is loaded.
    let (code, recs) = pipeline(
        r#"eval "glance-dump --url \"$A\" $H --dir D" | checksum-tee --verify | eval "glance-load --url \"$B\" $H""#,
        &a.url,
        &b.url,
        t.path(),
    );
    assert_eq!(code, 0, "{recs:#?}");
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r["load"]["action"], "created", "{r:#}");
        assert_eq!(r["checksums"]["verified"], true, "{r:#}");
        assert!(r["dump"].is_object());
    }

    // Every tool's facet survives the others; glance-load sends only the
    // image's own keys.
    let (code, recs) = pipeline(
        r#"eval "glance-dump --url \"$A\" $H --dir D" | jq -c '.image_id = .image.id' \
           | cachewalk fname | imginfo-parse | checksum-tee --verify \
           | eval "glance-load --url \"$B\" $H""#,
        &a.url,
        &b.url,
        t.path(),
    );
    assert_eq!(code, 0, "{recs:#?}");
    for r in &recs {
        for facet in ["image", "dump", "cache", "info", "checksums", "load"] {
            assert!(r.get(facet).is_some(), "{facet} missing: {r:#}");
        }
        assert_eq!(r["info"]["format"], "raw");
        assert_eq!(r["load"]["action"], "unchanged", "{r:#}");
    }
    for id in &ids {
        let img = curl(&[&format!("{}/v2/images/{id}", b.url)]);
        for k in [
            "dump",
            "cache",
            "info",
            "checksums",
            "load",
            "image_id",
            "path",
        ] {
            assert!(img.get(k).is_none(), "{k} reached Glance: {img:#}");
        }
    }
}

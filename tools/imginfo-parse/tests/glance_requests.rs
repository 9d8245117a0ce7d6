//! What the audit asks a real Glance (several uWSGI workers, so requests
//! run concurrently): at most two Range requests per image — one for an
//! image small enough to come whole, two (the head, and the last 16 KiB
//! in one) for any other, even where the last sector straddles a block —
//! except VHDX, whose metadata lies where its region table says (three:
//! Glance answers one range per request) — counted by the server's
//! own access log; and with `--jobs`, records out in the order they came
//! in.
#![cfg(test)]

mod support;

use glance_server::{auth_flags, bytes_of, create, dump_text, have_bins, run_tool, upload};
use serde_json::Value;
use std::path::Path;
use test_support::glance_server;

/// `GET .../file` requests the server logged, by image id.
fn file_gets(state: &Path) -> std::collections::BTreeMap<String, u64> {
    let log = std::fs::read_to_string(state.join("log/uwsgi.log")).unwrap_or_default();
    let mut n = std::collections::BTreeMap::new();
    for l in log.lines() {
        let Some((_, rest)) = l.split_once("GET /v2/images/") else {
            continue;
        };
        if let Some((id, _)) = rest.split_once("/file ") {
            *n.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    n
}

fn audit(url: &str, listing: &str, jobs: &str) -> Vec<Value> {
    let auth = auth_flags("--header");
    let mut args = vec!["--check", "--summary", "--jobs", jobs, "--from-glance", url];
    args.extend(auth.iter().map(String::as_str));
    let (code, recs) = run_tool(glance_server::bin("imginfo-parse"), &args, listing);
    assert_eq!(code, 0, "{recs:#?}");
    recs
}

#[test]
fn at_most_two_ranges_per_image_and_records_in_input_order() {
    if !have_bins(&["glance-dump", "imginfo-parse"]) {
        return;
    }
    let Some(g) = glance_server::start_workers(3) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let qcow2 = std::fs::read(
        glance_server::workspace().join("tests/fixtures/hostile/images/clean-v3.qcow2"),
    )
    .unwrap();
    // (format, bytes, requests expected). 20 blocks of 16 KiB and 100
    // bytes: the last 512 bytes straddle a block boundary (three requests
    // when the end was fetched block by block). The qcow2 (196,616 bytes)
    // is under 256 KiB: whole, in one.
    // A VHDX as qemu-img makes it (8 MiB: BAT at 2 MiB, metadata at
    // 3 MiB, where its region table says): its fixed head (320 KiB, asked
    // at once for an image Glance calls vhdx), the end, and the metadata
    // and BAT in one request.
    let vhdx = support::qemu_images(&["-f vhdx v.vhdx 10G"]);
    let mut kinds: Vec<(&str, Vec<u8>, u64)> = vec![
        ("raw", bytes_of(7, 20 * 16384 + 100), 2),
        ("raw", bytes_of(8, 1 << 20), 2),
        ("qcow2", qcow2, 1),
    ];
    if let Some(d) = &vhdx {
        kinds.push(("vhdx", std::fs::read(d.path().join("v.vhdx")).unwrap(), 3));
    }
    let mut want = std::collections::BTreeMap::new();
    for i in 0..12 {
        let (fmt, data, n) = &kinds[i % kinds.len()];
        let id = create(
            &g.url,
            &format!(r#"{{"name":"r{i}","disk_format":"{fmt}","container_format":"bare"}}"#),
        );
        let f = t.path().join(format!("r{i}"));
        std::fs::write(&f, data).unwrap();
        upload(&g.url, &id, &f);
        want.insert(id, *n);
    }
    let listing = dump_text(&g.url, &["--metaonly", "--no-members"]);
    let listed: Vec<String> = listing
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["image"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(listed.len(), 12);

    for jobs in ["6", "1"] {
        let before = file_gets(g.state());
        let recs = audit(&g.url, &listing, jobs);
        let (summary, recs) = recs.split_last().unwrap();
        let order: Vec<&str> = recs
            .iter()
            .map(|r| r["image"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(order, listed, "--jobs {jobs}: not in input order");
        for r in recs {
            let id = r["image"]["id"].as_str().unwrap();
            assert_eq!(r["check"]["acceptable"], true, "{r:#}");
            assert_eq!(r["probe"]["requests"], want[id], "--jobs {jobs}: {r:#}");
        }
        let total: u64 = want.values().sum();
        assert_eq!(summary["summary"]["requests"], total, "{summary}");
        // The server's count, per image (uWSGI logs a request once its
        // response is out: wait, bounded, for the last lines).
        let mut seen = Default::default();
        for _ in 0..50 {
            let after = file_gets(g.state());
            seen = want
                .keys()
                .map(|id| {
                    let n =
                        after.get(id).copied().unwrap_or(0) - before.get(id).copied().unwrap_or(0);
                    (id.clone(), n)
                })
                .collect::<std::collections::BTreeMap<_, _>>();
            if seen == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(seen, want, "--jobs {jobs}: requests the server logged");
    }
}

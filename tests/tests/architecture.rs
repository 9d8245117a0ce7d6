//! The invariants of ARCHITECTURE.md the compiler does not hold by itself:
//! which tools link the network, which crates may write records, no module
//! cycles, the clap struct only in a tool's lib.rs, one home for the VHD
//! cookie.
#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The packages `package` depends on at run time (normal edges only).
fn runtime_deps(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn only_the_glance_tools_link_http_and_tls() {
    let net = [
        "ureq",
        "rustls",
        // ring itself is allowed: system::hash takes SHA-384/512 from it.
        "webpki-roots",
        "image-tools-openstack",
    ];
    for tool in ["vhd-chain", "cachewalk", "checksum-tee"] {
        let deps = runtime_deps(tool);
        assert!(deps.contains("image-tools-system"), "{tool}: {deps:?}");
        for n in net {
            assert!(!deps.contains(n), "{tool} links {n}");
        }
    }
    for tool in ["imginfo-parse", "glance-dump", "glance-load"] {
        assert!(runtime_deps(tool).contains("ureq"), "{tool}");
    }
}

#[test]
fn no_library_crate_can_write_records() {
    for lib in [
        "image-tools-system",
        "image-tools-formats",
        "image-tools-openstack",
    ] {
        let deps = runtime_deps(lib);
        assert!(
            !deps.contains("image-tools-filter"),
            "{lib} depends on filter"
        );
    }
    let formats = runtime_deps("image-tools-formats");
    assert!(!formats.contains("ureq"), "formats links ureq");
}

/// Product source of a module: without comments and the tests module.
fn product_text(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap();
    // The tests module ends each file (`mod tests`, or `pub(crate) mod
    // tests` when another module's tests share its helpers).
    let tail = [
        "#[cfg(test)]\nmod tests",
        "#[cfg(test)]\npub(crate) mod tests",
    ]
    .iter()
    .filter_map(|t| s.find(t))
    .min();
    let s = match tail {
        Some(i) => &s[..i],
        None => &s[..],
    };
    s.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `src` directories of every library crate and tool.
fn source_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for group in ["common", "tools"] {
        for e in std::fs::read_dir(root().join(group)).unwrap() {
            let src = e.unwrap().path().join("src");
            if src.is_dir() {
                dirs.push(src);
            }
        }
    }
    dirs.sort();
    assert!(dirs.len() >= 10, "{dirs:?}");
    dirs
}

/// The top-level modules of a crate each module names (`crate::m`, or
/// `super::m` from a top-level module).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let text = product_text(&p);
        let mut uses = BTreeSet::new();
        let mut prefixes = vec!["crate::"];
        if name != "lib" && name != "main" {
            prefixes.push("super::");
        }
        for prefix in prefixes {
            for (i, _) in text.match_indices(prefix) {
                let rest = &text[i + prefix.len()..];
                let m: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !m.is_empty() && m != name {
                    uses.insert(m);
                }
            }
        }
        graph.insert(name, uses);
    }
    graph
}

/// A cycle through `start`, if any (depth-first over module names).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn modules_do_not_import_each_other_in_circles() {
    let mut cycles = Vec::new();
    for src in source_dirs() {
        let graph = module_graph(&src);
        for m in graph.keys() {
            if m == "lib" || m == "main" {
                continue;
            }
            if let Some(c) = cycle_from(&graph, m) {
                cycles.push(format!("{}: {}", src.display(), c.join(" → ")));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn only_a_tools_lib_rs_sees_its_command_line() {
    for e in std::fs::read_dir(root().join("tools")).unwrap() {
        let src = e.unwrap().path().join("src");
        for m in std::fs::read_dir(&src).unwrap() {
            let p = m.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == "lib.rs" || name == "main.rs" {
                continue;
            }
            let text = product_text(&p);
            let bad = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            assert!(
                !bad.into_iter().any(|w| w == "Cli"),
                "{} names the clap struct",
                p.display()
            );
        }
    }
}

#[test]
fn the_vhd_cookie_has_one_home() {
    let mut homes = Vec::new();
    for src in source_dirs() {
        for m in std::fs::read_dir(&src).unwrap() {
            let p = m.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") && product_text(&p).contains("conectix") {
                homes.push(p);
            }
        }
    }
    assert_eq!(homes, [root().join("common/formats/src/vhd.rs")]);
}

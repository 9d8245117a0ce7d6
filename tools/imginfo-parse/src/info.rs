//! The `info` facet: what `qemu-img info` says about one image, with qemu's
//! JSON key names in snake_case, whichever source it came from.

use serde_json::{Map, Value};

/// Where an `info` facet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `qemu-img info --output=json` (read from stdin, or run with `--qemu`).
    QemuJson,
    /// The human text of `qemu-img info`, any QEMU generation.
    QemuHuman,
    /// Read from the image's headers by this tool.
    Native,
}

impl Source {
    /// The value of `info.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::QemuJson => "qemu_json",
            Source::QemuHuman => "qemu_human",
            Source::Native => "native",
        }
    }
}

/// Keys of an info object in the order they are written; anything else
/// qemu reports follows them, then our own markers.
pub(crate) const ORDER: &[&str] = &[
    "source",
    "filename",
    "filename_bytes",
    "format",
    "glance_disk_format",
    "virtual_size",
    "actual_size",
    "cluster_size",
    "encrypted",
    "dirty_flag",
    "backing_filename",
    "backing_filename_bytes",
    "full_backing_filename",
    "full_backing_filename_bytes",
    "backing_filename_format",
    "backing_chain_depth",
    "snapshots",
    "format_specific",
    "children",
    "claimed_format",
    "detected_format",
    "detected_formats",
    "iso",
    "partition_table",
    "header",
];

/// Keys of a snapshot in the order they are written.
pub(crate) const SNAPSHOT_ORDER: &[&str] = &[
    "id",
    "id_bytes",
    "name",
    "name_bytes",
    "vm_state_size",
    "date",
    "date_sec",
    "date_nsec",
    "date_local",
    "vm_clock_sec",
    "vm_clock_nsec",
    "icount",
];

/// Our own markers, written last.
const TRAILER: &[&str] = &["approximate", "non_utf8", "ambiguous"];

/// The Glance `disk_format` for a qemu format name, where Glance has one.
/// Glance calls VHD `vhd` (qemu: `vpc`) and Virtuozzo `ploop` (qemu:
/// `parallels`); ISO images are `raw` to qemu.
pub fn glance_disk_format(qemu_format: &str) -> Option<&'static str> {
    Some(match qemu_format {
        "raw" => "raw",
        "qcow2" => "qcow2",
        "vpc" => "vhd",
        "vhdx" => "vhdx",
        "vmdk" => "vmdk",
        "vdi" => "vdi",
        "parallels" => "ploop",
        _ => return None,
    })
}

/// Put an info object's keys in the documented order; for the image itself
/// (`source` given) add `source` and the derived `glance_disk_format`.
/// Children are ordered the same way.
pub fn finish(m: Map<String, Value>, source: Option<Source>) -> Map<String, Value> {
    finish_entries(m.into_iter().collect(), source)
}

/// [`finish`] on an object's entries (in the order they came; a key given
/// twice keeps its first place and its last value, as a map built from
/// them would): the map is built once, already in order.
pub fn finish_entries(
    mut entries: Vec<(String, Value)>,
    source: Option<Source>,
) -> Map<String, Value> {
    if let Some(s) = source {
        // Only the image itself gets these; children are layers of it.
        let fmt = entries
            .iter()
            .rev()
            .find(|(k, _)| k == "format")
            .and_then(|(_, v)| v.as_str());
        let g = fmt.map(|f| glance_disk_format(f).map_or(Value::Null, |g| Value::String(g.into())));
        entries.push(("source".into(), Value::String(s.as_str().into())));
        if let Some(g) = g {
            entries.push(("glance_disk_format".into(), g));
        }
    }
    for (k, v) in entries.iter_mut() {
        finish_nested(k, v);
    }
    reorder(entries, ORDER)
}

/// Children and snapshots below an info key put in order too (those
/// already in order are kept, not rebuilt).
fn finish_nested(k: &str, v: &mut Value) {
    match (k, v) {
        ("children", Value::Array(children)) => {
            for c in children.iter_mut() {
                if let Some(Value::Object(ci)) = c.get_mut("info") {
                    if in_order(ci, ORDER) {
                        for (k, v) in ci.iter_mut() {
                            finish_nested(k, v);
                        }
                    } else {
                        let inner = std::mem::take(ci);
                        *ci = finish(inner, None);
                    }
                }
            }
        }
        ("snapshots", Value::Array(snaps)) => {
            for s in snaps.iter_mut() {
                if let Value::Object(sm) = s
                    && !in_order(sm, SNAPSHOT_ORDER)
                {
                    let inner = std::mem::take(sm);
                    *sm = reorder(inner.into_iter().collect(), SNAPSHOT_ORDER);
                }
            }
        }
        _ => {}
    }
}

/// Where key `k` goes: its place in `order`, then the others, then the
/// markers.
pub(crate) fn rank(k: &str, order: &[&str]) -> usize {
    if let Some(i) = order.iter().position(|o| *o == k) {
        i
    } else if let Some(i) = TRAILER.iter().position(|t| *t == k) {
        order.len() + 1 + i
    } else {
        order.len()
    }
}

/// Whether a map's keys are in `order` already.
fn in_order(m: &Map<String, Value>, order: &[&str]) -> bool {
    m.keys().map(|k| rank(k, order)).is_sorted()
}

/// Known keys in `order`, then the others as they came, then the markers
/// (one stable sort, each key ranked once; the keys are moved, not
/// copied).
fn reorder(entries: Vec<(String, Value)>, order: &[&str]) -> Map<String, Value> {
    let mut ranked: Vec<(usize, (String, Value))> = entries
        .into_iter()
        .map(|e| (rank(&e.0, order), e))
        .collect();
    if !ranked.is_sorted_by_key(|(r, _)| *r) {
        ranked.sort_by_key(|(r, _)| *r);
    }
    let mut m = Map::with_capacity(ranked.len());
    for (_, (k, v)) in ranked {
        m.insert(k, v);
    }
    m
}

/// `virtual-size` → `virtual_size`.
pub fn snake(key: &str) -> String {
    snake_owned(key.to_owned())
}

/// [`snake`] in place: ASCII bytes change, nothing else does (a key
/// already in snake_case is not copied).
pub fn snake_owned(key: String) -> String {
    if !key
        .bytes()
        .any(|b| b == b'-' || b == b' ' || b.is_ascii_uppercase())
    {
        return key;
    }
    let mut b = key.into_bytes();
    for c in b.iter_mut() {
        match *c {
            b'-' | b' ' => *c = b'_',
            _ => c.make_ascii_lowercase(),
        }
    }
    // ASCII for ASCII: still UTF-8.
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orders_known_keys_then_extras_then_markers() {
        let Value::Object(m) = json!({
            "ambiguous": true, "zzz": 1, "virtual_size": 5, "format": "vpc", "filename": "a"
        }) else {
            unreachable!()
        };
        let out = finish(m, Some(Source::QemuHuman));
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "source",
                "filename",
                "format",
                "glance_disk_format",
                "virtual_size",
                "zzz",
                "ambiguous"
            ]
        );
        assert_eq!(out["glance_disk_format"], "vhd");
    }

    #[test]
    fn glance_names() {
        assert_eq!(glance_disk_format("parallels"), Some("ploop"));
        assert_eq!(glance_disk_format("vpc"), Some("vhd"));
        assert_eq!(glance_disk_format("qed"), None);
        assert_eq!(snake("Full-Backing filename"), "full_backing_filename");
    }
}

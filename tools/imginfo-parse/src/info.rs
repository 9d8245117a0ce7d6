//! The `info` facet: what `qemu-img info` says about one image, with qemu's
//! JSON key names in snake_case, whichever source it came from.

use serde_json::{Map, Value};
use std::borrow::Cow;

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

/// A value of an info object, as ordering needs it: both the maps built
/// from human text and native probes (`serde_json::Value`) and the typed
/// nodes of qemu's JSON go through the one ordering below.
pub trait InfoValue {
    /// The text of a string value.
    fn text(&self) -> Option<&str>;
    /// A string value.
    fn string(s: &'static str) -> Self;
    /// `null`.
    fn null() -> Self;
}

/// A key of an info object: owned (maps) or borrowed from the document
/// (nodes).
pub trait InfoKey: AsRef<str> {
    /// One of our own keys.
    fn fixed(k: &'static str) -> Self;
}

impl InfoKey for String {
    fn fixed(k: &'static str) -> Self {
        k.to_owned()
    }
}

impl InfoKey for Cow<'_, str> {
    fn fixed(k: &'static str) -> Self {
        Cow::Borrowed(k)
    }
}

impl InfoValue for Value {
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn string(s: &'static str) -> Self {
        Value::String(s.into())
    }
    fn null() -> Self {
        Value::Null
    }
}

/// Put an info object's keys in the documented order; for the image itself
/// (`source` given) add `source` and the derived `glance_disk_format`.
/// Children are ordered the same way.
pub fn finish(m: Map<String, Value>, source: Option<Source>) -> Map<String, Value> {
    finish_fields(m.into_iter().collect(), source)
        .into_iter()
        .collect()
}

/// [`finish`] on fields in the order they were read, left as fields (the
/// human text's: no map is built to be written).
pub fn finish_fields<K: InfoKey>(
    mut entries: Vec<(K, Value)>,
    source: Option<Source>,
) -> Vec<(K, Value)> {
    for (k, v) in entries.iter_mut() {
        finish_nested(k.as_ref(), v);
    }
    finish_entries(entries, source)
}

/// A record with `info` set to a finished info object's entries, written
/// as they are (the record has no `info` of its own): the map is never
/// built.
pub struct WithInfo<'r, K, V> {
    /// The record's other keys.
    pub rec: &'r filter::Record,
    /// The facet's entries, in order, each key once.
    pub info: &'r [(K, V)],
}

impl<K: AsRef<str>, V: serde::Serialize> serde::Serialize for WithInfo<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let m = self.rec.as_map();
        let mut map = s.serialize_map(Some(m.len() + 1))?;
        for (k, v) in m {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry(crate::FACET, &Entries(self.info))?;
        map.end()
    }
}

struct Entries<'r, K, V>(&'r [(K, V)]);

impl<K: AsRef<str>, V: serde::Serialize> serde::Serialize for Entries<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// [`finish`] on an object's entries, in the order they came (children
/// already finished): a key given twice keeps its first place and its
/// last value, as a map built from them would.
pub fn finish_entries<K, V>(mut entries: Vec<(K, V)>, source: Option<Source>) -> Vec<(K, V)>
where
    K: InfoKey,
    V: InfoValue,
{
    if let Some(s) = source {
        // Only the image itself gets these; children are layers of it.
        let g = entries
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == "format")
            .and_then(|(_, v)| v.text())
            .map(|f| glance_disk_format(f).map_or_else(V::null, V::string));
        entries.push((K::fixed("source"), V::string(s.as_str())));
        if let Some(g) = g {
            entries.push((K::fixed("glance_disk_format"), g));
        }
    }
    order(entries, ORDER)
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
                    *sm = order(inner.into_iter().collect(), SNAPSHOT_ORDER)
                        .into_iter()
                        .collect();
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
/// (one stable sort, each key ranked once; entries are moved, not
/// copied); a key given twice merges as in a map.
pub(crate) fn order<K: AsRef<str>, V>(entries: Vec<(K, V)>, order: &[&str]) -> Vec<(K, V)> {
    let mut ranked: Vec<(usize, (K, V))> = entries
        .into_iter()
        .map(|e| (rank(e.0.as_ref(), order), e))
        .collect();
    if !ranked.is_sorted_by_key(|(r, _)| *r) {
        ranked.sort_by_key(|(r, _)| *r);
    }
    let mut out: Vec<(K, V)> = ranked.into_iter().map(|(_, e)| e).collect();
    dedup(&mut out);
    out
}

/// A key given twice keeps its first place and its last value, as in a
/// map built from the entries.
pub(crate) fn dedup<K: AsRef<str>, V>(o: &mut Vec<(K, V)>) {
    let n = o.len();
    if n < 2 {
        return;
    }
    let key = |i: usize| o[i].0.as_ref();
    if n <= 16 && !(1..n).any(|i| (0..i).any(|j| key(j) == key(i))) {
        return;
    }
    // Indices by key (stable: equal keys in input order): a group's
    // first index takes the group's last value.
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| key(a).cmp(key(b)));
    let mut keep = vec![true; n];
    let mut g = 0;
    while g < n {
        let mut e = g + 1;
        while e < n && o[idx[e]].0.as_ref() == o[idx[g]].0.as_ref() {
            e += 1;
        }
        if e - g > 1 {
            let (first, last) = (idx[g], idx[e - 1]);
            o.swap(first, last);
            // The first place's key is the same text either way.
            for &i in &idx[g + 1..e] {
                keep[i] = false;
            }
        }
        g = e;
    }
    let mut i = 0;
    o.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// `virtual-size` → `virtual_size` (ASCII bytes change, nothing else; a
/// key already in snake_case is kept as it is, and qemu's own keys are
/// not allocated).
pub fn snake(key: Cow<'_, str>) -> Cow<'_, str> {
    if !key
        .bytes()
        .any(|b| b == b'-' || b == b' ' || b.is_ascii_uppercase())
    {
        return key;
    }
    if let Some(k) = qemu_key(&key) {
        return Cow::Borrowed(k);
    }
    // ASCII for ASCII: no byte of another character changes.
    Cow::Owned(
        key.chars()
            .map(|c| match c {
                '-' | ' ' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect(),
    )
}

/// qemu's own keys with a `-` (JSON) or a space (human text),
/// snake-cased: most keys of a document, kept without an allocation each.
fn qemu_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "virtual-size" => "virtual_size",
        "actual-size" => "actual_size",
        "dirty-flag" => "dirty_flag",
        "format-specific" => "format_specific",
        "cluster-size" => "cluster_size",
        "refcount-bits" => "refcount_bits",
        "compression-type" => "compression_type",
        "lazy-refcounts" => "lazy_refcounts",
        "extended-l2" => "extended_l2",
        "full-backing-filename" => "full_backing_filename",
        "backing-filename" => "backing_filename",
        "backing-filename-format" => "backing_filename_format",
        "key-offset" => "key_offset",
        "parent-cid" => "parent_cid",
        "create-type" => "create_type",
        "vm-state-size" => "vm_state_size",
        "vm-clock-sec" => "vm_clock_sec",
        "vm-clock-nsec" => "vm_clock_nsec",
        "date-sec" => "date_sec",
        "date-nsec" => "date_nsec",
        "data-file" => "data_file",
        "data-file-raw" => "data_file_raw",
        // The human text's.
        "file format" => "file_format",
        "virtual size" => "virtual_size",
        "disk size" => "disk_size",
        "cleanly shut down" => "cleanly_shut_down",
        "backing file" => "backing_file",
        "backing file format" => "backing_file_format",
        "protocol type" => "protocol_type",
        "file length" => "file_length",
        _ => return None,
    })
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
        assert_eq!(
            snake("Full-Backing filename".into()),
            "full_backing_filename"
        );
        assert_eq!(snake("virtual-size".into()), "virtual_size");
    }
}

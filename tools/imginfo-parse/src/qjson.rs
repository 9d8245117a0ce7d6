//! `qemu-img info --output=json` objects → `info` facets.
//!
//! Every key qemu wrote is kept (snake_cased, recursively), unlike oslo's
//! nine-key whitelist; the few fields scripts rely on are type-checked, and
//! `encrypted` (which qemu omits when false) is always present.

use crate::info::{finish_entries, snake_owned};
use serde_json::{Map, Value};
use system::text::rfc3339_utc;

/// Whether a JSON object is qemu-img's description of an image rather than
/// one of our records.
pub fn looks_like_qemu_info(m: &Map<String, Value>) -> bool {
    m.contains_key("format") && (m.contains_key("virtual-size") || m.contains_key("filename"))
}

/// Convert one image object to the entries of its `info` facet, in
/// qemu's order (for [`crate::info::finish_entries`]; its children come
/// finished). Errors name the field at fault.
pub fn convert(m: Map<String, Value>) -> Result<Vec<(String, Value)>, String> {
    convert_at(m, "")
}

fn convert_at(m: Map<String, Value>, at: &str) -> Result<Vec<(String, Value)>, String> {
    match m.get("format") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(format!("{at}format is not a string")),
        None => return Err(format!("{at}format is missing")),
    }
    if m.get("virtual-size").is_none_or(|v| v.as_u64().is_none()) {
        return Err(format!("{at}virtual-size is missing or not a byte count"));
    }
    if m.get("actual-size").is_some_and(|v| v.as_u64().is_none()) {
        return Err(format!("{at}actual-size is not a byte count"));
    }
    // qemu keeps cluster sizes in a C int: a VHD with 2 GiB blocks reports
    // -2147483648. Kept as qemu said it.
    if m.get("cluster-size").is_some_and(|v| v.as_i64().is_none()) {
        return Err(format!("{at}cluster-size is not an integer"));
    }
    for k in [
        "filename",
        "backing-filename",
        "full-backing-filename",
        "backing-filename-format",
    ] {
        if m.get(k).is_some_and(|v| !v.is_string()) {
            return Err(format!("{at}{k} is not a string"));
        }
    }
    let mut out = Vec::with_capacity(m.len() + 4);
    let mut encrypted = false;
    for (k, v) in m {
        let key = snake_owned(k);
        let value = match key.as_str() {
            "snapshots" => snapshots(v, at)?,
            "children" => children(v, at)?,
            _ => snake_keys(v),
        };
        encrypted |= key == "encrypted";
        out.push((key, value));
    }
    if !encrypted {
        out.push(("encrypted".into(), Value::Bool(false)));
    }
    Ok(out)
}

fn snapshots(v: Value, at: &str) -> Result<Value, String> {
    let Value::Array(list) = v else {
        return Err(format!("{at}snapshots is not a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.into_iter().enumerate() {
        let Value::Object(s) = s else {
            return Err(format!("{at}snapshots[{i}] is not an object"));
        };
        let mut snap: Map<String, Value> = s
            .into_iter()
            .map(|(k, v)| (snake_owned(k), snake_keys(v)))
            .collect();
        let sec = snap.get("date_sec").and_then(Value::as_i64);
        let nsec = snap.get("date_nsec").and_then(Value::as_u64).unwrap_or(0);
        if let Some(sec) = sec
            && let Ok(nsec) = u32::try_from(nsec)
            && let Some(date) = rfc3339_utc(sec, nsec)
        {
            snap.insert("date".into(), Value::String(date));
        }
        out.push(Value::Object(snap));
    }
    Ok(Value::Array(out))
}

fn children(v: Value, at: &str) -> Result<Value, String> {
    let Value::Array(list) = v else {
        return Err(format!("{at}children is not a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.into_iter().enumerate() {
        let Value::Object(mut c) = c else {
            return Err(format!("{at}children[{i}] is not an object"));
        };
        let (Some(Value::String(name)), Some(Value::Object(info))) =
            (c.shift_remove("name"), c.shift_remove("info"))
        else {
            return Err(format!("{at}children[{i}] lacks name or info"));
        };
        let info = finish_entries(convert_at(info, &format!("{at}children[{i}].info."))?, None);
        let mut child = Map::new();
        child.insert("name".into(), Value::String(name));
        child.insert("info".into(), Value::Object(info));
        out.push(Value::Object(child));
    }
    Ok(Value::Array(out))
}

/// Snake-case every object key below `v`; values are kept as they are.
/// An object whose keys need no change is kept (only its values are
/// visited), not rebuilt.
pub fn snake_keys(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            let plain = m.keys().all(|k| {
                !k.bytes()
                    .any(|b| b == b'-' || b == b' ' || b.is_ascii_uppercase())
            });
            if plain {
                for v in m.values_mut() {
                    *v = snake_keys(std::mem::take(v));
                }
                Value::Object(m)
            } else {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (snake_owned(k), snake_keys(v)))
                        .collect(),
                )
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        let Value::Object(m) = v else { unreachable!() };
        m
    }

    #[test]
    fn keeps_every_key_snake_cased() {
        let m = obj(json!({
            "virtual-size": 67108864, "filename": "a.qcow2", "format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"data-file": "x", "extended-l2": false}},
            "some-new-key": {"inner-key": 1},
            "snapshots": [{"id": "1", "name": "s", "date-sec": 1763830800, "date-nsec": 5000, "vm-state-size": 0}]
        }));
        let out: Map<String, Value> = convert(m).unwrap().into_iter().collect();
        assert_eq!(out["format_specific"]["data"]["data_file"], "x");
        assert_eq!(out["some_new_key"]["inner_key"], 1);
        assert_eq!(out["encrypted"], false);
        assert_eq!(out["snapshots"][0]["date"], "2025-11-22T17:00:00.000005Z");
        assert_eq!(out["snapshots"][0]["vm_state_size"], 0);
    }

    #[test]
    fn rejects_wrong_types() {
        for bad in [
            json!({"filename": "a", "format": 1, "virtual-size": 1}),
            json!({"filename": "a", "format": "raw", "virtual-size": -1}),
            json!({"filename": "a", "format": "raw", "virtual-size": "1"}),
            json!({"filename": "a", "format": "raw", "virtual-size": 1, "actual-size": 1.5}),
            json!({"filename": 7, "format": "raw", "virtual-size": 1}),
            json!({"filename": "a", "format": "raw", "virtual-size": 1, "snapshots": {}}),
            json!({"filename": "a", "format": "raw", "virtual-size": 1, "children": [{"name": "file"}]}),
        ] {
            assert!(convert(obj(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn big_sizes_are_exact() {
        let m =
            obj(json!({"filename": "a", "format": "qcow2", "virtual-size": 18014398509481984u64}));
        let out: Map<String, Value> = convert(m).unwrap().into_iter().collect();
        assert_eq!(out["virtual_size"].as_u64(), Some(1 << 54));
    }
}

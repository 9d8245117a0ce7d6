//! `qemu-img info --output=json` objects → `info` facets.
//!
//! Every key qemu wrote is kept (snake_cased, recursively), unlike oslo's
//! nine-key whitelist; the few fields scripts rely on are type-checked, and
//! `encrypted` (which qemu omits when false) is always present.
//!
//! Documents are read into [`Node`]s, not `serde_json::Value`s: objects are
//! ordered lists (no key hashed), strings borrow from the document where
//! they can, numbers keep qemu's digits. The finished info is written as it
//! is; a `Value` is built only where one is needed (`--check`, records).

#[cfg(test)]
use crate::info::Source;
use crate::info::{InfoValue, SNAPSHOT_ORDER, dedup, finish_entries, order, snake};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::fmt;
use system::text::rfc3339_utc;

/// An object's entries, in order, each key once.
pub type Obj<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

/// A JSON value read from a document (borrowing its text where it can).
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// Any other number, as written.
    Num(Number),
    /// A string.
    Str(Cow<'a, str>),
    /// An array.
    Arr(Vec<Node<'a>>),
    /// An object.
    Obj(Obj<'a>),
    /// A value built elsewhere (native detection beside qemu's answer).
    Value(Value),
}

/// The key serde_json gives a number it keeps as text (its
/// `arbitrary_precision`): what its own `Value` looks for too.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parse one JSON document.
pub fn parse(text: &[u8]) -> serde_json::Result<Node<'_>> {
    serde_json::from_slice(text)
}

impl<'a> Node<'a> {
    /// The value of `key` in an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Obj(o) => get(o, key),
            _ => None,
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            Node::Value(v) => v.as_str(),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Node::U64(n) => Some(*n),
            Node::I64(_) => None,
            Node::Num(n) => n.as_u64(),
            Node::Value(v) => v.as_u64(),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Node::U64(n) => i64::try_from(*n).ok(),
            Node::I64(n) => Some(*n),
            Node::Num(n) => n.as_i64(),
            Node::Value(v) => v.as_i64(),
            _ => None,
        }
    }

    /// The JSON type name, for messages.
    pub fn json_type(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::U64(_) | Node::I64(_) | Node::Num(_) => "a number",
            Node::Str(_) => "a string",
            Node::Arr(_) => "an array",
            Node::Obj(_) => "an object",
            Node::Value(v) => filter::jsonl::json_type(v),
        }
    }

    /// The same value as a `serde_json::Value`.
    pub fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::U64(n) => n.into(),
            Node::I64(n) => n.into(),
            Node::Num(n) => Value::Number(n),
            Node::Str(s) => Value::String(s.into_owned()),
            Node::Arr(a) => Value::Array(a.into_iter().map(Node::into_value).collect()),
            Node::Obj(o) => Value::Object(into_map(o)),
            Node::Value(v) => v,
        }
    }
}

/// An object's entries as a `serde_json::Map`.
pub fn into_map(o: Obj<'_>) -> Map<String, Value> {
    let mut m = Map::with_capacity(o.len());
    for (k, v) in o {
        m.insert(k.into_owned(), v.into_value());
    }
    m
}

impl InfoValue for Node<'_> {
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn string(s: &'static str) -> Self {
        Node::Str(Cow::Borrowed(s))
    }
    fn null() -> Self {
        Node::Null
    }
}

fn get<'o, 'a>(o: &'o Obj<'a>, key: &str) -> Option<&'o Node<'a>> {
    o.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::U64(n) => s.serialize_u64(*n),
            Node::I64(n) => s.serialize_i64(*n),
            Node::Num(n) => n.serialize(s),
            Node::Str(t) => s.serialize_str(t),
            Node::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Node::Obj(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
            Node::Value(v) => v.serialize(s),
        }
    }
}

/// A key, borrowed from the document when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::U64(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Node<'de>, E> {
        // serde_json gives non-negative integers as u64.
        Ok(u64::try_from(n).map_or(Node::I64(n), Node::U64))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node<'de>, E> {
        Number::from_f64(n)
            .map(Node::Num)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut a = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            a.push(v);
        }
        Ok(Node::Arr(a))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let Some(Key(first)) = map.next_key::<Key<'de>>()? else {
            return Ok(Node::Obj(Vec::new()));
        };
        if first == NUMBER_TOKEN {
            let text: String = map.next_value()?;
            return text
                .parse::<Number>()
                .map(Node::Num)
                .map_err(de::Error::custom);
        }
        let mut o: Obj<'de> = Vec::with_capacity(8);
        o.push((first, map.next_value()?));
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            o.push((k, map.next_value()?));
        }
        dedup(&mut o);
        Ok(Node::Obj(o))
    }
}

/// Whether a JSON object is qemu-img's description of an image rather than
/// one of our records.
pub fn looks_like_qemu_info(m: &Obj<'_>) -> bool {
    let has = |k: &str| get(m, k).is_some();
    has("format") && (has("virtual-size") || has("filename"))
}

/// Convert one image object to the entries of its `info` facet, in
/// qemu's order (for [`finish`]; its children come finished). Errors name
/// the field at fault.
pub fn convert(m: Obj<'_>) -> Result<Obj<'_>, String> {
    convert_at(m, "")
}

fn convert_at<'a>(m: Obj<'a>, at: &str) -> Result<Obj<'a>, String> {
    match get(&m, "format") {
        Some(Node::Str(_)) => {}
        Some(_) => return Err(format!("{at}format is not a string")),
        None => return Err(format!("{at}format is missing")),
    }
    if get(&m, "virtual-size").is_none_or(|v| v.as_u64().is_none()) {
        return Err(format!("{at}virtual-size is missing or not a byte count"));
    }
    if get(&m, "actual-size").is_some_and(|v| v.as_u64().is_none()) {
        return Err(format!("{at}actual-size is not a byte count"));
    }
    // qemu keeps cluster sizes in a C int: a VHD with 2 GiB blocks reports
    // -2147483648. Kept as qemu said it.
    if get(&m, "cluster-size").is_some_and(|v| v.as_i64().is_none()) {
        return Err(format!("{at}cluster-size is not an integer"));
    }
    for k in [
        "filename",
        "backing-filename",
        "full-backing-filename",
        "backing-filename-format",
    ] {
        if get(&m, k).is_some_and(|v| !matches!(v, Node::Str(_))) {
            return Err(format!("{at}{k} is not a string"));
        }
    }
    let mut out = Vec::with_capacity(m.len() + 4);
    let mut encrypted = false;
    for (k, v) in m {
        let key = snake(k);
        let value = match key.as_ref() {
            "snapshots" => snapshots(v, at)?,
            "children" => children(v, at)?,
            _ => snake_keys(v),
        };
        encrypted |= key == "encrypted";
        out.push((key, value));
    }
    if !encrypted {
        out.push(("encrypted".into(), Node::Bool(false)));
    }
    Ok(out)
}

fn snapshots<'a>(v: Node<'a>, at: &str) -> Result<Node<'a>, String> {
    let Node::Arr(list) = v else {
        return Err(format!("{at}snapshots is not a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.into_iter().enumerate() {
        let Node::Obj(s) = s else {
            return Err(format!("{at}snapshots[{i}] is not an object"));
        };
        let mut snap = snake_obj(s);
        let sec = get(&snap, "date_sec").and_then(Node::as_i64);
        let nsec = get(&snap, "date_nsec").and_then(Node::as_u64).unwrap_or(0);
        if let Some(sec) = sec
            && let Ok(nsec) = u32::try_from(nsec)
            && let Some(date) = rfc3339_utc(sec, nsec)
        {
            let date = Node::Str(date.into());
            match snap.iter_mut().find(|(k, _)| k == "date") {
                Some((_, v)) => *v = date,
                None => snap.push(("date".into(), date)),
            }
        }
        out.push(Node::Obj(order(snap, SNAPSHOT_ORDER)));
    }
    Ok(Node::Arr(out))
}

fn children<'a>(v: Node<'a>, at: &str) -> Result<Node<'a>, String> {
    let Node::Arr(list) = v else {
        return Err(format!("{at}children is not a list"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.into_iter().enumerate() {
        let Node::Obj(c) = c else {
            return Err(format!("{at}children[{i}] is not an object"));
        };
        let (mut name, mut info) = (None, None);
        for (k, v) in c {
            match (k.as_ref(), v) {
                ("name", v) => name = Some(v),
                ("info", v) => info = Some(v),
                _ => {}
            }
        }
        let (Some(Node::Str(name)), Some(Node::Obj(info))) = (name, info) else {
            return Err(format!("{at}children[{i}] lacks name or info"));
        };
        let info = finish_entries(convert_at(info, &format!("{at}children[{i}].info."))?, None);
        out.push(Node::Obj(vec![
            ("name".into(), Node::Str(name)),
            ("info".into(), Node::Obj(info)),
        ]));
    }
    Ok(Node::Arr(out))
}

/// Snake-case every object key below `v`; values are kept as they are.
pub fn snake_keys(v: Node<'_>) -> Node<'_> {
    match v {
        Node::Obj(o) => Node::Obj(snake_obj(o)),
        Node::Arr(a) => Node::Arr(a.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

/// An object's keys snake-cased, recursively (two keys that become one
/// merge as in a map).
fn snake_obj(o: Obj<'_>) -> Obj<'_> {
    let mut changed = false;
    let mut out: Obj<'_> = o
        .into_iter()
        .map(|(k, v)| {
            let k = snake(k);
            changed |= matches!(k, Cow::Owned(_));
            (k, snake_keys(v))
        })
        .collect();
    if changed {
        dedup(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Obj<'_> {
        let Ok(Node::Obj(m)) = parse(text.as_bytes()) else {
            unreachable!()
        };
        m
    }

    fn out(o: Obj<'_>) -> Value {
        Node::Obj(o).into_value()
    }

    #[test]
    fn keeps_every_key_snake_cased() {
        let m = obj(r#"{
            "virtual-size": 67108864, "filename": "a.qcow2", "format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"data-file": "x", "extended-l2": false}},
            "some-new-key": {"inner-key": 1},
            "snapshots": [{"id": "1", "name": "s", "date-sec": 1763830800, "date-nsec": 5000, "vm-state-size": 0}]
        }"#);
        let out = out(convert(m).unwrap());
        assert_eq!(out["format_specific"]["data"]["data_file"], "x");
        assert_eq!(out["some_new_key"]["inner_key"], 1);
        assert_eq!(out["encrypted"], false);
        assert_eq!(out["snapshots"][0]["date"], "2025-11-22T17:00:00.000005Z");
        assert_eq!(out["snapshots"][0]["vm_state_size"], 0);
    }

    #[test]
    fn rejects_wrong_types() {
        for bad in [
            r#"{"filename": "a", "format": 1, "virtual-size": 1}"#,
            r#"{"filename": "a", "format": "raw", "virtual-size": -1}"#,
            r#"{"filename": "a", "format": "raw", "virtual-size": "1"}"#,
            r#"{"filename": "a", "format": "raw", "virtual-size": 1, "actual-size": 1.5}"#,
            r#"{"filename": 7, "format": "raw", "virtual-size": 1}"#,
            r#"{"filename": "a", "format": "raw", "virtual-size": 1, "snapshots": {}}"#,
            r#"{"filename": "a", "format": "raw", "virtual-size": 1, "children": [{"name": "file"}]}"#,
        ] {
            assert!(convert(obj(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn big_sizes_and_numbers_are_exact() {
        let m = obj(
            r#"{"filename": "a", "format": "qcow2", "virtual-size": 18014398509481984,
                "x": [1.50, -0, 1e400, 184467440737095516160, -9223372036854775809]}"#,
        );
        let info = finish_entries(convert(m).unwrap(), Some(Source::QemuJson));
        let text = serde_json::to_string(&Node::Obj(info.clone())).unwrap();
        assert!(
            text.contains(r#""virtual_size":18014398509481984"#),
            "{text}"
        );
        assert!(
            // (serde_json writes an exponent with its sign, as before.)
            text.contains(r#""x":[1.50,-0,1e+400,184467440737095516160,-9223372036854775809]"#),
            "{text}"
        );
        // The same text through a Value (--check).
        assert_eq!(serde_json::to_string(&out(info)).unwrap(), text);
    }

    #[test]
    fn duplicate_keys_merge_as_in_a_map() {
        // First place, last value; also for keys that become one when
        // snake-cased, and in objects too large for the quick check.
        let m = obj(
            r#"{"format": "raw", "virtual-size": 1, "a-b": 1, "z": 0, "a_b": 2, "format": "qcow2",
                "d": {"k-1": 1, "k_1": 2}}"#,
        );
        let info = finish_entries(convert(m).unwrap(), Some(Source::QemuJson));
        let text = serde_json::to_string(&Node::Obj(info.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"source":"qemu_json","format":"qcow2","glance_disk_format":"qcow2","virtual_size":1,"encrypted":false,"a_b":2,"z":0,"d":{"k_1":2}}"#
        );
        let many: String = (0..40).map(|i| format!(r#""k{}": {i},"#, i % 20)).collect();
        let text = format!("{{{many} \"end\": 1}}");
        let Ok(Node::Obj(o)) = parse(text.as_bytes()) else {
            unreachable!()
        };
        assert_eq!(o.len(), 21);
        assert_eq!(o[3], ("k3".into(), Node::U64(23)));
    }
}

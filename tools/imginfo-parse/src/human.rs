//! The human text of `qemu-img info`, every QEMU generation, → `info`.
//!
//! The text is a tree by indentation (4 spaces a level): the image's own
//! fields at column 0, then `Snapshot list:` (a table), `Format specific
//! information:` (a nested dump) and `Child node '/path':` blocks, which
//! repeat the image fields one level down. Nested lines never touch the
//! image's own fields: that is how oslo's flattening parser came to report a
//! 5 GiB VMDK as 1 GiB.
//!
//! qemu prints file names raw, so a name with newlines can forge lines.
//! Whatever can be detected (a field twice, an `image:` without `file
//! format:`, an unknown line) makes the image `ambiguous`; JSON output has
//! no such weakness and is what to use where names are not trusted.

use crate::info::snake;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use system::size::{SizeError, parse_human_size};
use system::text::{base64, decode};

/// One input line: its number (from 1) and bytes without the line end.
#[derive(Debug, Clone)]
pub struct Line {
    /// Line number in the input, from 1.
    pub no: u64,
    /// The bytes, without `\n` or `\r\n`.
    pub text: Vec<u8>,
}

/// An object's fields in the order they were read: a handful of keys,
/// mostly our own constants, found by a scan. No key is hashed and no map
/// is built unless a record needs one (`--check`, an error record).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields(pub Vec<(Cow<'static, str>, Value)>);

impl Fields {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set `key`, as a map would: a key already set keeps its place and
    /// takes the new value.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, v: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = v,
            None => self.0.push((key, v)),
        }
    }

    /// Set `key` unless it is set.
    fn or_insert(&mut self, key: &'static str, v: Value) {
        if !self.contains_key(key) {
            self.0.push((key.into(), v));
        }
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields as a JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v))
            .collect()
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = Value;
    /// The value of `key`, `null` when it is not set (as a JSON value
    /// indexes).
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

/// One image parsed from human text.
#[derive(Debug, Default)]
pub struct HumanImage {
    /// The info fields (not yet ordered; see [`crate::info::finish_fields`]).
    pub info: Fields,
    /// Why the text cannot be trusted, if it cannot.
    pub ambiguous: Vec<String>,
    /// Values that could not be parsed (`inf`, a malformed size).
    pub errors: Vec<String>,
    /// The first line of the block.
    pub line: u64,
}

impl HumanImage {
    /// Whether the image names a backing file (so a following block after
    /// a blank line is the next member of a `--backing-chain`).
    pub fn has_backing(&self) -> bool {
        self.info.contains_key("backing_filename")
    }
}

/// The deepest nesting read, in levels of 4 spaces. qemu-img prints a
/// handful (child node, format-specific data, `bitmaps:`, `[0]:`,
/// `flags:`, `[0]:`). Every level rescans the lines below it, so without a
/// bound a few MiB of text nested a level per line took minutes (time
/// cubic in the depth; fuzz/regressions/imginfo_human/deep-nesting).
const MAX_NEST: usize = 32;

/// Whether `base` is nested deeper than [`MAX_NEST`]; says so if it is.
fn too_deep(lines: &[Line], base: usize, node: &mut Node) -> bool {
    if base / 4 <= MAX_NEST {
        return false;
    }
    node.ambiguous.push(format!(
        "line {}: nested more than {MAX_NEST} levels deep",
        lines.first().map_or(0, |l| l.no)
    ));
    true
}

fn indent(t: &[u8]) -> usize {
    t.iter().take_while(|&&b| b == b' ').count()
}

/// Keys whose values stay strings in format-specific data even when they
/// look like numbers or booleans (qemu's QAPI types them `str`).
const STRING_KEYS: &[&str] = &[
    "compat",
    "name",
    "filename",
    "data_file",
    "uuid",
    "format",
    "create_type",
    "compression_type",
    "cipher_alg",
    "cipher_mode",
    "hash_alg",
    "ivgen_alg",
    "ivgen_hash_alg",
    "type",
];

/// Parse one image block (the lines from `image:` to the next image).
pub fn parse_block(lines: &[Line]) -> HumanImage {
    let mut img = HumanImage {
        line: lines.first().map_or(0, |l| l.no),
        ..HumanImage::default()
    };
    let mut node = Node::default();
    parse_node(lines, 0, &mut node, "");
    img.ambiguous = node.ambiguous;
    img.errors = node.errors;
    if !node.map.contains_key("format") {
        img.ambiguous.push(format!(
            "line {}: an image block without `file format:`",
            img.line
        ));
    }
    img.info = node.map;
    img
}

#[derive(Default)]
struct Node {
    map: Fields,
    approximate: Fields,
    ambiguous: Vec<String>,
    errors: Vec<String>,
    non_utf8: bool,
}

impl Node {
    fn set_unique(&mut self, key: impl Into<Cow<'static, str>>, v: Value, line: u64, what: &str) {
        let key = key.into();
        if self.map.contains_key(&key) {
            self.ambiguous.push(format!(
                "line {line}: `{what}` given twice (a forged line?)"
            ));
            return;
        }
        self.map.insert(key, v);
    }

    /// Set a string field, keeping non-UTF-8 bytes as `<key>_bytes`.
    fn set_text(&mut self, key: &'static str, bytes: &[u8], line: u64, what: &str) {
        if self.map.contains_key(key) {
            self.ambiguous.push(format!(
                "line {line}: `{what}` given twice (a forged line?)"
            ));
            return;
        }
        let d = decode(bytes);
        self.map.insert(key, Value::String(d.text));
        if d.lossy {
            self.map
                .insert(format!("{key}_bytes"), Value::String(base64(bytes)));
            self.non_utf8 = true;
        }
    }

    fn set_size(&mut self, key: &'static str, text: &[u8], line: u64, what: &str) {
        let t = String::from_utf8_lossy(text);
        let t = t.trim();
        if t == "unavailable" {
            self.set_unique(key, Value::Null, line, what);
            return;
        }
        match parse_human_size(t) {
            Ok(h) => {
                if !h.exact {
                    self.approximate.insert(key, Value::String(t.into()));
                }
                self.set_unique(key, Value::Number(h.bytes.into()), line, what);
            }
            Err(e) => self.errors.push(size_error(line, what, &e)),
        }
    }
}

fn size_error(line: u64, what: &str, e: &SizeError) -> String {
    format!("line {line}: {what}: {e}")
}

/// Split `key: value` / `key:` at the first colon. The key must look like
/// a key (letters, digits, spaces, `_`, `-`), so a value line can't pass.
fn split_kv(body: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let c = body.iter().position(|&b| b == b':')?;
    let key = &body[..c];
    if key.is_empty()
        || !key
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b' ' || b == b'_' || b == b'-')
        || key[0] == b' '
    {
        return None;
    }
    let rest = &body[c + 1..];
    match rest.first() {
        None => Some((key, None)),
        Some(b' ') => Some((key, Some(&rest[1..]))),
        Some(_) => None,
    }
}

/// The lines after `i` indented deeper than `base`.
fn nested_end(lines: &[Line], i: usize, base: usize) -> usize {
    let mut j = i + 1;
    while j < lines.len() && indent(&lines[j].text) > base {
        j += 1;
    }
    j
}

fn parse_node(lines: &[Line], base: usize, node: &mut Node, path: &str) {
    if too_deep(lines, base, node) {
        return;
    }
    let mut i = 0;
    let mut children: Vec<Value> = Vec::new();
    let mut seen_sections: Vec<&'static str> = Vec::new();
    while i < lines.len() {
        let line = &lines[i];
        let ind = indent(&line.text);
        if ind != base {
            node.ambiguous
                .push(format!("line {}: unexpected indentation", line.no));
            i += 1;
            continue;
        }
        let body = &line.text[base..];
        let mut section = |name: &'static str, node: &mut Node| {
            if seen_sections.contains(&name) {
                node.ambiguous
                    .push(format!("line {}: `{name}` given twice", line.no));
            }
            seen_sections.push(name);
        };
        if body == b"Snapshot list:" {
            section("Snapshot list", node);
            i = parse_snapshots(lines, i + 1, base, node);
            continue;
        }
        if body == b"Format specific information:" {
            section("Format specific information", node);
            let j = nested_end(lines, i, base);
            let data = parse_tree(&lines[i + 1..j], base + 4, node);
            let data = match data {
                Value::Array(a) if a.is_empty() => Value::Object(Map::new()),
                d => d,
            };
            let ty = node.map.get("format").cloned().unwrap_or(Value::Null);
            let mut fs = Map::new();
            fs.insert("type".into(), ty);
            fs.insert("data".into(), data);
            node.map.insert("format_specific", Value::Object(fs));
            i = j;
            continue;
        }
        if let Some(child_path) = body
            .strip_prefix(b"Child node '")
            .and_then(|r| r.strip_suffix(b"':"))
        {
            let j = nested_end(lines, i, base);
            let child_path = String::from_utf8_lossy(child_path).into_owned();
            let name = child_path.rsplit('/').next().unwrap_or("").to_owned();
            if !child_path.starts_with(path) || name.is_empty() {
                node.ambiguous.push(format!(
                    "line {}: child node {child_path:?} is not below {:?}",
                    line.no,
                    if path.is_empty() { "/" } else { path }
                ));
            }
            let mut child = Node::default();
            parse_node(&lines[i + 1..j], base + 4, &mut child, &child_path);
            node.ambiguous.append(&mut child.ambiguous);
            node.errors.append(&mut child.errors);
            node.non_utf8 |= child.non_utf8;
            let mut c = Map::new();
            c.insert("name".into(), Value::String(name));
            c.insert("info".into(), Value::Object(child.map.into_map()));
            children.push(Value::Object(c));
            i = j;
            continue;
        }
        let Some((key, value)) = split_kv(body) else {
            node.ambiguous.push(format!(
                "line {}: not a qemu-img info line: {:?}",
                line.no,
                String::from_utf8_lossy(body)
            ));
            i += 1;
            continue;
        };
        let key_text = String::from_utf8_lossy(key);
        let k = snake(key_text.clone());
        let v = value.unwrap_or(b"");
        let no = line.no;
        match k.as_ref() {
            "image" | "filename" => node.set_text("filename", v, no, &key_text),
            "file_format" | "protocol_type" => {
                let f = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
                node.set_unique("format", Value::String(f), no, &key_text);
            }
            "virtual_size" | "file_length" => node.set_size("virtual_size", v, no, &key_text),
            "disk_size" => node.set_size("actual_size", v, no, &key_text),
            "cluster_size" => node.set_size("cluster_size", v, no, &key_text),
            "encrypted" => {
                let b = String::from_utf8_lossy(v).trim() == "yes";
                node.set_unique("encrypted", Value::Bool(b), no, &key_text);
            }
            "cleanly_shut_down" => {
                let dirty = String::from_utf8_lossy(v).trim() == "no";
                node.set_unique("dirty_flag", Value::Bool(dirty), no, &key_text);
            }
            "backing_file" => backing(node, v, no, &key_text),
            "backing_file_format" => node.set_text("backing_filename_format", v, no, &key_text),
            _ if value.is_none() && nested_end(lines, i, base) > i + 1 => {
                // A section this parser does not know (a newer QEMU's
                // `Block limits:`): kept under its snake_case name.
                let j = nested_end(lines, i, base);
                let data = parse_tree(&lines[i + 1..j], base + 4, node);
                node.set_unique(k.into_owned(), data, no, &key_text);
                i = j;
                continue;
            }
            _ => node.ambiguous.push(format!(
                "line {no}: unknown field {key_text:?} (a forged line?)"
            )),
        }
        i += 1;
    }
    node.map.or_insert("encrypted", Value::Bool(false));
    node.map.or_insert("dirty_flag", Value::Bool(false));
    if !children.is_empty() {
        node.map.insert("children", Value::Array(children));
    }
    if !node.approximate.is_empty() {
        let a = std::mem::take(&mut node.approximate).into_map();
        node.map.insert("approximate", Value::Object(a));
    }
    if node.non_utf8 && path.is_empty() {
        node.map.insert("non_utf8", Value::Bool(true));
    }
}

/// `backing file: NAME`, `NAME (actual path: PATH)` or
/// `NAME (cannot determine actual path)`.
fn backing(node: &mut Node, v: &[u8], no: u64, what: &str) {
    const ACTUAL: &[u8] = b" (actual path: ";
    const CANNOT: &[u8] = b" (cannot determine actual path)";
    let (name, full): (&[u8], Option<&[u8]>) = if let Some(name) = v.strip_suffix(CANNOT) {
        (name, None)
    } else if v.ends_with(b")")
        && let Some(pos) = find_last(v, ACTUAL)
    {
        (&v[..pos], Some(&v[pos + ACTUAL.len()..v.len() - 1]))
    } else {
        (v, Some(v))
    };
    node.set_text("backing_filename", name, no, what);
    if let Some(full) = full {
        node.set_text("full_backing_filename", full, no, what);
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The format-specific dump: `key: value`, `key:` + deeper lines (a dict,
/// or a list of `[i]:` items), `[i]: value`. Empty lists print as a bare
/// `key:`; empty strings as `key: `.
fn parse_tree(lines: &[Line], base: usize, node: &mut Node) -> Value {
    if too_deep(lines, base, node) {
        return Value::Object(Map::new());
    }
    let mut obj = Map::new();
    let mut list = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if indent(&line.text) != base {
            node.ambiguous
                .push(format!("line {}: unexpected indentation", line.no));
            i += 1;
            continue;
        }
        let body = &line.text[base..];
        let j = nested_end(lines, i, base);
        let (key, inline): (Option<String>, Option<&[u8]>) = if body.first() == Some(&b'[') {
            match body.iter().position(|&b| b == b']') {
                Some(close)
                    if body[1..close].iter().all(u8::is_ascii_digit)
                        && body.get(close + 1) == Some(&b':') =>
                {
                    let rest = &body[close + 2..];
                    (
                        None,
                        rest.strip_prefix(b" ")
                            .or(if rest.is_empty() { None } else { Some(rest) }),
                    )
                }
                _ => {
                    node.ambiguous
                        .push(format!("line {}: malformed list item", line.no));
                    i = j;
                    continue;
                }
            }
        } else {
            match split_kv(body) {
                Some((k, v)) => (Some(snake(String::from_utf8_lossy(k)).into_owned()), v),
                None => {
                    node.ambiguous.push(format!(
                        "line {}: not a format-specific line: {:?}",
                        line.no,
                        String::from_utf8_lossy(body)
                    ));
                    i = j;
                    continue;
                }
            }
        };
        let value = match inline {
            Some(text) => {
                if j > i + 1 {
                    node.ambiguous
                        .push(format!("line {}: a value with nested lines", line.no));
                }
                scalar(key.as_deref(), text, node)
            }
            None if j > i + 1 => parse_tree(&lines[i + 1..j], base + 4, node),
            None => Value::Array(Vec::new()),
        };
        match key {
            Some(k) => {
                if !list.is_empty() || obj.contains_key(&k) {
                    node.ambiguous.push(format!(
                        "line {}: `{k}` given twice or mixed with list items",
                        line.no
                    ));
                }
                obj.insert(k, value);
            }
            None => {
                if !obj.is_empty() {
                    node.ambiguous
                        .push(format!("line {}: list item mixed with fields", line.no));
                }
                list.push(value);
            }
        }
        i = j;
    }
    if list.is_empty() {
        Value::Object(obj)
    } else {
        Value::Array(list)
    }
}

fn scalar(key: Option<&str>, text: &[u8], node: &mut Node) -> Value {
    let d = decode(text);
    if d.lossy {
        node.non_utf8 = true;
    }
    if key.is_some_and(|k| STRING_KEYS.contains(&k)) {
        return Value::String(d.text);
    }
    match d.text.as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let t = d.text.as_str();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(u) = t.parse::<u64>() {
            return Value::Number(u.into());
        }
        if let Ok(i) = t.parse::<i64>() {
            return Value::Number(i.into());
        }
    }
    Value::String(d.text)
}

// ---- snapshot tables -------------------------------------------------

const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// Whether `t` fits `pattern`, where `9` stands for any digit and other
/// bytes for themselves (`9999-99-99` is a date).
fn fits(t: &[u8], pattern: &[u8]) -> bool {
    t.len() == pattern.len()
        && t.iter().zip(pattern).all(|(&b, &p)| {
            if p == b'9' {
                b.is_ascii_digit()
            } else {
                b == p
            }
        })
}

fn is_date(t: &[u8]) -> bool {
    fits(t, b"9999-99-99")
}

fn is_time(t: &[u8]) -> bool {
    fits(t, b"99:99:99")
}

/// `HH:MM:SS.mmm` with any number of hour digits → (seconds, nanoseconds).
fn parse_clock(t: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(t).ok()?;
    let (hms, frac) = s.split_once('.')?;
    let mut parts = hms.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || h.is_empty()
        || m.len() != 2
        || sec.len() != 2
        || frac.is_empty()
        || frac.len() > 9
        || !(h
            .bytes()
            .chain(m.bytes())
            .chain(sec.bytes())
            .chain(frac.bytes()))
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs = h
        .parse::<u64>()
        .ok()?
        .checked_mul(3600)?
        .checked_add(m.parse::<u64>().ok()? * 60 + sec.parse::<u64>().ok()?)?;
    let nsec = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    Some((secs, nsec))
}

fn tokens(t: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        while i < t.len() && t[i] == b' ' {
            i += 1;
        }
        let s = i;
        while i < t.len() && t[i] != b' ' {
            i += 1;
        }
        if i > s {
            out.push((s, i));
        }
    }
    out
}

/// One row, split from the right: [icount] clock time date size [unit],
/// and what is left is the id and the tag (which may hold spaces and may
/// be wider than its column).
fn parse_row(t: &[u8], no: u64, node: &mut Node) -> Option<Value> {
    let toks = tokens(t);
    let tok = |i: usize| &t[toks[i].0..toks[i].1];
    let mut n = toks.len();
    if n < 5 {
        return None;
    }
    let mut icount: Option<Value> = None;
    let last = tok(n - 1);
    if parse_clock(tok(n - 2)).is_some() && (last == b"--" || last.iter().all(u8::is_ascii_digit)) {
        if last != b"--" {
            icount = std::str::from_utf8(last)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|v| Value::Number(v.into()));
        }
        n -= 1;
    }
    if n < 5 {
        return None;
    }
    let (clock_s, clock_ns) = parse_clock(tok(n - 1))?;
    if !is_time(tok(n - 2)) || !is_date(tok(n - 3)) {
        return None;
    }
    let date_local = format!(
        "{} {}",
        String::from_utf8_lossy(tok(n - 3)),
        String::from_utf8_lossy(tok(n - 2))
    );
    n -= 3;
    let unit_tok = std::str::from_utf8(tok(n - 1)).ok()?;
    let (size_first, size_text) = if UNITS.contains(&unit_tok) && n >= 3 {
        let num = std::str::from_utf8(tok(n - 2)).ok()?;
        (n - 2, format!("{num} {unit_tok}"))
    } else {
        (n - 1, unit_tok.to_owned())
    };
    if size_first == 0 {
        return None;
    }
    let size = parse_human_size(&size_text).ok()?;
    let id = &t[toks[0].0..toks[0].1];
    let tag = t[toks[0].1..toks[size_first].0].trim_ascii();

    let mut snap = Node::default();
    snap.set_text("id", id, no, "ID");
    snap.set_text("name", tag, no, "TAG");
    snap.map
        .insert("vm_state_size", Value::Number(size.bytes.into()));
    snap.map.insert("date_local", Value::String(date_local));
    snap.map
        .insert("vm_clock_sec", Value::Number(clock_s.into()));
    snap.map
        .insert("vm_clock_nsec", Value::Number(clock_ns.into()));
    if let Some(ic) = icount {
        snap.map.insert("icount", ic);
    }
    if !size.exact {
        let mut a = Map::new();
        a.insert("vm_state_size".into(), Value::String(size_text));
        snap.map.insert("approximate", Value::Object(a));
    }
    node.non_utf8 |= snap.non_utf8;
    Some(Value::Object(snap.map.into_map()))
}

/// The table after `Snapshot list:`: a header line starting `ID`, then rows
/// until the first line that is not one. Returns the index to go on from.
fn parse_snapshots(lines: &[Line], mut i: usize, base: usize, node: &mut Node) -> usize {
    let header_ok = lines
        .get(i)
        .is_some_and(|l| indent(&l.text) == base && l.text[base..].starts_with(b"ID"));
    if !header_ok {
        let no = lines.get(i).map_or(0, |l| l.no);
        node.ambiguous.push(format!(
            "line {no}: `Snapshot list:` without its header row"
        ));
        return i;
    }
    i += 1;
    let mut rows = Vec::new();
    while let Some(l) = lines.get(i) {
        if indent(&l.text) != base {
            break;
        }
        match parse_row(&l.text[base..], l.no, node) {
            Some(r) => rows.push(r),
            None => break,
        }
        i += 1;
    }
    if node.map.contains_key("snapshots") {
        node.ambiguous.push("a second snapshot table".to_string());
    } else {
        node.map.insert("snapshots", Value::Array(rows));
    }
    i
}

/// `Number` from a u64, for callers outside this module.
pub fn num(v: u64) -> Value {
    Value::Number(Number::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> Vec<Line> {
        text.split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, t)| Line {
                no: i as u64 + 1,
                text: t.to_vec(),
            })
            .filter(|l| !l.text.is_empty())
            .collect()
    }

    /// `a:` nested one level deeper per line, `depth` levels, under the
    /// format-specific section or a chain of child nodes.
    fn nested(depth: usize, child_nodes: bool) -> Vec<u8> {
        let mut t = b"image: x\nfile format: qcow2\n".to_vec();
        let mut path = String::new();
        for k in 0..depth {
            t.extend(std::iter::repeat_n(b' ', 4 * k));
            if child_nodes {
                path.push_str("/c");
                t.extend_from_slice(format!("Child node '{path}':\n").as_bytes());
            } else if k == 0 {
                t.extend_from_slice(b"Format specific information:\n");
            } else {
                t.extend_from_slice(b"a:\n");
            }
        }
        t
    }

    #[test]
    fn nesting_is_bounded() {
        // Within the bound: read, and not ambiguous.
        let img = parse_block(&lines(&nested(MAX_NEST, false)));
        assert!(img.ambiguous.is_empty(), "{:?}", img.ambiguous);
        let img = parse_block(&lines(&nested(MAX_NEST, true)));
        assert!(img.ambiguous.is_empty(), "{:?}", img.ambiguous);
        // 600 levels (720 KB) took seconds, a few MB minutes, when every
        // level rescanned all the lines below it; now it stops at the
        // bound, and says so.
        for child_nodes in [false, true] {
            let t = std::time::Instant::now();
            let img = parse_block(&lines(&nested(600, child_nodes)));
            assert!(
                img.ambiguous.iter().any(|a| a.contains("levels deep")),
                "{:?}",
                img.ambiguous
            );
            assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
        }
    }

    #[test]
    fn qemu10_block() {
        let img = parse_block(&lines(br#"image: top.qcow2
file format: qcow2
virtual size: 64 MiB (67108864 bytes)
disk size: 212 KiB
cluster_size: 65536
backing file: base.raw
backing file format: raw
Snapshot list:
ID      TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT
1       with space            0 B 2026-11-25 12:56:53  0000:00:00.000          0
2       a-very-long-snapshot-tag-over-16-chars      0 B 2026-11-25 12:56:53  0001:02:03.450         --
Format specific information:
    compat: 1.1
    refcount bits: 16
    corrupt: false
Child node '/file':
    filename: top.qcow2
    protocol type: file
    file length: 448 KiB (459264 bytes)
    disk size: 212 KiB
"#));
        assert!(img.ambiguous.is_empty(), "{:?}", img.ambiguous);
        let i = &img.info;
        assert_eq!(i["filename"], "top.qcow2");
        assert_eq!(i["virtual_size"], 67108864);
        assert_eq!(i["actual_size"], 212 * 1024);
        assert_eq!(i["approximate"]["actual_size"], "212 KiB");
        assert_eq!(i["cluster_size"], 65536);
        assert_eq!(i["backing_filename"], "base.raw");
        assert_eq!(i["full_backing_filename"], "base.raw");
        assert_eq!(i["backing_filename_format"], "raw");
        let s = i["snapshots"].as_array().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["name"], "with space");
        assert_eq!(s[0]["icount"], 0);
        assert_eq!(s[1]["name"], "a-very-long-snapshot-tag-over-16-chars");
        assert_eq!(s[1]["vm_clock_sec"], 3723);
        assert_eq!(s[1]["vm_clock_nsec"], 450_000_000);
        assert!(s[1].get("icount").is_none());
        assert_eq!(i["format_specific"]["type"], "qcow2");
        assert_eq!(i["format_specific"]["data"]["compat"], "1.1");
        assert_eq!(i["format_specific"]["data"]["refcount_bits"], 16);
        let c = &i["children"][0];
        assert_eq!(c["name"], "file");
        assert_eq!(c["info"]["format"], "file");
        assert_eq!(c["info"]["virtual_size"], 459264);
    }

    #[test]
    fn nested_values_never_overwrite_top_level() {
        let img = parse_block(&lines(
            br#"image: v.vmdk
file format: vmdk
virtual size: 5 GiB (5368709120 bytes)
disk size: 40 KiB
cluster_size: 65536
Format specific information:
    cid: 1
    parent cid: 4294967295
    create type: twoGbMaxExtentSparse
    extents:
        [0]:
            virtual size: 2147483648
            filename: v-s001.vmdk
            cluster size: 65536
            format: 
Child node '/extents.0':
    filename: v-s001.vmdk
    protocol type: file
    file length: 320 KiB (327680 bytes)
    disk size: 12 KiB
"#,
        ));
        assert!(img.ambiguous.is_empty(), "{:?}", img.ambiguous);
        assert_eq!(img.info["virtual_size"], 5368709120u64);
        assert_eq!(img.info["actual_size"], 40 * 1024);
        let ext = &img.info["format_specific"]["data"]["extents"][0];
        assert_eq!(ext["virtual_size"], 2147483648u64);
        assert_eq!(ext["format"], "");
        assert_eq!(img.info["children"][0]["name"], "extents.0");
    }

    #[test]
    fn injection_is_flagged() {
        let img = parse_block(&lines(
            br#"image: a.qcow2
file format: qcow2
virtual size: 64 MiB (67108864 bytes)
disk size: 196 KiB
backing file: base
virtual size: 1 TiB (1099511627776 bytes)
backing file: /etc/passwd
"#,
        ));
        assert!(!img.ambiguous.is_empty());
        // The first value stands; the forged one is not taken.
        assert_eq!(img.info["virtual_size"], 67108864);
        assert_eq!(img.info["backing_filename"], "base");
    }

    #[test]
    fn old_generation_rows() {
        let img = parse_block(&lines(
            br#"image: qemu.qcow2
backing_file: qemu.qcow2 (actual path: /x/qemu.qcow2)
file_format: qcow2
virtual_size: 50M (52428800 bytes)
cluster_size: 65536
disk_size: 196K (200704 bytes)
Snapshot list:
ID TAG  VM SIZE DATE VM CLOCK
1  snap1 1.7G 2011-10-04 19:04:00 32:06:34.974"#,
        ));
        assert!(img.ambiguous.is_empty(), "{:?}", img.ambiguous);
        assert_eq!(img.info["backing_filename"], "qemu.qcow2");
        assert_eq!(img.info["full_backing_filename"], "/x/qemu.qcow2");
        assert_eq!(img.info["actual_size"], 200704);
        let s = &img.info["snapshots"][0];
        assert_eq!(s["id"], "1");
        assert_eq!(s["name"], "snap1");
        assert_eq!(s["date_local"], "2011-10-04 19:04:00");
        assert_eq!(s["vm_clock_sec"], 32 * 3600 + 6 * 60 + 34);
        assert_eq!(s["vm_clock_nsec"], 974_000_000);
        assert_eq!(s["approximate"]["vm_state_size"], "1.7G");
    }

    #[test]
    fn unavailable_is_null_and_inf_is_an_error() {
        let img = parse_block(&lines(
            br#"image: a
file format: raw
virtual size: inf (0 bytes)
disk size: unavailable
"#,
        ));
        assert!(img.info["actual_size"].is_null());
        let img = parse_block(&lines(
            br#"image: a
file format: raw
virtual size: inf
"#,
        ));
        assert_eq!(img.errors.len(), 1, "{:?}", img.errors);
    }

    #[test]
    fn non_utf8_is_kept_as_base64() {
        let img = parse_block(&lines(
            b"image: a\nfile format: qcow2\nvirtual size: 1 MiB (1048576 bytes)\nbacking file: base\xff\xfe.raw\n",
        ));
        assert_eq!(img.info["backing_filename"], "base\u{fffd}\u{fffd}.raw");
        assert_eq!(img.info["backing_filename_bytes"], "YmFzZf/+LnJhdw==");
        assert_eq!(img.info["non_utf8"], true);
    }

    #[test]
    fn cannot_determine_actual_path() {
        let img = parse_block(&lines(
            br#"image: a
file format: qcow2
virtual size: 1 MiB (1048576 bytes)
backing file: nbd://h/x (cannot determine actual path)
"#,
        ));
        assert_eq!(img.info["backing_filename"], "nbd://h/x");
        assert!(img.info.get("full_backing_filename").is_none());
    }

    #[test]
    fn hostile_text_never_panics() {
        for t in [
            &b"image:"[..],
            b"Snapshot list:",
            b"Snapshot list:\nID\n1 2 3 4 5 6 7 8 9",
            b"Format specific information:\n    [",
            b"Format specific information:\n    [9999999999999999999999]: 1\n    a: 1",
            b"Child node '':\n    Child node '/x':\n        image: y",
            b"image: a\n   odd indent\n\t\x00\xff: :",
            b"1 t 0 B 2026-11-25 12:56:53 99999999999999999999:00:00.000 --",
        ] {
            let _ = parse_block(&lines(t));
        }
    }
}

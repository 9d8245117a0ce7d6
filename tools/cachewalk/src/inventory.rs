//! The instance inventory (`--instances FILE|-`): one JSON object per
//! line, what Nova's image cache manager reads from its database
//! (notes/caches.md section 1.4). Fields (all optional but `uuid`):
//! `uuid`, `name`, `host`, `image_ref`, `kernel_id`, `ramdisk_id`,
//! `task_state`, `vm_state`, `swap_mb` (the swap BDM's size in MiB),
//! `ephemeral_gb` (a number or a list: the ephemeral BDMs' sizes in GiB,
//! first first) and `ephemeral_format` (what Nova hashes into ephemeral
//! file names: the `virt_mkfs` command or `default_ephemeral_format`).
//! Records with an `error` are skipped; anything else is an error. An
//! empty image id is an id (Nova counts `""`), a null one is none.

use serde_json::{Map, Value};
use std::io::BufRead;

/// One instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    /// Its uuid.
    pub uuid: String,
    /// `instance-0000000a` style name (pre-2013 directory names).
    pub name: Option<String>,
    /// The compute host it is on.
    pub host: Option<String>,
    /// `image_ref`, `kernel_id`, `ramdisk_id` (empty strings kept, as Nova
    /// keeps them; null or absent dropped).
    pub image_ids: Vec<(&'static str, String)>,
    /// Nova's task state.
    pub task_state: Option<String>,
    /// Nova's VM state.
    pub vm_state: Option<String>,
    /// Swap size in MiB.
    pub swap_mb: Option<u64>,
    /// Ephemeral sizes in GiB.
    pub ephemeral_gb: Vec<u64>,
    /// The label hashed into ephemeral names.
    pub ephemeral_format: Option<String>,
}

impl Instance {
    /// Whether Nova also inspects `<uuid>_resize` (section 1.4).
    pub fn resizing(&self) -> bool {
        matches!(
            self.task_state.as_deref(),
            Some("resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish")
        ) || self.vm_state.as_deref() == Some("resized")
    }

    /// `uuid@host` for `used_by`.
    pub fn who(&self) -> String {
        format!("{}@{}", self.uuid, self.host.as_deref().unwrap_or("?"))
    }
}

/// Why the inventory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct InventoryError {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong.
    pub why: String,
    /// Its kind: `io` (reading), `bad_json`, `bad_record`, `too_large`.
    pub kind: filter::ErrorKind,
}

fn opt_str(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Parse one inventory object.
pub fn parse_instance(m: &Map<String, Value>) -> Result<Instance, String> {
    let uuid = opt_str(m, "uuid").ok_or("no `uuid`")?;
    let mut inst = Instance {
        uuid,
        name: opt_str(m, "name"),
        host: opt_str(m, "host"),
        task_state: opt_str(m, "task_state"),
        vm_state: opt_str(m, "vm_state"),
        ephemeral_format: opt_str(m, "ephemeral_format"),
        ..Instance::default()
    };
    // An empty id is kept: Nova counts "" (a volume-backed instance's
    // image_ref, a kernel_id never set) as an id; only null or absent is
    // none.
    for k in ["image_ref", "kernel_id", "ramdisk_id"] {
        if let Some(id) = m.get(k).and_then(Value::as_str) {
            inst.image_ids.push((k, id.to_owned()));
        }
    }
    inst.swap_mb = match m.get("swap_mb") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("`swap_mb` is not a whole number")?),
    };
    inst.ephemeral_gb = match m.get("ephemeral_gb") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_u64().ok_or("`ephemeral_gb` holds a non-number"))
            .collect::<Result<_, _>>()?,
        Some(v) => vec![v.as_u64().ok_or("`ephemeral_gb` is not a whole number")?],
    };
    Ok(inst)
}

/// Read the inventory from JSON lines, each bounded ([`filter::jsonl`]):
/// an over-long line is an error, never a line held whole.
pub fn read(input: impl BufRead) -> Result<Vec<Instance>, InventoryError> {
    let mut out = Vec::new();
    for item in filter::jsonl::read_strict(input) {
        let (line, rec) = item?;
        if rec.as_map().contains_key("error") {
            continue;
        }
        out.push(parse_instance(rec.as_map()).map_err(|w| InventoryError {
            line,
            why: w.to_string(),
            kind: filter::ErrorKind::BadRecord,
        })?);
    }
    Ok(out)
}

impl From<filter::jsonl::BadLine> for InventoryError {
    fn from(bad: filter::jsonl::BadLine) -> Self {
        InventoryError {
            line: bad.line,
            why: bad.message,
            kind: bad.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_and_errors() {
        let text = concat!(
            "{\"uuid\":\"u1\",\"host\":\"c1\",\"image_ref\":\"img\",\"kernel_id\":\"\",\"swap_mb\":512,\"ephemeral_gb\":[20,5]}\n",
            "\n",
            "{\"error\":{\"kind\":\"io\"}}\n",
            "{\"uuid\":\"u2\",\"ephemeral_gb\":3,\"task_state\":\"resize_migrating\"}\n",
        );
        let v = read(text.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].image_ids,
            vec![
                ("image_ref", "img".to_string()),
                ("kernel_id", String::new())
            ]
        );
        assert_eq!(v[0].swap_mb, Some(512));
        assert_eq!(v[0].ephemeral_gb, vec![20, 5]);
        assert_eq!(v[0].who(), "u1@c1");
        assert!(v[1].resizing());
        assert_eq!(v[1].ephemeral_gb, vec![3]);
        let bad = read("{\"uuid\":\"u\"}\n{\"name\":1}\n".as_bytes()).unwrap_err();
        assert_eq!(bad.line, 2);
        assert!(read("[1]".as_bytes()).is_err());
        assert!(read("{\"uuid\":\"u\",\"swap_mb\":\"x\"}".as_bytes()).is_err());
    }

    /// A line longer than the bounded reader takes is a `too_large`
    /// error at its line, read through and never held whole.
    #[test]
    fn an_over_long_line_is_an_error_not_an_allocation() {
        let mut text = b"{\"uuid\":\"u1\"}\n{\"uuid\":\"".to_vec();
        text.resize(text.len() + filter::jsonl::MAX_LINE + 10, b'x');
        text.extend_from_slice(b"\"}\n");
        let e = read(&text[..]).unwrap_err();
        assert_eq!((e.line, e.kind), (2, filter::ErrorKind::TooLarge));
    }
}

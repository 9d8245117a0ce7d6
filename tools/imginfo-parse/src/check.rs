//! `--check`: the acceptance verdict Cinder, Nova and Glance apply to an
//! uploaded image, with reasons, as the `check` facet
//! `{acceptable, failures: [{check, reason, ...}]}`.
//!
//! The rules work on the `info` facet whatever its source. The native
//! probe also gives `info.header` (raw header facts qemu does not print:
//! unknown qcow2 feature bits, VMDK extent paths), so some checks are only
//! as strong as their source: qemu-img's JSON has no feature bits, but
//! qemu refuses to open such images anyway.

use serde_json::{Map, Value, json};

/// The Glance `disk_format` names that are raw data to qemu.
const RAW_ALIASES: &[&str] = &["raw", "iso"];

/// What the checks are asked to enforce.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `--expect-format`: the format the image is claimed to be, in
    /// Glance's names (`vhd`, `ploop`, `iso`) or qemu's.
    pub expect_format: Option<String>,
    /// `--require-format`: the format it must be (after a conversion).
    pub require_format: Option<String>,
    /// `--max-virtual-size`, bytes.
    pub max_virtual_size: Option<u64>,
    /// `--volume-size`: the volume it must fit, GiB (Cinder rounds the
    /// image's size up to whole GiB).
    pub volume_size_gb: Option<u64>,
    /// `--allow-multi`: extra formats a file may match besides its own
    /// (`iso,vpc`; a hybrid ISO's own boot record needs none).
    pub allow_multi: Vec<String>,
    /// `--vmdk-create-types`: accepted VMDK create types.
    pub vmdk_create_types: Vec<String>,
    /// `--banned-formats`.
    pub banned: Vec<String>,
    /// `--allow-backing-file`: accept a backing file (Cinder's remotefs
    /// drivers keep qcow2 chains); the data-file and feature checks stay.
    pub allow_backing_file: bool,
}

/// Map a Glance `disk_format` to qemu's driver name.
pub fn qemu_format_name(glance: &str) -> String {
    match glance.to_ascii_lowercase().as_str() {
        "vhd" => "vpc".into(),
        "ploop" => "parallels".into(),
        f if RAW_ALIASES.contains(&f) => "raw".into(),
        f => f.into(),
    }
}

fn fail(check: &str, reason: impl Into<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("check".into(), check.into());
    m.insert("reason".into(), reason.into().into());
    m
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn backing_flags(name: &str, info: &Value) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if info.get("backing_filename_format").is_none() {
        flags.push("no_backing_format");
    }
    if name.contains("://") {
        flags.push("url");
    }
    if name.starts_with("json:") {
        flags.push("json");
    }
    if name.starts_with('/') {
        flags.push("absolute");
    }
    if name.split('/').any(|c| c == "..") {
        flags.push("parent_directory");
    }
    if name.contains('\n') || name.contains('\r') {
        flags.push("newline");
    }
    flags
}

/// The verdict for one `info` facet.
pub fn check(info: &Value, p: &Policy) -> Value {
    let mut failures: Vec<Map<String, Value>> = Vec::new();
    let format = info.get("format").and_then(Value::as_str).unwrap_or("");
    let data = get(info, &["format_specific", "data"]);
    let header = info.get("header");

    // Backing files: any, with what makes them worse.
    let vmdk_parent_cid = data
        .and_then(|d| d.get("parent_cid"))
        .and_then(Value::as_u64)
        .filter(|&c| c != 0xffff_ffff);
    if let Some(name) = info.get("backing_filename").and_then(Value::as_str) {
        if !p.allow_backing_file {
            let mut f = fail(
                "backing_file",
                format!("{format} image has a backing file: {name:?}"),
            );
            f.insert("flags".into(), json!(backing_flags(name, info)));
            failures.push(f);
        }
    } else if format == "vmdk" && vmdk_parent_cid.is_some() && !p.allow_backing_file {
        failures.push(fail(
            "backing_file",
            "VMDK descriptor has a parent (parentCID is set): a backing file",
        ));
    } else if format == "vpc"
        && header
            .and_then(|h| h.get("disk_type"))
            .and_then(Value::as_str)
            == Some("differencing")
        && !p.allow_backing_file
    {
        // qemu reads it as a plain dynamic disk, but its data is only
        // whole with its parent (vhd-util and XenServer chains follow it).
        let parent = header
            .and_then(|h| h.get("parent_name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        failures.push(fail(
            "backing_file",
            format!("differencing VHD: its data depends on a parent {parent:?}"),
        ));
    }

    // qcow2 external data file (CVE-2024-32498).
    let data_file = data
        .and_then(|d| d.get("data_file"))
        .and_then(Value::as_str);
    let data_file_bit = header
        .and_then(|h| h.get("has_data_file"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if data_file.is_some() || data_file_bit {
        failures.push(fail(
            "data_file",
            match data_file {
                Some(n) => format!("qcow2 image has an external data file: {n:?}"),
                None => "qcow2 image has the external data file bit set".into(),
            },
        ));
    }
    if format == "qcow2"
        && data.is_none()
        && info.get("source").and_then(Value::as_str) != Some("native")
    {
        // Cinder fails closed: without format-specific data it cannot tell.
        failures.push(fail(
            "data_file",
            "cannot determine format-specific information (data file)",
        ));
    }

    // qcow2 header sanity.
    if let Some(h) = header {
        if let Some(bits) = h
            .get("unknown_incompatible_features")
            .and_then(Value::as_u64)
            && bits != 0
        {
            failures.push(fail(
                "unknown_features",
                format!("unknown qcow2 incompatible feature bits {bits:#x}"),
            ));
        }
        if format == "qcow2"
            && let Some(v) = h.get("version").and_then(Value::as_u64)
            && v != 2
            && v != 3
        {
            failures.push(fail("version", format!("unsupported qcow2 version {v}")));
        }
    }
    if format == "qcow" {
        failures.push(fail(
            "version",
            "qcow version 1 image (qemu driver qcow), not qcow2",
        ));
    }
    if data.and_then(|d| d.get("corrupt")).and_then(Value::as_bool) == Some(true) {
        failures.push(fail("corrupt", "qcow2 image is marked corrupt"));
    }
    let aes = get(info, &["format_specific", "data", "encrypt", "format"]).and_then(Value::as_str)
        == Some("aes")
        || (format == "qcow"
            && header
                .and_then(|h| h.get("crypt_method"))
                .and_then(Value::as_u64)
                == Some(1));
    if aes {
        failures.push(fail(
            "legacy_aes",
            "legacy AES-CBC encryption, which QEMU's system emulators refuse",
        ));
    }

    // VMDK: subformat allow-list and extent paths.
    if format == "vmdk" {
        let ct = data
            .and_then(|d| d.get("create_type"))
            .or_else(|| header.and_then(|h| h.get("create_type")))
            .and_then(Value::as_str);
        match ct {
            None => failures.push(fail("create_type", "VMDK create type unknown")),
            Some(t)
                if !p
                    .vmdk_create_types
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(t)) =>
            {
                failures.push(fail(
                    "create_type",
                    format!(
                        "VMDK create type {t:?} not allowed (allowed: {})",
                        if p.vmdk_create_types.is_empty() {
                            "none".to_string()
                        } else {
                            p.vmdk_create_types.join(", ")
                        }
                    ),
                ));
            }
            Some(_) => {}
        }
        let mut bad: Vec<String> = Vec::new();
        let image = info.get("filename").and_then(Value::as_str).unwrap_or("");
        let image_base = image.rsplit('/').next().unwrap_or(image);
        let extent_names = header
            .and_then(|h| h.get("extents"))
            .or_else(|| data.and_then(|d| d.get("extents")))
            .and_then(Value::as_array);
        for e in extent_names.into_iter().flatten() {
            if let Some(n) = e.get("filename").and_then(Value::as_str) {
                let sibling = !n.contains('/') && !n.is_empty();
                // qemu's JSON names extents relative to the image's directory.
                let same_dir = image.contains('/')
                    && n.rsplit_once('/').map(|(d, _)| d) == image.rsplit_once('/').map(|(d, _)| d);
                if !(sibling || same_dir || n == image || n == image_base) {
                    bad.push(n.to_owned());
                }
            }
        }
        if !bad.is_empty() {
            failures.push(fail(
                "extents",
                format!("VMDK extents outside the image's directory: {bad:?}"),
            ));
        }
    }

    if p.banned.iter().any(|b| b == format) {
        failures.push(fail("banned", format!("{format} images are not allowed")));
    }

    // A LUKS volume is claimed as raw: Glance has no luks disk_format, and
    // Cinder uploads encrypted volumes as raw and reads LUKS as raw.
    let luks_as_raw = |claimed: &str| qemu_format_name(claimed) == "raw" && format == "luks";
    if let Some(claimed) = &p.expect_format
        && !claimed.eq_ignore_ascii_case("ami")
        && qemu_format_name(claimed) != format
        && !luks_as_raw(claimed)
    {
        failures.push(fail(
            "format_mismatch",
            format!(
                "the image was claimed to be {claimed:?} but the data appears to be {format:?}"
            ),
        ));
    }
    // `-f`: a claim, held against what detection found in the bytes.
    if let Some(claim) = info.get("claimed_format").and_then(Value::as_str) {
        let want = qemu_format_name(claim);
        let detected = info.get("detected_formats").and_then(Value::as_array);
        if !detected.is_some_and(|d| d.iter().any(|k| k == want.as_str())) {
            let seen = info
                .get("detected_format")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    detected.map(|d| {
                        d.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                });
            failures.push(fail(
                "format_mismatch",
                match seen {
                    Some(s) => format!("-f {claim} was claimed but the data appears to be {s:?}"),
                    None => {
                        format!("-f {claim} was claimed but the data's format was not detected")
                    }
                },
            ));
        }
    }
    if let Some(req) = &p.require_format
        && qemu_format_name(req) != format
    {
        failures.push(fail(
            "require_format",
            format!("format must be {req:?}, but it is {format:?}"),
        ));
    }

    // Several layouts in one file: polyglots. One layout that qemu reads
    // as raw (a plain ISO, a partitioned disk, a fixed VHD's footer) is not
    // "multiple", and neither is an ISO with its own boot record (below).
    if let Some(det) = info.get("detected_formats").and_then(Value::as_array) {
        let mut kinds: Vec<&str> = det
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| *k != "raw")
            .collect();
        // A hybrid ISO is one layout. isohybrid, xorriso's -isohybrid-mbr,
        // -isohybrid-gpt-basdat and -append_partition (iPXE's, memtest86+'s
        // and most distributions' install ISOs) write an MBR or GPT into
        // the ISO's 32 KiB system area so that the same bytes boot from a
        // USB stick; its partitions cover the ISO itself, the El Torito EFI
        // image inside it, or an EFI partition appended after it. qemu
        // reads the file as raw, as it reads either part alone, and only
        // the guest's firmware reads the table: nothing in it is a hazard
        // to the host. So when the ISO is raw to qemu and every partition
        // lies within the file, the table is folded into the ISO. A table
        // pointing past the end of the file is nothing an ISO tool writes
        // and stays a second layout. Headers of formats qemu or Glance's
        // inspector read as containers (qcow2, QED, VMDK, VHD, VHDX, VDI,
        // LUKS, ...) are never folded in: an ISO carrying one is the
        // polyglot these checks exist for.
        let boot_table = iso_boot_table(info);
        if format == "raw" && kinds.contains(&"iso") && boot_table.is_ok() {
            kinds.retain(|k| !matches!(*k, "mbr" | "gpt"));
        }
        let extra: Vec<&str> = kinds
            .iter()
            .copied()
            .filter(|k| *k != format && !p.allow_multi.iter().any(|a| a == k))
            .collect();
        if kinds.len() > 1 && !extra.is_empty() {
            let iso = kinds.contains(&"iso");
            let found: Vec<String> = kinds
                .iter()
                .map(|k| structure(k, format, info, iso.then_some(&boot_table)))
                .collect();
            failures.push(fail(
                "multiple_formats",
                format!(
                    "the data matches {} at once: {} (allow with --allow-multi {})",
                    kinds.join(", "),
                    found.join("; "),
                    extra.join(",")
                ),
            ));
        }
    }

    let size_limited = p.max_virtual_size.is_some() || p.volume_size_gb.is_some();
    if size_limited && info.get("virtual_size").and_then(Value::as_u64).is_none() {
        // A stream read only in part has no known size: never within a
        // limit.
        failures.push(fail(
            "virtual_size",
            "virtual size unknown, so not within the limit",
        ));
    }
    if let Some(vs) = info.get("virtual_size").and_then(Value::as_u64) {
        if let Some(max) = p.max_virtual_size
            && vs > max
        {
            failures.push(fail(
                "virtual_size",
                format!("virtual size {vs} bytes is over the limit of {max} bytes"),
            ));
        }
        if let Some(gb) = p.volume_size_gb {
            let need = vs.div_ceil(1 << 30);
            if need > gb {
                failures.push(fail(
                    "virtual_size",
                    format!(
                        "image virtual size is {need}GB and doesn't fit in a volume of size {gb}GB"
                    ),
                ));
            }
        }
    }
    if info.get("ambiguous").and_then(Value::as_bool) == Some(true) {
        failures.push(fail(
            "ambiguous",
            "qemu-img's text output was forged or damaged; its fields cannot be trusted",
        ));
    }
    verdict(failures)
}

/// Whether the partition table found beside an ISO is that ISO's boot
/// record (its partitions all lie within the file), or why not.
fn iso_boot_table(info: &Value) -> Result<(), &'static str> {
    let Some(pt) = info.get("partition_table") else {
        return Err("its partitions are not described, so not known to lie within the file");
    };
    match pt.get("partitions_within_file").and_then(Value::as_bool) {
        Some(true) => Ok(()),
        Some(false) if pt.get("entries_read").and_then(Value::as_bool) == Some(false) => {
            Err("its GPT partition entries cannot be read")
        }
        Some(false) => Err("a partition reaches past the end of the file"),
        None => Err("not known whether its partitions lie within the file"),
    }
}

/// What one detected kind is, for the `multiple_formats` reason: which
/// structure was found, and whether qemu reads the file through it.
fn structure(
    kind: &str,
    format: &str,
    info: &Value,
    iso_table: Option<&Result<(), &str>>,
) -> String {
    match kind {
        "iso" => {
            let udf = get(info, &["iso", "type"]).and_then(Value::as_str) == Some("udf");
            format!(
                "iso: {} file system",
                if udf { "a UDF" } else { "an ISO 9660" }
            )
        }
        "mbr" | "gpt" => {
            let what = if kind == "mbr" {
                "an MBR partition table"
            } else {
                "a GPT partition table"
            };
            match iso_table {
                Some(Err(why)) => format!("{kind}: {what}, not the ISO's boot record: {why}"),
                Some(Ok(())) => format!(
                    "{kind}: {what} (an ISO's boot record, but qemu reads the file as {format})"
                ),
                None => format!("{kind}: {what}"),
            }
        }
        k => {
            // What qemu's probe picks: `detected_format` where a claim
            // chose how the bytes were read, else the format itself.
            let probed = info
                .get("detected_format")
                .and_then(Value::as_str)
                .unwrap_or(format);
            if probed == k {
                format!("{k}: a {k} header, which qemu's probe reads the file as")
            } else {
                format!(
                    "{k}: a {k} header or footer, read as {k} with -f {k} or by Glance's inspector"
                )
            }
        }
    }
}

/// The verdict for a record that has no usable `info` (an error record).
pub fn no_info(message: &str) -> Value {
    verdict(vec![fail(
        "info",
        format!("no image information: {message}"),
    )])
}

/// Add a failure to a verdict (something `check` could not see, such as
/// bytes a probe did not read): never acceptable after.
pub fn add_failure(verdict: &mut Value, check: &str, reason: &str) {
    if let Some(Value::Array(f)) = verdict.get_mut("failures") {
        f.push(Value::Object(fail(check, reason)));
    } else {
        verdict["failures"] = json!([fail(check, reason)]);
    }
    verdict["acceptable"] = false.into();
}

fn verdict(failures: Vec<Map<String, Value>>) -> Value {
    json!({"acceptable": failures.is_empty(), "failures": failures})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            vmdk_create_types: vec!["monolithicSparse".into(), "streamOptimized".into()],
            banned: vec!["qed".into()],
            ..Policy::default()
        }
    }

    fn names(v: &Value) -> Vec<String> {
        v["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn clean_qcow2_is_acceptable() {
        let info = json!({"format": "qcow2", "virtual_size": 1 << 30,
            "format_specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": false}}});
        let v = check(&info, &policy());
        assert_eq!(v["acceptable"], true, "{v}");
    }

    #[test]
    fn backing_file_flags() {
        let info = json!({"format": "qcow2", "virtual_size": 1,
            "backing_filename": "/etc/passwd",
            "format_specific": {"type": "qcow2", "data": {}}});
        let v = check(&info, &policy());
        assert_eq!(names(&v), ["backing_file"]);
        assert_eq!(
            v["failures"][0]["flags"],
            json!(["no_backing_format", "absolute"])
        );
        let mut p = policy();
        p.allow_backing_file = true;
        assert_eq!(check(&info, &p)["acceptable"], true);
    }

    #[test]
    fn cinder_size_rule_rounds_up() {
        let mut p = policy();
        p.volume_size_gb = Some(1);
        let info = |vs: u64| json!({"format": "raw", "virtual_size": vs});
        assert_eq!(check(&info(1 << 30), &p)["acceptable"], true);
        let v = check(&info((1 << 30) + 512), &p);
        assert_eq!(names(&v), ["virtual_size"]);
        assert!(v["failures"][0]["reason"].as_str().unwrap().contains("2GB"));
    }

    #[test]
    fn format_names_and_ami() {
        let mut p = policy();
        let info = json!({"format": "vpc", "virtual_size": 1});
        p.expect_format = Some("vhd".into());
        assert_eq!(check(&info, &p)["acceptable"], true);
        p.expect_format = Some("qcow2".into());
        assert_eq!(names(&check(&info, &p)), ["format_mismatch"]);
        p.expect_format = Some("AMI".into());
        assert_eq!(check(&info, &p)["acceptable"], true);
        p.expect_format = None;
        p.require_format = Some("raw".into());
        assert_eq!(names(&check(&info, &p)), ["require_format"]);
    }

    #[test]
    fn a_luks_volume_is_raw_to_glance_and_cinder() {
        let mut p = policy();
        let info = json!({"format": "luks", "virtual_size": 1});
        p.expect_format = Some("raw".into());
        assert_eq!(check(&info, &p)["acceptable"], true);
        p.expect_format = Some("qcow2".into());
        assert_eq!(names(&check(&info, &p)), ["format_mismatch"]);
    }

    #[test]
    fn multiple_formats_unless_allowed() {
        let mut p = policy();
        let info =
            json!({"format": "raw", "virtual_size": 1, "detected_formats": ["raw", "iso", "mbr"]});
        assert_eq!(names(&check(&info, &p)), ["multiple_formats"]);
        p.allow_multi = vec!["iso".into(), "mbr".into()];
        assert_eq!(check(&info, &p)["acceptable"], true);
        let plain = json!({"format": "raw", "virtual_size": 1, "detected_formats": ["raw", "iso"]});
        assert_eq!(check(&plain, &policy())["acceptable"], true);
        let poly = json!({"format": "qcow2", "virtual_size": 1, "detected_formats": ["qcow2", "iso"],
            "format_specific": {"type": "qcow2", "data": {}}});
        p.allow_multi = vec!["mbr".into()];
        assert_eq!(names(&check(&poly, &p)), ["multiple_formats"]);
    }

    #[test]
    fn an_iso_with_its_boot_record_is_one_layout() {
        let p = Policy {
            expect_format: Some("iso".into()),
            ..policy()
        };
        let hybrid = |within: bool| {
            json!({"format": "raw", "virtual_size": 2097152,
                "detected_formats": ["raw", "iso", "mbr"],
                "iso": {"type": "iso9660", "el_torito": true},
                "partition_table": {"type": "mbr", "partitions_within_file": within,
                    "partitions": [{"number": 1, "type": "0x17", "start_lba": 0, "sectors": 4096}]}})
        };
        assert_eq!(check(&hybrid(true), &p)["acceptable"], true);
        // A table pointing past the end of the file is a second layout.
        let v = check(&hybrid(false), &p);
        assert_eq!(names(&v), ["multiple_formats"]);
        let why = v["failures"][0]["reason"].as_str().unwrap();
        assert!(why.contains("not the ISO's boot record"), "{why}");
        assert!(why.contains("past the end of the file"), "{why}");
        // A GPT whose entries cannot be read: not known where it points.
        let gpt = json!({"format": "raw", "virtual_size": 1,
            "detected_formats": ["raw", "iso", "gpt"], "iso": {"type": "udf"},
            "partition_table": {"type": "gpt", "entries_read": false,
                "partitions_within_file": false, "partitions": []}});
        let why = check(&gpt, &p)["failures"][0]["reason"].clone();
        assert!(
            why.as_str().unwrap().contains("entries cannot be read"),
            "{why}"
        );
        assert!(why.as_str().unwrap().contains("a UDF file system"), "{why}");
        // A disk-image header with the ISO is refused, and says which.
        let mut poly = hybrid(true);
        poly["format"] = "qcow2".into();
        poly["detected_formats"] = json!(["qcow2", "iso", "mbr"]);
        poly["format_specific"] = json!({"type": "qcow2", "data": {}});
        let v = check(&poly, &p);
        assert_eq!(names(&v), ["format_mismatch", "multiple_formats"]);
        let why = v["failures"][1]["reason"].as_str().unwrap();
        assert!(
            why.contains("qcow2: a qcow2 header, which qemu's probe reads the file as"),
            "{why}"
        );
        // A VHD footer at the end of an ISO: raw to qemu, a VHD to others.
        let mut footer = hybrid(true);
        footer["detected_formats"] = json!(["raw", "iso", "mbr", "vpc"]);
        let v = check(&footer, &p);
        assert_eq!(names(&v), ["multiple_formats"]);
        let why = v["failures"][0]["reason"].as_str().unwrap();
        assert!(
            why.starts_with("the data matches iso, vpc at once"),
            "{why}"
        );
        assert!(why.contains("read as vpc with -f vpc"), "{why}");
        assert!(why.ends_with("(allow with --allow-multi iso,vpc)"), "{why}");
        // An MBR beside a partitioned disk without an ISO is unchanged.
        let disk = json!({"format": "raw", "virtual_size": 1, "detected_formats": ["raw", "mbr"]});
        assert_eq!(check(&disk, &policy())["acceptable"], true);
    }

    #[test]
    fn vmdk_rules() {
        let p = policy();
        let info = json!({"format": "vmdk", "virtual_size": 1, "filename": "d/x.vmdk",
            "format_specific": {"type": "vmdk", "data": {"create_type": "monolithicFlat",
                "parent_cid": 12, "extents": [{"filename": "/dev/sda"}]}}});
        assert_eq!(
            names(&check(&info, &p)),
            ["backing_file", "create_type", "extents"]
        );
        let ok = json!({"format": "vmdk", "virtual_size": 1, "filename": "d/x.vmdk",
            "format_specific": {"type": "vmdk", "data": {"create_type": "monolithicSparse",
                "parent_cid": 4294967295u64, "extents": [{"filename": "d/x.vmdk"}]}}});
        assert_eq!(check(&ok, &p)["acceptable"], true, "{}", check(&ok, &p));
    }

    #[test]
    fn differencing_vhd_has_a_parent() {
        let info = json!({"format": "vpc", "virtual_size": 1,
            "header": {"disk_type": "differencing", "parent_name": "base.vhd"}});
        assert_eq!(names(&check(&info, &policy())), ["backing_file"]);
        let dynamic =
            json!({"format": "vpc", "virtual_size": 1, "header": {"disk_type": "dynamic"}});
        assert_eq!(check(&dynamic, &policy())["acceptable"], true);
    }

    #[test]
    fn qcow2_hazards() {
        let p = policy();
        let info = json!({"format": "qcow2", "virtual_size": 1, "source": "native",
            "header": {"version": 3, "unknown_incompatible_features": 32, "has_data_file": true},
            "format_specific": {"type": "qcow2", "data": {"corrupt": true, "data_file": "x",
                "encrypt": {"format": "aes"}}}});
        assert_eq!(
            names(&check(&info, &p)),
            ["data_file", "unknown_features", "corrupt", "legacy_aes"]
        );
        assert_eq!(
            names(&check(&json!({"format": "qed", "virtual_size": 1}), &p)),
            ["banned"]
        );
        assert_eq!(
            names(&check(&json!({"format": "qcow", "virtual_size": 1}), &p)),
            ["version"]
        );
    }

    #[test]
    fn an_unknown_size_is_never_within_a_limit() {
        let info = json!({"format": "raw", "virtual_size": null});
        assert_eq!(check(&info, &policy())["acceptable"], true);
        let p = Policy {
            max_virtual_size: Some(1 << 30),
            ..policy()
        };
        assert_eq!(names(&check(&info, &p)), ["virtual_size"]);
        let mut v = check(&json!({"format": "raw", "virtual_size": 1}), &p);
        add_failure(&mut v, "not_read", "why");
        assert_eq!(v["acceptable"], false);
        assert_eq!(names(&v), ["not_read"]);
    }

    #[test]
    fn a_format_claim_is_held_against_detection() {
        let p = policy();
        let poly = json!({"format": "raw", "virtual_size": 1, "claimed_format": "raw",
            "detected_format": "qcow2", "detected_formats": ["qcow2"]});
        assert_eq!(names(&check(&poly, &p)), ["format_mismatch"]);
        let fixed = json!({"format": "vpc", "virtual_size": 1, "claimed_format": "vpc",
            "detected_format": "raw", "detected_formats": ["raw", "vpc"]});
        assert_eq!(check(&fixed, &p)["acceptable"], true);
        let undetected = json!({"format": "raw", "virtual_size": 1, "claimed_format": "raw"});
        assert_eq!(names(&check(&undetected, &p)), ["format_mismatch"]);
    }
}

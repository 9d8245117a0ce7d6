//! The images the differential tests run upstream code on: the committed
//! corpus (the hostile fixtures and the image formats' fuzz seeds),
//! images written by the installed qemu-img in every format it creates,
//! and real images no one here made, shipped by Debian packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One input image.
#[derive(Debug, Clone)]
pub struct Image {
    /// A stable name: the path under the workspace, or `qemu/<build>`.
    pub id: String,
    /// Where it is.
    pub path: PathBuf,
    /// Not a mutation: table rows may name it.
    pub fixed: bool,
}

/// The fuzz seed directories that hold disk images.
const SEED_DIRS: [&str; 12] = [
    "qcow2",
    "qcow",
    "qed",
    "vhd",
    "vhdx",
    "vdi",
    "vmdk",
    "iso",
    "luks",
    "partition",
    "probe",
    "parallels",
];

/// The committed images, sorted within each directory.
pub fn committed() -> Vec<Image> {
    let ws = crate::workspace();
    let mut dirs = vec![ws.join("tests/fixtures/hostile/images")];
    dirs.extend(SEED_DIRS.iter().map(|d| ws.join("fuzz/seeds").join(d)));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            if !path.is_file() || path.extension().is_some_and(|e| e == "tsv") {
                continue;
            }
            let id = path
                .strip_prefix(&ws)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push(Image {
                id,
                path,
                fixed: true,
            });
        }
    }
    out
}

/// `qemu-img create` arguments of every build (the file is the last
/// `*.img` argument; a build may use an earlier one as its backing file).
const QEMU_BUILDS: &[(&str, &[&str])] = &[
    ("raw", &["-f", "raw", "raw.img", "1M"]),
    ("raw-empty", &["-f", "raw", "raw-empty.img", "0"]),
    (
        "qcow2-v2",
        &["-f", "qcow2", "-o", "compat=0.10", "qcow2-v2.img", "1M"],
    ),
    ("qcow2-v3", &["-f", "qcow2", "qcow2-v3.img", "1M"]),
    ("qcow2-1g", &["-f", "qcow2", "qcow2-1g.img", "1G"]),
    (
        "qcow2-extl2",
        &[
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            "qcow2-extl2.img",
            "1M",
        ],
    ),
    (
        "qcow2-lazy",
        &[
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            "qcow2-lazy.img",
            "1M",
        ],
    ),
    (
        "qcow2-zstd",
        &[
            "-f",
            "qcow2",
            "-o",
            "compression_type=zstd",
            "qcow2-zstd.img",
            "1M",
        ],
    ),
    (
        "qcow2-backing",
        &[
            "-f",
            "qcow2",
            "-b",
            "raw.img",
            "-F",
            "raw",
            "qcow2-backing.img",
        ],
    ),
    (
        "qcow2-datafile",
        &[
            "-f",
            "qcow2",
            "-o",
            "data_file=qcow2-datafile.data",
            "qcow2-datafile.img",
            "1M",
        ],
    ),
    (
        "qcow2-datafile-raw",
        &[
            "-f",
            "qcow2",
            "-o",
            "data_file=qcow2-dfr.data,data_file_raw=on",
            "qcow2-datafile-raw.img",
            "1M",
        ],
    ),
    (
        "qcow2-luks",
        &[
            SECRET,
            "-f",
            "qcow2",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
            "qcow2-luks.img",
            "1M",
        ],
    ),
    ("qcow1", &["-f", "qcow", "qcow1.img", "1M"]),
    (
        "luks",
        &[
            SECRET,
            "-f",
            "luks",
            "-o",
            "key-secret=s0,iter-time=10",
            "luks.img",
            "1M",
        ],
    ),
    (
        "vmdk-monolithicSparse",
        &["-f", "vmdk", "vmdk-monolithicSparse.img", "1M"],
    ),
    (
        "vmdk-streamOptimized",
        &[
            "-f",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            "vmdk-streamOptimized.img",
            "1M",
        ],
    ),
    (
        "vmdk-monolithicFlat",
        &[
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            "vmdk-monolithicFlat.img",
            "1M",
        ],
    ),
    (
        "vmdk-twoGbMaxExtentSparse",
        &[
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "vmdk-twoGbMaxExtentSparse.img",
            "1M",
        ],
    ),
    (
        "vmdk-twoGbMaxExtentFlat",
        &[
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentFlat",
            "vmdk-twoGbMaxExtentFlat.img",
            "1M",
        ],
    ),
    (
        "vmdk-backing",
        &[
            "-f",
            "vmdk",
            "-b",
            "vmdk-monolithicSparse.img",
            "-F",
            "vmdk",
            "vmdk-backing.img",
        ],
    ),
    ("vpc-dynamic", &["-f", "vpc", "vpc-dynamic.img", "1M"]),
    (
        "vpc-fixed",
        &["-f", "vpc", "-o", "subformat=fixed", "vpc-fixed.img", "1M"],
    ),
    (
        "vpc-force-size",
        &[
            "-f",
            "vpc",
            "-o",
            "force_size=on",
            "vpc-force-size.img",
            "1M",
        ],
    ),
    ("vhdx-dynamic", &["-f", "vhdx", "vhdx-dynamic.img", "1M"]),
    (
        "vhdx-fixed",
        &[
            "-f",
            "vhdx",
            "-o",
            "subformat=fixed",
            "vhdx-fixed.img",
            "1M",
        ],
    ),
    ("vdi-dynamic", &["-f", "vdi", "vdi-dynamic.img", "1M"]),
    (
        "vdi-static",
        &["-f", "vdi", "-o", "static=on", "vdi-static.img", "1M"],
    ),
    ("qed", &["-f", "qed", "qed.img", "1M"]),
    (
        "qed-backing",
        &["-f", "qed", "-b", "raw.img", "-F", "raw", "qed-backing.img"],
    ),
    ("parallels", &["-f", "parallels", "parallels.img", "1M"]),
];

/// The secret of the encrypted builds.
const SECRET: &str = "--object=secret,id=s0,data=oslo";

/// Write every [`QEMU_BUILDS`] image into `dir` with the installed
/// qemu-img (small sizes: upstream drivers may read each to its end).
pub fn qemu_built(dir: &Path) -> Result<Vec<Image>, String> {
    let mut out = Vec::new();
    for (name, args) in QEMU_BUILDS {
        let mut argv: Vec<&str> = vec!["create", "-q"];
        argv.extend_from_slice(args);
        let st = Command::new("qemu-img")
            .args(&argv)
            .current_dir(dir)
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| format!("qemu-img: {e}"))?;
        if !st.success() {
            return Err(format!("qemu-img {argv:?} failed"));
        }
        let file = args
            .iter()
            .rev()
            .find(|a| a.ends_with(".img"))
            .ok_or_else(|| format!("build {name} names no .img"))?;
        out.push(Image {
            id: format!("qemu/{name}"),
            path: dir.join(file),
            fixed: true,
        });
    }
    Ok(out)
}

/// Disk images Debian packages ship (path, package): hybrid ISO 9660 +
/// MBR boot images (the form of most distribution ISOs) and the boot
/// code templates their makers use. `.ci/run` installs the packages.
pub const DISTRIBUTION: [(&str, &str); 7] = [
    ("/usr/lib/ipxe/ipxe.iso", "ipxe"),
    ("/usr/lib/memtest86+/memtest86+x64.iso", "memtest86+"),
    ("/usr/lib/memtest86+/memtest86+ia32.iso", "memtest86+"),
    ("/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux"),
    ("/usr/lib/ISOLINUX/isolinux.bin", "isolinux"),
    ("/usr/lib/syslinux/mbr/mbr.bin", "syslinux-common"),
    ("/usr/lib/syslinux/mbr/gptmbr.bin", "syslinux-common"),
];

/// The [`DISTRIBUTION`] images installed here (`debian/<package>/<file>`);
/// under CI a missing one is an error naming its package.
pub fn distribution() -> Result<Vec<Image>, String> {
    let mut out = Vec::new();
    for (path, package) in DISTRIBUTION {
        let p = Path::new(path);
        if !p.is_file() {
            if std::env::var_os("CI").is_some() {
                return Err(format!(
                    "{path} is required in CI (apt-get install {package})"
                ));
            }
            continue;
        }
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        out.push(Image {
            id: format!("debian/{package}/{}", name.unwrap_or_default()),
            path: p.to_path_buf(),
            fixed: true,
        });
    }
    Ok(out)
}

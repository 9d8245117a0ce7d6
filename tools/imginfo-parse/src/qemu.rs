//! Running `qemu-img info --output=json` through common's executor.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;
use system::exec::{Exec, ExecError};

/// How to call qemu-img.
#[derive(Debug, Clone)]
pub struct QemuOpts {
    /// The program (`qemu-img`, or a path).
    pub program: OsString,
    /// `-f FMT`: the format, so qemu does not probe.
    pub format: Option<String>,
    /// `--backing-chain`.
    pub backing_chain: bool,
    /// `-U`: read images other processes hold open.
    pub force_share: bool,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// CPU seconds.
    pub cpu_limit: Option<u64>,
    /// Address space bytes.
    pub address_space: Option<u64>,
}

/// qemu treats a name with a `:` before any `/` as a protocol
/// (`nbd:`, `http://`, `json:{...}`), and one starting with `-` as an
/// option. A record's `path` is a local file, so such names get a `./`.
pub fn local_path_arg(path: &str) -> String {
    let colon_first = match (path.find(':'), path.find('/')) {
        (Some(c), Some(s)) => c < s,
        (Some(_), None) => true,
        _ => false,
    };
    if path.starts_with('-') || colon_first {
        format!("./{path}")
    } else {
        path.to_owned()
    }
}

/// [`local_path_arg`] on a name that may not be UTF-8.
pub fn local_path_arg_os(path: &Path) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    let b = path.as_os_str().as_bytes();
    let colon = b.iter().position(|&c| c == b':');
    let slash = b.iter().position(|&c| c == b'/');
    let colon_first = match (colon, slash) {
        (Some(c), Some(s)) => c < s,
        (Some(_), None) => true,
        _ => false,
    };
    if b.starts_with(b"-") || colon_first {
        let mut o = OsString::from("./");
        o.push(path.as_os_str());
        o
    } else {
        path.as_os_str().to_owned()
    }
}

/// Whether a filename qemu reports is a plain local path (not `json:` or a
/// protocol URL), so it can be a record's `path`.
pub fn is_local_path(name: &str) -> bool {
    local_path_arg(name) == name || name.starts_with("./")
}

/// Run qemu-img info on one local file.
pub fn info(opts: &QemuOpts, path: &Path) -> Result<Vec<u8>, ExecError> {
    let mut ex = Exec::new(&opts.program).args(["info", "--output=json"]);
    if let Some(f) = &opts.format {
        ex = ex.args(["-f", f]);
    }
    if opts.backing_chain {
        ex = ex.arg("--backing-chain");
    }
    if opts.force_share {
        ex = ex.arg("-U");
    }
    ex.arg(local_path_arg_os(path))
        .timeout(opts.timeout)
        .cpu_limit(opts.cpu_limit)
        .address_space_limit(opts.address_space)
        .run()
        .map(|o| o.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_looking_names_become_local() {
        assert_eq!(local_path_arg("a.qcow2"), "a.qcow2");
        assert_eq!(local_path_arg("/abs/x:y"), "/abs/x:y");
        assert_eq!(local_path_arg("dir/x:y"), "dir/x:y");
        assert_eq!(
            local_path_arg("json:{\"driver\":\"raw\"}"),
            "./json:{\"driver\":\"raw\"}"
        );
        assert_eq!(local_path_arg("nbd://host/x"), "./nbd://host/x");
        assert_eq!(local_path_arg("-f"), "./-f");
        assert_eq!(local_path_arg_os(Path::new("-f")), "./-f");
        assert_eq!(local_path_arg_os(Path::new("a/b:c")), "a/b:c");
        assert!(is_local_path("chain/mid.qcow2"));
        assert!(!is_local_path("http://example.invalid/x"));
        assert!(!is_local_path("json:{}"));
    }
}

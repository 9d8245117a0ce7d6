//! Development aid: print what the native probe says about each FILE, one
//! JSON line per file (`cargo run -p image-tools-formats --example probe -- FILE...`).
#![allow(clippy::print_stderr)]

use formats::{FileSource, probe};
use std::io::Write;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let forced = match args.first().map(String::as_str) {
        Some("-f") if args.len() > 1 => {
            let f = args[1].clone();
            args.drain(..2);
            Some(f)
        }
        _ => None,
    };
    for a in args {
        match FileSource::open(std::path::Path::new(&a)) {
            Ok(src) => match probe(&src, &a, forced.as_deref()) {
                Ok(p) => {
                    let line = serde_json::Value::Object(p.to_info()).to_string();
                    // A closed pipe ends the listing quietly.
                    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("{a}: {e}"),
            },
            Err(e) => eprintln!("{a}: {e}"),
        }
    }
}

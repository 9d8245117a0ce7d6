//! Test hooks: named points between two steps of a walk or a change where
//! a test makes the world change (swap a file for a link, replace a
//! directory) deterministically, instead of racing by timing luck.
//!
//! At point `a.b_c`, when `IMAGE_TOOLS_TEST_HOOK_A_B_C` is set, its value
//! runs as a shell command and the tool waits for it. Unset (every real
//! run), a point costs one environment lookup. The hooks change nothing a
//! user could not change between the same two steps; they make the timing
//! exact.

/// The environment variable for point `name`.
pub fn var_name(name: &str) -> String {
    let mut v = String::from("IMAGE_TOOLS_TEST_HOOK_");
    v.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    v
}

/// Run the hook of point `name`, if a test set one.
pub fn point(name: &str) {
    if let Some(cmd) = std::env::var_os(var_name(name)) {
        // A hook that fails to run is the test's failure, seen in its
        // results; the tool goes on as it would.
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(
            super::var_name("tree.before_unlink"),
            "IMAGE_TOOLS_TEST_HOOK_TREE_BEFORE_UNLINK"
        );
    }
}

//! Helpers shared by the unit tests: whether this process has the privileges a test needs.
//! Outside CI a test that needs root is skipped with a line on stderr; under `CI=true` it fails.

/// True when running as root. Otherwise reports the skip (written to stderr directly, which
/// libtest does not capture) and returns false, or fails the test when `CI=true`.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test needs root, and under CI=true nothing may be skipped"
    );
    use std::io::Write;
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(
        std::io::stderr(),
        "skipped {name}: needs root (loop devices, root-owned files, trusted.* xattrs)"
    );
    false
}

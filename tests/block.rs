//! Block mode on a host kernel without device-mapper (this CI host): every entry point must say
//! so clearly, point to file mode, and leave nothing behind. Real dm-crypt runs in tests/vm.

mod common;

use std::path::Path;
use std::process::Command;

/// /proc/misc tells the truth: installing dmsetup or lvm2 creates /dev/mapper/control even
/// on a kernel without device-mapper.
fn has_device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc").is_ok_and(|t| t.contains(" device-mapper"))
}

/// Skips on a kernel that has device-mapper (there, these paths go further and tests/vm covers
/// them) — but never silently in CI, whose host is known to have none: there a skip fails.
macro_rules! require_no_device_mapper {
    () => {
        common::require_root();
        if has_device_mapper() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "this CI host has device-mapper: these tests would skip; run block mode in tests/vm"
            );
            eprintln!("skipped: this kernel has device-mapper; tests/vm/run.sh covers block mode");
            return;
        }
    };
}

#[test]
fn block_open_without_device_mapper_fails_clearly_and_creates_nothing() {
    if !common::can_mount() {
        return;
    }
    require_no_device_mapper!();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img");
    let key = dir.path().join("key");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = common::secretfs(&[
        "block",
        "open",
        img.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "--size",
        "64M",
        "--key",
        &format!("keyfile:{}", key.display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no device-mapper"), "{err}");
    assert!(err.contains("hint:") && err.contains("file mode"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    assert!(!img.exists(), "the file target was created");
    assert!(!key.exists(), "the key file was created");
}

#[test]
fn block_close_and_status_without_device_mapper() {
    if !common::can_mount() {
        return;
    }
    require_no_device_mapper!();
    let out = common::secretfs(&["block", "close", "/mnt/nothing-here"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("no device-mapper"), "{err}");
    let out = common::secretfs(&["block", "status", "secretfs-none"]);
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn fstab_mode_block_without_device_mapper_fails_clearly() {
    if !common::can_mount() {
        return;
    }
    require_no_device_mapper!();
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("mount.secretfs");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_secretfs"), &helper).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(&helper)
        .args([
            "/dev/nonexistent-disk",
            mnt.to_str().unwrap(),
            "-o",
            "mode=block,key=keyfile:/nonexistent/key",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{err}");
    assert!(err.contains("no device-mapper"), "{err}");
}

#[test]
fn block_open_rejects_bad_sizes_before_anything() {
    let out = common::secretfs(&["block", "open", "/tmp/x.img", "/tmp", "--size", "1M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at least 32M"), "{err}");
    let out = common::secretfs(&["mount", "/tmp", "/tmp", "-o", "mode=block"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("secretfs block open"), "{err}");
}

#[test]
fn block_open_as_non_root_says_so() {
    if !common::can_mount() {
        return;
    }
    common::require_root();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_secretfs"))
        .args(["block", "open", "/tmp/never.img", "/tmp", "--size", "64M"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("must run as root") && err.contains("sudo"),
        "{err}"
    );
    assert!(!Path::new("/tmp/never.img").exists());
}

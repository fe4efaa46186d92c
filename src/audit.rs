//! Structured audit events: unlock, mount, unmount and integrity failures, emitted as tracing
//! events under the `secretfs::audit` target so they can be shipped and matched (e.g. CloudTrail).

use tracing::{error, info};

pub const TARGET: &str = "secretfs::audit";

pub fn unlocked(fs_id: &str, key_source: &str) {
    info!(target: TARGET, event = "unlock", fs_id, key_source, "master key unlocked");
}

pub fn mounted(fs_id: &str, backing: &str, mountpoint: &str) {
    info!(target: TARGET, event = "mount", fs_id, backing, mountpoint, "filesystem mounted");
}

pub fn unmounted(fs_id: &str, mountpoint: &str) {
    info!(target: TARGET, event = "unmount", fs_id, mountpoint, "filesystem unmounted");
}

/// A block, header, name or xattr failed authentication: the caller got EIO.
pub fn integrity_failure(what: &str, ino: u64, detail: &str) {
    error!(target: TARGET, event = "integrity_failure", what, ino, detail, "authentication failed; returned EIO");
}

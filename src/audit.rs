//! Structured audit events: unlock, mount, unmount and integrity failures, emitted as tracing
//! events under the `secretfs::audit` target so they can be shipped and matched (e.g. CloudTrail).

use tracing::{error, info, warn};

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

/// One KMS call made for a filesystem (GenerateDataKey, Decrypt, ReEncrypt): the request id
/// matches the CloudTrail record, the outcome is "ok" or the error's one-line message.
pub fn kms_call(
    fs_id: &str,
    slot: Option<u32>,
    operation: &str,
    kms_key: &str,
    request_id: Option<&str>,
    outcome: &str,
) {
    let request_id = request_id.unwrap_or("");
    if outcome == "ok" {
        info!(target: TARGET, event = "kms", fs_id, slot, operation, kms_key, request_id, outcome, "KMS call");
    } else {
        error!(target: TARGET, event = "kms", fs_id, slot, operation, kms_key, request_id, outcome, "KMS call failed");
    }
}

/// One attempt to open a filesystem with one key slot, in the order the mount tried them:
/// `outcome` is "ok", "skipped: why" or the failure's message.
pub fn slot_attempt(fs_id: &str, slot: u32, key_source: &str, key: &str, outcome: &str) {
    if outcome == "ok" {
        info!(target: TARGET, event = "slot", fs_id, slot, key_source, key, outcome, "key slot opened the filesystem");
    } else {
        warn!(target: TARGET, event = "slot", fs_id, slot, key_source, key, outcome, "key slot did not open the filesystem");
    }
}

/// A key slot was added to or removed from a filesystem.
pub fn slot_changed(fs_id: &str, change: &str, slot: u32, key_source: &str, key: &str) {
    info!(target: TARGET, event = "key_slot", fs_id, change, slot, key_source, key, outcome = "ok", "key slots changed");
}

/// The wrapped key of a filesystem now sits under another KMS key.
pub fn rewrapped(fs_id: &str, old_key: &str, new_key: &str) {
    info!(target: TARGET, event = "rewrap", fs_id, old_key, new_key, outcome = "ok", "wrapped key moved to a new KMS key");
}

/// A block, header, name or xattr failed authentication: the caller got EIO.
pub fn integrity_failure(what: &str, ino: u64, detail: &str) {
    error!(target: TARGET, event = "integrity_failure", what, ino, detail, "authentication failed; returned EIO");
}

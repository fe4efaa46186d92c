//! Key pins: what this host trusts about each filesystem's key, kept outside the backing store
//! in root-owned files, so that editing the store alone can never choose the key a mount uses.
//!
//! A pin is written by `init`, by `secretfs pin` after the key named on its command line has
//! opened the store (MAC checked), and by the first mount that names its key explicitly. A mount
//! without `--key` takes the key source from the pin, never from the store's config; a config
//! whose key source differs from the pin is refused before anything is touched.

use crate::store::config::{FsConfig, KeySlot, KeySourceDescriptor};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where pins live: one JSON file per filesystem id.
pub const PIN_DIR: &str = "/etc/secretfs/pins";
/// A pin holds at most every slot of a config (bounded by MAX_CONFIG_LEN), one more descriptor
/// and a path: twice the config's bound leaves room for all of it.
const MAX_PIN_LEN: usize = 2 * crate::store::config::MAX_CONFIG_LEN;

/// The trusted facts about one filesystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub fs_id: uuid::Uuid,
    /// The canonical backing directory it was pinned for: another store moved here (or this
    /// one moved elsewhere) needs a new pin.
    pub backing: PathBuf,
    /// The key source, exactly as the authenticated config held it when pinned (with slots:
    /// the first slot's, for people who read the pin; `slots` is what is trusted).
    pub key_source: KeySourceDescriptor,
    /// The trusted key slots of a format-2 filesystem, each exactly as the authenticated config
    /// held it; absent for a one-key filesystem (its slot 0 is `key_source`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<KeySlot>,
}

impl Pin {
    /// The pin of an authenticated config: every slot it has now.
    pub fn of(config: &FsConfig, backing: &Path) -> Pin {
        Pin {
            fs_id: config.fs_id,
            backing: backing.to_path_buf(),
            key_source: config.primary().clone(),
            slots: if config.is_slotted() {
                config.slots()
            } else {
                Vec::new()
            },
        }
    }

    /// The slots this host trusts; a pin made before slots existed trusts slot 0 alone.
    pub fn slots(&self) -> Vec<KeySlot> {
        if self.slots.is_empty() {
            vec![KeySlot::direct(0, self.key_source.clone())]
        } else {
            self.slots.clone()
        }
    }

    /// Whether `slot` of a config is exactly one this host pinned (same id, source, placement
    /// and wrapped key): a slot the store added or changed on its own is never tried.
    pub fn trusts(&self, slot: &KeySlot) -> bool {
        self.slots().iter().any(|p| p == slot)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("the pin {path} cannot be trusted: {reason}")]
    Untrusted { path: PathBuf, reason: String },
    #[error("cannot read the pin {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot write the pin {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

pub fn pin_path(dir: &Path, fs_id: &uuid::Uuid) -> PathBuf {
    dir.join(format!("{fs_id}.json"))
}

/// Owned by root and writable by nobody else: anything else could have been planted. Checked
/// on the open descriptor, so it is the object that is then read.
fn check_owner(path: &Path, fd: &impl AsRawFd) -> Result<(), PinError> {
    let st = crate::sys::fstat(fd.as_raw_fd()).map_err(|source| PinError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(PinError::Untrusted {
            path: path.to_path_buf(),
            reason: format!(
                "owned by uid {} with mode {:o}; it must be root's and writable by root alone",
                st.st_uid,
                st.st_mode & 0o7777
            ),
        });
    }
    Ok(())
}

/// The pin of `fs_id` in `dir`, if any. A pin that exists but cannot be trusted (wrong owner,
/// writable by others, not a regular file, malformed, naming another filesystem) is an error.
pub fn load(dir: &Path, fs_id: &uuid::Uuid) -> Result<Option<Pin>, PinError> {
    let path = pin_path(dir, fs_id);
    let untrusted = |reason: String| PinError::Untrusted {
        path: path.clone(),
        reason,
    };
    let root = match crate::store::confined::open_root(dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PinError::Io { path, source }),
    };
    check_owner(dir, &root)?;
    let name = std::ffi::CString::new(format!("{fs_id}.json"))
        .map_err(|_| untrusted("bad name".into()))?;
    let fd = match crate::store::confined::open_regular(root.as_raw_fd(), &name) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if crate::store::confined::is_hostile(&e) => return Err(untrusted(e.to_string())),
        Err(source) => return Err(PinError::Io { path, source }),
    };
    check_owner(&path, &fd)?;
    let bytes = crate::store::confined::read_fd_bounded(fd.as_raw_fd(), MAX_PIN_LEN)
        .map_err(|e| untrusted(e.to_string()))?;
    let pin: Pin = serde_json::from_slice(&bytes).map_err(|e| untrusted(e.to_string()))?;
    if pin.fs_id != *fs_id {
        return Err(untrusted(format!("it names filesystem {}", pin.fs_id)));
    }
    Ok(Some(pin))
}

/// Writes (or replaces) the pin, creating the directory 0755 and the file 0644: a pin holds no
/// secret, and `status` may read it as any user.
pub fn store(dir: &Path, pin: &Pin) -> Result<(), PinError> {
    use std::os::unix::fs::DirBuilderExt;
    let path = pin_path(dir, &pin.fs_id);
    let write_error = |source| PinError::Write {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(write_error)?;
    check_owner(
        dir,
        &crate::store::confined::open_root(dir).map_err(write_error)?,
    )?;
    let mut json = serde_json::to_vec_pretty(pin).map_err(|e| write_error(io::Error::other(e)))?;
    json.push(b'\n');
    if json.len() > MAX_PIN_LEN {
        return Err(write_error(io::Error::other(format!(
            "the pin would be {} bytes, over the {MAX_PIN_LEN}-byte limit",
            json.len()
        ))));
    }
    crate::store::config::write_atomically(&path, &json, 0o644).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pin() -> Pin {
        Pin {
            fs_id: uuid::Uuid::from_bytes([7; 16]),
            backing: PathBuf::from("/var/lib/secretfs"),
            key_source: KeySourceDescriptor::Keyfile {
                path: PathBuf::from("/etc/secretfs/key"),
            },
            slots: Vec::new(),
        }
    }

    #[test]
    fn a_stored_pin_loads_back_and_a_missing_one_is_none() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins");
        let p = pin();
        assert!(load(&pins, &p.fs_id).unwrap().is_none());
        store(&pins, &p).unwrap();
        assert_eq!(load(&pins, &p.fs_id).unwrap(), Some(p.clone()));
        assert!(load(&pins, &uuid::Uuid::from_bytes([8; 16]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn pins_writable_by_others_symlinked_or_renamed_are_untrusted() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins");
        let p = pin();
        store(&pins, &p).unwrap();
        let file = pin_path(&pins, &p.fs_id);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            load(&pins, &p.fs_id),
            Err(PinError::Untrusted { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

        // Another filesystem's pin copied under this id.
        let other = uuid::Uuid::from_bytes([9; 16]);
        std::fs::copy(&file, pin_path(&pins, &other)).unwrap();
        assert!(matches!(
            load(&pins, &other),
            Err(PinError::Untrusted { .. })
        ));

        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(pin_path(&pins, &other), &file).unwrap();
        assert!(matches!(
            load(&pins, &p.fs_id),
            Err(PinError::Untrusted { .. })
        ));
    }
}

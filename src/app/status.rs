//! Status: what a mount point or backing store is (mounted or not, mode, cipher, filesystem
//! id, key source and daemon), and the list of every secretfs mount on the host, both modes.

use super::{Error, Result};
use crate::store::config;
use crate::{daemon, mounts};
use std::path::{Path, PathBuf};

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub path: PathBuf,
    pub mounted: bool,
    pub mode: &'static str,
    pub mountpoint: Option<PathBuf>,
    pub backing: PathBuf,
    pub fs_id: Option<String>,
    pub cipher: Option<String>,
    pub key_source: Option<String>,
    pub daemon_pid: Option<u32>,
}

pub fn collect(path: &Path) -> Result<Status> {
    let path = std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let (mountpoint, backing) = match mounts::at(&path).filter(|m| m.fstype == mounts::FUSE_TYPE) {
        Some(m) => (Some(path.clone()), PathBuf::from(m.source)),
        None => (mounts::serving(&path).map(|m| m.mountpoint), path.clone()),
    };
    let loaded = config::load(&backing).ok().map(|(c, _)| c);
    if mountpoint.is_none() && loaded.is_none() {
        return Err(Error::not_mounted(format!(
            "{} is neither a secretfs mount nor a backing store",
            path.display()
        )));
    }
    let state = mountpoint.as_deref().and_then(daemon::read_state);
    Ok(Status {
        path,
        mounted: mountpoint.is_some(),
        mode: "file",
        daemon_pid: state
            .as_ref()
            .map(|s| s.pid)
            .filter(|p| daemon::pid_alive(*p)),
        mountpoint,
        backing,
        fs_id: loaded.as_ref().map(|c| c.fs_id.to_string()),
        // The daemon knows best: a benchmark build may serve the config's fs without its cipher.
        cipher: state
            .as_ref()
            .and_then(|s| s.cipher.clone())
            .or_else(|| loaded.as_ref().map(|c| c.cipher.clone())),
        key_source: loaded.as_ref().map(describe_slots),
    })
}

/// One secretfs mount on this host, as `secretfs status` without a path lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountLine {
    /// None for a block volume that is open but mounted nowhere.
    pub mountpoint: Option<PathBuf>,
    pub mode: &'static str,
    /// The backing directory (file mode); the loop device's backing file, else the device
    /// (block mode).
    pub source: PathBuf,
    /// The filesystem id (file mode) or the LUKS UUID (block mode); None when unreadable.
    pub id: Option<String>,
    pub key_source: Option<String>,
}

/// Every secretfs mount: file mode from the kernel's mount table, block mode from the open
/// mappings (a volume mounted twice gives two lines, as findmnt does).
pub fn list() -> Vec<MountLine> {
    let mut lines: Vec<MountLine> = mounts::all()
        .into_iter()
        .filter(|m| m.fstype == mounts::FUSE_TYPE)
        .map(|m| {
            // A store this user cannot read still gets its line, with what the kernel knows.
            let s = collect(&m.mountpoint).ok();
            MountLine {
                mountpoint: Some(m.mountpoint),
                mode: "file",
                source: PathBuf::from(&m.source),
                id: s.as_ref().and_then(|s| s.fs_id.clone()),
                key_source: s.and_then(|s| s.key_source),
            }
        })
        .collect();
    for name in crate::block::open_names() {
        let Some(b) = crate::block::status(&name) else {
            continue;
        };
        let line = MountLine {
            mountpoint: None,
            mode: "block",
            source: b
                .backing_file
                .clone()
                .or_else(|| b.device.clone())
                .unwrap_or_else(|| b.mapper.clone()),
            id: Some(b.uuid.clone()),
            key_source: b.key_source.as_ref().map(describe_key),
        };
        if b.mountpoints.is_empty() {
            lines.push(line);
            continue;
        }
        for m in b.mountpoints {
            lines.push(MountLine {
                mountpoint: Some(m),
                ..line.clone()
            });
        }
    }
    lines
}

/// One key source, or every slot of a filesystem that has several (`slot 0: kms (…); …`).
pub fn describe_slots(config: &config::FsConfig) -> String {
    if !config.is_slotted() {
        return describe_key(config.primary());
    }
    config
        .slots()
        .iter()
        .map(|s| format!("slot {}: {}", s.id, describe_key(&s.source)))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn describe_key(k: &config::KeySourceDescriptor) -> String {
    match k {
        config::KeySourceDescriptor::Keyfile { path } => format!("keyfile ({})", path.display()),
        config::KeySourceDescriptor::Kms {
            key_id,
            key_arn,
            s3_uri,
            ..
        } => format!(
            "kms ({}{})",
            key_arn.as_deref().unwrap_or(key_id),
            s3_uri
                .as_deref()
                .map(|u| format!(", {u}"))
                .unwrap_or_default()
        ),
        config::KeySourceDescriptor::KmsPassword { s3_uri, .. } => {
            format!("kms-password ({s3_uri})")
        }
        other => other.kind().to_string(),
    }
}

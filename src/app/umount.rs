//! Unmounting file mode: detach a mounted secretfs and wait until its daemon has exited, so that
//! a new mount at the same path cannot be hit by the old session's teardown.

use super::{Error, Result};
use crate::{daemon, mounts};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A dead daemon leaves a mount whose path cannot be resolved (ENOTCONN): fall back to the
/// lexical absolute path so it can still be cleaned up.
fn mount_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Detaches the mount at `mountpoint` (lazily: even with files open, as umount -l).
pub fn run(mountpoint: &Path, lazy: bool) -> Result<()> {
    let mountpoint = mount_path(mountpoint);
    match mounts::at(&mountpoint) {
        Some(m) if m.fstype == mounts::FUSE_TYPE => {}
        _ => {
            return Err(Error::not_mounted(format!(
                "{} is not a mounted secretfs",
                mountpoint.display()
            )))
        }
    }
    let state = daemon::read_state(&mountpoint);
    if let Err(e) = crate::fs::kmount::unmount(&mountpoint, lazy) {
        let err = Error::not_mounted(format!("cannot unmount {}: {e}", mountpoint.display()));
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => err.hint(format!(
                "files are open under it (see `fuser -vm {}`); close them or use --lazy",
                mountpoint.display()
            )),
            _ => err,
        });
    }
    if let Some(state) = state {
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon::pid_alive(state.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if daemon::pid_alive(state.pid) {
            return Err(Error::failure(format!(
                "unmounted, but daemon {} has not exited after 30 s",
                state.pid
            )));
        }
        daemon::remove_state(&mountpoint);
    }
    Ok(())
}

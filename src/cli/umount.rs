//! `secretfs umount`: detach a mounted secretfs and wait until its daemon has exited, so that a
//! new mount at the same path cannot be hit by the old session's teardown.

use super::{exit, CliError};
use crate::{daemon, mounts};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// Mount point to detach.
    pub mountpoint: PathBuf,
    /// Detach lazily even if files are still open (umount -l).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

/// A dead daemon leaves a mount whose path cannot be resolved (ENOTCONN): fall back to the
/// lexical absolute path so it can still be cleaned up.
fn mount_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

pub fn run(args: &UmountArgs) -> Result<(), CliError> {
    let mountpoint = mount_path(&args.mountpoint);
    match mounts::at(&mountpoint) {
        Some(m) if m.fstype == mounts::FUSE_TYPE => {}
        _ => {
            return Err(CliError::new(
                exit::NOT_MOUNTED,
                format!("{} is not a mounted secretfs", mountpoint.display()),
            ))
        }
    }
    let state = daemon::read_state(&mountpoint);
    if let Err(e) = crate::fs::kmount::unmount(&mountpoint, args.lazy) {
        let err = CliError::new(
            exit::NOT_MOUNTED,
            format!("cannot unmount {}: {e}", mountpoint.display()),
        );
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
            return Err(CliError::new(
                exit::FAILURE,
                format!(
                    "unmounted, but daemon {} has not exited after 30 s",
                    state.pid
                ),
            ));
        }
        daemon::remove_state(&mountpoint);
    }
    Ok(())
}

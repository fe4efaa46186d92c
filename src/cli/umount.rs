//! `secretfs umount`: its arguments; the unmount and the wait for the daemon are in
//! `app::umount`.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// Mount point to detach.
    pub mountpoint: PathBuf,
    /// Detach lazily even if files are still open (umount -l).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

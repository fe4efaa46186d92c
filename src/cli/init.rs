//! `secretfs init`: its arguments, handed to `app::init` as a request.

use super::KeyArgs;
use crate::app::init::InitRequest;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Backing directory that will hold the encrypted files (created if missing; must be empty).
    pub backing: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Replace an existing S3 object named by --wrapped-key.
    #[arg(long)]
    pub force: bool,
    /// Also create a recovery key (printed once: write it down) as a second slot, for when the
    /// main key is lost, disabled or unreachable. Recommended.
    #[arg(long)]
    pub recovery: bool,
}

impl InitArgs {
    pub fn request(&self) -> InitRequest {
        InitRequest {
            backing: self.backing.clone(),
            key: self.key.choice(),
            force: self.force,
            recovery: self.recovery,
        }
    }
}

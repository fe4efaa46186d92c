//! `secretfs pin`: its arguments, handed to `app::pin` as a request.

use super::KeyArgs;
use crate::app::pin::PinRequest;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// Backing directory of an existing filesystem.
    pub backing: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
}

impl PinArgs {
    pub fn request(&self) -> PinRequest {
        PinRequest {
            backing: self.backing.clone(),
            key: self.key.choice(),
        }
    }
}

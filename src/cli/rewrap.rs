//! `secretfs rewrap`: its arguments, handed to `app::rewrap` as a request.

use super::AwsArgs;
use crate::app::rewrap::RewrapRequest;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    /// Backing directory of a filesystem created with --key kms or kms-password.
    pub backing: PathBuf,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// The KMS slot to rewrap, when the filesystem has several (see `secretfs key list`).
    #[arg(long, value_name = "N")]
    pub slot: Option<u32>,
}

impl RewrapArgs {
    pub fn request(&self) -> RewrapRequest {
        RewrapRequest {
            backing: self.backing.clone(),
            aws: self.aws.choice(),
            slot: self.slot,
        }
    }
}

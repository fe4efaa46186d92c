//! `secretfs mount`: its arguments and options, handed to `app::mount` (plan, then start).

use super::{CliError, KeyArgs, SlotArgs};
use crate::app::{self, mount};
use crate::mountopts::MountOptions;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// Backing directory made by `secretfs init`.
    pub backing: PathBuf,
    /// Where the decrypted view appears.
    pub mountpoint: PathBuf,
    /// Serve in the foreground (logs on stderr) instead of returning once mounted.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Mount options, comma-separated (key=, ro, allow_other, threads=N, writeback, log=FILE, …).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub slot: SlotArgs,
    /// Benchmarks only: serve a fresh ephemeral filesystem with the identity codec, contents and
    /// names NOT encrypted (the FUSE-cost baseline). Hidden, and not an option at all (always
    /// false) in builds without the feature, so a release binary rejects it as unknown.
    #[cfg_attr(feature = "passthrough-control", arg(long, hide = true))]
    #[cfg_attr(not(feature = "passthrough-control"), arg(skip))]
    pub passthrough_control: bool,
}

pub fn run(args: &MountArgs) -> Result<(), CliError> {
    let opts = MountOptions::parse(args.options.iter().map(String::as_str))
        .map_err(|e| app::Error::usage(e.to_string()))?;
    let plan = mount::plan(
        &args.backing,
        &args.mountpoint,
        &args.slot.apply(args.key.choice()),
        opts,
        args.foreground,
    )?;
    let plan = match args.passthrough_control {
        true => mount::passthrough_control(plan)?,
        false => plan,
    };
    Ok(mount::start(plan)?)
}

//! `secretfs fsck`: its arguments, the report as text or JSON with progress on a terminal, and
//! fsck(8)'s exit codes (clean, all repaired, problems left, could not run).

use super::{CliError, KeyArgs, SlotArgs};
use crate::app::fsck::{self, FsckRequest, Report};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub const EXIT_HELP: &str = "fsck exit codes (as fsck(8)):
  0  clean
  1  problems found and all repaired
  4  problems left (see the report)
  8  could not run (wrong key, missing backing store, mounted while --repair)";

/// fsck(8)'s "operational error": whatever stopped the check from running.
const COULD_NOT_RUN: i32 = 8;

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct FsckArgs {
    /// Backing directory to check.
    pub backing: PathBuf,
    /// Repair what is safe: leftover temporary entries, orphaned long-name side files, the
    /// missing id of an empty directory. Never touches file contents.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub slot: SlotArgs,
}

/// Runs fsck and returns the fsck(8)-style exit code; errors that stop it map to 8.
pub fn run(args: &FsckArgs) -> Result<i32, CliError> {
    let request = FsckRequest {
        backing: args.backing.clone(),
        key: args.slot.apply(args.key.choice()),
        repair: args.repair,
    };
    let show_progress = std::io::stderr().is_terminal() && !args.json;
    let mut progress = |r: &Report| {
        if show_progress {
            eprint!(
                "\rchecked {} directories, {} files, {} blocks",
                r.directories, r.files, r.blocks
            );
            let _ = std::io::stderr().flush();
        }
    };
    let report = fsck::run(&request, &mut progress).map_err(|e| CliError {
        code: COULD_NOT_RUN,
        ..e.into()
    })?;
    if show_progress {
        eprintln!();
    }
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::new(COULD_NOT_RUN, e.to_string()))?;
        println!("{json}");
    } else {
        for p in &report.problems {
            let state = if p.repaired { "repaired" } else { "PROBLEM" };
            println!(
                "{state}: {} [{}] {} (backing: {})",
                p.path,
                p.kind,
                p.detail,
                p.backing.display()
            );
        }
        println!(
            "{}: {} directories, {} files, {} symlinks, {} blocks checked; {} problems ({} repaired)",
            std::fs::canonicalize(&args.backing)
                .unwrap_or_else(|_| args.backing.clone())
                .display(),
            report.directories,
            report.files,
            report.symlinks,
            report.blocks,
            report.problems.len(),
            report.problems.len() - report.unrepaired()
        );
    }
    Ok(if report.is_clean() {
        0
    } else if report.unrepaired() == 0 {
        1
    } else {
        4
    })
}

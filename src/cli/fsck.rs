//! `secretfs fsck`: verify every name, directory id and block of a backing store offline, print
//! each problem with its plaintext path, and optionally repair what is safe to repair.

use super::{exit, CliError, KeyArgs};
use crate::{fsck, mounts};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub const EXIT_HELP: &str = "fsck exit codes (as fsck(8)):
  0  clean
  1  problems found and all repaired
  4  problems left (see the report)
  8  could not run (wrong key, missing backing store, mounted while --repair)";

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
}

/// Runs fsck and returns the fsck(8)-style exit code; errors that stop it map to 8.
pub fn run(args: &FsckArgs) -> Result<i32, CliError> {
    let as_fsck_error = |e: CliError| CliError { code: 8, ..e };
    let backing = super::existing_dir(&args.backing, "backing directory", exit::BACKING)
        .map_err(as_fsck_error)?;
    if args.repair {
        if let Some(m) = mounts::serving(&backing) {
            return Err(CliError::new(
                8,
                format!(
                    "{} is mounted at {}; --repair needs it unmounted",
                    backing.display(),
                    m.mountpoint.display()
                ),
            )
            .hint(format!("secretfs umount {}", m.mountpoint.display())));
        }
    }
    crate::daemon::forbid_core_dumps();
    let (config, keys) = super::unlock(&backing, &args.key).map_err(as_fsck_error)?;
    let root_id = config.root_dir_id().map_err(|e| as_fsck_error(e.into()))?;
    let show_progress = std::io::stderr().is_terminal() && !args.json;
    let mut progress = |r: &fsck::Report| {
        if show_progress {
            eprint!(
                "\rchecked {} directories, {} files, {} blocks",
                r.directories, r.files, r.blocks
            );
            let _ = std::io::stderr().flush();
        }
    };
    let report = fsck::check(&backing, root_id, &keys, args.repair, &mut progress);
    if show_progress {
        eprintln!();
    }
    if args.json {
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| CliError::new(8, e.to_string()))?;
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
            backing.display(),
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

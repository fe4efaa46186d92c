//! `secretfs doctor`: its arguments and the output of `app::doctor`'s report, one line per
//! check (or JSON); the exit code is 0 when no check failed, 1 otherwise.

use crate::app::doctor::{DoctorRequest, Report, Status};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The fstab whose secretfs lines are checked.
    #[arg(long, value_name = "PATH", default_value = "/etc/fstab")]
    pub fstab: PathBuf,
    /// The directory of key pins.
    #[arg(long, value_name = "DIR", default_value = crate::keysource::pins::PIN_DIR)]
    pub pins: PathBuf,
    /// Where the mount(8) helpers must be (mount(8) looks nowhere else).
    #[arg(long, value_name = "DIR", default_value = "/sbin")]
    pub sbin: PathBuf,
    /// The bound on each network check (credentials, each KMS key and S3 object).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
}

/// Exit status of doctor, in `--help`.
pub const EXIT_HELP: &str =
    "Exit status: 0 when no check failed (warnings allowed), 1 when one did.";

/// Runs the checks, prints them and returns the exit code.
pub fn run(args: &DoctorArgs) -> Result<i32, super::CliError> {
    let report = crate::app::doctor::run(&DoctorRequest {
        fstab: args.fstab.clone(),
        pins: args.pins.clone(),
        sbin: args.sbin.clone(),
        timeout: Duration::from_secs(args.timeout),
    });
    super::print_report(&report, args.json, render)?;
    Ok(if report.ok {
        super::exit::OK
    } else {
        super::exit::FAILURE
    })
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        out += &format!("{status:<4}  {}: {}", c.name, c.message);
        if let Some(fix) = &c.fix {
            out += &format!("; fix: {fix}");
        }
        out.push('\n');
    }
    out += &format!(
        "doctor: {} ok, {} warnings, {} failed\n",
        r.count(Status::Ok),
        r.count(Status::Warn),
        r.count(Status::Fail)
    );
    out
}

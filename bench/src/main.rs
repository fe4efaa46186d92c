//! `secretfs-bench`: the comparison benchmark's command line, its presets (full and `--quick`),
//! which secretfs binary it drives, and where the JSON, Markdown and SVG results are written.

use clap::Parser;
use secretfs::cli::{exit, parse_bytes, CliError};
use secretfs_bench::scale::ScaleOptions;
use secretfs_bench::systems::{self, System};
use secretfs_bench::workloads::{Sizes, GIB, MIB};
use secretfs_bench::{self as bench, chart, report, BenchError, Options, Store};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "secretfs-bench",
    version,
    about = "Compare file mode, block mode, plain and gocryptfs on the same workloads (as root)"
)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A smoke run in under 2 minutes: 64 MiB file, 2,000 random I/Os, 1,000 small files, a
    /// small tree, tmpfs only.
    #[arg(long)]
    pub quick: bool,
    /// Rounds per system (systems are interleaved round by round) [default: 3].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Size of the sequential file, also the span of the random I/O [default: 1G; quick 64M].
    #[arg(long, value_name = "N[K|M|G]", value_parser = parse_bytes)]
    pub size: Option<u64>,
    /// Random 4 KiB reads, and writes, per round [default: 20000; quick 2000].
    #[arg(long, value_name = "N")]
    pub rand_ops: Option<u32>,
    /// Number of 4 KiB small files [default: 10000; quick 1000].
    #[arg(long, value_name = "N")]
    pub files: Option<u32>,
    /// Source tree to untar: a directory (packed once) or a tar file [default: /usr/include;
    /// quick /usr/include/linux].
    #[arg(long, value_name = "PATH")]
    pub tree: Option<PathBuf>,
    /// Backing stores, comma-separated [default: tmpfs,disk; quick tmpfs].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub stores: Option<Vec<StoreArg>>,
    /// Systems, comma-separated; unavailable ones are skipped with the reason
    /// [default: plain,control,secretfs,secretfs-wb,block,gocryptfs].
    #[arg(long, value_delimiter = ',', value_parser = parse_system)]
    pub systems: Option<Vec<System>>,
    /// Where the disk store goes (a directory on a real disk).
    #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
    pub disk_dir: PathBuf,
    /// Untar + delete cycles watching each daemon's memory [default: 10; quick 3].
    #[arg(long, value_name = "N")]
    pub rss_rounds: Option<u32>,
    /// Directory for results.json, results.md and chart.svg.
    #[arg(long, default_value = "bench-results", value_name = "DIR")]
    pub out: PathBuf,
    /// Run the scale benchmark instead: trees of 1,000 to --scale-files files created, stat'ed
    /// and removed, one directory of --dir-entries entries listed and looked up (tmpfs;
    /// secretfs, gocryptfs and plain unless --systems says otherwise). Writes scale.json and
    /// scale.md.
    #[arg(long)]
    pub scale: bool,
    /// Largest tree of the scale benchmark [default: 1000000; quick 10000].
    #[arg(long, value_name = "N")]
    pub scale_files: Option<u64>,
    /// Entries of the scale benchmark's one directory [default: 100000; quick 10000].
    #[arg(long, value_name = "N")]
    pub dir_entries: Option<u64>,
    /// Only render results.md and chart.svg again from an earlier results.json.
    #[arg(long, value_name = "JSON")]
    pub render: Option<PathBuf>,
    /// The secretfs binary that mounts file mode, the control and block mode [default:
    /// $SECRETFS_BIN, else the `secretfs` next to this program, else the first on $PATH]. The
    /// control needs one built with `--features passthrough-control`.
    #[arg(long, value_name = "PATH")]
    pub secretfs_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StoreArg {
    Tmpfs,
    Disk,
}

fn parse_system(text: &str) -> Result<System, String> {
    System::parse(text).ok_or_else(|| {
        let names: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
        format!("unknown system `{text}`; one of {}", names.join(", "))
    })
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::new(exit::USAGE, msg)
}

/// Turns the arguments into options, filling in the full or quick preset.
pub fn options(args: &BenchArgs) -> Result<Options, CliError> {
    let q = args.quick;
    let sizes = Sizes {
        seq_bytes: args.size.unwrap_or(if q { 64 * MIB } else { GIB }),
        rand_ops: args.rand_ops.unwrap_or(if q { 2_000 } else { 20_000 }),
        files: args.files.unwrap_or(if q { 1_000 } else { 10_000 }),
    };
    if sizes.seq_bytes < 4 * MIB || sizes.seq_bytes % 4096 != 0 {
        return Err(usage("--size must be at least 4M and a multiple of 4K"));
    }
    if sizes.rand_ops == 0 || sizes.files == 0 {
        return Err(usage("--rand-ops and --files must be at least 1"));
    }
    let rounds = args.rounds.unwrap_or(3);
    if rounds == 0 {
        return Err(usage("--rounds must be at least 1"));
    }
    let tree = args.tree.clone().unwrap_or_else(|| {
        PathBuf::from(if q {
            "/usr/include/linux"
        } else {
            "/usr/include"
        })
    });
    if !tree.exists() {
        return Err(usage(format!("no tree to untar at {}", tree.display()))
            .hint("pass --tree DIR_OR_TAR (the default comes with build-essential's headers)"));
    }
    let stores = match &args.stores {
        Some(s) => s
            .iter()
            .map(|s| match s {
                StoreArg::Tmpfs => Store::Tmpfs,
                StoreArg::Disk => Store::Disk,
            })
            .collect(),
        None if q => vec![Store::Tmpfs],
        None => vec![Store::Tmpfs, Store::Disk],
    };
    let mut systems = args.systems.clone().unwrap_or_else(|| System::ALL.to_vec());
    systems.sort();
    systems.dedup();
    let bin = secretfs_bin(args.secretfs_bin.clone());
    Ok(Options {
        quick: q,
        rounds,
        sizes,
        stores,
        systems,
        tree,
        disk_dir: args.disk_dir.clone(),
        rss_rounds: args.rss_rounds.unwrap_or(if q { 3 } else { 10 }),
        bin,
    })
}

/// The secretfs binary to drive: the option, else `$SECRETFS_BIN`, else the one built beside
/// this program (cargo puts both in one target directory, an install in one bin directory),
/// else the first on `$PATH`. When none exists, the sibling path is returned so that the error
/// names where it was looked for.
fn secretfs_bin(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(bin) = explicit.or_else(|| std::env::var_os("SECRETFS_BIN").map(PathBuf::from)) {
        return bin;
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("secretfs")));
    match sibling {
        Some(s) if s.is_file() => s,
        _ => systems::find_on_path("secretfs")
            .or(sibling)
            .unwrap_or_else(|| PathBuf::from("secretfs")),
    }
}

/// Whether any of `systems` is mounted by the secretfs binary.
fn needs_secretfs(systems: &[System]) -> bool {
    systems.iter().any(|s| {
        matches!(
            s,
            System::Control | System::Secretfs | System::SecretfsWriteback | System::Block
        )
    })
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| {
        CliError::new(
            exit::FAILURE,
            format!("cannot write {}: {e}", path.display()),
        )
    })
}

fn create_out(out: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(out).map_err(|e| {
        CliError::new(
            exit::FAILURE,
            format!("cannot create {}: {e}", out.display()),
        )
    })
}

/// The scale benchmark's sizes and systems (those of the comparison that have a daemon, and
/// plain for reference, unless `--systems` names others).
fn scale_options(args: &BenchArgs) -> ScaleOptions {
    let q = args.quick;
    let mut systems = args
        .systems
        .clone()
        .unwrap_or_else(|| vec![System::Plain, System::Secretfs, System::Gocryptfs]);
    systems.sort();
    systems.dedup();
    ScaleOptions {
        max_files: args
            .scale_files
            .unwrap_or(if q { 10_000 } else { 1_000_000 }),
        dir_entries: args
            .dir_entries
            .unwrap_or(if q { 10_000 } else { 100_000 })
            .max(1),
        systems,
    }
}

/// Writes results.json (unless rendering from it), results.md and chart.svg into `out`.
fn save(out: &Path, report: &report::Report, json: bool) -> Result<String, CliError> {
    create_out(out)?;
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        write(&out.join("results.json"), &text)?;
    }
    let md = report::markdown(report);
    write(&out.join("results.md"), &md)?;
    write(&out.join("chart.svg"), &chart::svg(report))?;
    Ok(md)
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli.args) {
        eprintln!("secretfs-bench: error: {e}");
        std::process::exit(e.code);
    }
}

pub fn run(args: &BenchArgs) -> Result<(), CliError> {
    if let Some(json) = &args.render {
        let text = std::fs::read_to_string(json).map_err(|e| {
            CliError::new(
                exit::FAILURE,
                format!("cannot read {}: {e}", json.display()),
            )
        })?;
        let report: report::Report = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{} is not a benchmark result: {e}", json.display())))?;
        print!("{}", save(&args.out, &report, false)?);
        return Ok(());
    }
    let opts = options(args)?;
    let scale = args.scale.then(|| scale_options(args));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CliError::new(exit::MOUNT, "the benchmark needs root").hint(
            "it mounts a tmpfs, FUSE filesystems and drops the page cache: run it with sudo",
        ));
    }
    let systems = scale.as_ref().map_or(&opts.systems, |s| &s.systems);
    if needs_secretfs(systems) && !opts.bin.is_file() {
        return Err(CliError::new(
            exit::USAGE,
            format!("no secretfs binary at {}", opts.bin.display()),
        )
        .hint("build it (cargo build --release -p secretfs --features passthrough-control) or pass --secretfs-bin PATH / SECRETFS_BIN=PATH"));
    }
    let tty = std::io::stderr().is_terminal();
    let mut progress = |line: &str| {
        let mut err = std::io::stderr().lock();
        // On a terminal each measurement overwrites the last; in a log every line stays.
        let _ = if tty && line.starts_with('[') {
            write!(err, "\r\x1b[2K{line}")
        } else if tty {
            writeln!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
    };
    let failed = |e: BenchError| {
        let code = match e {
            BenchError::Interrupted => 130,
            _ => exit::FAILURE,
        };
        CliError::new(code, format!("benchmark failed: {e}"))
    };
    if let Some(scale) = scale {
        let report = bench::scale::run(&scale, &opts.bin, &mut progress).map_err(failed)?;
        create_out(&args.out)?;
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        write(&args.out.join("scale.json"), &text)?;
        let md = bench::scale::markdown(&report);
        write(&args.out.join("scale.md"), &md)?;
        print!("{md}");
        eprintln!("results: {0}/scale.json, {0}/scale.md", args.out.display());
        return Ok(());
    }
    let report = bench::run(&opts, &mut progress).map_err(failed)?;
    if tty {
        eprintln!();
    }
    let md = save(&args.out, &report, true)?;
    print!("{md}");
    eprintln!(
        "results: {0}/results.json, {0}/results.md, {0}/chart.svg",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn opts(argv: &[&str]) -> Result<Options, CliError> {
        let t = T::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .map_err(|e| usage(e.to_string()))?;
        options(&t.args)
    }

    #[test]
    fn quick_and_full_presets_and_overrides() {
        let q = opts(&["--quick", "--tree", "/"]).unwrap();
        assert_eq!(q.sizes.seq_bytes, 64 * MIB);
        assert_eq!(q.stores, vec![Store::Tmpfs]);
        assert_eq!(q.rss_rounds, 3);
        let f = opts(&[
            "--tree",
            "/",
            "--size",
            "256M",
            "--systems",
            "secretfs,plain",
        ])
        .unwrap();
        assert_eq!(f.sizes.seq_bytes, 256 * MIB);
        assert_eq!(f.stores, vec![Store::Tmpfs, Store::Disk]);
        assert_eq!(f.systems, vec![System::Plain, System::Secretfs]);
        assert_eq!(f.rounds, 3);
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for argv in [
            &["--tree", "/", "--size", "1M"][..],
            &["--tree", "/", "--rounds", "0"],
            &["--tree", "/", "--systems", "ext4"],
            &["--tree", "/nonexistent"],
            &["--tree", "/", "--stores", "nfs"],
        ] {
            assert_eq!(
                opts(argv).err().map(|e| e.code),
                Some(exit::USAGE),
                "{argv:?}"
            );
        }
    }
}

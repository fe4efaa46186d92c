//! The `secretfs` command: parses the command line, runs one subcommand and maps its error to a
//! one-line message, a hint and an exit code. All logic lives in the library.

use clap::{CommandFactory, Parser, Subcommand};
use secretfs::app;
use secretfs::cli::{
    self, block, doctor, fsck, generate, init, key, mount, pin, rewrap, status, umount, CliError,
};

#[derive(Parser)]
#[command(name = "secretfs", version = cli::VERSION, about = "Encrypted storage for cloud instances: a FUSE filesystem with per-file keys", after_help = cli::EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new encrypted filesystem in an empty backing directory.
    Init(init::InitArgs),
    /// Mount a backing directory; returns once the mount is usable.
    Mount(mount::MountArgs),
    /// Unmount and wait for the daemon to exit.
    Umount(umount::UmountArgs),
    /// Record on this host which key opens a backing store (after checking that it does).
    Pin(pin::PinArgs),
    /// Key slots: list, add (e.g. a recovery key or a second region's KMS key), remove.
    Key(key::KeyCommand),
    /// Wrap the master key of a kms filesystem with another KMS key (ReEncrypt).
    Rewrap(rewrap::RewrapArgs),
    /// Show what a path is (mounted or not, fs id, key source), or list every secretfs mount.
    Status(status::StatusArgs),
    /// Verify every name, directory id and block of a backing store (exit codes as fsck(8)).
    Fsck(fsck::FsckArgs),
    /// Block mode: dm-crypt/LUKS2 on a device or a loop-attached file (open, close, status).
    Block(block::BlockArgs),
    /// Check what a mount needs on this host (FUSE, helpers, fstab, AWS) and say what to fix.
    #[command(after_help = doctor::EXIT_HELP)]
    Doctor(doctor::DoctorArgs),
    /// Write the manual pages or shell completions (for packagers).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Init(args) => {
            let done = app::init::run(&args.request())?;
            println!(
                "created secretfs filesystem {} in {}",
                done.config.fs_id,
                done.backing.display()
            );
            println!(
                "  key source: {}",
                secretfs::app::status::describe_slots(&done.config)
            );
            if let Some(text) = &done.recovery_text {
                key::print_recovery_key(text);
            }
            println!(
                "  next: secretfs mount {} /mnt/secretfs",
                done.backing.display()
            );
            Ok(())
        }
        Command::Mount(args) => mount::run(&args),
        Command::Key(args) => key::run(&args),
        Command::Pin(args) => {
            let done = app::pin::run(&args.request())?;
            let pin = &done.pin;
            let slots: Vec<String> = pin
                .slots()
                .iter()
                .map(|s| format!("{} {}", s.id, s.source.kind()))
                .collect();
            println!(
                "pinned filesystem {} in {}: slots {}",
                pin.fs_id,
                pin.backing.display(),
                slots.join(", ")
            );
            if !done.newly_trusted.is_empty() {
                println!(
                    "  newly trusted on this host: slots {:?}",
                    done.newly_trusted
                );
            }
            Ok(())
        }
        Command::Rewrap(args) => {
            let done = app::rewrap::run(&args.request())?;
            println!(
                "rewrapped the master key of {}: {} -> {}",
                done.config.fs_id, done.old_key, done.new_key
            );
            Ok(())
        }
        Command::Umount(args) => Ok(app::umount::run(&args.mountpoint, args.lazy)?),
        Command::Block(args) => block::run(&args),
        Command::Doctor(args) => {
            let code = doctor::run(&args)?;
            std::process::exit(code);
        }
        Command::Generate(args) => generate::run(&args, Cli::command()),
        Command::Fsck(args) => {
            let code = fsck::run(&args)?;
            std::process::exit(code);
        }
        Command::Status(args) => {
            let Some(path) = &args.path else {
                return cli::print_report(&app::status::list(), args.json, |l| {
                    status::render_list(l)
                });
            };
            if let Some(b) = app::block::status(&path.to_string_lossy()) {
                return cli::print_report(&b, args.json, block::render);
            }
            cli::print_report(&app::status::collect(path)?, args.json, status::render)
        }
    }
}

fn main() {
    // A `fips` build runs no command, the mount helper included, unless aws-lc is in FIPS mode.
    if let Err(e) = app::require_fips_mode() {
        let e = CliError::from(e);
        eprintln!("secretfs: error: {e}");
        std::process::exit(e.code);
    }
    // Installed as mount.secretfs / umount.fuse.secretfs (links to this binary), act as the
    // mount(8) / umount(8) helper.
    if let Some(code) = cli::helper::run_from_argv(None) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("secretfs: error: {e}");
        std::process::exit(e.code);
    }
}

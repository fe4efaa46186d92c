//! The command line: one module per subcommand, the argument types, and the single place where
//! typed errors become a one-line message, a hint and a documented exit code.

pub mod block;
pub mod doctor;
pub mod fsck;
pub mod generate;
pub mod helper;
pub mod init;
pub mod key;
pub mod mount;
pub mod pin;
pub mod rewrap;
pub mod status;
pub mod umount;

use crate::app::{self, AwsChoice, ErrorKind, KeyChoice};
use crate::keysource::PassphraseInput;

/// `secretfs --version`: the package version, the git commit it was built from and its Cargo
/// features (build.rs), so a bug report names exactly which build it is about.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SECRETFS_BUILD_COMMIT"),
    ", features: ",
    env!("SECRETFS_BUILD_FEATURES"),
    ")"
);

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    pub const OK: i32 = 0;
    /// Anything not covered below (an I/O error, a bug).
    pub const FAILURE: i32 = 1;
    /// Bad command line or mount options.
    pub const USAGE: i32 = 2;
    /// The key could not be obtained or does not open the filesystem.
    pub const KEY: i32 = 3;
    /// The backing store is missing, not initialised, already initialised or damaged.
    pub const BACKING: i32 = 4;
    /// The mount itself failed (mount point missing or busy, FUSE unavailable).
    pub const MOUNT: i32 = 5;
    /// The path is not a mounted secretfs.
    pub const NOT_MOUNTED: i32 = 6;
    /// AWS refused or lacks something: credentials, permission, KMS key state, S3 object.
    pub const AWS: i32 = 7;
    /// AWS could not be reached before the deadline (network, endpoint, throttling): retry.
    pub const AWS_UNREACHABLE: i32 = 8;
}

pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  unexpected failure (I/O error, bug)
  2  bad command line or mount options
  3  key problem: key not found, wrong key or passphrase, key does not open this filesystem
  4  backing store problem: missing, not initialised, already initialised, damaged config
  5  mount failed: mount point missing or busy, FUSE unavailable
  6  not mounted / cannot unmount
  7  AWS problem: no credentials, access denied, KMS key disabled or missing, S3 bucket/object missing or already there
  8  AWS unreachable or too slow: endpoint down, timeout, throttling (retrying later may work)";

/// An error for the user: what went wrong, what to do about it, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl From<app::Error> for CliError {
    /// The one place where an error's class becomes the command's exit code.
    fn from(e: app::Error) -> Self {
        let code = match e.kind {
            ErrorKind::Failure => exit::FAILURE,
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::Key => exit::KEY,
            ErrorKind::Backing => exit::BACKING,
            ErrorKind::Mount => exit::MOUNT,
            ErrorKind::NotMounted => exit::NOT_MOUNTED,
            ErrorKind::Aws => exit::AWS,
            ErrorKind::AwsUnreachable => exit::AWS_UNREACHABLE,
        };
        CliError {
            code,
            message: e.message,
            hint: e.hint,
        }
    }
}

/// The AWS options of `--key kms` / `kms-password`, shared by init, mount and rewrap.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// KMS key that wraps the master key: key id, alias/NAME or ARN (rewrap: the new key).
    #[arg(long, value_name = "ID|ALIAS|ARN")]
    pub kms_key: Option<String>,
    /// S3 object holding the wrapped key (init: written there too; mount: read from there).
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub wrapped_key: Option<String>,
    /// Extra KMS encryption-context pairs; `secretfs:fs-id` is always added.
    #[arg(long, value_name = "K=V,...")]
    pub context: Option<String>,
    /// Overall deadline for AWS calls, retries included.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub aws_timeout: u64,
    /// AWS region of the KMS key and S3 object (init: recorded in the slot it makes).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Endpoint URL for KMS and S3, e.g. a VPC endpoint (init: recorded in the slot it makes).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

impl AwsArgs {
    pub fn choice(&self) -> AwsChoice {
        AwsChoice {
            kms_key: self.kms_key.clone(),
            wrapped_key: self.wrapped_key.clone(),
            context: self.context.clone(),
            timeout_secs: self.aws_timeout,
            region: self.region.clone(),
            endpoint: self.endpoint_url.clone(),
        }
    }
}

/// `--key` and the passphrase options, shared by init and mount.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Key source: keyfile:PATH, passphrase, ephemeral, kms, kms-password or recovery (mount:
    /// defaults to the slots this host pinned).
    #[arg(long, value_name = "SOURCE")]
    pub key: Option<String>,
    /// Read the passphrase from this inherited file descriptor instead of the terminal.
    #[arg(long, value_name = "FD", conflicts_with = "passphrase_command")]
    pub passphrase_fd: Option<i32>,
    /// Run this command and use the first line it prints as the passphrase.
    #[arg(long, value_name = "CMD")]
    pub passphrase_command: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

impl KeyArgs {
    /// What these flags say about the key, for the library.
    pub fn choice(&self) -> KeyChoice {
        KeyChoice {
            key: self.key.clone(),
            passphrase: match (&self.passphrase_fd, &self.passphrase_command) {
                (Some(fd), _) => PassphraseInput::Fd(*fd),
                (None, Some(cmd)) => PassphraseInput::Command(cmd.clone()),
                (None, None) => PassphraseInput::Tty,
            },
            aws: self.aws.choice(),
            slot: None,
            slot_timeout_secs: None,
        }
    }
}

/// Which key slot opens the store, for the commands that open one (mount, fsck, key).
#[derive(Debug, Clone, clap::Args)]
pub struct SlotArgs {
    /// Open with this key slot only (see `secretfs key list`).
    #[arg(long, value_name = "N")]
    pub slot: Option<u32>,
    /// How long one slot may take before the next is tried (the last gets what is left of
    /// --aws-timeout).
    #[arg(long, value_name = "SECS")]
    pub slot_timeout: Option<u64>,
}

impl SlotArgs {
    /// `key` completed with the slot flags.
    pub fn apply(&self, mut key: KeyChoice) -> KeyChoice {
        key.slot = self.slot;
        key.slot_timeout_secs = self.slot_timeout;
        key
    }
}

/// `10G`, `512M`, `4096`: a byte count with an optional binary multiple K, M, G or T.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("bad size `{text}`: use a number with K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size `{text}`: use a number with K, M, G or T"))?;
    n.checked_shl(shift)
        .filter(|s| s >> shift == n)
        .ok_or(format!("size `{text}` is too large"))
}

/// Prints a status-like report: pretty JSON with `--json`, else the human rendering.
pub fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

//! The command line: one module per subcommand, the argument types, and the single place where
//! typed errors become a one-line message, a hint and a documented exit code.

pub mod bench;
pub mod block;
pub mod fsck;
pub mod helper;
pub mod init;
pub mod mount;
pub mod rewrap;
pub mod status;
pub mod umount;

use crate::config::{ConfigError, FsConfig, KeySourceDescriptor};
use crate::crypto::keys::KeyRing;
use crate::keysource::aws::ErrorClass;
use crate::keysource::s3::S3Uri;
use crate::keysource::{AwsKeyArgs, KeySourceError, KeySpec, PassphraseInput};
use std::time::Duration;

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

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        match &e {
            ConfigError::MacMismatch => CliError::new(exit::KEY, e.to_string()).hint(
                "check --key / key=; a config edited by hand cannot be trusted and is refused",
            ),
            _ => CliError::new(exit::BACKING, e.to_string()),
        }
    }
}

impl From<KeySourceError> for CliError {
    fn from(e: KeySourceError) -> Self {
        let code = match &e {
            KeySourceError::Aws(aws) => match aws.class() {
                ErrorClass::Transient => exit::AWS_UNREACHABLE,
                ErrorClass::WrongKey => exit::KEY,
                ErrorClass::Permanent => exit::AWS,
            },
            KeySourceError::KmsKeyMissing | KeySourceError::WrappedKeyMissing => exit::USAGE,
            _ => exit::KEY,
        };
        CliError::new(code, e.to_string())
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
}

impl AwsArgs {
    fn given(&self) -> bool {
        self.kms_key.is_some() || self.wrapped_key.is_some() || self.context.is_some()
    }

    pub fn to_key_args(&self) -> Result<AwsKeyArgs, CliError> {
        let usage = |m: String| CliError::new(exit::USAGE, m);
        if self.aws_timeout == 0 {
            return Err(usage("--aws-timeout must be at least 1 second".into()));
        }
        Ok(AwsKeyArgs {
            kms_key: self.kms_key.clone(),
            wrapped_key: self
                .wrapped_key
                .as_deref()
                .map(S3Uri::parse)
                .transpose()
                .map_err(usage)?,
            context: self
                .context
                .as_deref()
                .map(crate::keysource::kms::parse_context)
                .transpose()
                .map_err(usage)?,
            timeout: Duration::from_secs(self.aws_timeout),
            force: false,
        })
    }
}

/// `--key` and the passphrase options, shared by init and mount.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Key source: keyfile:PATH, passphrase, ephemeral, kms or kms-password (mount: defaults to
    /// what init used).
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
    /// No flags at all: everything comes from mount options or the config.
    pub fn none() -> Self {
        KeyArgs {
            key: None,
            passphrase_fd: None,
            passphrase_command: None,
            aws: AwsArgs {
                kms_key: None,
                wrapped_key: None,
                context: None,
                aws_timeout: crate::keysource::aws::DEFAULT_TIMEOUT.as_secs(),
            },
        }
    }

    /// These flags completed by mount options (`key=`, `kms-key=`, …); flags win.
    pub fn with_options(&self, o: &crate::mountopts::MountOptions) -> KeyArgs {
        let mut k = self.clone();
        k.key = k.key.or_else(|| o.key.clone());
        k.aws.kms_key = k.aws.kms_key.or_else(|| o.kms_key.clone());
        k.aws.wrapped_key = k.aws.wrapped_key.or_else(|| o.wrapped_key.clone());
        k.aws.context = k.aws.context.or_else(|| o.context_pairs());
        if let Some(t) = o.aws_timeout {
            k.aws.aws_timeout = t;
        }
        k
    }

    pub fn passphrase_input(&self) -> PassphraseInput {
        match (&self.passphrase_fd, &self.passphrase_command) {
            (Some(fd), _) => PassphraseInput::Fd(*fd),
            (None, Some(cmd)) => PassphraseInput::Command(cmd.clone()),
            (None, None) => PassphraseInput::Tty,
        }
    }

    pub fn spec(&self, text: &str) -> Result<KeySpec, CliError> {
        let mut spec = KeySpec::parse(text, self.passphrase_input())
            .map_err(|m| CliError::new(exit::USAGE, m))?;
        self.attach_aws(&mut spec)?;
        Ok(spec)
    }

    /// Puts the AWS flags into a kms spec; refuses them for other sources, where they would
    /// be silently ignored.
    pub fn attach_aws(&self, spec: &mut KeySpec) -> Result<(), CliError> {
        let kind = spec.kind();
        match spec.aws_args_mut() {
            Some(args) => *args = self.aws.to_key_args()?,
            None if self.aws.given() => {
                return Err(CliError::new(
                    exit::USAGE,
                    format!("--kms-key, --wrapped-key and --context apply to --key kms or kms-password, not {kind}"),
                ))
            }
            None => {}
        }
        Ok(())
    }
}

/// The key source to use: `--key`, else `-o key=`, else what `init` recorded in the config.
pub fn choose_spec(
    key: &KeyArgs,
    option: Option<&str>,
    config: &FsConfig,
) -> Result<KeySpec, CliError> {
    spec_for(key, option, &config.key_source)
}

/// As `choose_spec`, for any stored descriptor (a file-mode config or a LUKS2 token).
pub fn spec_for(
    key: &KeyArgs,
    option: Option<&str>,
    stored: &KeySourceDescriptor,
) -> Result<KeySpec, CliError> {
    if let Some(text) = key.key.as_deref().or(option) {
        return key.spec(text);
    }
    Ok(match stored {
        KeySourceDescriptor::Keyfile { path } => KeySpec::Keyfile(path.clone()),
        KeySourceDescriptor::Passphrase { .. } => KeySpec::Passphrase(key.passphrase_input()),
        KeySourceDescriptor::Ephemeral => KeySpec::Ephemeral,
        KeySourceDescriptor::Kms { .. } => KeySpec::Kms(key.aws.to_key_args()?),
        KeySourceDescriptor::KmsPassword { .. } => KeySpec::KmsPassword(key.aws.to_key_args()?),
    })
}

/// Loads the config of `backing`, obtains the key and checks that it opens this filesystem.
pub fn unlock(backing: &std::path::Path, key: &KeyArgs) -> Result<(FsConfig, KeyRing), CliError> {
    let (config, mac) = crate::config::load(backing)?;
    let spec = choose_spec(key, None, &config)?;
    let master = spec.resolve(&config.key_source, &config.fs_id_bytes())?;
    let keys = KeyRing::new(&master, &config.fs_id_bytes());
    config.verify_mac(&mac, &keys)?;
    Ok((config, keys))
}

/// Canonical absolute form of a path that must exist.
pub fn existing_dir(
    path: &std::path::Path,
    what: &str,
    code: i32,
) -> Result<std::path::PathBuf, CliError> {
    let canon = std::fs::canonicalize(path).map_err(|e| {
        CliError::new(
            code,
            format!("{what} {} is not usable: {e}", path.display()),
        )
        .hint(format!("create it first: mkdir -p {}", path.display()))
    })?;
    if !canon.is_dir() {
        return Err(CliError::new(
            code,
            format!("{what} {} is not a directory", canon.display()),
        ));
    }
    Ok(canon)
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

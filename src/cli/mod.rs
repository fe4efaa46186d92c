//! The command line: one module per subcommand, the argument types, and the single place where
//! typed errors become a one-line message, a hint and a documented exit code.

pub mod block;
pub mod fsck;
pub mod helper;
pub mod init;
pub mod mount;
pub mod pin;
pub mod rewrap;
pub mod status;
pub mod umount;

use crate::crypto::keys::KeyRing;
use crate::keysource::aws::ErrorClass;
use crate::keysource::pins::{self, Pin};
use crate::keysource::{AwsKeyArgs, KeySourceError, KeySpec, PassphraseInput, S3Uri};
use crate::store::config::{ConfigError, FsConfig, KeySourceDescriptor};
use std::path::Path;
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

/// The key a command may use on a store, and the pin to record once that key has opened it.
pub struct Trusted {
    pub spec: KeySpec,
    /// Written after the config MAC checks out: the first use of an explicitly named key.
    pub new_pin: Option<Pin>,
}

/// Records the pin of a first use, once its key has opened the store; the store is already
/// open then, so a failure only warns.
pub fn record_pin(new_pin: &Option<Pin>) {
    if let Some(pin) = new_pin {
        match pins::store(Path::new(pins::PIN_DIR), pin) {
            Ok(()) => {
                tracing::info!(fs_id = %pin.fs_id, key_source = pin.key_source.kind(), "pinned the key source of this filesystem")
            }
            Err(e) => {
                tracing::warn!("{e}; mounts without --key will be refused until it is pinned")
            }
        }
    }
}

/// Chooses the key source from what this host trusts, never from the store alone: the pin
/// (`/etc/secretfs/pins`) when there is one, which the store's config must match exactly; else
/// only a source named by the user (`--key`, `-o key=`), whose identity (key file, KMS key, S3
/// object) then also comes from the user. Every refusal happens before anything is touched.
pub fn trusted_spec(
    backing: &Path,
    key: &KeyArgs,
    option: Option<&str>,
    config: &FsConfig,
) -> Result<Trusted, CliError> {
    let pin = pins::load(Path::new(pins::PIN_DIR), &config.fs_id).map_err(|e| {
        CliError::new(exit::KEY, e.to_string())
            .hint("a pin must be a root-owned file writable only by root; re-create it with `secretfs pin BACKING --key SOURCE`")
    })?;
    let given = key.key.as_deref().or(option);
    let fs_id = config.fs_id;
    let Some(pin) = pin else {
        let Some(text) = given else {
            return Err(CliError::new(
                exit::KEY,
                format!(
                    "filesystem {fs_id} in {} has no key pin on this host, and the store's own config cannot be trusted to name its key",
                    backing.display()
                ),
            )
            .hint(format!(
                "name the key: `secretfs pin {} --key SOURCE` (once), or --key / -o key= on the command",
                backing.display()
            )));
        };
        let spec = key.spec(text)?;
        check_untrusted_spec(&spec, config, backing)?;
        return Ok(Trusted {
            spec,
            new_pin: Some(Pin {
                fs_id,
                backing: backing.to_path_buf(),
                key_source: config.key_source.clone(),
            }),
        });
    };
    check_pin(&pin, backing, config)?;
    let mut spec = match given {
        Some(text) => key.spec(text)?,
        None => spec_for(key, None, &pin.key_source)?,
    };
    same_kind(&spec, &pin.key_source, "the pin")?;
    refuse_keyfile_in_store(&spec, backing)?;
    pin_kms_key(&mut spec, &pin.key_source);
    Ok(Trusted {
        spec,
        new_pin: None,
    })
}

/// A pin applies only to the backing directory it was made for, and the config must name
/// exactly the key source it pinned.
pub fn check_pin(pin: &Pin, backing: &Path, config: &FsConfig) -> Result<(), CliError> {
    let fs_id = config.fs_id;
    if pin.backing != backing {
        return Err(CliError::new(
            exit::BACKING,
            format!(
                "filesystem {fs_id} is pinned to {}, but was found in {}; nothing was touched",
                pin.backing.display(),
                backing.display()
            ),
        )
        .hint(format!(
            "if it was moved on purpose: secretfs pin {} --key SOURCE",
            backing.display()
        )));
    }
    if pin.key_source != config.key_source {
        return Err(CliError::new(
            exit::KEY,
            format!(
                "the config in {} names key source `{}`, but this host pinned `{}` for filesystem {fs_id}: the config was replaced or edited; nothing was touched",
                backing.display(),
                config.key_source.kind(),
                pin.key_source.kind()
            ),
        )
        .hint("restore the config from a backup; to trust a new key on purpose: secretfs pin BACKING --key SOURCE"));
    }
    Ok(())
}

/// What a key named by the user must satisfy when no pin vouches for the store: its identity
/// comes from the user, its kind matches the config, and it does not live in the store.
pub fn check_untrusted_spec(
    spec: &KeySpec,
    config: &FsConfig,
    backing: &Path,
) -> Result<(), CliError> {
    require_identity(spec)?;
    same_kind(spec, &config.key_source, "the store's config")?;
    refuse_keyfile_in_store(spec, backing)
}

pub(crate) fn same_kind(
    spec: &KeySpec,
    stored: &KeySourceDescriptor,
    whose: &str,
) -> Result<(), CliError> {
    if spec.kind() == stored.kind() {
        return Ok(());
    }
    Err(CliError::new(
        exit::KEY,
        format!(
            "key source `{}` was given, but {whose} says `{}`; nothing was touched",
            spec.kind(),
            stored.kind()
        ),
    ))
}

/// Without a pin, a KMS source's identity must come from the user, not from the store.
pub(crate) fn require_identity(spec: &KeySpec) -> Result<(), CliError> {
    match spec {
        // A blob from the user's S3 object is the user's choice; one from the config is not.
        KeySpec::Kms(a) if a.kms_key.is_none() && a.wrapped_key.is_none() => Err(CliError::new(
            exit::KEY,
            "--key kms on a filesystem this host has not pinned needs --kms-key or --wrapped-key (or -o kms-key= / wrapped-key=): the store's config cannot be trusted to name the KMS key or the blob",
        )),
        KeySpec::KmsPassword(a) if a.wrapped_key.is_none() => Err(CliError::new(
            exit::KEY,
            "--key kms-password on a filesystem this host has not pinned needs --wrapped-key s3://… (or -o wrapped-key=): the store's config cannot be trusted to name the object",
        )),
        _ => Ok(()),
    }
}

/// A key file kept inside the store it opens is readable by whoever can read the store.
pub fn refuse_keyfile_in_store(spec: &KeySpec, backing: &Path) -> Result<(), CliError> {
    let KeySpec::Keyfile(path) = spec else {
        return Ok(());
    };
    let inside = std::fs::canonicalize(path)
        .ok()
        .or_else(|| path.is_absolute().then(|| path.clone()))
        .is_some_and(|p| p.starts_with(backing));
    if inside {
        return Err(CliError::new(
            exit::KEY,
            format!(
                "key file {} lies inside the backing store {}; refusing it",
                path.display(),
                backing.display()
            ),
        )
        .hint("keep key files outside the store, e.g. under /etc/secretfs/"));
    }
    Ok(())
}

/// KMS Decrypt always names the pinned key, so a blob made under any other key is refused.
pub(crate) fn pin_kms_key(spec: &mut KeySpec, pinned: &KeySourceDescriptor) {
    let arn = match pinned {
        KeySourceDescriptor::Kms {
            key_id, key_arn, ..
        } => Some(key_arn.clone().unwrap_or_else(|| key_id.clone())),
        KeySourceDescriptor::KmsPassword { key_arn, .. } => key_arn.clone(),
        _ => None,
    };
    if let (Some(args), Some(arn)) = (spec.aws_args_mut(), arn) {
        if args.kms_key.is_none() {
            args.kms_key = Some(arn);
        }
    }
}

/// The spec for a stored descriptor (a pinned or authenticated config, or a LUKS2 token), or the
/// source named by `--key` / `-o key=`.
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

/// Loads the config of `backing`, obtains the trusted key and checks that it opens this
/// filesystem (recording the pin of a first use).
pub fn unlock(backing: &Path, key: &KeyArgs) -> Result<(FsConfig, KeyRing), CliError> {
    let (config, mac) = crate::store::config::load(backing)?;
    let trusted = trusted_spec(backing, key, None, &config)?;
    let master = trusted
        .spec
        .resolve(&config.key_source, &config.fs_id_bytes())?;
    let keys = KeyRing::new(&master, &config.fs_id_bytes());
    config.verify_mac(&mac, &keys)?;
    record_pin(&trusted.new_pin);
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

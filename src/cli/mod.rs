//! The command line: one module per subcommand, the argument types, and the single place where
//! typed errors become a one-line message, a hint and a documented exit code.

pub mod fsck;
pub mod init;
pub mod mount;
pub mod status;
pub mod umount;

use crate::config::{ConfigError, FsConfig, KeySourceDescriptor};
use crate::crypto::keys::KeyRing;
use crate::keysource::{KeySourceError, KeySpec, PassphraseInput};

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
}

pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  unexpected failure (I/O error, bug)
  2  bad command line or mount options
  3  key problem: key not found, wrong key or passphrase, key does not open this filesystem
  4  backing store problem: missing, not initialised, already initialised, damaged config
  5  mount failed: mount point missing or busy, FUSE unavailable
  6  not mounted / cannot unmount";

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
        CliError::new(exit::KEY, e.to_string())
    }
}

/// `--key` and the passphrase options, shared by init and mount.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Key source: keyfile:PATH, passphrase or ephemeral (mount: defaults to what init used).
    #[arg(long, value_name = "SOURCE")]
    pub key: Option<String>,
    /// Read the passphrase from this inherited file descriptor instead of the terminal.
    #[arg(long, value_name = "FD", conflicts_with = "passphrase_command")]
    pub passphrase_fd: Option<i32>,
    /// Run this command and use the first line it prints as the passphrase.
    #[arg(long, value_name = "CMD")]
    pub passphrase_command: Option<String>,
}

impl KeyArgs {
    pub fn passphrase_input(&self) -> PassphraseInput {
        match (&self.passphrase_fd, &self.passphrase_command) {
            (Some(fd), _) => PassphraseInput::Fd(*fd),
            (None, Some(cmd)) => PassphraseInput::Command(cmd.clone()),
            (None, None) => PassphraseInput::Tty,
        }
    }

    pub fn spec(&self, text: &str) -> Result<KeySpec, CliError> {
        KeySpec::parse(text, self.passphrase_input()).map_err(|m| CliError::new(exit::USAGE, m))
    }
}

/// The key source to use: `--key`, else `-o key=`, else what `init` recorded in the config.
pub fn choose_spec(
    key: &KeyArgs,
    option: Option<&str>,
    config: &FsConfig,
) -> Result<KeySpec, CliError> {
    if let Some(text) = key.key.as_deref().or(option) {
        return key.spec(text);
    }
    Ok(match &config.key_source {
        KeySourceDescriptor::Keyfile { path } => KeySpec::Keyfile(path.clone()),
        KeySourceDescriptor::Passphrase { .. } => KeySpec::Passphrase(key.passphrase_input()),
        KeySourceDescriptor::Ephemeral => KeySpec::Ephemeral,
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

//! Where the master key comes from: one `KeySpec` chosen by the user, one `init()` to create a
//! key for a new filesystem and one `resolve()` to recover it at mount. Only a `MasterKey` leaves.

pub mod local;

use crate::config::KeySourceDescriptor;
use crate::crypto::keys::MasterKey;
use std::path::PathBuf;

/// How the user wants the passphrase to be read.
#[derive(Clone, PartialEq, Eq)]
pub enum PassphraseInput {
    /// Already read (from the terminal, before the daemon forked).
    Preread(zeroize::Zeroizing<String>),
    /// Prompt on the controlling terminal.
    Tty,
    /// Read one line from an inherited file descriptor (never argv or env).
    Fd(i32),
    /// Run a command (through `sh -c`) and take the first line it prints.
    Command(String),
}

impl std::fmt::Debug for PassphraseInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PassphraseInput::Preread(_) => f.write_str("Preread(<redacted>)"),
            PassphraseInput::Tty => f.write_str("Tty"),
            PassphraseInput::Fd(fd) => write!(f, "Fd({fd})"),
            PassphraseInput::Command(c) => write!(f, "Command({c:?})"),
        }
    }
}

/// The key source chosen on the command line or in fstab options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    Keyfile(PathBuf),
    Passphrase(PassphraseInput),
    Ephemeral,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("key file {path} does not exist; create it with `secretfs init --key keyfile:{path}`")]
    KeyfileMissing { path: PathBuf },
    #[error("key file {path} must hold exactly 32 bytes, it holds {len}")]
    KeyfileLength { path: PathBuf, len: u64 },
    #[error("key file {path} is readable or writable by group/others (mode {mode:o}); run `chmod 0400 {path}`")]
    KeyfileInsecure { path: PathBuf, mode: u32 },
    #[error("cannot use key file {path}: {source}")]
    KeyfileIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("wrong passphrase for this filesystem")]
    WrongPassphrase,
    #[error("cannot read the passphrase: {0}")]
    PassphraseInput(String),
    #[error("the filesystem was created with key source `{created}`, but `{given}` was given")]
    Mismatch {
        created: &'static str,
        given: &'static str,
    },
    #[error("the stored key material is damaged: {0}")]
    Damaged(String),
}

impl KeySpec {
    pub fn kind(&self) -> &'static str {
        match self {
            KeySpec::Keyfile(_) => "keyfile",
            KeySpec::Passphrase(_) => "passphrase",
            KeySpec::Ephemeral => "ephemeral",
        }
    }

    /// Parses `keyfile:PATH`, `passphrase` or `ephemeral`.
    pub fn parse(text: &str, passphrase: PassphraseInput) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("keyfile", path)) if !path.is_empty() => {
                Ok(KeySpec::Keyfile(PathBuf::from(path)))
            }
            None if text == "passphrase" => Ok(KeySpec::Passphrase(passphrase)),
            None if text == "ephemeral" => Ok(KeySpec::Ephemeral),
            _ => Err(format!(
                "unknown key source `{text}`: expected keyfile:PATH, passphrase or ephemeral"
            )),
        }
    }

    /// Creates the master key of a new filesystem and what the config must remember about it.
    pub fn init(
        &self,
        fs_id: &[u8; 16],
    ) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
        match self {
            KeySpec::Keyfile(path) => Ok((
                local::create_or_read_keyfile(path)?,
                KeySourceDescriptor::Keyfile { path: path.clone() },
            )),
            KeySpec::Passphrase(input) => local::init_passphrase(input, fs_id),
            KeySpec::Ephemeral => Ok((MasterKey::random(), KeySourceDescriptor::Ephemeral)),
        }
    }

    /// Recovers the master key at mount time.
    pub fn resolve(
        &self,
        stored: &KeySourceDescriptor,
        fs_id: &[u8; 16],
    ) -> Result<MasterKey, KeySourceError> {
        match (self, stored) {
            (KeySpec::Keyfile(path), KeySourceDescriptor::Keyfile { .. }) => {
                local::read_keyfile(path)
            }
            (KeySpec::Passphrase(input), KeySourceDescriptor::Passphrase { .. }) => {
                local::unwrap_passphrase(input, stored, fs_id)
            }
            (KeySpec::Ephemeral, KeySourceDescriptor::Ephemeral) => Ok(MasterKey::random()),
            _ => Err(KeySourceError::Mismatch {
                created: stored.kind(),
                given: self.kind(),
            }),
        }
    }
}

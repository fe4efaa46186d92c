//! Where the master key comes from: one `KeySpec` chosen by the user, one `init()` to create a
//! key for a new filesystem and one `resolve()` to recover it at mount. Only a `MasterKey` leaves.

pub mod aws;
#[cfg(test)]
mod fake;
pub mod kms;
pub mod local;
pub mod pins;
pub mod services;
pub mod slots;

pub use services::S3Uri;

use crate::crypto::keys::MasterKey;
use crate::store::config::KeySourceDescriptor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The AWS options of the `kms` and `kms-password` sources; unset fields fall back to what
/// the config recorded at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKeyArgs {
    /// KMS key id, alias or ARN (init, rewrap: the new key).
    pub kms_key: Option<String>,
    /// Where the wrapped blob is (init: where to put it; mount: read it from there).
    pub wrapped_key: Option<S3Uri>,
    /// Extra encryption-context pairs (the fs id is always added).
    pub context: Option<BTreeMap<String, String>>,
    /// Overall deadline for all AWS calls of the command.
    pub timeout: Duration,
    /// Replace an existing S3 object at init.
    pub force: bool,
    /// The region of this key (a slot's own region wins over the SDK's chain).
    pub region: Option<String>,
    /// An endpoint URL for KMS and S3 (a slot's own endpoint, e.g. a VPC endpoint).
    pub endpoint: Option<String>,
    /// The key slot these calls are made for, named in their audit events.
    pub slot: Option<u32>,
}

impl Default for AwsKeyArgs {
    fn default() -> Self {
        Self {
            kms_key: None,
            wrapped_key: None,
            context: None,
            timeout: aws::DEFAULT_TIMEOUT,
            force: false,
            region: None,
            endpoint: None,
            slot: None,
        }
    }
}

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
    /// A KMS data key (envelope encryption), blob inline and/or in S3.
    Kms(AwsKeyArgs),
    /// An existing `aws kms encrypt` password object in S3, mixed with the fs id by HKDF.
    KmsPassword(AwsKeyArgs),
    /// A recovery key typed by a person (or read from a descriptor or a command).
    Recovery(PassphraseInput),
}

/// A key made for a new slot, and the recovery key's printable form when it is one (shown to
/// the user once, never stored).
pub struct NewKey {
    pub key: MasterKey,
    pub descriptor: KeySourceDescriptor,
    pub recovery_text: Option<zeroize::Zeroizing<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("key file {path} does not exist; create it with `secretfs init --key keyfile:{path}`")]
    KeyfileMissing { path: PathBuf },
    #[error("key file {path} must hold exactly 32 bytes, it holds {len}")]
    KeyfileLength { path: PathBuf, len: u64 },
    #[error("key file {path} is readable or writable by group/others (mode {mode:o}); run `chmod 0400 {path}`")]
    KeyfileInsecure { path: PathBuf, mode: u32 },
    #[error("key file {path} is owned by uid {uid}, not root; run `chown root: {path}`")]
    KeyfileOwner { path: PathBuf, uid: u32 },
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
    #[error("--key kms needs --kms-key ID|ALIAS|ARN naming the KMS key that wraps the master key")]
    KmsKeyMissing,
    #[error("--key kms-password needs --wrapped-key s3://BUCKET/KEY naming the encrypted password object")]
    WrappedKeyMissing,
    #[error("this key does not open this filesystem (config MAC mismatch): the blob belongs to another filesystem; nothing was changed")]
    DoesNotOpen,
    #[error(
        "wrong recovery key for this filesystem (it is well formed, but opens no recovery slot)"
    )]
    WrongRecoveryKey,
    #[error("{0}; type it again (groups of 6 digits, dashes optional)")]
    RecoveryKeyForm(#[from] crate::crypto::recovery::RecoveryKeyError),
    #[error("slot {slot} ({kind}) does not open this filesystem: its key does not unwrap the master key")]
    SlotDoesNotOpen { slot: u32, kind: &'static str },
    #[error("a recovery key cannot be the only key: add it with `init --recovery` or `secretfs key add --new-key recovery`")]
    RecoveryAlone,
    #[error(transparent)]
    Aws(#[from] aws::AwsError),
}

impl KeySpec {
    pub fn kind(&self) -> &'static str {
        match self {
            KeySpec::Keyfile(_) => "keyfile",
            KeySpec::Passphrase(_) => "passphrase",
            KeySpec::Ephemeral => "ephemeral",
            KeySpec::Kms(_) => "kms",
            KeySpec::KmsPassword(_) => "kms-password",
            KeySpec::Recovery(_) => "recovery",
        }
    }

    /// Whether resolving this source calls AWS (and so is bound by a deadline).
    pub fn uses_aws(&self) -> bool {
        matches!(self, KeySpec::Kms(_) | KeySpec::KmsPassword(_))
    }

    /// The AWS options, for the sources that have them.
    pub fn aws_args(&self) -> Option<&AwsKeyArgs> {
        match self {
            KeySpec::Kms(a) | KeySpec::KmsPassword(a) => Some(a),
            _ => None,
        }
    }

    pub fn aws_args_mut(&mut self) -> Option<&mut AwsKeyArgs> {
        match self {
            KeySpec::Kms(a) | KeySpec::KmsPassword(a) => Some(a),
            _ => None,
        }
    }

    /// Parses `keyfile:PATH`, `passphrase`, `ephemeral`, `kms` or `kms-password` (the AWS
    /// options come from their own flags, see `aws_args_mut`).
    pub fn parse(text: &str, passphrase: PassphraseInput) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("keyfile", path)) if !path.is_empty() => {
                Ok(KeySpec::Keyfile(PathBuf::from(path)))
            }
            None if text == "passphrase" => Ok(KeySpec::Passphrase(passphrase)),
            None if text == "ephemeral" => Ok(KeySpec::Ephemeral),
            None if text == "kms" => Ok(KeySpec::Kms(AwsKeyArgs::default())),
            None if text == "kms-password" => Ok(KeySpec::KmsPassword(AwsKeyArgs::default())),
            None if text == "recovery" => Ok(KeySpec::Recovery(passphrase)),
            _ => Err(format!(
                "unknown key source `{text}`: expected keyfile:PATH, passphrase, ephemeral, kms, kms-password or recovery"
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
            KeySpec::Kms(args) => kms::init_kms(args, fs_id),
            KeySpec::KmsPassword(args) => kms::init_kms_password(args, fs_id),
            KeySpec::Recovery(_) => Err(KeySourceError::RecoveryAlone),
        }
    }

    /// Makes the key of a new slot: what `init` makes for every source, and for a recovery
    /// slot a fresh recovery key, returned in its printable form.
    pub fn create(&self, fs_id: &[u8; 16]) -> Result<NewKey, KeySourceError> {
        if let KeySpec::Recovery(_) = self {
            let recovery = crate::crypto::recovery::RecoveryKey::generate();
            return Ok(NewKey {
                key: recovery.slot_key(fs_id),
                descriptor: KeySourceDescriptor::Recovery,
                recovery_text: Some(recovery.display()),
            });
        }
        let (key, descriptor) = self.init(fs_id)?;
        Ok(NewKey {
            key,
            descriptor,
            recovery_text: None,
        })
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
            (KeySpec::Kms(args), KeySourceDescriptor::Kms { .. }) => {
                kms::resolve_kms(args, stored, fs_id)
            }
            (KeySpec::KmsPassword(args), KeySourceDescriptor::KmsPassword { .. }) => {
                kms::resolve_kms_password(args, stored, fs_id)
            }
            (KeySpec::Recovery(input), KeySourceDescriptor::Recovery) => {
                let text = local::read_secret(input, "secretfs recovery key: ", false)?;
                let recovery = crate::crypto::recovery::RecoveryKey::parse(&text)?;
                Ok(recovery.slot_key(fs_id))
            }
            _ => Err(KeySourceError::Mismatch {
                created: stored.kind(),
                given: self.kind(),
            }),
        }
    }
}

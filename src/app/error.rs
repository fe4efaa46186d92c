//! The one error type of the library's API: what failed, its class, a hint for the user and the
//! layer error behind it. The command line turns the class into an exit code (cli::exit_code).

use crate::block::BlockError;
use crate::keysource::aws::ErrorClass;
use crate::keysource::KeySourceError;
use crate::store::config::ConfigError;

/// What kind of failure this is: the part a caller branches on (and the CLI maps to exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything not covered below (an I/O error, a bug).
    Failure,
    /// Bad arguments or mount options.
    Usage,
    /// The key could not be obtained or does not open the filesystem.
    Key,
    /// The backing store is missing, not initialised, already initialised or damaged.
    Backing,
    /// The mount itself failed (mount point missing or busy, FUSE unavailable).
    Mount,
    /// The path is not a mounted secretfs, or cannot be unmounted.
    NotMounted,
    /// AWS refused or lacks something: credentials, permission, key state, S3 object.
    Aws,
    /// AWS could not be reached before the deadline: retrying later may work.
    AwsUnreachable,
}

impl ErrorKind {
    const ALL: [ErrorKind; 8] = [
        ErrorKind::Failure,
        ErrorKind::Usage,
        ErrorKind::Key,
        ErrorKind::Backing,
        ErrorKind::Mount,
        ErrorKind::NotMounted,
        ErrorKind::Aws,
        ErrorKind::AwsUnreachable,
    ];

    /// A stable word for the kind, as the daemon reports it through the readiness pipe.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Failure => "failure",
            ErrorKind::Usage => "usage",
            ErrorKind::Key => "key",
            ErrorKind::Backing => "backing",
            ErrorKind::Mount => "mount",
            ErrorKind::NotMounted => "not-mounted",
            ErrorKind::Aws => "aws",
            ErrorKind::AwsUnreachable => "aws-unreachable",
        }
    }

    pub fn from_word(word: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    #[source]
    cause: Option<Cause>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            cause: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn caused_by(kind: ErrorKind, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            kind,
            message: cause.to_string(),
            hint: None,
            cause: Some(Box::new(cause)),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    pub fn key(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Key, message)
    }

    pub fn backing(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backing, message)
    }

    pub fn mount(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Mount, message)
    }

    pub fn not_mounted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotMounted, message)
    }

    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failure, message)
    }

    /// The layer error behind this one, to match on its variant.
    pub fn cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.cause.as_deref().and_then(|c| c.downcast_ref())
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        match &e {
            ConfigError::MacMismatch => Error::caused_by(ErrorKind::Key, e).hint(
                "check --key / key=; a config edited by hand cannot be trusted and is refused",
            ),
            _ => Error::caused_by(ErrorKind::Backing, e),
        }
    }
}

fn key_kind(e: &KeySourceError) -> ErrorKind {
    match e {
        KeySourceError::Aws(aws) => match aws.class() {
            ErrorClass::Transient => ErrorKind::AwsUnreachable,
            ErrorClass::WrongKey => ErrorKind::Key,
            ErrorClass::Permanent => ErrorKind::Aws,
        },
        KeySourceError::KmsKeyMissing
        | KeySourceError::WrappedKeyMissing
        | KeySourceError::RecoveryAlone => ErrorKind::Usage,
        _ => ErrorKind::Key,
    }
}

impl From<KeySourceError> for Error {
    fn from(e: KeySourceError) -> Self {
        Error::caused_by(key_kind(&e), e)
    }
}

impl From<BlockError> for Error {
    fn from(e: BlockError) -> Self {
        let (kind, hint): (ErrorKind, Option<String>) = match &e {
            BlockError::NotRoot => (ErrorKind::Mount, Some("run it with sudo".into())),
            BlockError::NoDeviceMapper => (ErrorKind::Mount, Some(
                "load it with `modprobe dm-crypt` if the kernel has it as a module; otherwise use file mode: `secretfs init DIR` then `secretfs mount DIR MOUNTPOINT` (FUSE, no device-mapper needed)".into(),
            )),
            BlockError::ToolMissing { package, .. } => {
                (ErrorKind::Mount, Some(format!("apt-get install {package}")))
            }
            BlockError::WrongKey => (ErrorKind::Key, Some(
                "check --key: it must be the key source this volume was formatted with (see `secretfs status`)".into(),
            )),
            BlockError::SlotRefused { .. } => (ErrorKind::Key, Some(
                "check --key / --slot: `secretfs key list DEVICE` shows each slot's source".into(),
            )),
            BlockError::NotAVolume { .. } => (ErrorKind::Backing, Some(
                "block mode: a device or image file opened by `secretfs block open`; file mode: a backing directory".into(),
            )),
            BlockError::Busy { .. } => (ErrorKind::Mount, Some(
                "see `lsblk`, `dmsetup ls` and `findmnt`; close it first with `secretfs block close`".into(),
            )),
            BlockError::Foreign { .. } => (ErrorKind::Backing, Some(
                "pick another device, or pass --format always to destroy what is there".into(),
            )),
            BlockError::BlankRefused { .. } => (ErrorKind::Backing, Some(
                "use --format auto to create a new volume on it".into(),
            )),
            BlockError::SizeNeeded { .. } => (ErrorKind::Usage, Some("e.g. --size 10G".into())),
            BlockError::BadTarget { .. } | BlockError::KeyNeeded { .. } => (ErrorKind::Usage, None),
            BlockError::BadMountpoint { path } => (
                ErrorKind::Mount,
                Some(format!("create it first: mkdir -p {}", path.display())),
            ),
            BlockError::NotOpen { .. } => (ErrorKind::NotMounted, None),
            BlockError::Key(k) => (key_kind(k), None),
            BlockError::Io { .. } | BlockError::Tool { .. } => (ErrorKind::Failure, None),
        };
        let err = Error::caused_by(kind, e);
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_readiness_pipe() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_word(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::from_word("bogus"), None);
    }

    #[test]
    fn layer_errors_keep_their_class_and_cause() {
        let e: Error = ConfigError::MacMismatch.into();
        assert_eq!(e.kind, ErrorKind::Key);
        assert!(matches!(e.cause(), Some(ConfigError::MacMismatch)));
        let e: Error = KeySourceError::KmsKeyMissing.into();
        assert_eq!(e.kind, ErrorKind::Usage);
        let e: Error = BlockError::Key(KeySourceError::KmsKeyMissing).into();
        assert_eq!(
            e.kind,
            ErrorKind::Usage,
            "a key error inside block keeps its class"
        );
        // A wrong or mistyped recovery key is a key problem (exit 3), asking for one alone a
        // usage problem.
        for (e, kind) in [
            (KeySourceError::WrongRecoveryKey, ErrorKind::Key),
            (
                KeySourceError::RecoveryKeyForm(
                    crate::crypto::recovery::RecoveryKeyError::Checksum,
                ),
                ErrorKind::Key,
            ),
            (
                KeySourceError::SlotDoesNotOpen {
                    slot: 2,
                    kind: "keyfile",
                },
                ErrorKind::Key,
            ),
            (KeySourceError::RecoveryAlone, ErrorKind::Usage),
        ] {
            assert_eq!(Error::from(e).kind, kind);
        }
        let e: Error = BlockError::NotRoot.into();
        assert_eq!(
            (e.kind, e.hint.as_deref()),
            (ErrorKind::Mount, Some("run it with sudo"))
        );
    }
}

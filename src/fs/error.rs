//! The error of a filesystem operation: the errno the caller gets and what caused it (tampered
//! data, or an unexpected error of the store), which the FUSE boundary audits or logs once.

use fuser::Errno;

/// What authentication refused: the kind of object (`block`, `name`, `symlink`, …), the inode
/// and what was wrong. The caller sees only EIO; the audit log gets this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    pub what: &'static str,
    pub ino: u64,
    pub detail: String,
}

/// An errno and, where it is worth telling, its cause: the integrity failure behind an EIO, or
/// the store's own error when it is EIO or carries no errno (a disk error, an object of the
/// wrong type). Expected errors (ENOENT, EEXIST, EACCES, ENOSPC…) carry only their errno, so
/// they cost no allocation on the paths where they are common (negative lookups).
#[derive(Debug)]
pub struct Error {
    errno: Errno,
    cause: Option<Box<Cause>>,
}

#[derive(Debug)]
enum Cause {
    Integrity(Integrity),
    Store(std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub const fn new(errno: Errno) -> Self {
        Self { errno, cause: None }
    }

    /// Tampered or damaged data: EIO for the caller, an audit event at the boundary.
    pub fn integrity(what: &'static str, ino: u64, detail: impl Into<String>) -> Self {
        Self {
            errno: Errno::EIO,
            cause: Some(Box::new(Cause::Integrity(Integrity {
                what,
                ino,
                detail: detail.into(),
            }))),
        }
    }

    pub fn errno(&self) -> Errno {
        self.errno
    }

    pub fn integrity_failure(&self) -> Option<&Integrity> {
        match self.cause.as_deref() {
            Some(Cause::Integrity(i)) => Some(i),
            _ => None,
        }
    }

    /// The store's error behind an unexpected failure.
    pub fn store_error(&self) -> Option<&std::io::Error> {
        match self.cause.as_deref() {
            Some(Cause::Store(e)) => Some(e),
            _ => None,
        }
    }

    /// Audits an integrity failure, logs a store error: the one place the daemon does, called
    /// only by the FUSE adapter (for failed operations through `report`, and for damage a
    /// listing left out).
    pub fn audit(&self) {
        match self.cause.as_deref() {
            Some(Cause::Integrity(i)) => crate::audit::integrity_failure(i.what, i.ino, &i.detail),
            Some(Cause::Store(e)) => {
                tracing::warn!(errno = self.errno.code(), "backing store: {e}")
            }
            None => {}
        }
    }

    /// Audits (see `audit`) and gives the errno to reply with.
    pub fn report(self) -> Errno {
        self.audit();
        self.errno
    }
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Self {
        Self::new(errno)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let worth_telling = matches!(e.raw_os_error(), None | Some(libc::EIO));
        if !worth_telling {
            return Self::new(Errno::from(e));
        }
        Self {
            errno: Errno::EIO,
            cause: Some(Box::new(Cause::Store(e))),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cause.as_deref() {
            Some(Cause::Integrity(i)) => write!(f, "{} of inode {}: {}", i.what, i.ino, i.detail),
            Some(Cause::Store(e)) => write!(f, "backing store: {e}"),
            None => write!(f, "errno {}", self.errno.code()),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_as_small_as_docs_say() {
        // BENCHMARKS.md: 16 bytes, so Result<FileAttr, Error> grows by no more than that.
        assert_eq!(std::mem::size_of::<Error>(), 16);
    }

    #[test]
    fn integrity_failures_are_eio_with_their_cause() {
        let e = Error::integrity("block", 7, "block 3: tag mismatch");
        assert_eq!(e.errno(), Errno::EIO);
        assert_eq!(
            e.integrity_failure().map(|i| (i.what, i.ino)),
            Some(("block", 7))
        );
        let plain: Error = std::io::Error::from_raw_os_error(libc::ENOENT).into();
        assert_eq!(plain.errno(), Errno::ENOENT);
        assert!(plain.integrity_failure().is_none());
        assert!(
            plain.store_error().is_none(),
            "an expected errno needs no cause"
        );
        assert_eq!(plain.report(), Errno::ENOENT);
        let disk: Error = std::io::Error::from_raw_os_error(libc::EIO).into();
        assert_eq!(disk.errno(), Errno::EIO);
        assert!(disk.store_error().is_some() && disk.integrity_failure().is_none());
        let odd: Error = crate::store::confined::hostile("a FIFO where a file should be").into();
        assert_eq!(odd.errno(), Errno::EIO, "an error without errno is EIO");
        assert!(odd.to_string().contains("FIFO"), "{odd}");
    }
}

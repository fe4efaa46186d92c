//! The error of a filesystem operation: the errno the caller gets and, for tampered data, the
//! integrity failure behind it, which the FUSE boundary (fs/mod.rs) audits once.

use fuser::Errno;

/// What authentication refused: the kind of object (`block`, `name`, `symlink`, …), the inode
/// and what was wrong. The caller sees only EIO; the audit log gets this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrity {
    pub what: &'static str,
    pub ino: u64,
    pub detail: String,
}

/// An errno, flagged with the integrity failure that caused it when there is one. Ordinary
/// errors (ENOENT, EACCES, an I/O error of the store) carry only their errno, so they cost no
/// allocation on the paths where they are common (negative lookups).
#[derive(Debug, PartialEq, Eq)]
pub struct Error {
    errno: Errno,
    integrity: Option<Box<Integrity>>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub const fn new(errno: Errno) -> Self {
        Self {
            errno,
            integrity: None,
        }
    }

    /// Tampered or damaged data: EIO for the caller, an audit event at the boundary.
    pub fn integrity(what: &'static str, ino: u64, detail: impl Into<String>) -> Self {
        Self {
            errno: Errno::EIO,
            integrity: Some(Box::new(Integrity {
                what,
                ino,
                detail: detail.into(),
            })),
        }
    }

    pub fn errno(&self) -> Errno {
        self.errno
    }

    pub fn integrity_failure(&self) -> Option<&Integrity> {
        self.integrity.as_deref()
    }

    /// Audits an integrity failure: the one place the daemon does, called only by the FUSE
    /// adapter (for failed operations through `report`, and for damage a listing left out).
    pub fn audit(&self) {
        if let Some(i) = &self.integrity {
            crate::audit::integrity_failure(i.what, i.ino, &i.detail);
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
        Self::new(Errno::from(e))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.integrity {
            Some(i) => write!(f, "{} of inode {}: {}", i.what, i.ino, i.detail),
            None => write!(f, "errno {}", self.errno.code()),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(plain.report(), Errno::ENOENT);
    }
}

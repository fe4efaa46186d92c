//! The library's API, one module per operation (init, mount, rewrap, pin, fsck, status, umount,
//! block, doctor), each returning the typed `Error` (doctor: a report of typed checks); the
//! command line and the mount helper sit on it.

pub mod block;
pub mod block_slots;
pub mod doctor;
mod error;
pub mod fsck;
pub mod init;
pub mod keys;
pub mod mount;
pub mod pin;
pub mod rewrap;
pub mod slots;
pub mod status;
pub mod umount;

pub use error::{Error, ErrorKind, Result};
pub use keys::{AwsChoice, KeyChoice};

use std::path::{Path, PathBuf};

/// In a `fips` build, fails unless aws-lc runs in FIPS mode; returns the module's description
/// (for the daemon's log), or `None` in other builds.
pub fn require_fips_mode() -> Result<Option<String>> {
    crate::crypto::fips::require_fips_mode().map_err(|e| {
        Error::failure(e).hint("this binary needs the AWS-LC FIPS module it was built with")
    })
}

/// Canonical absolute form of a directory that must exist; `kind` says whose fault it is.
pub fn existing_dir(path: &Path, what: &str, kind: ErrorKind) -> Result<PathBuf> {
    let canon = std::fs::canonicalize(path).map_err(|e| {
        Error::new(
            kind,
            format!("{what} {} is not usable: {e}", path.display()),
        )
        .hint(format!("create it first: mkdir -p {}", path.display()))
    })?;
    if !canon.is_dir() {
        return Err(Error::new(
            kind,
            format!("{what} {} is not a directory", canon.display()),
        ));
    }
    Ok(canon)
}

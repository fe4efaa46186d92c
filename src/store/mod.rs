//! The backing store as secretfs lays it out: every internal name and object (the config file,
//! directory ids, long-name side files, symlink targets), reached only through confined opens.
//!
//! The daemon (`fs/`) and `fsck` both read the store through this module, so fsck judges an
//! object by the same code that serves it.

pub mod config;
pub mod confined;
pub mod layout;
pub mod symlinks;

use std::ffi::CString;

/// A fresh name for an object built beside its final name and renamed into place:
/// `prefix` then 16 random hex digits (internal names contain a '.', as `prefix` must).
pub fn temp_name(prefix: &str) -> std::io::Result<CString> {
    let mut suffix = [0u8; 8];
    crate::crypto::keys::fill_random(&mut suffix);
    CString::new(format!("{prefix}{}", config::hex(&suffix)))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

//! The backing store as secretfs lays it out: every internal name and object (directory ids,
//! long-name side files, symlink targets), reached only through confined, bounded opens.
//!
//! The daemon (`fs/`) and `fsck` both read the store through this module, so fsck judges an
//! object by the same code that serves it.

pub mod confined;
pub mod layout;
pub mod symlinks;

//! The pure parts of secretfs (crypto codecs, config parsing, mount options), compiled straight
//! from ../src so the fuzzers build without FUSE or the AWS SDK; a new dependency there fails here.

#[path = "../../src/config.rs"]
pub mod config;
#[path = "../../src/crypto/mod.rs"]
pub mod crypto;
#[path = "../../src/mountopts.rs"]
pub mod mountopts;
#[path = "../../src/confined.rs"]
pub mod confined;
#[path = "../../src/fs/sys.rs"]
pub mod sys_impl;
/// `confined` reaches the syscall wrappers as `crate::fs::sys`, as in the real crate.
pub mod fs {
    pub use super::sys_impl as sys;
}

//! secretfs: encrypted storage for cloud instances, as a FUSE filesystem (file mode) or dm-crypt
//! (block mode), unlocked by one master key from a pluggable key source.

pub mod app;
pub mod audit;
pub mod block;
pub mod cli;
pub mod crypto;
pub mod daemon;
pub mod fs;
pub mod keysource;
pub mod mountopts;
pub mod mounts;
pub mod store;
pub(crate) mod sys;
#[cfg(test)]
pub(crate) mod testing;

//! secretfs: encrypted storage for cloud instances, as a FUSE filesystem (file mode) or dm-crypt
//! (block mode), unlocked by one master key from a pluggable key source.

pub mod crypto;
pub mod config;
pub mod keysource;
pub mod audit;
pub mod fs;

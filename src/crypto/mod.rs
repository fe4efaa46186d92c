//! Pure cryptography of secretfs: keys and their derivation, the file content codec and the name codec.
//! Nothing here touches files, FUSE or AWS, so every function can be unit-tested and fuzzed in isolation.

pub mod content;
pub mod keys;
pub mod names;

/// Authentication failed or the input is not in the expected shape: the caller decides whether
/// that becomes EIO (data path) or a clear error (config, CLI).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed: the data was modified, truncated or moved")]
    Auth,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}

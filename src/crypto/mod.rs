//! Pure cryptography of secretfs: keys and their derivation, the file content codec and the name codec.
//! Nothing here touches files, FUSE or AWS, so every function can be unit-tested and fuzzed in isolation.

pub mod content;
pub mod fips;
pub mod keys;
pub mod names;
pub mod passthrough;
pub mod recovery;

/// Authentication failed or the input is not in the expected shape: the caller decides whether
/// that becomes EIO (data path) or a clear error (config, CLI).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed: the data was modified, truncated or moved")]
    Auth,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}

/// The codec a mounted filesystem runs with. Production builds have exactly one: the
/// passthrough control's token has values only in builds with the `passthrough-control`
/// feature (see passthrough.rs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// AES-256-GCM contents, AES-SIV names: the on-disk format v1.
    #[default]
    Encrypted,
    /// The identity codec of the comparison benchmark: format v1's layout, no encryption.
    PassthroughControl(passthrough::Passthrough),
}

impl Codec {
    /// The block codec of one file; the encrypted codec derives the file's key here.
    pub fn file_cipher(
        self,
        keys: &keys::KeyRing,
        header: &content::FileHeader,
    ) -> content::FileCipher {
        match self {
            Codec::Encrypted => {
                keys.with_file_key(&header.file_id, |key| content::FileCipher::new(key, header))
            }
            Codec::PassthroughControl(p) => content::FileCipher::identity(p, header),
        }
    }

    /// The name codec of the filesystem.
    pub fn name_cipher(self, keys: &keys::KeyRing) -> names::NameCipher {
        match self {
            Codec::Encrypted => names::NameCipher::new(keys.names_key(), keys.xattr_key()),
            Codec::PassthroughControl(p) => names::NameCipher::identity(p),
        }
    }

    /// The cipher as `status` reports it: what the config names, unless this codec replaced it.
    pub fn cipher_name(self, configured: &str) -> &str {
        match self {
            Codec::Encrypted => configured,
            Codec::PassthroughControl(_) => "none (passthrough control)",
        }
    }
}

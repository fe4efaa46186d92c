//! The passthrough control's identity codec (the comparison benchmark's FUSE baseline): the one
//! module that can store contents and names in clear, and the one switch that compiles it in.

use super::names::{SIV_LEN, XATTR_TAG_LEN};
use super::CryptoError;

// The codecs carry a `Passthrough` in their passthrough variants. With the feature (and in unit
// tests, so the identity codec is always tested) it is a zero-sized token; otherwise a type with
// no values: the variants cannot be built, their match arms are dead and compile away, and the
// data path is the same as if they did not exist. Only this module can make a token.
#[cfg(any(test, feature = "passthrough-control"))]
mod token {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Passthrough(());

    pub const AVAILABLE: Option<Passthrough> = Some(Passthrough(()));
}
#[cfg(not(any(test, feature = "passthrough-control")))]
mod token {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Passthrough {}

    pub const AVAILABLE: Option<Passthrough> = None;
}

/// The identity codec's token; `AVAILABLE` is `Some` only in builds that have the control.
pub use token::{Passthrough, AVAILABLE};

impl Passthrough {
    /// Zeroes a block's nonce and tag slots around the plaintext the caller copied, whatever
    /// nonce it chose: nothing random reaches a control block.
    pub(super) fn seal_block(self, nonce_out: &mut [u8], tag_out: &mut [u8]) {
        nonce_out.fill(0);
        tag_out.fill(0);
    }

    /// Zero nonce and tag are what the identity codec writes; anything else (a real AES-GCM
    /// block above all) is refused rather than served as garbage. Returns whether `out` holds
    /// the block.
    pub(super) fn open_block(self, nonce: &[u8], body: &[u8], tag: &[u8], out: &mut [u8]) -> bool {
        let ours = nonce.iter().chain(tag).all(|b| *b == 0);
        if ours {
            out.copy_from_slice(body);
        }
        ours
    }

    /// A name keeps every shape of an encrypted one, with a zero SIV slot and the plaintext
    /// as it is, so names stay base64url (never colliding with internal names) and have exactly
    /// the lengths of encrypted ones.
    pub(super) fn seal_name(self, plain: &[u8]) -> Vec<u8> {
        [&[0u8; SIV_LEN][..], plain].concat()
    }

    /// A zero SIV slot is what the identity codec writes; a real encrypted name has a random
    /// one and is refused, not shown as garbage.
    pub(super) fn open_name(self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match sealed.split_at(SIV_LEN) {
            (siv, name) if siv.iter().all(|b| *b == 0) => Ok(name.to_vec()),
            _ => Err(CryptoError::Auth),
        }
    }

    /// `out` holds the zero nonce slot and the value; the tag slot stays zero too.
    pub(super) fn seal_xattr_value(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0u8; XATTR_TAG_LEN]);
    }

    /// As for blocks: only zero nonce and tag are this codec's own.
    pub(super) fn open_xattr_value(
        self,
        nonce: &[u8],
        body: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (value, tag) = body.split_at(body.len() - XATTR_TAG_LEN);
        if nonce.iter().chain(tag).all(|b| *b == 0) {
            Ok(value.to_vec())
        } else {
            Err(CryptoError::Auth)
        }
    }
}

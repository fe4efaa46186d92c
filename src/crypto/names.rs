//! Encryption of everything that names something: file names (AES-SIV bound to the parent
//! directory id), symlink targets and `user.*` xattr names and values.

use super::keys::{SecretBytes, NAME_KEY_LEN};
use super::passthrough::Passthrough;
use super::CryptoError;
use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Length of the random id each directory stores (store::layout::DIRID_FILE), the associated
/// data of the names in it.
pub const DIR_ID_LEN: usize = 16;
const SYMLINK_AD: &[u8] = b"secretfs/v1/symlink";
const XATTR_NAME_AD: &[u8] = b"secretfs/v1/xattr-name";
pub const XATTR_USER_PREFIX: &str = "user.";

/// The namespaces stored besides `user.*`, all under the backing file's `user.*` (the kernel
/// itself checks who may set them: CAP_SYS_ADMIN for trusted, CAP_SETFCAP for capabilities).
/// Of `system.*`, only the two POSIX ACL names are stored (sealed the same way).
pub const OTHER_XATTR_PREFIXES: [&str; 2] = ["security.", "trusted."];
pub const ACL_ACCESS_XATTR: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT_XATTR: &[u8] = b"system.posix_acl_default";

pub fn is_other_xattr_namespace(name: &[u8]) -> bool {
    OTHER_XATTR_PREFIXES
        .iter()
        .any(|p| name.starts_with(p.as_bytes()) && name.len() > p.len())
}

/// Names sealed whole behind a NUL: every stored name that is not `user.*`.
fn sealed_whole(name: &[u8]) -> bool {
    is_other_xattr_namespace(name) || name == ACL_ACCESS_XATTR || name == ACL_DEFAULT_XATTR
}

/// AES-SIV's synthetic IV, which leads every sealed name.
pub(super) const SIV_LEN: usize = 16;
/// xattr values: nonce ‖ AES-256-GCM(value) ‖ tag.
const XATTR_NONCE_LEN: usize = 12;
pub(super) const XATTR_TAG_LEN: usize = 16;
const XATTR_OVERHEAD: usize = XATTR_NONCE_LEN + XATTR_TAG_LEN;

/// Holds the name key and the xattr value key of one filesystem.
pub struct NameCipher {
    codec: NameCodec,
}

/// What turns names and xattr values into their stored bytes. The stored shapes (base64url
/// with a 16-byte SIV slot, nonce ‖ value ‖ tag) are the same for every codec.
enum NameCodec {
    Aead {
        siv_key: SecretBytes<NAME_KEY_LEN>,
        xattr_values: RandomizedNonceKey,
    },
    /// Benchmark builds only: the passthrough control keeps every shape but zeroes the SIV,
    /// nonce and tag slots and leaves the plaintext as it is, so names stay base64url (never
    /// colliding with internal names) and have exactly the lengths of encrypted ones.
    Identity(Passthrough),
}

impl NameCipher {
    pub fn new(siv_key: &SecretBytes<NAME_KEY_LEN>, xattr_key: &SecretBytes<32>) -> Self {
        // Only fails for a wrong key length, and the length is fixed by the type.
        let xattr_values = RandomizedNonceKey::new(&AES_256_GCM, xattr_key.expose())
            .unwrap_or_else(|_| unreachable!());
        Self {
            codec: NameCodec::Aead {
                siv_key: SecretBytes::from_slice(siv_key.expose())
                    .unwrap_or_else(|| unreachable!()),
                xattr_values,
            },
        }
    }

    /// The identity codec of the passthrough control: no key, no encryption, same shapes.
    pub fn identity(control: Passthrough) -> Self {
        Self {
            codec: NameCodec::Identity(control),
        }
    }

    fn siv(key: &SecretBytes<NAME_KEY_LEN>) -> Aes256Siv {
        Aes256Siv::new(key.expose().into())
    }

    fn seal(&self, ad: &[u8], plain: &[u8]) -> String {
        let sealed = match &self.codec {
            // AES-SIV only fails for more associated-data items than it supports (126); we pass one.
            NameCodec::Aead { siv_key, .. } => Self::siv(siv_key)
                .encrypt([ad], plain)
                .unwrap_or_else(|_| unreachable!()),
            NameCodec::Identity(control) => control.seal_name(plain),
        };
        URL_SAFE_NO_PAD.encode(sealed)
    }

    fn open(&self, ad: &[u8], encoded: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let sealed = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| CryptoError::Malformed("encrypted name is not base64url"))?;
        if sealed.len() <= SIV_LEN {
            return Err(CryptoError::Malformed("encrypted name is too short"));
        }
        match &self.codec {
            NameCodec::Aead { siv_key, .. } => Self::siv(siv_key)
                .decrypt([ad], &sealed)
                .map_err(|_| CryptoError::Auth),
            NameCodec::Identity(control) => control.open_name(&sealed),
        }
    }

    /// Encrypts one path component for the directory whose id is `dir_id`: its full encoding
    /// (base64url, never a '.'), which `store::layout::StoredName` lays out in the directory.
    pub fn encrypt_name(&self, dir_id: &[u8; DIR_ID_LEN], name: &[u8]) -> String {
        self.seal(dir_id, name)
    }

    /// Decrypts a full encoding (a short backing name or a long name's side-file content).
    pub fn decrypt_name(
        &self,
        dir_id: &[u8; DIR_ID_LEN],
        full: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let name = self.open(dir_id, full)?;
        if name.is_empty()
            || name.contains(&b'/')
            || name.contains(&0)
            || name == b"."
            || name == b".."
        {
            return Err(CryptoError::Malformed(
                "decrypted name is not a valid file name",
            ));
        }
        Ok(name)
    }

    /// Symlink targets are not bound to a directory, so hard links and renames keep them valid.
    pub fn encrypt_symlink(&self, target: &[u8]) -> String {
        self.seal(SYMLINK_AD, target)
    }

    pub fn decrypt_symlink(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open(SYMLINK_AD, stored)
    }

    /// `user.NAME` → `user.<encrypted NAME>`; other namespaces are not stored encrypted.
    pub fn encrypt_xattr_name(&self, name: &[u8]) -> Option<String> {
        // A user name is sealed without its prefix; the other namespaces whole, behind a NUL
        // (which no attribute name contains), so the two can never be taken for each other.
        let sealed = match name.strip_prefix(XATTR_USER_PREFIX.as_bytes()) {
            Some(rest) => self.seal(XATTR_NAME_AD, rest),
            None if sealed_whole(name) => self.seal(XATTR_NAME_AD, &[&[0u8][..], name].concat()),
            None => return None,
        };
        Some(format!("{XATTR_USER_PREFIX}{sealed}"))
    }

    pub fn decrypt_xattr_name(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = stored
            .strip_prefix(XATTR_USER_PREFIX.as_bytes())
            .ok_or(CryptoError::Malformed("xattr outside the user namespace"))?;
        let plain = self.open(XATTR_NAME_AD, rest)?;
        match plain.split_first() {
            Some((0, full)) if sealed_whole(full) && !full.contains(&0) => Ok(full.to_vec()),
            Some((0, _)) => Err(CryptoError::Malformed("xattr of an unknown namespace")),
            _ => Ok([XATTR_USER_PREFIX.as_bytes(), &plain].concat()),
        }
    }

    /// xattr values: nonce ‖ AES-256-GCM(value) ‖ tag, bound to the encrypted attribute name.
    pub fn seal_xattr_value(&self, stored_name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len() + XATTR_OVERHEAD);
        out.extend_from_slice(&[0u8; XATTR_NONCE_LEN]);
        out.extend_from_slice(value);
        match &self.codec {
            NameCodec::Aead { xattr_values, .. } => {
                // Fails only past GCM's 64 GiB limit (values are at most 64 KiB) or when the
                // module's DRBG fails, after which no nonce can be trusted.
                let (nonce, tag) = xattr_values
                    .seal_in_place_separate_tag(
                        Aad::from(stored_name.as_bytes()),
                        &mut out[XATTR_NONCE_LEN..],
                    )
                    .unwrap_or_else(|_| super::keys::randomness_failed());
                out[..XATTR_NONCE_LEN].copy_from_slice(nonce.as_ref());
                out.extend_from_slice(tag.as_ref());
            }
            NameCodec::Identity(control) => control.seal_xattr_value(&mut out),
        }
        out
    }

    pub fn open_xattr_value(
        &self,
        stored_name: &str,
        stored: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if stored.len() < XATTR_OVERHEAD {
            return Err(CryptoError::Malformed("xattr value is too short"));
        }
        let (nonce_bytes, body) = stored.split_at(XATTR_NONCE_LEN);
        match &self.codec {
            NameCodec::Aead { xattr_values, .. } => {
                let mut nonce = [0u8; XATTR_NONCE_LEN];
                nonce.copy_from_slice(nonce_bytes);
                let mut body = body.to_vec();
                let plain_len = xattr_values
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(stored_name.as_bytes()),
                        &mut body,
                    )
                    .map_err(|_| CryptoError::Auth)?
                    .len();
                body.truncate(plain_len);
                Ok(body)
            }
            NameCodec::Identity(control) => control.open_xattr_value(nonce_bytes, body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cipher() -> NameCipher {
        NameCipher::new(
            &SecretBytes::from_slice(&[3u8; 64]).unwrap(),
            &SecretBytes::from_slice(&[4u8; 32]).unwrap(),
        )
    }

    #[test]
    fn names_are_deterministic_per_directory() {
        let c = cipher();
        let a = c.encrypt_name(&[1; 16], b"report.pdf");
        assert_eq!(a, c.encrypt_name(&[1; 16], b"report.pdf"));
        assert_ne!(a, c.encrypt_name(&[2; 16], b"report.pdf"));
        let enc = &a;
        assert!(!enc.contains("report"));
        assert_eq!(
            c.decrypt_name(&[1; 16], enc.as_bytes()).unwrap(),
            b"report.pdf"
        );
        assert_eq!(
            c.decrypt_name(&[2; 16], enc.as_bytes()),
            Err(CryptoError::Auth)
        );
    }

    #[test]
    fn flipped_name_bit_is_rejected() {
        let c = cipher();
        let enc = c.encrypt_name(&[1; 16], b"secret");
        let mut raw = URL_SAFE_NO_PAD.decode(&enc).unwrap();
        raw[5] ^= 0x40;
        let tampered = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            c.decrypt_name(&[1; 16], tampered.as_bytes()),
            Err(CryptoError::Auth)
        );
        assert!(c.decrypt_name(&[1; 16], b"not base64 !").is_err());
    }

    #[test]
    fn symlinks_and_xattrs_round_trip() {
        let c = cipher();
        let t = c.encrypt_symlink(b"../target/file");
        assert_eq!(c.decrypt_symlink(t.as_bytes()).unwrap(), b"../target/file");
        let n = c.encrypt_xattr_name(b"user.mime").unwrap();
        assert!(n.starts_with("user.") && !n.contains("mime"));
        assert_eq!(c.decrypt_xattr_name(n.as_bytes()).unwrap(), b"user.mime");
        for other in [
            &b"security.capability"[..],
            b"trusted.overlay.opaque",
            ACL_ACCESS_XATTR,
            ACL_DEFAULT_XATTR,
        ] {
            let n = c.encrypt_xattr_name(other).unwrap();
            assert!(n.starts_with("user.") && !n.contains("capab") && !n.contains("overlay"));
            assert_eq!(c.decrypt_xattr_name(n.as_bytes()).unwrap(), other);
        }
        // "user.\0security.x" cannot be written, and its sealed form is not security.x's.
        assert_ne!(
            c.encrypt_xattr_name(b"security.capability"),
            c.encrypt_xattr_name(b"user.security.capability")
        );
        for refused in [
            &b"system.posix_acl"[..],
            b"system.posix_acl_access2",
            b"system.sockprotoname",
            b"security.",
            b"other.x",
            b"trusted",
        ] {
            assert!(c.encrypt_xattr_name(refused).is_none(), "{refused:?}");
        }
        let v = c.seal_xattr_value(&n, b"text/plain");
        assert_eq!(c.open_xattr_value(&n, &v).unwrap(), b"text/plain");
        assert_eq!(c.open_xattr_value("user.other", &v), Err(CryptoError::Auth));
    }

    proptest! {
        #[test]
        fn every_valid_name_up_to_255_bytes_round_trips(
            name in proptest::collection::vec(1u8..=255, 1..=255)
                .prop_filter("no slash, not . or ..", |n| !n.contains(&b'/') && n != b"." && n != b"..")
        ) {
            let c = cipher();
            let full = c.encrypt_name(&[9; 16], &name);
            prop_assert!(!full.contains('.'), "an encoding must never look internal");
            prop_assert_eq!(c.decrypt_name(&[9; 16], full.as_bytes()).unwrap(), name);
        }

        #[test]
        fn decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let c = cipher();
            let _ = c.decrypt_name(&[0; 16], &data);
            let _ = c.decrypt_symlink(&data);
            let _ = c.decrypt_xattr_name(&data);
            let _ = c.open_xattr_value("user.x", &data);
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use proptest::prelude::*;

    fn identity() -> NameCipher {
        let control = crate::crypto::passthrough::AVAILABLE;
        NameCipher::identity(control.expect("test builds have the control"))
    }

    fn aead() -> NameCipher {
        NameCipher::new(
            &SecretBytes::from_slice(&[3u8; 64]).unwrap(),
            &SecretBytes::from_slice(&[4u8; 32]).unwrap(),
        )
    }

    fn clear(encoded: &str) -> Vec<u8> {
        let raw = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        assert_eq!(&raw[..SIV_LEN], &[0; SIV_LEN], "SIV slot must be zero");
        raw[SIV_LEN..].to_vec()
    }

    #[test]
    fn identity_names_are_base64url_of_the_plaintext_and_never_internal() {
        let c = identity();
        let stored = c.encrypt_name(&[1; 16], b"report.pdf");
        let enc = &stored;
        assert_eq!(clear(enc), b"report.pdf");
        // No directory binding: the same name is stored the same everywhere.
        assert_eq!(stored, c.encrypt_name(&[2; 16], b"report.pdf"));
        assert_eq!(
            c.decrypt_name(&[2; 16], enc.as_bytes()).unwrap(),
            b"report.pdf"
        );
        // An internal file's name, encoded, is no internal name (it has no '.').
        let internal = c.encrypt_name(&[1; 16], b"secretfs.dirid");
        assert!(!internal.contains('.'));
    }

    #[test]
    fn identity_refuses_encrypted_names_and_values() {
        let (id, real) = (identity(), aead());
        let enc = real.encrypt_name(&[1; 16], b"secret");
        assert_eq!(
            id.decrypt_name(&[1; 16], enc.as_bytes()),
            Err(CryptoError::Auth)
        );
        let clear_name = id.encrypt_name(&[1; 16], b"secret");
        assert_eq!(
            real.decrypt_name(&[1; 16], clear_name.as_bytes()),
            Err(CryptoError::Auth)
        );
        let n = real.encrypt_xattr_name(b"user.k").unwrap();
        assert_eq!(id.decrypt_xattr_name(n.as_bytes()), Err(CryptoError::Auth));
        let v = real.seal_xattr_value(&n, b"value");
        assert_eq!(id.open_xattr_value(&n, &v), Err(CryptoError::Auth));
        assert!(id.decrypt_name(&[1; 16], b"not base64 !").is_err());
        assert!(id.open_xattr_value("user.x", &[0; 27]).is_err());
    }

    #[test]
    fn identity_symlinks_and_xattrs_keep_their_shapes() {
        let (id, real) = (identity(), aead());
        let t = id.encrypt_symlink(b"../target/file");
        assert_eq!(t.len(), real.encrypt_symlink(b"../target/file").len());
        assert_eq!(clear(&t), b"../target/file");
        assert_eq!(id.decrypt_symlink(t.as_bytes()).unwrap(), b"../target/file");
        let n = id.encrypt_xattr_name(b"user.mime").unwrap();
        assert_eq!(
            n.len(),
            real.encrypt_xattr_name(b"user.mime").unwrap().len()
        );
        assert_eq!(clear(n.strip_prefix("user.").unwrap()), b"mime");
        assert_eq!(id.decrypt_xattr_name(n.as_bytes()).unwrap(), b"user.mime");
        assert!(id.encrypt_xattr_name(b"system.sockprotoname").is_none());
        let v = id.seal_xattr_value(&n, b"text/plain");
        assert_eq!(v, [&[0u8; 12][..], b"text/plain", &[0u8; 16]].concat());
        assert_eq!(v.len(), real.seal_xattr_value(&n, b"text/plain").len());
        assert_eq!(id.open_xattr_value(&n, &v).unwrap(), b"text/plain");
        assert_eq!(id.open_xattr_value(&n, &[0; 28]).unwrap(), b"");
    }

    proptest! {
        #[test]
        fn identity_names_have_the_encrypted_length(
            name in proptest::collection::vec(1u8..=255, 1..=255)
                .prop_filter("no slash, not . or ..", |n| !n.contains(&b'/') && n != b"." && n != b"..")
        ) {
            let (id, real) = (identity(), aead());
            let full = id.encrypt_name(&[9; 16], &name);
            // The same length, so the long-name threshold falls on the same name lengths.
            prop_assert_eq!(full.len(), real.encrypt_name(&[9; 16], &name).len());
            prop_assert_eq!(clear(&full), name.clone());
            prop_assert_eq!(id.decrypt_name(&[9; 16], full.as_bytes()).unwrap(), name);
        }

        #[test]
        fn identity_decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let c = identity();
            let _ = c.decrypt_name(&[0; 16], &data);
            let _ = c.decrypt_symlink(&data);
            let _ = c.decrypt_xattr_name(&data);
            let _ = c.open_xattr_value("user.x", &data);
        }
    }
}

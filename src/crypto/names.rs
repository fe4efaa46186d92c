//! Encryption of everything that names something: file names (AES-SIV bound to the parent
//! directory id), long-name hashing, symlink targets and `user.*` xattr names and values.

use super::keys::{SecretBytes, NAME_KEY_LEN};
use super::CryptoError;
use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of the random id that each directory stores in `DIRID_FILE`.
pub const DIR_ID_LEN: usize = 16;
/// Longest backing name most filesystems accept; longer encodings go to a side file.
pub const MAX_STORED_NAME: usize = 255;
/// Internal names all contain a '.', which base64url never produces, so they cannot collide
/// with an encrypted name.
pub const DIRID_FILE: &str = "secretfs.dirid";
pub const CONFIG_FILE: &str = "secretfs.conf";
pub const LONG_NAME_PREFIX: &str = "lname.";
pub const LONG_NAME_SIDE_SUFFIX: &str = ".name";
pub const TEMP_PREFIX: &str = "secretfs.tmp.";
const SYMLINK_AD: &[u8] = b"secretfs/v1/symlink";
const XATTR_NAME_AD: &[u8] = b"secretfs/v1/xattr-name";
pub const XATTR_USER_PREFIX: &str = "user.";

/// How an encrypted name is laid out in the backing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredName {
    /// The encoding itself is the backing name.
    Short(String),
    /// The backing entry is `hashed`; the full encoding lives in the side file `hashed.name`.
    Long { hashed: String, full: String },
}

impl StoredName {
    pub fn backing_name(&self) -> &str {
        match self {
            StoredName::Short(name) => name,
            StoredName::Long { hashed, .. } => hashed,
        }
    }
}

/// Name of the side file holding the full encoding of a long name.
pub fn long_name_side_file(hashed: &str) -> String {
    format!("{hashed}{LONG_NAME_SIDE_SUFFIX}")
}

/// What a backing directory entry is, judged by its name alone.
#[derive(Debug, PartialEq, Eq)]
pub enum BackingEntry<'a> {
    Short(&'a str),
    Long(&'a str),
    Internal,
}

pub fn classify(backing_name: &str) -> BackingEntry<'_> {
    if !backing_name.contains('.') {
        BackingEntry::Short(backing_name)
    } else if backing_name.starts_with(LONG_NAME_PREFIX)
        && !backing_name.ends_with(LONG_NAME_SIDE_SUFFIX)
    {
        BackingEntry::Long(backing_name)
    } else {
        BackingEntry::Internal
    }
}

/// Holds the name key and the xattr value key of one filesystem.
pub struct NameCipher {
    siv_key: SecretBytes<NAME_KEY_LEN>,
    xattr_values: LessSafeKey,
}

impl NameCipher {
    pub fn new(siv_key: &SecretBytes<NAME_KEY_LEN>, xattr_key: &SecretBytes<32>) -> Self {
        let unbound =
            UnboundKey::new(&AES_256_GCM, xattr_key.expose()).unwrap_or_else(|_| unreachable!());
        Self {
            siv_key: SecretBytes::from_slice(siv_key.expose()).unwrap_or_else(|| unreachable!()),
            xattr_values: LessSafeKey::new(unbound),
        }
    }

    fn siv(&self) -> Aes256Siv {
        Aes256Siv::new(self.siv_key.expose().into())
    }

    fn seal(&self, ad: &[u8], plain: &[u8]) -> String {
        // AES-SIV only fails for more associated-data items than it supports (126); we pass one.
        let sealed = self
            .siv()
            .encrypt([ad], plain)
            .unwrap_or_else(|_| unreachable!());
        URL_SAFE_NO_PAD.encode(sealed)
    }

    fn open(&self, ad: &[u8], encoded: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let sealed = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| CryptoError::Malformed("encrypted name is not base64url"))?;
        if sealed.len() <= 16 {
            return Err(CryptoError::Malformed("encrypted name is too short"));
        }
        self.siv()
            .decrypt([ad], &sealed)
            .map_err(|_| CryptoError::Auth)
    }

    /// Encrypts one path component for the directory whose id is `dir_id`.
    pub fn encrypt_name(&self, dir_id: &[u8; DIR_ID_LEN], name: &[u8]) -> StoredName {
        let full = self.seal(dir_id, name);
        if full.len() <= MAX_STORED_NAME {
            return StoredName::Short(full);
        }
        let digest = Sha256::digest(full.as_bytes());
        let hashed = format!("{LONG_NAME_PREFIX}{}", URL_SAFE_NO_PAD.encode(digest));
        StoredName::Long { hashed, full }
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

    /// Checks that a long name's side file belongs to the hashed backing entry.
    pub fn long_name_matches(hashed: &str, full: &[u8]) -> bool {
        let digest = Sha256::digest(full);
        hashed
            .strip_prefix(LONG_NAME_PREFIX)
            .is_some_and(|h| h == URL_SAFE_NO_PAD.encode(digest))
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
        let rest = name.strip_prefix(XATTR_USER_PREFIX.as_bytes())?;
        Some(format!(
            "{XATTR_USER_PREFIX}{}",
            self.seal(XATTR_NAME_AD, rest)
        ))
    }

    pub fn decrypt_xattr_name(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = stored
            .strip_prefix(XATTR_USER_PREFIX.as_bytes())
            .ok_or(CryptoError::Malformed("xattr outside the user namespace"))?;
        let mut name = XATTR_USER_PREFIX.as_bytes().to_vec();
        name.extend(self.open(XATTR_NAME_AD, rest)?);
        Ok(name)
    }

    /// xattr values: nonce ‖ AES-256-GCM(value) ‖ tag, bound to the encrypted attribute name.
    pub fn seal_xattr_value(&self, stored_name: &str, value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        super::keys::fill_random(&mut nonce);
        let mut out = Vec::with_capacity(value.len() + 28);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .xattr_values
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(stored_name.as_bytes()),
                &mut out[12..],
            )
            .unwrap_or_else(|_| unreachable!());
        out.extend_from_slice(tag.as_ref());
        out
    }

    pub fn open_xattr_value(
        &self,
        stored_name: &str,
        stored: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if stored.len() < 28 {
            return Err(CryptoError::Malformed("xattr value is too short"));
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&stored[..12]);
        let mut body = stored[12..].to_vec();
        let plain_len = self
            .xattr_values
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
        let StoredName::Short(enc) = &a else {
            panic!("short name expected")
        };
        assert!(!enc.contains("report"));
        assert_eq!(
            c.decrypt_name(&[1; 16], enc.as_bytes()).unwrap(),
            b"report.pdf"
        );
        assert_eq!(
            c.decrypt_name(&[2; 16], enc.as_bytes()),
            Err(CryptoError::Auth)
        );
        assert_eq!(classify(enc), BackingEntry::Short(enc));
    }

    #[test]
    fn long_names_hash_and_round_trip() {
        let c = cipher();
        let name = vec![b'x'; 255];
        let StoredName::Long { hashed, full } = c.encrypt_name(&[1; 16], &name) else {
            panic!("255-byte name must be long")
        };
        assert!(hashed.len() <= MAX_STORED_NAME);
        assert!(NameCipher::long_name_matches(&hashed, full.as_bytes()));
        assert!(!NameCipher::long_name_matches(&hashed, b"other"));
        assert_eq!(c.decrypt_name(&[1; 16], full.as_bytes()).unwrap(), name);
        assert_eq!(classify(&hashed), BackingEntry::Long(&hashed));
        assert_eq!(
            classify(&long_name_side_file(&hashed)),
            BackingEntry::Internal
        );
        assert_eq!(classify(DIRID_FILE), BackingEntry::Internal);
        assert_eq!(classify(CONFIG_FILE), BackingEntry::Internal);
    }

    #[test]
    fn flipped_name_bit_is_rejected() {
        let c = cipher();
        let enc = c
            .encrypt_name(&[1; 16], b"secret")
            .backing_name()
            .to_string();
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
        assert!(c.encrypt_xattr_name(b"security.selinux").is_none());
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
            let stored = c.encrypt_name(&[9; 16], &name);
            prop_assert!(stored.backing_name().len() <= MAX_STORED_NAME);
            let full = match &stored { StoredName::Short(s) => s.clone(), StoredName::Long { full, .. } => full.clone() };
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

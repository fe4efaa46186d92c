//! The names of a backing directory: internal names, how an encrypted name is laid out (short,
//! or hashed with a side file), and the id and side files themselves, read bounded and checked.

use super::confined;
use crate::crypto::names::DIR_ID_LEN;
use crate::sys;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::io;

/// Longest backing name most filesystems accept; longer encodings go to a side file.
pub const MAX_STORED_NAME: usize = 255;
/// Internal names all contain a '.', which base64url never produces, so they cannot collide
/// with an encrypted name.
pub const DIRID_FILE: &str = "secretfs.dirid";
pub const CONFIG_FILE: &str = "secretfs.conf";
pub const LONG_NAME_PREFIX: &str = "lname.";
pub const LONG_NAME_SIDE_SUFFIX: &str = ".name";
pub const TEMP_PREFIX: &str = "secretfs.tmp.";
/// Largest legal long-name side file: the encoding of a 255-byte name is under 400 bytes.
pub const MAX_SIDE_FILE_LEN: usize = 1024;

/// How an encrypted name is laid out in the backing directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredName {
    /// The encoding itself is the backing name.
    Short(String),
    /// The backing entry is `hashed`; the full encoding lives in the side file `hashed.name`.
    Long { hashed: String, full: String },
}

impl StoredName {
    /// The layout of a full encoding (`NameCipher::encrypt_name`): itself when it fits a
    /// backing name, else `lname.` and the base64url SHA-256 of it.
    pub fn of(full: String) -> StoredName {
        if full.len() <= MAX_STORED_NAME {
            return StoredName::Short(full);
        }
        let hashed = format!("{LONG_NAME_PREFIX}{}", long_name_hash(full.as_bytes()));
        StoredName::Long { hashed, full }
    }

    pub fn backing_name(&self) -> &str {
        match self {
            StoredName::Short(name) => name,
            StoredName::Long { hashed, .. } => hashed,
        }
    }
}

fn long_name_hash(full: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, full))
}

/// Checks that a long name's side file belongs to the hashed backing entry.
pub fn long_name_matches(hashed: &str, full: &[u8]) -> bool {
    hashed
        .strip_prefix(LONG_NAME_PREFIX)
        .is_some_and(|h| h == long_name_hash(full))
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

/// Reads a directory's id: a regular file of exactly `DIR_ID_LEN` bytes, or a hostile error.
pub fn read_dir_id(dir_fd: i32) -> io::Result<[u8; DIR_ID_LEN]> {
    let name = sys::cstring(DIRID_FILE.as_bytes())?;
    let bytes = confined::read_bounded(dir_fd, &name, DIR_ID_LEN)?;
    <[u8; DIR_ID_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| confined::hostile(format!("directory id file holds {} bytes", bytes.len())))
}

/// Writes a directory's id file crash-safely (gocryptfs lost directories whose id file was empty
/// after a crash): a fsync'd temporary renamed into place without replacing anything, so two
/// racing repairs cannot both write one, then the directory fsync'd.
pub fn write_dir_id(dir_fd: i32, id: &[u8; DIR_ID_LEN]) -> io::Result<()> {
    let name = sys::cstring(DIRID_FILE.as_bytes())?;
    confined::put_file(
        dir_fd,
        &name,
        id,
        0o400,
        TEMP_PREFIX,
        confined::Existing::Keep,
    )
}

/// The full encoding of the long name `hashed` from its side file; a hostile error when the
/// side file is not a bounded regular file or does not hash to `hashed`.
pub fn read_long_name(dir_fd: i32, hashed: &str) -> io::Result<Vec<u8>> {
    let side = sys::cstring(long_name_side_file(hashed).as_bytes())?;
    let full = confined::read_bounded(dir_fd, &side, MAX_SIDE_FILE_LEN)?;
    if long_name_matches(hashed, &full) {
        Ok(full)
    } else {
        Err(confined::hostile(
            "the side file does not belong to this entry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::SecretBytes;
    use crate::crypto::names::NameCipher;
    use proptest::prelude::*;

    fn cipher() -> NameCipher {
        NameCipher::new(
            &SecretBytes::from_slice(&[3u8; 64]).unwrap(),
            &SecretBytes::from_slice(&[4u8; 32]).unwrap(),
        )
    }

    #[test]
    fn short_names_are_their_encoding() {
        let full = cipher().encrypt_name(&[1; 16], b"report.pdf");
        let stored = StoredName::of(full.clone());
        assert_eq!(stored, StoredName::Short(full.clone()));
        assert_eq!(classify(&full), BackingEntry::Short(&full));
    }

    #[test]
    fn long_names_hash_and_round_trip() {
        let c = cipher();
        let name = vec![b'x'; 255];
        let StoredName::Long { hashed, full } = StoredName::of(c.encrypt_name(&[1; 16], &name))
        else {
            panic!("255-byte name must be long")
        };
        assert!(hashed.len() <= MAX_STORED_NAME);
        assert!(long_name_matches(&hashed, full.as_bytes()));
        assert!(!long_name_matches(&hashed, b"other"));
        assert_eq!(c.decrypt_name(&[1; 16], full.as_bytes()).unwrap(), name);
        assert_eq!(classify(&hashed), BackingEntry::Long(&hashed));
        assert_eq!(
            classify(&long_name_side_file(&hashed)),
            BackingEntry::Internal
        );
        assert_eq!(classify(DIRID_FILE), BackingEntry::Internal);
        assert_eq!(classify(CONFIG_FILE), BackingEntry::Internal);
        assert_eq!(classify("secretfs.tmp.0123"), BackingEntry::Internal);
    }

    proptest! {
        #[test]
        fn every_valid_name_up_to_255_bytes_fits_and_round_trips(
            name in proptest::collection::vec(1u8..=255, 1..=255)
                .prop_filter("no slash, not . or ..", |n| !n.contains(&b'/') && n != b"." && n != b"..")
        ) {
            let c = cipher();
            let stored = StoredName::of(c.encrypt_name(&[9; 16], &name));
            prop_assert!(stored.backing_name().len() <= MAX_STORED_NAME);
            prop_assert!(!matches!(classify(stored.backing_name()), BackingEntry::Internal));
            let full = match &stored {
                StoredName::Short(s) => s.clone(),
                StoredName::Long { hashed, full } => {
                    prop_assert!(long_name_matches(hashed, full.as_bytes()));
                    prop_assert_eq!(classify(hashed), BackingEntry::Long(hashed));
                    full.clone()
                }
            };
            prop_assert_eq!(c.decrypt_name(&[9; 16], full.as_bytes()).unwrap(), name);
        }

        #[test]
        fn the_identity_codec_goes_long_on_the_same_names(
            name in proptest::collection::vec(1u8..=255, 1..=255)
                .prop_filter("no slash, not . or ..", |n| !n.contains(&b'/') && n != b"." && n != b"..")
        ) {
            let control = crate::crypto::passthrough::AVAILABLE.expect("test builds have the control");
            let id = StoredName::of(NameCipher::identity(control).encrypt_name(&[9; 16], &name));
            let real = StoredName::of(cipher().encrypt_name(&[9; 16], &name));
            prop_assert_eq!(id.backing_name().len(), real.backing_name().len());
            prop_assert_eq!(std::mem::discriminant(&id), std::mem::discriminant(&real));
        }
    }
}

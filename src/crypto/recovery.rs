//! The recovery key: 256 random bits a person writes down once and types back in an emergency,
//! in groups that each catch a typo, plus a checksum group that catches a lost or swapped one.
//!
//! Shape (as BitLocker's recovery password, widened to 256 bits): 16 groups of 6 decimal digits,
//! each the multiple of 11 of one big-endian 16-bit word of the key, then a 17th group, the
//! multiple of 11 of the first two bytes of SHA-256(key) read big-endian. Digits only, so it can
//! be typed on any keyboard layout and read over a phone; a group that is not a multiple of 11,
//! or whose quotient is 65,536 or more, is mistyped and is named in the error.

use super::keys::{HkdfPrk, SecretBytes, KEY_LEN};
use zeroize::Zeroizing;

/// Groups that carry the key, then the checksum group.
pub const KEY_GROUPS: usize = KEY_LEN / 2;
pub const GROUPS: usize = KEY_GROUPS + 1;
const GROUP_DIGITS: usize = 6;
/// HKDF label of the key that wraps the master key in a recovery slot (salt: the fs id).
pub const LABEL_RECOVERY_SLOT: &[u8] = b"secretfs/v1/recovery-slot";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecoveryKeyError {
    #[error("a recovery key is {GROUPS} groups of {GROUP_DIGITS} digits; this has {0} groups")]
    GroupCount(usize),
    #[error("group {0} of the recovery key is mistyped (not {GROUP_DIGITS} digits)")]
    GroupShape(usize),
    #[error("group {0} of the recovery key is mistyped (its check digit does not match)")]
    GroupCheck(usize),
    #[error("the recovery key's checksum (group {GROUPS}) does not match: a group is mistyped, missing or out of order")]
    Checksum,
}

/// A recovery key in memory: locked and wiped like every other key.
pub struct RecoveryKey {
    key: SecretBytes<KEY_LEN>,
}

impl RecoveryKey {
    pub fn generate() -> Self {
        Self {
            key: SecretBytes::random(),
        }
    }

    pub fn from_bytes(key: SecretBytes<KEY_LEN>) -> Self {
        Self { key }
    }

    pub fn bytes(&self) -> &SecretBytes<KEY_LEN> {
        &self.key
    }

    /// The form shown once at creation: `dddddd-dddddd-…`, 17 groups.
    pub fn display(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(GROUPS * (GROUP_DIGITS + 1)));
        let words = self
            .key
            .expose()
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .chain(std::iter::once(checksum(self.key.expose())));
        for (i, word) in words.enumerate() {
            if i > 0 {
                out.push('-');
            }
            // Written straight into the zeroizing buffer: no temporary String holds a group.
            let mut value = u32::from(word) * 11;
            let mut digits = [b'0'; GROUP_DIGITS];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (value % 10) as u8;
                value /= 10;
            }
            out.extend(digits.iter().map(|&d| char::from(d)));
        }
        out
    }

    /// Reads a typed recovery key; groups may be separated by dashes, spaces or nothing.
    pub fn parse(text: &str) -> Result<Self, RecoveryKeyError> {
        let digits: Zeroizing<Vec<u8>> = Zeroizing::new(
            text.bytes()
                .filter(|b| !matches!(b, b'-' | b' ' | b'\t' | b'\n' | b'\r'))
                .collect(),
        );
        let groups: Vec<&[u8]> = if text.contains(['-', ' ']) {
            // With separators, each group is judged on its own, so a missing digit is named.
            text.split(['-', ' '])
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::as_bytes)
                .collect()
        } else {
            digits.chunks(GROUP_DIGITS).collect()
        };
        if groups.len() != GROUPS {
            return Err(RecoveryKeyError::GroupCount(groups.len()));
        }
        let mut key = SecretBytes::<KEY_LEN>::zeroed();
        let mut check = 0u16;
        for (i, group) in groups.iter().enumerate() {
            if group.len() != GROUP_DIGITS || !group.iter().all(u8::is_ascii_digit) {
                return Err(RecoveryKeyError::GroupShape(i + 1));
            }
            let value = group.iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
            if value % 11 != 0 || value / 11 > u32::from(u16::MAX) {
                return Err(RecoveryKeyError::GroupCheck(i + 1));
            }
            let word = (value / 11) as u16;
            if i < KEY_GROUPS {
                key.expose_mut()[2 * i..2 * i + 2].copy_from_slice(&word.to_be_bytes());
            } else {
                check = word;
            }
        }
        if check != checksum(key.expose()) {
            return Err(RecoveryKeyError::Checksum);
        }
        Ok(Self { key })
    }

    /// The key that wraps the master key in this filesystem's recovery slot.
    pub fn slot_key(&self, fs_id: &[u8; 16]) -> SecretBytes<KEY_LEN> {
        let mut out = SecretBytes::<KEY_LEN>::zeroed();
        HkdfPrk::extract(fs_id, self.key.expose()).expand(&[LABEL_RECOVERY_SLOT], out.expose_mut());
        out
    }
}

fn checksum(key: &[u8; KEY_LEN]) -> u16 {
    // aws-lc's one-shot SHA-256 cleanses its state, which held the key.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    u16::from_be_bytes([digest.as_ref()[0], digest.as_ref()[1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixed() -> RecoveryKey {
        let bytes: Vec<u8> = (0u8..32).collect();
        RecoveryKey::from_bytes(SecretBytes::from_slice(&bytes).unwrap())
    }

    #[test]
    fn the_display_form_is_a_test_vector() {
        // Words 0x0001, 0x0203, … each times 11; the checksum group is SHA-256(00..1f)[0..2]
        // = 0x630d times 11.
        let shown = fixed().display();
        let groups: Vec<&str> = shown.split('-').collect();
        assert_eq!(groups.len(), GROUPS);
        assert_eq!(groups[0], "000011");
        assert_eq!(groups[1], format!("{:06}", 0x0203 * 11));
        assert_eq!(groups[15], format!("{:06}", 0x1e1f * 11));
        assert_eq!(groups[16], format!("{:06}", 0x630d * 11));
        let back = RecoveryKey::parse(&shown).unwrap();
        assert_eq!(back.bytes().expose(), fixed().bytes().expose());
    }

    #[test]
    fn typos_are_caught_and_named() {
        let shown = fixed().display().to_string();
        let mut groups: Vec<String> = shown.split('-').map(String::from).collect();
        // One digit changed in group 4: not a multiple of 11 any more.
        let mut g = groups.clone();
        let d = g[3].as_bytes()[5];
        g[3].replace_range(5..6, &((d - b'0' + 1) % 10).to_string());
        assert_eq!(
            RecoveryKey::parse(&g.join("-")).err(),
            Some(RecoveryKeyError::GroupCheck(4))
        );
        // A digit missing in group 2.
        let mut g = groups.clone();
        g[1].pop();
        assert_eq!(
            RecoveryKey::parse(&g.join("-")).err(),
            Some(RecoveryKeyError::GroupShape(2))
        );
        // Two groups swapped: each is well formed, the checksum is not.
        groups.swap(0, 1);
        assert_eq!(
            RecoveryKey::parse(&groups.join("-")).err(),
            Some(RecoveryKeyError::Checksum)
        );
        // A group left out.
        assert_eq!(
            RecoveryKey::parse(&groups[1..].join("-")).err(),
            Some(RecoveryKeyError::GroupCount(GROUPS - 1))
        );
        assert_eq!(
            RecoveryKey::parse("hello").err(),
            Some(RecoveryKeyError::GroupCount(1))
        );
    }

    #[test]
    fn separators_are_optional_and_the_slot_key_is_bound_to_the_fs() {
        let shown = fixed().display();
        let plain: String = shown.chars().filter(|c| *c != '-').collect();
        let spaced = shown.replace('-', " ");
        for text in [plain.as_str(), spaced.as_str(), &format!("  {}\n", *shown)] {
            let key = RecoveryKey::parse(text).unwrap();
            assert_eq!(key.bytes().expose(), fixed().bytes().expose(), "{text}");
        }
        let k = fixed();
        assert_ne!(k.slot_key(&[1; 16]).expose(), k.slot_key(&[2; 16]).expose());
        assert_ne!(k.slot_key(&[1; 16]).expose(), k.bytes().expose());
    }

    proptest! {
        #[test]
        fn every_key_round_trips_and_any_one_digit_typo_is_refused(
            bytes in proptest::array::uniform32(any::<u8>()),
            at in 0usize..(GROUPS * GROUP_DIGITS),
            bump in 1u8..10,
        ) {
            let key = RecoveryKey::from_bytes(SecretBytes::from_slice(&bytes).unwrap());
            let shown = key.display();
            let back = RecoveryKey::parse(&shown).unwrap();
            prop_assert_eq!(back.bytes().expose(), &bytes);
            let mut digits: Vec<u8> = shown.bytes().filter(|b| *b != b'-').collect();
            digits[at] = b'0' + (digits[at] - b'0' + bump) % 10;
            let typo = String::from_utf8(digits).unwrap();
            prop_assert!(RecoveryKey::parse(&typo).is_err(), "typo at {} accepted", at);
        }
    }
}

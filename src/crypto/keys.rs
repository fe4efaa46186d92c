//! The master key and every key derived from it with HKDF-SHA256, one label per purpose.
//! Key bytes live in zeroized, mlocked buffers; nothing here prints or serialises them.

use hkdf::Hkdf;
use sha2::Sha256;
use std::cell::RefCell;
use zeroize::{Zeroize, Zeroizing};

/// Length of the master key and of the AES-256 keys derived from it.
pub const KEY_LEN: usize = 32;
/// AES-SIV (CMAC) with AES-256 needs two 256-bit keys.
pub const NAME_KEY_LEN: usize = 64;

/// HKDF labels: `secretfs/v1/<purpose>`; the info of a per-file key appends the file id.
pub const LABEL_CONTENT: &[u8] = b"secretfs/v1/content";
pub const LABEL_NAMES: &[u8] = b"secretfs/v1/names";
pub const LABEL_XATTR: &[u8] = b"secretfs/v1/xattr";
pub const LABEL_CONFIG_MAC: &[u8] = b"secretfs/v1/config-mac";
pub const LABEL_LUKS: &[u8] = b"secretfs/v1/luks";
pub const LABEL_PASSWORD: &[u8] = b"secretfs/v1/password-key";

/// A heap buffer of key bytes that is locked in RAM (never swapped) and wiped on drop.
pub struct SecretBytes<const N: usize> {
    bytes: Box<Zeroizing<[u8; N]>>,
}

impl<const N: usize> SecretBytes<N> {
    pub fn zeroed() -> Self {
        let bytes = Box::new(Zeroizing::new([0u8; N]));
        // mlock failing (RLIMIT_MEMLOCK) must not stop a mount: the buffer is still wiped on drop.
        // SAFETY: the pointer and length describe memory owned by `bytes`, alive until drop.
        unsafe { libc::mlock(bytes.as_ptr().cast(), N) };
        Self { bytes }
    }

    pub fn from_slice(src: &[u8]) -> Option<Self> {
        if src.len() != N {
            return None;
        }
        let mut key = Self::zeroed();
        key.bytes.copy_from_slice(src);
        Some(key)
    }

    pub fn random() -> Self {
        let mut key = Self::zeroed();
        fill_random(&mut key.bytes[..]);
        key
    }

    pub fn expose(&self) -> &[u8; N] {
        &self.bytes
    }

    pub fn expose_mut(&mut self) -> &mut [u8; N] {
        &mut self.bytes
    }
}

impl<const N: usize> Drop for SecretBytes<N> {
    fn drop(&mut self) {
        // Zeroizing wipes the bytes when the box drops; unlock the page range afterwards is
        // harmless, so unlock first to keep the pairing obvious.
        // SAFETY: same region that was locked in `zeroed`.
        unsafe { libc::munlock(self.bytes.as_ptr().cast(), N) };
    }
}

impl<const N: usize> std::fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

thread_local! {
    /// Each thread's locked slot for the content key it is deriving. The data path derives a
    /// key for every file it opens; a fresh mlock/munlock pair per key (two VMA updates under
    /// the process-wide mm lock) cost more than the HKDF and the AES key schedule together.
    static FILE_KEY_SLOT: RefCell<SecretBytes<KEY_LEN>> = RefCell::new(SecretBytes::zeroed());
}

/// Wipes a key slot however the borrower leaves (return or panic).
struct WipeOnDrop<'a, const N: usize>(&'a mut SecretBytes<N>);

impl<const N: usize> Drop for WipeOnDrop<'_, N> {
    fn drop(&mut self) {
        self.0.expose_mut().zeroize();
    }
}

/// A keyed hash state (an HMAC or HKDF object) wiped when dropped: keyed with a PRK or a MAC
/// key, its inner and outer SHA-256 states are as good as that key, and the RustCrypto types
/// do not wipe themselves.
pub struct Wiped<T>(std::mem::ManuallyDrop<T>);

impl<T> Wiped<T> {
    /// Only for flat states: integer arrays and counters, no pointer, no heap, no Drop glue
    /// (`Hmac<Sha256>`, `Hkdf<Sha256>`); anything else must not be wrapped.
    pub fn new(state: T) -> Self {
        Self(std::mem::ManuallyDrop::new(state))
    }
}

impl<T> std::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Wiped<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        // SAFETY: `new` admits only flat states, so writing zeros over every byte leaves no
        // resource behind; the value is never used again and, in ManuallyDrop, never dropped.
        unsafe { zeroize::zeroize_flat_type(&mut *self.0 as *mut T) }
    }
}

/// HKDF-SHA256 keyed with `prk`, wiped on drop.
pub fn hkdf_from_prk(prk: &[u8; 32]) -> Wiped<Hkdf<Sha256>> {
    // from_prk only fails for a PRK shorter than the hash: this one is exactly its size.
    Wiped::new(Hkdf::<Sha256>::from_prk(prk).unwrap_or_else(|_| unreachable!()))
}

/// HKDF-SHA256 Extract, the PRK put straight into a locked buffer and the state wiped.
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> SecretBytes<32> {
    let (mut prk_arr, hk) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    drop(Wiped::new(hk));
    let mut prk = SecretBytes::<32>::zeroed();
    prk.expose_mut().copy_from_slice(&prk_arr);
    prk_arr.as_mut_slice().zeroize();
    prk
}

/// Fills `buf` from the OS CSPRNG; a failing kernel RNG is unrecoverable for a crypto filesystem.
pub fn fill_random(buf: &mut [u8]) {
    aws_lc_rs::rand::fill(buf).unwrap_or_else(|_| {
        // ok: the kernel RNG never fails after boot; continuing without randomness is not an option
        std::process::abort()
    });
}

/// The 32-byte root secret of one filesystem, as returned by a key source.
pub type MasterKey = SecretBytes<KEY_LEN>;

/// Everything derived from the master key for one filesystem. Built once per mount.
pub struct KeyRing {
    /// HKDF pseudo-random key: Extract(salt = fs id, ikm = master key).
    prk: SecretBytes<32>,
    names: SecretBytes<NAME_KEY_LEN>,
    xattr: SecretBytes<KEY_LEN>,
    config_mac: SecretBytes<KEY_LEN>,
}

impl KeyRing {
    pub fn new(master: &MasterKey, fs_id: &[u8; 16]) -> Self {
        let prk = hkdf_extract(fs_id, master.expose());
        let mut ring = Self {
            prk,
            names: SecretBytes::zeroed(),
            xattr: SecretBytes::zeroed(),
            config_mac: SecretBytes::zeroed(),
        };
        let mut names = SecretBytes::zeroed();
        ring.expand(&[LABEL_NAMES], names.expose_mut());
        let mut xattr = SecretBytes::zeroed();
        ring.expand(&[LABEL_XATTR], xattr.expose_mut());
        let mut config_mac = SecretBytes::zeroed();
        ring.expand(&[LABEL_CONFIG_MAC], config_mac.expose_mut());
        ring.names = names;
        ring.xattr = xattr;
        ring.config_mac = config_mac;
        ring
    }

    fn expand(&self, info: &[&[u8]], out: &mut [u8]) {
        // expand only fails for an output longer than 255 hashes; outputs here are fixed sizes.
        hkdf_from_prk(self.prk.expose())
            .expand_multi_info(info, out)
            .unwrap_or_else(|_| unreachable!());
    }

    /// The content key of one file: Expand(PRK, LABEL_CONTENT ‖ file id, 32).
    pub fn file_key(&self, file_id: &[u8; 16]) -> SecretBytes<KEY_LEN> {
        let mut key = SecretBytes::zeroed();
        self.expand(&[LABEL_CONTENT, file_id], key.expose_mut());
        key
    }

    /// Lends the content key of one file to `f` from this thread's locked slot, wiped as soon
    /// as `f` returns: what the data path uses (`f` must not derive another key itself).
    pub fn with_file_key<R>(&self, file_id: &[u8; 16], f: impl FnOnce(&[u8; KEY_LEN]) -> R) -> R {
        FILE_KEY_SLOT.with(|slot| {
            let mut slot = slot.borrow_mut();
            let slot = WipeOnDrop(&mut slot);
            self.expand(&[LABEL_CONTENT, file_id], slot.0.expose_mut());
            f(slot.0.expose())
        })
    }

    /// The LUKS keyslot passphrase for block mode.
    pub fn luks_passphrase(&self) -> SecretBytes<KEY_LEN> {
        let mut key = SecretBytes::zeroed();
        self.expand(&[LABEL_LUKS], key.expose_mut());
        key
    }

    pub fn names_key(&self) -> &SecretBytes<NAME_KEY_LEN> {
        &self.names
    }

    pub fn xattr_key(&self) -> &SecretBytes<KEY_LEN> {
        &self.xattr
    }

    pub fn config_mac_key(&self) -> &SecretBytes<KEY_LEN> {
        &self.config_mac
    }
}

/// Length of a wrapped key: nonce(12) ‖ AES-256-GCM(key)(32) ‖ tag(16).
pub const WRAPPED_KEY_LEN: usize = 12 + KEY_LEN + 16;

fn wrapping_key(kek: &SecretBytes<KEY_LEN>) -> aws_lc_rs::aead::LessSafeKey {
    use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
    // A 32-byte key is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek.expose()).unwrap_or_else(|_| unreachable!()))
}

/// Wraps a key under `kek` with AES-256-GCM, bound to `aad` (a passphrase slot binds the fs id),
/// with a fresh random nonce: `nonce ‖ ciphertext ‖ tag`, `WRAPPED_KEY_LEN` bytes.
pub fn wrap_key(kek: &SecretBytes<KEY_LEN>, key: &SecretBytes<KEY_LEN>, aad: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, Nonce};
    let mut nonce = [0u8; 12];
    fill_random(&mut nonce);
    let mut sealed = Zeroizing::new(key.expose().to_vec());
    let tag = wrapping_key(kek)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut sealed[..],
        )
        .unwrap_or_else(|_| unreachable!("a 32-byte message is within GCM's limits"));
    let mut wrapped = nonce.to_vec();
    wrapped.extend_from_slice(&sealed);
    wrapped.extend_from_slice(tag.as_ref());
    wrapped
}

/// Opens what `wrap_key` made; `Auth` for another key, another `aad` or any modified byte.
pub fn unwrap_key(
    kek: &SecretBytes<KEY_LEN>,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes<KEY_LEN>, super::CryptoError> {
    use aws_lc_rs::aead::{Aad, Nonce};
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(super::CryptoError::Malformed(
            "wrapped key has the wrong length",
        ));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&wrapped[..12]);
    let mut body = Zeroizing::new(wrapped[12..].to_vec());
    let plain = wrapping_key(kek)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body[..],
        )
        .map_err(|_| super::CryptoError::Auth)?;
    SecretBytes::from_slice(plain).ok_or(super::CryptoError::Malformed(
        "wrapped key has the wrong length",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_their_key_and_binding() {
        let (kek, key) = (SecretBytes::random(), SecretBytes::random());
        let wrapped = wrap_key(&kek, &key, b"fs-a");
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        assert_ne!(
            wrapped,
            wrap_key(&kek, &key, b"fs-a"),
            "a fresh nonce per wrap"
        );
        assert_eq!(
            unwrap_key(&kek, &wrapped, b"fs-a").unwrap().expose(),
            key.expose()
        );
        assert_eq!(
            unwrap_key(&kek, &wrapped, b"fs-b").err(),
            Some(crate::crypto::CryptoError::Auth)
        );
        assert_eq!(
            unwrap_key(&SecretBytes::random(), &wrapped, b"fs-a").err(),
            Some(crate::crypto::CryptoError::Auth)
        );
        for at in [0, 12, WRAPPED_KEY_LEN - 1] {
            let mut bad = wrapped.clone();
            bad[at] ^= 1;
            assert!(
                unwrap_key(&kek, &bad, b"fs-a").is_err(),
                "byte {at} flipped"
            );
        }
        assert!(unwrap_key(&kek, &wrapped[1..], b"fs-a").is_err());
    }

    #[test]
    fn wiped_states_are_zero_after_drop() {
        let mut slot = std::mem::MaybeUninit::new(Wiped::new([0xA5u8; 64]));
        // SAFETY: the slot holds an initialised Wiped; after drop_in_place its storage is
        // still ours and holds the bytes Drop left there.
        let left = unsafe {
            std::ptr::drop_in_place(slot.as_mut_ptr());
            std::ptr::read(slot.as_ptr().cast::<[u8; 64]>())
        };
        assert_eq!(left, [0u8; 64], "the keyed state survived its drop");
        // HKDF from a wiped state still derives what the plain one does.
        let prk = [3u8; 32];
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        hkdf_from_prk(&prk).expand(b"x", &mut a).unwrap();
        Hkdf::<Sha256>::from_prk(&prk)
            .unwrap()
            .expand(b"x", &mut b)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let master = MasterKey::from_slice(&[7u8; 32]).unwrap();
        let a = KeyRing::new(&master, &[1u8; 16]);
        let b = KeyRing::new(&master, &[1u8; 16]);
        let other_fs = KeyRing::new(&master, &[2u8; 16]);
        assert_eq!(a.file_key(&[9; 16]).expose(), b.file_key(&[9; 16]).expose());
        assert_ne!(a.file_key(&[9; 16]).expose(), a.file_key(&[8; 16]).expose());
        assert_ne!(
            a.file_key(&[9; 16]).expose(),
            other_fs.file_key(&[9; 16]).expose()
        );
        assert_ne!(a.config_mac_key().expose(), a.xattr_key().expose());
        a.with_file_key(&[9; 16], |lent| {
            assert_eq!(lent, a.file_key(&[9; 16]).expose())
        });
        assert_ne!(&a.names_key().expose()[..32], a.xattr_key().expose());
    }

    #[test]
    fn a_lent_file_key_is_wiped_after_use() {
        let ring = KeyRing::new(&MasterKey::from_slice(&[7u8; 32]).unwrap(), &[1u8; 16]);
        let address = ring.with_file_key(&[9; 16], |key| {
            assert_ne!(key, &[0; KEY_LEN]);
            key.as_ptr() as usize
        });
        FILE_KEY_SLOT.with(|slot| {
            let slot = slot.borrow();
            assert_eq!(
                slot.expose().as_ptr() as usize,
                address,
                "one slot per thread"
            );
            assert_eq!(slot.expose(), &[0; KEY_LEN], "the slot still holds the key");
        });
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        // Distinct bytes, looked for as a derived Debug (decimal), {:x} and {:X} would show them.
        let bytes: Vec<u8> = (0..32u8).map(|i| 0xA0 + i % 16 + (i / 16) * 0x10).collect();
        let key = MasterKey::from_slice(&bytes).unwrap();
        for shown in [format!("{key:?}"), format!("{key:#?}")] {
            assert_eq!(shown, "SecretBytes(<redacted>)");
            for b in &bytes[..4] {
                for form in [b.to_string(), format!("{b:02x}"), format!("{b:02X}")] {
                    assert!(!shown.contains(&form), "{shown} shows {form}");
                }
            }
        }
        let ring = KeyRing::new(&key, &[0; 16]);
        assert_eq!(format!("{:?}", ring.names_key()), "SecretBytes(<redacted>)");
    }
}

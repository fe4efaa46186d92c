//! The master key and every key derived from it with HKDF-SHA256, one label per purpose.
//! Key bytes live in zeroized, mlocked buffers; nothing here prints or serialises them.

use aws_lc_rs::{hkdf, hmac};
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

/// An HKDF output length, as aws-lc-rs asks for it.
struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 Extract (RFC 5869 §2.2: PRK = HMAC-SHA256(key = salt, ikm)) written straight into
/// a locked buffer. aws-lc's own `Salt::extract` computes nothing: it keeps a heap copy of the
/// input key and redoes the extract at every expand, which would keep the master key alive
/// for the whole mount. Its HMAC context is cleansed when freed, so no copy of the PRK or of
/// the input is left behind.
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> SecretBytes<32> {
    let mut prk = SecretBytes::<32>::zeroed();
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    hmac::sign_to_buffer(&key, ikm, prk.expose_mut())
        .unwrap_or_else(|_| unreachable!("32 bytes hold an HMAC-SHA256 tag"));
    prk
}

/// An HKDF-SHA256 PRK ready to expand: aws-lc's `Prk`, the only long-lived copy of the PRK,
/// in a locked heap box. aws-lc-rs wipes the `Prk` when it is dropped; its expand
/// (`HKDF_expand`) writes into the caller's buffer and cleanses its own temporaries.
pub struct HkdfPrk {
    prk: Box<hkdf::Prk>,
}

impl HkdfPrk {
    /// Extract(salt, ikm), kept for expansion.
    pub fn extract(salt: &[u8], ikm: &[u8]) -> Self {
        Self::from_prk(&hkdf_extract(salt, ikm))
    }

    pub fn from_prk(prk: &SecretBytes<32>) -> Self {
        let prk = Box::new(hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk.expose()));
        // `new_less_safe` builds the value on this thread's stack and moves it into the box:
        // overwrite where those frames were (once per key ring, not per file).
        scrub_stack();
        // mlock failing (RLIMIT_MEMLOCK) must not stop a mount: the Prk still wipes itself.
        // SAFETY: the pointer and length describe the box's memory, alive until drop.
        unsafe { libc::mlock(std::ptr::from_ref(&*prk).cast(), size_of::<hkdf::Prk>()) };
        Self { prk }
    }

    /// Expand(PRK, the concatenation of `info`, `out.len()`) into `out`.
    pub fn expand(&self, info: &[&[u8]], out: &mut [u8]) {
        // Only an output longer than 255 hashes fails: outputs here are fixed key sizes.
        self.prk
            .expand(info, OkmLen(out.len()))
            .and_then(|okm| okm.fill(out))
            .unwrap_or_else(|_| unreachable!("HKDF-SHA256 output of {} bytes", out.len()));
    }
}

impl Drop for HkdfPrk {
    fn drop(&mut self) {
        // The box (and the Prk's own wipe) drops after this; unlock first, as SecretBytes does.
        // SAFETY: same region that was locked in `from_prk`.
        unsafe {
            libc::munlock(
                std::ptr::from_ref(&*self.prk).cast(),
                size_of::<hkdf::Prk>(),
            )
        };
    }
}

/// Overwrites 4 KiB of stack below the caller's frame, where the frames of the functions it
/// just called were: a key value built there and then moved is not left behind.
#[inline(never)]
fn scrub_stack() {
    let mut scratch = [0u8; 4096];
    scratch.zeroize();
    std::hint::black_box(&scratch);
}

#[cfg(test)]
thread_local! {
    /// How often this thread called `fill_random`: tests tell a nonce aws-lc drew inside a seal
    /// from one we drew and passed in.
    pub(crate) static OUR_DRAWS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Fills `buf` from aws-lc's DRBG (`RAND_bytes`, seeded by the kernel; in the `fips` build the
/// module's approved DRBG); a failing RNG is unrecoverable for a crypto filesystem.
pub fn fill_random(buf: &mut [u8]) {
    #[cfg(test)]
    OUR_DRAWS.with(|n| n.set(n.get() + 1));
    aws_lc_rs::rand::fill(buf).unwrap_or_else(|_| randomness_failed());
}

/// Stops the process when aws-lc cannot produce randomness (its DRBG, or a seal that draws its
/// own nonce, failed): no nonce or key can be trusted after that, so nothing may be sealed. The
/// kernel RNG never fails after boot; the log line says why a mount went away if it ever does.
pub fn randomness_failed() -> ! {
    tracing::error!("aws-lc could not produce random bytes; stopping before anything is sealed");
    std::process::abort()
}

/// The 32-byte root secret of one filesystem, as returned by a key source.
pub type MasterKey = SecretBytes<KEY_LEN>;

/// Everything derived from the master key for one filesystem. Built once per mount.
pub struct KeyRing {
    /// HKDF pseudo-random key: Extract(salt = fs id, ikm = master key).
    prk: HkdfPrk,
    names: SecretBytes<NAME_KEY_LEN>,
    xattr: SecretBytes<KEY_LEN>,
    config_mac: SecretBytes<KEY_LEN>,
}

impl KeyRing {
    pub fn new(master: &MasterKey, fs_id: &[u8; 16]) -> Self {
        let mut ring = Self {
            prk: HkdfPrk::extract(fs_id, master.expose()),
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
        self.prk.expand(info, out);
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

fn wrapping_key(kek: &SecretBytes<KEY_LEN>) -> aws_lc_rs::aead::RandomizedNonceKey {
    use aws_lc_rs::aead::{RandomizedNonceKey, AES_256_GCM};
    // A 32-byte key is always a valid AES-256 key.
    RandomizedNonceKey::new(&AES_256_GCM, kek.expose()).unwrap_or_else(|_| unreachable!())
}

/// Wraps a key under `kek` with AES-256-GCM, bound to `aad` (a passphrase slot binds the fs id),
/// with a nonce aws-lc draws inside the seal: `nonce ‖ ciphertext ‖ tag`, `WRAPPED_KEY_LEN` bytes.
pub fn wrap_key(kek: &SecretBytes<KEY_LEN>, key: &SecretBytes<KEY_LEN>, aad: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::Aad;
    let mut sealed = Zeroizing::new(key.expose().to_vec());
    let (nonce, tag) = wrapping_key(kek)
        .seal_in_place_separate_tag(Aad::from(aad), &mut sealed[..])
        // A 32-byte message is within GCM's limits; only a failed DRBG is left.
        .unwrap_or_else(|_| randomness_failed());
    let mut wrapped = nonce.as_ref().to_vec();
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

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hkdf_matches_rfc_5869_test_case_1() {
        // RFC 5869 A.1 (SHA-256): a 42-byte output spans two HMAC blocks, as the 64-byte
        // names key does.
        let prk = hkdf_extract(&unhex("000102030405060708090a0b0c"), &[0x0b; 22]);
        assert_eq!(
            prk.expose()[..],
            unhex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let expected = unhex(
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        );
        let mut okm = [0u8; 42];
        HkdfPrk::from_prk(&prk).expand(&[&unhex("f0f1f2f3f4f5f6f7f8f9")], &mut okm);
        assert_eq!(okm[..], expected);
        // The info parts are concatenated, as the per-file label ‖ file id relies on.
        let mut split = [0u8; 42];
        HkdfPrk::extract(&unhex("000102030405060708090a0b0c"), &[0x0b; 22]).expand(
            &[&unhex("f0f1f2"), &[], &unhex("f3f4f5f6f7f8f9")],
            &mut split,
        );
        assert_eq!(split, okm);
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

//! The file content format: a header naming the file, then 4096-byte plaintext blocks sealed with
//! AES-256-GCM. Owns the plaintext ⇄ ciphertext offset math and the per-block seal/open.

use super::passthrough::Passthrough;
use super::CryptoError;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, RandomizedNonceKey, UnboundKey, AES_256_GCM};

pub const FORMAT_VERSION: u16 = 1;
pub const FILE_ID_LEN: usize = 16;
/// version (u16 BE) ‖ file id.
pub const HEADER_LEN: usize = 2 + FILE_ID_LEN;
pub const BLOCK_SIZE: usize = 4096;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const BLOCK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
pub const STORED_BLOCK_SIZE: usize = BLOCK_SIZE + BLOCK_OVERHEAD;
const AAD_LEN: usize = HEADER_LEN + 8 + 1;

/// The fixed header at offset 0 of every non-empty content file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub file_id: [u8; FILE_ID_LEN],
}

impl FileHeader {
    pub fn new_random() -> Self {
        let mut file_id = [0u8; FILE_ID_LEN];
        super::keys::fill_random(&mut file_id);
        Self { file_id }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..2].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[2..].copy_from_slice(&self.file_id);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() < HEADER_LEN {
            return Err(CryptoError::Malformed("file header is truncated"));
        }
        if u16::from_be_bytes([bytes[0], bytes[1]]) != FORMAT_VERSION {
            return Err(CryptoError::Malformed("unknown file format version"));
        }
        let mut file_id = [0u8; FILE_ID_LEN];
        file_id.copy_from_slice(&bytes[2..HEADER_LEN]);
        Ok(Self { file_id })
    }
}

/// Plaintext size of a content file whose backing size is `stored`.
/// A header with no block, or a tail too short to hold one byte, is damage, not a size.
pub fn plain_size(stored: u64) -> Result<u64, CryptoError> {
    if stored == 0 {
        return Ok(0);
    }
    let body = stored
        .checked_sub(HEADER_LEN as u64)
        .filter(|b| *b > 0)
        .ok_or(CryptoError::Malformed(
            "content file holds a header but no block",
        ))?;
    let full = body / STORED_BLOCK_SIZE as u64;
    let tail = body % STORED_BLOCK_SIZE as u64;
    if tail != 0 && tail <= BLOCK_OVERHEAD as u64 {
        return Err(CryptoError::Malformed("content file ends inside a block"));
    }
    let tail_plain = tail.saturating_sub(BLOCK_OVERHEAD as u64);
    Ok(full * BLOCK_SIZE as u64 + tail_plain)
}

/// Backing size of a content file holding `plain` bytes.
pub fn stored_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    let full = plain / BLOCK_SIZE as u64;
    let tail = plain % BLOCK_SIZE as u64;
    let tail_stored = if tail == 0 {
        0
    } else {
        tail + BLOCK_OVERHEAD as u64
    };
    HEADER_LEN as u64 + full * STORED_BLOCK_SIZE as u64 + tail_stored
}

/// Backing offset where block `index` starts.
pub fn block_offset(index: u64) -> u64 {
    HEADER_LEN as u64 + index * STORED_BLOCK_SIZE as u64
}

/// Number of blocks a file of `plain` bytes has; the last one is the final block.
pub fn block_count(plain: u64) -> u64 {
    plain.div_ceil(BLOCK_SIZE as u64)
}

/// Seals and opens the blocks of one file with its own key.
pub struct FileCipher {
    codec: BlockCodec,
    header: [u8; HEADER_LEN],
}

/// Who draws a sealed block's nonce from aws-lc's DRBG. Either way it is a fresh random 96-bit
/// nonce; the choice is the build's (`NONCE_DRAW`), so one store is written alike by both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceDraw {
    /// aws-lc draws each nonce inside the seal call (`RandomizedNonceKey`): the IV generation
    /// FIPS 140-3 IG C.H approves, at one DRBG call per block (≈ 0.4 µs of a 1.1 µs 4 KiB seal).
    InSeal,
    /// We draw the nonces of up to 64 blocks with one DRBG call and pass each in: large writes
    /// seal ≈ 1.7× faster, but the module counts a seal with a caller's nonce as not approved.
    Batched,
}

/// The `fips` build seals as the module approves; the others as fast as it allows.
pub const NONCE_DRAW: NonceDraw = if super::fips::FIPS_BUILD {
    NonceDraw::InSeal
} else {
    NonceDraw::Batched
};

/// Nonces drawn with one DRBG call by a `BlockSealer` under `NonceDraw::Batched`.
const NONCE_BATCH: usize = 64;

/// What turns a block's plaintext into its stored body. The layout around it (header, nonce
/// slot, tag slot, final flag, holes) is the same for every codec.
enum BlockCodec {
    Aead {
        /// Opens every block, and seals under `NonceDraw::Batched`.
        key: LessSafeKey,
        /// A second schedule of the same key, present under `NonceDraw::InSeal`: only this
        /// type draws the nonce inside the seal, and it cannot open into a separate buffer.
        in_seal: Option<RandomizedNonceKey>,
    },
    /// Benchmark builds only: the passthrough control stores plaintext with a zero nonce and
    /// tag, so the frontend does the very same I/O as with AES-GCM minus the crypto.
    Identity(Passthrough),
}

impl FileCipher {
    pub fn new(file_key: &[u8; 32], header: &FileHeader) -> Self {
        Self::with_nonce_draw(file_key, header, NONCE_DRAW)
    }

    /// As `new`, with the nonce draw chosen by the caller (tests and benches compare both).
    pub fn with_nonce_draw(file_key: &[u8; 32], header: &FileHeader, draw: NonceDraw) -> Self {
        // Both only fail for a wrong key length, and the length is fixed by the type.
        let unbound = UnboundKey::new(&AES_256_GCM, file_key).unwrap_or_else(|_| unreachable!());
        let in_seal = (draw == NonceDraw::InSeal).then(|| {
            RandomizedNonceKey::new(&AES_256_GCM, file_key).unwrap_or_else(|_| unreachable!())
        });
        Self {
            codec: BlockCodec::Aead {
                key: LessSafeKey::new(unbound),
                in_seal,
            },
            header: header.encode(),
        }
    }

    /// The identity codec of the passthrough control: no key, no encryption, same layout.
    pub fn identity(control: Passthrough, header: &FileHeader) -> Self {
        Self {
            codec: BlockCodec::Identity(control),
            header: header.encode(),
        }
    }

    pub fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    fn aad(&self, index: u64, is_final: bool) -> [u8; AAD_LEN] {
        let mut aad = [0u8; AAD_LEN];
        aad[..HEADER_LEN].copy_from_slice(&self.header);
        aad[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&index.to_be_bytes());
        aad[AAD_LEN - 1] = u8::from(is_final);
        aad
    }

    /// Seals one block (see `BlockSealer::seal`); a run of blocks should share one sealer.
    pub fn seal_block(&self, index: u64, is_final: bool, plain: &[u8], out: &mut [u8]) {
        self.sealer(1).seal(index, is_final, plain, out);
    }

    /// A sealer for the `blocks` blocks of one request (a batch never draws more nonces than
    /// that; sealing more still works). It draws nothing until its first seal.
    pub fn sealer(&self, blocks: u64) -> BlockSealer<'_> {
        BlockSealer {
            cipher: self,
            batch: [[0; NONCE_LEN]; NONCE_BATCH],
            drawn: 0,
            used: 0,
            left: blocks,
        }
    }

    /// Opens stored block `index` into `out` and returns the plaintext length. An all-zero
    /// stored block that is not the final one is a hole and reads as zeros.
    pub fn open_block(
        &self,
        index: u64,
        is_final: bool,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize, CryptoError> {
        if stored.len() <= BLOCK_OVERHEAD || stored.len() > STORED_BLOCK_SIZE {
            return Err(CryptoError::Malformed(
                "stored block has an impossible length",
            ));
        }
        let plain_len = stored.len() - BLOCK_OVERHEAD;
        let out = &mut out[..plain_len];
        if !is_final && stored.iter().all(|b| *b == 0) {
            out.fill(0);
            return Ok(plain_len);
        }
        let (nonce, rest) = stored.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(plain_len);
        let opened = match &self.codec {
            BlockCodec::Aead { key, .. } => {
                let mut n = [0u8; NONCE_LEN];
                n.copy_from_slice(nonce);
                key.open_separate_gather(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(self.aad(index, is_final)),
                    body,
                    tag,
                    out,
                )
                .is_ok()
            }
            BlockCodec::Identity(control) => control.open_block(nonce, body, tag, out),
        };
        if !opened {
            // Never let a half-decrypted buffer escape: callers may reuse it.
            out.fill(0);
            return Err(CryptoError::Auth);
        }
        Ok(plain_len)
    }
}

/// Seals the blocks of one request with fresh nonces; under `NonceDraw::Batched` it draws them
/// a batch at a time. Lives for one request only, so no drawn nonce outlives it (or a fork).
pub struct BlockSealer<'a> {
    cipher: &'a FileCipher,
    batch: [[u8; NONCE_LEN]; NONCE_BATCH],
    /// `batch[used..drawn]` are drawn and not yet used.
    drawn: usize,
    used: usize,
    /// Blocks the request still has to seal, as announced.
    left: u64,
}

impl BlockSealer<'_> {
    /// Seals `plain` (1..=4096 bytes) as block `index` into `out`, which must be exactly
    /// `plain.len() + BLOCK_OVERHEAD` bytes: nonce ‖ ciphertext ‖ tag. The identity codec
    /// stores a zero nonce: nothing random reaches a control block.
    pub fn seal(&mut self, index: u64, is_final: bool, plain: &[u8], out: &mut [u8]) {
        assert!(!plain.is_empty() && plain.len() <= BLOCK_SIZE);
        assert_eq!(out.len(), plain.len() + BLOCK_OVERHEAD);
        let (nonce_out, rest) = out.split_at_mut(NONCE_LEN);
        let (body, tag_out) = rest.split_at_mut(plain.len());
        body.copy_from_slice(plain);
        let aad = Aad::from(self.cipher.aad(index, is_final));
        // A seal fails only past GCM's 64 GiB limit (a block is 4 KiB) or when the module's
        // DRBG fails, after which no nonce can be trusted.
        let tag = match &self.cipher.codec {
            BlockCodec::Aead {
                in_seal: Some(in_seal),
                ..
            } => {
                let (nonce, tag) = in_seal
                    .seal_in_place_separate_tag(aad, body)
                    .unwrap_or_else(|_| super::keys::randomness_failed());
                nonce_out.copy_from_slice(nonce.as_ref());
                tag
            }
            BlockCodec::Aead { key, in_seal: None } => {
                if self.used == self.drawn {
                    self.drawn = self.left.clamp(1, NONCE_BATCH as u64) as usize;
                    super::keys::fill_random(self.batch[..self.drawn].as_flattened_mut());
                    self.used = 0;
                }
                let nonce = self.batch[self.used];
                self.used += 1;
                self.left = self.left.saturating_sub(1);
                nonce_out.copy_from_slice(&nonce);
                key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), aad, body)
                    .unwrap_or_else(|_| super::keys::randomness_failed())
            }
            BlockCodec::Identity(control) => return control.seal_block(nonce_out, tag_out),
        };
        tag_out.copy_from_slice(tag.as_ref());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use proptest::prelude::*;

    /// Opens a block with RustCrypto's independent AES-GCM, to cross-check aws-lc-rs.
    pub(crate) fn reference_open(
        key: &[u8; 32],
        header: &FileHeader,
        index: u64,
        is_final: bool,
        stored: &[u8],
    ) -> Option<Vec<u8>> {
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).ok()?;
        let mut aad = header.encode().to_vec();
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(is_final));
        let nonce = aes_gcm::Nonce::from_slice(&stored[..NONCE_LEN]);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &stored[NONCE_LEN..],
                    aad: &aad,
                },
            )
            .ok()
    }

    #[test]
    fn sizes_round_trip() {
        for plain in [0u64, 1, 4095, 4096, 4097, 8192, 10_000, 1 << 30] {
            assert_eq!(plain_size(stored_size(plain)), Ok(plain), "{plain}");
        }
        assert_eq!(stored_size(1), 18 + 1 + 28);
        assert_eq!(stored_size(4096), 18 + 4124);
    }

    #[test]
    fn impossible_sizes_are_damage() {
        assert!(plain_size(HEADER_LEN as u64).is_err());
        assert!(plain_size(HEADER_LEN as u64 + 28).is_err());
        assert!(plain_size(5).is_err());
        assert!(plain_size(HEADER_LEN as u64 + 4124 + 3).is_err());
    }

    fn cipher() -> (FileCipher, [u8; 32], FileHeader) {
        let key = [0x42u8; 32];
        let header = FileHeader {
            file_id: [0x11; 16],
        };
        (FileCipher::new(&key, &header), key, header)
    }

    #[test]
    fn seal_open_and_cross_check_with_rustcrypto() {
        let (c, key, header) = cipher();
        let plain = b"hello, secretfs";
        let mut stored = vec![0u8; plain.len() + BLOCK_OVERHEAD];
        c.seal_block(3, true, plain, &mut stored);
        let mut out = [0u8; BLOCK_SIZE];
        assert_eq!(c.open_block(3, true, &stored, &mut out), Ok(plain.len()));
        assert_eq!(&out[..plain.len()], plain);
        assert_eq!(
            reference_open(&key, &header, 3, true, &stored).unwrap(),
            plain
        );
    }

    #[test]
    fn every_seal_draws_its_own_nonce_in_either_draw() {
        let header = FileHeader {
            file_id: [0x11; 16],
        };
        for draw in [NonceDraw::Batched, NonceDraw::InSeal] {
            let c = FileCipher::with_nonce_draw(&[0x42; 32], &header, draw);
            // Three lone seals, then a run long enough to use up and refill a batch.
            let mut sealed = vec![];
            for _ in 0..3 {
                let mut stored = vec![0u8; 10 + BLOCK_OVERHEAD];
                c.seal_block(0, true, &[6; 10], &mut stored);
                sealed.push((0, true, stored));
            }
            // Announced one block short, so the last seal goes past the announcement.
            let mut sealer = c.sealer(2 * NONCE_BATCH as u64);
            for b in 0..2 * NONCE_BATCH as u64 + 1 {
                let mut stored = vec![0u8; 10 + BLOCK_OVERHEAD];
                sealer.seal(b, false, &[6; 10], &mut stored);
                sealed.push((b, false, stored));
            }
            let nonces: std::collections::HashSet<_> = sealed
                .iter()
                .map(|(_, _, s)| s[..NONCE_LEN].to_vec())
                .collect();
            assert_eq!(nonces.len(), sealed.len(), "{draw:?}: a nonce used twice");
            assert!(!nonces.contains(&vec![0; NONCE_LEN]), "{draw:?}");
            for (b, is_final, stored) in &sealed {
                assert_eq!(
                    reference_open(&[0x42; 32], &header, *b, *is_final, stored).as_deref(),
                    Some(&[6u8; 10][..]),
                    "{draw:?} block {b}"
                );
            }
        }
    }

    #[test]
    fn moved_reflagged_or_flipped_blocks_fail() {
        let (c, _, _) = cipher();
        let mut stored = vec![0u8; BLOCK_SIZE + BLOCK_OVERHEAD];
        c.seal_block(1, false, &[5u8; BLOCK_SIZE], &mut stored);
        let mut out = [0u8; BLOCK_SIZE];
        assert_eq!(
            c.open_block(2, false, &stored, &mut out),
            Err(CryptoError::Auth)
        );
        assert_eq!(
            c.open_block(1, true, &stored, &mut out),
            Err(CryptoError::Auth)
        );
        let other = FileCipher::new(
            &[0x42; 32],
            &FileHeader {
                file_id: [0x12; 16],
            },
        );
        assert_eq!(
            other.open_block(1, false, &stored, &mut out),
            Err(CryptoError::Auth)
        );
        stored[100] ^= 1;
        assert_eq!(
            c.open_block(1, false, &stored, &mut out),
            Err(CryptoError::Auth)
        );
    }

    #[test]
    fn zero_block_is_a_hole_only_when_not_final() {
        let (c, _, _) = cipher();
        let stored = vec![0u8; STORED_BLOCK_SIZE];
        let mut out = [1u8; BLOCK_SIZE];
        assert_eq!(c.open_block(0, false, &stored, &mut out), Ok(BLOCK_SIZE));
        assert!(out.iter().all(|b| *b == 0));
        assert_eq!(
            c.open_block(0, true, &stored, &mut out),
            Err(CryptoError::Auth)
        );
    }

    proptest! {
        #[test]
        fn any_block_round_trips(data in proptest::collection::vec(any::<u8>(), 1..=BLOCK_SIZE),
                                 index in any::<u64>(), is_final in any::<bool>()) {
            let (c, key, header) = cipher();
            let mut stored = vec![0u8; data.len() + BLOCK_OVERHEAD];
            c.seal_block(index, is_final, &data, &mut stored);
            let mut out = [0u8; BLOCK_SIZE];
            prop_assert_eq!(c.open_block(index, is_final, &stored, &mut out), Ok(data.len()));
            prop_assert_eq!(&out[..data.len()], &data[..]);
            prop_assert_eq!(reference_open(&key, &header, index, is_final, &stored), Some(data));
        }

        #[test]
        fn size_math_is_a_bijection(plain in 0u64..(1u64 << 40)) {
            prop_assert_eq!(plain_size(stored_size(plain)), Ok(plain));
        }
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use proptest::prelude::*;

    fn identity(header: &FileHeader) -> FileCipher {
        let control = crate::crypto::passthrough::AVAILABLE;
        FileCipher::identity(control.expect("test builds have the control"), header)
    }

    const HEADER: FileHeader = FileHeader {
        file_id: [0x11; 16],
    };

    #[test]
    fn identity_stores_plaintext_between_a_zero_nonce_and_tag() {
        let c = identity(&HEADER);
        assert_eq!(c.header_bytes(), &HEADER.encode());
        let plain = b"hello, passthrough";
        let mut stored = vec![0xAA; plain.len() + BLOCK_OVERHEAD];
        c.seal_block(3, true, plain, &mut stored);
        assert_eq!(&stored[..NONCE_LEN], &[0; NONCE_LEN]);
        assert_eq!(&stored[NONCE_LEN..NONCE_LEN + plain.len()], plain);
        assert_eq!(&stored[NONCE_LEN + plain.len()..], &[0; TAG_LEN]);
        let mut out = [0u8; BLOCK_SIZE];
        assert_eq!(c.open_block(3, true, &stored, &mut out), Ok(plain.len()));
        assert_eq!(&out[..plain.len()], plain);
    }

    #[test]
    fn identity_keeps_the_hole_rule_and_reads_its_own_zero_final_block() {
        let c = identity(&HEADER);
        let mut out = [1u8; BLOCK_SIZE];
        let hole = vec![0u8; STORED_BLOCK_SIZE];
        assert_eq!(c.open_block(0, false, &hole, &mut out), Ok(BLOCK_SIZE));
        assert!(out.iter().all(|b| *b == 0));
        // A final block of zeros (an extending truncate) is all zeros once stored, and it is
        // still this codec's own block, unlike under AES-GCM where it means damage.
        let mut stored = vec![1u8; 1 + BLOCK_OVERHEAD];
        c.seal_block(0, true, &[0], &mut stored);
        assert!(stored.iter().all(|b| *b == 0));
        assert_eq!(c.open_block(0, true, &stored, &mut out), Ok(1));
        assert_eq!(out[0], 0);
    }

    #[test]
    fn identity_and_aead_refuse_each_others_blocks() {
        let id = identity(&HEADER);
        let aead = FileCipher::new(&[0x42; 32], &HEADER);
        let plain = [5u8; BLOCK_SIZE];
        let mut out = [9u8; BLOCK_SIZE];
        let mut sealed = vec![0u8; STORED_BLOCK_SIZE];
        aead.seal_block(1, false, &plain, &mut sealed);
        assert_eq!(
            id.open_block(1, false, &sealed, &mut out),
            Err(CryptoError::Auth)
        );
        assert!(out.iter().all(|b| *b == 0), "no partial output may escape");
        let mut clear = vec![0u8; STORED_BLOCK_SIZE];
        id.seal_block(1, false, &plain, &mut clear);
        assert_eq!(
            aead.open_block(1, false, &clear, &mut out),
            Err(CryptoError::Auth)
        );
    }

    proptest! {
        #[test]
        fn identity_blocks_round_trip_with_the_aead_layout(
            data in proptest::collection::vec(any::<u8>(), 1..=BLOCK_SIZE),
            index in any::<u64>(), is_final in any::<bool>()) {
            let c = identity(&HEADER);
            let mut stored = vec![0u8; data.len() + BLOCK_OVERHEAD];
            c.seal_block(index, is_final, &data, &mut stored);
            prop_assert_eq!(&stored[NONCE_LEN..NONCE_LEN + data.len()], &data[..]);
            let mut out = [0u8; BLOCK_SIZE];
            prop_assert_eq!(c.open_block(index, is_final, &stored, &mut out), Ok(data.len()));
            prop_assert_eq!(&out[..data.len()], &data[..]);
        }
    }
}

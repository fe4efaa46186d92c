//! Test vectors for the on-disk format v1 (docs/FORMAT.md, "Test vectors").
//!
//! Every vector is computed twice: with the library (aws-lc-rs AES-GCM, the crate's HKDF and
//! AES-SIV wrappers) and independently from the documented byte layout with RustCrypto
//! (`aes-gcm`, `aes-siv`, `hkdf`, `hmac`, `sha2`). Both must equal the hard-coded hex below, so any
//! change to the format — a label, an AAD byte, an encoding — fails here first. If a change is
//! intended, it is a new format version: update docs/FORMAT.md together with these constants.
//! The last test checks that docs/FORMAT.md quotes every frozen value, so the two cannot drift.
//! (The values were also reproduced once with Python `cryptography`, i.e. OpenSSL.)

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_siv::siv::Aes256Siv;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use secretfs::crypto::content::{
    self, FileCipher, FileHeader, BLOCK_OVERHEAD, BLOCK_SIZE, HEADER_LEN, STORED_BLOCK_SIZE,
};
use secretfs::crypto::keys::{KeyRing, MasterKey};
use secretfs::crypto::names::NameCipher;
use secretfs::crypto::CryptoError;
use secretfs::store::config::{FsConfig, KeySlot, KeySourceDescriptor, CIPHER_NAME};
use secretfs::store::layout::{classify, long_name_side_file, BackingEntry, StoredName};
use sha2::{Digest, Sha256};

// ---- fixed inputs ---------------------------------------------------------------------------

/// Master key: bytes 00 01 02 … 1f.
fn master_bytes() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}
/// The fs id as it appears in the config (a v4 UUID) and as the 16 bytes that salt HKDF.
const FS_ID_UUID: &str = "00112233-4455-4677-8899-aabbccddeeff";
const FS_ID: [u8; 16] = hex16("00112233445546778899aabbccddeeff");
/// A file id (content header) and a directory id (the root's, as stored in the config).
const FILE_ID: [u8; 16] = hex16("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
const DIR_ID: [u8; 16] = hex16("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
/// Nonces that production code draws at random; fixed here.
const BLOCK_NONCE: [u8; 12] = hex12("c0c1c2c3c4c5c6c7c8c9cacb");
const BLOCK_NONCE_2: [u8; 12] = hex12("c0c1c2c3c4c5c6c7c8c9cacc");
const XATTR_NONCE: [u8; 12] = hex12("d0d1d2d3d4d5d6d7d8d9dadb");
const WRAP_NONCE: [u8; 12] = hex12("e0e1e2e3e4e5e6e7e8e9eaeb");
const WRAP_SALT: [u8; 16] = hex16("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
const PASSPHRASE: &str = "correct horse battery staple";

// ---- expected values (generated once, then frozen) ------------------------------------------

const PRK: &str = "d5ee70582cc86f73a091dc6ced46c59c3beb37261d3efba95399cc03fe95c032";
const CONTENT_KEY: &str = "9461f407b6d79ad7fb708c9a9977cc25f1299ac3400f8fb7206b1c4a848b7f51";
const NAMES_KEY: &str = "10ead5a5d2f2e0f0667b80dc6f6e509128cc6c800dd0c6d68c8b78acfb12859d7d855a45c6bf79b2db6afc06bed965972579889dcf5c04bd4e7f0ffa8c79ae3b";
const XATTR_KEY: &str = "d1b846228f778aee79da00266018864e708d51f43f34fa435ba00d2b7e65dd9a";
const CONFIG_MAC_KEY: &str = "5b945a0dec8d97c1542872812ab56605b869f009891ef3d73d501ebeff101290";
const LUKS_PASSPHRASE: &str = "8fdb788814d78d95aa780489eb372ca15838ce81d530b2f616516eab53337c12";

const HEADER: &str = "0001a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
const SMALL_PLAIN: &[u8] = b"Hello, secretfs!";
/// The whole backing file of a 16-byte file: header ‖ nonce ‖ ciphertext ‖ tag (final block 0).
const SMALL_FILE: &str = "0001a0a1a2a3a4a5a6a7a8a9aaabacadaeafc0c1c2c3c4c5c6c7c8c9cacb8e94c26a1aae7d614bf5cf85d210d300d4be7a33ac41049254c8dbaa60fc0275";
/// The same block sealed as non-final: same ciphertext, different tag.
const SMALL_BLOCK_NOT_FINAL: &str =
    "c0c1c2c3c4c5c6c7c8c9cacb8e94c26a1aae7d614bf5cf85d210d3000955f04f592750c3e552ee0bfdfb4d64";
/// A 4100-byte file: block 0 (4096 bytes, i % 251) non-final, block 1 = "tail" final.
const TWO_BLOCK_TAG_0: &str = "e67a2006cbbb50f66446fe6d59e3e2d8";
const TWO_BLOCK_BLOCK_1: &str = "c0c1c2c3c4c5c6c7c8c9cacc2171a76b74ef40e3b02da1dedfae57e11ca871fa";
const TWO_BLOCK_FILE_SHA256: &str =
    "44b432db6051186eaa85485fc3b1dda96db19624a210af8d5f2fdc843363fc03";

const NAME: &[u8] = b"report.pdf";
const NAME_ENC: &str = "KagnLNkeeOXppOucMO-9mpRUYZrbkAEN1f8";
const LONG_NAME_HASHED: &str = "lname.e9cIDiTmdx0SHXclie6tJFBLvSghAFuGz0sS9cvvn5E";
const SYMLINK_TARGET: &[u8] = b"../target/file";
const SYMLINK_ENC: &str = "EFc-NRnQ00mRu1mfV3tO7BYM5wg8AUbWBfWj_1l9";
const XATTR_NAME: &[u8] = b"user.mime_type";
const XATTR_NAME_ENC: &str = "user.EFWVimMM0cpScej2yjsJBzoxJJegmSHEGg";
const XATTR_VALUE: &[u8] = b"text/plain";
const XATTR_VALUE_ENC: &str =
    "d0d1d2d3d4d5d6d7d8d9dadb43c583f94d0d2723fbdb734c5ae01f872984199df994df6ac091";

/// The MAC input after the domain prefix: compact JSON of the config without "mac", fields in
/// declaration order (not the sorted order of the file).
const CONFIG_BODY: &str = r#"{"format_version":1,"fs_id":"00112233-4455-4677-8899-aabbccddeeff","cipher":"AES-256-GCM-4096/AES-256-SIV","block_size":4096,"key_source":{"type":"keyfile","path":"/etc/secretfs/key"},"root_dir_id":"sLGys7S1tre4ubq7vL2+vw=="}"#;
const CONFIG_MAC: &str = "9aa1301420a651bfe499d4911474f7cba9509283adf7449c2e7cc1010943f4ec";
/// The whole `secretfs.conf`: pretty-printed, keys sorted, trailing newline.
const CONFIG_FILE: &str = r#"{
  "block_size": 4096,
  "cipher": "AES-256-GCM-4096/AES-256-SIV",
  "format_version": 1,
  "fs_id": "00112233-4455-4677-8899-aabbccddeeff",
  "key_source": {
    "path": "/etc/secretfs/key",
    "type": "keyfile"
  },
  "mac": "9aa1301420a651bfe499d4911474f7cba9509283adf7449c2e7cc1010943f4ec",
  "root_dir_id": "sLGys7S1tre4ubq7vL2+vw=="
}
"#;

const ARGON2_KEK: &str = "da1fe23ea05cfd9e9d3d83fe89bfc3418f0e80d8ab8a345b89b43e9d41213433";
const WRAPPED_KEY_B64: &str =
    "4OHi4+Tl5ufo6errapF/stR+jACz7lyx7c6xhFcOqGlGPDzIH+hls2h2D89hFCbMvZyXv5UB7Dk+M7K+";

// ---- helpers --------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not lowercase hex"),
    }
}

const fn hex16(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn hex12(s: &str) -> [u8; 12] {
    let b = s.as_bytes();
    let mut out = [0u8; 12];
    let mut i = 0;
    while i < 12 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// Compares against a frozen value, printing the actual one so a deliberate format change
/// (a new version) can be re-frozen.
#[track_caller]
fn frozen(what: &str, actual: &str, expected: &str) {
    assert_eq!(actual, expected, "{what}: actual value is\n{actual}\n");
}

fn keyring() -> KeyRing {
    KeyRing::new(&MasterKey::from_slice(&master_bytes()).unwrap(), &FS_ID)
}

fn name_cipher(keys: &KeyRing) -> NameCipher {
    NameCipher::new(keys.names_key(), keys.xattr_key())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// HKDF-SHA256 with the `hkdf` crate, not through the library.
fn hkdf_expand(info: &[&[u8]], len: usize) -> Vec<u8> {
    let hk = Hkdf::<Sha256>::new(Some(&FS_ID), &master_bytes());
    let mut out = vec![0u8; len];
    hk.expand(&info.concat(), &mut out).unwrap();
    out
}

/// The documented AAD of a content block: header ‖ index (u64 BE) ‖ final flag (0x00 / 0x01).
fn block_aad(index: u64, is_final: bool) -> Vec<u8> {
    let mut aad = unhex(HEADER);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(is_final));
    aad
}

/// RustCrypto AES-256-GCM: nonce ‖ ciphertext ‖ tag, as the format stores it.
fn rc_gcm_seal(key: &[u8], nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let gcm = aes_gcm::Aes256Gcm::new_from_slice(key).unwrap();
    let mut out = nonce.to_vec();
    out.extend(
        gcm.encrypt(
            aes_gcm::Nonce::from_slice(nonce),
            Payload { msg: plain, aad },
        )
        .unwrap(),
    );
    out
}

fn rc_gcm_open(key: &[u8], aad: &[u8], stored: &[u8]) -> Option<Vec<u8>> {
    let gcm = aes_gcm::Aes256Gcm::new_from_slice(key).unwrap();
    gcm.decrypt(
        aes_gcm::Nonce::from_slice(&stored[..12]),
        Payload {
            msg: &stored[12..],
            aad,
        },
    )
    .ok()
}

/// RustCrypto AES-SIV (CMAC, 512-bit key) with one associated-data item, base64url unpadded.
fn rc_siv(names_key: &[u8], ad: &[u8], plain: &[u8]) -> String {
    let mut siv = Aes256Siv::new_from_slice(names_key).unwrap();
    B64URL.encode(siv.encrypt([ad], plain).unwrap())
}

/// A block as the library seals it: its nonce is drawn inside aws-lc's seal, so the vectors are
/// made by the independent code with fixed nonces, and what the library seals is checked by
/// opening it with that code under the format's AAD.
fn library_seal(keys: &KeyRing, index: u64, is_final: bool, plain: &[u8]) -> Vec<u8> {
    let cipher = FileCipher::new(
        keys.file_key(&FILE_ID).expose(),
        &FileHeader { file_id: FILE_ID },
    );
    let mut out = vec![0u8; plain.len() + BLOCK_OVERHEAD];
    cipher.seal_block(index, is_final, plain, &mut out);
    out
}

// ---- keys -----------------------------------------------------------------------------------

#[test]
fn key_derivation() {
    // PRK = HKDF-Extract(salt = fs id, ikm = master) = HMAC-SHA256(key = fs id, msg = master).
    let prk = hmac_sha256(&FS_ID, &[&master_bytes()]);
    assert_eq!(
        prk[..],
        Hkdf::<Sha256>::extract(Some(&FS_ID), &master_bytes()).0[..]
    );
    frozen("PRK", &hex(&prk), PRK);

    let keys = keyring();
    let content_key = keys.file_key(&FILE_ID);
    assert_eq!(
        content_key.expose()[..],
        hkdf_expand(&[b"secretfs/v1/content", &FILE_ID], 32)[..]
    );
    frozen("content key", &hex(content_key.expose()), CONTENT_KEY);

    assert_eq!(
        keys.names_key().expose()[..],
        hkdf_expand(&[b"secretfs/v1/names"], 64)[..]
    );
    frozen("names key", &hex(keys.names_key().expose()), NAMES_KEY);

    assert_eq!(
        keys.xattr_key().expose()[..],
        hkdf_expand(&[b"secretfs/v1/xattr"], 32)[..]
    );
    frozen("xattr key", &hex(keys.xattr_key().expose()), XATTR_KEY);

    assert_eq!(
        keys.config_mac_key().expose()[..],
        hkdf_expand(&[b"secretfs/v1/config-mac"], 32)[..]
    );
    frozen(
        "config-MAC key",
        &hex(keys.config_mac_key().expose()),
        CONFIG_MAC_KEY,
    );

    let luks = keys.luks_passphrase();
    assert_eq!(
        luks.expose()[..],
        hkdf_expand(&[b"secretfs/v1/luks"], 32)[..]
    );
    frozen("LUKS passphrase", &hex(luks.expose()), LUKS_PASSPHRASE);
}

// ---- content --------------------------------------------------------------------------------

#[test]
fn content_header() {
    let header = FileHeader { file_id: FILE_ID };
    assert_eq!(hex(&header.encode()), HEADER);
    assert_eq!(HEADER_LEN, 18);
    assert_eq!(FileHeader::decode(&unhex(HEADER)), Ok(header));
    let mut v2 = unhex(HEADER);
    v2[1] = 2;
    assert!(
        FileHeader::decode(&v2).is_err(),
        "an unknown version must be refused"
    );
}

#[test]
fn content_single_block_file() {
    let keys = keyring();
    let key = keys.file_key(&FILE_ID);

    // Final block 0: the whole backing file of a 16-byte file.
    let sealed = rc_gcm_seal(key.expose(), &BLOCK_NONCE, &block_aad(0, true), SMALL_PLAIN);
    assert_eq!(sealed[..12], BLOCK_NONCE, "nonce first");
    let file = [unhex(HEADER), sealed.clone()].concat();
    assert_eq!(
        file.len() as u64,
        content::stored_size(SMALL_PLAIN.len() as u64)
    );
    frozen("small file", &hex(&file), SMALL_FILE);

    // The same bytes as a non-final block: identical ciphertext, different tag.
    let not_final = rc_gcm_seal(
        key.expose(),
        &BLOCK_NONCE,
        &block_aad(0, false),
        SMALL_PLAIN,
    );
    assert_eq!(not_final[..12 + 16], sealed[..12 + 16]);
    assert_ne!(not_final[28..], sealed[28..]);
    assert!(rc_gcm_open(key.expose(), &block_aad(0, true), &not_final).is_none());
    frozen("non-final block", &hex(&not_final), SMALL_BLOCK_NOT_FINAL);

    // What the library seals is this layout under this AAD, with a fresh nonce each time.
    let mine = library_seal(&keys, 0, true, SMALL_PLAIN);
    assert_eq!(mine.len(), sealed.len());
    assert_ne!(mine[..12], BLOCK_NONCE);
    assert_eq!(
        rc_gcm_open(key.expose(), &block_aad(0, true), &mine).unwrap(),
        SMALL_PLAIN
    );
    let mine_not_final = library_seal(&keys, 0, false, SMALL_PLAIN);
    assert_ne!(mine_not_final[..12], mine[..12]);
    assert_eq!(
        rc_gcm_open(key.expose(), &block_aad(0, false), &mine_not_final).unwrap(),
        SMALL_PLAIN
    );
    assert!(rc_gcm_open(key.expose(), &block_aad(0, true), &mine_not_final).is_none());

    // The library opens what it froze, and refuses it under another index or flag.
    let cipher = FileCipher::new(key.expose(), &FileHeader { file_id: FILE_ID });
    let mut out = [0u8; BLOCK_SIZE];
    assert_eq!(
        cipher.open_block(0, true, &sealed, &mut out),
        Ok(SMALL_PLAIN.len())
    );
    assert_eq!(&out[..SMALL_PLAIN.len()], SMALL_PLAIN);
    assert_eq!(
        cipher.open_block(0, false, &sealed, &mut out),
        Err(CryptoError::Auth)
    );
    assert_eq!(
        cipher.open_block(1, true, &sealed, &mut out),
        Err(CryptoError::Auth)
    );
}

#[test]
fn content_two_block_file() {
    let keys = keyring();
    let key = keys.file_key(&FILE_ID);
    let block0: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect();

    let sealed0 = rc_gcm_seal(key.expose(), &BLOCK_NONCE, &block_aad(0, false), &block0);
    let sealed1 = rc_gcm_seal(key.expose(), &BLOCK_NONCE_2, &block_aad(1, true), b"tail");
    assert_eq!(sealed0.len(), STORED_BLOCK_SIZE);
    let (mine0, mine1) = (
        library_seal(&keys, 0, false, &block0),
        library_seal(&keys, 1, true, b"tail"),
    );
    assert_eq!((mine0.len(), mine1.len()), (sealed0.len(), sealed1.len()));
    assert_eq!(
        rc_gcm_open(key.expose(), &block_aad(0, false), &mine0).unwrap(),
        block0
    );
    assert_eq!(
        rc_gcm_open(key.expose(), &block_aad(1, true), &mine1).unwrap(),
        b"tail"
    );
    // The library opens the frozen blocks in place.
    let cipher = FileCipher::new(key.expose(), &FileHeader { file_id: FILE_ID });
    let mut out = [0u8; BLOCK_SIZE];
    assert_eq!(
        cipher.open_block(0, false, &sealed0, &mut out),
        Ok(BLOCK_SIZE)
    );
    assert_eq!(out[..], block0[..]);
    assert_eq!(cipher.open_block(1, true, &sealed1, &mut out), Ok(4));
    assert_eq!(&out[..4], b"tail");

    let file = [unhex(HEADER), sealed0.clone(), sealed1.clone()].concat();
    assert_eq!(file.len(), 18 + 4124 + 32);
    assert_eq!(content::plain_size(file.len() as u64), Ok(4100));
    assert_eq!(content::block_offset(1), 18 + 4124);
    frozen(
        "block 0 tag",
        &hex(&sealed0[STORED_BLOCK_SIZE - 16..]),
        TWO_BLOCK_TAG_0,
    );
    frozen("block 1", &hex(&sealed1), TWO_BLOCK_BLOCK_1);
    frozen(
        "two-block file",
        &hex(&Sha256::digest(&file)),
        TWO_BLOCK_FILE_SHA256,
    );
}

#[test]
fn content_holes_and_sizes() {
    let keys = keyring();
    let cipher = FileCipher::new(
        keys.file_key(&FILE_ID).expose(),
        &FileHeader { file_id: FILE_ID },
    );
    let zeros = vec![0u8; STORED_BLOCK_SIZE];
    let mut out = [1u8; BLOCK_SIZE];
    // An all-zero non-final stored block is a hole and reads as zeros …
    assert_eq!(
        cipher.open_block(0, false, &zeros, &mut out),
        Ok(BLOCK_SIZE)
    );
    assert!(out.iter().all(|b| *b == 0));
    // … but the final block is always authenticated.
    assert_eq!(
        cipher.open_block(0, true, &zeros, &mut out),
        Err(CryptoError::Auth)
    );
    assert_eq!(
        cipher.open_block(0, true, &zeros[..40], &mut out),
        Err(CryptoError::Auth)
    );

    // plain → stored, as tabulated in FORMAT.md.
    for (plain, stored) in [
        (0u64, 0u64),
        (1, 47),
        (4095, 4141),
        (4096, 4142),
        (4097, 4171),
        (8192, 8266),
        (10_000, 10_102),
        (1 << 20, 1_055_762),
        (1 << 30, 1_081_081_874),
    ] {
        assert_eq!(content::stored_size(plain), stored, "stored_size({plain})");
        assert_eq!(
            content::plain_size(stored),
            Ok(plain),
            "plain_size({stored})"
        );
        assert_eq!(content::block_count(plain), plain.div_ceil(4096));
    }
    // Backing sizes no valid file has.
    for bad in [
        1u64,
        17,
        18,
        19,
        46,
        18 + 4124 + 1,
        18 + 4124 + 28,
        18 + 2 * 4124 + 28,
    ] {
        assert!(
            content::plain_size(bad).is_err(),
            "plain_size({bad}) must be damage"
        );
    }
}

// ---- names ----------------------------------------------------------------------------------

#[test]
fn file_names() {
    let keys = keyring();
    let names = name_cipher(&keys);
    let StoredName::Short(enc) = StoredName::of(names.encrypt_name(&DIR_ID, NAME)) else {
        panic!("short name expected")
    };
    assert_eq!(enc, rc_siv(keys.names_key().expose(), &DIR_ID, NAME));
    frozen("name", &enc, NAME_ENC);
    assert_eq!(names.decrypt_name(&DIR_ID, enc.as_bytes()).unwrap(), NAME);
    assert_eq!(classify(&enc), BackingEntry::Short(&enc));

    // The SIV tag is the first 16 bytes; the ciphertext is as long as the name.
    assert_eq!(B64URL.decode(&enc).unwrap().len(), 16 + NAME.len());
}

#[test]
fn long_names() {
    let keys = keyring();
    let names = name_cipher(&keys);
    // 175 bytes: 191 sealed bytes → 255 base64url characters, the longest short name.
    let longest_short = StoredName::of(names.encrypt_name(&DIR_ID, &[b'a'; 175]));
    assert!(matches!(&longest_short, StoredName::Short(s) if s.len() == 255));
    // 176 bytes: 256 characters → hashed.
    let StoredName::Long { hashed, full } =
        StoredName::of(names.encrypt_name(&DIR_ID, &[b'a'; 176]))
    else {
        panic!("176-byte name must be long")
    };
    assert_eq!(full.len(), 256);
    assert_eq!(
        full,
        rc_siv(keys.names_key().expose(), &DIR_ID, &[b'a'; 176])
    );
    assert_eq!(
        hashed,
        format!("lname.{}", B64URL.encode(Sha256::digest(full.as_bytes())))
    );
    assert_eq!(hashed.len(), 6 + 43);
    frozen("long name", &hashed, LONG_NAME_HASHED);
    assert_eq!(long_name_side_file(&hashed), format!("{hashed}.name"));
    assert_eq!(classify(&hashed), BackingEntry::Long(&hashed));
    assert_eq!(
        classify(&long_name_side_file(&hashed)),
        BackingEntry::Internal
    );
    assert_eq!(
        names.decrypt_name(&DIR_ID, full.as_bytes()).unwrap(),
        [b'a'; 176]
    );
    // The longest name Linux allows still fits the side file.
    let StoredName::Long { full, .. } = StoredName::of(names.encrypt_name(&DIR_ID, &[b'a'; 255]))
    else {
        panic!()
    };
    assert_eq!(full.len(), 362);

    for internal in [
        "secretfs.conf",
        "secretfs.dirid",
        "secretfs.tmp.0011223344556677",
    ] {
        assert_eq!(classify(internal), BackingEntry::Internal, "{internal}");
    }
}

#[test]
fn symlink_targets() {
    let keys = keyring();
    let names = name_cipher(&keys);
    let enc = names.encrypt_symlink(SYMLINK_TARGET);
    assert_eq!(
        enc,
        rc_siv(
            keys.names_key().expose(),
            b"secretfs/v1/symlink",
            SYMLINK_TARGET
        )
    );
    frozen("symlink", &enc, SYMLINK_ENC);
    assert_eq!(
        names.decrypt_symlink(enc.as_bytes()).unwrap(),
        SYMLINK_TARGET
    );
}

#[test]
fn xattrs() {
    let keys = keyring();
    let names = name_cipher(&keys);
    let stored_name = names.encrypt_xattr_name(XATTR_NAME).unwrap();
    let rest = &XATTR_NAME[b"user.".len()..];
    let independent = format!(
        "user.{}",
        rc_siv(keys.names_key().expose(), b"secretfs/v1/xattr-name", rest)
    );
    assert_eq!(stored_name, independent);
    frozen("xattr name", &stored_name, XATTR_NAME_ENC);
    assert_eq!(
        names.decrypt_xattr_name(stored_name.as_bytes()).unwrap(),
        XATTR_NAME
    );
    // security.* and trusted.*: the whole name behind a NUL byte, sealed the same way.
    let other = names.encrypt_xattr_name(b"security.capability").unwrap();
    let independent = format!(
        "user.{}",
        rc_siv(
            keys.names_key().expose(),
            b"secretfs/v1/xattr-name",
            b"\0security.capability"
        )
    );
    assert_eq!(other, independent);
    assert_eq!(
        names.decrypt_xattr_name(other.as_bytes()).unwrap(),
        b"security.capability"
    );
    // POSIX ACLs: the two system.* names that are stored, sealed the same way (FORMAT.md §8).
    for acl in [&b"system.posix_acl_access"[..], b"system.posix_acl_default"] {
        let stored = names.encrypt_xattr_name(acl).unwrap();
        let independent = format!(
            "user.{}",
            rc_siv(
                keys.names_key().expose(),
                b"secretfs/v1/xattr-name",
                &[&b"\0"[..], acl].concat()
            )
        );
        assert_eq!(stored, independent);
        assert_eq!(names.decrypt_xattr_name(stored.as_bytes()).unwrap(), acl);
    }
    assert!(names.encrypt_xattr_name(b"system.sockprotoname").is_none());

    // Value: nonce ‖ AES-256-GCM(xattr key, AAD = stored name) ‖ tag. Frozen with RustCrypto and a
    // fixed nonce, opened by the library; the library's own (random-nonce) seal opens in RustCrypto.
    let value = rc_gcm_seal(
        keys.xattr_key().expose(),
        &XATTR_NONCE,
        stored_name.as_bytes(),
        XATTR_VALUE,
    );
    frozen("xattr value", &hex(&value), XATTR_VALUE_ENC);
    assert_eq!(
        names.open_xattr_value(&stored_name, &value).unwrap(),
        XATTR_VALUE
    );
    assert_eq!(
        names.open_xattr_value("user.other", &value),
        Err(CryptoError::Auth)
    );
    let sealed = names.seal_xattr_value(&stored_name, XATTR_VALUE);
    assert_eq!(sealed.len(), 12 + XATTR_VALUE.len() + 16);
    assert_eq!(
        rc_gcm_open(keys.xattr_key().expose(), stored_name.as_bytes(), &sealed).unwrap(),
        XATTR_VALUE
    );
}

// ---- config ---------------------------------------------------------------------------------

fn vector_config() -> FsConfig {
    let mut config = FsConfig::new(KeySourceDescriptor::Keyfile {
        path: "/etc/secretfs/key".into(),
    });
    config.fs_id = uuid::Uuid::parse_str(FS_ID_UUID).unwrap();
    config.root_dir_id = B64.encode(DIR_ID);
    assert_eq!(
        (
            config.format_version,
            config.cipher.as_str(),
            config.block_size
        ),
        (1, CIPHER_NAME, 4096)
    );
    config
}

#[test]
fn config_file_and_mac() {
    let keys = keyring();
    let config = vector_config();
    assert_eq!(config.fs_id_bytes(), FS_ID);
    assert_eq!(config.root_dir_id().unwrap(), DIR_ID);

    // The MAC input, built by hand from the documented rule.
    assert_eq!(serde_json::to_string(&config).unwrap(), CONFIG_BODY);
    let mac = hex(&hmac_sha256(
        keys.config_mac_key().expose(),
        &[b"secretfs/v1/config\0", CONFIG_BODY.as_bytes()],
    ));
    frozen("config MAC", &mac, CONFIG_MAC);

    let json = config.to_json(&keys);
    frozen(
        "config file",
        std::str::from_utf8(&json).unwrap(),
        CONFIG_FILE,
    );
    let (parsed, stored_mac) = FsConfig::parse_unverified(&json).unwrap();
    assert_eq!(parsed, config);
    assert_eq!(hex(&stored_mac), mac);
    parsed.verify_mac(&stored_mac, &keys).unwrap();

    // The MAC covers the re-serialised fields, not the file's bytes: key order and whitespace
    // are free, any value change is caught.
    let compact = format!("{{\"mac\":\"{CONFIG_MAC}\",{}", &CONFIG_BODY[1..]);
    let (parsed, stored_mac) = FsConfig::parse_unverified(compact.as_bytes()).unwrap();
    parsed.verify_mac(&stored_mac, &keys).unwrap();
    let edited = compact.replace("/etc/secretfs/key", "/etc/secretfs/other");
    let (parsed, stored_mac) = FsConfig::parse_unverified(edited.as_bytes()).unwrap();
    assert!(parsed.verify_mac(&stored_mac, &keys).is_err());
}

#[test]
fn passphrase_wrapped_master_key() {
    // KEK = argon2id(passphrase, salt, m = 65536 KiB, t = 3, p = 1, 32 bytes), version 0x13.
    let params = argon2::Params::new(65536, 3, 1, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = [0u8; 32];
    argon
        .hash_password_into(PASSPHRASE.as_bytes(), &WRAP_SALT, &mut kek)
        .unwrap();
    frozen("argon2id KEK", &hex(&kek), ARGON2_KEK);

    // wrapped_key = nonce ‖ AES-256-GCM(KEK, AAD = fs id, master key) ‖ tag.
    let wrapped = rc_gcm_seal(&kek, &WRAP_NONCE, &FS_ID, &master_bytes());
    assert_eq!(wrapped.len(), 60);
    frozen("wrapped key", &B64.encode(&wrapped), WRAPPED_KEY_B64);

    assert_eq!(B64.encode(WRAP_SALT), "8PHy8/T19vf4+fr7/P3+/w==");
    let descriptor = KeySourceDescriptor::Passphrase {
        m_cost_kib: 65536,
        t_cost: 3,
        p_cost: 1,
        salt: B64.encode(WRAP_SALT),
        wrapped_key: WRAPPED_KEY_B64.to_string(),
    };
    let input = secretfs::keysource::PassphraseInput::Preread(zeroize::Zeroizing::new(
        PASSPHRASE.to_string(),
    ));
    let master =
        secretfs::keysource::local::unwrap_passphrase(&input, &descriptor, &FS_ID).unwrap();
    assert_eq!(master.expose(), &master_bytes());
}

// ---- key slots (format 2) ----------------------------------------------------------------

/// The recovery key of the vector: bytes 0x40, 0x41, … 0x5f.
fn recovery_bytes() -> [u8; 32] {
    std::array::from_fn(|i| 0x40 + i as u8)
}
const SLOT_NONCE: [u8; 12] = hex12("909192939495969798999a9b");
const RECOVERY_TEXT: &str = "180939-186593-192247-197901-203555-209209-214863-220517-226171-231825-237479-243133-248787-254441-260095-265749-569294";
const RECOVERY_SLOT_KEY: &str = "722db5ab98bed6a2d5e7d053a28ee40b4e5c255f58cf50f74a3a17248df7c848";
const RECOVERY_SLOT_WRAPPED: &str =
    "kJGSk5SVlpeYmZqbdH/LIs8rk/l/P8eW0qQthzwfpPXYdus3L/43Sjnpxu2rIf4QhV4DSPA6RU6j+wh/";
const SLOTS_CONFIG_BODY: &str = r#"{"format_version":2,"fs_id":"00112233-4455-4677-8899-aabbccddeeff","cipher":"AES-256-GCM-4096/AES-256-SIV","block_size":4096,"slots":[{"id":0,"source":{"type":"keyfile","path":"/etc/secretfs/key"}},{"id":1,"source":{"type":"recovery"},"wrapped_master":"kJGSk5SVlpeYmZqbdH/LIs8rk/l/P8eW0qQthzwfpPXYdus3L/43Sjnpxu2rIf4QhV4DSPA6RU6j+wh/"}],"root_dir_id":"sLGys7S1tre4ubq7vL2+vw=="}"#;
const SLOTS_CONFIG_MAC: &str = "6b53d922ea43e7f2262de4728d8d8a64a50b470ce89f96599cd1e314730ae88f";

#[test]
fn key_slots_config_and_a_recovery_slot() {
    let keys = keyring();
    // The recovery key's printed form: each big-endian 16-bit word × 11 in 6 digits, then
    // SHA-256(key)[0..2] × 11.
    let key = recovery_bytes();
    let mut groups: Vec<String> = key
        .chunks(2)
        .map(|w| format!("{:06}", u32::from(u16::from_be_bytes([w[0], w[1]])) * 11))
        .collect();
    let digest = Sha256::digest(key);
    groups.push(format!(
        "{:06}",
        u32::from(u16::from_be_bytes([digest[0], digest[1]])) * 11
    ));
    frozen("recovery key text", &groups.join("-"), RECOVERY_TEXT);
    let recovery = secretfs::crypto::recovery::RecoveryKey::from_bytes(
        secretfs::crypto::keys::SecretBytes::from_slice(&key).unwrap(),
    );
    assert_eq!(recovery.display().as_str(), RECOVERY_TEXT);

    // Its slot key: HKDF-SHA256(salt = fs id, ikm = recovery key, info = label).
    let mut slot_key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&FS_ID), &key)
        .expand(b"secretfs/v1/recovery-slot", &mut slot_key)
        .unwrap();
    frozen("recovery slot key", &hex(&slot_key), RECOVERY_SLOT_KEY);
    assert_eq!(recovery.slot_key(&FS_ID).expose(), &slot_key);

    // wrapped_master = nonce ‖ AES-256-GCM(slot key, AAD = "secretfs/v2/key-slot" ‖ 0x00 ‖
    // fs id ‖ slot id (u32 BE), master key) ‖ tag.
    let mut aad = b"secretfs/v2/key-slot\0".to_vec();
    aad.extend_from_slice(&FS_ID);
    aad.extend_from_slice(&1u32.to_be_bytes());
    assert_eq!(secretfs::store::config::slot_aad(&FS_ID, 1), aad);
    let wrapped = rc_gcm_seal(&slot_key, &SLOT_NONCE, &aad, &master_bytes());
    assert_eq!(wrapped.len(), 60);
    frozen(
        "recovery slot wrapped master",
        &B64.encode(&wrapped),
        RECOVERY_SLOT_WRAPPED,
    );

    let mut config = vector_config();
    config
        .set_slots(vec![
            KeySlot::direct(
                0,
                KeySourceDescriptor::Keyfile {
                    path: "/etc/secretfs/key".into(),
                },
            ),
            KeySlot {
                wrapped_master: Some(RECOVERY_SLOT_WRAPPED.to_string()),
                ..KeySlot::direct(1, KeySourceDescriptor::Recovery)
            },
        ])
        .unwrap();
    assert_eq!(config.format_version, 2);
    frozen(
        "slots config body",
        &serde_json::to_string(&config).unwrap(),
        SLOTS_CONFIG_BODY,
    );
    let mac = hex(&hmac_sha256(
        keys.config_mac_key().expose(),
        &[b"secretfs/v1/config\0", SLOTS_CONFIG_BODY.as_bytes()],
    ));
    frozen("slots config MAC", &mac, SLOTS_CONFIG_MAC);
    let (parsed, stored_mac) = FsConfig::parse_unverified(&config.to_json(&keys)).unwrap();
    assert_eq!(parsed, config);
    assert_eq!(hex(&stored_mac), mac);
    parsed.verify_mac(&stored_mac, &keys).unwrap();

    // The typed recovery key opens slot 1 through the library, to the master key.
    let typed =
        secretfs::keysource::KeySpec::Recovery(secretfs::keysource::PassphraseInput::Preread(
            zeroize::Zeroizing::new(RECOVERY_TEXT.to_string()),
        ));
    let slot = parsed.slot(1).unwrap();
    let master = secretfs::keysource::slots::open(&typed, &slot, &FS_ID).unwrap();
    assert_eq!(master.expose(), &master_bytes());

    // A format-1 config reads as one direct slot 0, and its bytes and MAC are unchanged.
    let v1 = vector_config();
    assert_eq!(v1.slots(), vec![KeySlot::direct(0, v1.primary().clone())]);
    assert_eq!(serde_json::to_string(&v1).unwrap(), CONFIG_BODY);
}

// ---- the documentation quotes these values --------------------------------------------------

#[test]
fn format_md_quotes_the_frozen_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md");
    let doc = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    // The document may break long values with spaces and newlines.
    let doc: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    for (what, value) in [
        ("PRK", PRK),
        ("content key", CONTENT_KEY),
        ("names key", NAMES_KEY),
        ("xattr key", XATTR_KEY),
        ("config-MAC key", CONFIG_MAC_KEY),
        ("LUKS passphrase", LUKS_PASSPHRASE),
        ("small file", SMALL_FILE),
        ("non-final block", SMALL_BLOCK_NOT_FINAL),
        ("block 0 tag", TWO_BLOCK_TAG_0),
        ("block 1", TWO_BLOCK_BLOCK_1),
        ("two-block file", TWO_BLOCK_FILE_SHA256),
        ("name", NAME_ENC),
        ("long name", LONG_NAME_HASHED),
        ("symlink", SYMLINK_ENC),
        ("xattr name", XATTR_NAME_ENC),
        ("xattr value", XATTR_VALUE_ENC),
        ("config body", CONFIG_BODY),
        ("config MAC", CONFIG_MAC),
        ("config file", CONFIG_FILE),
        ("argon2id KEK", ARGON2_KEK),
        ("wrapped key", WRAPPED_KEY_B64),
        ("recovery key text", RECOVERY_TEXT),
        ("recovery slot key", RECOVERY_SLOT_KEY),
        ("recovery slot wrapped master", RECOVERY_SLOT_WRAPPED),
        ("slots config body", SLOTS_CONFIG_BODY),
        ("slots config MAC", SLOTS_CONFIG_MAC),
    ] {
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            doc.contains(&value),
            "docs/FORMAT.md does not quote the {what} vector {value}"
        );
    }
}

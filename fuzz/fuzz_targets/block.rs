//! Fuzz target: header decoding, size math and block opening on arbitrary stored bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretfs_pure::crypto::content::{block_count, plain_size, stored_size, FileCipher, FileHeader, BLOCK_SIZE};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[..8]);
    let number = u64::from_le_bytes(n);
    if let Ok(plain) = plain_size(number) {
        assert_eq!(stored_size(plain), number, "size math is not a bijection");
        let _ = block_count(plain);
    }
    let rest = &data[8..];
    let header = FileHeader::decode(rest).unwrap_or(FileHeader { file_id: [1; 16] });
    let cipher = FileCipher::new(&[3u8; 32], &header);
    let mut out = [0u8; BLOCK_SIZE];
    let is_final = data[8] & 1 == 1;
    if cipher.open_block(number, is_final, rest, &mut out).is_ok() {
        // Only an all-zero non-final block can open without the key: the hole rule.
        assert!(!is_final && rest.iter().all(|b| *b == 0), "forged block accepted");
    }
});

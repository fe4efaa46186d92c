//! Fuzz target: name, long-name, symlink and xattr decoders on arbitrary backing-store bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretfs_pure::crypto::keys::SecretBytes;
use secretfs_pure::crypto::names::NameCipher;
use secretfs_pure::store::layout::{classify, long_name_matches};

fuzz_target!(|data: &[u8]| {
    let names = NameCipher::new(
        &SecretBytes::from_slice(&[5u8; 64]).expect("fixed key"),
        &SecretBytes::from_slice(&[6u8; 32]).expect("fixed key"),
    );
    let dir_id = [9u8; 16];
    assert!(names.decrypt_name(&dir_id, data).is_err(), "forged name accepted");
    let _ = names.decrypt_symlink(data);
    let _ = names.decrypt_xattr_name(data);
    let _ = names.open_xattr_value("user.x", data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = classify(text);
        let _ = long_name_matches(text, data);
    }
});

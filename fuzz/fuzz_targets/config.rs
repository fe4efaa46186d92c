//! Fuzz target: the config parser and MAC check must reject any bytes cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretfs_pure::store::config::FsConfig;
use secretfs_pure::crypto::keys::{KeyRing, MasterKey};

fuzz_target!(|data: &[u8]| {
    if let Ok((config, mac)) = FsConfig::parse_unverified(data) {
        let master = MasterKey::from_slice(&[7u8; 32]).expect("fixed key");
        let keys = KeyRing::new(&master, &config.fs_id_bytes());
        let _ = config.verify_mac(&mac, &keys);
        let _ = config.root_dir_id();
        for slot in config.slots() {
            let _ = slot.wrapped_master();
        }
    }
});

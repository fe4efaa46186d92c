//! Fuzz target: the fstab / -o option parser must turn any text into options or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secretfs_pure::mountopts::MountOptions;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = MountOptions::parse([text.as_ref()]) {
        assert!(!e.to_string().is_empty());
    }
});

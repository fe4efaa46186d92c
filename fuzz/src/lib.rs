//! The pure parts of secretfs (crypto codecs, config parsing, mount options), compiled straight
//! from ../src so the fuzzers build without FUSE or the AWS SDK; a new dependency there fails here.

#[path = "../../src/crypto/mod.rs"]
pub mod crypto;
#[path = "../../src/mountopts.rs"]
pub mod mountopts;
#[path = "../../src/sys.rs"]
pub mod sys;
#[path = "../../src/store/mod.rs"]
pub mod store;

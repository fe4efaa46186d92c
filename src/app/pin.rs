//! Pinning: record on this host which key opens a backing store, after proving it does (config
//! MAC checked with the key named here). Adopts stores made before pins existed.

use super::{Error, ErrorKind, KeyChoice, Result};
use crate::keysource::pins::{self, Pin};
use crate::keysource::KeySpec;
use crate::store::config;
use std::path::{Path, PathBuf};

/// An existing filesystem and the key the user says opens it.
#[derive(Debug, Clone)]
pub struct PinRequest {
    pub backing: PathBuf,
    pub key: KeyChoice,
}

/// Unlocks the store with the key named on the command line (never with what its config
/// says) and replaces any pin of its filesystem id with the authenticated key source.
pub fn run(args: &PinRequest) -> Result<Pinned> {
    let Some(text) = args.key.key.as_deref() else {
        return Err(Error::usage("pin needs --key SOURCE")
            .hint("the key source that opens this filesystem, e.g. --key keyfile:/etc/secretfs/key or --key kms --kms-key ARN"));
    };
    if args.key.aws.kms_key.is_some() || args.key.aws.wrapped_key.is_some() {
        crate::daemon::init_logging(true, None);
    }
    let backing = super::existing_dir(&args.backing, "backing directory", ErrorKind::Backing)?;
    let (config, mac) = config::load(&backing)?;
    let spec = args.key.spec(text)?;
    super::keys::check_untrusted_spec(&spec, &config, &backing)?;
    crate::daemon::forbid_core_dumps();
    // An ephemeral store has no key to prove: it is emptied and re-keyed at every mount.
    if !matches!(spec, KeySpec::Ephemeral) {
        // No pin vouches for the store here: the slots are those of the key named, tried with
        // the identity and placement the user gave.
        let mut plan = super::keys::plan_unlock_untrusted(&backing, &args.key, None, &config)?;
        plan.preread()?;
        plan.open(&config, &mac)?;
    }
    let before = pins::load(Path::new(pins::PIN_DIR), &config.fs_id)
        .ok()
        .flatten();
    let pin = Pin::of(&config, &backing);
    let newly_trusted = pin
        .slots()
        .iter()
        .filter(|s| !before.as_ref().is_some_and(|b| b.trusts(s)))
        .map(|s| s.id)
        .collect();
    pins::store(Path::new(pins::PIN_DIR), &pin).map_err(|e| Error::failure(e.to_string()))?;
    Ok(Pinned { pin, newly_trusted })
}

/// The pin written, and the slots this host did not trust before (say which: a restored older
/// config could bring back a slot that was removed).
pub struct Pinned {
    pub pin: Pin,
    pub newly_trusted: Vec<u32>,
}

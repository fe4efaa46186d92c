//! Block mode for the API: the key of a volume chosen as for a file-mode store (pin first, the
//! token never alone), then prepare, unlock, mount, pin and audit.

use super::{Error, KeyChoice, Result};
use crate::block::{self, BlockError, OpenRequest};
use crate::keysource::KeySpec;
use crate::store::config::KeySourceDescriptor;

/// The key of a volume, chosen as for a file-mode store: the LUKS2 token is read from the
/// device, which whoever can write the disk controls, so it never chooses the key alone. An
/// existing volume opens with the source this host pinned for its UUID (the token must match
/// it), or with the key the user names, which is then pinned; a new one takes the named key.
/// Returns whether the volume is to be pinned once it is open. Ephemeral volumes are formatted
/// at every open with a fresh random key, whatever their token says, and never pinned.
fn choose(
    key: &KeyChoice,
    option: Option<&str>,
    prepared: &block::Prepared,
) -> Result<(KeySpec, bool)> {
    let given = key.key.as_deref().or(option);
    let (Some(stored), Some(uuid)) = (prepared.descriptor(), prepared.uuid()) else {
        return match given {
            Some(text) => Ok((key.spec(text)?, true)),
            None => Err(BlockError::KeyNeeded {
                device: prepared.device().to_path_buf(),
            }
            .into()),
        };
    };
    if matches!(stored, KeySourceDescriptor::Ephemeral) {
        return Ok((super::keys::spec_for(key, option, stored)?, false));
    }
    let device = prepared.device().display();
    match crate::keysource::pins::load(std::path::Path::new(crate::keysource::pins::PIN_DIR), &uuid)
        .map_err(|e| Error::key(e.to_string()))?
    {
        Some(pin) => {
            if pin.key_source != *stored {
                return Err(Error::key(format!(
                    "the LUKS2 token of {device} names key source `{}`, but this host pinned `{}` for volume {uuid}: the token was replaced or edited; nothing was touched",
                    stored.kind(),
                    pin.key_source.kind()
                )));
            }
            let mut spec = match given {
                Some(text) => key.spec(text)?,
                None => super::keys::spec_for(key, None, &pin.key_source)?,
            };
            super::keys::same_kind(&spec, &pin.key_source, "the pin")?;
            super::keys::pin_kms_key(&mut spec, &pin.key_source);
            Ok((spec, false))
        }
        None => {
            let Some(text) = given else {
                return Err(Error::key(format!(
                    "volume {uuid} on {device} has no key pin on this host, and its LUKS2 token cannot be trusted to name its key"
                ))
                .hint("name the key once with --key (or -o key=); it is pinned after it opens the volume"));
            };
            let spec = key.spec(text)?;
            super::keys::require_identity(&spec)?;
            super::keys::same_kind(&spec, stored, "the volume's token")?;
            Ok((spec, true))
        }
    }
}

/// Shared by `block open` and the fstab helper (`mode=block`).
pub fn open(req: &OpenRequest, key: &KeyChoice, option: Option<&str>) -> Result<block::Opened> {
    crate::daemon::forbid_core_dumps();
    let prepared = block::prepare(req)?;
    let (mut spec, pin_after) = choose(key, option, &prepared)?;
    if let KeySpec::Passphrase(crate::keysource::PassphraseInput::Tty) = &spec {
        let pass = crate::keysource::local::read_passphrase(
            &crate::keysource::PassphraseInput::Tty,
            prepared.descriptor().is_none(),
        )?;
        spec = KeySpec::Passphrase(crate::keysource::PassphraseInput::Preread(pass));
    }
    let opened = block::open(prepared, &spec)?;
    let target = std::fs::canonicalize(&req.target).unwrap_or_else(|_| req.target.clone());
    if pin_after && !matches!(opened.descriptor, KeySourceDescriptor::Ephemeral) {
        if let Ok(fs_id) = opened.uuid.parse() {
            if let Err(e) = crate::keysource::pins::store(
                std::path::Path::new(crate::keysource::pins::PIN_DIR),
                &crate::keysource::pins::Pin {
                    fs_id,
                    backing: target,
                    key_source: opened.descriptor.clone(),
                    slots: Vec::new(),
                },
            ) {
                eprintln!("secretfs: warning: {e}; give --key at every open until it is pinned");
            }
        }
    }
    crate::audit::unlocked(&opened.uuid, opened.key_source);
    crate::audit::mounted(
        &opened.uuid,
        &opened.device.to_string_lossy(),
        &opened.mountpoint.to_string_lossy(),
    );
    Ok(opened)
}

/// Unmounts and closes a volume named by its mount point or mapping; returns the mapping name.
pub fn close(target: &str) -> Result<String> {
    Ok(block::close(target)?)
}

/// An open volume named by its mount point or mapping, if `target` is one.
pub fn status(target: &str) -> Option<block::BlockStatus> {
    block::status(target)
}

/// Whether `target` names an open secretfs volume (rather than a file-mode mount).
pub fn is_volume(target: &str) -> bool {
    block::resolve_name(target).is_some()
}

//! Key slots: how one slot's key recovers the master key (directly, or by unwrapping the slot's
//! wrapped copy) and how a new slot's key wraps it; which slots to try is the caller's choice.

use super::{KeySourceError, KeySpec};
use crate::crypto::keys::{unwrap_key, wrap_key, MasterKey};
use crate::store::config::{slot_aad, KeySlot, KeySourceDescriptor};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// The master key as `spec` recovers it through `slot`: the source's key itself for a direct
/// slot, else the slot's wrapped copy opened with it (bound to the fs id and the slot id).
pub fn open(spec: &KeySpec, slot: &KeySlot, fs_id: &[u8; 16]) -> Result<MasterKey, KeySourceError> {
    let wrapped = slot.wrapped_master().map_err(KeySourceError::Damaged)?;
    let key = spec.resolve(&slot.source, fs_id)?;
    let Some(wrapped) = wrapped else {
        return Ok(key);
    };
    unwrap_key(&key, &wrapped, &slot_aad(fs_id, slot.id)).map_err(|_| match slot.source {
        KeySourceDescriptor::Recovery => KeySourceError::WrongRecoveryKey,
        _ => KeySourceError::SlotDoesNotOpen {
            slot: slot.id,
            kind: slot.source.kind(),
        },
    })
}

/// A new wrapped slot: `master` wrapped under the new source's key.
pub fn wrapped(
    id: u32,
    new_key: &MasterKey,
    descriptor: KeySourceDescriptor,
    master: &MasterKey,
    fs_id: &[u8; 16],
) -> KeySlot {
    let sealed = wrap_key(new_key, master, &slot_aad(fs_id, id));
    KeySlot {
        id,
        source: descriptor,
        region: None,
        endpoint: None,
        wrapped_master: Some(B64.encode(sealed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keysource::PassphraseInput;

    fn keyfile(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, MasterKey) {
        let path = dir.join(name);
        let key = crate::keysource::local::create_or_read_keyfile(&path).unwrap();
        (path, key)
    }

    #[test]
    fn a_wrapped_slot_opens_only_with_its_key_its_id_and_its_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let fs_id = [3u8; 16];
        let master = MasterKey::random();
        let (path, key) = keyfile(dir.path(), "k1");
        let desc = KeySourceDescriptor::Keyfile { path: path.clone() };
        let slot = wrapped(2, &key, desc.clone(), &master, &fs_id);
        let spec = KeySpec::Keyfile(path);
        assert_eq!(
            open(&spec, &slot, &fs_id).unwrap().expose(),
            master.expose()
        );
        // Another filesystem, or the same wrapped key moved to another slot id: refused.
        assert!(matches!(
            open(&spec, &slot, &[4u8; 16]),
            Err(KeySourceError::SlotDoesNotOpen { slot: 2, .. })
        ));
        let moved = KeySlot {
            id: 3,
            ..slot.clone()
        };
        assert!(open(&spec, &moved, &fs_id).is_err());
        // Another key file.
        let (other, _) = keyfile(dir.path(), "k2");
        assert!(matches!(
            open(&KeySpec::Keyfile(other), &slot, &fs_id),
            Err(KeySourceError::SlotDoesNotOpen { .. })
        ));
    }

    #[test]
    fn a_direct_slot_is_the_sources_key_and_a_recovery_slot_names_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let fs_id = [5u8; 16];
        let (path, key) = keyfile(dir.path(), "k");
        let direct = KeySlot::direct(0, KeySourceDescriptor::Keyfile { path: path.clone() });
        assert_eq!(
            open(&KeySpec::Keyfile(path), &direct, &fs_id)
                .unwrap()
                .expose(),
            key.expose()
        );

        let master = MasterKey::random();
        let new = KeySpec::Recovery(PassphraseInput::Tty)
            .create(&fs_id)
            .unwrap();
        let text = new.recovery_text.unwrap();
        let slot = wrapped(1, &new.key, new.descriptor, &master, &fs_id);
        let typed = |t: &str| KeySpec::Recovery(PassphraseInput::Preread(t.to_string().into()));
        assert_eq!(
            open(&typed(&text), &slot, &fs_id).unwrap().expose(),
            master.expose()
        );
        let other = crate::crypto::recovery::RecoveryKey::generate().display();
        assert!(matches!(
            open(&typed(&other), &slot, &fs_id),
            Err(KeySourceError::WrongRecoveryKey)
        ));
        let mut typo = text.to_string();
        typo.replace_range(0..1, if typo.starts_with('9') { "8" } else { "9" });
        assert!(matches!(
            open(&typed(&typo), &slot, &fs_id),
            Err(KeySourceError::RecoveryKeyForm(_))
        ));
    }
}

//! Block-mode key slots: secretfs slot N is LUKS2 keyslot N plus a `secretfs` token naming it;
//! this module owns what each keyslot's passphrase is, and adding or wiping a slot in order.
//!
//! The passphrase rule: keyslot N's passphrase is the lower-case hex of the HKDF `luks` subkey
//! of slot N's own source key (`KeyRing::new(key, uuid).luks_passphrase()`), as keyslot 0's
//! always was; except a recovery slot, whose passphrase is the recovery key's printed text
//! itself (canonical form, dashes included), so that a stock `cryptsetup open` with the key
//! typed at its prompt opens the volume on a machine with no secretfs at all.

use super::{luks, BlockError};
use crate::crypto::keys::{KeyRing, MasterKey};
use crate::crypto::recovery::RecoveryKey;
use crate::keysource::{KeySourceError, KeySpec, NewKey};
use crate::store::config::{KeySlot, KeySourceDescriptor};
use std::path::Path;
use zeroize::Zeroizing;

/// A keyslot passphrase: key material, wiped when dropped.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// The keyslot passphrase of a source key (every source but recovery).
pub fn key_passphrase(key: &MasterKey, uuid: &uuid::Uuid) -> Passphrase {
    let hex = luks::passphrase_hex(&KeyRing::new(key, uuid.as_bytes()).luks_passphrase());
    Zeroizing::new(hex.expose().to_vec())
}

/// The keyslot passphrase of a recovery key: its canonical printed form, whatever spacing or
/// dashes the person typed (a typo is named by group here, before cryptsetup is asked).
pub fn recovery_passphrase(typed: &str) -> Result<Passphrase, KeySourceError> {
    let key = RecoveryKey::parse(typed)?;
    Ok(Zeroizing::new(key.display().as_bytes().to_vec()))
}

/// The passphrase `spec` gives for `slot` of volume `uuid`: the key is read, derived or asked
/// from KMS as the slot's source says (a KMS slot in its own region), then turned into the
/// keyslot's passphrase by the rule above.
pub fn passphrase(
    spec: &KeySpec,
    slot: &KeySlot,
    uuid: &uuid::Uuid,
) -> Result<Passphrase, BlockError> {
    if let (KeySpec::Recovery(input), KeySourceDescriptor::Recovery) = (spec, &slot.source) {
        let text = crate::keysource::local::read_secret(input, "secretfs recovery key: ", false)?;
        return Ok(recovery_passphrase(&text)?);
    }
    let key = spec.resolve(&slot.source, uuid.as_bytes())?;
    Ok(key_passphrase(&key, uuid))
}

/// The passphrase of a slot just made by `KeySpec::create`.
pub fn new_passphrase(new: &NewKey, uuid: &uuid::Uuid) -> Passphrase {
    match &new.recovery_text {
        Some(text) => Zeroizing::new(text.as_bytes().to_vec()),
        None => key_passphrase(&new.key, uuid),
    }
}

/// What a keyslot refusing a passphrase means for the slot it belongs to: a clear word for a
/// mistyped-but-valid recovery key; other errors pass through.
pub fn refused(slot: &KeySlot, e: BlockError) -> BlockError {
    match (e, &slot.source) {
        (BlockError::WrongKey, KeySourceDescriptor::Recovery) => {
            BlockError::Key(KeySourceError::WrongRecoveryKey)
        }
        (BlockError::WrongKey, source) => BlockError::SlotRefused {
            slot: slot.id,
            kind: source.kind(),
        },
        (e, _) => e,
    }
}

/// Adds `slot` with `new_pass`, unlocked by keyslot `unlock` and its `pass`: the keyslot first,
/// then its token. A kill between the two leaves a keyslot no token names, which is never tried
/// (only keyslots with a token of ours, pinned on this host, are) and which `key remove` wipes.
pub fn add(
    device: &Path,
    unlock: u32,
    pass: &[u8],
    slot: &KeySlot,
    new_pass: &[u8],
) -> Result<(), BlockError> {
    luks::add_key(device, unlock, pass, slot.id, new_pass)?;
    // Proven before its token makes it a slot: the keyslot takes exactly this passphrase.
    luks::test_passphrase(device, slot.id, new_pass)?;
    luks::import_token(device, slot)
}

/// Removes slot `id`: its tokens first (it stops being a slot of ours at once), then the
/// keyslot. A kill between the two leaves a keyslot no token names: never tried, and wiped by
/// running the same removal again. `verify`: a passphrase of another keyslot, which cryptsetup
/// checks before it wipes; `None` when the caller unlocked with this very slot (`--force`).
pub fn remove(
    device: &Path,
    header: &luks::Header,
    id: u32,
    verify: Option<&[u8]>,
) -> Result<(), BlockError> {
    for t in header.slots.iter().filter(|t| t.slot.id == id) {
        luks::remove_token(device, t.token_id)?;
    }
    if header.keyslots.contains(&id) {
        luks::kill_slot(device, id, verify)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keysource::PassphraseInput;

    #[test]
    fn a_recovery_slot_takes_the_printed_text_and_other_slots_the_hex_subkey() {
        let uuid = uuid::Uuid::from_bytes([9; 16]);
        let recovery = KeySpec::Recovery(PassphraseInput::Tty)
            .create(uuid.as_bytes())
            .unwrap();
        let text = recovery.recovery_text.clone().unwrap();
        assert_eq!(new_passphrase(&recovery, &uuid).as_slice(), text.as_bytes());
        assert_eq!(text.len(), 17 * 7 - 1, "17 groups of 6 digits, 16 dashes");

        // Typed without dashes, with spaces or a newline: the same keyslot passphrase.
        let plain: String = text.chars().filter(|c| *c != '-').collect();
        let spaced = text.replace('-', " ") + "\n";
        for typed in [plain.as_str(), spaced.as_str()] {
            let slot = KeySlot::direct(1, KeySourceDescriptor::Recovery);
            let spec = KeySpec::Recovery(PassphraseInput::Preread(typed.to_string().into()));
            let pass = passphrase(&spec, &slot, &uuid).unwrap();
            assert_eq!(pass.as_slice(), text.as_bytes(), "{typed}");
        }

        let key = MasterKey::from_slice(&[7; 32]).unwrap();
        let hex = key_passphrase(&key, &uuid);
        assert_eq!(hex.len(), 64);
        assert!(hex
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let other = key_passphrase(&key, &uuid::Uuid::from_bytes([8; 16]));
        assert_ne!(hex, other, "bound to the volume's UUID");
    }

    #[test]
    fn a_mistyped_recovery_key_is_named_before_cryptsetup_and_a_wrong_one_after() {
        let uuid = uuid::Uuid::from_bytes([9; 16]);
        let slot = KeySlot::direct(1, KeySourceDescriptor::Recovery);
        let typo = KeySpec::Recovery(PassphraseInput::Preread("123456-1".to_string().into()));
        assert!(matches!(
            passphrase(&typo, &slot, &uuid),
            Err(BlockError::Key(KeySourceError::RecoveryKeyForm(_)))
        ));
        assert!(matches!(
            refused(&slot, BlockError::WrongKey),
            BlockError::Key(KeySourceError::WrongRecoveryKey)
        ));
        let keyfile = KeySlot::direct(0, KeySourceDescriptor::Keyfile { path: "/k".into() });
        assert!(matches!(
            refused(&keyfile, BlockError::WrongKey),
            BlockError::SlotRefused { slot: 0, .. }
        ));
    }
}

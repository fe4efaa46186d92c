//! `secretfs key list|add|remove` on a block-mode volume (a device, or a file holding a LUKS2
//! header with our tokens): each slot one LUKS2 keyslot plus a `secretfs` token naming it.
//!
//! Order of a change, so that a `kill -9` anywhere leaves a volume that opens with the slots it
//! had: the pin first (a pin naming a slot the header lacks is harmless: only tokens it names
//! exactly are tried), then on add the keyslot and then its token, on remove the token and then
//! the keyslot. The one leftover a kill can make is a keyslot no token names: it is never tried,
//! `key list` shows it, and `key remove DEVICE N` wipes it.

use super::block::{plan_volume, volume_pin};
use super::slots::{AddRequest, Added, RemoveRequest, SlotInfo};
use super::{Error, KeyChoice, Result};
use crate::block::slots::{self as bslots, Passphrase};
use crate::block::{self, luks, BlockError};
use crate::keysource::pins::{self, Pin};
use crate::keysource::KeySpec;
use crate::store::config::{KeySlot, KeySourceDescriptor};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Whether `path` names a volume rather than a file-mode backing directory: a block device, or
/// a regular file that starts with the LUKS magic.
pub fn is_volume(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => true,
        Ok(m) if m.is_file() => {
            let mut magic = [0u8; 6];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
                && &magic == luks::LUKS_MAGIC
        }
        _ => false,
    }
}

/// `key list` on a volume: its slots (from the tokens), which ones this host trusts, and the
/// keyslots no token of ours names.
#[derive(Debug, serde::Serialize)]
pub struct VolumeSlotList {
    pub device: PathBuf,
    pub uuid: String,
    pub slots: Vec<SlotInfo>,
    /// Active LUKS2 keyslots without a `secretfs` token: never tried.
    pub untokened_keyslots: Vec<u32>,
}

/// What `key remove` took away from a volume.
pub struct VolumeRemoved {
    pub uuid: String,
    pub slot: u32,
    /// The slot's source; `None` for a keyslot no token named.
    pub key_source: Option<&'static str>,
}

/// A volume's header, read after the checks every key command makes.
struct Volume {
    device: PathBuf,
    header: luks::Header,
}

impl Volume {
    fn read(path: &Path) -> Result<Volume> {
        block::preflight_header()?;
        let device = std::fs::canonicalize(path)
            .map_err(|e| Error::backing(format!("cannot use {}: {e}", path.display())))?;
        if !is_volume(&device) {
            return Err(BlockError::NotAVolume {
                path: device,
                why: "no LUKS header".into(),
            }
            .into());
        }
        let header = luks::read_header(&device)?;
        if header.slots.is_empty() {
            return Err(BlockError::NotAVolume {
                path: device,
                why: "its LUKS header has no secretfs token".into(),
            }
            .into());
        }
        Ok(Volume { device, header })
    }

    fn uuid(&self) -> uuid::Uuid {
        self.header.uuid
    }

    fn pin(&self) -> Result<Option<Pin>> {
        pins::load(Path::new(pins::PIN_DIR), &self.uuid()).map_err(|e| Error::key(e.to_string()))
    }

    /// Proves a key in hand: the first trusted slot whose keyslot takes its passphrase
    /// (`open --test-passphrase`: nothing is activated, so the volume may be open elsewhere).
    fn unlock(&self, key: &KeyChoice) -> Result<(KeySlot, Passphrase)> {
        crate::daemon::forbid_core_dumps();
        let uuid = self.uuid();
        let (mut plan, _) = plan_volume(&self.device, uuid, self.header.key_slots(), key, None)?;
        plan.preread()?;
        plan.try_slots(|spec, slot| {
            let pass = bslots::passphrase(spec, slot, &uuid)?;
            luks::test_passphrase(&self.device, slot.id, &pass)
                .map_err(|e| bslots::refused(slot, e))?;
            Ok((slot.clone(), pass))
        })
    }

    /// The pin after a change: the slots this host trusted that remain, plus `added`; with no
    /// pin yet, the slot just proven (`opened`) is the one trusted. Refused when none would be
    /// left, before anything changes.
    fn repin(
        &self,
        opened: &KeySlot,
        added: Option<&KeySlot>,
        removed: Option<u32>,
    ) -> Result<Pin> {
        let old = self.pin()?;
        let mut trusted: Vec<KeySlot> = self
            .header
            .key_slots()
            .into_iter()
            .filter(|s| Some(s.id) != removed)
            .filter(|s| match &old {
                Some(pin) => pin.trusts(s),
                None => s == opened,
            })
            .collect();
        trusted.extend(added.cloned());
        let backing = old
            .map(|p| p.backing)
            .unwrap_or_else(|| self.device.clone());
        volume_pin(self.uuid(), &backing, trusted).ok_or_else(|| {
            Error::key("no slot this host trusts would be left; nothing was changed")
                .hint("open the volume once with another slot's key (--key SOURCE) to pin it first")
        })
    }

    /// An exclusive lock for one key change of this volume, so two commands cannot both pick
    /// the same free keyslot. Released on drop. Not a lock on the image file itself: cryptsetup
    /// flocks an image file it works on, and would wait for us forever.
    fn lock(&self) -> Result<std::fs::File> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = Path::new(crate::daemon::STATE_DIR);
        let path = dir.join(format!("key-{}.lock", self.uuid()));
        let io = |e: std::io::Error| Error::failure(format!("cannot lock {}: {e}", path.display()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::failure(format!(
                "another `secretfs key` command is changing the slots of {}",
                self.device.display()
            ))
            .hint("wait for it to finish, then run this one again"));
        }
        Ok(file)
    }
}

/// Lists the slots as the volume's tokens describe them, and which ones this host trusts. No
/// key is needed: the tokens are proven only when a slot opens the volume.
pub fn list(path: &Path) -> Result<VolumeSlotList> {
    let vol = Volume::read(path)?;
    let pin = vol.pin()?;
    let slots = vol
        .header
        .key_slots()
        .into_iter()
        // Every keyslot wraps the LUKS volume key: none is the key itself.
        .map(|s| SlotInfo::of(s, false, pin.as_ref()))
        .collect();
    Ok(VolumeSlotList {
        uuid: vol.uuid().to_string(),
        untokened_keyslots: vol.header.untokened(),
        device: vol.device,
        slots,
    })
}

/// Adds a slot to a volume: unlocks with an existing slot, makes the new key with its source,
/// proves it gives the passphrase an open will compute, re-pins, then adds the keyslot and its
/// token (see the module comment for the order).
pub fn add(req: &AddRequest) -> Result<Added> {
    let mut spec = super::slots::new_slot_spec(req)?;
    let vol = Volume::read(&req.backing)?;
    let _lock = vol.lock()?;
    if matches!(vol.header.primary(), Some(KeySourceDescriptor::Ephemeral)) {
        return Err(Error::usage(format!(
            "{} is an ephemeral volume: it is re-made with a new random key at every open, so there is no key to add a slot to",
            vol.device.display()
        )));
    }
    let (opened, pass) = vol.unlock(&req.unlock)?;
    let uuid = vol.uuid();
    let Some(id) = vol.header.free_keyslot() else {
        return Err(Error::usage(format!(
            "all {} LUKS2 keyslots of {} are in use",
            luks::MAX_KEYSLOTS,
            vol.device.display()
        ))
        .hint("remove one first: secretfs key remove DEVICE N"));
    };
    let (new, region, endpoint) =
        super::slots::new_slot_key(&mut spec, &req.new_key, req.force, id, uuid.as_bytes())?;
    let slot = KeySlot {
        id,
        source: new.descriptor.clone(),
        region,
        endpoint,
        wrapped_master: None,
    };
    let new_pass = bslots::new_passphrase(&new, &uuid);
    prove(&slot, &spec, &new_pass, &uuid)?;
    let pin = vol.repin(&opened, Some(&slot), None)?;
    pins::store(Path::new(pins::PIN_DIR), &pin)
        .map_err(|e| Error::failure(format!("{e}; nothing was changed")))?;
    bslots::add(&vol.device, opened.id, &pass, &slot, &new_pass)?;
    Ok(Added::audited(uuid.to_string(), &slot, new.recovery_text))
}

/// The new slot must give, read back as an open will read it (a KMS Decrypt in the slot's own
/// region, the key file read again), the passphrase its keyslot is about to take. Typed keys
/// (passphrase, recovery) are the ones just made; nothing to read back.
fn prove(slot: &KeySlot, spec: &KeySpec, made: &[u8], uuid: &uuid::Uuid) -> Result<()> {
    if slot.source.is_interactive() {
        return Ok(());
    }
    let mut check = spec.clone();
    if let Some(aws) = check.aws_args_mut() {
        let key = slot.source.identity();
        aws.kms_key = Some(key).filter(|k| !k.is_empty()).or(aws.kms_key.take());
        aws.region = slot.region.clone();
        aws.endpoint = slot.endpoint.clone();
        aws.force = false;
    }
    let again = bslots::passphrase(&check, slot, uuid).map_err(|e| {
        Error::from(e).hint("the new slot was not written: its key cannot be read back")
    })?;
    if again.as_slice() != made {
        return Err(Error::failure(
            "the new slot's key, read back as an open reads it, gives another passphrase; nothing was written",
        ));
    }
    Ok(())
}

/// Removes a slot from a volume. Never the last one; the slot that unlocked this command only
/// with `force`. A keyslot no token names (an interrupted `key add`) is wiped without those
/// checks: it never was a way in.
pub fn remove(req: &RemoveRequest) -> Result<VolumeRemoved> {
    let vol = Volume::read(&req.backing)?;
    let _lock = vol.lock()?;
    let slots = vol.header.key_slots();
    let target = slots.iter().find(|s| s.id == req.slot).cloned();
    let untokened = vol.header.untokened().contains(&req.slot);
    if target.is_none() && !untokened {
        return Err(
            Error::usage(format!("{} has no slot {}", vol.device.display(), req.slot))
                .hint(format!("secretfs key list {}", vol.device.display())),
        );
    }
    let (opened, pass) = vol.unlock(&req.unlock)?;
    if let Some(slot) = &target {
        let ids: std::collections::BTreeSet<u32> = slots.iter().map(|s| s.id).collect();
        super::slots::refuse_removal(
            super::slots::Removal {
                slot: slot.id,
                slots: ids.len(),
                opened: opened.id,
                force: req.force,
            },
            ("volume", &vol.device, "DEVICE"),
        )?;
    }
    let pin = vol.repin(&opened, None, Some(req.slot))?;
    pins::store(Path::new(pins::PIN_DIR), &pin)
        .map_err(|e| Error::failure(format!("{e}; nothing was changed")))?;
    // cryptsetup checks the key in hand opens another keyslot before it wipes this one; when
    // the key in hand is this very slot's (--force), there is no other to check.
    let verify = (opened.id != req.slot).then_some(pass.as_slice());
    bslots::remove(&vol.device, &vol.header, req.slot, verify)?;
    let fs = vol.uuid().to_string();
    let (kind, identity) = target.as_ref().map_or(("none", String::new()), |s| {
        (s.source.kind(), s.source.identity())
    });
    crate::audit::slot_changed(&fs, "remove", req.slot, kind, &identity);
    Ok(VolumeRemoved {
        uuid: fs,
        slot: req.slot,
        key_source: target.map(|s| s.source.kind()),
    })
}

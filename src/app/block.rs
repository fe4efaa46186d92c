//! Block mode for the API: the slots of a volume chosen as for a file-mode store (pin first, the
//! tokens never alone), then prepare, format or unlock slot by slot, mount, pin and audit.

use super::keys::{self, UnlockPlan};
use super::{Error, KeyChoice, Result};
use crate::block::{self, BlockError, OpenRequest};
use crate::keysource::pins::{self, Pin};
use crate::keysource::KeySpec;
use crate::store::config::{KeySlot, KeySourceDescriptor};
use std::path::Path;

/// Which slots of an existing volume may open it, chosen as for a file-mode store: the LUKS2
/// tokens are read from the device, which whoever can write the disk controls, so they never
/// choose the key alone. With a pin (`/etc/secretfs/pins/<LUKS UUID>.json`) only the slots it
/// names exactly are tried, narrowed by `--slot` / `--key`; without one, only the source the
/// user names. Returns the plan and the pin it was made under (`None`: a first use, to be
/// pinned once a slot has opened the volume).
pub(crate) fn plan_volume(
    device: &Path,
    uuid: uuid::Uuid,
    slots: Vec<KeySlot>,
    key: &KeyChoice,
    option: Option<&str>,
) -> Result<(UnlockPlan, Option<Pin>)> {
    let pin = pins::load(Path::new(pins::PIN_DIR), &uuid).map_err(|e| {
        Error::key(e.to_string())
            .hint("a pin must be a root-owned file writable only by root; it is written again by the next open that names --key")
    })?;
    let device = device.display();
    let Some(pin) = pin else {
        let Some(text) = key.key.as_deref().or(option) else {
            return Err(Error::key(format!(
                "volume {uuid} on {device} has no key pin on this host, and its LUKS2 tokens cannot be trusted to name its key"
            ))
            .hint("name the key once with --key (or -o key=); it is pinned after it opens the volume"));
        };
        let spec = key.spec(text)?;
        let plan = keys::plan_named(uuid, key, spec, &slots, "the volume's LUKS2 header")?;
        refuse_unchecked_placement(&plan, key, &device.to_string())?;
        return Ok((plan, None));
    };
    let (trusted, untrusted): (Vec<KeySlot>, Vec<KeySlot>) =
        slots.iter().cloned().partition(|s| pin.trusts(s));
    if trusted.is_empty() {
        return Err(Error::key(format!(
            "the LUKS2 tokens of {device} name key slots [{}], but this host pinned [{}] for volume {uuid}: the tokens were replaced or edited; nothing was touched",
            keys::slot_list(&slots),
            keys::slot_list(&pin.slots()),
        ))
        .hint("restore the LUKS2 header from a backup (cryptsetup luksHeaderRestore); to trust a new key on purpose, remove the pin and open once with --key"));
    }
    let plan = keys::plan_pinned(uuid, key, option, trusted, untrusted, None)?;
    Ok((plan, Some(pin)))
}

/// A first open calls AWS where the command line says, then pins the slot that opened as its
/// token reads. Tokens are not authenticated (anyone who can write the LUKS2 header can edit
/// them), so a region or endpoint a token names must be one the command line named too: else
/// every later open would send its KMS calls (and the wrapped key) somewhere nobody checked.
fn refuse_unchecked_placement(plan: &UnlockPlan, key: &KeyChoice, device: &str) -> Result<()> {
    for attempt in plan.attempts() {
        if !attempt.spec.uses_aws() {
            continue;
        }
        let slot = &attempt.slot;
        let differs =
            |token: &Option<String>, given: &Option<String>| token.is_some() && token != given;
        let mut named = Vec::new();
        if differs(&slot.region, &key.aws.region) {
            named.push(format!(
                "--region {}",
                slot.region.as_deref().unwrap_or_default()
            ));
        }
        if differs(&slot.endpoint, &key.aws.endpoint) {
            named.push(format!(
                "--endpoint-url {}",
                slot.endpoint.as_deref().unwrap_or_default()
            ));
        }
        if !named.is_empty() {
            return Err(Error::key(format!(
                "slot {} of {device} names an AWS placement ({}) that this command did not, and a volume's LUKS2 tokens are not authenticated: nothing was tried",
                slot.id,
                named.join(" ")
            ))
            .hint(format!(
                "if that is where its key lives, open once with {}; it is pinned after it opens the volume",
                named.join(" ")
            )));
        }
    }
    Ok(())
}

/// The pin of a volume: `slots`, the ones this host trusts (never empty).
pub(crate) fn volume_pin(uuid: uuid::Uuid, backing: &Path, slots: Vec<KeySlot>) -> Option<Pin> {
    let first = slots.first()?.source.clone();
    Some(Pin {
        fs_id: uuid,
        backing: backing.to_path_buf(),
        key_source: first,
        slots,
    })
}

fn store_pin(pin: Option<Pin>) {
    let Some(pin) = pin else { return };
    if let Err(e) = pins::store(Path::new(pins::PIN_DIR), &pin) {
        eprintln!("secretfs: warning: {e}; give --key at every open until it is pinned");
    }
}

/// A volume that is open and mounted, and the recovery key of a new one (shown once).
pub struct VolumeOpened {
    pub opened: block::Opened,
    pub recovery_text: Option<zeroize::Zeroizing<String>>,
}

/// The key that formats a new volume: the one named, else an ephemeral volume's own, else the
/// source of the first slot this host pinned (`--format always` over one of ours).
fn format_spec(
    key: &KeyChoice,
    option: Option<&str>,
    prepared: &block::Prepared,
) -> Result<KeySpec> {
    if let Some(text) = key.key.as_deref().or(option) {
        return key.spec(text);
    }
    let stored = prepared.descriptor();
    if let Some(KeySourceDescriptor::Ephemeral) = stored {
        return Ok(KeySpec::Ephemeral);
    }
    let pinned = match prepared.uuid() {
        Some(uuid) => pins::load(Path::new(pins::PIN_DIR), &uuid)
            .map_err(|e| Error::key(e.to_string()))?
            .and_then(|p| p.slots().first().cloned()),
        None => None,
    };
    match pinned {
        Some(slot) => keys::spec_for(key, None, &slot.source),
        None => Err(BlockError::KeyNeeded {
            device: prepared.device().to_path_buf(),
        }
        .into()),
    }
}

/// Shared by `block open` and the fstab helper (`mode=block`): a new volume is formatted with
/// the named key as slot 0 (and a recovery slot 1 with `req.recovery`) and pinned; an existing
/// one is opened by the first of its trusted slots whose keyslot takes the slot's passphrase.
pub fn open(req: &OpenRequest, key: &KeyChoice, option: Option<&str>) -> Result<VolumeOpened> {
    crate::daemon::forbid_core_dumps();
    // Checked as a token's reader will check them (a new slot records them), before anything
    // is created or attached.
    key.aws.placement()?;
    let mut prepared = block::prepare(req)?;
    let given = key.key.as_deref().or(option);
    let ephemeral = given.is_some_and(|t| t == "ephemeral");
    let target = std::fs::canonicalize(&req.target).unwrap_or_else(|_| req.target.clone());
    if prepared.needs_format(ephemeral)? {
        let spec = format_spec(key, option, &prepared)?;
        audit_to_stderr(spec.uses_aws());
        let persistent = !matches!(spec, KeySpec::Ephemeral);
        if req.recovery && !persistent {
            return Err(Error::usage(
                "--recovery needs a persistent key: an ephemeral volume is re-made at every open",
            ));
        }
        let made = prepared.format(&spec)?;
        prepared.unlock(&made.uuid, 0, &made.passphrase)?;
        drop(made.passphrase);
        let opened = prepared.finish(&made.uuid, true, &made.slots[0])?;
        if persistent {
            store_pin(volume_pin(made.uuid, &target, made.slots));
        }
        audit(&opened);
        return Ok(VolumeOpened {
            opened,
            recovery_text: made.recovery_text,
        });
    }
    if req.recovery {
        return Err(Error::usage(format!(
            "--recovery makes a recovery slot on a new volume; {} is already one",
            req.target.display()
        ))
        .hint("add one to it: secretfs key add DEVICE --new-key recovery"));
    }
    let Some(uuid) = prepared.uuid() else {
        return Err(BlockError::KeyNeeded {
            device: prepared.device().to_path_buf(),
        }
        .into());
    };
    let (mut plan, pin) = plan_volume(prepared.device(), uuid, prepared.slots(), key, option)?;
    audit_to_stderr(plan.attempts().iter().any(|a| a.spec.uses_aws()));
    plan.preread()?;
    let slot = plan.try_slots(|spec, slot| {
        let pass = block::slots::passphrase(spec, slot, &uuid)?;
        prepared
            .unlock(&uuid, slot.id, &pass)
            .map_err(|e| block::slots::refused(slot, e))?;
        Ok(slot.clone())
    })?;
    let opened = prepared.finish(&uuid, false, &slot)?;
    if pin.is_none() {
        // A first use: the slot the named key just opened is trusted from now on.
        store_pin(volume_pin(uuid, &target, vec![slot]));
    }
    audit(&opened);
    Ok(VolumeOpened {
        opened,
        recovery_text: None,
    })
}

/// KMS calls are audit events (with the request id CloudTrail records): an open that may make
/// one shows them, and the rest of its audit events, on stderr, as `init` does.
fn audit_to_stderr(uses_aws: bool) {
    if uses_aws {
        crate::daemon::init_logging(true, None);
    }
}

fn audit(opened: &block::Opened) {
    crate::audit::unlocked(&opened.uuid, opened.key_source);
    crate::audit::mounted(
        &opened.uuid,
        &opened.device.to_string_lossy(),
        &opened.mountpoint.to_string_lossy(),
    );
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

//! `secretfs key list|add|remove` on a file-mode store: the slots that open it, a new one wrapped
//! under a key proven to work, or one fewer; each change atomic, serialised and re-pinned.
//!
//! Crash safety: the config is written atomically (temp, fsync, rename, fsync dir) and is the
//! commit point, so a `kill -9` at any point leaves a store that opens with the slots it had, on
//! this host too. The pin follows the rule that makes a restored older config visible: it never
//! names a slot id the config lacks. `add` writes the config, then the pin (a kill between leaves
//! the new slot unpinned: listed, never tried); `remove` writes the pin, then the config (a kill
//! between leaves the old slot in the config, no longer trusted).

use super::keys::{self, Opened};
use super::{Error, ErrorKind, KeyChoice, Result};
use crate::keysource::pins::{self, Pin};
use crate::keysource::{slots, KeySpec, NewKey};
use crate::store::config::{self, FsConfig, KeySlot, KeySourceDescriptor};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One slot as `key list` shows it: public facts only (never a key, never a wrapped key).
#[derive(Debug, serde::Serialize)]
pub struct SlotInfo {
    pub id: u32,
    pub key_source: &'static str,
    /// What names the key: KMS key ARN, key file, S3 object (empty for passphrase, recovery).
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Whether the slot's key is the master key itself (format 1's source) or wraps it.
    pub direct: bool,
    /// Whether this host's pin names the slot (a mount tries only pinned slots); `None` when
    /// the filesystem has no pin here.
    pub pinned: Option<bool>,
}

impl SlotInfo {
    /// What `key list` shows of `slot`, and whether `pin` (this host's, if any) trusts it.
    pub(super) fn of(slot: KeySlot, direct: bool, pin: Option<&Pin>) -> SlotInfo {
        SlotInfo {
            id: slot.id,
            key_source: slot.source.kind(),
            key: slot.source.identity(),
            s3_object: match &slot.source {
                KeySourceDescriptor::Kms { s3_uri, .. } => s3_uri.clone(),
                _ => None,
            },
            direct,
            pinned: pin.map(|p| p.trusts(&slot)),
            region: slot.region,
            endpoint: slot.endpoint,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct SlotList {
    pub backing: PathBuf,
    pub fs_id: String,
    pub format_version: u32,
    pub slots: Vec<SlotInfo>,
}

/// Lists the slots as the store's config describes them, and which ones this host trusts. No
/// key is needed: the list is authenticated only when a slot opens the store.
pub fn list(backing: &Path) -> Result<SlotList> {
    let backing = super::existing_dir(backing, "backing directory", ErrorKind::Backing)?;
    let (config, _) = config::load(&backing)?;
    let pin = pins::load(Path::new(pins::PIN_DIR), &config.fs_id)
        .map_err(|e| Error::key(e.to_string()))?;
    let slots = config
        .slots()
        .into_iter()
        .map(|s| {
            let direct = s.wrapped_master.is_none();
            SlotInfo::of(s, direct, pin.as_ref())
        })
        .collect();
    Ok(SlotList {
        backing,
        fs_id: config.fs_id.to_string(),
        format_version: config.format_version,
        slots,
    })
}

/// Which store, the key that opens it now (`unlock`), and the key of the new slot (`new_key`:
/// its source in `key`, its AWS details, how a new passphrase is read).
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub backing: PathBuf,
    pub unlock: KeyChoice,
    pub new_key: KeyChoice,
    /// Replace an existing S3 object named for the new slot.
    pub force: bool,
}

pub struct Added {
    pub fs_id: String,
    pub slot: u32,
    pub key_source: &'static str,
    /// The new recovery key's printable form: shown once, stored nowhere.
    pub recovery_text: Option<zeroize::Zeroizing<String>>,
}

impl Added {
    /// The result of a committed `key add` of `slot` to filesystem or volume `fs_id`, audited.
    pub(super) fn audited(
        fs_id: String,
        slot: &KeySlot,
        recovery_text: Option<zeroize::Zeroizing<String>>,
    ) -> Added {
        let kind = slot.source.kind();
        crate::audit::slot_changed(&fs_id, "add", slot.id, kind, &slot.source.identity());
        Added {
            fs_id,
            slot: slot.id,
            key_source: kind,
            recovery_text,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RemoveRequest {
    pub backing: PathBuf,
    pub unlock: KeyChoice,
    pub slot: u32,
    /// Also remove the slot the store was unlocked with (never the last one).
    pub force: bool,
}

pub struct Removed {
    pub fs_id: String,
    pub slot: KeySlot,
}

/// An exclusive lock on the backing directory for one key change, so two concurrent commands
/// cannot each write a config the other's change is missing from. Released on drop.
pub(super) struct StoreLock {
    _dir: std::fs::File,
}

impl StoreLock {
    pub(super) fn take(backing: &Path) -> Result<StoreLock> {
        let dir = std::fs::File::open(backing)
            .map_err(|e| Error::backing(format!("cannot open {}: {e}", backing.display())))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::failure(format!(
                "another `secretfs key` command is changing the slots of {}",
                backing.display()
            ))
            .hint("wait for it to finish, then run this one again"));
        }
        Ok(StoreLock { _dir: dir })
    }
}

/// Opens the store with a trusted slot, under the lock. A config that lacks a slot this host
/// pinned is refused: building on it would silently drop that slot (or keep a removed one).
pub(super) fn open_locked(
    backing: &Path,
    unlock: &KeyChoice,
) -> Result<(PathBuf, StoreLock, FsConfig, Opened)> {
    let backing = super::existing_dir(backing, "backing directory", ErrorKind::Backing)?;
    let lock = StoreLock::take(&backing)?;
    crate::daemon::forbid_core_dumps();
    let (config, opened) = keys::unlock(&backing, unlock)?;
    let pin = pins::load(Path::new(pins::PIN_DIR), &config.fs_id)
        .map_err(|e| Error::key(e.to_string()))?;
    let missing = pin
        .as_ref()
        .map(|p| keys::rolled_back(p, &config))
        .unwrap_or_default();
    if !missing.is_empty() {
        return Err(Error::key(format!(
            "this host pinned slot(s) {missing:?} of filesystem {}, but the store's config lacks them: an older config may have been restored; nothing was changed",
            config.fs_id
        ))
        .hint(format!(
            "if the config is as it should be, trust it as it is first: secretfs pin {} --key SOURCE",
            backing.display()
        )));
    }
    if matches!(config.primary(), KeySourceDescriptor::Ephemeral) {
        return Err(Error::usage(format!(
            "{} is an ephemeral filesystem: it gets a new random key at every mount, so there is no key to add a slot to",
            backing.display()
        )));
    }
    Ok((backing, lock, config, opened))
}

/// The pin after a change: the slots this host trusted before that remain, plus `added`. A
/// slot the store holds but this host never pinned stays untrusted.
fn repin(backing: &Path, before: &FsConfig, after: &FsConfig, added: Option<u32>) -> Result<Pin> {
    let old = pins::load(Path::new(pins::PIN_DIR), &before.fs_id)
        .map_err(|e| Error::key(e.to_string()))?
        // A first use has just been proven by the MAC: it trusts the slots it saw.
        .unwrap_or_else(|| Pin::of(before, backing));
    let trusted: Vec<KeySlot> = after
        .slots()
        .into_iter()
        .filter(|s| old.trusts(s) || Some(s.id) == added)
        .collect();
    let Some(first) = trusted.first() else {
        return Err(
            Error::key("no slot this host trusts would be left; nothing was changed")
                .hint("pin another slot first: secretfs pin BACKING --key SOURCE"),
        );
    };
    Ok(Pin {
        fs_id: after.fs_id,
        backing: backing.to_path_buf(),
        key_source: first.source.clone(),
        slots: trusted,
    })
}

fn store_pin(pin: &Pin) -> Result<()> {
    pins::store(Path::new(pins::PIN_DIR), pin).map_err(|e| Error::failure(e.to_string()))
}

/// `add`: the config (the commit point), then the pin (see the module comment).
fn commit_add(backing: &Path, pin: &Pin, config: &FsConfig, opened: &Opened) -> Result<()> {
    config::store(backing, config, &opened.keys, true)?;
    store_pin(pin).map_err(|e| {
        e.hint(format!(
            "the slot was added but is not trusted on this host yet: secretfs pin {} --key SOURCE",
            backing.display()
        ))
    })
}

/// `remove`: the pin, then the config; the old pin is put back if the config cannot be written.
fn commit_remove(
    backing: &Path,
    old_pin: Option<&Pin>,
    pin: &Pin,
    config: &FsConfig,
    opened: &Opened,
) -> Result<()> {
    store_pin(pin).map_err(|e| Error::failure(format!("{}; nothing was changed", e.message)))?;
    if let Err(e) = config::store(backing, config, &opened.keys, true) {
        if let Some(old) = old_pin {
            if let Err(restore) = store_pin(old) {
                tracing::error!("cannot restore the pin: {}", restore.message);
            }
        }
        return Err(e.into());
    }
    Ok(())
}

/// Adds a slot: unlocks with an existing one, makes the new slot's key with its source (a KMS
/// data key, a key file, a passphrase, a recovery key), wraps the master key under it, proves
/// the new slot opens the store as a mount would open it, then commits.
pub fn add(req: &AddRequest) -> Result<Added> {
    let mut spec = new_slot_spec(req)?;
    let (backing, _lock, config, opened) = open_locked(&req.backing, &req.unlock)?;
    keys::refuse_keyfile_in_store(&spec, &backing)?;
    if config.slots().len() >= config::MAX_SLOTS {
        return Err(Error::usage(format!(
            "{} already has {} slots, the most a filesystem may have; remove one first",
            backing.display(),
            config::MAX_SLOTS
        )));
    }
    if let Some(uri) = spec_object(&spec) {
        // Overwriting (with --force) the object another slot reads would break that slot.
        let taken = config.slots().iter().any(
            |s| matches!(&s.source, KeySourceDescriptor::Kms { s3_uri: Some(u), .. } if *u == uri),
        );
        if taken {
            return Err(Error::usage(format!(
                "{uri} already holds the wrapped key of another slot; name a new object"
            )));
        }
    }
    let fs_id = config.fs_id_bytes();
    let id = config.next_slot_id();
    let (new, region, endpoint) = new_slot_key(&mut spec, &req.new_key, req.force, id, &fs_id)?;
    let slot = KeySlot {
        region,
        endpoint,
        ..slots::wrapped(id, &new.key, new.descriptor.clone(), &opened.master, &fs_id)
    };
    prove(&slot, &spec, &new.key, &opened, &fs_id)?;
    let mut after = config.clone();
    let mut all = config.slots();
    all.push(slot.clone());
    after.set_slots(all).map_err(Error::usage)?;
    let pin = repin(&backing, &config, &after, Some(id))?;
    commit_add(&backing, &pin, &after, &opened)?;
    Ok(Added::audited(
        config.fs_id.to_string(),
        &slot,
        new.recovery_text,
    ))
}

/// The new slot's source as `key add` names it (for a store or a volume): never ephemeral; KMS
/// calls, the new slot's or the unlock's, show as audit events on stderr.
pub(super) fn new_slot_spec(req: &AddRequest) -> Result<KeySpec> {
    let Some(text) = req.new_key.key.as_deref() else {
        return Err(Error::usage("key add needs --new-key SOURCE")
            .hint("e.g. --new-key recovery, --new-key keyfile:/etc/secretfs/key2, --new-key kms --new-kms-key ARN"));
    };
    let spec = req.new_key.spec(text)?;
    if matches!(spec, KeySpec::Ephemeral) {
        return Err(Error::usage(
            "an ephemeral key cannot be a slot: it is random at every mount or open",
        ));
    }
    let unlocks_with_kms = req
        .unlock
        .key
        .as_deref()
        .is_some_and(|k| k.starts_with("kms"));
    if spec.uses_aws() || unlocks_with_kms {
        crate::daemon::init_logging(true, None);
    }
    Ok(spec)
}

/// The key of a new slot `id` (of a store or a volume), made by its source in the slot's own
/// region — `--new-region`, else the region of a KMS key named by ARN, recorded so the slot keeps
/// working where the host's default region is another (a second region's key, an MRK replica) —
/// and the region and endpoint to record in the slot.
pub(super) fn new_slot_key(
    spec: &mut KeySpec,
    new_key: &KeyChoice,
    force: bool,
    id: u32,
    salt: &[u8; 16],
) -> Result<(NewKey, Option<String>, Option<String>)> {
    let (mut region, endpoint) = new_key.aws.placement()?;
    if region.is_none() {
        let arn = new_key.aws.kms_key.as_deref().unwrap_or_default();
        region = crate::keysource::kms::arn_region(arn).map(str::to_string);
    }
    if let Some(aws) = spec.aws_args_mut() {
        aws.force = force;
        aws.slot = Some(id);
        aws.region = region.clone();
    }
    let new = spec.create(salt)?;
    Ok((new, region, endpoint))
}

/// The S3 object a kms spec will write its blob to.
fn spec_object(spec: &KeySpec) -> Option<String> {
    match spec {
        KeySpec::Kms(aws) => aws.wrapped_key.as_ref().map(|u| u.to_string()),
        _ => None,
    }
}

/// The new slot must open the store before it is written: sources that need no person are
/// resolved again from the slot's own description (a KMS Decrypt in the slot's region, the key
/// file read back); typed ones are checked with the key just made.
fn prove(
    slot: &KeySlot,
    spec: &KeySpec,
    made: &crate::crypto::keys::MasterKey,
    opened: &Opened,
    fs_id: &[u8; 16],
) -> Result<()> {
    let recovered = if slot.source.is_interactive() {
        let wrapped = slot
            .wrapped_master()
            .map_err(Error::failure)?
            .unwrap_or_default();
        crate::crypto::keys::unwrap_key(made, &wrapped, &config::slot_aad(fs_id, slot.id))
            .map_err(|_| Error::failure("the new slot does not unwrap what it wrapped"))?
    } else {
        let mut check = spec.clone();
        if let Some(aws) = check.aws_args_mut() {
            // As a mount will: the key KMS reported, in the slot's own region and endpoint.
            aws.kms_key = None;
            aws.region = slot.region.clone();
            aws.endpoint = slot.endpoint.clone();
            aws.force = false;
        }
        keys::pin_kms_key(&mut check, &slot.source);
        slots::open(&check, slot, fs_id).map_err(|e| {
            Error::from(e).hint("the new slot was not written: it does not open the filesystem")
        })?
    };
    if recovered.expose() != opened.master.expose() {
        return Err(Error::failure(
            "the new slot recovers another master key; it was not written",
        ));
    }
    Ok(())
}

/// Removes a slot. Never the last one; the slot that unlocked this command only with `force`
/// (so that a mistyped id cannot take away the key in hand without a second thought).
/// A `key remove` about to happen: the slot, how many slots there are, the one that unlocked
/// this command, and whether `--force` was given.
pub(super) struct Removal {
    pub slot: u32,
    pub slots: usize,
    pub opened: u32,
    pub force: bool,
}

/// What `key remove` refuses for stores and volumes alike (`whose`: "filesystem" or "volume",
/// its path and the argument's name in usage): the last slot, which nothing could replace, and
/// without `--force` the slot that unlocked this very command.
pub(super) fn refuse_removal(r: Removal, whose: (&str, &Path, &str)) -> Result<()> {
    let (what, place, arg) = whose;
    if r.slots == 1 {
        return Err(Error::usage(format!(
            "slot {} is the last slot of {}: without it the {what} could never be opened again; nothing was changed",
            r.slot,
            place.display()
        ))
        .hint(format!("add another slot first: secretfs key add {arg} --new-key SOURCE")));
    }
    if r.slot == r.opened && !r.force {
        return Err(Error::usage(format!(
            "slot {} is the one that opened the {what} for this command; nothing was changed",
            r.slot
        ))
        .hint("unlock with another slot (--slot N) to prove it still opens, or pass --force"));
    }
    Ok(())
}

pub fn remove(req: &RemoveRequest) -> Result<Removed> {
    let (backing, _lock, config, opened) = open_locked(&req.backing, &req.unlock)?;
    let all = config.slots();
    let Some(slot) = all.iter().find(|s| s.id == req.slot).cloned() else {
        return Err(
            Error::usage(format!("{} has no slot {}", backing.display(), req.slot))
                .hint(format!("secretfs key list {}", backing.display())),
        );
    };
    refuse_removal(
        Removal {
            slot: slot.id,
            slots: all.len(),
            opened: opened.slot,
            force: req.force,
        },
        ("filesystem", &backing, "BACKING"),
    )?;
    let mut after = config.clone();
    after
        .set_slots(all.into_iter().filter(|s| s.id != slot.id).collect())
        .map_err(Error::usage)?;
    let old_pin = pins::load(Path::new(pins::PIN_DIR), &config.fs_id)
        .map_err(|e| Error::key(e.to_string()))?;
    let pin = repin(&backing, &config, &after, None)?;
    commit_remove(&backing, old_pin.as_ref(), &pin, &after, &opened)?;
    let fs = config.fs_id.to_string();
    crate::audit::slot_changed(
        &fs,
        "remove",
        slot.id,
        slot.source.kind(),
        &slot.source.identity(),
    );
    Ok(Removed { fs_id: fs, slot })
}

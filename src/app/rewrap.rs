//! Rewrapping: move the wrapped master key of a `kms` filesystem to another KMS key with
//! ReEncrypt, verifying the new blob against the config MAC before anything is replaced.

use super::{AwsChoice, Error, ErrorKind, Result};
use crate::crypto::keys::{unwrap_key, KeyRing, MasterKey};
use crate::keysource::pins::{self, Pin};
use crate::store::config::{self, FsConfig, KeySlot};
use crate::{audit, keysource};
use std::path::Path;
use std::path::PathBuf;

/// Which filesystem, and the new KMS key (`aws.kms_key`) to wrap its master key with.
#[derive(Debug, Clone)]
pub struct RewrapRequest {
    /// Made with --key kms or kms-password.
    pub backing: PathBuf,
    pub aws: AwsChoice,
    /// The slot whose KMS key changes; needed only when several slots use KMS.
    pub slot: Option<u32>,
}

pub struct Rewrapped {
    pub config: FsConfig,
    pub old_key: String,
    pub new_key: String,
}

fn key_name(d: &config::KeySourceDescriptor) -> String {
    match d {
        config::KeySourceDescriptor::Kms {
            key_id, key_arn, ..
        } => key_arn.clone().unwrap_or_else(|| key_id.clone()),
        config::KeySourceDescriptor::KmsPassword { s3_uri, .. } => s3_uri.clone(),
        other => other.kind().to_string(),
    }
}

pub fn run(args: &RewrapRequest) -> Result<Rewrapped> {
    if args.aws.kms_key.is_none() {
        return Err(Error::usage("rewrap needs --kms-key NEW")
            .hint("the KMS key id, alias/NAME or ARN the master key should be wrapped with"));
    }
    if args.aws.context.is_some() {
        return Err(Error::usage(
            "rewrap keeps the encryption context the filesystem was created with; drop --context",
        ));
    }
    crate::daemon::forbid_core_dumps();
    // The KMS calls and the rewrap are audit events: show them on stderr.
    crate::daemon::init_logging(true, None);
    let backing = super::existing_dir(&args.backing, "backing directory", ErrorKind::Backing)?;
    // The same lock as `key add/remove`: a slot added meanwhile must not be lost.
    let _lock = super::slots::StoreLock::take(&backing)?;
    let (config, mac) = config::load(&backing)?;
    // The blob to move is the pinned one: a replaced config cannot make us adopt its key.
    let pin = crate::keysource::pins::load(
        std::path::Path::new(crate::keysource::pins::PIN_DIR),
        &config.fs_id,
    )
    .map_err(|e| Error::key(e.to_string()))?
    .ok_or_else(|| {
        Error::key(format!(
            "filesystem {} has no key pin on this host; rewrap moves only a pinned key",
            config.fs_id
        ))
        .hint(format!(
            "secretfs pin {} --key kms --kms-key CURRENT_KEY",
            backing.display()
        ))
    })?;
    super::keys::check_pin_backing(&pin, &backing, &config)?;
    // Only a pinned KMS slot moves: a slot the store added on its own is never touched.
    let kms_slots: Vec<KeySlot> = config
        .slots()
        .into_iter()
        .filter(|s| pin.trusts(s))
        .filter(|s| {
            matches!(
                s.source,
                config::KeySourceDescriptor::Kms { .. }
                    | config::KeySourceDescriptor::KmsPassword { .. }
            )
        })
        .collect();
    let slot = match (args.slot, kms_slots.as_slice()) {
        (Some(id), _) => kms_slots
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| {
                Error::usage(format!(
                    "slot {id} of {} is not a pinned kms or kms-password slot",
                    backing.display()
                ))
                .hint(format!("secretfs key list {}", backing.display()))
            })?,
        (None, [only]) => only.clone(),
        (None, []) => {
            return Err(Error::usage(format!(
                "{} uses key source {}; only kms and kms-password filesystems can be rewrapped",
                backing.display(),
                config.primary().kind()
            )))
        }
        (None, _) => {
            return Err(Error::usage(format!(
                "{} has several KMS slots; name the one to rewrap with --slot N",
                backing.display()
            ))
            .hint(format!("secretfs key list {}", backing.display())))
        }
    };
    let fs_id = config.fs_id_bytes();
    let wrapped = slot.wrapped_master().map_err(Error::backing)?;
    // What the slot's key recovers: itself (direct slot) or the wrapped master key.
    let master_of = |key: &MasterKey| -> Option<MasterKey> {
        match &wrapped {
            None => MasterKey::from_slice(key.expose()),
            Some(w) => unwrap_key(key, w, &config::slot_aad(&fs_id, slot.id)).ok(),
        }
    };
    let opens = |key: &MasterKey| {
        master_of(key).is_some_and(|m| config.verify_mac(&mac, &KeyRing::new(&m, &fs_id)).is_ok())
    };
    let mut aws = args.aws.to_key_args()?;
    aws.region = aws.region.take().or_else(|| slot.region.clone());
    aws.endpoint = aws.endpoint.take().or_else(|| slot.endpoint.clone());
    aws.slot = Some(slot.id);
    let (key, descriptor) = keysource::kms::rewrap(&aws, &slot.source, &fs_id, &opens)?;
    let master = master_of(&key)
        .ok_or_else(|| Error::failure("the rewrapped key no longer opens its slot"))?;
    let old_key = key_name(&slot.source);
    let mut new_config = config.clone();
    new_config
        .set_slot_source(slot.id, descriptor.clone())
        .map_err(Error::failure)?;
    let new_key = match &descriptor {
        config::KeySourceDescriptor::Kms { .. } => key_name(&descriptor),
        _ => aws.kms_key.clone().unwrap_or_default(),
    };
    let moved = new_config
        .slot(slot.id)
        .ok_or_else(|| Error::failure("the rewrapped slot vanished"))?;
    // While the config changes the pin trusts both versions of the slot, so a crash on either
    // side of the config write leaves this host able to open it; then only the new one. Every
    // other slot keeps exactly the trust it had (a restored config's extra slot gains none).
    let mut interim = pin.clone();
    interim.slots = pin.slots();
    interim.slots.push(moved.clone());
    pins::store(Path::new(pins::PIN_DIR), &interim)
        .map_err(|e| Error::failure(format!("{e}; nothing was changed")))?;
    config::store(&backing, &new_config, &KeyRing::new(&master, &fs_id), true)?;
    let final_pin = if new_config.is_slotted() {
        let slots: Vec<KeySlot> = pin
            .slots()
            .into_iter()
            .map(|s| if s == slot { moved.clone() } else { s })
            .collect();
        Pin {
            key_source: slots
                .first()
                .map_or(moved.source.clone(), |s| s.source.clone()),
            slots,
            ..pin
        }
    } else {
        Pin::of(&new_config, &backing)
    };
    if let Err(e) = pins::store(Path::new(pins::PIN_DIR), &final_pin) {
        tracing::warn!(
            "{e}; this host still trusts the slot's old and new key until it is re-pinned"
        );
    }
    audit::rewrapped(&new_config.fs_id.to_string(), &old_key, &new_key);
    Ok(Rewrapped {
        config: new_config,
        old_key,
        new_key,
    })
}

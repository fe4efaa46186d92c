//! Creating a filesystem in an empty backing directory: a master key from the chosen key
//! source, the MAC'd config that describes it, and the host's pin of that key.

use super::{Error, ErrorKind, KeyChoice, Result};
use crate::crypto::keys::KeyRing;
use crate::keysource::{KeySpec, PassphraseInput};
use crate::store::config::{self, FsConfig, KeySlot};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// What to create: where, with which key, and whether an existing S3 object may be replaced.
#[derive(Debug, Clone)]
pub struct InitRequest {
    /// Created if missing; must be empty.
    pub backing: PathBuf,
    pub key: KeyChoice,
    pub force: bool,
    /// Also make a recovery slot (a random key shown once, for when every other key is gone).
    pub recovery: bool,
}

pub struct Initialized {
    pub config: FsConfig,
    pub backing: PathBuf,
    /// The recovery key's printable form: shown once, stored nowhere.
    pub recovery_text: Option<zeroize::Zeroizing<String>>,
}

pub fn run(args: &InitRequest) -> Result<Initialized> {
    // `--kms-key` alone says enough: it can only mean the kms source.
    let key_text = args
        .key
        .key
        .as_deref()
        .or(args.key.aws.kms_key.as_ref().map(|_| "kms"));
    let Some(key_text) = key_text else {
        return Err(Error::usage("init needs --key")
            .hint("e.g. --key keyfile:/etc/secretfs/key (created if missing), --key passphrase, --key ephemeral or --key kms --kms-key alias/secretfs"));
    };
    crate::daemon::forbid_core_dumps();
    let mut spec = args.key.spec(key_text)?;
    let (region, endpoint) = args.key.aws.placement()?;
    if let Some(aws) = spec.aws_args_mut() {
        aws.force = args.force;
        // KMS calls are audit events: show them on stderr.
        crate::daemon::init_logging(true, None);
    }
    let created = !args.backing.exists();
    if created {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.backing)
            .map_err(|e| {
                Error::backing(format!("cannot create {}: {e}", args.backing.display()))
            })?;
    }
    let backing = super::existing_dir(&args.backing, "backing directory", ErrorKind::Backing)?;
    super::keys::refuse_keyfile_in_store(&spec, &backing)?;
    if config::config_path(&backing).exists() {
        return Err(config::ConfigError::AlreadyInitialized { path: backing }.into());
    }
    let not_empty = std::fs::read_dir(&backing)
        .map_err(|e| Error::backing(format!("cannot read {}: {e}", backing.display())))?
        .next()
        .is_some();
    if not_empty {
        return Err(Error::backing(format!(
            "{} is not empty; refusing to mix new encrypted files with existing data",
            backing.display()
        ))
        .hint("use an empty directory"));
    }
    // The fs id salts every key derivation, so it exists before the key.
    let mut config = FsConfig::new(crate::store::config::KeySourceDescriptor::Ephemeral);
    let (master, descriptor) = match spec.init(&config.fs_id_bytes()) {
        Ok(k) => k,
        Err(e) => {
            // Nothing written on failure: not even the directory this command made.
            if created {
                let _ = std::fs::remove_dir(&backing);
            }
            return Err(e.into());
        }
    };
    let fs_id = config.fs_id_bytes();
    let mut recovery_text = None;
    if args.recovery || region.is_some() || endpoint.is_some() {
        // Several slots, or a slot with its own AWS placement: format 2.
        let mut slots = vec![KeySlot {
            region,
            endpoint,
            ..KeySlot::direct(0, descriptor)
        }];
        if args.recovery {
            let new = KeySpec::Recovery(PassphraseInput::Tty).create(&fs_id)?;
            slots.push(crate::keysource::slots::wrapped(
                1,
                &new.key,
                new.descriptor,
                &master,
                &fs_id,
            ));
            recovery_text = new.recovery_text;
        }
        config.set_slots(slots).map_err(Error::usage)?;
    } else {
        config
            .set_slot_source(0, descriptor)
            .map_err(Error::failure)?;
    }
    let keys = KeyRing::new(&master, &fs_id);
    config::store(&backing, &config, &keys, false)?;
    let pin = crate::keysource::pins::Pin::of(&config, &backing);
    if let Err(e) =
        crate::keysource::pins::store(std::path::Path::new(crate::keysource::pins::PIN_DIR), &pin)
    {
        eprintln!(
            "secretfs: warning: {e}; mount with --key until `secretfs pin {} --key …` succeeds",
            backing.display()
        );
    }
    Ok(Initialized {
        config,
        backing,
        recovery_text,
    })
}

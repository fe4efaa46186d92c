//! Rewrapping: move the wrapped master key of a `kms` filesystem to another KMS key with
//! ReEncrypt, verifying the new blob against the config MAC before anything is replaced.

use super::{AwsChoice, Error, ErrorKind, Result};
use crate::crypto::keys::KeyRing;
use crate::store::config::{self, FsConfig};
use crate::{audit, keysource};
use std::path::PathBuf;

/// Which filesystem, and the new KMS key (`aws.kms_key`) to wrap its master key with.
#[derive(Debug, Clone)]
pub struct RewrapRequest {
    /// Made with --key kms or kms-password.
    pub backing: PathBuf,
    pub aws: AwsChoice,
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
    super::keys::check_pin(&pin, &backing, &config)?;
    if !matches!(
        config.key_source,
        config::KeySourceDescriptor::Kms { .. } | config::KeySourceDescriptor::KmsPassword { .. }
    ) {
        return Err(Error::usage(format!(
            "{} uses key source {}; only kms and kms-password filesystems can be rewrapped",
            backing.display(),
            config.key_source.kind()
        )));
    }
    let fs_id = config.fs_id_bytes();
    let opens = |master: &crate::crypto::keys::MasterKey| {
        config
            .verify_mac(&mac, &KeyRing::new(master, &fs_id))
            .is_ok()
    };
    let aws = args.aws.to_key_args()?;
    let (master, descriptor) = keysource::kms::rewrap(&aws, &config.key_source, &fs_id, &opens)?;
    let old_key = key_name(&config.key_source);
    let mut new_config = config.clone();
    new_config.key_source = descriptor;
    let new_key = match &new_config.key_source {
        config::KeySourceDescriptor::Kms { .. } => key_name(&new_config.key_source),
        _ => aws.kms_key.clone().unwrap_or_default(),
    };
    config::store(&backing, &new_config, &KeyRing::new(&master, &fs_id), true)?;
    super::keys::record_pin(&Some(crate::keysource::pins::Pin {
        key_source: new_config.key_source.clone(),
        ..pin
    }));
    audit::rewrapped(&new_config.fs_id.to_string(), &old_key, &new_key);
    Ok(Rewrapped {
        config: new_config,
        old_key,
        new_key,
    })
}

//! Which key may open a store: the user's key choice, checked against the host's pin and never
//! taken from the store alone, then proven against the config MAC (shared by every command).

use super::{Error, Result};
use crate::crypto::keys::KeyRing;
use crate::keysource::pins::{self, Pin};
use crate::keysource::{AwsKeyArgs, KeySpec, PassphraseInput, S3Uri};
use crate::store::config::{FsConfig, KeySourceDescriptor};
use std::path::Path;
use std::time::Duration;

/// The AWS part of a key choice (`--kms-key`, `--wrapped-key`, `--context`, `--aws-timeout`).
#[derive(Debug, Clone)]
pub struct AwsChoice {
    pub kms_key: Option<String>,
    pub wrapped_key: Option<String>,
    pub context: Option<String>,
    pub timeout_secs: u64,
}

/// What the user said about the key: a source (`keyfile:PATH`, `kms`, …) or nothing, how a
/// passphrase is to be read, and the AWS details.
#[derive(Debug, Clone)]
pub struct KeyChoice {
    pub key: Option<String>,
    pub passphrase: PassphraseInput,
    pub aws: AwsChoice,
}

impl AwsChoice {
    pub fn none() -> Self {
        AwsChoice {
            kms_key: None,
            wrapped_key: None,
            context: None,
            timeout_secs: crate::keysource::aws::DEFAULT_TIMEOUT.as_secs(),
        }
    }

    fn given(&self) -> bool {
        self.kms_key.is_some() || self.wrapped_key.is_some() || self.context.is_some()
    }

    pub fn to_key_args(&self) -> Result<AwsKeyArgs> {
        if self.timeout_secs == 0 {
            return Err(Error::usage("--aws-timeout must be at least 1 second"));
        }
        Ok(AwsKeyArgs {
            kms_key: self.kms_key.clone(),
            wrapped_key: self
                .wrapped_key
                .as_deref()
                .map(S3Uri::parse)
                .transpose()
                .map_err(Error::usage)?,
            context: self
                .context
                .as_deref()
                .map(crate::keysource::kms::parse_context)
                .transpose()
                .map_err(Error::usage)?,
            timeout: Duration::from_secs(self.timeout_secs),
            force: false,
        })
    }
}

impl KeyChoice {
    /// Nothing chosen: everything comes from mount options or the pin.
    pub fn none() -> Self {
        KeyChoice {
            key: None,
            passphrase: PassphraseInput::Tty,
            aws: AwsChoice::none(),
        }
    }

    /// This choice completed by mount options (`key=`, `kms-key=`, …); the choice wins.
    pub fn with_options(&self, o: &crate::mountopts::MountOptions) -> KeyChoice {
        let mut k = self.clone();
        k.key = k.key.or_else(|| o.key.clone());
        k.aws.kms_key = k.aws.kms_key.or_else(|| o.kms_key.clone());
        k.aws.wrapped_key = k.aws.wrapped_key.or_else(|| o.wrapped_key.clone());
        k.aws.context = k.aws.context.or_else(|| o.context_pairs());
        if let Some(t) = o.aws_timeout {
            k.aws.timeout_secs = t;
        }
        k
    }

    pub fn spec(&self, text: &str) -> Result<KeySpec> {
        let mut spec = KeySpec::parse(text, self.passphrase.clone()).map_err(Error::usage)?;
        self.attach_aws(&mut spec)?;
        Ok(spec)
    }

    /// Puts the AWS details into a kms spec; refuses them for other sources, where they would
    /// be silently ignored.
    pub fn attach_aws(&self, spec: &mut KeySpec) -> Result<()> {
        let kind = spec.kind();
        match spec.aws_args_mut() {
            Some(args) => *args = self.aws.to_key_args()?,
            None if self.aws.given() => {
                return Err(Error::usage(format!(
                    "--kms-key, --wrapped-key and --context apply to --key kms or kms-password, not {kind}"
                )))
            }
            None => {}
        }
        Ok(())
    }
}

/// The key a command may use on a store, and the pin to record once that key has opened it.
pub struct Trusted {
    pub spec: KeySpec,
    /// Written after the config MAC checks out: the first use of an explicitly named key.
    pub new_pin: Option<Pin>,
}

/// Records the pin of a first use, once its key has opened the store; the store is already
/// open then, so a failure only warns.
pub fn record_pin(new_pin: &Option<Pin>) {
    if let Some(pin) = new_pin {
        match pins::store(Path::new(pins::PIN_DIR), pin) {
            Ok(()) => {
                tracing::info!(fs_id = %pin.fs_id, key_source = pin.key_source.kind(), "pinned the key source of this filesystem")
            }
            Err(e) => {
                tracing::warn!("{e}; mounts without --key will be refused until it is pinned")
            }
        }
    }
}

/// Chooses the key source from what this host trusts, never from the store alone: the pin
/// (`/etc/secretfs/pins`) when there is one, which the store's config must match exactly; else
/// only a source named by the user (`--key`, `-o key=`), whose identity (key file, KMS key, S3
/// object) then also comes from the user. Every refusal happens before anything is touched.
pub fn trusted_spec(
    backing: &Path,
    key: &KeyChoice,
    option: Option<&str>,
    config: &FsConfig,
) -> Result<Trusted> {
    let pin = pins::load(Path::new(pins::PIN_DIR), &config.fs_id).map_err(|e| {
        Error::key(e.to_string())
            .hint("a pin must be a root-owned file writable only by root; re-create it with `secretfs pin BACKING --key SOURCE`")
    })?;
    let given = key.key.as_deref().or(option);
    let fs_id = config.fs_id;
    let Some(pin) = pin else {
        let Some(text) = given else {
            return Err(Error::key(
                format!(
                    "filesystem {fs_id} in {} has no key pin on this host, and the store's own config cannot be trusted to name its key",
                    backing.display()
                ),
            )
            .hint(format!(
                "name the key: `secretfs pin {} --key SOURCE` (once), or --key / -o key= on the command",
                backing.display()
            )));
        };
        let spec = key.spec(text)?;
        check_untrusted_spec(&spec, config, backing)?;
        return Ok(Trusted {
            spec,
            new_pin: Some(Pin {
                fs_id,
                backing: backing.to_path_buf(),
                key_source: config.key_source.clone(),
            }),
        });
    };
    check_pin(&pin, backing, config)?;
    let mut spec = match given {
        Some(text) => key.spec(text)?,
        None => spec_for(key, None, &pin.key_source)?,
    };
    same_kind(&spec, &pin.key_source, "the pin")?;
    refuse_keyfile_in_store(&spec, backing)?;
    pin_kms_key(&mut spec, &pin.key_source);
    Ok(Trusted {
        spec,
        new_pin: None,
    })
}

/// A pin applies only to the backing directory it was made for, and the config must name
/// exactly the key source it pinned.
pub fn check_pin(pin: &Pin, backing: &Path, config: &FsConfig) -> Result<()> {
    let fs_id = config.fs_id;
    if pin.backing != backing {
        return Err(Error::backing(format!(
            "filesystem {fs_id} is pinned to {}, but was found in {}; nothing was touched",
            pin.backing.display(),
            backing.display()
        ))
        .hint(format!(
            "if it was moved on purpose: secretfs pin {} --key SOURCE",
            backing.display()
        )));
    }
    if pin.key_source != config.key_source {
        return Err(Error::key(
            format!(
                "the config in {} names key source `{}`, but this host pinned `{}` for filesystem {fs_id}: the config was replaced or edited; nothing was touched",
                backing.display(),
                config.key_source.kind(),
                pin.key_source.kind()
            ),
        )
        .hint("restore the config from a backup; to trust a new key on purpose: secretfs pin BACKING --key SOURCE"));
    }
    Ok(())
}

/// What a key named by the user must satisfy when no pin vouches for the store: its identity
/// comes from the user, its kind matches the config, and it does not live in the store.
pub fn check_untrusted_spec(spec: &KeySpec, config: &FsConfig, backing: &Path) -> Result<()> {
    require_identity(spec)?;
    same_kind(spec, &config.key_source, "the store's config")?;
    refuse_keyfile_in_store(spec, backing)
}

pub(crate) fn same_kind(spec: &KeySpec, stored: &KeySourceDescriptor, whose: &str) -> Result<()> {
    if spec.kind() == stored.kind() {
        return Ok(());
    }
    Err(Error::key(format!(
        "key source `{}` was given, but {whose} says `{}`; nothing was touched",
        spec.kind(),
        stored.kind()
    )))
}

/// Without a pin, a KMS source's identity must come from the user, not from the store.
pub(crate) fn require_identity(spec: &KeySpec) -> Result<()> {
    match spec {
        // A blob from the user's S3 object is the user's choice; one from the config is not.
        KeySpec::Kms(a) if a.kms_key.is_none() && a.wrapped_key.is_none() => Err(Error::key(
            "--key kms on a filesystem this host has not pinned needs --kms-key or --wrapped-key (or -o kms-key= / wrapped-key=): the store's config cannot be trusted to name the KMS key or the blob",
        )),
        KeySpec::KmsPassword(a) if a.wrapped_key.is_none() => Err(Error::key(
            "--key kms-password on a filesystem this host has not pinned needs --wrapped-key s3://… (or -o wrapped-key=): the store's config cannot be trusted to name the object",
        )),
        _ => Ok(()),
    }
}

/// A key file kept inside the store it opens is readable by whoever can read the store.
pub fn refuse_keyfile_in_store(spec: &KeySpec, backing: &Path) -> Result<()> {
    let KeySpec::Keyfile(path) = spec else {
        return Ok(());
    };
    let inside = std::fs::canonicalize(path)
        .ok()
        .or_else(|| path.is_absolute().then(|| path.clone()))
        .is_some_and(|p| p.starts_with(backing));
    if inside {
        return Err(Error::key(format!(
            "key file {} lies inside the backing store {}; refusing it",
            path.display(),
            backing.display()
        ))
        .hint("keep key files outside the store, e.g. under /etc/secretfs/"));
    }
    Ok(())
}

/// KMS Decrypt always names the pinned key, so a blob made under any other key is refused.
pub(crate) fn pin_kms_key(spec: &mut KeySpec, pinned: &KeySourceDescriptor) {
    let arn = match pinned {
        KeySourceDescriptor::Kms {
            key_id, key_arn, ..
        } => Some(key_arn.clone().unwrap_or_else(|| key_id.clone())),
        KeySourceDescriptor::KmsPassword { key_arn, .. } => key_arn.clone(),
        _ => None,
    };
    if let (Some(args), Some(arn)) = (spec.aws_args_mut(), arn) {
        if args.kms_key.is_none() {
            args.kms_key = Some(arn);
        }
    }
}

/// The spec for a stored descriptor (a pinned or authenticated config, or a LUKS2 token), or the
/// source named by `--key` / `-o key=`.
pub fn spec_for(
    key: &KeyChoice,
    option: Option<&str>,
    stored: &KeySourceDescriptor,
) -> Result<KeySpec> {
    if let Some(text) = key.key.as_deref().or(option) {
        return key.spec(text);
    }
    Ok(match stored {
        KeySourceDescriptor::Keyfile { path } => KeySpec::Keyfile(path.clone()),
        KeySourceDescriptor::Passphrase { .. } => KeySpec::Passphrase(key.passphrase.clone()),
        KeySourceDescriptor::Ephemeral => KeySpec::Ephemeral,
        KeySourceDescriptor::Kms { .. } => KeySpec::Kms(key.aws.to_key_args()?),
        KeySourceDescriptor::KmsPassword { .. } => KeySpec::KmsPassword(key.aws.to_key_args()?),
    })
}

/// Loads the config of `backing`, obtains the trusted key and checks that it opens this
/// filesystem (recording the pin of a first use).
pub fn unlock(backing: &Path, key: &KeyChoice) -> Result<(FsConfig, KeyRing)> {
    let (config, mac) = crate::store::config::load(backing)?;
    let trusted = trusted_spec(backing, key, None, &config)?;
    let master = trusted
        .spec
        .resolve(&config.key_source, &config.fs_id_bytes())?;
    let keys = KeyRing::new(&master, &config.fs_id_bytes());
    config.verify_mac(&mac, &keys)?;
    record_pin(&trusted.new_pin);
    Ok((config, keys))
}

//! Which key may open a store: the user's key choice, checked against the host's pin and never
//! taken from the store alone, then proven against the config MAC (shared by every command).

use super::{Error, ErrorKind, Result};
use crate::crypto::keys::{KeyRing, MasterKey};
use crate::keysource::pins::{self, Pin};
use crate::keysource::{AwsKeyArgs, KeySpec, PassphraseInput, S3Uri};
use crate::store::config::{FsConfig, KeySlot, KeySourceDescriptor};
use std::path::Path;
use std::time::{Duration, Instant};

/// The AWS part of a key choice (`--kms-key`, `--wrapped-key`, `--context`, `--aws-timeout`,
/// `--region`, `--endpoint-url`).
#[derive(Debug, Clone)]
pub struct AwsChoice {
    pub kms_key: Option<String>,
    pub wrapped_key: Option<String>,
    pub context: Option<String>,
    pub timeout_secs: u64,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

/// What the user said about the key: a source (`keyfile:PATH`, `kms`, …) or nothing, a slot,
/// how a passphrase is to be read, and the AWS details.
#[derive(Debug, Clone)]
pub struct KeyChoice {
    pub key: Option<String>,
    pub passphrase: PassphraseInput,
    pub aws: AwsChoice,
    /// `--slot N`: open with this slot only.
    pub slot: Option<u32>,
    /// `--slot-timeout SECS`: how long one slot may take before the next is tried.
    pub slot_timeout_secs: Option<u64>,
}

impl AwsChoice {
    pub fn none() -> Self {
        AwsChoice {
            kms_key: None,
            wrapped_key: None,
            context: None,
            timeout_secs: crate::keysource::aws::DEFAULT_TIMEOUT.as_secs(),
            region: None,
            endpoint: None,
        }
    }

    fn given(&self) -> bool {
        self.kms_key.is_some()
            || self.wrapped_key.is_some()
            || self.context.is_some()
            || self.region.is_some()
            || self.endpoint.is_some()
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
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            slot: None,
        })
    }

    /// Checks `--region` / `--endpoint-url` as a slot records them (the same rules the config
    /// parser applies, so a slot that is written can be read back).
    pub fn placement(&self) -> Result<(Option<String>, Option<String>)> {
        let probe = KeySlot {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            ..KeySlot::direct(0, KeySourceDescriptor::Recovery)
        };
        probe.check_placement().map_err(Error::usage)?;
        Ok((self.region.clone(), self.endpoint.clone()))
    }
}

impl KeyChoice {
    /// Nothing chosen: everything comes from mount options or the pin.
    pub fn none() -> Self {
        KeyChoice {
            key: None,
            passphrase: PassphraseInput::Tty,
            aws: AwsChoice::none(),
            slot: None,
            slot_timeout_secs: None,
        }
    }

    /// How long one slot may take, within the overall AWS deadline.
    pub fn slot_timeout(&self) -> Result<Duration> {
        match self.slot_timeout_secs {
            Some(0) => Err(Error::usage("--slot-timeout must be at least 1 second")),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(DEFAULT_SLOT_TIMEOUT),
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
        k.slot = k.slot.or(o.slot);
        k.slot_timeout_secs = k.slot_timeout_secs.or(o.slot_timeout);
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
                    "--kms-key, --wrapped-key, --context, --region and --endpoint-url apply to --key kms or kms-password, not {kind}"
                )))
            }
            None => {}
        }
        Ok(())
    }
}

/// The default time one key slot may take before the next is tried (the last slot gets all
/// that is left of the command's deadline): an unreachable region costs seconds, not the boot.
pub const DEFAULT_SLOT_TIMEOUT: Duration = Duration::from_secs(15);

/// One slot to try and the spec that will open it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub slot: KeySlot,
    pub spec: KeySpec,
}

/// Which slots a command will try, in order, each within its own deadline inside the overall
/// one; and the pin to record once one of them has opened the store (first explicit use).
#[derive(Debug)]
pub struct UnlockPlan {
    fs_id: uuid::Uuid,
    attempts: Vec<Attempt>,
    /// Slots of the config that will not be tried, and why (audited at every unlock).
    skipped: Vec<(KeySlot, String)>,
    slot_timeout: Duration,
    total: Duration,
    /// Pinned slot ids the config lacks (warned about where the unlock happens: in the daemon).
    missing: Vec<u32>,
    pub new_pin: Option<Pin>,
}

/// What opened a store: its key ring, the master key (for adding a slot) and the slot used.
pub struct Opened {
    pub keys: KeyRing,
    pub master: MasterKey,
    pub slot: u32,
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

pub(crate) fn slot_list(slots: &[KeySlot]) -> String {
    slots
        .iter()
        .map(|s| format!("{} {}", s.id, s.source.kind()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the slots to try from what this host trusts, never from the store alone: the pin
/// (`/etc/secretfs/pins`) when there is one — only slots it names exactly are tried, a slot the
/// store added or changed on its own never is; else only a source named by the user (`--key`,
/// `-o key=`), whose identity (key file, KMS key, S3 object) and AWS placement then also come
/// from the user. `--slot` narrows either to one slot. Every refusal happens before anything
/// is touched.
pub fn plan_unlock(
    backing: &Path,
    key: &KeyChoice,
    option: Option<&str>,
    config: &FsConfig,
) -> Result<UnlockPlan> {
    let pin = pins::load(Path::new(pins::PIN_DIR), &config.fs_id).map_err(|e| {
        Error::key(e.to_string())
            .hint("a pin must be a root-owned file writable only by root; re-create it with `secretfs pin BACKING --key SOURCE`")
    })?;
    let Some(pin) = pin else {
        return plan_unlock_untrusted(backing, key, option, config);
    };
    let fs_id = config.fs_id;
    let slots = config.slots();
    check_pin_backing(&pin, backing, config)?;
    let (trusted, untrusted): (Vec<KeySlot>, Vec<KeySlot>) =
        slots.into_iter().partition(|s| pin.trusts(s));
    if trusted.is_empty() {
        return Err(Error::key(format!(
            "the config in {} has key slots [{}], but this host pinned [{}] for filesystem {fs_id}: the config was replaced or edited; nothing was touched",
            backing.display(),
            slot_list(&config.slots()),
            slot_list(&pin.slots()),
        ))
        .hint("restore the config from a backup; to trust a new key on purpose: secretfs pin BACKING --key SOURCE"));
    }
    let mut plan = plan_pinned(fs_id, key, option, trusted, untrusted, Some(backing))?;
    plan.missing = rolled_back(&pin, config);
    Ok(plan)
}

/// The plan over the slots a pin trusts (`trusted`, never empty; `untrusted` are the others the
/// store or volume holds, only reported): `--slot` or the kind `--key` names narrows them;
/// typed sources (passphrase, recovery) are tried only when named or when nothing automatic is
/// left. `store`: the backing directory a key file must not lie in (file mode).
pub(crate) fn plan_pinned(
    fs_id: uuid::Uuid,
    key: &KeyChoice,
    option: Option<&str>,
    trusted: Vec<KeySlot>,
    untrusted: Vec<KeySlot>,
    store: Option<&Path>,
) -> Result<UnlockPlan> {
    let given = key.key.as_deref().or(option);
    let mut plan = UnlockPlan::new(key, fs_id)?;
    for slot in untrusted {
        tracing::warn!(fs_id = %fs_id, slot = slot.id, key_source = slot.source.kind(), "key slot is not pinned on this host: never tried (`secretfs pin` trusts it)");
        plan.skipped
            .push((slot, "not pinned on this host".to_string()));
    }
    let candidates = narrow(&trusted, key.slot, given.map(kind_of), "the pin")?;
    let named = given.is_some() || key.slot.is_some();
    let has_automatic = candidates.iter().any(|s| !s.source.is_interactive());
    for slot in candidates {
        let why = match (&slot.source, &key.passphrase) {
            _ if named => None,
            (KeySourceDescriptor::Recovery, _) => {
                Some("a recovery key is used only when named (--key recovery or --slot)")
            }
            (KeySourceDescriptor::Passphrase { .. }, PassphraseInput::Tty) if has_automatic => {
                Some("a passphrase prompt is not tried after automatic slots (--key passphrase asks for it)")
            }
            _ => None,
        };
        if let Some(why) = why {
            plan.skipped.push((slot, why.to_string()));
            continue;
        }
        let mut spec = match given {
            Some(text) => key.spec(text)?,
            None => spec_for(key, None, &slot.source)?,
        };
        if let Some(store) = store {
            refuse_keyfile_in_store(&spec, store)?;
        }
        pin_kms_key(&mut spec, &slot.source);
        if let Some(aws) = spec.aws_args_mut() {
            // Explicit flags win; else the slot's own placement (pinned, so trusted).
            aws.region = aws.region.take().or_else(|| slot.region.clone());
            aws.endpoint = aws.endpoint.take().or_else(|| slot.endpoint.clone());
            aws.slot = Some(slot.id);
        }
        plan.attempts.push(Attempt { slot, spec });
    }
    if plan.attempts.is_empty() {
        let why = plan
            .skipped
            .iter()
            .map(|(s, why)| format!("slot {}: {why}", s.id))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::key(format!(
            "no key slot of filesystem {fs_id} can be tried: {why}"
        ))
        .hint("name one: --key SOURCE or --slot N"));
    }
    Ok(plan)
}

/// The plan when no pin vouches for the store (a first use, or `secretfs pin`): only a source
/// named by the user, whose identity and AWS placement come from the user too; the store
/// chooses nothing but which of its slots of that kind (or the `--slot`) to try.
pub fn plan_unlock_untrusted(
    backing: &Path,
    key: &KeyChoice,
    option: Option<&str>,
    config: &FsConfig,
) -> Result<UnlockPlan> {
    let fs_id = config.fs_id;
    let Some(text) = key.key.as_deref().or(option) else {
        return Err(Error::key(format!(
            "filesystem {fs_id} in {} has no key pin on this host, and the store's own config cannot be trusted to name its key",
            backing.display()
        ))
        .hint(format!(
            "name the key: `secretfs pin {} --key SOURCE` (once), or --key / -o key= on the command",
            backing.display()
        )));
    };
    let spec = key.spec(text)?;
    refuse_keyfile_in_store(&spec, backing)?;
    let mut plan = plan_named(fs_id, key, spec, &config.slots(), "the store's config")?;
    plan.new_pin = Some(Pin::of(config, backing));
    Ok(plan)
}

/// The plan for a source the user named (`spec`) when no pin vouches for the slots: its
/// identity comes from the user; the slots (`whose`: the store's config, a volume's tokens)
/// only say which of them, of that kind or the `--slot`, to try.
pub(crate) fn plan_named(
    fs_id: uuid::Uuid,
    key: &KeyChoice,
    spec: KeySpec,
    slots: &[KeySlot],
    whose: &str,
) -> Result<UnlockPlan> {
    require_identity(&spec)?;
    let mut plan = UnlockPlan::new(key, fs_id)?;
    for slot in narrow(slots, key.slot, Some(spec.kind()), whose)? {
        let mut spec = spec.clone();
        if let Some(aws) = spec.aws_args_mut() {
            aws.slot = Some(slot.id);
        }
        plan.attempts.push(Attempt { slot, spec });
    }
    Ok(plan)
}

/// Slot ids this host pinned that the config lacks. `key remove` drops a slot from the pin before
/// the config, so after any crash the pin never names a slot the config lost: a missing one means
/// the slot went away elsewhere, or an older config (perhaps with a removed slot back) was
/// restored.
pub fn rolled_back(pin: &Pin, config: &FsConfig) -> Vec<u32> {
    let present: Vec<u32> = config.slots().iter().map(|s| s.id).collect();
    let mut missing: Vec<u32> = pin
        .slots()
        .iter()
        .map(|s| s.id)
        .filter(|id| !present.contains(id))
        .collect();
    missing.dedup();
    missing
}

/// The kind named by a `--key` text (`keyfile:PATH` is `keyfile`).
fn kind_of(text: &str) -> &str {
    text.split_once(':').map_or(text, |(kind, _)| kind)
}

/// The slots a choice allows: the one `--slot` names, else those of the kind `--key` names
/// (all of them when neither is given), automatic sources first, in stored order.
fn narrow(
    slots: &[KeySlot],
    slot: Option<u32>,
    kind: Option<&str>,
    whose: &str,
) -> Result<Vec<KeySlot>> {
    let mut chosen: Vec<KeySlot> = match slot {
        Some(id) => {
            let Some(s) = slots.iter().find(|s| s.id == id) else {
                return Err(Error::key(format!(
                    "there is no slot {id} in {whose} (slots: {})",
                    slot_list(slots)
                ))
                .hint("secretfs key list BACKING shows the slots"));
            };
            if let Some(kind) = kind.filter(|k| *k != s.source.kind()) {
                return Err(Error::key(format!(
                    "key source `{kind}` was given, but slot {id} in {whose} is `{}`; nothing was touched",
                    s.source.kind()
                )));
            }
            vec![s.clone()]
        }
        None => slots
            .iter()
            .filter(|s| kind.is_none_or(|k| k == s.source.kind()))
            .cloned()
            .collect(),
    };
    if chosen.is_empty() {
        let kind = kind.unwrap_or("?");
        let kinds: Vec<&str> = slots.iter().map(|s| s.source.kind()).collect();
        return Err(Error::key(format!(
            "key source `{kind}` was given, but {whose} says `{}`; nothing was touched",
            kinds.join("`, `")
        )));
    }
    chosen.sort_by_key(|s| s.source.is_interactive());
    Ok(chosen)
}

impl UnlockPlan {
    fn new(key: &KeyChoice, fs_id: uuid::Uuid) -> Result<Self> {
        Ok(UnlockPlan {
            fs_id,
            attempts: Vec::new(),
            skipped: Vec::new(),
            slot_timeout: key.slot_timeout()?,
            total: Duration::from_secs(key.aws.timeout_secs.max(1)),
            missing: Vec::new(),
            new_pin: None,
        })
    }

    /// Reads each typed secret (passphrase, recovery key) once, before the daemon forks away
    /// from the terminal, and hands the same text to every slot of that kind.
    pub fn preread(&mut self) -> Result<()> {
        // A descriptor or a command is read once whatever asks for it (a descriptor is closed
        // by its first read); the terminal is asked once per kind, with that kind's prompt.
        let mut read: Vec<(String, zeroize::Zeroizing<String>)> = Vec::new();
        for attempt in &mut self.attempts {
            let kind = attempt.spec.kind();
            let (input, prompt) = match &mut attempt.spec {
                KeySpec::Passphrase(input) => (input, "secretfs passphrase: "),
                KeySpec::Recovery(input) => (input, "secretfs recovery key: "),
                _ => continue,
            };
            let source = match input {
                PassphraseInput::Preread(_) => continue,
                PassphraseInput::Fd(fd) => format!("fd {fd}"),
                PassphraseInput::Command(cmd) => format!("command {cmd}"),
                PassphraseInput::Tty => format!("terminal {kind}"),
            };
            let text = match read.iter().find(|(s, _)| *s == source) {
                Some((_, text)) => text.clone(),
                None => {
                    let text = crate::keysource::local::read_secret(input, prompt, false)?;
                    read.push((source, text.clone()));
                    text
                }
            };
            *input = PassphraseInput::Preread(text);
        }
        Ok(())
    }

    /// Only an ephemeral filesystem's own ephemeral source: the store is emptied and re-keyed.
    pub fn is_ephemeral(&self) -> bool {
        matches!(
            self.attempts.as_slice(),
            [Attempt {
                spec: KeySpec::Ephemeral,
                slot: KeySlot {
                    source: KeySourceDescriptor::Ephemeral,
                    ..
                },
            }]
        )
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// Tries the slots in order until one opens the store (its key recovers a master key
    /// under which the config MAC checks out).
    pub fn open(&self, config: &FsConfig, mac: &[u8]) -> Result<Opened> {
        self.try_slots(|spec, slot| open_slot(spec, slot, config, mac))
    }

    /// Tries the slots in order until `try_one` succeeds with one (for a volume: its keyslot
    /// accepts the passphrase). Each slot that calls AWS gets `slot_timeout` (the last such
    /// slot all that is left) of the overall deadline, set as the AWS timeout of its spec;
    /// slots that need no network are always tried; every attempt is an audit event.
    pub fn try_slots<T>(
        &self,
        mut try_one: impl FnMut(&KeySpec, &KeySlot) -> Result<T>,
    ) -> Result<T> {
        let fs_id = self.fs_id.to_string();
        for id in &self.missing {
            tracing::warn!(fs_id = %fs_id, slot = id, "a key slot this host pinned is missing from the store's config: removed on another host, or an older config was restored");
        }
        for (slot, why) in &self.skipped {
            crate::audit::slot_attempt(
                &fs_id,
                slot.id,
                slot.source.kind(),
                &slot.source.identity(),
                &format!("skipped: {why}"),
            );
        }
        let started = Instant::now();
        let mut failures: Vec<(u32, Error)> = Vec::new();
        // The deadline is the AWS calls': slots that need no network are always tried, and the
        // last slot that calls AWS gets all that is left of it.
        let last_aws = self.attempts.iter().rposition(|a| a.spec.uses_aws());
        for (i, attempt) in self.attempts.iter().enumerate() {
            let slot = &attempt.slot;
            let left = self.total.saturating_sub(started.elapsed());
            let mut spec = attempt.spec.clone();
            let outcome = match spec.aws_args_mut() {
                Some(_) if left.is_zero() => Err(Error::new(
                    ErrorKind::AwsUnreachable,
                    format!(
                        "not tried: the overall deadline of {} s had passed",
                        self.total.as_secs()
                    ),
                )),
                Some(aws) => {
                    aws.timeout = if Some(i) == last_aws {
                        left
                    } else {
                        self.slot_timeout.min(left)
                    };
                    try_one(&spec, slot)
                }
                None => try_one(&spec, slot),
            };
            let label = slot.source.identity();
            match outcome {
                Ok(done) => {
                    crate::audit::slot_attempt(&fs_id, slot.id, slot.source.kind(), &label, "ok");
                    return Ok(done);
                }
                Err(e) => {
                    crate::audit::slot_attempt(
                        &fs_id,
                        slot.id,
                        slot.source.kind(),
                        &label,
                        &e.message,
                    );
                    failures.push((slot.id, e));
                }
            }
        }
        Err(combine(&self.fs_id, failures))
    }
}

/// One slot: the master key it recovers, proven by the config MAC.
fn open_slot(spec: &KeySpec, slot: &KeySlot, config: &FsConfig, mac: &[u8]) -> Result<Opened> {
    let fs_id = config.fs_id_bytes();
    let master = crate::keysource::slots::open(spec, slot, &fs_id)?;
    let keys = KeyRing::new(&master, &fs_id);
    config.verify_mac(mac, &keys)?;
    Ok(Opened {
        keys,
        master,
        slot: slot.id,
    })
}

/// One failure is returned as it is (its message, hint and class); several become one error
/// naming every slot, classed as a retry when any slot could not be reached.
fn combine(fs_id: &uuid::Uuid, mut failures: Vec<(u32, Error)>) -> Error {
    if failures.len() == 1 {
        if let Some((_, e)) = failures.pop() {
            return e;
        }
    }
    let kind = if failures
        .iter()
        .any(|(_, e)| e.kind == ErrorKind::AwsUnreachable)
    {
        ErrorKind::AwsUnreachable
    } else if failures.iter().all(|(_, e)| e.kind == ErrorKind::Key) {
        ErrorKind::Key
    } else {
        failures.first().map_or(ErrorKind::Key, |(_, e)| e.kind)
    };
    let each = failures
        .iter()
        .map(|(id, e)| format!("slot {id}: {}", e.message))
        .collect::<Vec<_>>()
        .join("; ");
    Error::new(
        kind,
        format!("no key slot opened filesystem {fs_id}: {each}"),
    )
    .hint("name another slot with --slot N, or use the recovery key: --key recovery")
}

/// fsck's check of the slots a store was not opened with: each automatic slot this host trusts
/// is opened and must recover the same master key; a slot the pin does not name is reported
/// (a mount never tries it). Typed slots (passphrase, recovery) need a person and are skipped.
pub fn verify_other_slots(
    key: &KeyChoice,
    config: &FsConfig,
    opened: &Opened,
) -> Vec<(u32, String)> {
    let pin = match pins::load(Path::new(pins::PIN_DIR), &config.fs_id) {
        Ok(pin) => pin,
        Err(e) => return vec![(opened.slot, e.to_string())],
    };
    let fs_id = config.fs_id_bytes();
    let mut problems = Vec::new();
    for slot in config.slots() {
        if slot.id == opened.slot || slot.source.is_interactive() {
            continue;
        }
        let trusted = pin.as_ref().is_some_and(|p| p.trusts(&slot));
        if !trusted {
            problems.push((
                slot.id,
                format!(
                    "slot {} ({}) is not pinned on this host: a mount never tries it; `secretfs pin` trusts it, `secretfs key remove` drops it",
                    slot.id,
                    slot.source.kind()
                ),
            ));
            continue;
        }
        let mut spec = match spec_for(&KeyChoice::none(), None, &slot.source) {
            Ok(spec) => spec,
            Err(e) => {
                problems.push((slot.id, e.message));
                continue;
            }
        };
        pin_kms_key(&mut spec, &slot.source);
        if let Some(aws) = spec.aws_args_mut() {
            // Each slot's own pinned placement: the flags chose the slot that unlocked.
            aws.region = slot.region.clone();
            aws.endpoint = slot.endpoint.clone();
            aws.timeout = key.slot_timeout().unwrap_or(DEFAULT_SLOT_TIMEOUT);
            aws.slot = Some(slot.id);
        }
        match crate::keysource::slots::open(&spec, &slot, &fs_id) {
            Ok(master) if master.expose() == opened.master.expose() => {}
            Ok(_) => problems.push((
                slot.id,
                format!(
                    "slot {} recovers another master key than slot {}",
                    slot.id, opened.slot
                ),
            )),
            Err(e) => problems.push((
                slot.id,
                format!(
                    "slot {} ({}) does not open: {e}",
                    slot.id,
                    slot.source.kind()
                ),
            )),
        }
    }
    problems
}

/// A pin applies only to the backing directory it was made for.
pub fn check_pin_backing(pin: &Pin, backing: &Path, config: &FsConfig) -> Result<()> {
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
    Ok(())
}

/// What a key named by the user must satisfy when no pin vouches for the store: its identity
/// comes from the user, its kind matches the config, and it does not live in the store.
pub fn check_untrusted_spec(spec: &KeySpec, config: &FsConfig, backing: &Path) -> Result<()> {
    require_identity(spec)?;
    narrow(
        &config.slots(),
        None,
        Some(spec.kind()),
        "the store's config",
    )?;
    refuse_keyfile_in_store(spec, backing)
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
        KeySourceDescriptor::Recovery => KeySpec::Recovery(key.passphrase.clone()),
    })
}

/// Loads the config of `backing`, opens it with a trusted slot (the config MAC proves it) and
/// records the pin of a first use.
pub fn unlock(backing: &Path, key: &KeyChoice) -> Result<(FsConfig, Opened)> {
    let (config, mac) = crate::store::config::load(backing)?;
    let mut plan = plan_unlock(backing, key, None, &config)?;
    plan.preread()?;
    let opened = plan.open(&config, &mac)?;
    record_pin(&plan.new_pin);
    Ok((config, opened))
}

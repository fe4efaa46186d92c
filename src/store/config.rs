//! The per-filesystem config file `secretfs.conf`: what it holds, how it is parsed, authenticated
//! with the config-MAC subkey, and written atomically (temp, fsync, rename, fsync dir).

use super::layout::CONFIG_FILE;
use crate::crypto::keys::{KeyRing, SecretBytes};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Format 1: one key source (`key_source`), whose key is the master key.
pub const CONFIG_VERSION: u32 = 1;
/// Format 2: a list of key slots (`slots`), each able to recover the master key on its own.
pub const CONFIG_VERSION_SLOTS: u32 = 2;
pub const CIPHER_NAME: &str = "AES-256-GCM-4096/AES-256-SIV";
/// At most this many slots (LUKS2 has 32 keyslots): bounds what an edited config makes us try.
pub const MAX_SLOTS: usize = 32;
/// Slot ids are small numbers a person types (`--slot 3`).
pub const MAX_SLOT_ID: u32 = 999;
/// Bounds on the per-slot AWS placement a config may carry.
const MAX_REGION_LEN: usize = 64;
const MAX_ENDPOINT_LEN: usize = 512;

/// How the master key of this filesystem is obtained. Only public data lives here: never a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeySourceDescriptor {
    /// 32 random bytes in a file only root can read; `path` is where init put it (a default
    /// for mount, which may name another path).
    Keyfile { path: PathBuf },
    /// The master key wrapped with AES-256-GCM under an argon2id key of the passphrase.
    Passphrase {
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
        salt: String,
        wrapped_key: String,
    },
    /// A fresh random key per mount; the backing store is emptied at every mount.
    Ephemeral,
    /// A KMS data key: `wrapped_key` is the base64 CiphertextBlob of GenerateDataKey, made
    /// under the context `{"secretfs:fs-id": fs_id}` plus `context`; when `s3_uri` is set,
    /// the object there is authoritative at mount (rewrap and revocation act on it).
    Kms {
        key_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_arn: Option<String>,
        wrapped_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        s3_uri: Option<String>,
        #[serde(default)]
        context: BTreeMap<String, String>,
    },
    /// A random 256-bit recovery key shown once at creation, never stored: the slot's key is
    /// HKDF(recovery key, fs id), which wraps the master key (only in a wrapped slot).
    Recovery,
    /// A password encrypted with `aws kms encrypt` in an S3 object (the classic recipe);
    /// the master key is HKDF(password, fs id).
    KmsPassword {
        s3_uri: String,
        #[serde(default)]
        context: BTreeMap<String, String>,
        /// The KMS key that encrypted the password object, as Decrypt reported it at init;
        /// every later Decrypt names it. Absent in configs made before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_arn: Option<String>,
        /// How the password becomes the master key: argon2id for filesystems made since it was
        /// added; absent means HKDF alone (older filesystems: FORMAT.md says how to migrate).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kdf: Option<PasswordKdf>,
    },
}

/// The password-hashing step of `kms-password` (salt: the fs id).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PasswordKdf {
    Argon2id {
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

impl KeySourceDescriptor {
    pub fn kind(&self) -> &'static str {
        match self {
            KeySourceDescriptor::Keyfile { .. } => "keyfile",
            KeySourceDescriptor::Passphrase { .. } => "passphrase",
            KeySourceDescriptor::Ephemeral => "ephemeral",
            KeySourceDescriptor::Kms { .. } => "kms",
            KeySourceDescriptor::KmsPassword { .. } => "kms-password",
            KeySourceDescriptor::Recovery => "recovery",
        }
    }

    /// What names this source's key for a person reading a log or a slot list (KMS key, file,
    /// object); empty for sources that have nothing to name.
    pub fn identity(&self) -> String {
        match self {
            KeySourceDescriptor::Keyfile { path } => path.display().to_string(),
            KeySourceDescriptor::Kms {
                key_id, key_arn, ..
            } => key_arn.clone().unwrap_or_else(|| key_id.clone()),
            KeySourceDescriptor::KmsPassword { s3_uri, .. } => s3_uri.clone(),
            _ => String::new(),
        }
    }

    /// Sources that need a person at mount (a typed secret): tried only when asked for or when
    /// an input is at hand, and after every automatic one.
    pub fn is_interactive(&self) -> bool {
        matches!(
            self,
            KeySourceDescriptor::Passphrase { .. } | KeySourceDescriptor::Recovery
        )
    }
}

/// One way in (format 2): a key source whose key either is the master key (`wrapped_master`
/// absent: only slot 0, the source a format-1 filesystem was made with) or wraps it
/// (AES-256-GCM, bound to the fs id and the slot id, see `slot_aad`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub id: u32,
    pub source: KeySourceDescriptor,
    /// The AWS region of this slot's KMS key and S3 object (another region than the others
    /// keeps a filesystem open when one region's KMS is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An endpoint URL for KMS and S3 (a VPC endpoint); absent means the SDK's default chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// base64 of `nonce ‖ AES-256-GCM(master) ‖ tag` under the slot's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_master: Option<String>,
}

impl KeySlot {
    /// A slot whose source's key is the master key itself (format 1's single source).
    pub fn direct(id: u32, source: KeySourceDescriptor) -> Self {
        KeySlot {
            id,
            source,
            region: None,
            endpoint: None,
            wrapped_master: None,
        }
    }

    /// The wrapped master key's bytes; `None` for a direct slot.
    pub fn wrapped_master(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(text) = &self.wrapped_master else {
            return Ok(None);
        };
        let bytes = B64
            .decode(text)
            .map_err(|_| format!("slot {}: wrapped_master is not base64", self.id))?;
        if bytes.len() != crate::crypto::keys::WRAPPED_KEY_LEN {
            return Err(format!(
                "slot {}: wrapped_master has {} bytes, not {}",
                self.id,
                bytes.len(),
                crate::crypto::keys::WRAPPED_KEY_LEN
            ));
        }
        Ok(Some(bytes))
    }

    /// Structural rules, checked before anything is authenticated (the MAC needs a key, and
    /// these bound what an edited config can make a mount do).
    fn check(&self) -> Result<(), String> {
        let id = self.id;
        if id > MAX_SLOT_ID {
            return Err(format!("slot id {id} is above {MAX_SLOT_ID}"));
        }
        let wrapped = self.wrapped_master()?;
        match (&self.source, wrapped.is_some()) {
            (KeySourceDescriptor::Ephemeral, _) => {
                return Err(format!("slot {id}: an ephemeral key cannot be a slot"))
            }
            (KeySourceDescriptor::Recovery, false) => {
                return Err(format!(
                    "slot {id}: a recovery slot must wrap the master key"
                ))
            }
            (_, false) if id != 0 => {
                return Err(format!(
                    "slot {id}: only slot 0 may hold the master key directly"
                ))
            }
            _ => {}
        }
        self.check_placement()
    }

    /// The region and endpoint rules alone (also applied to `--region` / `--endpoint-url`).
    pub fn check_placement(&self) -> Result<(), String> {
        let id = self.id;
        if let Some(region) = &self.region {
            let ok = !region.is_empty()
                && region.len() <= MAX_REGION_LEN
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(format!(
                    "slot {id}: region {region:?} is not an AWS region name"
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            if endpoint.len() > MAX_ENDPOINT_LEN
                || !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
                || endpoint.chars().any(char::is_whitespace)
            {
                return Err(format!(
                    "slot {id}: endpoint {endpoint:?} is not an http(s) URL"
                ));
            }
        }
        Ok(())
    }
}

/// What binds a slot's wrapped master key to its filesystem and its place in the list: a
/// wrapped key copied to another slot or another filesystem does not open.
pub fn slot_aad(fs_id: &[u8; 16], slot_id: u32) -> Vec<u8> {
    let mut aad = b"secretfs/v2/key-slot\0".to_vec();
    aad.extend_from_slice(fs_id);
    aad.extend_from_slice(&slot_id.to_be_bytes());
    aad
}

/// Everything the MAC covers. Format 1 holds `key_source`, format 2 `slots` (never both): the
/// field order and the absent field keep format 1's bytes, and so its MAC, unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    pub format_version: u32,
    pub fs_id: uuid::Uuid,
    pub cipher: String,
    pub block_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_source: Option<KeySourceDescriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    slots: Vec<KeySlot>,
    /// base64 of the root directory's 16-byte id (other directories keep theirs in a file).
    pub root_dir_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{path} is not a secretfs backing store (no {CONFIG_FILE}); run `secretfs init` first"
    )]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged or not a secretfs config: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("this key does not open this filesystem (config MAC mismatch): wrong key, or the config was edited")]
    MacMismatch,
    #[error("{path} already holds a secretfs filesystem; refusing to overwrite it")]
    AlreadyInitialized { path: PathBuf },
}

impl FsConfig {
    pub fn new(key_source: KeySourceDescriptor) -> Self {
        let mut root_dir_id = [0u8; 16];
        crate::crypto::keys::fill_random(&mut root_dir_id);
        let mut fs_id = [0u8; 16];
        crate::crypto::keys::fill_random(&mut fs_id);
        Self {
            format_version: CONFIG_VERSION,
            fs_id: uuid::Builder::from_random_bytes(fs_id).into_uuid(),
            cipher: CIPHER_NAME.to_string(),
            block_size: crate::crypto::content::BLOCK_SIZE as u32,
            key_source: Some(key_source),
            slots: Vec::new(),
            root_dir_id: B64.encode(root_dir_id),
        }
    }

    /// The slots of this filesystem; a format-1 config reads as one direct slot 0.
    pub fn slots(&self) -> Vec<KeySlot> {
        match &self.key_source {
            Some(source) => vec![KeySlot::direct(0, source.clone())],
            None => self.slots.clone(),
        }
    }

    pub fn slot(&self, id: u32) -> Option<KeySlot> {
        self.slots().into_iter().find(|s| s.id == id)
    }

    /// The first slot's source: what a one-key filesystem was made with, and what status and
    /// the audit name first.
    pub fn primary(&self) -> &KeySourceDescriptor {
        match (&self.key_source, self.slots.first()) {
            (Some(source), _) => source,
            (None, Some(slot)) => &slot.source,
            // parse_unverified and set_slots never leave a config without a slot.
            (None, None) => &KeySourceDescriptor::Ephemeral,
        }
    }

    /// Replaces the source of slot `id` (rewrap moves a KMS blob to another key; the slot's
    /// key, and so its wrapped master key, stays the same). Format 1 stays format 1.
    pub fn set_slot_source(&mut self, id: u32, source: KeySourceDescriptor) -> Result<(), String> {
        match (&mut self.key_source, id) {
            (Some(current), 0) => *current = source,
            (Some(_), _) => return Err(format!("there is no slot {id}")),
            (None, _) => {
                let slot = self
                    .slots
                    .iter_mut()
                    .find(|s| s.id == id)
                    .ok_or_else(|| format!("there is no slot {id}"))?;
                slot.source = source;
            }
        }
        Ok(())
    }

    pub fn is_slotted(&self) -> bool {
        self.key_source.is_none()
    }

    /// Makes this a format-2 config with `slots` (a format-1 config is converted here, on the
    /// first `key add` or at init with several slots). Refuses what parsing would refuse.
    pub fn set_slots(&mut self, slots: Vec<KeySlot>) -> Result<(), String> {
        check_slots(&slots)?;
        self.format_version = CONFIG_VERSION_SLOTS;
        self.key_source = None;
        self.slots = slots;
        Ok(())
    }

    /// The smallest id not in use.
    pub fn next_slot_id(&self) -> u32 {
        let used: Vec<u32> = self.slots().iter().map(|s| s.id).collect();
        (0..=MAX_SLOT_ID)
            .find(|i| !used.contains(i))
            .unwrap_or(MAX_SLOT_ID)
    }

    pub fn fs_id_bytes(&self) -> [u8; 16] {
        *self.fs_id.as_bytes()
    }

    pub fn root_dir_id(&self) -> Result<[u8; 16], ConfigError> {
        B64.decode(&self.root_dir_id)
            .ok()
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or_else(|| ConfigError::Malformed {
                path: PathBuf::from(CONFIG_FILE),
                reason: "root_dir_id is not 16 bytes of base64".into(),
            })
    }

    fn mac(&self, key: &SecretBytes<32>) -> Vec<u8> {
        // Serialising a plain struct of strings and integers cannot fail.
        let body = serde_json::to_vec(self).unwrap_or_else(|_| unreachable!());
        // aws-lc's HMAC context is cleansed when freed, so no copy of the keyed state is left.
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.expose());
        let mut mac = aws_lc_rs::hmac::Context::with_key(&key);
        mac.update(b"secretfs/v1/config\0");
        mac.update(&body);
        mac.sign().as_ref().to_vec()
    }

    /// Serialised form: the body plus `"mac"`, pretty-printed for people who audit it.
    pub fn to_json(&self, keys: &KeyRing) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| unreachable!());
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("mac".into(), hex(&self.mac(keys.config_mac_key())).into());
        }
        let mut out = serde_json::to_vec_pretty(&value).unwrap_or_else(|_| unreachable!());
        out.push(b'\n');
        out
    }

    /// Parses without authenticating: the key source is needed before the MAC can be checked.
    pub fn parse_unverified(bytes: &[u8]) -> Result<(Self, Vec<u8>), String> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let mac = value
            .as_object_mut()
            .and_then(|m| m.remove("mac"))
            .and_then(|m| m.as_str().and_then(unhex))
            .ok_or("no valid \"mac\" field")?;
        let config: FsConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
        match (
            config.format_version,
            &config.key_source,
            config.slots.is_empty(),
        ) {
            (CONFIG_VERSION, Some(KeySourceDescriptor::Recovery), _) => {
                return Err("a recovery key cannot be a filesystem's only key source".into());
            }
            (CONFIG_VERSION, Some(_), true) => {}
            (CONFIG_VERSION, _, _) => {
                return Err("format 1 needs key_source and no slots".into());
            }
            (CONFIG_VERSION_SLOTS, None, false) => check_slots(&config.slots)?,
            (CONFIG_VERSION_SLOTS, _, _) => {
                return Err("format 2 needs slots and no key_source".into());
            }
            (v, _, _) => return Err(format!("unsupported format_version {v}")),
        }
        if config.block_size as usize != crate::crypto::content::BLOCK_SIZE
            || config.cipher != CIPHER_NAME
        {
            return Err(format!(
                "unsupported cipher {} / block size {}",
                config.cipher, config.block_size
            ));
        }
        Ok((config, mac))
    }

    pub fn verify_mac(&self, mac: &[u8], keys: &KeyRing) -> Result<(), ConfigError> {
        let expected = self.mac(keys.config_mac_key());
        if aws_lc_rs::constant_time::verify_slices_are_equal(&expected, mac).is_ok() {
            Ok(())
        } else {
            Err(ConfigError::MacMismatch)
        }
    }
}

fn check_slots(slots: &[KeySlot]) -> Result<(), String> {
    if slots.is_empty() || slots.len() > MAX_SLOTS {
        return Err(format!(
            "{} key slots: a filesystem has 1 to {MAX_SLOTS}",
            slots.len()
        ));
    }
    for (i, slot) in slots.iter().enumerate() {
        slot.check()?;
        if slots[..i].iter().any(|s| s.id == slot.id) {
            return Err(format!("slot id {} appears twice", slot.id));
        }
    }
    Ok(())
}

pub fn config_path(backing: &Path) -> PathBuf {
    backing.join(CONFIG_FILE)
}

/// Largest legal config: a few hundred bytes of JSON plus a KMS blob (at most 6 KiB).
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Reads and parses the config of `backing`; the MAC is checked later with the key. The file is
/// read as the store's other internal files are: no symlink, a regular file, bounded.
pub fn load(backing: &Path) -> Result<(FsConfig, Vec<u8>), ConfigError> {
    let path = config_path(backing);
    let io_error = |source| ConfigError::Io {
        path: path.clone(),
        source,
    };
    let root = crate::store::confined::open_root(backing).map_err(io_error)?;
    let name = std::ffi::CString::new(CONFIG_FILE).unwrap_or_else(|_| unreachable!());
    let bytes = match crate::store::confined::read_bounded(root.as_raw_fd(), &name, MAX_CONFIG_LEN)
    {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing {
                path: backing.to_path_buf(),
            })
        }
        Err(e) if crate::store::confined::is_hostile(&e) => {
            return Err(ConfigError::Malformed {
                path,
                reason: e.to_string(),
            })
        }
        Err(source) => return Err(io_error(source)),
    };
    FsConfig::parse_unverified(&bytes).map_err(|reason| ConfigError::Malformed { path, reason })
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut suffix = [0u8; 8];
    crate::crypto::keys::fill_random(&mut suffix);
    let tmp = dir.join(format!("{}{}", super::layout::TEMP_PREFIX, hex(&suffix)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a new config; refuses to replace one unless `replace` (rewrap, ephemeral re-key).
pub fn store(
    backing: &Path,
    config: &FsConfig,
    keys: &KeyRing,
    replace: bool,
) -> Result<(), ConfigError> {
    let path = config_path(backing);
    if !replace && path.exists() {
        return Err(ConfigError::AlreadyInitialized {
            path: backing.to_path_buf(),
        });
    }
    let json = config.to_json(keys);
    if json.len() > MAX_CONFIG_LEN {
        // Never write what `load` would refuse: the store would not open again.
        return Err(ConfigError::Malformed {
            path,
            reason: format!(
                "the new config would be {} bytes, over the {MAX_CONFIG_LEN}-byte limit; nothing was written",
                json.len()
            ),
        });
    }
    write_atomically(&path, &json, 0o600).map_err(|source| ConfigError::Io { path, source })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::MasterKey;
    use proptest::prelude::*;

    fn ring(config: &FsConfig, byte: u8) -> KeyRing {
        KeyRing::new(
            &MasterKey::from_slice(&[byte; 32]).unwrap(),
            &config.fs_id_bytes(),
        )
    }

    #[test]
    fn round_trip_and_mac() {
        let config = FsConfig::new(KeySourceDescriptor::Keyfile { path: "/k".into() });
        let keys = ring(&config, 1);
        let json = config.to_json(&keys);
        let (parsed, mac) = FsConfig::parse_unverified(&json).unwrap();
        assert_eq!(parsed, config);
        parsed.verify_mac(&mac, &keys).unwrap();
        assert!(matches!(
            parsed.verify_mac(&mac, &ring(&config, 2)),
            Err(ConfigError::MacMismatch)
        ));
    }

    #[test]
    fn kms_descriptors_round_trip_under_the_mac() {
        for ks in [
            KeySourceDescriptor::Kms {
                key_id: "alias/secretfs".into(),
                key_arn: Some("arn:aws:kms:eu-west-1:1:key/k".into()),
                wrapped_key: "AQID".into(),
                s3_uri: Some("s3://b/k".into()),
                context: BTreeMap::from([("app".to_string(), "web".to_string())]),
            },
            KeySourceDescriptor::Kms {
                key_id: "k".into(),
                key_arn: None,
                wrapped_key: "AQID".into(),
                s3_uri: None,
                context: BTreeMap::new(),
            },
            KeySourceDescriptor::KmsPassword {
                s3_uri: "s3://b/pw".into(),
                context: BTreeMap::new(),
                key_arn: None,
                kdf: None,
            },
            KeySourceDescriptor::KmsPassword {
                s3_uri: "s3://b/pw".into(),
                context: BTreeMap::new(),
                key_arn: Some("arn:aws:kms:eu-west-1:1:key/k".into()),
                kdf: Some(PasswordKdf::Argon2id {
                    m_cost_kib: 65536,
                    t_cost: 3,
                    p_cost: 1,
                }),
            },
        ] {
            let config = FsConfig::new(ks);
            let keys = ring(&config, 1);
            let (parsed, mac) = FsConfig::parse_unverified(&config.to_json(&keys)).unwrap();
            assert_eq!(parsed, config);
            parsed.verify_mac(&mac, &keys).unwrap();
        }
    }

    #[test]
    fn edited_config_is_rejected() {
        let config = FsConfig::new(KeySourceDescriptor::Keyfile { path: "/k".into() });
        let keys = ring(&config, 1);
        let json = String::from_utf8(config.to_json(&keys)).unwrap();
        let edited = json.replace(&config.root_dir_id, "AAAAAAAAAAAAAAAAAAAAAA==");
        let (parsed, mac) = FsConfig::parse_unverified(edited.as_bytes()).unwrap();
        assert!(matches!(
            parsed.verify_mac(&mac, &keys),
            Err(ConfigError::MacMismatch)
        ));
        let extra = json.replacen('{', "{\"evil\": 1,", 1);
        assert!(FsConfig::parse_unverified(extra.as_bytes()).is_err());
    }

    #[test]
    fn atomic_store_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let config = FsConfig::new(KeySourceDescriptor::Ephemeral);
        let keys = ring(&config, 1);
        store(dir.path(), &config, &keys, false).unwrap();
        assert!(matches!(
            store(dir.path(), &config, &keys, false),
            Err(ConfigError::AlreadyInitialized { .. })
        ));
        let (loaded, _) = load(dir.path()).unwrap();
        assert_eq!(loaded, config);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn slot_lists_are_bounded_and_checked_before_any_key_is_tried() {
        let config = FsConfig::new(KeySourceDescriptor::Keyfile { path: "/k".into() });
        let keys = ring(&config, 1);
        let json: serde_json::Value = serde_json::from_slice(&config.to_json(&keys)).unwrap();
        let wrapped = B64.encode([0u8; crate::crypto::keys::WRAPPED_KEY_LEN]);
        let slot = |id: u32, source: serde_json::Value, wrapped: Option<&str>| {
            let mut s = serde_json::json!({"id": id, "source": source});
            if let Some(w) = wrapped {
                s["wrapped_master"] = w.into();
            }
            s
        };
        let keyfile = serde_json::json!({"type": "keyfile", "path": "/k"});
        let recovery = serde_json::json!({"type": "recovery"});
        let with_slots = |slots: Vec<serde_json::Value>| {
            let mut v = json.clone();
            v.as_object_mut().unwrap().remove("key_source");
            v["format_version"] = 2.into();
            v["slots"] = slots.into();
            serde_json::to_vec(&v).unwrap()
        };
        let good = with_slots(vec![
            slot(0, keyfile.clone(), None),
            slot(1, recovery.clone(), Some(&wrapped)),
        ]);
        let (parsed, _) = FsConfig::parse_unverified(&good).unwrap();
        assert_eq!(parsed.slots().len(), 2);
        for (why, bytes) in [
            ("no slot", with_slots(vec![])),
            (
                "duplicate id",
                with_slots(vec![
                    slot(0, keyfile.clone(), None),
                    slot(0, recovery.clone(), Some(&wrapped)),
                ]),
            ),
            (
                "direct slot other than 0",
                with_slots(vec![slot(1, keyfile.clone(), None)]),
            ),
            (
                "direct recovery",
                with_slots(vec![slot(0, recovery.clone(), None)]),
            ),
            (
                "short wrapped key",
                with_slots(vec![
                    slot(0, keyfile.clone(), None),
                    slot(1, recovery.clone(), Some("AAAA")),
                ]),
            ),
            (
                "id too large",
                with_slots(vec![slot(1000, keyfile.clone(), Some(&wrapped))]),
            ),
            (
                "ephemeral slot",
                with_slots(vec![slot(
                    0,
                    serde_json::json!({"type": "ephemeral"}),
                    None,
                )]),
            ),
            (
                "33 slots",
                with_slots(
                    (0..33)
                        .map(|i| slot(i, recovery.clone(), Some(&wrapped)))
                        .collect(),
                ),
            ),
        ] {
            assert!(
                FsConfig::parse_unverified(&bytes).is_err(),
                "{why} was accepted"
            );
        }
        let mut bad_region = serde_json::from_slice::<serde_json::Value>(&good).unwrap();
        bad_region["slots"][1]["region"] = "evil.com/x".into();
        assert!(FsConfig::parse_unverified(&serde_json::to_vec(&bad_region).unwrap()).is_err());
        let mut bad_endpoint = serde_json::from_slice::<serde_json::Value>(&good).unwrap();
        bad_endpoint["slots"][1]["endpoint"] = "file:///etc/shadow".into();
        assert!(FsConfig::parse_unverified(&serde_json::to_vec(&bad_endpoint).unwrap()).is_err());
        // Format 1 with a recovery source, or with slots: refused.
        let mut v1_recovery = json.clone();
        v1_recovery["key_source"] = recovery;
        assert!(FsConfig::parse_unverified(&serde_json::to_vec(&v1_recovery).unwrap()).is_err());
    }

    #[test]
    fn a_config_too_large_to_load_again_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FsConfig::new(KeySourceDescriptor::Keyfile { path: "/k".into() });
        let keys = ring(&config, 1);
        let long = "x".repeat(4000);
        let slots = (0..MAX_SLOTS as u32)
            .map(|id| KeySlot {
                wrapped_master: Some(B64.encode([0u8; crate::crypto::keys::WRAPPED_KEY_LEN])),
                ..KeySlot::direct(
                    id,
                    KeySourceDescriptor::Keyfile {
                        path: long.clone().into(),
                    },
                )
            })
            .collect();
        config.set_slots(slots).unwrap();
        assert!(matches!(
            store(dir.path(), &config, &keys, false),
            Err(ConfigError::Malformed { .. })
        ));
        assert!(!config_path(dir.path()).exists());
    }

    proptest! {
        #[test]
        fn parsing_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FsConfig::parse_unverified(&data);
        }
    }
}

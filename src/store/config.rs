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

pub const CONFIG_VERSION: u32 = 1;
pub const CIPHER_NAME: &str = "AES-256-GCM-4096/AES-256-SIV";

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
        }
    }
}

/// Everything the MAC covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    pub format_version: u32,
    pub fs_id: uuid::Uuid,
    pub cipher: String,
    pub block_size: u32,
    pub key_source: KeySourceDescriptor,
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
            key_source,
            root_dir_id: B64.encode(root_dir_id),
        }
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
        if config.format_version != CONFIG_VERSION {
            return Err(format!(
                "unsupported format_version {}",
                config.format_version
            ));
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
    write_atomically(&path, &config.to_json(keys), 0o600)
        .map_err(|source| ConfigError::Io { path, source })
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

    proptest! {
        #[test]
        fn parsing_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FsConfig::parse_unverified(&data);
        }
    }
}

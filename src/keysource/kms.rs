//! The `kms` and `kms-password` key sources: envelope encryption of the master key with AWS KMS
//! (GenerateDataKey / Decrypt / ReEncrypt bound to the fs id), and the classic recipe's password.

use super::aws::{split_sdk_error, Attempt, Aws, AwsError};
use super::s3::{S3Uri, S3};
use super::{AwsKeyArgs, KeySourceError};
use crate::audit;
use crate::config::{KeySourceDescriptor, PasswordKdf};
use crate::crypto::keys::{MasterKey, KEY_LEN, LABEL_PASSWORD};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError;
use aws_sdk_kms::operation::re_encrypt::ReEncryptError;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::{BTreeMap, HashMap};
use zeroize::Zeroizing;

/// The encryption-context pair that binds a wrapped key to one filesystem: KMS refuses to
/// decrypt it under any other fs id, and IAM policies can grant access per filesystem.
pub const FS_ID_CONTEXT: &str = "secretfs:fs-id";

/// A password decrypted from an S3 object is at most this long (KMS Encrypt takes 4096 bytes).
const MAX_PASSWORD: usize = 4096;

/// The full encryption context: the fs id plus the user's pairs.
pub fn context(fs_id: &[u8; 16], user: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut ctx: HashMap<String, String> = user.clone().into_iter().collect();
    ctx.insert(
        FS_ID_CONTEXT.to_string(),
        uuid::Uuid::from_bytes(*fs_id).to_string(),
    );
    ctx
}

/// Parses `k=v,k2=v2`; the fs-id key is reserved because secretfs sets it itself.
pub fn parse_context(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "--context pair `{pair}` has no `=`: expected k=v,k2=v2"
            ));
        };
        if k.is_empty() {
            return Err(format!("--context pair `{pair}` has an empty key"));
        }
        if k == FS_ID_CONTEXT {
            return Err(format!(
                "--context may not set `{FS_ID_CONTEXT}`: secretfs binds every key to its fs id itself"
            ));
        }
        map.insert(k.to_string(), v.to_string());
    }
    Ok(map)
}

/// The region in a KMS ARN (`arn:aws:kms:REGION:ACCOUNT:key/…`), used when no region is set.
fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// What a KMS service error means for the user, from the operation's modelled variants.
enum Kind {
    NotFound,
    Disabled,
    WrongBlob,
    Transient,
    Other,
}

fn decrypt_kind(e: &DecryptError) -> Kind {
    match e {
        DecryptError::NotFoundException(_) => Kind::NotFound,
        DecryptError::DisabledException(_) | DecryptError::KmsInvalidStateException(_) => {
            Kind::Disabled
        }
        DecryptError::InvalidCiphertextException(_) | DecryptError::IncorrectKeyException(_) => {
            Kind::WrongBlob
        }
        DecryptError::KeyUnavailableException(_)
        | DecryptError::DependencyTimeoutException(_)
        | DecryptError::KmsInternalException(_) => Kind::Transient,
        _ => Kind::Other,
    }
}

fn generate_kind(e: &GenerateDataKeyError) -> Kind {
    match e {
        GenerateDataKeyError::NotFoundException(_) => Kind::NotFound,
        GenerateDataKeyError::DisabledException(_)
        | GenerateDataKeyError::KmsInvalidStateException(_) => Kind::Disabled,
        GenerateDataKeyError::KeyUnavailableException(_)
        | GenerateDataKeyError::DependencyTimeoutException(_)
        | GenerateDataKeyError::KmsInternalException(_) => Kind::Transient,
        _ => Kind::Other,
    }
}

fn reencrypt_kind(e: &ReEncryptError) -> Kind {
    match e {
        ReEncryptError::NotFoundException(_) => Kind::NotFound,
        ReEncryptError::DisabledException(_) | ReEncryptError::KmsInvalidStateException(_) => {
            Kind::Disabled
        }
        ReEncryptError::InvalidCiphertextException(_)
        | ReEncryptError::IncorrectKeyException(_) => Kind::WrongBlob,
        ReEncryptError::KeyUnavailableException(_)
        | ReEncryptError::DependencyTimeoutException(_)
        | ReEncryptError::KmsInternalException(_) => Kind::Transient,
        _ => Kind::Other,
    }
}

fn kms_failure<E: ProvideErrorMetadata + std::fmt::Display>(
    e: &E,
    kind: Kind,
    action: &'static str,
    key: &str,
) -> Attempt {
    let detail = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    };
    let key = if key.is_empty() {
        "the key that made the blob".to_string()
    } else {
        key.to_string()
    };
    match kind {
        Kind::NotFound => Attempt::Fail(AwsError::KeyNotFound { key }),
        Kind::Disabled => Attempt::Fail(AwsError::KeyDisabled { key, detail }),
        Kind::WrongBlob => Attempt::Fail(AwsError::WrongBlob {
            key: format!(" (key {key})"),
            detail,
        }),
        Kind::Transient => Attempt::Retry(AwsError::Other {
            service: "KMS",
            action,
            detail,
        }),
        // Access denial is not a modelled KMS exception; its error code is the stable signal.
        Kind::Other if e.code() == Some("AccessDeniedException") => {
            Attempt::Fail(AwsError::AccessDenied {
                action,
                resource: format!("KMS key {key}"),
                detail,
            })
        }
        Kind::Other => Attempt::Fail(AwsError::Other {
            service: "KMS",
            action,
            detail,
        }),
    }
}

/// A KMS client over one `Aws` session; every call is audited with its request id.
pub struct Kms<'a> {
    aws: &'a Aws,
    client: aws_sdk_kms::Client,
    endpoint: String,
    fs_id: String,
    /// Request id of the last failed call: errors are audited with it too.
    failed_rid: std::cell::RefCell<Option<String>>,
}

/// The result of a KMS call that produced or consumed a wrapped key.
pub struct Wrapped {
    pub blob: Vec<u8>,
    pub key_arn: String,
}

impl<'a> Kms<'a> {
    pub fn new(aws: &'a Aws, fs_id: &[u8; 16]) -> Self {
        Self {
            aws,
            client: aws_sdk_kms::Client::new(&aws.sdk),
            endpoint: aws.endpoint("KMS"),
            fs_id: uuid::Uuid::from_bytes(*fs_id).to_string(),
            failed_rid: std::cell::RefCell::new(None),
        }
    }

    fn audit<T>(&self, op: &str, key: &str, result: &Result<(T, Option<String>), AwsError>) {
        match result {
            Ok((_, rid)) => audit::kms_call(&self.fs_id, op, key, rid.as_deref(), "ok"),
            Err(e) => {
                let rid = self.failed_rid.borrow_mut().take();
                audit::kms_call(&self.fs_id, op, key, rid.as_deref(), &e.to_string())
            }
        }
    }

    /// GenerateDataKey(AES_256): the plaintext goes straight into an mlocked `MasterKey`.
    pub fn generate(
        &self,
        key_id: &str,
        ctx: &HashMap<String, String>,
    ) -> Result<(MasterKey, Wrapped), AwsError> {
        let secs = self.aws.timeout_secs();
        let result = self.aws.call("KMS", self.endpoint.clone(), || async move {
            let out = self
                .client
                .generate_data_key()
                .key_id(key_id)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(ctx.clone()))
                .send()
                .await;
            let mut out = match out {
                Ok(o) => o,
                Err(e) => {
                    let e = split_sdk_error(e, "KMS", "kms:GenerateDataKey", &self.endpoint, secs)?;
                    *self.failed_rid.borrow_mut() = e.request_id().map(str::to_string);
                    return Err(kms_failure(
                        &e,
                        generate_kind(&e),
                        "kms:GenerateDataKey",
                        key_id,
                    ));
                }
            };
            let rid = out.request_id().map(str::to_string);
            let plain = Zeroizing::new(
                out.plaintext
                    .take()
                    .map(Blob::into_inner)
                    .unwrap_or_default(),
            );
            let master = MasterKey::from_slice(&plain).ok_or_else(|| {
                Attempt::Fail(AwsError::Other {
                    service: "KMS",
                    action: "kms:GenerateDataKey",
                    detail: format!(
                        "the data key has {} bytes instead of {KEY_LEN}",
                        plain.len()
                    ),
                })
            })?;
            let blob = out
                .ciphertext_blob
                .take()
                .map(Blob::into_inner)
                .unwrap_or_default();
            let key_arn = out.key_id.take().unwrap_or_else(|| key_id.to_string());
            Ok(((master, Wrapped { blob, key_arn }), rid))
        });
        self.audit("GenerateDataKey", key_id, &result);
        result.map(|(v, _)| v)
    }

    /// Decrypt: returns the plaintext in a buffer wiped on drop, and the key ARN KMS used.
    /// With `pin`, KMS must use `key_hint` and refuses a blob made under any other key.
    pub fn decrypt(
        &self,
        blob: &[u8],
        ctx: &HashMap<String, String>,
        key_hint: &str,
        pin: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, String), AwsError> {
        let secs = self.aws.timeout_secs();
        let result = self.aws.call("KMS", self.endpoint.clone(), || async move {
            let mut req = self.client.decrypt().ciphertext_blob(Blob::new(blob));
            if pin {
                req = req.key_id(key_hint);
            }
            if !ctx.is_empty() {
                req = req.set_encryption_context(Some(ctx.clone()));
            }
            let mut out = match req.send().await {
                Ok(o) => o,
                Err(e) => {
                    let e = split_sdk_error(e, "KMS", "kms:Decrypt", &self.endpoint, secs)?;
                    *self.failed_rid.borrow_mut() = e.request_id().map(str::to_string);
                    return Err(kms_failure(&e, decrypt_kind(&e), "kms:Decrypt", key_hint));
                }
            };
            let rid = out.request_id().map(str::to_string);
            let plain = Zeroizing::new(
                out.plaintext
                    .take()
                    .map(Blob::into_inner)
                    .unwrap_or_default(),
            );
            let key_arn = out.key_id.take().unwrap_or_else(|| key_hint.to_string());
            // KMS enforces the KeyId itself; checked here too, so an endpoint that ignores it
            // (or answers for another key) cannot make us accept a blob under a foreign key.
            if pin && !same_key(key_hint, &key_arn) {
                return Err(Attempt::Fail(AwsError::WrongBlob {
                    key: format!(" with the pinned key {key_hint}"),
                    detail: format!("Decrypt answered with key {key_arn}"),
                }));
            }
            Ok(((plain, key_arn), rid))
        });
        let key = match &result {
            Ok(((_, arn), _)) => arn.clone(),
            Err(_) => key_hint.to_string(),
        };
        self.audit("Decrypt", &key, &result);
        result.map(|(v, _)| v)
    }

    /// ReEncrypt under `new_key`, same context: KMS never hands out the plaintext.
    pub fn reencrypt(
        &self,
        blob: &[u8],
        ctx: &HashMap<String, String>,
        new_key: &str,
    ) -> Result<Wrapped, AwsError> {
        let secs = self.aws.timeout_secs();
        let result = self.aws.call("KMS", self.endpoint.clone(), || async move {
            let ctx = (!ctx.is_empty()).then(|| ctx.clone());
            let out = self
                .client
                .re_encrypt()
                .ciphertext_blob(Blob::new(blob))
                .set_source_encryption_context(ctx.clone())
                .destination_key_id(new_key)
                .set_destination_encryption_context(ctx)
                .send()
                .await;
            let mut out = match out {
                Ok(o) => o,
                Err(e) => {
                    let e = split_sdk_error(e, "KMS", "kms:ReEncrypt", &self.endpoint, secs)?;
                    *self.failed_rid.borrow_mut() = e.request_id().map(str::to_string);
                    return Err(kms_failure(
                        &e,
                        reencrypt_kind(&e),
                        "kms:ReEncrypt",
                        new_key,
                    ));
                }
            };
            let rid = out.request_id().map(str::to_string);
            let blob = out
                .ciphertext_blob
                .take()
                .map(Blob::into_inner)
                .unwrap_or_default();
            let key_arn = out.key_id.take().unwrap_or_else(|| new_key.to_string());
            Ok((Wrapped { blob, key_arn }, rid))
        });
        self.audit("ReEncrypt", new_key, &result);
        result.map(|(v, _)| v)
    }
}

/// Whether the key ARN KMS reports is the one asked for: an ARN must match exactly, a bare key
/// id must be that ARN's id; an alias cannot be compared here (KMS has checked it).
fn same_key(asked: &str, used: &str) -> bool {
    if asked.starts_with("arn:") && asked.contains(":key/") {
        asked == used
    } else if asked.starts_with("alias/") || asked.contains(":alias/") {
        true
    } else {
        used == asked || used.ends_with(&format!(":key/{asked}"))
    }
}

/// The legacy derivation: the classic recipe's password through HKDF alone, bound to this
/// filesystem (an offline guess costs one HMAC: kept only for filesystems made before argon2id).
pub fn password_to_master(password: &[u8], fs_id: &[u8; 16]) -> MasterKey {
    let prk = crate::crypto::keys::hkdf_extract(fs_id, password);
    let hk = crate::crypto::keys::hkdf_from_prk(prk.expose());
    let mut key = MasterKey::zeroed();
    // Expanding 32 bytes from SHA-256 is always within HKDF's limit.
    hk.expand(LABEL_PASSWORD, key.expose_mut())
        .unwrap_or_else(|_| unreachable!());
    key
}

/// The argon2id costs of new `kms-password` filesystems: those of `passphrase`.
pub const PASSWORD_KDF: PasswordKdf = PasswordKdf::Argon2id {
    m_cost_kib: super::local::ARGON2_M_KIB,
    t_cost: super::local::ARGON2_T,
    p_cost: super::local::ARGON2_P,
};

/// The master key of a `kms-password` filesystem: argon2id of the password (salt = fs id), so
/// each guess at a password costs what a passphrase guess does; HKDF alone for filesystems made
/// before (`kdf` absent).
pub fn password_master(
    password: &[u8],
    fs_id: &[u8; 16],
    kdf: Option<&PasswordKdf>,
) -> Result<MasterKey, KeySourceError> {
    match kdf {
        None => Ok(password_to_master(password, fs_id)),
        Some(PasswordKdf::Argon2id {
            m_cost_kib,
            t_cost,
            p_cost,
        }) => super::local::argon2id(password, fs_id, *m_cost_kib, *t_cost, *p_cost),
    }
}

/// `aws kms encrypt` output is stored either raw or as the CLI prints it (base64 text).
fn password_blob(object: &[u8]) -> Vec<u8> {
    let text = object.trim_ascii();
    if !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
    {
        if let Ok(raw) = B64.decode(text) {
            return raw;
        }
    }
    object.to_vec()
}

fn damaged(what: &str) -> KeySourceError {
    KeySourceError::Damaged(what.to_string())
}

fn key_label(key_id: &str, key_arn: &Option<String>) -> String {
    key_arn.clone().unwrap_or_else(|| key_id.to_string())
}

/// `init --key kms`: a new data key from KMS; its blob inline in the config and, if asked, in S3.
pub fn init_kms(
    args: &AwsKeyArgs,
    fs_id: &[u8; 16],
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let key_id = args
        .kms_key
        .as_deref()
        .ok_or(KeySourceError::KmsKeyMissing)?;
    let user_ctx = args.context.clone().unwrap_or_default();
    let aws = Aws::connect(args.timeout, arn_region(key_id))?;
    let s3 = S3::new(&aws);
    // Refuse an existing object before KMS mints a key that would then be thrown away.
    if let Some(uri) = &args.wrapped_key {
        if !args.force && s3.exists(uri)? {
            return Err(AwsError::ObjectExists {
                uri: uri.to_string(),
            }
            .into());
        }
    }
    let kms = Kms::new(&aws, fs_id);
    let (master, wrapped) = kms.generate(key_id, &context(fs_id, &user_ctx))?;
    if let Some(uri) = &args.wrapped_key {
        s3.put(uri, &wrapped.blob, args.force)?;
    }
    let descriptor = KeySourceDescriptor::Kms {
        key_id: key_id.to_string(),
        key_arn: Some(wrapped.key_arn),
        wrapped_key: B64.encode(&wrapped.blob),
        s3_uri: args.wrapped_key.as_ref().map(S3Uri::to_string),
        context: user_ctx,
    };
    Ok((master, descriptor))
}

/// `init --key kms-password`: adopt an existing `aws kms encrypt` password object as it is.
pub fn init_kms_password(
    args: &AwsKeyArgs,
    fs_id: &[u8; 16],
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let uri = args
        .wrapped_key
        .as_ref()
        .ok_or(KeySourceError::WrappedKeyMissing)?;
    let user_ctx = args.context.clone().unwrap_or_default();
    let (master, key_arn) = unlock_password(
        args,
        uri,
        &user_ctx,
        fs_id,
        args.kms_key.as_deref(),
        Some(&PASSWORD_KDF),
    )?;
    let descriptor = KeySourceDescriptor::KmsPassword {
        s3_uri: uri.to_string(),
        context: user_ctx,
        key_arn: Some(key_arn),
        kdf: Some(PASSWORD_KDF),
    };
    Ok((master, descriptor))
}

fn unlock_password(
    args: &AwsKeyArgs,
    uri: &S3Uri,
    ctx: &BTreeMap<String, String>,
    fs_id: &[u8; 16],
    key_hint: Option<&str>,
    kdf: Option<&PasswordKdf>,
) -> Result<(MasterKey, String), KeySourceError> {
    let aws = Aws::connect(args.timeout, key_hint.and_then(arn_region))?;
    let object = S3::new(&aws).get(uri)?;
    let blob = password_blob(&object);
    let ctx: HashMap<String, String> = ctx.clone().into_iter().collect();
    let (password, key_arn) =
        Kms::new(&aws, fs_id).decrypt(&blob, &ctx, key_hint.unwrap_or(""), key_hint.is_some())?;
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(damaged(
            "the decrypted password object is empty or too long",
        ));
    }
    Ok((password_master(&password, fs_id, kdf)?, key_arn))
}

/// Where the blob of a `kms` filesystem comes from at mount: `--wrapped-key` first, then the
/// S3 object the config names (so a central rewrap or revocation takes effect), then inline.
fn fetch_blob(
    aws: &Aws,
    args: &AwsKeyArgs,
    s3_uri: &Option<String>,
    inline: &str,
) -> Result<Vec<u8>, KeySourceError> {
    let uri = match (&args.wrapped_key, s3_uri) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(text)) => Some(S3Uri::parse(text).map_err(KeySourceError::Damaged)?),
        (None, None) => None,
    };
    match uri {
        Some(uri) => Ok(S3::new(aws).get(&uri)?),
        None => B64
            .decode(inline)
            .map_err(|_| damaged("the inline wrapped key is not base64")),
    }
}

/// Mount with `kms`: fetch the blob, Decrypt it under the fs-id context.
pub fn resolve_kms(
    args: &AwsKeyArgs,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
) -> Result<MasterKey, KeySourceError> {
    let KeySourceDescriptor::Kms {
        key_id,
        key_arn,
        wrapped_key,
        s3_uri,
        context: stored_ctx,
    } = stored
    else {
        return Err(damaged("not a kms descriptor"));
    };
    // `--kms-key` at mount pins the key: a blob made under any other key is refused.
    let pinned = args.kms_key.is_some();
    let label = args
        .kms_key
        .clone()
        .unwrap_or_else(|| key_label(key_id, key_arn));
    let aws = Aws::connect(args.timeout, arn_region(&label))?;
    let blob = fetch_blob(&aws, args, s3_uri, wrapped_key)?;
    let user_ctx = args.context.as_ref().unwrap_or(stored_ctx);
    let (plain, _) =
        Kms::new(&aws, fs_id).decrypt(&blob, &context(fs_id, user_ctx), &label, pinned)?;
    MasterKey::from_slice(&plain).ok_or_else(|| damaged("the KMS data key does not have 32 bytes"))
}

/// Mount with `kms-password`: the S3 object through Decrypt (no context unless given), then HKDF.
pub fn resolve_kms_password(
    args: &AwsKeyArgs,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
) -> Result<MasterKey, KeySourceError> {
    let KeySourceDescriptor::KmsPassword {
        s3_uri,
        context: stored_ctx,
        kdf,
        ..
    } = stored
    else {
        return Err(damaged("not a kms-password descriptor"));
    };
    let uri = match &args.wrapped_key {
        Some(u) => u.clone(),
        None => S3Uri::parse(s3_uri).map_err(KeySourceError::Damaged)?,
    };
    let ctx = args.context.as_ref().unwrap_or(stored_ctx);
    // The key to name comes from the caller (the user's --kms-key, or the pin's ARN that
    // `trusted_spec` put there), never from the descriptor, which may be the store's own.
    let hint = args.kms_key.as_deref();
    unlock_password(args, &uri, ctx, fs_id, hint, kdf.as_ref()).map(|(master, _)| master)
}

/// `rewrap`: ReEncrypt the blob to `new_key`, prove the new blob opens this filesystem
/// (`opens` checks the config MAC), then replace the S3 object. The caller rewrites the config
/// with the returned descriptor; until then the old blob still works, so no step loses the key.
pub fn rewrap(
    args: &AwsKeyArgs,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
    opens: &dyn Fn(&MasterKey) -> bool,
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let new_key = args
        .kms_key
        .as_deref()
        .ok_or(KeySourceError::KmsKeyMissing)?;
    let aws = Aws::connect(args.timeout, arn_region(new_key))?;
    let kms = Kms::new(&aws, fs_id);
    match stored {
        KeySourceDescriptor::Kms {
            key_id,
            key_arn,
            wrapped_key,
            s3_uri,
            context: user_ctx,
        } => {
            let ctx = context(fs_id, user_ctx);
            let old = fetch_blob(&aws, args, s3_uri, wrapped_key)?;
            let (plain, _) = kms.decrypt(&old, &ctx, &key_label(key_id, key_arn), true)?;
            let old_master =
                MasterKey::from_slice(&plain).ok_or_else(|| damaged("old data key length"))?;
            if !opens(&old_master) {
                return Err(KeySourceError::DoesNotOpen);
            }
            let new = kms.reencrypt(&old, &ctx, new_key)?;
            let (plain, _) = kms.decrypt(&new.blob, &ctx, &new.key_arn, true)?;
            let master =
                MasterKey::from_slice(&plain).ok_or_else(|| damaged("new data key length"))?;
            if !opens(&master) {
                return Err(KeySourceError::DoesNotOpen);
            }
            if let Some(uri) = s3_uri {
                let uri = S3Uri::parse(uri).map_err(KeySourceError::Damaged)?;
                S3::new(&aws).put(&uri, &new.blob, true)?;
            }
            Ok((
                master,
                KeySourceDescriptor::Kms {
                    key_id: new_key.to_string(),
                    key_arn: Some(new.key_arn),
                    wrapped_key: B64.encode(&new.blob),
                    s3_uri: s3_uri.clone(),
                    context: user_ctx.clone(),
                },
            ))
        }
        KeySourceDescriptor::KmsPassword {
            s3_uri,
            context: user_ctx,
            key_arn,
            kdf,
        } => {
            let uri = S3Uri::parse(s3_uri).map_err(KeySourceError::Damaged)?;
            let s3 = S3::new(&aws);
            let object = s3.get(&uri)?;
            let old = password_blob(&object);
            let ctx: HashMap<String, String> = user_ctx.clone().into_iter().collect();
            let (password, _) = kms.decrypt(
                &old,
                &ctx,
                key_arn.as_deref().unwrap_or(""),
                key_arn.is_some(),
            )?;
            if !opens(&password_master(&password, fs_id, kdf.as_ref())?) {
                return Err(KeySourceError::DoesNotOpen);
            }
            let new = kms.reencrypt(&old, &ctx, new_key)?;
            let (password, _) = kms.decrypt(&new.blob, &ctx, &new.key_arn, true)?;
            let master = password_master(&password, fs_id, kdf.as_ref())?;
            if !opens(&master) {
                return Err(KeySourceError::DoesNotOpen);
            }
            s3.put(&uri, &new.blob, true)?;
            Ok((
                master,
                KeySourceDescriptor::KmsPassword {
                    s3_uri: s3_uri.clone(),
                    context: user_ctx.clone(),
                    key_arn: Some(new.key_arn),
                    kdf: *kdf,
                },
            ))
        }
        other => Err(KeySourceError::Mismatch {
            created: other.kind(),
            given: "kms",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_always_carries_the_fs_id() {
        let user = parse_context("app=web,env=prod").unwrap();
        let ctx = context(&[1; 16], &user);
        assert_eq!(ctx.len(), 3);
        assert_eq!(ctx["app"], "web");
        assert_eq!(
            ctx[FS_ID_CONTEXT],
            uuid::Uuid::from_bytes([1; 16]).to_string()
        );
        assert!(parse_context("secretfs:fs-id=x").is_err());
        assert!(parse_context("novalue").is_err());
        assert!(parse_context("=v").is_err());
        assert!(parse_context("").unwrap().is_empty());
    }

    #[test]
    fn password_master_keys_use_argon2id_unless_the_filesystem_predates_it() {
        let legacy = password_master(b"hunter2", &[1; 16], None).unwrap();
        assert_eq!(
            legacy.expose(),
            password_to_master(b"hunter2", &[1; 16]).expose()
        );
        let hashed = password_master(b"hunter2", &[1; 16], Some(&PASSWORD_KDF)).unwrap();
        assert_ne!(hashed.expose(), legacy.expose());
        let again = password_master(b"hunter2", &[1; 16], Some(&PASSWORD_KDF)).unwrap();
        assert_eq!(hashed.expose(), again.expose());
        let greedy = PasswordKdf::Argon2id {
            m_cost_kib: u32::MAX,
            t_cost: 3,
            p_cost: 1,
        };
        assert!(password_master(b"hunter2", &[1; 16], Some(&greedy)).is_err());
    }

    #[test]
    fn keys_kms_answers_with_must_be_the_pinned_ones() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/abcd";
        assert!(same_key(arn, arn));
        assert!(!same_key(
            arn,
            "arn:aws:kms:eu-west-1:111122223333:key/evil"
        ));
        assert!(same_key("abcd", arn));
        assert!(!same_key(
            "abcd",
            "arn:aws:kms:eu-west-1:111122223333:key/xabcd"
        ));
        assert!(same_key("alias/secretfs", arn));
    }

    #[test]
    fn region_comes_from_arns_only() {
        assert_eq!(
            arn_region("arn:aws:kms:eu-west-1:111122223333:key/abcd"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("alias/secretfs"), None);
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }

    #[test]
    fn password_key_is_bound_to_the_fs() {
        let a = password_to_master(b"hunter2", &[1; 16]);
        let b = password_to_master(b"hunter2", &[1; 16]);
        let c = password_to_master(b"hunter2", &[2; 16]);
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }

    fn class_of(a: Attempt) -> &'static str {
        match a {
            Attempt::Fail(AwsError::KeyDisabled { .. }) => "disabled",
            Attempt::Fail(AwsError::KeyNotFound { .. }) => "not-found",
            Attempt::Fail(AwsError::WrongBlob { .. }) => "wrong-blob",
            Attempt::Fail(AwsError::AccessDenied { .. }) => "denied",
            Attempt::Retry(_) => "retry",
            Attempt::Fail(_) => "other",
        }
    }

    /// moto does not enforce key states, so the mapping of the modelled exceptions is checked
    /// here on the SDK's own error types.
    #[test]
    fn kms_exceptions_map_to_their_causes() {
        use aws_sdk_kms::types::error::*;
        let d = |e: DecryptError| class_of(kms_failure(&e, decrypt_kind(&e), "kms:Decrypt", "k"));
        assert_eq!(
            d(DecryptError::DisabledException(
                DisabledException::builder().build()
            )),
            "disabled"
        );
        assert_eq!(
            d(DecryptError::KmsInvalidStateException(
                KmsInvalidStateException::builder()
                    .message("pending deletion")
                    .build()
            )),
            "disabled"
        );
        assert_eq!(
            d(DecryptError::NotFoundException(
                NotFoundException::builder().build()
            )),
            "not-found"
        );
        assert_eq!(
            d(DecryptError::InvalidCiphertextException(
                InvalidCiphertextException::builder().build()
            )),
            "wrong-blob"
        );
        assert_eq!(
            d(DecryptError::IncorrectKeyException(
                IncorrectKeyException::builder().build()
            )),
            "wrong-blob"
        );
        assert_eq!(
            d(DecryptError::KeyUnavailableException(
                KeyUnavailableException::builder().build()
            )),
            "retry"
        );
        let denied = aws_sdk_kms::error::ErrorMetadata::builder()
            .code("AccessDeniedException")
            .message(
                "User: arn:aws:sts::1:assumed-role/r/i-1 is not authorized to perform: kms:Decrypt",
            )
            .build();
        let e = DecryptError::generic(denied);
        let a = kms_failure(&e, decrypt_kind(&e), "kms:Decrypt", "k");
        match a {
            Attempt::Fail(err @ AwsError::AccessDenied { .. }) => {
                let msg = err.to_string();
                assert!(
                    msg.contains("kms:Decrypt") && msg.contains("assumed-role/r"),
                    "{msg}"
                );
            }
            _ => panic!("not access denied"),
        }
        let g = |e: GenerateDataKeyError| {
            class_of(kms_failure(
                &e,
                generate_kind(&e),
                "kms:GenerateDataKey",
                "k",
            ))
        };
        assert_eq!(
            g(GenerateDataKeyError::DisabledException(
                DisabledException::builder().build()
            )),
            "disabled"
        );
        let r =
            |e: ReEncryptError| class_of(kms_failure(&e, reencrypt_kind(&e), "kms:ReEncrypt", "k"));
        assert_eq!(
            r(ReEncryptError::DisabledException(
                DisabledException::builder().build()
            )),
            "disabled"
        );
        assert_eq!(
            r(ReEncryptError::InvalidCiphertextException(
                InvalidCiphertextException::builder().build()
            )),
            "wrong-blob"
        );
    }

    #[test]
    fn password_objects_may_be_raw_or_base64() {
        let raw = vec![1u8, 2, 2, 0, 0xff, 0x80];
        assert_eq!(password_blob(&raw), raw);
        let text = format!("{}\n", B64.encode(&raw));
        assert_eq!(password_blob(text.as_bytes()), raw);
    }
}

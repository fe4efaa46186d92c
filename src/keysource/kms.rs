//! The `kms` and `kms-password` key sources: envelope encryption of the master key with AWS KMS
//! (GenerateDataKey / Decrypt / ReEncrypt bound to the fs id), and the classic recipe's password.
//!
//! Each flow (`*_with`) talks to KMS and S3 only through `Services`, so its rules (refuse before
//! minting, prove before replacing) are unit-tested on fakes; the public functions connect the SDK.

use super::aws::kms::Kms;
use super::aws::s3::S3;
use super::aws::{Aws, AwsError};
use super::services::{Context, S3Uri, Services};
use super::{AwsKeyArgs, KeySourceError};
use crate::crypto::keys::{MasterKey, LABEL_PASSWORD};
use crate::store::config::{KeySourceDescriptor, PasswordKdf};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::BTreeMap;

/// The encryption-context pair that binds a wrapped key to one filesystem: KMS refuses to
/// decrypt it under any other fs id, and IAM policies can grant access per filesystem.
pub const FS_ID_CONTEXT: &str = "secretfs:fs-id";

/// A password decrypted from an S3 object is at most this long (KMS Encrypt takes 4096 bytes).
const MAX_PASSWORD: usize = 4096;

/// The full encryption context: the fs id plus the user's pairs.
pub fn context(fs_id: &[u8; 16], user: &BTreeMap<String, String>) -> Context {
    let mut ctx: Context = user.clone().into_iter().collect();
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
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        // The region becomes part of an endpoint's host name: only a region's characters.
        (Some("arn"), Some(_), Some("kms"), Some(region))
            if !region.is_empty()
                && region.len() <= 64
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(region)
        }
        _ => None,
    }
}

/// The legacy derivation: the classic recipe's password through HKDF alone, bound to this
/// filesystem (an offline guess costs one HMAC: kept only for filesystems made before argon2id).
pub fn password_to_master(password: &[u8], fs_id: &[u8; 16]) -> MasterKey {
    let mut key = MasterKey::zeroed();
    crate::crypto::keys::HkdfPrk::extract(fs_id, password)
        .expand(&[LABEL_PASSWORD], key.expose_mut());
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

/// Connects the SDK for one command (the region from `region_key` when it is an ARN and the
/// chain finds none) and runs `flow` on its KMS and S3 clients.
fn with_sdk<T>(
    args: &AwsKeyArgs,
    region_key: Option<&str>,
    fs_id: &[u8; 16],
    flow: impl FnOnce(&Services) -> Result<T, KeySourceError>,
) -> Result<T, KeySourceError> {
    let placement = super::aws::Placement {
        region: args.region.clone(),
        endpoint: args.endpoint.clone(),
        slot: args.slot,
    };
    let aws = Aws::connect(args.timeout, region_key.and_then(arn_region), &placement)?;
    let (kms, s3) = (Kms::new(&aws, fs_id), S3::new(&aws));
    flow(&Services {
        kms: &kms,
        blobs: &s3,
    })
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
    with_sdk(args, Some(key_id), fs_id, |svc| {
        init_kms_with(svc, args, fs_id)
    })
}

pub fn init_kms_with(
    svc: &Services,
    args: &AwsKeyArgs,
    fs_id: &[u8; 16],
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let key_id = args
        .kms_key
        .as_deref()
        .ok_or(KeySourceError::KmsKeyMissing)?;
    let user_ctx = args.context.clone().unwrap_or_default();
    // Refuse an existing object before KMS mints a key that would then be thrown away.
    if let Some(uri) = &args.wrapped_key {
        if !args.force && svc.blobs.exists(uri)? {
            return Err(AwsError::ObjectExists {
                uri: uri.to_string(),
            }
            .into());
        }
    }
    let (master, wrapped) = svc.kms.generate(key_id, &context(fs_id, &user_ctx))?;
    if let Some(uri) = &args.wrapped_key {
        svc.blobs.put(uri, &wrapped.blob, args.force)?;
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
    if args.wrapped_key.is_none() {
        return Err(KeySourceError::WrappedKeyMissing);
    }
    with_sdk(args, args.kms_key.as_deref(), fs_id, |svc| {
        init_kms_password_with(svc, args, fs_id)
    })
}

pub fn init_kms_password_with(
    svc: &Services,
    args: &AwsKeyArgs,
    fs_id: &[u8; 16],
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let uri = args
        .wrapped_key
        .as_ref()
        .ok_or(KeySourceError::WrappedKeyMissing)?;
    let user_ctx = args.context.clone().unwrap_or_default();
    let (master, key_arn) = unlock_password(
        svc,
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
    svc: &Services,
    uri: &S3Uri,
    ctx: &BTreeMap<String, String>,
    fs_id: &[u8; 16],
    key_hint: Option<&str>,
    kdf: Option<&PasswordKdf>,
) -> Result<(MasterKey, String), KeySourceError> {
    let object = svc.blobs.get(uri)?;
    let blob = password_blob(&object);
    let ctx: Context = ctx.clone().into_iter().collect();
    let (password, key_arn) =
        svc.kms
            .decrypt(&blob, &ctx, key_hint.unwrap_or(""), key_hint.is_some())?;
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
    svc: &Services,
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
        Some(uri) => Ok(svc.blobs.get(&uri)?),
        None => B64
            .decode(inline)
            .map_err(|_| damaged("the inline wrapped key is not base64")),
    }
}

/// The key a `kms` mount names to KMS: the user's `--kms-key` (which then pins it), else the
/// key the config recorded.
fn mount_key(args: &AwsKeyArgs, key_id: &str, key_arn: &Option<String>) -> String {
    args.kms_key
        .clone()
        .unwrap_or_else(|| key_label(key_id, key_arn))
}

/// Mount with `kms`: fetch the blob, Decrypt it under the fs-id context.
pub fn resolve_kms(
    args: &AwsKeyArgs,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
) -> Result<MasterKey, KeySourceError> {
    let region_key = match stored {
        KeySourceDescriptor::Kms {
            key_id, key_arn, ..
        } => Some(mount_key(args, key_id, key_arn)),
        _ => args.kms_key.clone(),
    };
    with_sdk(args, region_key.as_deref(), fs_id, |svc| {
        resolve_kms_with(svc, args, stored, fs_id)
    })
}

pub fn resolve_kms_with(
    svc: &Services,
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
    let label = mount_key(args, key_id, key_arn);
    let blob = fetch_blob(svc, args, s3_uri, wrapped_key)?;
    let user_ctx = args.context.as_ref().unwrap_or(stored_ctx);
    let (plain, _) = svc
        .kms
        .decrypt(&blob, &context(fs_id, user_ctx), &label, pinned)?;
    MasterKey::from_slice(&plain).ok_or_else(|| damaged("the KMS data key does not have 32 bytes"))
}

/// Mount with `kms-password`: the S3 object through Decrypt (no context unless given), then HKDF.
pub fn resolve_kms_password(
    args: &AwsKeyArgs,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
) -> Result<MasterKey, KeySourceError> {
    with_sdk(args, args.kms_key.as_deref(), fs_id, |svc| {
        resolve_kms_password_with(svc, args, stored, fs_id)
    })
}

pub fn resolve_kms_password_with(
    svc: &Services,
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
    unlock_password(svc, &uri, ctx, fs_id, hint, kdf.as_ref()).map(|(master, _)| master)
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
    with_sdk(args, Some(new_key), fs_id, |svc| {
        rewrap_with(svc, args, stored, fs_id, opens)
    })
}

pub fn rewrap_with(
    svc: &Services,
    args: &AwsKeyArgs,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
    opens: &dyn Fn(&MasterKey) -> bool,
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let new_key = args
        .kms_key
        .as_deref()
        .ok_or(KeySourceError::KmsKeyMissing)?;
    let kms = svc.kms;
    match stored {
        KeySourceDescriptor::Kms {
            key_id,
            key_arn,
            wrapped_key,
            s3_uri,
            context: user_ctx,
        } => {
            let ctx = context(fs_id, user_ctx);
            let old = fetch_blob(svc, args, s3_uri, wrapped_key)?;
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
                svc.blobs.put(&uri, &new.blob, true)?;
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
            let object = svc.blobs.get(&uri)?;
            let old = password_blob(&object);
            let ctx: Context = user_ctx.clone().into_iter().collect();
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
            svc.blobs.put(&uri, &new.blob, true)?;
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
    fn an_arn_names_a_region_only_in_a_regions_characters() {
        assert_eq!(
            arn_region("arn:aws:kms:eu-west-1:1:key/k"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("alias/secretfs"), None);
        for bad in [
            "arn:aws:kms:evil.com/x:1:key/k",
            "arn:aws:kms::1:key/k",
            "arn:aws:kms:EU:1:key/k",
        ] {
            assert_eq!(arn_region(bad), None, "{bad}");
        }
    }

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
        // Frozen (HKDF-SHA256 by Python's hmac module): filesystems made before argon2id must
        // keep opening whatever implements HKDF here.
        let hex: String = a.expose().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "782b411c855484aa41a1c9b1e96d6529a6947daeb967f560c7402775b0e3847a"
        );
    }

    #[test]
    fn password_objects_may_be_raw_or_base64() {
        let raw = vec![1u8, 2, 2, 0, 0xff, 0x80];
        assert_eq!(password_blob(&raw), raw);
        let text = format!("{}\n", B64.encode(&raw));
        assert_eq!(password_blob(text.as_bytes()), raw);
    }

    /// The key flows on the fakes: every failure mode of init, mount and rewrap, and the rule
    /// that a rewrap replaces nothing before the new blob is proven to open the filesystem.
    mod flows {
        use super::super::*;
        use crate::keysource::aws::ErrorClass;
        use crate::keysource::fake::{denied, unreachable, FakeKms, FakeS3, Faulty};
        use crate::keysource::services::{BlobStore, KeyService, Services};
        use std::cell::Cell;

        const FS: [u8; 16] = [7; 16];

        fn uri() -> S3Uri {
            S3Uri::parse("s3://keys-bucket/fs/7.bin").unwrap()
        }

        fn args(kms_key: Option<&str>, s3: bool) -> AwsKeyArgs {
            AwsKeyArgs {
                kms_key: kms_key.map(str::to_string),
                wrapped_key: s3.then(uri),
                ..AwsKeyArgs::default()
            }
        }

        fn svc<'a>(kms: &'a dyn KeyService, blobs: &'a dyn BlobStore) -> Services<'a> {
            Services { kms, blobs }
        }

        fn aws_class(e: &KeySourceError) -> Option<ErrorClass> {
            match e {
                KeySourceError::Aws(a) => Some(a.class()),
                _ => None,
            }
        }

        /// A filesystem made with `init --key kms --kms-key k1 --wrapped-key s3://…`.
        fn made(kms: &dyn KeyService, s3: &dyn BlobStore) -> (MasterKey, KeySourceDescriptor) {
            init_kms_with(&svc(kms, s3), &args(Some("k1"), true), &FS).unwrap()
        }

        #[test]
        fn init_refuses_an_existing_object_before_kms_mints_a_key() {
            let (kms, s3) = (FakeKms::with_keys(&["k1"]), FakeS3::default());
            s3.set(&uri(), b"another filesystem's blob");
            let err = init_kms_with(&svc(&kms, &s3), &args(Some("k1"), true), &FS).err();
            assert!(matches!(
                err,
                Some(KeySourceError::Aws(AwsError::ObjectExists { .. }))
            ));
            assert!(kms.calls().is_empty(), "{:?}", kms.calls());
            assert_eq!(s3.object(&uri()).unwrap(), b"another filesystem's blob");

            let forced = AwsKeyArgs {
                force: true,
                ..args(Some("k1"), true)
            };
            let (master, desc) = init_kms_with(&svc(&kms, &s3), &forced, &FS).unwrap();
            assert_ne!(s3.object(&uri()).unwrap(), b"another filesystem's blob");
            let back = resolve_kms_with(&svc(&kms, &s3), &args(None, false), &desc, &FS).unwrap();
            assert_eq!(back.expose(), master.expose());
        }

        #[test]
        fn init_fails_whole_when_kms_or_s3_fails() {
            let s3 = FakeS3::default();
            let kms = Faulty::new(FakeKms::with_keys(&["k1"])).fail("GenerateDataKey", 0, denied);
            let err = init_kms_with(&svc(&kms, &s3), &args(Some("k1"), true), &FS).unwrap_err();
            assert_eq!(aws_class(&err), Some(ErrorClass::Permanent), "{err}");
            assert!(
                s3.object(&uri()).is_none(),
                "nothing stored for a key never made"
            );

            let kms = FakeKms::with_keys(&["k1"]);
            let s3 = Faulty::new(FakeS3::default()).fail("PutObject", 0, unreachable);
            let err = init_kms_with(&svc(&kms, &s3), &args(Some("k1"), true), &FS).unwrap_err();
            assert_eq!(aws_class(&err), Some(ErrorClass::Transient), "{err}");

            let err = init_kms_with(&svc(&kms, &s3), &args(Some("nope"), false), &FS).unwrap_err();
            assert!(
                matches!(err, KeySourceError::Aws(AwsError::KeyNotFound { .. })),
                "{err}"
            );
            let err = init_kms_with(&svc(&kms, &s3), &args(None, false), &FS).unwrap_err();
            assert!(matches!(err, KeySourceError::KmsKeyMissing));
        }

        #[test]
        fn mount_reads_the_s3_object_first_and_never_falls_back_to_the_inline_blob() {
            let (kms, s3) = (FakeKms::with_keys(&["k1"]), FakeS3::default());
            let (master, desc) = made(&kms, &s3);
            let back = resolve_kms_with(&svc(&kms, &s3), &args(None, false), &desc, &FS).unwrap();
            assert_eq!(back.expose(), master.expose());
            // Deleting the object is how an operator revokes a filesystem centrally.
            s3.remove(&uri());
            let err =
                resolve_kms_with(&svc(&kms, &s3), &args(None, false), &desc, &FS).unwrap_err();
            assert!(
                matches!(err, KeySourceError::Aws(AwsError::NoSuchKey { .. })),
                "{err}"
            );

            // Without an S3 object the config's inline blob is the only copy.
            let (master, desc) =
                init_kms_with(&svc(&kms, &s3), &args(Some("k1"), false), &FS).unwrap();
            let no_s3 = Faulty::new(FakeS3::default()).fail("GetObject", 0, denied);
            let back =
                resolve_kms_with(&svc(&kms, &no_s3), &args(None, false), &desc, &FS).unwrap();
            assert_eq!(back.expose(), master.expose());
        }

        #[test]
        fn mount_failures_keep_their_cause() {
            let (kms, s3) = (FakeKms::with_keys(&["k1", "k2"]), FakeS3::default());
            let (_, desc) = made(&kms, &s3);
            let mount = |kms: &dyn KeyService, a: &AwsKeyArgs| {
                resolve_kms_with(&svc(kms, &s3), a, &desc, &FS).unwrap_err()
            };
            // Another filesystem's id or another context: the blob is not this filesystem's.
            let other_fs = resolve_kms_with(&svc(&kms, &s3), &args(None, false), &desc, &[8; 16]);
            assert_eq!(
                aws_class(&other_fs.unwrap_err()),
                Some(ErrorClass::WrongKey)
            );
            let ctx = AwsKeyArgs {
                context: Some(parse_context("app=other").unwrap()),
                ..args(None, false)
            };
            assert_eq!(aws_class(&mount(&kms, &ctx)), Some(ErrorClass::WrongKey));
            // A pinned key refuses a blob made under any other key.
            assert_eq!(
                aws_class(&mount(&kms, &args(Some("k2"), false))),
                Some(ErrorClass::WrongKey)
            );
            let down = Faulty::new(FakeKms::with_keys(&["k1"])).fail("Decrypt", 0, unreachable);
            assert_eq!(
                aws_class(&mount(&down, &args(None, false))),
                Some(ErrorClass::Transient)
            );
            kms.disable("k1");
            let err = mount(&kms, &args(None, false));
            assert!(
                matches!(err, KeySourceError::Aws(AwsError::KeyDisabled { .. })),
                "{err}"
            );
            s3.set(&uri(), b"not a blob");
            kms.enable("k1");
            assert_eq!(
                aws_class(&mount(&kms, &args(None, false))),
                Some(ErrorClass::WrongKey)
            );
        }

        /// The object still holds the old blob, and the old config still opens the filesystem.
        fn untouched(
            kms: &FakeKms,
            s3: &FakeS3,
            old_blob: &[u8],
            desc: &KeySourceDescriptor,
            master: &MasterKey,
        ) {
            assert_eq!(
                s3.object(&uri()).unwrap(),
                old_blob,
                "the S3 object was replaced"
            );
            let back = resolve_kms_with(&svc(kms, s3), &args(None, false), desc, &FS).unwrap();
            assert_eq!(back.expose(), master.expose());
        }

        #[test]
        fn rewrap_replaces_nothing_until_the_new_blob_is_proven_to_open_the_filesystem() {
            let (kms, s3) = (FakeKms::with_keys(&["k1", "k2"]), FakeS3::default());
            let (master, desc) = made(&kms, &s3);
            let old_blob = s3.object(&uri()).unwrap();
            let to_k2 = args(Some("k2"), false);
            let opens = |m: &MasterKey| m.expose() == master.expose();

            // The given key does not open this filesystem: not even ReEncrypt is asked for.
            let err = rewrap_with(&svc(&kms, &s3), &to_k2, &desc, &FS, &|_| false).unwrap_err();
            assert!(matches!(err, KeySourceError::DoesNotOpen), "{err}");
            assert!(!kms.calls().iter().any(|c| c.starts_with("ReEncrypt")));
            untouched(&kms, &s3, &old_blob, &desc, &master);

            // ReEncrypt fails, or the new blob cannot be decrypted (second Decrypt).
            for (op, skip) in [("ReEncrypt", 0), ("Decrypt", 1)] {
                let faulty =
                    Faulty::new(FakeKms::with_keys(&["k1", "k2"])).fail(op, skip, unreachable);
                let err = rewrap_with(&svc(&faulty, &s3), &to_k2, &desc, &FS, &opens).unwrap_err();
                assert_eq!(aws_class(&err), Some(ErrorClass::Transient), "{op}: {err}");
                untouched(&kms, &s3, &old_blob, &desc, &master);
            }

            // The new blob decrypts but to a key that does not open the filesystem.
            let proofs = Cell::new(0);
            let second_fails = |m: &MasterKey| {
                proofs.set(proofs.get() + 1);
                proofs.get() == 1 && opens(m)
            };
            let err = rewrap_with(&svc(&kms, &s3), &to_k2, &desc, &FS, &second_fails).unwrap_err();
            assert!(matches!(err, KeySourceError::DoesNotOpen), "{err}");
            assert_eq!(proofs.get(), 2);
            untouched(&kms, &s3, &old_blob, &desc, &master);

            // The target key is disabled, or the object cannot be written.
            kms.disable("k2");
            let err = rewrap_with(&svc(&kms, &s3), &to_k2, &desc, &FS, &opens).unwrap_err();
            assert!(
                matches!(err, KeySourceError::Aws(AwsError::KeyDisabled { .. })),
                "{err}"
            );
            kms.enable("k2");
            let read_only = Faulty::new(FakeS3::default()).fail("PutObject", 0, denied);
            read_only.inner.set(&uri(), &old_blob);
            let err = rewrap_with(&svc(&kms, &read_only), &to_k2, &desc, &FS, &opens).unwrap_err();
            assert_eq!(aws_class(&err), Some(ErrorClass::Permanent), "{err}");
            untouched(&kms, &read_only.inner, &old_blob, &desc, &master);

            // Success: the object holds a blob under k2, and both the new config and the old
            // one (a crash before the config was rewritten) open the filesystem.
            let (same, new_desc) =
                rewrap_with(&svc(&kms, &s3), &to_k2, &desc, &FS, &opens).unwrap();
            assert_eq!(same.expose(), master.expose());
            let KeySourceDescriptor::Kms {
                key_id, key_arn, ..
            } = &new_desc
            else {
                panic!("not a kms descriptor: {new_desc:?}");
            };
            assert_eq!(
                (key_id.as_str(), key_arn.as_deref()),
                ("k2", Some(FakeKms::arn("k2").as_str()))
            );
            assert_ne!(s3.object(&uri()).unwrap(), old_blob);
            for d in [&new_desc, &desc] {
                let back = resolve_kms_with(&svc(&kms, &s3), &args(None, false), d, &FS).unwrap();
                assert_eq!(back.expose(), master.expose());
            }
            // The old key is no longer needed: disabling it locks nothing out.
            kms.disable("k1");
            let pinned = args(Some(&FakeKms::arn("k2")), false);
            resolve_kms_with(&svc(&kms, &s3), &pinned, &new_desc, &FS).unwrap();
        }

        #[test]
        fn kms_password_objects_are_adopted_resolved_and_rewrapped() {
            let (kms, s3) = (FakeKms::with_keys(&["k1", "k2"]), FakeS3::default());
            let object = kms.encrypt("k1", &Context::new(), b"classic recipe password");
            // As `aws kms encrypt --output text` writes it.
            s3.set(&uri(), format!("{}\n", B64.encode(&object)).as_bytes());
            let (master, desc) =
                init_kms_password_with(&svc(&kms, &s3), &args(None, true), &FS).unwrap();
            let back =
                resolve_kms_password_with(&svc(&kms, &s3), &args(None, false), &desc, &FS).unwrap();
            assert_eq!(back.expose(), master.expose());

            let opens = |m: &MasterKey| m.expose() == master.expose();
            let (_, new_desc) = rewrap_with(
                &svc(&kms, &s3),
                &args(Some("k2"), false),
                &desc,
                &FS,
                &opens,
            )
            .unwrap();
            kms.disable("k1");
            let back =
                resolve_kms_password_with(&svc(&kms, &s3), &args(None, false), &new_desc, &FS)
                    .unwrap();
            assert_eq!(back.expose(), master.expose());

            for bad in [&b""[..], &[b'x'; MAX_PASSWORD + 1][..]] {
                s3.set(&uri(), &kms.encrypt("k2", &Context::new(), bad));
                let err =
                    resolve_kms_password_with(&svc(&kms, &s3), &args(None, false), &new_desc, &FS)
                        .unwrap_err();
                assert!(matches!(err, KeySourceError::Damaged(_)), "{err}");
            }
            let err = init_kms_password_with(&svc(&kms, &s3), &args(None, false), &FS).unwrap_err();
            assert!(matches!(err, KeySourceError::WrappedKeyMissing));
        }
    }
}

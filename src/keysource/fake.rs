//! In-memory stand-ins for KMS and S3 for unit tests of the key flows, and a wrapper that makes
//! any operation of either fail on demand, so each failure path can be driven without a network.

use super::aws::kms::same_key;
use super::aws::AwsError;
use super::services::{BlobStore, Context, KeyService, S3Uri, Wrapped};
use crate::crypto::keys::MasterKey;
use std::cell::RefCell;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

const ARN_PREFIX: &str = "arn:aws:kms:eu-west-1:111122223333:key/";
const MAGIC: &[u8; 4] = b"FKMS";

/// A KMS with named keys that can be disabled. A blob records the key and the context it was
/// made under, so Decrypt refuses another context or (pinned) another key, as KMS does.
#[derive(Default)]
pub struct FakeKms {
    /// ARN → enabled.
    keys: RefCell<BTreeMap<String, bool>>,
    calls: RefCell<Vec<String>>,
}

impl FakeKms {
    pub fn with_keys(ids: &[&str]) -> Self {
        let kms = Self::default();
        for id in ids {
            kms.keys.borrow_mut().insert(Self::arn(id), true);
        }
        kms
    }

    pub fn arn(id: &str) -> String {
        format!("{ARN_PREFIX}{id}")
    }

    pub fn disable(&self, id: &str) {
        self.keys.borrow_mut().insert(Self::arn(id), false);
    }

    pub fn enable(&self, id: &str) {
        self.keys.borrow_mut().insert(Self::arn(id), true);
    }

    /// The operations called so far, in order (`Decrypt`, `ReEncrypt k2`, …).
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// What `aws kms encrypt` would produce: the classic recipe's password object.
    pub fn encrypt(&self, id: &str, ctx: &Context, plain: &[u8]) -> Vec<u8> {
        seal(&Self::arn(id), ctx, plain)
    }

    fn usable(&self, key: &str) -> Result<String, AwsError> {
        let arn = if key.starts_with("arn:") {
            key.to_string()
        } else {
            Self::arn(key)
        };
        match self.keys.borrow().get(&arn) {
            None => Err(AwsError::KeyNotFound { key: key.into() }),
            Some(false) => Err(AwsError::KeyDisabled {
                key: key.into(),
                detail: "DisabledException".into(),
            }),
            Some(true) => Ok(arn),
        }
    }

    fn open(
        &self,
        blob: &[u8],
        ctx: &Context,
        hint: &str,
        pin: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, String), AwsError> {
        let wrong = |detail: &str| AwsError::WrongBlob {
            key: String::new(),
            detail: detail.into(),
        };
        let (arn, made_ctx, plain) = unseal(blob).ok_or_else(|| wrong("InvalidCiphertext"))?;
        self.usable(&arn)?;
        if made_ctx != canonical(ctx) {
            return Err(wrong("InvalidCiphertext: context"));
        }
        if pin && !same_key(hint, &arn) {
            return Err(wrong("IncorrectKeyException"));
        }
        Ok((Zeroizing::new(plain), arn))
    }
}

impl KeyService for FakeKms {
    fn generate(&self, key_id: &str, ctx: &Context) -> Result<(MasterKey, Wrapped), AwsError> {
        self.calls
            .borrow_mut()
            .push(format!("GenerateDataKey {key_id}"));
        let key_arn = self.usable(key_id)?;
        let master = MasterKey::random();
        let blob = seal(&key_arn, ctx, master.expose());
        Ok((master, Wrapped { blob, key_arn }))
    }

    fn decrypt(
        &self,
        blob: &[u8],
        ctx: &Context,
        key_hint: &str,
        pin: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, String), AwsError> {
        self.calls.borrow_mut().push("Decrypt".into());
        self.open(blob, ctx, key_hint, pin)
    }

    fn reencrypt(&self, blob: &[u8], ctx: &Context, new_key: &str) -> Result<Wrapped, AwsError> {
        self.calls.borrow_mut().push(format!("ReEncrypt {new_key}"));
        let (plain, _) = self.open(blob, ctx, "", false)?;
        let key_arn = self.usable(new_key)?;
        Ok(Wrapped {
            blob: seal(&key_arn, ctx, &plain),
            key_arn,
        })
    }
}

fn canonical(ctx: &Context) -> String {
    let sorted: BTreeMap<_, _> = ctx.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v};"))
        .collect::<String>()
}

/// MAGIC ‖ len ‖ arn ‖ len ‖ context ‖ plaintext: a fake needs no secrecy, only the bindings.
fn seal(arn: &str, ctx: &Context, plain: &[u8]) -> Vec<u8> {
    let ctx = canonical(ctx);
    let mut blob = MAGIC.to_vec();
    for part in [arn.as_bytes(), ctx.as_bytes()] {
        blob.extend_from_slice(&(part.len() as u16).to_le_bytes());
        blob.extend_from_slice(part);
    }
    blob.extend_from_slice(plain);
    blob
}

fn unseal(blob: &[u8]) -> Option<(String, String, Vec<u8>)> {
    let mut rest = blob.strip_prefix(MAGIC)?;
    let mut parts = Vec::new();
    for _ in 0..2 {
        let len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        parts.push(String::from_utf8(rest.get(2..2 + len)?.to_vec()).ok()?);
        rest = &rest[2 + len..];
    }
    let ctx = parts.pop()?;
    let arn = parts.pop()?;
    Some((arn, ctx, rest.to_vec()))
}

/// An S3 bucket in memory: objects by URI, each put a new version.
#[derive(Default)]
pub struct FakeS3 {
    objects: RefCell<BTreeMap<String, Vec<u8>>>,
    versions: RefCell<u64>,
}

impl FakeS3 {
    pub fn object(&self, uri: &S3Uri) -> Option<Vec<u8>> {
        self.objects.borrow().get(&uri.to_string()).cloned()
    }

    pub fn set(&self, uri: &S3Uri, bytes: &[u8]) {
        self.objects
            .borrow_mut()
            .insert(uri.to_string(), bytes.to_vec());
    }

    pub fn remove(&self, uri: &S3Uri) {
        self.objects.borrow_mut().remove(&uri.to_string());
    }
}

impl BlobStore for FakeS3 {
    fn get(&self, uri: &S3Uri) -> Result<Vec<u8>, AwsError> {
        self.object(uri).ok_or_else(|| AwsError::NoSuchKey {
            uri: uri.to_string(),
        })
    }

    fn exists(&self, uri: &S3Uri) -> Result<bool, AwsError> {
        Ok(self.object(uri).is_some())
    }

    fn put(&self, uri: &S3Uri, blob: &[u8], overwrite: bool) -> Result<Option<String>, AwsError> {
        if !overwrite && self.object(uri).is_some() {
            return Err(AwsError::ObjectExists {
                uri: uri.to_string(),
            });
        }
        self.set(uri, blob);
        let mut v = self.versions.borrow_mut();
        *v += 1;
        Ok(Some(v.to_string()))
    }
}

struct Fault {
    op: &'static str,
    /// Calls of `op` that still succeed before it starts failing.
    skip: usize,
    error: fn() -> AwsError,
}

/// Wraps a fake so that an operation fails, after `skip` successful calls, with a chosen error;
/// once failing it keeps failing, as a key that was disabled or an endpoint that went down.
pub struct Faulty<T> {
    pub inner: T,
    faults: RefCell<Vec<Fault>>,
}

impl<T> Faulty<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            faults: RefCell::new(Vec::new()),
        }
    }

    /// `op` is the AWS operation: GenerateDataKey, Decrypt, ReEncrypt, GetObject, HeadObject,
    /// PutObject.
    pub fn fail(self, op: &'static str, skip: usize, error: fn() -> AwsError) -> Self {
        self.faults.borrow_mut().push(Fault { op, skip, error });
        self
    }

    fn check(&self, op: &str) -> Result<(), AwsError> {
        for fault in self.faults.borrow_mut().iter_mut().filter(|f| f.op == op) {
            if fault.skip == 0 {
                return Err((fault.error)());
            }
            fault.skip -= 1;
        }
        Ok(())
    }
}

impl<T: KeyService> KeyService for Faulty<T> {
    fn generate(&self, key_id: &str, ctx: &Context) -> Result<(MasterKey, Wrapped), AwsError> {
        self.check("GenerateDataKey")?;
        self.inner.generate(key_id, ctx)
    }

    fn decrypt(
        &self,
        blob: &[u8],
        ctx: &Context,
        key_hint: &str,
        pin: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, String), AwsError> {
        self.check("Decrypt")?;
        self.inner.decrypt(blob, ctx, key_hint, pin)
    }

    fn reencrypt(&self, blob: &[u8], ctx: &Context, new_key: &str) -> Result<Wrapped, AwsError> {
        self.check("ReEncrypt")?;
        self.inner.reencrypt(blob, ctx, new_key)
    }
}

impl<T: BlobStore> BlobStore for Faulty<T> {
    fn get(&self, uri: &S3Uri) -> Result<Vec<u8>, AwsError> {
        self.check("GetObject")?;
        self.inner.get(uri)
    }

    fn exists(&self, uri: &S3Uri) -> Result<bool, AwsError> {
        self.check("HeadObject")?;
        self.inner.exists(uri)
    }

    fn put(&self, uri: &S3Uri, blob: &[u8], overwrite: bool) -> Result<Option<String>, AwsError> {
        self.check("PutObject")?;
        self.inner.put(uri, blob, overwrite)
    }
}

/// An endpoint that does not answer before the deadline.
pub fn unreachable() -> AwsError {
    AwsError::Unreachable {
        service: "fake",
        endpoint: "http://192.0.2.1".into(),
        secs: 1,
        detail: "injected".into(),
    }
}

/// IAM says no.
pub fn denied() -> AwsError {
    AwsError::AccessDenied {
        action: "fake",
        resource: "fake".into(),
        detail: "injected".into(),
    }
}

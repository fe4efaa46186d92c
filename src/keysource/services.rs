//! The two outside services the KMS key sources depend on, as traits: a `KeyService` (KMS's
//! GenerateDataKey, Decrypt, ReEncrypt) and a `BlobStore` (S3's get, put, exists).
//!
//! The key flows in `kms.rs` are written against these traits only, so they run unchanged on
//! the SDK clients (`aws/`) in production and on the in-memory fakes (`fake.rs`) in unit tests.

use super::aws::AwsError;
use crate::crypto::keys::MasterKey;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// `s3://bucket/key`, checked at parse time so a typo fails before any network call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an S3 URI: expected s3://BUCKET/KEY");
        let rest = text.strip_prefix("s3://").ok_or_else(bad)?;
        let (bucket, key) = rest.split_once('/').ok_or_else(bad)?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok || key.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A KMS encryption context: the fs id plus the user's pairs.
pub type Context = HashMap<String, String>;

/// The result of a KMS call that produced or consumed a wrapped key.
pub struct Wrapped {
    pub blob: Vec<u8>,
    pub key_arn: String,
}

/// The KMS operations of envelope encryption. Every implementation must refuse a blob whose
/// context differs from the one it was made under, and, with `pin`, one made under another key.
pub trait KeyService {
    /// GenerateDataKey(AES_256): a new master key and its blob wrapped under `key_id`.
    fn generate(&self, key_id: &str, ctx: &Context) -> Result<(MasterKey, Wrapped), AwsError>;

    /// Decrypt: the plaintext in a buffer wiped on drop, and the key ARN that made the blob.
    /// With `pin`, the service must use `key_hint` and refuse a blob made under any other key.
    fn decrypt(
        &self,
        blob: &[u8],
        ctx: &Context,
        key_hint: &str,
        pin: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, String), AwsError>;

    /// ReEncrypt under `new_key`, same context, without the plaintext leaving the service.
    fn reencrypt(&self, blob: &[u8], ctx: &Context, new_key: &str) -> Result<Wrapped, AwsError>;
}

/// Where a wrapped blob is kept outside the backing store (an S3 object).
pub trait BlobStore {
    /// The object's bytes; `NoSuchKey`/`NoSuchBucket` when it is not there.
    fn get(&self, uri: &S3Uri) -> Result<Vec<u8>, AwsError>;

    fn exists(&self, uri: &S3Uri) -> Result<bool, AwsError>;

    /// Stores `blob`; without `overwrite`, an existing object is refused (`ObjectExists`).
    /// Returns the new object version when the store keeps versions.
    fn put(&self, uri: &S3Uri, blob: &[u8], overwrite: bool) -> Result<Option<String>, AwsError>;
}

/// The services one command talks to.
pub struct Services<'a> {
    pub kms: &'a dyn KeyService,
    pub blobs: &'a dyn BlobStore,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_uris() {
        let u = S3Uri::parse("s3://my-bucket/keys/fs1.bin").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.key, "keys/fs1.bin");
        assert_eq!(u.to_string(), "s3://my-bucket/keys/fs1.bin");
        for bad in [
            "my-bucket/key",
            "s3://my-bucket",
            "s3://my-bucket/",
            "s3:///key",
            "s3://My_Bucket/key",
            "https://b/k",
        ] {
            assert!(S3Uri::parse(bad).is_err(), "{bad}");
        }
    }
}

//! The S3 client on the AWS SDK: the one object holding a wrapped key blob, read at mount, written
//! at init (never over an existing object unless forced) and replaced by rewrap.

use super::{split_sdk_error, Attempt, Aws, AwsError};
use crate::keysource::services::{BlobStore, S3Uri};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;

/// A wrapped key is tens to hundreds of bytes; a much larger object is not one of ours and
/// must not be read into memory whole.
const MAX_BLOB: u64 = 64 * 1024;

pub struct S3<'a> {
    aws: &'a Aws,
    client: aws_sdk_s3::Client,
    endpoint: String,
}

impl<'a> S3<'a> {
    pub fn new(aws: &'a Aws) -> Self {
        let mut conf = aws_sdk_s3::config::Builder::from(&aws.sdk);
        if aws.endpoint_overridden("S3") {
            conf = conf.force_path_style(true);
        }
        Self {
            aws,
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            endpoint: aws.endpoint("S3"),
        }
    }

    fn secs(&self) -> u64 {
        self.aws.timeout_secs()
    }

    /// Maps S3's error codes that have no modelled variant on the operation at hand.
    fn common(
        &self,
        code: Option<&str>,
        action: &'static str,
        uri: &S3Uri,
        detail: String,
    ) -> AwsError {
        match code {
            Some("NoSuchBucket") => AwsError::NoSuchBucket {
                bucket: uri.bucket.clone(),
            },
            Some("NoSuchKey") => AwsError::NoSuchKey {
                uri: uri.to_string(),
            },
            Some("AccessDenied") | Some("Forbidden") => AwsError::AccessDenied {
                action,
                resource: uri.to_string(),
                detail,
            },
            _ => AwsError::Other {
                service: "S3",
                action,
                detail,
            },
        }
    }
}

impl BlobStore for S3<'_> {
    /// Reads the blob; the object is ciphertext, so no zeroizing is needed for it.
    fn get(&self, uri: &S3Uri) -> Result<Vec<u8>, AwsError> {
        let secs = self.secs();
        self.aws.call("S3", self.endpoint.clone(), || async move {
            let out = self
                .client
                .get_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    let e = split_sdk_error(e, "S3", "s3:GetObject", &self.endpoint, secs)?;
                    let detail = describe(&e);
                    return Err(Attempt::Fail(match e {
                        GetObjectError::NoSuchKey(_) => AwsError::NoSuchKey {
                            uri: uri.to_string(),
                        },
                        other => self.common(other.code(), "s3:GetObject", uri, detail),
                    }));
                }
            };
            if out.content_length().unwrap_or(0) as u64 > MAX_BLOB {
                return Err(Attempt::Fail(AwsError::Other {
                    service: "S3",
                    action: "s3:GetObject",
                    detail: format!(
                        "{uri} is larger than {MAX_BLOB} bytes, so it is not a wrapped key"
                    ),
                }));
            }
            let body = out.body.collect().await.map_err(|e| {
                Attempt::Retry(AwsError::Unreachable {
                    service: "S3",
                    endpoint: self.endpoint.clone(),
                    secs,
                    detail: format!("reading the object body: {e}"),
                })
            })?;
            Ok(body.into_bytes().to_vec())
        })
    }

    /// Whether the object exists (HeadObject's 404 is modelled as `NotFound`).
    fn exists(&self, uri: &S3Uri) -> Result<bool, AwsError> {
        let secs = self.secs();
        self.aws.call("S3", self.endpoint.clone(), || async move {
            match self
                .client
                .head_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) => {
                    let e = split_sdk_error(e, "S3", "s3:GetObject", &self.endpoint, secs)?;
                    let detail = describe(&e);
                    match e {
                        HeadObjectError::NotFound(_) => Ok(false),
                        other => Err(Attempt::Fail(self.common(
                            other.code(),
                            "s3:GetObject",
                            uri,
                            detail,
                        ))),
                    }
                }
            }
        })
    }

    /// Stores the blob encrypted at rest with SSE-KMS (the account's S3 key, so reading the
    /// object needs no extra grant on the filesystem's KMS key). Without `overwrite`, a
    /// conditional write makes the refusal race-free where S3 supports it.
    fn put(&self, uri: &S3Uri, blob: &[u8], overwrite: bool) -> Result<Option<String>, AwsError> {
        if !overwrite && self.exists(uri)? {
            return Err(AwsError::ObjectExists {
                uri: uri.to_string(),
            });
        }
        let secs = self.secs();
        self.aws.call("S3", self.endpoint.clone(), || async move {
            let mut req = self
                .client
                .put_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .content_type("application/octet-stream")
                .body(ByteStream::from(blob.to_vec()));
            if !overwrite {
                req = req.if_none_match("*");
            }
            match req.send().await {
                Ok(out) => {
                    Ok(aws_sdk_s3::operation::RequestId::request_id(&out).map(str::to_string))
                }
                Err(e) => {
                    let e = split_sdk_error(e, "S3", "s3:PutObject", &self.endpoint, secs)?;
                    let detail = describe(&e);
                    Err(Attempt::Fail(match e.code() {
                        Some("PreconditionFailed") => AwsError::ObjectExists {
                            uri: uri.to_string(),
                        },
                        code => self.common(code, "s3:PutObject", uri, detail),
                    }))
                }
            }
        })
    }
}

/// "Code: message" of a service error, without the SDK's generic wrapper text.
fn describe<E: ProvideErrorMetadata + std::fmt::Display>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => e.to_string(),
    }
}

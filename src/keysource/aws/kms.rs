//! The KMS client on the AWS SDK: GenerateDataKey, Decrypt and ReEncrypt with bounded retries,
//! each failure mapped to its cause and every call audited with its request id.

use super::{split_sdk_error, Attempt, Aws, AwsError};
use crate::audit;
use crate::crypto::keys::{MasterKey, KEY_LEN};
use crate::keysource::services::{Context, KeyService, Wrapped};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError;
use aws_sdk_kms::operation::re_encrypt::ReEncryptError;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_runtime_api::client::result::SdkError;
use zeroize::Zeroizing;

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
            Ok((_, rid)) => {
                audit::kms_call(&self.fs_id, self.aws.slot, op, key, rid.as_deref(), "ok")
            }
            Err(e) => {
                let rid = self.failed_rid.borrow_mut().take();
                let outcome = e.to_string();
                audit::kms_call(
                    &self.fs_id,
                    self.aws.slot,
                    op,
                    key,
                    rid.as_deref(),
                    &outcome,
                )
            }
        }
    }

    /// The one way every KMS call fails: transport and credential errors as `split_sdk_error`
    /// classifies them, service errors by their modelled kind, with the request id kept for
    /// the audit event.
    fn failure<E, R>(
        &self,
        err: SdkError<E, R>,
        action: &'static str,
        kind: fn(&E) -> Kind,
        key: &str,
    ) -> Attempt
    where
        E: ProvideErrorMetadata + RequestId + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + 'static,
    {
        let secs = self.aws.timeout_secs();
        match split_sdk_error(err, "KMS", action, &self.endpoint, secs) {
            Err(attempt) => attempt,
            Ok(e) => {
                *self.failed_rid.borrow_mut() = e.request_id().map(str::to_string);
                kms_failure(&e, kind(&e), action, key)
            }
        }
    }
}

impl KeyService for Kms<'_> {
    /// GenerateDataKey(AES_256): the plaintext goes straight into an mlocked `MasterKey`.
    fn generate(&self, key_id: &str, ctx: &Context) -> Result<(MasterKey, Wrapped), AwsError> {
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
                    return Err(self.failure(e, "kms:GenerateDataKey", generate_kind, key_id))
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
    fn decrypt(
        &self,
        blob: &[u8],
        ctx: &Context,
        key_hint: &str,
        pin: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, String), AwsError> {
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
                Err(e) => return Err(self.failure(e, "kms:Decrypt", decrypt_kind, key_hint)),
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
    fn reencrypt(&self, blob: &[u8], ctx: &Context, new_key: &str) -> Result<Wrapped, AwsError> {
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
                Err(e) => return Err(self.failure(e, "kms:ReEncrypt", reencrypt_kind, new_key)),
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
pub(crate) fn same_key(asked: &str, used: &str) -> bool {
    if asked.starts_with("arn:") && asked.contains(":key/") {
        asked == used
    } else if asked.starts_with("alias/") || asked.contains(":alias/") {
        true
    } else {
        used == asked || used.ends_with(&format!(":key/{asked}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

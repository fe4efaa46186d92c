//! The AWS SDK side of the key sources: a private tokio runtime, the SDK's default credential,
//! region and endpoint chain, retries bounded by one deadline, typed errors; the KMS and S3 clients.

pub mod kms;
pub mod s3;

use aws_smithy_runtime_api::client::result::SdkError;
use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant};

/// Default overall deadline for every AWS call of one command: generous, because on a fresh
/// instance the network and the instance role often appear some seconds after boot.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Backoff between attempts after a transient failure (unreachable endpoint, throttling).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why an AWS call failed, phrased for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS credentials found (environment, profile, web identity, container or EC2 instance role){detail}; attach an IAM role to the instance or set AWS_PROFILE")]
    NoCredentials { detail: String },
    #[error("no AWS region is configured; set AWS_REGION or give --kms-key as a full key ARN")]
    NoRegion,
    #[error("no trusted CA certificates found on this host{detail}, so no TLS connection to AWS can be verified; install the ca-certificates package (or set SSL_CERT_FILE to a CA bundle)")]
    NoTrustRoots { detail: String },
    #[error("AWS denied {action} on {resource} ({detail}); grant it to the caller's IAM role and key policy (README, \"On EC2\")")]
    AccessDenied {
        action: &'static str,
        resource: String,
        detail: String,
    },
    #[error(
        "KMS key {key} does not exist in this account and region; check --kms-key and AWS_REGION"
    )]
    KeyNotFound { key: String },
    #[error("KMS key {key} is disabled or pending deletion ({detail}); re-enable it with `aws kms enable-key` or `aws kms cancel-key-deletion`")]
    KeyDisabled { key: String, detail: String },
    #[error("KMS cannot decrypt the wrapped key{key}: it was made for another filesystem, another encryption context or another KMS key ({detail}); use the blob and --context this filesystem was created with")]
    WrongBlob { key: String, detail: String },
    #[error(
        "S3 bucket {bucket} does not exist; check the bucket name in --wrapped-key and AWS_REGION"
    )]
    NoSuchBucket { bucket: String },
    #[error("S3 object {uri} does not exist; restore it or point --wrapped-key at the object made by `secretfs init`")]
    NoSuchKey { uri: String },
    #[error("S3 object {uri} already exists; refusing to overwrite a wrapped key that may protect another filesystem (pass --force to replace it)")]
    ObjectExists { uri: String },
    #[error("cannot reach AWS {service} at {endpoint} within {secs} s ({detail}); check the network, AWS_ENDPOINT_URL and security groups, or raise --aws-timeout")]
    Unreachable {
        service: &'static str,
        endpoint: String,
        secs: u64,
        detail: String,
    },
    #[error("AWS {service} {action} failed: {detail}; see the AWS documentation for this error")]
    Other {
        service: &'static str,
        action: &'static str,
        detail: String,
    },
}

/// What a caller can do about an error: the CLI turns this into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying later may help (network, throttling, deadline).
    Transient,
    /// The blob is intact but does not belong here: the key does not open this filesystem.
    WrongKey,
    /// A configuration or permission problem that needs a person.
    Permanent,
}

impl AwsError {
    /// The cause alone, to be quoted inside another message.
    fn detail(&self) -> String {
        match self {
            AwsError::Unreachable { detail, .. } | AwsError::Other { detail, .. } => detail.clone(),
            other => other.to_string(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            AwsError::Unreachable { .. } => ErrorClass::Transient,
            AwsError::WrongBlob { .. } => ErrorClass::WrongKey,
            _ => ErrorClass::Permanent,
        }
    }
}

/// One attempt's failure before it is turned into an `AwsError`: transient ones are retried.
pub(crate) enum Attempt {
    Retry(AwsError),
    Fail(AwsError),
}

/// Where one key slot's AWS calls go: its own region and endpoint when it has them (a second
/// region's slot), and the slot named in the audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub slot: Option<u32>,
}

/// The SDK verifies AWS's TLS certificates against the host's CA store (rustls-native-certs:
/// SSL_CERT_FILE/SSL_CERT_DIR, else the distribution's bundle). With none every HTTPS call
/// would fail with an unknown-issuer error, so say what is missing first. KMS and S3 reached
/// over plain HTTP (a slot's or AWS_ENDPOINT_URL's `http://` endpoint: an emulator, a local
/// forwarder) need no CA store and are let through, as before (a debug build's SDK still
/// asserts there is one).
fn require_trust_roots(placement: &Placement) -> Result<(), AwsError> {
    let endpoint = placement
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        return Ok(());
    }
    let found = rustls_native_certs::load_native_certs();
    if !found.certs.is_empty() {
        return Ok(());
    }
    let detail = match found.errors.first() {
        Some(e) => format!(" ({e})"),
        None => String::new(),
    };
    Err(AwsError::NoTrustRoots { detail })
}

/// A runtime, an SDK config and a deadline for one command's AWS calls. Built only in the
/// process that needs it (the mount daemon builds it after forking, never before).
pub struct Aws {
    rt: tokio::runtime::Runtime,
    pub(crate) sdk: aws_types::SdkConfig,
    deadline: Instant,
    timeout: Duration,
    /// The last transient failure, so a deadline names what kept failing.
    last: RefCell<Option<AwsError>>,
    /// The slot's own endpoint, which wins over the environment's.
    endpoint: Option<String>,
    pub(crate) slot: Option<u32>,
}

impl Aws {
    /// Loads the default chain. `region_hint` (from a key ARN) is used only when the chain
    /// finds no region, so an ARN alone is enough on a host without AWS configuration; a
    /// slot's own region and endpoint win over both.
    pub fn connect(
        timeout: Duration,
        region_hint: Option<&str>,
        placement: &Placement,
    ) -> Result<Self, AwsError> {
        let deadline = Instant::now() + timeout;
        require_trust_roots(placement)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AwsError::Other {
                service: "SDK",
                action: "start",
                detail: format!("cannot start the async runtime: {e}"),
            })?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .operation_attempt_timeout(timeout.min(Duration::from_secs(20)))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
        #[cfg(feature = "fips")]
        {
            // rustls' `fips` feature already drops the unapproved suites and groups
            // (ChaCha20-Poly1305, X25519); asking for the FIPS mode by name also makes the SDK
            // assert that the provider runs on the FIPS module, instead of trusting feature
            // unification. The credential providers (IMDS, STS, SSO) use this client too.
            use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
            loader = loader.http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::AwsLcFips))
                    .build_https(),
            );
        }
        if let Some(region) = &placement.region {
            loader = loader.region(aws_types::region::Region::new(region.clone()));
        }
        if let Some(endpoint) = &placement.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let loaded = rt.block_on(async { tokio::time::timeout(timeout, loader.load()).await });
        let mut sdk = loaded.map_err(|_| AwsError::Unreachable {
            service: "configuration",
            endpoint: "the instance metadata service".into(),
            secs: whole_secs(timeout),
            detail: "loading the region and credentials chain timed out".into(),
        })?;
        if sdk.region().is_none() {
            let Some(region) = region_hint else {
                return Err(AwsError::NoRegion);
            };
            sdk = sdk
                .into_builder()
                .region(aws_types::region::Region::new(region.to_string()))
                .build();
        }
        Ok(Self {
            rt,
            sdk,
            deadline,
            timeout,
            last: RefCell::new(None),
            endpoint: placement.endpoint.clone(),
            slot: placement.slot,
        })
    }

    /// The deadline in whole seconds, rounded up: a slot's share (what was left of the
    /// command's deadline, e.g. 2.9 s of `--aws-timeout 3`) is not reported as 2 s.
    pub fn timeout_secs(&self) -> u64 {
        whole_secs(self.timeout)
    }

    pub fn region(&self) -> String {
        self.sdk
            .region()
            .map_or_else(|| "?".into(), |r| r.as_ref().to_string())
    }

    /// The endpoint a service is reached at, for error messages.
    pub fn endpoint(&self, env_suffix: &str) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var(format!("AWS_ENDPOINT_URL_{env_suffix}")).ok())
            .or_else(|| self.sdk.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| format!("the default {} endpoint", self.region()))
    }

    /// Whether a custom endpoint is in force (an emulator, a VPC endpoint): S3 then needs
    /// path-style addressing because the bucket cannot be a DNS label of an IP address.
    pub fn endpoint_overridden(&self, env_suffix: &str) -> bool {
        self.endpoint.is_some()
            || std::env::var_os(format!("AWS_ENDPOINT_URL_{env_suffix}")).is_some()
            || self.sdk.endpoint_url().is_some()
    }

    /// Runs `attempt` until it succeeds, fails for good, or the deadline passes; transient
    /// failures back off exponentially so a late network at boot is waited for, not hammered.
    pub(crate) fn call<T, F, Fut>(
        &self,
        service: &'static str,
        endpoint: String,
        mut attempt: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let looped = async {
            let mut backoff = FIRST_BACKOFF;
            loop {
                match attempt().await {
                    Ok(v) => return Ok(v),
                    Err(Attempt::Fail(e)) => return Err(e),
                    Err(Attempt::Retry(e)) => {
                        if Instant::now() + backoff >= self.deadline {
                            return Err(e);
                        }
                        *self.last.borrow_mut() = Some(e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        };
        let result = self
            .rt
            .block_on(async { tokio::time::timeout_at(deadline, looped).await });
        let last = self.last.borrow_mut().take();
        match (result, last) {
            (Ok(r), _) => r,
            // Still no credentials at the deadline: say so, not "unreachable".
            (Err(_), Some(e @ AwsError::NoCredentials { .. })) => Err(e),
            (Err(_), last) => Err(AwsError::Unreachable {
                service,
                endpoint,
                secs: self.timeout_secs(),
                detail: last.map_or_else(|| "no answer before the deadline".into(), |e| e.detail()),
            }),
        }
    }
}

/// Maps what is common to every SDK failure that is not a modelled service error: missing
/// credentials, connection problems and timeouts. `Ok(service_error)` is left to the caller.
pub(crate) fn split_sdk_error<E, R>(
    err: SdkError<E, R>,
    service: &'static str,
    action: &'static str,
    endpoint: &str,
    secs: u64,
) -> Result<E, Attempt>
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + 'static,
{
    if let Some(cred) = find_source::<aws_credential_types::provider::error::CredentialsError>(&err)
    {
        use aws_credential_types::provider::error::CredentialsError as C;
        let detail = match cred {
            C::CredentialsNotLoaded(_) => String::new(),
            other => format!(": {}", chain(other)),
        };
        let e = AwsError::NoCredentials { detail };
        // On EC2 the instance role can appear a little after boot: keep asking until the
        // deadline unless the metadata service is switched off, where waiting cannot help.
        return Err(if imds_enabled() {
            Attempt::Retry(e)
        } else {
            Attempt::Fail(e)
        });
    }
    match err {
        SdkError::ServiceError(se) => Ok(se.into_err()),
        SdkError::TimeoutError(_) => Err(Attempt::Retry(unreachable(
            service,
            endpoint,
            secs,
            "timed out".into(),
        ))),
        SdkError::DispatchFailure(df) => {
            let detail = match df.as_connector_error() {
                Some(c) if c.is_timeout() => "timed out".to_string(),
                Some(c) => chain(c),
                None => "request could not be sent".to_string(),
            };
            Err(Attempt::Retry(unreachable(service, endpoint, secs, detail)))
        }
        other => Err(Attempt::Fail(AwsError::Other {
            service,
            action,
            detail: chain(&other),
        })),
    }
}

fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn unreachable(service: &'static str, endpoint: &str, secs: u64, detail: String) -> AwsError {
    AwsError::Unreachable {
        service,
        endpoint: endpoint.to_string(),
        secs,
        detail,
    }
}

fn imds_enabled() -> bool {
    !std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The first error of type `T` in a source chain.
fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// An error and its causes on one line: the SDK's top-level messages ("dispatch failure")
/// say little on their own.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_reported_in_whole_seconds_rounded_up() {
        assert_eq!(whole_secs(Duration::from_millis(2_900)), 3);
        assert_eq!(whole_secs(Duration::from_secs(3)), 3);
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::ZERO), 0);
    }

    #[test]
    fn classes() {
        let u = AwsError::Unreachable {
            service: "KMS",
            endpoint: "x".into(),
            secs: 1,
            detail: "refused".into(),
        };
        assert_eq!(u.class(), ErrorClass::Transient);
        let w = AwsError::WrongBlob {
            key: String::new(),
            detail: String::new(),
        };
        assert_eq!(w.class(), ErrorClass::WrongKey);
        assert_eq!(AwsError::NoRegion.class(), ErrorClass::Permanent);
    }

    #[test]
    fn chain_skips_repeated_messages() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(chain(&io), "refused");
    }
}

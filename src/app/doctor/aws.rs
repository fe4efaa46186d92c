//! doctor's AWS checks: where the credentials come from (never what they are), whether each KMS
//! key and S3 object answers a dry call, the clock against KMS's Date header, the IMDSv2 hop limit.
//!
//! DescribeKey is the one KMS call here the key sources never make, so its client lives beside
//! the check rather than in keysource/aws/ (which has no read-only call to offer).

use super::{Check, Status, Target, TargetKind};
use crate::keysource::aws::s3::S3;
use crate::keysource::aws::{chain, split_sdk_error, Attempt, Aws, AwsError, Placement};
use crate::keysource::services::{BlobStore, S3Uri};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::describe_key::DescribeKeyError;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the SDK's default chain finds credentials, in the chain's own order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CredSource {
    Environment,
    Profile { name: String, file: String },
    WebIdentity,
    Container,
    Imds,
}

impl std::fmt::Display for CredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredSource::Environment => write!(f, "the environment (AWS_ACCESS_KEY_ID)"),
            CredSource::Profile { name, file } => write!(f, "profile `{name}` in {file}"),
            CredSource::WebIdentity => write!(f, "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)"),
            CredSource::Container => write!(f, "the container credentials endpoint"),
            CredSource::Imds => write!(f, "the EC2 instance role (IMDS)"),
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn imds_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The first link of the chain that has something to offer; the SDK then confirms it.
fn guess_source() -> Option<CredSource> {
    if env_set("AWS_ACCESS_KEY_ID") {
        return Some(CredSource::Environment);
    }
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var("HOME").unwrap_or_default();
    for (var, default, headers) in [
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            ".aws/credentials",
            vec![format!("[{profile}]")],
        ),
        (
            "AWS_CONFIG_FILE",
            ".aws/config",
            vec![format!("[profile {profile}]"), format!("[{profile}]")],
        ),
    ] {
        let file = std::env::var(var).unwrap_or_else(|_| format!("{home}/{default}"));
        let has = std::fs::read_to_string(&file)
            .is_ok_and(|t| t.lines().any(|l| headers.iter().any(|h| l.trim() == h)));
        if has {
            return Some(CredSource::Profile {
                name: profile,
                file,
            });
        }
    }
    if env_set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        return Some(CredSource::WebIdentity);
    }
    if env_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || env_set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    {
        return Some(CredSource::Container);
    }
    (!imds_disabled()).then_some(CredSource::Imds)
}

/// Resolves credentials through the SDK's chain, as a mount would; says where from, and how
/// long temporary ones last, never the keys. Missing credentials fail only when something
/// configured here needs AWS.
pub(super) fn credentials(timeout: Duration, needed: bool) -> (Check, Option<CredSource>) {
    const NAME: &str = "aws credentials";
    let source = guess_source();
    let missing = if needed { Status::Fail } else { Status::Warn };
    let fix = "attach an IAM role to the instance (IMDSv2), or set AWS_PROFILE or AWS_ACCESS_KEY_ID for the user that mounts (root)";
    // Resolving credentials needs no region; the hint only keeps connect from refusing.
    let aws = match Aws::connect(timeout, Some("us-east-1"), &Placement::default()) {
        Ok(a) => a,
        Err(e) => {
            let fix = connect_fix(&e, fix);
            return (Check::bad(missing, NAME, e.to_string(), fix), None);
        }
    };
    let Some(provider) = aws.sdk.credentials_provider() else {
        return (
            Check::bad(missing, NAME, "the SDK has no credential chain", fix),
            None,
        );
    };
    let resolved = aws.call("credentials", "the credential chain".into(), || {
        let provider = provider.clone();
        async move {
            use aws_credential_types::provider::ProvideCredentials;
            provider.provide_credentials().await.map_err(|e| {
                use aws_credential_types::provider::error::CredentialsError as C;
                let detail = match &e {
                    C::CredentialsNotLoaded(_) => String::new(),
                    other => format!(": {}", chain(other)),
                };
                Attempt::Fail(AwsError::NoCredentials { detail })
            })
        }
    });
    match resolved {
        Ok(creds) => {
            let from = source
                .as_ref()
                .map_or_else(|| "the SDK's chain".to_string(), |s| s.to_string());
            let lasting = creds
                .expiry()
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .map(|d| format!(", temporary, valid {} more min", d.as_secs() / 60))
                .unwrap_or_default();
            let note = if needed {
                ""
            } else {
                " (nothing configured here uses AWS)"
            };
            (
                Check::ok(NAME, format!("found in {from}{lasting}{note}")),
                source,
            )
        }
        Err(e) => {
            let looked = if imds_disabled() {
                "environment, profile, web identity, container; IMDS disabled by AWS_EC2_METADATA_DISABLED"
            } else {
                "environment, profile, web identity, container, IMDS"
            };
            let why = if needed {
                String::new()
            } else {
                " (nothing configured here uses AWS)".into()
            };
            (
                Check::bad(
                    missing,
                    NAME,
                    format!("none found (looked in: {looked}){why}: {e}"),
                    fix,
                ),
                None,
            )
        }
    }
}

/// Keeps the Date header of the last answer KMS gave and when it arrived, for the clock check.
#[derive(Debug, Clone, Default)]
struct DateHeader(Arc<parking_lot::Mutex<Option<(String, SystemTime)>>>);

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "secretfs-doctor-date"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(date) = context.response().headers().get("date") {
            *self.0.lock() = Some((date.to_string(), SystemTime::now()));
        }
        Ok(())
    }
}

/// One check per KMS key and S3 object, then the clock against the first KMS answer.
pub(super) fn targets(targets: &[Target], timeout: Duration) -> Vec<Check> {
    let date = DateHeader::default();
    let mut checks: Vec<Check> = targets
        .iter()
        .map(|t| {
            let by = t.origins.join(", ");
            let mut check = match &t.what {
                TargetKind::Kms(key) => kms_key(
                    &format!("kms {key}"),
                    key,
                    (t.region.as_deref(), &t.placement),
                    timeout,
                    &date,
                ),
                TargetKind::S3(uri) => s3_object(
                    &format!("s3 {uri}"),
                    uri,
                    (t.region.as_deref(), &t.placement),
                    timeout,
                ),
            };
            check.message = format!("{} (named by {by})", check.message);
            check
        })
        .collect();
    if targets.iter().any(|t| matches!(t.what, TargetKind::Kms(_))) {
        checks.push(clock(&date));
    }
    checks
}

fn unreachable_fix() -> &'static str {
    "check the network path to AWS (security groups, VPC endpoint, proxy) and AWS_ENDPOINT_URL"
}

/// A dry DescribeKey: the key exists, is enabled, and this caller may see it.
fn kms_key(
    name: &str,
    key: &str,
    (region, placement): (Option<&str>, &Placement),
    timeout: Duration,
    date: &DateHeader,
) -> Check {
    let aws = match Aws::connect(timeout, region, placement) {
        Ok(a) => a,
        Err(e) => return Check::fail(name, e.to_string(), connect_fix(&e, "see the message")),
    };
    let client = aws_sdk_kms::Client::new(&aws.sdk);
    let endpoint = aws.endpoint("KMS");
    let secs = aws.timeout_secs();
    let answer = aws.call("KMS", endpoint.clone(), || {
        let (client, endpoint, date) = (&client, &endpoint, date.clone());
        async move {
            match client
                .describe_key()
                .key_id(key)
                .customize()
                .interceptor(date)
                .send()
                .await
            {
                Ok(out) => Ok(out.key_metadata().map(|m| {
                    (
                        m.key_state().map(|s| s.as_str().to_string()),
                        m.arn().map(str::to_string),
                    )
                })),
                Err(e) => {
                    let e = split_sdk_error(e, "KMS", "kms:DescribeKey", endpoint, secs)?;
                    let detail = match (e.code(), e.message()) {
                        (Some(c), Some(m)) => format!("{c}: {m}"),
                        _ => e.to_string(),
                    };
                    Err(match e {
                        DescribeKeyError::NotFoundException(_) => {
                            Attempt::Fail(AwsError::KeyNotFound { key: key.into() })
                        }
                        DescribeKeyError::DependencyTimeoutException(_)
                        | DescribeKeyError::KmsInternalException(_) => {
                            Attempt::Retry(AwsError::Other {
                                service: "KMS",
                                action: "kms:DescribeKey",
                                detail,
                            })
                        }
                        other if other.code() == Some("AccessDeniedException") => {
                            Attempt::Fail(AwsError::AccessDenied {
                                action: "kms:DescribeKey",
                                resource: format!("KMS key {key}"),
                                detail,
                            })
                        }
                        _ => Attempt::Fail(AwsError::Other {
                            service: "KMS",
                            action: "kms:DescribeKey",
                            detail,
                        }),
                    })
                }
            }
        }
    });
    match answer {
        Ok(Some((Some(state), arn))) if state == "Enabled" => Check::ok(
            name,
            format!(
                "{} is enabled (region {})",
                arn.as_deref().unwrap_or(key),
                aws.region()
            ),
        ),
        Ok(Some((state, arn))) => Check::fail(
            name,
            format!(
                "{} is {}: KMS refuses to decrypt with it",
                arn.as_deref().unwrap_or(key),
                state.as_deref().unwrap_or("in an unknown state")
            ),
            "aws kms enable-key, or aws kms cancel-key-deletion",
        ),
        Ok(None) => Check::warn(
            name,
            "KMS answered DescribeKey without the key's metadata",
            "check the key with `aws kms describe-key`",
        ),
        // A mount needs kms:Decrypt only; a policy without DescribeKey is not broken.
        Err(e @ AwsError::AccessDenied { .. }) => Check::warn(
            name,
            format!("cannot tell: {e}"),
            "grant kms:DescribeKey so doctor can check the key (a mount needs only kms:Decrypt)",
        ),
        Err(e @ AwsError::Unreachable { .. }) => {
            Check::fail(name, e.to_string(), unreachable_fix())
        }
        Err(e) => Check::fail(
            name,
            e.to_string(),
            "see the message; the key must exist in this account and region",
        ),
    }
}

/// What fixes a failed `Aws::connect`, by what its error names; else `otherwise`.
fn connect_fix(e: &AwsError, otherwise: &'static str) -> &'static str {
    match e {
        AwsError::NoRegion => "set AWS_REGION or region= in fstab",
        AwsError::NoTrustRoots { .. } => {
            "install the ca-certificates package (or set SSL_CERT_FILE to a CA bundle)"
        }
        _ => otherwise,
    }
}

/// A dry HeadObject on the wrapped key's object.
fn s3_object(
    name: &str,
    uri: &str,
    (region, placement): (Option<&str>, &Placement),
    timeout: Duration,
) -> Check {
    let parsed = match S3Uri::parse(uri) {
        Ok(u) => u,
        Err(e) => return Check::fail(name, e, "write wrapped-key= as s3://BUCKET/KEY"),
    };
    let aws = match Aws::connect(timeout, region, placement) {
        Ok(a) => a,
        Err(e) => return Check::fail(name, e.to_string(), connect_fix(&e, "see the message")),
    };
    match S3::new(&aws).exists(&parsed) {
        Ok(true) => Check::ok(name, "the object exists (HeadObject)"),
        Ok(false) => Check::fail(
            name,
            AwsError::NoSuchKey {
                uri: uri.to_string(),
            }
            .to_string(),
            "restore the object, or point wrapped-key= at the one `secretfs init` wrote",
        ),
        Err(e @ AwsError::Unreachable { .. }) => {
            Check::fail(name, e.to_string(), unreachable_fix())
        }
        Err(e) => Check::fail(
            name,
            e.to_string(),
            "grant s3:GetObject on the object to the role that mounts",
        ),
    }
}

/// This host's clock against the Date of a KMS answer (the SDK gave one for free with
/// DescribeKey, even a refusal): AWS rejects requests signed more than 5 minutes off.
fn clock(date: &DateHeader) -> Check {
    const NAME: &str = "clock";
    let Some((text, received)) = date.0.lock().clone() else {
        return Check::warn(
            NAME,
            "not compared: no KMS endpoint answered",
            "fix the KMS checks above, then run doctor again",
        );
    };
    let server =
        aws_smithy_types::DateTime::from_str(&text, aws_smithy_types::date_time::Format::HttpDate)
            .ok()
            .and_then(|d| SystemTime::try_from(d).ok());
    let Some(server) = server else {
        return Check::warn(
            NAME,
            format!("not compared: KMS sent an unreadable Date `{text}`"),
            "nothing to do unless mounts fail with a signature error",
        );
    };
    let (skew, ahead) = match received.duration_since(server) {
        Ok(d) => (d.as_secs(), "ahead of"),
        Err(e) => (e.duration().as_secs(), "behind"),
    };
    let fix =
        "synchronise the clock (chrony or systemd-timesyncd; on EC2 the Amazon Time Sync Service)";
    // The Date header has one-second resolution and the answer took some time to arrive.
    if skew <= 30 {
        Check::ok(NAME, format!("within {skew} s of KMS's clock"))
    } else if skew < 300 {
        Check::warn(
            NAME,
            format!("{skew} s {ahead} KMS's clock; AWS refuses signatures 300 s off"),
            fix,
        )
    } else {
        Check::fail(
            NAME,
            format!("{skew} s {ahead} KMS's clock: AWS refuses requests signed 300 s or more off"),
            fix,
        )
    }
}

/// Whether this process runs in a container (Docker, Podman, Kubernetes, LXC).
fn in_container() -> bool {
    std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || env_set("container")
        || std::fs::read_to_string("/proc/1/cgroup").is_ok_and(|t| {
            ["docker", "kubepods", "containerd", "lxc", "libpod"]
                .iter()
                .any(|k| t.contains(k))
        })
}

/// In a container the instance role comes through one more network hop, and IMDSv2's token
/// answer is sent with a hop limit of 1 by default: the PUT then goes unanswered. Checked only
/// where it matters: in a container, with the role as the credentials' source.
pub(super) fn hop_limit(source: Option<CredSource>, timeout: Duration) -> Check {
    const NAME: &str = "imds hop limit";
    if !in_container() {
        return Check::ok(NAME, "not in a container: the hop limit does not matter");
    }
    if imds_disabled() {
        return Check::ok(NAME, "IMDS is disabled (AWS_EC2_METADATA_DISABLED)");
    }
    if let Some(s) = source.filter(|s| *s != CredSource::Imds) {
        return Check::ok(NAME, format!("credentials come from {s}, not IMDS"));
    }
    let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|_| "http://169.254.169.254".into());
    match imds_token(&endpoint, timeout.min(Duration::from_secs(3))) {
        Ok(()) => Check::ok(NAME, format!("IMDSv2 at {endpoint} answers inside the container")),
        Err(TokenError::NoAnswer) => Check::warn(
            NAME,
            format!("IMDSv2 at {endpoint} took the token request but never answered: the instance's hop limit is probably 1"),
            "aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2",
        ),
        Err(TokenError::Unreachable(e)) => Check::warn(
            NAME,
            format!("IMDS at {endpoint} is unreachable ({e}): not on EC2, or blocked"),
            "on EC2, let the container reach 169.254.169.254; elsewhere give credentials another way",
        ),
    }
}

enum TokenError {
    NoAnswer,
    Unreachable(String),
}

/// `PUT /latest/api/token` by hand: the SDK would retry and fall back, hiding which step failed.
fn imds_token(endpoint: &str, timeout: Duration) -> Result<(), TokenError> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let hostport = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| TokenError::Unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| TokenError::Unreachable(format!("{hostport} has no address")))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| TokenError::Unreachable(e.to_string()))?;
    let _ = s.set_read_timeout(Some(timeout));
    let request = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: {hostport}\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| TokenError::Unreachable(e.to_string()))?;
    let mut head = [0u8; 12];
    match s.read(&mut head) {
        Ok(n) if n >= 12 && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" => Ok(()),
        Ok(n) if n > 0 => Err(TokenError::Unreachable(format!(
            "answered `{}`",
            String::from_utf8_lossy(&head[..n]).trim()
        ))),
        _ => Err(TokenError::NoAnswer),
    }
}

//! Test-side AWS helpers: the emulator endpoint (moto on loopback) and an "admin" SDK client that
//! creates keys, buckets and objects the way an operator would.

use aws_sdk_kms::primitives::Blob;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const REGION: &str = "us-east-1";

/// The emulator's URL; under CI a missing emulator is a failure, elsewhere a skip.
pub fn endpoint() -> Option<String> {
    match std::env::var("SECRETFS_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => {
            assert!(
                e.starts_with("http://127.0.0.1:"),
                "the AWS tests only talk to loopback, not {e}"
            );
            Some(e)
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "SECRETFS_TEST_AWS_ENDPOINT is not set: scripts/test-all.sh starts moto and sets it"
            );
            super::skipped(
                "SECRETFS_TEST_AWS_ENDPOINT is not set (scripts/test-all.sh starts moto)",
            );
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    format!(
        "{prefix}-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// The test's own SDK clients (static test keys are fine here: this is the "admin" side).
pub struct Admin {
    pub rt: tokio::runtime::Runtime,
    pub kms: aws_sdk_kms::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Admin {
    pub fn new(ep: &str) -> Self {
        Self::in_region(ep, REGION)
    }

    pub fn in_region(ep: &str, region: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(ep)
                .region(aws_types::region::Region::new(region.to_string()))
                .credentials_provider(aws_credential_types::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .load(),
        );
        let s3conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build();
        Admin {
            kms: aws_sdk_kms::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(s3conf),
            rt,
        }
    }

    /// A new KMS key; returns (ARN, alias).
    pub fn key(&self) -> (String, String) {
        self.rt.block_on(async {
            let k = self.kms.create_key().send().await.unwrap();
            let arn = k.key_metadata().unwrap().arn().unwrap().to_string();
            let alias = format!("alias/{}", unique("secretfs"));
            self.kms
                .create_alias()
                .alias_name(&alias)
                .target_key_id(&arn)
                .send()
                .await
                .unwrap();
            (arn, alias)
        })
    }

    pub fn bucket(&self) -> String {
        let name = unique("secretfs-test");
        self.rt
            .block_on(self.s3.create_bucket().bucket(&name).send())
            .unwrap();
        name
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.rt
            .block_on(self.s3.delete_object().bucket(bucket).key(key).send())
            .unwrap();
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let out = self
                .s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.rt
            .block_on(
                self.s3
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body.into())
                    .send(),
            )
            .unwrap();
    }

    pub fn encrypt(&self, key: &str, plaintext: &[u8]) -> Vec<u8> {
        self.rt
            .block_on(
                self.kms
                    .encrypt()
                    .key_id(key)
                    .plaintext(Blob::new(plaintext))
                    .send(),
            )
            .unwrap()
            .ciphertext_blob()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    pub fn data_key_blob(&self, key: &str, ctx: HashMap<String, String>) -> Vec<u8> {
        self.rt
            .block_on(
                self.kms
                    .generate_data_key()
                    .key_id(key)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .set_encryption_context(Some(ctx))
                    .send(),
            )
            .unwrap()
            .ciphertext_blob()
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

/// A temp dir with backing store and mount point, and the environment of "an instance":
/// only env configuration (AWS_ENDPOINT_URL, static test credentials, a region), as a host with
/// an instance role would have; nothing but loopback is ever contacted.
pub struct Inst {
    pub dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
    pub mounted: bool,
}

impl Inst {
    pub fn new(ep: &str) -> Self {
        super::require_root();
        let dir = tempfile::Builder::new()
            .prefix("secretfs-kms")
            .tempdir()
            .unwrap();
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let env = [
            ("AWS_ENDPOINT_URL", ep),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Inst {
            dir,
            backing,
            mnt,
            log,
            env,
            mounted: false,
        }
    }

    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    /// Runs with `input` on stdin (a passphrase for `--passphrase-fd 0`).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut cmd = self.command(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The binary with this instance's environment only.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretfs"));
        cmd.args(args).env_clear();
        for keep in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(keep) {
                cmd.env(keep, v);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    pub fn init(&self, extra: &[&str]) -> Output {
        let mut args = vec!["init", self.backing.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub fn mount_at(&mut self, backing: &Path, extra: &[&str]) -> Output {
        let opts = format!("log={}", self.log.display());
        let mut args = vec![
            "mount",
            backing.to_str().unwrap(),
            self.mnt.to_str().unwrap(),
            "-o",
            &opts,
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        if out.status.success() {
            self.mounted = true;
        }
        out
    }

    pub fn mount(&mut self, extra: &[&str]) -> Output {
        let backing = self.backing.clone();
        self.mount_at(&backing, extra)
    }

    /// Unmounts, retried while another test thread's spawn keeps the mount busy for a moment.
    pub fn umount(&mut self) {
        let mnt = self.mnt.to_str().unwrap().to_string();
        let out = super::retry_while_busy(|| self.run(&["umount", &mnt]));
        ok(&out);
        self.mounted = false;
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.backing.join("secretfs.conf")).unwrap()).unwrap()
    }
}

impl Drop for Inst {
    fn drop(&mut self) {
        if self.mounted {
            let pid = super::daemon_pid_of(&self.mnt);
            let _ = self.run(&["umount", "--lazy", self.mnt.to_str().unwrap()]);
            if let Some(pid) = pid {
                super::wait_for_exit(pid);
            }
        }
        super::forget_pins_under(self.dir.path());
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn ok(out: &Output) {
    assert!(out.status.success(), "failed: {}", stderr(out));
}

/// Asserts the exit code and that the last stderr line is one `secretfs: error:` sentence
/// containing `needle`.
pub fn fails(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("secretfs: error:"))
        .unwrap_or_else(|| panic!("no error line in: {err}"));
    assert!(line.contains(needle), "expected `{needle}` in: {line}");
}

/// A moto server of the test's own on a free loopback port (a second region's KMS, or one to
/// take away): killed on drop. `None` (a skip) where moto is not installed, a failure under CI.
pub struct PrivateMoto {
    child: std::process::Child,
    pub endpoint: String,
}

impl PrivateMoto {
    pub fn start() -> Option<PrivateMoto> {
        let bin = std::env::var("SECRETFS_TEST_MOTO_BIN")
            .unwrap_or_else(|_| "/opt/secretfs-moto/bin/moto_server".into());
        if !Path::new(&bin).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{bin} is missing: scripts/install-deps.sh --with-suites installs moto"
            );
            super::skipped(&format!(
                "{bin} is missing (scripts/install-deps.sh installs it)"
            ));
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let moto = PrivateMoto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Ready when it answers; bounded by the number of tries, not by a sleep per se.
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("moto on port {port} did not start");
    }

    /// Forgets every key and object (the KMS keys are gone, as after a deletion).
    pub fn reset(&self) {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                &format!("{}/moto-api/reset", self.endpoint),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "moto reset failed");
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

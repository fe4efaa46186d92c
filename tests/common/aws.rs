//! Test-side AWS helpers: the emulator endpoint (moto on loopback) and an "admin" SDK client that
//! creates keys, buckets and objects the way an operator would.

use aws_sdk_kms::primitives::Blob;
use std::collections::HashMap;

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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(ep)
                .region(aws_types::region::Region::new(REGION))
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

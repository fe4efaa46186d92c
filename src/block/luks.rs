//! The cryptsetup driver: LUKS2 format, open, close, token import/read and header probing.
//! Keys reach cryptsetup only through a pipe on its stdin (`--key-file -`), never argv or files.

use super::BlockError;
use crate::crypto::keys::SecretBytes;
use crate::store::config::KeySourceDescriptor;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The LUKS2 token type that marks a volume as ours and records how it is unlocked.
pub const TOKEN_TYPE: &str = "secretfs";
/// Prefix of every device-mapper name we create: `secretfs-<LUKS UUID>`.
pub const NAME_PREFIX: &str = "secretfs-";
/// LUKS1 and LUKS2 both start with this magic at offset 0.
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// What the LUKS2 token holds (public data only).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Token {
    #[serde(rename = "type")]
    pub kind: String,
    pub keyslots: Vec<String>,
    pub version: u32,
    pub key_source: KeySourceDescriptor,
}

fn cryptsetup() -> Command {
    let mut c = super::command("cryptsetup");
    // Messages are parsed for nothing but shown to users: keep them in English.
    c.env("LC_ALL", "C");
    c
}

/// Runs cryptsetup with `input` on stdin; maps its documented exit codes to typed errors.
fn run(mut cmd: Command, input: Option<&[u8]>, what: &str) -> Result<Vec<u8>, BlockError> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BlockError::ToolMissing {
                tool: "cryptsetup",
                package: "cryptsetup-bin",
            }
        } else {
            BlockError::Io {
                what: "cannot run cryptsetup".into(),
                source: e,
            }
        }
    })?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error means cryptsetup exited early; its status says why.
        let _ = stdin.write_all(bytes);
    }
    let out = child.wait_with_output().map_err(|e| BlockError::Io {
        what: "cannot wait for cryptsetup".into(),
        source: e,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) => Ok(out.stdout),
        // cryptsetup(8): 2 = no permission (bad passphrase), 5 = device already exists or busy.
        Some(2) => Err(BlockError::WrongKey),
        Some(5) => Err(BlockError::Busy {
            what: format!("{what}: {stderr}"),
        }),
        code => Err(BlockError::Tool {
            tool: "cryptsetup",
            what: what.to_string(),
            status: code.unwrap_or(-1),
            stderr,
        }),
    }
}

/// The keyslot passphrase as cryptsetup sees it: the 32-byte HKDF subkey in lower-case hex, so
/// an operator can also type or pipe it into plain `cryptsetup open` in an emergency.
pub fn passphrase_hex(key: &SecretBytes<32>) -> SecretBytes<64> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = SecretBytes::<64>::zeroed();
    for (i, b) in key.expose().iter().enumerate() {
        out.expose_mut()[2 * i] = HEX[usize::from(b >> 4)];
        out.expose_mut()[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// luksFormat: LUKS2, aes-xts-plain64 with a 512-bit volume key, 4096-byte sectors, and a cheap
/// PBKDF because the passphrase is already a uniformly random 256-bit secret.
pub fn format(
    device: &Path,
    uuid: &uuid::Uuid,
    passphrase: &SecretBytes<64>,
) -> Result<(), BlockError> {
    let mut c = cryptsetup();
    c.args([
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--sector-size",
        "4096",
        "--hash",
        "sha256",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        "-",
        "--uuid",
    ])
    .arg(uuid.to_string())
    .arg(device);
    run(c, Some(passphrase.expose()), "luksFormat").map(drop)
}

/// Stores the token (JSON on stdin) next to keyslot 0.
pub fn import_token(device: &Path, descriptor: &KeySourceDescriptor) -> Result<(), BlockError> {
    let token = Token {
        kind: TOKEN_TYPE.into(),
        keyslots: vec!["0".into()],
        version: 1,
        key_source: descriptor.clone(),
    };
    let json = serde_json::to_vec(&token).map_err(|e| BlockError::Io {
        what: "cannot encode the LUKS2 token".into(),
        source: e.into(),
    })?;
    let mut c = cryptsetup();
    c.args(["token", "import", "--json-file", "-"]).arg(device);
    run(c, Some(&json), "token import").map(drop)
}

/// The header of a LUKS2 device: its UUID and our token, if it has one.
#[derive(Debug)]
pub struct Header {
    pub uuid: uuid::Uuid,
    pub token: Option<Token>,
}

/// Reads the LUKS2 JSON metadata (`luksDump --dump-json-metadata`, cryptsetup ≥ 2.4).
pub fn read_header(device: &Path) -> Result<Header, BlockError> {
    let mut c = cryptsetup();
    c.args(["luksDump", "--dump-json-metadata"]).arg(device);
    let json = run(c, None, "luksDump")?;
    let meta: serde_json::Value = serde_json::from_slice(&json).map_err(|e| BlockError::Tool {
        tool: "cryptsetup",
        what: "luksDump".into(),
        status: 0,
        stderr: format!("unreadable JSON metadata: {e}"),
    })?;
    let token = meta
        .get("tokens")
        .and_then(|t| t.as_object())
        .into_iter()
        .flat_map(|t| t.values())
        .filter(|t| t.get("type").and_then(|v| v.as_str()) == Some(TOKEN_TYPE))
        .find_map(|t| serde_json::from_value::<Token>(t.clone()).ok());
    let mut c = cryptsetup();
    c.arg("luksUUID").arg(device);
    let text = run(c, None, "luksUUID")?;
    let uuid = uuid::Uuid::parse_str(String::from_utf8_lossy(&text).trim()).map_err(|e| {
        BlockError::Tool {
            tool: "cryptsetup",
            what: "luksUUID".into(),
            status: 0,
            stderr: format!("not a UUID: {e}"),
        }
    })?;
    Ok(Header { uuid, token })
}

/// Opens the volume as /dev/mapper/`name`.
pub fn open(
    device: &Path,
    name: &str,
    passphrase: &SecretBytes<64>,
    no_workqueue: bool,
) -> Result<PathBuf, BlockError> {
    let mut c = cryptsetup();
    c.args(["open", "--type", "luks2", "--key-file", "-"]);
    if no_workqueue {
        // NVMe completes in interrupt context fast enough; the kcryptd queues only add latency.
        c.args(["--perf-no_read_workqueue", "--perf-no_write_workqueue"]);
    }
    c.arg(device).arg(name);
    run(c, Some(passphrase.expose()), "open")?;
    Ok(mapper_path(name))
}

pub fn close(name: &str) -> Result<(), BlockError> {
    let mut c = cryptsetup();
    c.args(["close", name]);
    run(c, None, "close").map(drop)
}

pub fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// The device under an open mapping (`cryptsetup status`: "  device:  /dev/loop0").
pub fn underlying_device(name: &str) -> Option<PathBuf> {
    let mut c = cryptsetup();
    c.args(["status", name]);
    let out = run(c, None, "status").ok()?;
    String::from_utf8_lossy(&out).lines().find_map(|l| {
        l.trim()
            .strip_prefix("device:")
            .map(|d| PathBuf::from(d.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_passphrase_is_lowercase_and_complete() {
        let key = SecretBytes::<32>::from_slice(&[0xAB; 32]).unwrap();
        let hex = passphrase_hex(&key);
        assert_eq!(hex.expose(), "ab".repeat(32).as_bytes());
    }

    #[test]
    fn token_round_trips_through_json() {
        let t = Token {
            kind: TOKEN_TYPE.into(),
            keyslots: vec!["0".into()],
            version: 1,
            key_source: KeySourceDescriptor::Keyfile {
                path: "/etc/k".into(),
            },
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"type\":\"secretfs\""), "{json}");
        let back: Token = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key_source, t.key_source);
    }
}

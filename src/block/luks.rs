//! The cryptsetup driver: LUKS2 format, open, keyslots, tokens, close and header probing.
//! Keys reach cryptsetup only through pipes (its stdin, or an inherited `/proc/self/fd/N`),
//! never argv or files.

use super::BlockError;
use crate::crypto::keys::SecretBytes;
use crate::store::config::{KeySlot, KeySourceDescriptor};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The LUKS2 token type that marks a volume as ours and records how it is unlocked.
pub const TOKEN_TYPE: &str = "secretfs";
/// Prefix of every device-mapper name we create: `secretfs-<LUKS UUID>`.
pub const NAME_PREFIX: &str = "secretfs-";
/// LUKS1 and LUKS2 both start with this magic at offset 0.
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// LUKS2 has at most 32 keyslots (0..=31).
pub const MAX_KEYSLOTS: u32 = 32;

/// What one `secretfs` LUKS2 token holds (public data only): the key source of the one keyslot
/// it names, which is the secretfs slot of the same number. The slot number is not repeated in
/// a field of its own: `keyslots` is what cryptsetup itself checks (a token can only name a
/// keyslot that exists), so it cannot disagree with a second copy. Tokens written before slots
/// existed name keyslot "0" and have no region or endpoint: they read as slot 0, unchanged.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Token {
    #[serde(rename = "type")]
    pub kind: String,
    pub keyslots: Vec<String>,
    pub version: u32,
    pub key_source: KeySourceDescriptor,
    /// The AWS region of this slot's KMS key (another region keeps the volume opening when one
    /// region's KMS is down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An endpoint URL for this slot's KMS and S3 calls (a VPC endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl Token {
    /// The token of `slot` (its number is the keyslot it names).
    pub fn of(slot: &KeySlot) -> Token {
        Token {
            kind: TOKEN_TYPE.into(),
            keyslots: vec![slot.id.to_string()],
            version: 1,
            key_source: slot.source.clone(),
            region: slot.region.clone(),
            endpoint: slot.endpoint.clone(),
        }
    }

    /// The secretfs slot this token describes: exactly one keyslot, a plain decimal number
    /// below 32 ("07" would be a second spelling of 7). Anything else is not ours to try.
    pub fn slot(&self) -> Option<KeySlot> {
        let [only] = self.keyslots.as_slice() else {
            return None;
        };
        let id: u32 = only.parse().ok()?;
        if id >= MAX_KEYSLOTS || id.to_string() != *only || self.kind != TOKEN_TYPE {
            return None;
        }
        let slot = KeySlot {
            id,
            source: self.key_source.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            // LUKS itself wraps the volume key in each keyslot.
            wrapped_master: None,
        };
        slot.check_placement().ok()?;
        Some(slot)
    }
}

fn cryptsetup() -> Command {
    let mut c = super::command("cryptsetup");
    // Messages are parsed for nothing but shown to users: keep them in English.
    c.env("LC_ALL", "C");
    c
}

/// A pipe already holding `bytes` and closed for writing, whose read end a child inherits (as
/// `/proc/self/fd/N`, which unlike `/dev/fd` needs no udev or systemd to exist): a second
/// secret for cryptsetup besides its stdin, never on argv or disk.
struct SecretPipe {
    read: OwnedFd,
}

impl SecretPipe {
    fn new(bytes: &[u8]) -> Result<SecretPipe, BlockError> {
        let io = |source| BlockError::Io {
            what: "cannot make a pipe for cryptsetup".into(),
            source,
        };
        // A pipe buffer holds at least 4096 bytes: a passphrase of a few hundred fits, so the
        // write cannot block with no reader yet.
        if bytes.len() > 4096 {
            return Err(io(std::io::Error::other("secret too long for a pipe")));
        }
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 returns.
        crate::sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }).map_err(io)?;
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut write = std::fs::File::from(write);
        write.write_all(bytes).map_err(io)?;
        // Dropping the write end now: cryptsetup reads the secret, then end of file.
        drop(write);
        Ok(SecretPipe { read })
    }

    /// The path the child opens, and the command made to inherit the descriptor.
    fn pass_to(&self, cmd: &mut Command) -> String {
        let fd = self.read.as_raw_fd();
        // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec on a descriptor
        // this process owns, in the forked child just before exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        format!("/proc/self/fd/{fd}")
    }
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

/// The keyslot PBKDF: cheap, because every keyslot passphrase is a uniformly random 256-bit
/// secret (an HKDF subkey in hex, or a recovery key), which no PBKDF would make stronger.
const CHEAP_PBKDF: [&str; 6] = [
    "--hash",
    "sha256",
    "--pbkdf",
    "pbkdf2",
    "--pbkdf-force-iterations",
    "1000",
];

/// luksFormat: LUKS2, aes-xts-plain64 with a 512-bit volume key, 4096-byte sectors, keyslot 0
/// under `passphrase`.
pub fn format(device: &Path, uuid: &uuid::Uuid, passphrase: &[u8]) -> Result<(), BlockError> {
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
        "--key-slot",
        "0",
    ])
    .args(CHEAP_PBKDF)
    .args(["--key-file", "-", "--uuid"])
    .arg(uuid.to_string())
    .arg(device);
    run(c, Some(passphrase), "luksFormat").map(drop)
}

/// luksAddKey: keyslot `new_slot` under `new_pass`, unlocked by keyslot `slot`'s `pass`. The
/// existing passphrase goes on stdin, the new one through an inherited pipe (`--new-keyfile
/// /proc/self/fd/N`, cryptsetup ≥ 2.6): neither is ever on argv or disk. Both are read to
/// their end, byte for byte (no newline is added or stripped).
pub fn add_key(
    device: &Path,
    slot: u32,
    pass: &[u8],
    new_slot: u32,
    new_pass: &[u8],
) -> Result<(), BlockError> {
    let pipe = SecretPipe::new(new_pass)?;
    let mut c = cryptsetup();
    let path = pipe.pass_to(&mut c);
    c.args([
        "luksAddKey",
        "--batch-mode",
        "--key-file",
        "-",
        "--key-slot",
    ])
    .arg(slot.to_string())
    .arg("--new-key-slot")
    .arg(new_slot.to_string())
    .args(CHEAP_PBKDF)
    .arg("--new-keyfile")
    .arg(path)
    .arg(device);
    let out = run(c, Some(pass), "luksAddKey");
    drop(pipe);
    out.map(drop)
}

/// Whether `pass` opens keyslot `slot` (`open --test-passphrase`: nothing is activated, so this
/// works on a volume that is open elsewhere, and on a header in a plain file).
pub fn test_passphrase(device: &Path, slot: u32, pass: &[u8]) -> Result<(), BlockError> {
    let mut c = cryptsetup();
    c.args([
        "open",
        "--type",
        "luks2",
        "--test-passphrase",
        "--key-file",
        "-",
        "--key-slot",
    ])
    .arg(slot.to_string())
    .arg(device);
    run(c, Some(pass), "test passphrase").map(drop)
}

/// luksKillSlot. With `verify`, cryptsetup first checks that passphrase opens another keyslot
/// (a second proof that the volume keeps a way in); without it (`--batch-mode`, nothing on
/// stdin) the keyslot is wiped as it is: for removing the very slot the caller unlocked with.
pub fn kill_slot(device: &Path, slot: u32, verify: Option<&[u8]>) -> Result<(), BlockError> {
    let mut c = cryptsetup();
    c.args(["luksKillSlot", "--batch-mode"]);
    if verify.is_some() {
        c.args(["--key-file", "-"]);
    }
    c.arg(device).arg(slot.to_string());
    run(c, verify, "luksKillSlot").map(drop)
}

/// Stores the token of `slot` (JSON on stdin), bound to its keyslot.
pub fn import_token(device: &Path, slot: &KeySlot) -> Result<(), BlockError> {
    let json = serde_json::to_vec(&Token::of(slot)).map_err(|e| BlockError::Io {
        what: "cannot encode the LUKS2 token".into(),
        source: e.into(),
    })?;
    let mut c = cryptsetup();
    c.args(["token", "import", "--json-file", "-"]).arg(device);
    run(c, Some(&json), "token import").map(drop)
}

/// Removes token `id` (any type: the caller names one of ours).
pub fn remove_token(device: &Path, id: u32) -> Result<(), BlockError> {
    let mut c = cryptsetup();
    c.args(["token", "remove", "--token-id"])
        .arg(id.to_string())
        .arg(device);
    run(c, None, "token remove").map(drop)
}

/// One secretfs slot of a volume: the token that describes it, and what it says.
#[derive(Debug, Clone)]
pub struct SlotToken {
    pub token_id: u32,
    pub slot: KeySlot,
}

/// The header of a LUKS2 device: its UUID, our slots (one per well-formed `secretfs` token, by
/// slot number) and the numbers of every active keyslot, ours or not.
#[derive(Debug)]
pub struct Header {
    pub uuid: uuid::Uuid,
    pub slots: Vec<SlotToken>,
    pub keyslots: Vec<u32>,
}

impl Header {
    /// The slots our tokens describe, lowest number first.
    pub fn key_slots(&self) -> Vec<KeySlot> {
        self.slots.iter().map(|t| t.slot.clone()).collect()
    }

    /// The key source of the volume's first slot (what `status` shows).
    pub fn primary(&self) -> Option<&KeySourceDescriptor> {
        self.slots.first().map(|t| &t.slot.source)
    }

    /// Active keyslots no token of ours names: left by a `key add` killed between adding the
    /// keyslot and importing its token (never tried; `key remove` wipes them), or foreign.
    pub fn untokened(&self) -> Vec<u32> {
        self.keyslots
            .iter()
            .copied()
            .filter(|k| !self.slots.iter().any(|t| t.slot.id == *k))
            .collect()
    }

    /// The lowest keyslot number in use by nothing, for a new slot.
    pub fn free_keyslot(&self) -> Option<u32> {
        (0..MAX_KEYSLOTS).find(|k| !self.keyslots.contains(k))
    }
}

/// Our slots and the active keyslots in LUKS2 JSON metadata.
fn parse_metadata(meta: &serde_json::Value) -> (Vec<SlotToken>, Vec<u32>) {
    let mut slots: Vec<SlotToken> = meta
        .get("tokens")
        .and_then(|t| t.as_object())
        .into_iter()
        .flatten()
        .filter(|(_, t)| t.get("type").and_then(|v| v.as_str()) == Some(TOKEN_TYPE))
        .filter_map(|(id, t)| {
            let token = serde_json::from_value::<Token>(t.clone()).ok()?;
            Some(SlotToken {
                token_id: id.parse().ok()?,
                slot: token.slot()?,
            })
        })
        .collect();
    slots.sort_by_key(|t| (t.slot.id, t.token_id));
    let mut keyslots: Vec<u32> = meta
        .get("keyslots")
        .and_then(|k| k.as_object())
        .into_iter()
        .flatten()
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    keyslots.sort_unstable();
    (slots, keyslots)
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
    let (slots, keyslots) = parse_metadata(&meta);
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
    Ok(Header {
        uuid,
        slots,
        keyslots,
    })
}

/// Opens the volume as /dev/mapper/`name` with keyslot `slot` alone (a passphrase is never
/// tried against the other keyslots: each slot's attempt is its own, and audited as such).
pub fn open(
    device: &Path,
    name: &str,
    slot: u32,
    passphrase: &[u8],
    no_workqueue: bool,
) -> Result<PathBuf, BlockError> {
    let mut c = cryptsetup();
    c.args(["open", "--type", "luks2", "--key-file", "-", "--key-slot"])
        .arg(slot.to_string());
    if no_workqueue {
        // NVMe completes in interrupt context fast enough; the kcryptd queues only add latency.
        c.args(["--perf-no_read_workqueue", "--perf-no_write_workqueue"]);
    }
    c.arg(device).arg(name);
    run(c, Some(passphrase), "open")?;
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
        let slot = KeySlot {
            region: Some("eu-west-1".into()),
            ..KeySlot::direct(
                3,
                KeySourceDescriptor::Keyfile {
                    path: "/etc/k".into(),
                },
            )
        };
        let json = serde_json::to_string(&Token::of(&slot)).unwrap();
        assert!(json.contains("\"type\":\"secretfs\""), "{json}");
        assert!(json.contains("\"keyslots\":[\"3\"]"), "{json}");
        let back: Token = serde_json::from_str(&json).unwrap();
        assert_eq!(back.slot(), Some(slot));
    }

    /// The token every volume made before slots carries (FORMAT.md): it reads as slot 0.
    #[test]
    fn a_token_written_before_slots_reads_as_slot_0() {
        let json = r#"{"type":"secretfs","keyslots":["0"],"version":1,"key_source":{"type":"keyfile","path":"/key"}}"#;
        let token: Token = serde_json::from_str(json).unwrap();
        assert_eq!(
            token.slot(),
            Some(KeySlot::direct(
                0,
                KeySourceDescriptor::Keyfile {
                    path: "/key".into()
                }
            ))
        );
    }

    #[test]
    fn tokens_naming_no_single_plain_keyslot_are_not_slots() {
        let base = Token::of(&KeySlot::direct(0, KeySourceDescriptor::Recovery));
        for keyslots in [vec![], vec!["0", "1"], vec!["07"], vec!["32"], vec!["x"]] {
            let t = Token {
                keyslots: keyslots.iter().map(|k| k.to_string()).collect(),
                ..base.clone()
            };
            assert_eq!(t.slot(), None, "{keyslots:?}");
        }
        let bad_region = Token {
            region: Some("not a region".into()),
            ..base
        };
        assert_eq!(bad_region.slot(), None);
    }

    #[test]
    fn metadata_gives_our_slots_by_number_and_every_active_keyslot() {
        let meta: serde_json::Value = serde_json::from_str(
            r#"{
              "keyslots": {"0": {}, "1": {}, "4": {}},
              "tokens": {
                "0": {"type":"secretfs","keyslots":["0"],"version":1,"key_source":{"type":"keyfile","path":"/k"}},
                "2": {"type":"luks2-keyring","keyslots":["4"],"key_description":"x"},
                "5": {"type":"secretfs","keyslots":["1"],"version":1,"key_source":{"type":"recovery"}},
                "6": {"type":"secretfs","keyslots":["1","0"],"version":1,"key_source":{"type":"recovery"}}
              }
            }"#,
        )
        .unwrap();
        let (slots, keyslots) = parse_metadata(&meta);
        let ids: Vec<(u32, u32)> = slots.iter().map(|t| (t.slot.id, t.token_id)).collect();
        assert_eq!(ids, [(0, 0), (1, 5)]);
        assert_eq!(keyslots, [0, 1, 4]);
        let header = Header {
            uuid: uuid::Uuid::nil(),
            slots,
            keyslots,
        };
        assert_eq!(header.untokened(), [4]);
        assert_eq!(header.free_keyslot(), Some(2));
    }

    #[test]
    fn a_secret_pipe_hands_its_bytes_to_a_child_and_nothing_else() {
        let pipe = SecretPipe::new(b"one two\n").unwrap();
        let mut c = Command::new("cat");
        let path = pipe.pass_to(&mut c);
        let out = c.arg(&path).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"one two\n");
    }
}

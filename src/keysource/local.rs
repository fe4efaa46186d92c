//! Key sources that need no network: a root-only key file and an argon2id-wrapped passphrase.
//! (The ephemeral source is just a random key and lives in `mod.rs`.)

use super::{KeySourceError, PassphraseInput};
use crate::crypto::keys::{unwrap_key, wrap_key, MasterKey, SecretBytes, KEY_LEN, WRAPPED_KEY_LEN};
use crate::store::config::KeySourceDescriptor;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// argon2id defaults: 64 MiB, 3 passes, 1 lane (OWASP's first recommended profile).
pub const ARGON2_M_KIB: u32 = 64 * 1024;
pub const ARGON2_T: u32 = 3;
pub const ARGON2_P: u32 = 1;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeySourceError + '_ {
    move |source| KeySourceError::KeyfileIo {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a key file, refusing one that others may read: a key anyone can copy protects nothing.
pub fn read_keyfile(path: &Path) -> Result<MasterKey, KeySourceError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeySourceError::KeyfileMissing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    // Root's daemon trusts only root's key files: another owner could swap the key.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && meta.uid() != 0 {
        return Err(KeySourceError::KeyfileOwner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    if !meta.is_file() {
        return Err(KeySourceError::KeyfileIo {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeySourceError::KeyfileInsecure {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeySourceError::KeyfileLength {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut key = MasterKey::zeroed();
    file.read_exact(key.expose_mut()).map_err(io_err(path))?;
    Ok(key)
}

/// Creates a new 0400 key file with 32 random bytes, or reuses an existing valid one.
pub fn create_or_read_keyfile(path: &Path) -> Result<MasterKey, KeySourceError> {
    if path.exists() {
        return read_keyfile(path);
    }
    let key = MasterKey::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(key.expose()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(key)
}

/// Reads a passphrase from the chosen input; the bytes are wiped when dropped.
pub fn read_passphrase(
    input: &PassphraseInput,
    confirm: bool,
) -> Result<Zeroizing<String>, KeySourceError> {
    read_secret(input, "secretfs passphrase: ", confirm)
}

/// Reads one line of secret text (a passphrase, a recovery key) from the chosen input.
pub fn read_secret(
    input: &PassphraseInput,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<String>, KeySourceError> {
    let err = |e: std::io::Error| KeySourceError::PassphraseInput(e.to_string());
    let pass = match input {
        PassphraseInput::Preread(pass) => pass.clone(),
        PassphraseInput::Tty => {
            let first = Zeroizing::new(rpassword::prompt_password(prompt).map_err(err)?);
            if confirm {
                let again =
                    Zeroizing::new(rpassword::prompt_password("repeat passphrase: ").map_err(err)?);
                if *again != *first {
                    return Err(KeySourceError::PassphraseInput(
                        "the two passphrases differ".into(),
                    ));
                }
            }
            first
        }
        PassphraseInput::Fd(fd) => {
            // SAFETY: the user handed us this descriptor for exactly this purpose; we own it now.
            let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
            let mut all = Zeroizing::new(String::new());
            file.read_to_string(&mut all).map_err(err)?;
            Zeroizing::new(all.lines().next().unwrap_or("").to_string())
        }
        PassphraseInput::Command(cmd) => {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(err)?;
            let stdout = Zeroizing::new(out.stdout);
            if !out.status.success() {
                return Err(KeySourceError::PassphraseInput(format!(
                    "`{cmd}` exited with {}",
                    out.status
                )));
            }
            let text = std::str::from_utf8(&stdout).map_err(|_| {
                KeySourceError::PassphraseInput("the command printed invalid UTF-8".into())
            })?;
            Zeroizing::new(text.lines().next().unwrap_or("").to_string())
        }
    };
    if pass.is_empty() {
        return Err(KeySourceError::PassphraseInput("empty passphrase".into()));
    }
    Ok(pass)
}

fn argon2_kek(
    pass: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<SecretBytes<KEY_LEN>, KeySourceError> {
    argon2id(pass.as_bytes(), salt, m, t, p)
}

/// Argon2id of any secret bytes into a locked 32-byte key, costs bounded first.
pub(crate) fn argon2id(
    pass: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<SecretBytes<KEY_LEN>, KeySourceError> {
    check_argon2_bounds(m, t, p)?;
    let params = argon2::Params::new(m, t, p, Some(KEY_LEN))
        .map_err(|e| KeySourceError::Damaged(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = SecretBytes::zeroed();
    argon
        .hash_password_into(pass, salt, kek.expose_mut())
        .map_err(|e| KeySourceError::Damaged(format!("argon2: {e}")))?;
    Ok(kek)
}

pub fn init_passphrase(
    input: &PassphraseInput,
    fs_id: &[u8; 16],
) -> Result<(MasterKey, KeySourceDescriptor), KeySourceError> {
    let pass = read_passphrase(input, true)?;
    let mut salt = [0u8; 16];
    crate::crypto::keys::fill_random(&mut salt);
    let kek = argon2_kek(&pass, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
    let master = MasterKey::random();
    let wrapped = wrap_key(&kek, &master, fs_id);
    let descriptor = KeySourceDescriptor::Passphrase {
        m_cost_kib: ARGON2_M_KIB,
        t_cost: ARGON2_T,
        p_cost: ARGON2_P,
        salt: B64.encode(salt),
        wrapped_key: B64.encode(wrapped),
    };
    Ok((master, descriptor))
}

/// Largest argon2 parameters a config may ask for: 1 GiB, 16 passes, 8 lanes. The config is
/// read before anything is authenticated, so these bound what an edited one can make us spend.
pub const ARGON2_MAX_M_KIB: u32 = 1024 * 1024;
pub const ARGON2_MAX_T: u32 = 16;
pub const ARGON2_MAX_P: u32 = 8;

fn check_argon2_bounds(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<(), KeySourceError> {
    if !(8 * 1024..=ARGON2_MAX_M_KIB).contains(&m_cost_kib)
        || !(1..=ARGON2_MAX_T).contains(&t_cost)
        || !(1..=ARGON2_MAX_P).contains(&p_cost)
    {
        return Err(KeySourceError::Damaged(format!(
            "argon2 parameters m={m_cost_kib} KiB, t={t_cost}, p={p_cost} are outside the accepted bounds (8 MiB..1 GiB, 1..{ARGON2_MAX_T} passes, 1..{ARGON2_MAX_P} lanes)"
        )));
    }
    Ok(())
}

pub fn unwrap_passphrase(
    input: &PassphraseInput,
    stored: &KeySourceDescriptor,
    fs_id: &[u8; 16],
) -> Result<MasterKey, KeySourceError> {
    let KeySourceDescriptor::Passphrase {
        m_cost_kib,
        t_cost,
        p_cost,
        salt,
        wrapped_key,
    } = stored
    else {
        return Err(KeySourceError::Damaged(
            "not a passphrase descriptor".into(),
        ));
    };
    check_argon2_bounds(*m_cost_kib, *t_cost, *p_cost)?;
    let salt = B64
        .decode(salt)
        .map_err(|_| KeySourceError::Damaged("salt is not base64".into()))?;
    if !(8..=64).contains(&salt.len()) {
        return Err(KeySourceError::Damaged("salt has the wrong length".into()));
    }
    let wrapped = B64
        .decode(wrapped_key)
        .map_err(|_| KeySourceError::Damaged("wrapped key is not base64".into()))?;
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(KeySourceError::Damaged(
            "wrapped key has the wrong length".into(),
        ));
    }
    let pass = read_passphrase(input, false)?;
    let kek = argon2_kek(&pass, &salt, *m_cost_kib, *t_cost, *p_cost)?;
    unwrap_key(&kek, &wrapped, fs_id).map_err(|_| KeySourceError::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_parameters_from_a_config_are_bounded() {
        assert!(check_argon2_bounds(ARGON2_M_KIB, ARGON2_T, ARGON2_P).is_ok());
        for (m, t, p) in [
            (u32::MAX, 3, 1),
            (ARGON2_MAX_M_KIB + 1, 3, 1),
            (64 * 1024, 1000, 1),
            (64 * 1024, 3, 255),
            (64 * 1024, 0, 1),
            (1, 3, 1),
        ] {
            assert!(check_argon2_bounds(m, t, p).is_err(), "m={m} t={t} p={p}");
        }
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keyfile_is_created_0400_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = create_or_read_keyfile(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o400);
        assert_eq!(read_keyfile(&path).unwrap().expose(), a.expose());
    }

    #[test]
    fn insecure_or_short_keyfile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_keyfile(&path),
            Err(KeySourceError::KeyfileInsecure { .. })
        ));
        std::fs::write(&path, [1u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_keyfile(&path),
            Err(KeySourceError::KeyfileLength { len: 31, .. })
        ));
        assert!(matches!(
            read_keyfile(&dir.path().join("none")),
            Err(KeySourceError::KeyfileMissing { .. })
        ));
    }

    #[test]
    fn passphrase_wraps_and_rejects_wrong_passphrase() {
        let cmd = |p: &str| PassphraseInput::Command(format!("echo {p}"));
        let fs_id = [5u8; 16];
        let (master, desc) = init_passphrase(&cmd("correct horse"), &fs_id).unwrap();
        let back = unwrap_passphrase(&cmd("correct horse"), &desc, &fs_id).unwrap();
        assert_eq!(back.expose(), master.expose());
        assert!(matches!(
            unwrap_passphrase(&cmd("wrong"), &desc, &fs_id),
            Err(KeySourceError::WrongPassphrase)
        ));
        assert!(matches!(
            unwrap_passphrase(&cmd("correct horse"), &desc, &[6; 16]),
            Err(KeySourceError::WrongPassphrase)
        ));
    }
}

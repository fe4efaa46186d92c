//! Confined, typed access to the hostile backing store: one name at a time relative to a directory
//! descriptor, never following a symlink, never blocking on a FIFO, type checked, reads bounded.
//!
//! Every name passed here is a single path component (an encrypted name, or one of the fixed
//! internal names), so `O_NOFOLLOW` on that one component confines the open exactly as
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` would: there is no other component to follow.
//! Whatever fails a check is reported as `InvalidData` ("hostile"), which callers turn into EIO
//! plus one audit event for that object.

use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Flags of every read-only open of an internal file: no symlink, no blocking on a FIFO or a
/// device, no controlling terminal.
const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// An object of the store is not what secretfs put there.
pub fn hostile(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// True for the errors `hostile` makes and for a symlink met where none may be (ELOOP from
/// `O_NOFOLLOW`, ENOTDIR from `O_DIRECTORY`, ENXIO from a socket opened non-blocking).
pub fn is_hostile(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
        || matches!(
            e.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::ENXIO)
        )
}

fn kind_name(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "unknown object",
    }
}

/// Opens `name` in `dir` read-only, only if it is a regular file. The type is checked on an
/// `O_PATH` descriptor first, so a planted device or FIFO is never opened at all, then that
/// same inode is reopened for reading (no window for a swap).
pub fn open_regular(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let path = sys::openat(
        dir,
        name,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )?;
    let st = sys::fstat(path.as_raw_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(hostile(format!(
            "{} is a {}, not a regular file",
            name.to_string_lossy(),
            kind_name(st.st_mode)
        )));
    }
    sys::reopen(path.as_raw_fd(), READ_FLAGS & !libc::O_NOFOLLOW)
}

/// Opens the directory `name` in `dir` (no symlink followed) for listing and `*at` calls.
pub fn open_dir(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    sys::openat(dir, name, READ_FLAGS | libc::O_DIRECTORY, 0)
}

/// Reads the whole regular file `name` of `dir`, refusing anything longer than `max` bytes.
pub fn read_bounded(dir: RawFd, name: &CStr, max: usize) -> io::Result<Vec<u8>> {
    let fd = open_regular(dir, name)?;
    read_fd_bounded(fd.as_raw_fd(), max).map_err(|e| annotate(e, &name.to_string_lossy()))
}

fn annotate(e: io::Error, name: &str) -> io::Error {
    if e.kind() == io::ErrorKind::InvalidData {
        hostile(format!("{name}: {e}"))
    } else {
        e
    }
}

/// Reads at most `max` bytes from an open regular file; more than that is hostile. The size
/// from fstat is not trusted: the file may grow while it is read.
pub fn read_fd_bounded(fd: RawFd, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max + 1];
    let done = sys::pread(fd, &mut buf, 0)?;
    if done > max {
        return Err(hostile(format!("longer than the {max} bytes it may hold")));
    }
    buf.truncate(done);
    Ok(buf)
}

/// Whether `put_file` may replace what is at the name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Rename over it (a planted symlink is replaced, never followed).
    Replace,
    /// Fail with EEXIST if anything is there (`RENAME_NOREPLACE`): a directory id, which two
    /// racing repairs must not both write.
    Keep,
}

/// Puts `data` under `name` in `dir` as a new file, crash-safely: written to an `O_EXCL`
/// temporary, fsync'd, renamed onto `name`, and the directory fsync'd; nothing is ever written
/// into an existing object. `temp_prefix` must be a name the store classifies as internal.
pub fn put_file(
    dir: RawFd,
    name: &CStr,
    data: &[u8],
    mode: libc::mode_t,
    temp_prefix: &str,
    existing: Existing,
) -> io::Result<()> {
    let tmp = super::temp_name(temp_prefix)?;
    let result = (|| {
        let fd = sys::openat(
            dir,
            &tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )?;
        sys::pwrite_all(fd.as_raw_fd(), data, 0)?;
        sys::fsync(fd.as_raw_fd(), false)?;
        let flags = match existing {
            Existing::Replace => 0,
            Existing::Keep => libc::RENAME_NOREPLACE,
        };
        sys::renameat2(dir, &tmp, dir, name, flags)
    })();
    if result.is_err() {
        let _ = sys::unlinkat(dir, &tmp, 0);
        return result;
    }
    sync_dir(dir)
}

/// fsync of a directory given by any descriptor (O_PATH included), so the rename it follows
/// survives a crash; a failure is the caller's, as a failed fsync of the file would be.
fn sync_dir(dir: RawFd) -> io::Result<()> {
    let d = sys::openat(dir, c".", READ_FLAGS | libc::O_DIRECTORY, 0)?;
    sys::fsync(d.as_raw_fd(), false)
}

/// Opens a directory named by the administrator (the backing root): symlinks in that path are
/// the administrator's own, so they are followed; the result must be a directory.
pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    sys::openat(
        libc::AT_FDCWD,
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn symlinks_fifos_and_directories_are_hostile_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = open_root(dir.path()).unwrap();
        let fd = root.as_raw_fd();
        std::fs::write(dir.path().join("ok"), b"0123").unwrap();
        symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        let fifo = c(dir.path().join("fifo").to_str().unwrap());
        // SAFETY: plain mkfifo on a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        assert_eq!(read_bounded(fd, &c("ok"), 4).unwrap(), b"0123");
        for name in ["link", "dir", "fifo"] {
            let e = read_bounded(fd, &c(name), 4).unwrap_err();
            assert!(is_hostile(&e), "{name}: {e}");
        }
        let e = read_bounded(fd, &c("ok"), 3).unwrap_err();
        assert!(is_hostile(&e), "too long accepted: {e}");
        assert!(!is_hostile(&read_bounded(fd, &c("none"), 4).unwrap_err()));
    }

    #[test]
    fn put_file_replaces_a_planted_symlink_never_its_target_and_keeps_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let decoy = dir.path().join("decoy");
        std::fs::write(&decoy, b"host file").unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        symlink(&decoy, store.join("side")).unwrap();
        let root = open_root(&store).unwrap();
        put_file(
            root.as_raw_fd(),
            &c("side"),
            b"new",
            0o600,
            "secretfs.tmp.",
            Existing::Replace,
        )
        .unwrap();
        let kept = put_file(
            root.as_raw_fd(),
            &c("side"),
            b"other",
            0o600,
            "secretfs.tmp.",
            Existing::Keep,
        );
        assert_eq!(kept.unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read(&decoy).unwrap(), b"host file");
        assert_eq!(std::fs::read(store.join("side")).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(store.join("side"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_dir(&store).unwrap().count(),
            1,
            "temporary left"
        );
    }
}

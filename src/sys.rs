//! Thin, safe wrappers over the `*at()` syscalls the frontend needs on O_PATH descriptors.
//! Every function returns `io::Result` so callers can hand the errno straight to the kernel.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

pub fn cstring(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub fn empty_path() -> &'static CStr {
    c""
}

/// `/proc/self/fd/N`: how to reach an O_PATH descriptor with calls that take no dirfd.
pub fn proc_path(fd: RawFd) -> CString {
    // A decimal integer never contains NUL.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_else(|_| unreachable!())
}

pub fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall on valid C strings; the returned fd is owned by the caller.
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is not owned by anyone else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Re-opens an O_PATH descriptor for I/O.
pub fn reopen(fd: RawFd, flags: libc::c_int) -> io::Result<OwnedFd> {
    openat(libc::AT_FDCWD, &proc_path(fd), flags, 0)
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: st is a plain-old-data out parameter fully written on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub fn fstatat(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn mkdirat(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknodat(dir: RawFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe {
        libc::mknodat(
            dir,
            name.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })
    .map(drop)
}

pub fn unlinkat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    olddir: RawFd,
    old: &CStr,
    newdir: RawFd,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::renameat2(olddir, old.as_ptr(), newdir, new.as_ptr(), flags) }).map(drop)
}

/// Hard-links the file behind an O_PATH descriptor (needs CAP_DAC_READ_SEARCH, which root has).
pub fn link_fd(fd: RawFd, newdir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe {
        libc::linkat(
            fd,
            empty_path().as_ptr(),
            newdir,
            new.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

pub fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize * 2];
    // SAFETY: buf is writable for its full length.
    let n = cvt_size(unsafe {
        libc::readlinkat(
            fd,
            empty_path().as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn chown_fd(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    // SAFETY: plain syscall; u32::MAX is the kernel's "leave unchanged".
    cvt(unsafe {
        libc::fchownat(
            fd,
            empty_path().as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on /proc/self/fd/N, which resolves to the inode behind fd.
    cvt(unsafe {
        libc::fchmodat(
            libc::AT_FDCWD,
            proc_path(fd).as_ptr(),
            mode as libc::mode_t,
            0,
        )
    })
    .map(drop)
}

pub fn utimens_fd(fd: RawFd, times: &[libc::timespec; 2], is_symlink: bool) -> io::Result<()> {
    if is_symlink {
        // SAFETY: times points to two timespecs; AT_EMPTY_PATH acts on the symlink itself.
        cvt(unsafe {
            libc::utimensat(
                fd,
                empty_path().as_ptr(),
                times.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        })
        .map(drop)
    } else {
        // SAFETY: as above, through the /proc magic link.
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, proc_path(fd).as_ptr(), times.as_ptr(), 0) })
            .map(drop)
    }
}

pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the slice is valid for writes of its length.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match cvt_size(n) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub fn pwrite_all(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the slice is valid for reads of its length.
        let n = unsafe {
            libc::pwrite(
                fd,
                buf[done..].as_ptr().cast(),
                buf.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match cvt_size(n) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::ftruncate(fd, len as libc::off_t) }).map(drop)
}

pub fn fallocate(fd: RawFd, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t) }).map(drop)
}

pub fn lseek(fd: RawFd, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

pub fn fsync(fd: RawFd, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscalls.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
    .map(drop)
}

pub fn fstatvfs(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: out parameter written on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatvfs(fd, &mut st) })?;
    Ok(st)
}

/// Lists a directory through its O_PATH descriptor: (name, backing inode, d_type).
pub fn read_dir(fd: RawFd) -> io::Result<Vec<(Vec<u8>, u64, u8)>> {
    let dirfd = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY)?;
    // SAFETY: fdopendir takes ownership of the descriptor; closedir releases it.
    let dir = unsafe { libc::fdopendir(dirfd.as_raw_fd()) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dirfd);
    let mut out = Vec::new();
    loop {
        // SAFETY: dir is a valid DIR*; readdir returns NULL at the end.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: ent points to a valid dirent64 until the next readdir call.
        let (name, ino, kind) = unsafe {
            let e = &*ent;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_ino,
                e.d_type,
            )
        };
        out.push((name, ino, kind));
    }
    // SAFETY: dir came from fdopendir and is closed once.
    unsafe { libc::closedir(dir) };
    Ok(out)
}

pub fn getxattr(fd: RawFd, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length (a zero length queries the size).
    cvt_size(unsafe {
        libc::getxattr(
            proc_path(fd).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

pub fn setxattr(fd: RawFd, name: &CStr, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    // SAFETY: value is readable for its length.
    cvt(unsafe {
        libc::setxattr(
            proc_path(fd).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn listxattr(fd: RawFd) -> io::Result<Vec<u8>> {
    let path = proc_path(fd);
    loop {
        // SAFETY: a NULL buffer with size 0 asks for the needed size.
        let size = cvt_size(unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; size];
        // SAFETY: buf is writable for its length.
        match cvt_size(unsafe {
            libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

pub fn removexattr(fd: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: plain syscall.
    cvt(unsafe { libc::removexattr(proc_path(fd).as_ptr(), name.as_ptr()) }).map(drop)
}

pub fn os(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

/// The kernel's MAX_HANDLE_SZ: no filesystem's file handle is longer.
const MAX_HANDLE_LEN: usize = 128;

/// `struct file_handle` with room for the longest handle.
#[repr(C)]
struct HandleBuf {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_LEN],
}

/// A backing object's file handle: names the object itself (not a path) on its filesystem, and
/// stops working once the object is deleted, even if its inode number is reused.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FileHandle {
    kind: libc::c_int,
    bytes: Box<[u8]>,
}

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: the handle of the object `fd` refers to.
pub fn handle_of(fd: RawFd) -> io::Result<FileHandle> {
    let mut buf = HandleBuf {
        handle_bytes: MAX_HANDLE_LEN as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_LEN],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf is a file_handle with handle_bytes of room after its header; mount_id is an
    // out parameter.
    cvt(unsafe {
        libc::name_to_handle_at(
            fd,
            empty_path().as_ptr(),
            (&mut buf as *mut HandleBuf).cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let len = (buf.handle_bytes as usize).min(MAX_HANDLE_LEN);
    Ok(FileHandle {
        kind: buf.handle_type,
        bytes: buf.f_handle[..len].into(),
    })
}

/// `open_by_handle_at`: opens the object `handle` names on the filesystem of `mount_fd` (which
/// must not be an O_PATH descriptor). Needs CAP_DAC_READ_SEARCH; ESTALE once the object is gone.
pub fn open_handle(
    mount_fd: RawFd,
    handle: &FileHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let mut buf = HandleBuf {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.kind,
        f_handle: [0; MAX_HANDLE_LEN],
    };
    buf.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: buf is a valid file_handle; the returned fd is owned by the caller.
    let fd = cvt(unsafe {
        libc::open_by_handle_at(
            mount_fd,
            (&mut buf as *mut HandleBuf).cast::<libc::file_handle>(),
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open_by_handle_at and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind a request may keep a setgid bit on a file of group `gid`, by
/// the kernel's rule (`in_group_or_capable`): `gid` among its groups, or CAP_FSETID. Read from
/// `/proc/PID/status`; a caller we cannot see (pid 0: another pid namespace) may not.
pub fn in_group_or_capable(pid: u32, fsgid: u32, gid: u32) -> bool {
    if fsgid == gid {
        return true;
    }
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status_allows(&status, gid)
}

fn status_allows(status: &str, gid: u32) -> bool {
    const CAP_FSETID: u32 = 4;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let in_group =
        field("Groups:").is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)));
    let capable = field("CapEff:")
        .and_then(|c| u64::from_str_radix(c, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0);
    in_group || capable
}

#[cfg(test)]
mod status_tests {
    use super::status_allows;

    #[test]
    fn groups_and_cap_fsetid_are_read_from_status() {
        let plain = "Name:\tsh\nGroups:\t24 100 \nCapEff:\t0000000000000000\n";
        assert!(status_allows(plain, 100));
        assert!(!status_allows(plain, 10));
        assert!(!status_allows(plain, 2), "no prefix match: 24 is not 2");
        let root = "Groups:\t\nCapEff:\t000001ffffffffff\n";
        assert!(status_allows(root, 10));
        let fsetid_only = "Groups:\nCapEff:\t0000000000000010\n";
        assert!(status_allows(fsetid_only, 10));
        assert!(!status_allows("", 10));
    }
}

//! The filesystem core's shared state: `SecretFs` (inode table, handle table, keys, options),
//! the `Caller` of an operation, and setattr; the fuser adapter on it is `adapter.rs`.

pub(crate) mod acl;
mod adapter;
mod dirs;
pub mod error;
mod files;
pub mod inodes;
pub mod kmount;
mod ops;
#[cfg(test)]
mod reftest;
pub(crate) mod xattr;

use crate::crypto::keys::KeyRing;
use crate::crypto::names::NameCipher;
use crate::crypto::Codec;
use crate::sys;
use dashmap::DashMap;
use dirs::{io, Listed};
pub use error::Error;
use files::Content;
use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, TimeOrNow};
use inodes::{Inode, InodeTable, Stamp};
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

/// Choices made at mount time that change how the frontend behaves.
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
    /// How long the kernel may cache attributes and names.
    pub ttl: Duration,
    pub writeback_cache: bool,
    /// How many backing descriptors of inodes the daemon keeps open at most (`max-fds=`).
    pub max_fds: usize,
    /// POSIX ACLs, stored and enforced by the kernel (`noacl` turns them off).
    pub acl: bool,
    /// How contents and names are stored: always `Encrypted` outside benchmark builds.
    pub codec: Codec,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            ttl: Duration::from_secs(1),
            writeback_cache: false,
            max_fds: inodes::DEFAULT_FD_BOUND,
            acl: true,
            codec: Codec::default(),
        }
    }
}

/// Who makes a request: the ids the kernel reports for the calling process. The core takes
/// this, never a `fuser::Request`, so it can be driven without a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// The attribute changes of one setattr request.
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
    /// The caller (pid, fsgid) may lack CAP_FSETID: a size change clears setuid/setgid.
    kill_privs: Option<(u32, u32)>,
}

enum Handle {
    File {
        inode: Arc<Inode>,
        /// O_SYNC / O_DSYNC of the open, which the backing descriptor must carry.
        sync: i32,
        /// The backing descriptor and content state, opened at the first I/O: a reader served
        /// from the page cache (FOPEN_KEEP_CACHE) never needs them.
        io: OnceLock<(OwnedFd, Arc<Content>)>,
    },
    Dir {
        inode: Arc<Inode>,
        entries: Mutex<Vec<Listed>>,
    },
}

impl Handle {
    fn inode(&self) -> &Inode {
        match self {
            Handle::File { inode, .. } | Handle::Dir { inode, .. } => inode,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Handle::File { io, inode, .. } = self {
            // The backing descriptor and this handle's share of the content state go first.
            io.take();
            inode.release_content();
        }
        self.inode().closed();
    }
}

pub struct SecretFs {
    inodes: InodeTable,
    keys: KeyRing,
    names: NameCipher,
    /// xattr::HOT_XATTRS with their stored names.
    hot_xattrs: Vec<(&'static [u8], String)>,
    handles: DashMap<u64, Arc<Handle>>,
    next_fh: AtomicU64,
    opts: FsOptions,
    /// ACLs asked for and granted by the kernel at FUSE init.
    acl: bool,
    /// How to tell the kernel a cached inode changed; set once the session exists.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

const GEN: Generation = Generation(0);

impl SecretFs {
    /// Opens the backing directory; `keys` must already have passed the config MAC check.
    pub fn new(
        backing: &Path,
        root_dir_id: [u8; 16],
        keys: KeyRing,
        opts: FsOptions,
    ) -> std::io::Result<Self> {
        let path = sys::cstring(backing.as_os_str().as_encoded_bytes())?;
        let root = sys::openat(libc::AT_FDCWD, &path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let names = opts.codec.name_cipher(&keys);
        let hot_xattrs = xattr::HOT_XATTRS
            .iter()
            .filter_map(|n| Some((*n, names.encrypt_xattr_name(n)?)))
            .collect();
        Ok(Self {
            inodes: InodeTable::new(root, root_dir_id, opts.max_fds)?,
            keys,
            names,
            hot_xattrs,
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            opts,
            acl: false,
            notifier: Arc::new(OnceLock::new()),
        })
    }

    /// Where the mount puts the session's notifier (`Session::notifier`) once it has one.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        Arc::clone(&self.notifier)
    }

    /// Drops the kernel's cached attributes of `ino` (not its pages): for changes it cannot
    /// see in the reply, such as the mode bits a write or fallocate cleared. A `stat` asking
    /// for the mode alone would otherwise be answered from the cache.
    fn invalidate_attrs(&self, ino: INodeNo) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(ino, -1, 0) {
                tracing::debug!("cannot invalidate inode {}: {e}", ino.0);
            }
        }
    }

    fn acl_enabled(&self) -> bool {
        self.acl
    }

    fn add_handle(&self, handle: Handle) -> FileHandle {
        handle.inode().opened();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, Arc::new(handle));
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Error> {
        self.handles
            .get(&fh.0)
            .map(|h| Arc::clone(&h))
            .ok_or(Error::new(Errno::EBADF))
    }

    /// Runs `f` on the backing descriptor and content state behind an open file handle.
    fn with_file<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(RawFd, &Content, &Inode) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match &*self.handle(fh)? {
            Handle::File { inode, sync, io } => {
                let (fd, content) = match io.get() {
                    Some(io) => io,
                    None => {
                        let fd = self.open_backing(inode, *sync)?;
                        let content = self.content(inode, fd.as_raw_fd())?;
                        // Two first I/Os may race: one descriptor wins, the other is closed.
                        let _ = io.set((fd, content));
                        io.get().ok_or(Error::new(Errno::EIO))?
                    }
                };
                f(fd.as_raw_fd(), content, inode)
            }
            Handle::Dir { .. } => Err(Errno::EISDIR.into()),
        }
    }

    /// The shared content state of a regular file, loaded with `fd` on first use.
    fn content(&self, inode: &Inode, fd: i32) -> Result<Arc<Content>, Error> {
        let mut slot = inode.content.lock();
        if let Some(c) = slot.as_ref() {
            return Ok(Arc::clone(c));
        }
        let content = Arc::new(Content::load(inode.ino, fd, &self.keys, self.opts.codec)?);
        *slot = Some(Arc::clone(&content));
        Ok(content)
    }

    /// Opens the backing file for I/O. Always read-write (unless mounted read-only): partial
    /// block writes must read the block first, even through an O_WRONLY handle.
    fn open_backing(&self, inode: &Inode, flags: i32) -> Result<OwnedFd, Error> {
        let sync = flags & (libc::O_SYNC | libc::O_DSYNC);
        sys::reopen(inode.fd()?.raw(), self.backing_access() | sync).map_err(io)
    }

    fn backing_access(&self) -> i32 {
        if self.opts.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        }
    }

    /// A new handle on a regular file; `created` is the descriptor create() already has.
    /// Nothing is opened on the backing store until the first I/O.
    fn open_file(
        &self,
        inode: &Arc<Inode>,
        flags: i32,
        created: Option<OwnedFd>,
    ) -> Result<(FileHandle, FopenFlags), Error> {
        let io = OnceLock::new();
        if let Some(fd) = created {
            let content = self.content(inode, fd.as_raw_fd())?;
            let _ = io.set((fd, content));
        }
        let mut fopen = self.open_flags();
        // The kernel may keep the pages it has when the file is as we left it at the last
        // release: every change through this mount went through the same kernel inode (and
        // its page cache), so only a change behind our back could make them stale.
        if let Ok(st) = sys::fstat(inode.fd()?.raw()) {
            if *inode.stamp.lock() == Some(Stamp::of(&st)) {
                fopen |= FopenFlags::FOPEN_KEEP_CACHE;
            }
        }
        let fh = self.add_handle(Handle::File {
            inode: Arc::clone(inode),
            sync: flags & (libc::O_SYNC | libc::O_DSYNC),
            io,
        });
        Ok((fh, fopen))
    }

    /// Flags for every file open: FLUSH does nothing here (writes are not buffered and
    /// locks are the kernel's), so the kernel need not send it on every close.
    fn open_flags(&self) -> FopenFlags {
        FopenFlags::FOPEN_NOFLUSH
    }

    fn set_attr(&self, inode: &Arc<Inode>, change: SetAttr) -> Result<FileAttr, Error> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
            kill_privs,
        } = change;
        if uid.is_some() || gid.is_some() {
            sys::chown_fd(inode.fd()?.raw(), uid, gid).map_err(io)?;
            // The kernel asks for this itself on chown; done here too, it costs nothing once
            // the file is known to have no capabilities.
            self.kill_caps(inode)?;
        }
        if let Some(mode) = mode {
            if inode.kind != FileType::Symlink {
                sys::chmod_fd(inode.fd()?.raw(), mode & 0o7777).map_err(io)?;
                self.chmod_acl(inode, mode)?;
            }
        }
        if let Some(size) = size {
            if inode.kind != FileType::RegularFile {
                return Err(if inode.kind == FileType::Directory {
                    Errno::EISDIR
                } else {
                    Errno::EINVAL
                }
                .into());
            }
            // HANDLE_KILLPRIV_V2: truncation by an unprivileged caller drops setuid/setgid.
            // fuser does not pass the kernel's FATTR_KILL_SUIDGID, so "unprivileged" is
            // approximated by a non-root caller.
            if let Some((pid, fsgid)) = kill_privs {
                self.kill_suid_sgid(inode, pid, fsgid)?;
            }
            self.kill_caps(inode)?;
            // ftruncate comes with the handle; truncate(2) by path has none.
            let open_file =
                fh.filter(|fh| matches!(self.handle(*fh).as_deref(), Ok(Handle::File { .. })));
            match open_file {
                Some(fh) => {
                    self.with_file(fh, |fd, content, _| content.truncate(fd, size, &self.keys))?
                }
                None => {
                    let fd = self.open_backing(inode, 0)?;
                    self.content(inode, fd.as_raw_fd())?.truncate(
                        fd.as_raw_fd(),
                        size,
                        &self.keys,
                    )?;
                }
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            sys::utimens_fd(inode.fd()?.raw(), &times, inode.kind == FileType::Symlink)
                .map_err(io)?;
        }
        self.attr_of(inode)
    }

    /// Clears setuid, and setgid when group-executable or when the caller (`pid`, `fsgid`) is
    /// outside the file's group without CAP_FSETID (the kernel's `setattr_should_drop_sgid`),
    /// as a write, truncate or fallocate by an unprivileged caller must (we asked for
    /// FUSE_HANDLE_KILLPRIV_V2).
    fn kill_suid_sgid(&self, inode: &Inode, pid: u32, fsgid: u32) -> Result<(), Error> {
        let st = sys::fstat(inode.fd()?.raw()).map_err(io)?;
        let mode = st.st_mode;
        let mut kill = mode & libc::S_ISUID;
        if mode & libc::S_ISGID != 0
            && (mode & libc::S_IXGRP != 0 || !sys::in_group_or_capable(pid, fsgid, st.st_gid))
        {
            kill |= libc::S_ISGID;
        }
        if kill != 0 {
            sys::chmod_fd(inode.fd()?.raw(), mode & 0o7777 & !kill).map_err(io)?;
            self.invalidate_attrs(INodeNo(inode.ino));
        }
        Ok(())
    }

    fn fill_dir(&self, fh: FileHandle, offset: u64) -> Result<Arc<Handle>, Error> {
        let handle = self.handle(fh)?;
        if let Handle::Dir { inode, entries } = &*handle {
            // Offset 0 means a fresh walk (opendir or rewinddir): take a new snapshot.
            if offset == 0 {
                let listing = self.list(inode)?;
                listing.damaged.iter().for_each(Error::audit);
                *entries.lock() = listing.entries;
            }
        }
        Ok(handle)
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        },
    }
}

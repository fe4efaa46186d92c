//! The FUSE frontend: `SecretFs` implements `fuser::Filesystem` as a thin layer that decodes each
//! request, delegates to inodes/dirs/files/xattr and turns the result into a reply.

pub(crate) mod acl;
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
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use inodes::{Inode, InodeTable, Stamp};
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xattr::XattrReply;

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

impl Caller {
    fn of(req: &Request) -> Self {
        Self {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }
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

fn reply_entry(reply: ReplyEntry, ttl: &Duration, result: Result<(Arc<Inode>, FileAttr), Error>) {
    match result {
        Ok((_, attr)) => reply.entry(ttl, &attr, GEN),
        Err(e) => reply.error(e.report()),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Error>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e.report()),
    }
}

fn reply_xattr(reply: ReplyXattr, result: Result<XattrReply, Error>) {
    match result {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(e.report()),
    }
}

impl Filesystem for SecretFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_ASYNC_DIO: with it the kernel completes an asynchronous O_DIRECT write
        // without dropping the pages that buffered readers cached meanwhile, and they read
        // stale data (xfstests generic/451). Synchronous DIO invalidates after each write.
        let mut wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            // We clear setuid/setgid ourselves (write flag, truncate): in exchange the kernel
            // stops asking for security.capability before every single write, which doubled
            // the requests of small writes.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.opts.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        // The kernel enforces ACLs and asks us for them; it also stops applying the umask
        // (DONT_MASK), because a directory's default ACL replaces it: both done in acl.rs.
        let acl = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        if self.opts.acl && config.capabilities().contains(acl) {
            wanted |= acl;
            self.acl = true;
        }
        // Unsupported capabilities are simply not enabled: the kernel decides.
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self
            .inode(parent.0)
            .and_then(|p| self.lookup_child(&p, name));
        reply_entry(reply, &self.opts.ttl, result)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino.0).and_then(|i| self.attr_of(&i)) {
            Ok(attr) => reply.attr(&self.opts.ttl, &attr),
            Err(e) => reply.error(e.report()),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
            kill_privs: None,
        };
        match self.change_attrs(&Caller::of(req), ino.0, change) {
            Ok(attr) => reply.attr(&self.opts.ttl, &attr),
            Err(e) => reply.error(e.report()),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.read_symlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e.report()),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = self.make_node(&Caller::of(req), parent.0, name, mode, umask, rdev);
        reply_entry(reply, &self.opts.ttl, result)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.make_directory(&Caller::of(req), parent.0, name, mode, umask);
        reply_entry(reply, &self.opts.ttl, result)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.inode(parent.0)
                .and_then(|p| self.remove_file(&p, name)),
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.inode(parent.0).and_then(|p| self.remove_dir(&p, name)),
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_encoded_bytes();
        let result = self.make_symlink(&Caller::of(req), parent.0, link_name, target);
        reply_entry(reply, &self.opts.ttl, result)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.inode(parent.0).and_then(|p| {
            let np = self.inode(newparent.0)?;
            self.rename_entry(&p, name, &np, newname, flags.bits())
        });
        reply_empty(reply, result)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.make_link(ino.0, newparent.0, newname);
        reply_entry(reply, &self.opts.ttl, result)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .inode(ino.0)
            .and_then(|i| self.open_file(&i, flags.0, None))
        {
            Ok((fh, fopen)) => reply.opened(fh, fopen),
            Err(e) => reply.error(e.report()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The plaintext lives in a per-thread buffer: reply from inside the read, no copy.
        let mut reply = Some(reply);
        let result = self.read_file(fh, offset, size, |data| {
            if let Some(r) = reply.take() {
                r.data(data)
            }
        });
        if let (Err(e), Some(r)) = (result, reply.take()) {
            r.error(e.report())
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.write_file(&Caller::of(req), fh, offset, data, kill) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e.report()),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes go straight to the backing file; there is nothing buffered to flush.
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_file(fh);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.sync_file(fh, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir(ino.0) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e.report()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let handle = match self.fill_dir(fh, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(e.report()),
        };
        let Handle::Dir { entries, .. } = &*handle else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, e) in entries.lock().iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let handle = match self.fill_dir(fh, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(e.report()),
        };
        let Handle::Dir {
            inode: dir,
            entries,
        } = &*handle
        else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, e) in entries.lock().iter().enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            let full = match &e.backing {
                // "." and "..": the kernel takes no reference for them.
                None => match self.attr_of(dir) {
                    Ok(mut attr) => {
                        attr.ino = INodeNo(e.ino);
                        reply.add(INodeNo(e.ino), next, &e.name, &Duration::ZERO, &attr, GEN)
                    }
                    Err(_) => continue,
                },
                Some(backing) => match self.lookup_backing(dir, backing) {
                    Ok((inode, attr)) => {
                        let full = reply.add(
                            INodeNo(inode.ino),
                            next,
                            &e.name,
                            &self.opts.ttl,
                            &attr,
                            GEN,
                        );
                        if full {
                            // Not sent: give back the reference this lookup took.
                            self.inodes.forget(inode.ino, 1);
                        }
                        full
                    }
                    // Gone since the snapshot: skip it, as a fresh readdir would.
                    Err(_) => continue,
                },
            };
            if full {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(&fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.inode(ino.0).and_then(|inode| {
            let fd =
                sys::reopen(inode.fd()?.raw(), libc::O_RDONLY | libc::O_DIRECTORY).map_err(io)?;
            sys::fsync(fd.as_raw_fd(), datasync).map_err(io)
        });
        reply_empty(reply, result)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self
            .inode(inodes::ROOT)
            .and_then(|r| sys::fstatvfs(r.fd()?.raw()).map_err(io))
        {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                255,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(e.report()),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let result = self.set_xattr_as(&Caller::of(req), ino.0, sys::os(name), value, flags);
        reply_empty(reply, result)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            reply,
            self.inode(ino.0)
                .and_then(|i| self.get_xattr(&i, sys::os(name), size)),
        )
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let listed = self.inode(ino.0).and_then(|i| self.list_xattr(&i, size));
        reply_xattr(
            reply,
            listed.map(|(names, damaged)| {
                damaged.iter().for_each(Error::audit);
                names
            }),
        )
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(
            reply,
            self.inode(ino.0)
                .and_then(|i| self.remove_xattr(&i, sys::os(name))),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctl is supported. fuser's default answers the same but logs a warning each
        // time, and Python's open() asks isatty (TCGETS) on every file: one syslog attempt
        // (socket + connect) per file created or read.
        reply.error(Errno::ENOTTY)
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has already checked the mode bits.
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_file(&Caller::of(req), parent.0, name, mode, umask, flags) {
            Ok((attr, fh, fopen)) => reply.created(&self.opts.ttl, &attr, GEN, fh, fopen),
            Err(e) => reply.error(e.report()),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.allocate(&Caller::of(req), fh, offset, length, mode),
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let result = self.with_file(fh, |fd, content, _| {
            // As ext4: a negative offset is past every hole and every byte of data.
            let offset = u64::try_from(offset).map_err(|_| Errno::ENXIO)?;
            content.seek(fd, offset, whence)
        });
        match result {
            Ok(off) => reply.offset(off as i64),
            Err(e) => reply.error(e.report()),
        }
    }
}

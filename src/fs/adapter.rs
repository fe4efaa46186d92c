//! The fuser adapter: each `Filesystem` method decodes its request, calls one core method of
//! `SecretFs` and replies; failed operations are audited here, once (`fs::Error::report`).

use super::dirs::io;
use super::inodes::{self, Inode};
use super::xattr::XattrReply;
use super::{Caller, Error, Handle, SecretFs, SetAttr, GEN};
use crate::sys;
use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

impl Caller {
    pub(super) fn of(req: &Request) -> Self {
        Self {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
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
        if let Err(e) = self.release_file(fh) {
            e.audit();
        }
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
                    Err(e) => {
                        e.audit();
                        continue;
                    }
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
                    // Gone since the snapshot: skip it, as a fresh readdir would (damage is
                    // audited, and the entry's own lookup will fail with EIO).
                    Err(e) => {
                        e.audit();
                        continue;
                    }
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

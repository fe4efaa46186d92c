//! The core's operations on typed arguments: each request that is more than one inner call
//! (create, mkdir, link, symlink, write, release, …) as one method, with the caller as `Caller`.
//!
//! The FUSE adapter (`mod.rs`) only decodes a request, calls one of these and replies; the
//! reference-model test (`reftest.rs`) drives the same methods with no kernel in between.

use super::dirs::io;
use super::inodes::{self, Inode, Stamp};
use super::{Caller, Handle, SecretFs, SetAttr};
use crate::fs::Error;
use crate::store::symlinks;
use crate::sys;
use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags};
use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl SecretFs {
    pub(super) fn make_directory(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let p = self.inode(parent)?;
        let (mode, inherited) = self.creation_mode(&p, mode, umask, true)?;
        let (inode, attr) = self.make_dir(caller, &p, name, mode)?;
        self.apply_inherited(&inode, inherited)?;
        Ok((inode, attr))
    }

    /// mknod: FIFOs, sockets, devices, and regular files when the kernel asks this way.
    pub(super) fn make_node(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let p = self.inode(parent)?;
        let (mode, inherited) = self.creation_mode(&p, mode, umask, false)?;
        let (inode, attr) = self.create_entry(caller, &p, name, |pfd, backing| {
            if mode & libc::S_IFMT == libc::S_IFREG {
                sys::openat(
                    pfd,
                    backing,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    mode & 0o7777,
                )
                .map(drop)
            } else {
                sys::mknodat(pfd, backing, mode, rdev as u64)
            }
        })?;
        self.apply_inherited(&inode, inherited)?;
        Ok((inode, attr))
    }

    /// A regular file, created and opened in one step (O_CREAT through the kernel).
    pub(super) fn create_file(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, FileHandle, FopenFlags), Error> {
        let p = self.inode(parent)?;
        let (mode, inherited) = self.creation_mode(&p, mode, umask, false)?;
        // Created read-write right away: the handle keeps this descriptor, no reopen.
        let mut created = None;
        let access = self.backing_access() | (flags & (libc::O_SYNC | libc::O_DSYNC));
        let (inode, attr) = self.create_entry(caller, &p, name, |pfd, backing| {
            created = Some(sys::openat(
                pfd,
                backing,
                libc::O_CREAT | libc::O_EXCL | access,
                mode & 0o7777,
            )?);
            Ok(())
        })?;
        // A new backing file has no attributes: writes need not look for capabilities.
        inode.caps.store(inodes::CAPS_NONE, Ordering::SeqCst);
        self.apply_inherited(&inode, inherited)?;
        let (fh, fopen) = self.open_file(&inode, flags, created)?;
        Ok((attr, fh, fopen))
    }

    pub(super) fn make_symlink(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        target: &[u8],
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let p = self.inode(parent)?;
        // As the kernel: up to PATH_MAX less the NUL (long encodings are split, §7).
        if target.len() >= libc::PATH_MAX as usize {
            return Err(Errno::ENAMETOOLONG.into());
        }
        let encrypted = self.names.encrypt_symlink(target);
        self.create_entry(caller, &p, name, |pfd, backing| {
            symlinks::create(pfd, backing, encrypted.as_bytes())
        })
    }

    pub(super) fn read_symlink(&self, ino: u64) -> Result<Vec<u8>, Error> {
        let inode = self.inode(ino)?;
        let stored = symlinks::read(inode.fd()?.raw()).map_err(|e| {
            if crate::store::confined::is_hostile(&e) {
                Error::integrity("symlink", inode.ino, e.to_string())
            } else {
                io(e)
            }
        })?;
        self.names
            .decrypt_symlink(&stored)
            .map_err(|e| Error::integrity("symlink", inode.ino, e.to_string()))
    }

    /// A hard link: the backing file gets a second name, its content key stays the same.
    pub(super) fn make_link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let inode = self.inode(ino)?;
        let np = self.inode(new_parent)?;
        let stored = self.stored_name(&np, new_name)?;
        let backing = sys::cstring(stored.backing_name().as_bytes()).map_err(io)?;
        self.prepare_name(&np, &stored)?;
        if let Err(e) = sys::link_fd(inode.fd()?.raw(), np.fd()?.raw(), &backing) {
            self.forget_name(&np, &stored);
            return Err(io(e));
        }
        self.lookup_backing(&np, &backing)
    }

    /// `kill_suidgid`: the kernel says the writer lacks CAP_FSETID (FUSE_WRITE_KILL_SUIDGID).
    pub(super) fn write_file(
        &self,
        caller: &Caller,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> Result<(), Error> {
        self.with_file(fh, |fd, content, inode| {
            if kill_suidgid {
                self.kill_suid_sgid(inode, caller.pid, caller.gid)?;
            }
            // Whoever writes: a changed binary keeps no file capabilities (as the kernel's
            // file_remove_privs).
            self.kill_caps(inode)?;
            content.write(fd, offset, data)
        })
    }

    /// Reads through `reply`, called once with the plaintext (in a per-thread buffer).
    pub(super) fn read_file(
        &self,
        fh: FileHandle,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]),
    ) -> Result<(), Error> {
        self.with_file(fh, |fd, content, _| content.read(fd, offset, size, reply))
    }

    pub(super) fn allocate(
        &self,
        caller: &Caller,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Error> {
        self.with_file(fh, |fd, content, inode| {
            content.fallocate(fd, offset, length, mode)?;
            self.kill_caps(inode)?;
            // As ext4 (file_modified): a change by a caller without CAP_FSETID drops setuid and
            // setgid. The kernel leaves this to us under HANDLE_KILLPRIV_V2 and passes no flag
            // for fallocate, so "unprivileged" is approximated by uid != 0, as for truncate.
            if caller.uid != 0 {
                self.kill_suid_sgid(inode, caller.pid, caller.gid)?;
            }
            Ok(())
        })
    }

    pub(super) fn sync_file(&self, fh: FileHandle, datasync: bool) -> Result<(), Error> {
        self.with_file(fh, |fd, _, _| sys::fsync(fd, datasync).map_err(io))
    }

    /// Drops the handle; an error only says why the next open cannot reuse the kernel's cache
    /// (the release itself cannot fail).
    pub(super) fn release_file(&self, fh: FileHandle) -> Result<(), Error> {
        if let Some((_, handle)) = self.handles.remove(&fh.0) {
            if let Handle::File { inode, .. } = &*handle {
                // What the next open compares against to let the kernel keep its cache.
                let st = inode
                    .fd()
                    .and_then(|fd| sys::fstat(fd.raw()).map_err(Error::from));
                *inode.stamp.lock() = st.as_ref().ok().map(Stamp::of);
                st?;
            }
        }
        Ok(())
    }

    /// setattr; a caller other than root that changes the size (not the mode) loses setuid and
    /// setgid, as HANDLE_KILLPRIV_V2 asks.
    pub(super) fn change_attrs(
        &self,
        caller: &Caller,
        ino: u64,
        mut change: SetAttr,
    ) -> Result<FileAttr, Error> {
        let inode = self.inode(ino)?;
        change.kill_privs =
            (caller.uid != 0 && change.mode.is_none()).then_some((caller.pid, caller.gid));
        self.set_attr(&inode, change)
    }

    pub(super) fn set_xattr_as(
        &self,
        caller: &Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), Error> {
        // fuser does not pass the kernel's FUSE_SETXATTR_ACL_KILL_SGID: judged from /proc.
        let keeps_sgid = |gid| sys::in_group_or_capable(caller.pid, caller.gid, gid);
        let inode = self.inode(ino)?;
        self.set_xattr(&inode, name, value, flags, keeps_sgid)
    }

    pub(super) fn open_dir(&self, ino: u64) -> Result<FileHandle, Error> {
        let inode = self.inode(ino)?;
        if inode.kind != FileType::Directory {
            return Err(Errno::ENOTDIR.into());
        }
        Ok(self.add_handle(Handle::Dir {
            inode,
            entries: parking_lot::Mutex::new(Vec::new()),
        }))
    }
}

//! Extended attributes: `user.*`, `security.*`, `trusted.*` and the two POSIX ACL names and
//! values, stored encrypted as the backing object's `user.*` (`trusted.*` where it can have none).

use super::acl::{self, is_acl};
use super::dirs::io;
use super::inodes::{Inode, CAPS_MAYBE, CAPS_NONE};
use super::SecretFs;
use crate::crypto::names::{is_other_xattr_namespace, XATTR_USER_PREFIX};
use crate::fs::Error;
use crate::sys;
use std::ffi::CString;
use std::sync::atomic::Ordering;

/// File capabilities: the kernel reads them at exec (on a mount with `suid`).
const CAPABILITY: &[u8] = b"security.capability";
use fuser::{Errno, FileType};

/// Linux's limit on one xattr value, plus our nonce and tag.
const MAX_STORED_VALUE: usize = 65536 + 28;
/// The first read's buffer: enough for nearly every value (capabilities are 24 bytes).
const SMALL_STORED_VALUE: usize = 4096;

/// Names the kernel asks about often (at exec, at a file's first write, its first permission
/// check, every creation in a directory): their stored names are sealed once per mount
/// instead of at every request.
pub(super) const HOT_XATTRS: [&[u8]; 3] = [CAPABILITY, acl::ACCESS, acl::DEFAULT];

/// Not offered: SELinux labels FUSE mounts as a whole (genfs, `context=`), never per file,
/// and `ls -l` asks every file for it; answering from here costs no backing system call.
const SELINUX: &[u8] = b"security.selinux";

/// The answer to a get/list request: the size only, or the bytes.
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

fn sized(value: Vec<u8>, size: u32) -> Result<XattrReply, Error> {
    if size == 0 {
        Ok(XattrReply::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(Errno::ERANGE.into())
    } else {
        Ok(XattrReply::Data(value))
    }
}

/// Symlinks, FIFOs, sockets and devices: no filesystem keeps a `user.*` attribute on them, so
/// their (sealed) attributes live under the backing object's `trusted.*` (FORMAT.md §8).
fn keeps_no_user_xattrs(inode: &Inode) -> bool {
    !matches!(inode.kind, FileType::RegularFile | FileType::Directory)
}

/// The backing attribute that holds the sealed attribute `stored` ("user.<sealed>").
fn backing_name(inode: &Inode, stored: &str) -> Result<CString, Error> {
    let name = match stored.strip_prefix(XATTR_USER_PREFIX) {
        Some(sealed) if keeps_no_user_xattrs(inode) => format!("{TRUSTED_PREFIX}{sealed}"),
        _ => stored.to_string(),
    };
    sys::cstring(name.as_bytes()).map_err(io)
}

/// The sealed name ("user.<sealed>") behind a backing attribute name, if it is one of ours:
/// on objects without user attributes, `trusted.<sealed>` (base64url has no '.', so the long
/// symlink target's `trusted.secretfs.target` is never taken for one).
pub(crate) fn sealed_name(backing: &[u8], no_user_xattrs: bool) -> Option<Vec<u8>> {
    if !no_user_xattrs {
        return backing
            .starts_with(XATTR_USER_PREFIX.as_bytes())
            .then(|| backing.to_vec());
    }
    let sealed = backing.strip_prefix(TRUSTED_PREFIX.as_bytes())?;
    (!sealed.contains(&b'.')).then(|| [XATTR_USER_PREFIX.as_bytes(), sealed].concat())
}

const TRUSTED_PREFIX: &str = "trusted.";

impl SecretFs {
    /// The stored name of an attribute, or the errno Linux gives for those not offered.
    fn stored_xattr(&self, inode: &Inode, name: &[u8], missing: Errno) -> Result<String, Error> {
        let offered = name.starts_with(XATTR_USER_PREFIX.as_bytes())
            || (is_other_xattr_namespace(name) && name != SELINUX)
            || (is_acl(name) && self.acl_enabled());
        if !offered
            || (keeps_no_user_xattrs(inode) && name.starts_with(XATTR_USER_PREFIX.as_bytes()))
        {
            return Err(missing.into());
        }
        if name.len() > 255 {
            return Err(Errno::ERANGE.into());
        }
        if let Some((_, stored)) = self.hot_xattrs.iter().find(|(n, _)| *n == name) {
            return Ok(stored.clone());
        }
        self.names.encrypt_xattr_name(name).ok_or(missing.into())
    }

    pub(super) fn get_xattr(
        &self,
        inode: &Inode,
        name: &[u8],
        size: u32,
    ) -> Result<XattrReply, Error> {
        let value = if is_acl(name) && self.acl_enabled() {
            // Through the ACL layer, which knows when a file has none without asking.
            self.read_acl(inode, name)?.map(|a| a.to_bytes())
        } else {
            self.stored_value(inode, name)?
        };
        sized(value.ok_or(Error::new(Errno::NO_XATTR))?, size)
    }

    /// The decrypted value of an attribute, `None` when the object has none of that name.
    pub(super) fn stored_value(
        &self,
        inode: &Inode,
        name: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        let stored = self.stored_xattr(inode, name, Errno::NO_XATTR)?;
        let stored_c = backing_name(inode, &stored)?;
        let fd = inode.fd()?;
        // Most values are small: the full 64 KiB buffer only when a value is that large.
        let mut buf = vec![0u8; SMALL_STORED_VALUE];
        let n = match sys::getxattr(fd.raw(), &stored_c, &mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                buf.resize(MAX_STORED_VALUE, 0);
                sys::getxattr(fd.raw(), &stored_c, &mut buf)
            }
            other => other,
        };
        let n = match n {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        buf.truncate(n);
        let value = self
            .names
            .open_xattr_value(&stored, &buf)
            .map_err(|e| Error::integrity("xattr", inode.ino, e.to_string()))?;
        Ok(Some(value))
    }

    /// `keeps_sgid(gid)`: whether the caller is in group `gid` or has CAP_FSETID (asked
    /// only when an ACL change would otherwise keep a setgid bit).
    pub(super) fn set_xattr(
        &self,
        inode: &Inode,
        name: &[u8],
        value: &[u8],
        flags: i32,
        keeps_sgid: impl FnOnce(u32) -> bool,
    ) -> Result<(), Error> {
        let unsupported = if inode.kind == FileType::Symlink {
            Errno::EPERM
        } else {
            Errno::EOPNOTSUPP
        };
        // Checked first, so that a refused name is refused before an ACL value is parsed.
        self.stored_xattr(inode, name, unsupported)?;
        if is_acl(name) {
            return self.set_acl(inode, name, value, keeps_sgid);
        }
        if name == CAPABILITY {
            // Before the attribute exists, so a concurrent write cannot miss it.
            inode.caps.store(CAPS_MAYBE, Ordering::SeqCst);
        }
        self.store_value(inode, name, value, flags)?;
        if name == CAPABILITY {
            // And after: a write that removed nothing meanwhile must not leave it marked none.
            inode.caps.store(CAPS_MAYBE, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Encrypts and stores one attribute (`flags`: XATTR_CREATE / XATTR_REPLACE).
    pub(super) fn store_value(
        &self,
        inode: &Inode,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), Error> {
        let stored = self.stored_xattr(inode, name, Errno::EOPNOTSUPP)?;
        let sealed = self.names.seal_xattr_value(&stored, value);
        sys::setxattr(
            inode.fd()?.raw(),
            &backing_name(inode, &stored)?,
            &sealed,
            flags,
        )
        .map_err(io)
    }

    /// The attribute names as the caller sees them, and the damaged names left out (which the
    /// boundary audits).
    pub(super) fn list_xattr(
        &self,
        inode: &Inode,
        size: u32,
    ) -> Result<(XattrReply, Vec<Error>), Error> {
        let raw = sys::listxattr(inode.fd()?.raw()).map_err(io)?;
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let special = keeps_no_user_xattrs(inode);
        for stored in raw
            .split(|b| *b == 0)
            .filter_map(|n| sealed_name(n, special))
        {
            match self.names.decrypt_xattr_name(&stored) {
                // Stored by an earlier mount with ACLs; this one neither serves nor enforces them.
                Ok(name) if is_acl(&name) && !self.acl_enabled() => {}
                Ok(name) => {
                    out.extend_from_slice(&name);
                    out.push(0);
                }
                Err(e) => damaged.push(Error::integrity("xattr-name", inode.ino, e.to_string())),
            }
        }
        Ok((sized(out, size)?, damaged))
    }

    pub(super) fn remove_xattr(&self, inode: &Inode, name: &[u8]) -> Result<(), Error> {
        if is_acl(name) && self.acl_enabled() {
            return self.remove_acl(inode, name);
        }
        self.remove_value(inode, name)
    }

    pub(super) fn remove_value(&self, inode: &Inode, name: &[u8]) -> Result<(), Error> {
        let stored = self.stored_xattr(inode, name, Errno::NO_XATTR)?;
        sys::removexattr(inode.fd()?.raw(), &backing_name(inode, &stored)?).map_err(io)
    }

    /// Removes the file's capabilities, as any write, truncate or fallocate must (the kernel
    /// leaves it to us under FUSE_HANDLE_KILLPRIV_V2). Free once the file is known to have none.
    pub(super) fn kill_caps(&self, inode: &Inode) -> Result<(), Error> {
        if inode.kind != FileType::RegularFile || inode.caps.load(Ordering::SeqCst) == CAPS_NONE {
            return Ok(());
        }
        let stored = self.stored_xattr(inode, CAPABILITY, Errno::NO_XATTR)?;
        match sys::removexattr(
            inode.fd()?.raw(),
            &sys::cstring(stored.as_bytes()).map_err(io)?,
        ) {
            Ok(()) => {}
            // None there, or a backing store without user xattrs (tmpfs before Linux 6.6),
            // where no capability can ever have been stored.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => {}
            Err(e) => return Err(io(e)),
        }
        // A set that finishes after this marks the file again (set_xattr stores MAYBE last).
        inode.caps.store(CAPS_NONE, Ordering::SeqCst);
        Ok(())
    }
}

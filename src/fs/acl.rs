//! POSIX ACLs: the `system.posix_acl_*` value format, and the mode bookkeeping that the kernel
//! leaves to a FUSE filesystem under FUSE_POSIX_ACL (set, chmod, inheritance at creation).

use super::dirs::io;
use super::inodes::Inode;
use super::SecretFs;
use crate::fs::Error;
use crate::sys;
use fuser::{Errno, FileType};
use std::sync::atomic::Ordering;

pub use crate::crypto::names::{ACL_ACCESS_XATTR as ACCESS, ACL_DEFAULT_XATTR as DEFAULT};

/// The value layout of `posix_acl_xattr_header` and its entries (little-endian).
const VERSION: u32 = 2;
const HEADER_LEN: usize = 4;
const ENTRY_LEN: usize = 8;
/// Far more than any real ACL; the kernel caps a value at 64 KiB anyway.
const MAX_ENTRIES: usize = 8191;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// One ACL, in the order and with the ids the kernel gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// Reads a value; `None` unless it is a well-formed ACL (one owner, owning group and other
    /// entry each, a mask whenever named entries exist, permissions within rwx).
    pub fn parse(value: &[u8]) -> Option<Acl> {
        let (header, body) = value.split_at_checked(HEADER_LEN)?;
        if u32::from_le_bytes(header.try_into().ok()?) != VERSION
            || body.len() % ENTRY_LEN != 0
            || body.len() / ENTRY_LEN > MAX_ENTRIES
        {
            return None;
        }
        let entries: Vec<Entry> = body
            .chunks_exact(ENTRY_LEN)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let count = |tag| entries.iter().filter(|e| e.tag == tag).count();
        let known = entries.iter().all(|e| {
            e.perm & !7 == 0 && [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER].contains(&e.tag)
        });
        let named = count(USER) + count(GROUP) > 0;
        let valid = known
            && count(USER_OBJ) == 1
            && count(GROUP_OBJ) == 1
            && count(OTHER) == 1
            && count(MASK) <= 1
            && (!named || count(MASK) == 1);
        valid.then_some(Acl { entries })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn perm(&self, tag: u16) -> u32 {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map_or(0, |e| u32::from(e.perm))
    }

    fn has(&self, tag: u16) -> bool {
        self.entries.iter().any(|e| e.tag == tag)
    }

    /// The permission bits a file with this access ACL shows: the group class is the mask
    /// when there is one (as `posix_acl_equiv_mode`).
    pub fn mode_bits(&self) -> u32 {
        let group = if self.has(MASK) { MASK } else { GROUP_OBJ };
        self.perm(USER_OBJ) << 6 | self.perm(group) << 3 | self.perm(OTHER)
    }

    /// Says no more than the mode bits do: such an access ACL is not stored.
    pub fn is_minimal(&self) -> bool {
        !self
            .entries
            .iter()
            .any(|e| matches!(e.tag, USER | GROUP | MASK))
    }

    /// chmod on a file with an access ACL sets the owner, group class and other entries.
    pub fn chmod(&mut self, mode: u32) {
        let group = if self.has(MASK) { MASK } else { GROUP_OBJ };
        for e in &mut self.entries {
            let shift = match e.tag {
                USER_OBJ => 6,
                t if t == group => 3,
                OTHER => 0,
                _ => continue,
            };
            e.perm = ((mode >> shift) & 7) as u16;
        }
    }

    /// A new object's access ACL from its directory's default one: each class is limited by
    /// the mode the creator asked for, and that mode by the ACL (`posix_acl_create_masq`).
    /// Returns the permission bits the object gets.
    pub fn inherit(&mut self, mode: u32) -> u32 {
        let mut bits = mode & 0o777;
        let group = if self.has(MASK) { MASK } else { GROUP_OBJ };
        for e in &mut self.entries {
            let shift = match e.tag {
                USER_OBJ => 6,
                OTHER => 0,
                _ => continue,
            };
            e.perm &= ((bits >> shift) & 7) as u16;
            bits &= (u32::from(e.perm) << shift) | !(7 << shift);
        }
        for e in self.entries.iter_mut().filter(|e| e.tag == group) {
            e.perm &= ((bits >> 3) & 7) as u16;
            bits &= (u32::from(e.perm) << 3) | !0o070;
        }
        bits
    }
}

/// `Inode::acls`: bits saying a kind of ACL is known to be absent, so creations and chmods
/// ask the backing store nothing; above them a version, bumped by every change, so a reader
/// that saw "none" before a concurrent set cannot record it after.
const ACCESS_NONE: u32 = 1;
const DEFAULT_NONE: u32 = 2;
const VERSION_STEP: u32 = 4;
const BOTH_NONE: u32 = ACCESS_NONE | DEFAULT_NONE;

fn none_bit(name: &[u8]) -> u32 {
    if name == DEFAULT {
        DEFAULT_NONE
    } else {
        ACCESS_NONE
    }
}

pub fn is_acl(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

/// What a new object takes from its directory's default ACL.
#[derive(Default)]
pub struct Inherited {
    access: Option<Acl>,
    default: Option<Acl>,
}

impl SecretFs {
    /// The object's ACL of one kind, `None` when it has none.
    pub(super) fn read_acl(&self, inode: &Inode, name: &[u8]) -> Result<Option<Acl>, Error> {
        let state = inode.acls.load(Ordering::SeqCst);
        if state & none_bit(name) != 0 {
            return Ok(None);
        }
        let stored = match self.stored_value(inode, name) {
            // A store without user xattrs (tmpfs before Linux 6.6) cannot hold one.
            Err(e) if e.errno() == Errno::EOPNOTSUPP => Ok(None),
            other => other,
        };
        match stored {
            Ok(Some(value)) => Acl::parse(&value)
                .map(Some)
                .ok_or_else(|| Error::integrity("acl", inode.ino, "malformed ACL value")),
            Ok(None) => {
                // Fails when a set came in between: then nothing is recorded.
                let _ = inode.acls.compare_exchange(
                    state,
                    state | none_bit(name),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Records that the object's ACL of this kind changed (or may have).
    fn acl_changed(inode: &Inode, name: &[u8]) {
        let _ = inode
            .acls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                Some(s.wrapping_add(VERSION_STEP) & !none_bit(name))
            });
    }

    fn write_acl(&self, inode: &Inode, name: &[u8], acl: &Acl) -> Result<(), Error> {
        Self::acl_changed(inode, name);
        let result = self.store_value(inode, name, &acl.to_bytes(), 0);
        Self::acl_changed(inode, name);
        result
    }

    pub(super) fn remove_acl(&self, inode: &Inode, name: &[u8]) -> Result<(), Error> {
        Self::acl_changed(inode, name);
        match self.remove_value(inode, name) {
            // As ext4: removing an ACL that is not there succeeds (nor can one be there on a
            // store without user xattrs).
            Err(e) if e.errno() == Errno::NO_XATTR || e.errno() == Errno::EOPNOTSUPP => Ok(()),
            other => other,
        }
    }

    /// setxattr of an ACL, with the mode change the kernel leaves to us: an access ACL's
    /// owner, group-class and other entries are the mode bits, and one that says no more than
    /// them is not stored. `keeps_sgid`: the caller is in the file's group or has CAP_FSETID.
    pub(super) fn set_acl(
        &self,
        inode: &Inode,
        name: &[u8],
        value: &[u8],
        keeps_sgid: impl FnOnce(u32) -> bool,
    ) -> Result<(), Error> {
        let acl = Acl::parse(value).ok_or(Error::new(Errno::EINVAL))?;
        if name == DEFAULT {
            if inode.kind != FileType::Directory {
                return Err(Errno::EACCES.into());
            }
            return self.write_acl(inode, name, &acl);
        }
        let st = sys::fstat(inode.fd()?.raw()).map_err(io)?;
        let mut mode = (st.st_mode & 0o7777 & !0o777) | acl.mode_bits();
        if mode & libc::S_ISGID != 0 && !keeps_sgid(st.st_gid) {
            mode &= !libc::S_ISGID;
        }
        if acl.is_minimal() {
            self.remove_acl(inode, name)?;
        } else {
            self.write_acl(inode, name, &acl)?;
        }
        if mode != st.st_mode & 0o7777 {
            sys::chmod_fd(inode.fd()?.raw(), mode).map_err(io)?;
        }
        Ok(())
    }

    /// After a chmod: the access ACL follows the new mode bits.
    pub(super) fn chmod_acl(&self, inode: &Inode, mode: u32) -> Result<(), Error> {
        if !self.acl_enabled() || inode.kind == FileType::Symlink {
            return Ok(());
        }
        if let Some(mut acl) = self.read_acl(inode, ACCESS)? {
            let before = acl.clone();
            acl.chmod(mode);
            if acl != before {
                self.write_acl(inode, ACCESS, &acl)?;
            }
        }
        Ok(())
    }

    /// The mode a new object in `parent` gets, and the ACLs it inherits: with a default ACL
    /// there, that ACL limits the mode and the umask does not apply (POSIX.1e); without, the
    /// umask does (the kernel leaves both to us under FUSE_DONT_MASK).
    pub(super) fn creation_mode(
        &self,
        parent: &Inode,
        mode: u32,
        umask: u32,
        is_dir: bool,
    ) -> Result<(u32, Inherited), Error> {
        if !self.acl_enabled() {
            return Ok((mode, Inherited::default()));
        }
        let Some(default) = self.read_acl(parent, DEFAULT)? else {
            return Ok((mode & !(umask & 0o777), Inherited::default()));
        };
        let mut access = default.clone();
        let bits = access.inherit(mode);
        Ok((
            (mode & !0o777) | bits,
            Inherited {
                access: (!access.is_minimal()).then_some(access),
                default: is_dir.then_some(default),
            },
        ))
    }

    /// Stores what a new object inherited; it is known to have nothing else.
    pub(super) fn apply_inherited(&self, inode: &Inode, inherited: Inherited) -> Result<(), Error> {
        inode.acls.store(BOTH_NONE, Ordering::SeqCst);
        if let Some(acl) = &inherited.access {
            self.write_acl(inode, ACCESS, acl)?;
        }
        if let Some(acl) = &inherited.default {
            self.write_acl(inode, DEFAULT, acl)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect(),
        }
    }

    const NONE: u32 = u32::MAX;

    /// setfacl -d -m u:nobody:rwx on a 0755 directory.
    fn default_with_nobody() -> Acl {
        acl(&[
            (USER_OBJ, 7, NONE),
            (USER, 7, 65534),
            (GROUP_OBJ, 5, NONE),
            (MASK, 7, NONE),
            (OTHER, 5, NONE),
        ])
    }

    #[test]
    fn values_round_trip_and_malformed_ones_are_refused() {
        let a = default_with_nobody();
        let bytes = a.to_bytes();
        assert_eq!(bytes.len(), 4 + 5 * 8);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(Acl::parse(&bytes), Some(a));
        let mut bad_version = bytes.clone();
        bad_version[0] = 1;
        let mut bad_perm = bytes.clone();
        bad_perm[6] = 8;
        let mut bad_tag = bytes.clone();
        bad_tag[4] = 0x40;
        let no_mask = acl(&[
            (USER_OBJ, 7, NONE),
            (USER, 7, 1),
            (GROUP_OBJ, 5, NONE),
            (OTHER, 5, NONE),
        ]);
        let two_owners = acl(&[
            (USER_OBJ, 7, NONE),
            (USER_OBJ, 7, NONE),
            (GROUP_OBJ, 5, NONE),
            (OTHER, 5, NONE),
        ]);
        for bad in [
            &[][..],
            &bytes[..3],
            &bytes[..bytes.len() - 1],
            &bad_version,
            &bad_perm,
            &bad_tag,
            &no_mask.to_bytes(),
            &two_owners.to_bytes(),
            &[2, 0, 0, 0],
        ] {
            assert_eq!(Acl::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mode_bits_use_the_mask_as_group_class() {
        let a = default_with_nobody();
        assert_eq!(a.mode_bits(), 0o775);
        assert!(!a.is_minimal());
        let minimal = acl(&[(USER_OBJ, 6, NONE), (GROUP_OBJ, 4, NONE), (OTHER, 0, NONE)]);
        assert_eq!(minimal.mode_bits(), 0o640);
        assert!(minimal.is_minimal());
    }

    #[test]
    fn chmod_sets_the_mask_not_the_owning_group() {
        let mut a = default_with_nobody();
        a.chmod(0o600);
        assert_eq!(a.perm(USER_OBJ), 6);
        assert_eq!(a.perm(MASK), 0);
        assert_eq!(a.perm(GROUP_OBJ), 5, "the owning group's entry stays");
        assert_eq!(a.perm(USER), 7, "named entries stay, limited by the mask");
        assert_eq!(a.perm(OTHER), 0);
        let mut minimal = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 7, NONE), (OTHER, 7, NONE)]);
        minimal.chmod(0o751);
        assert_eq!(minimal.mode_bits(), 0o751);
    }

    #[test]
    fn inheritance_matches_ext4() {
        // Measured on ext4: `umask 077; touch d/f` in such a directory gives -rw-rw-r--+ with
        // mask rw- and the named entry kept at rwx (effective rw-).
        let mut a = default_with_nobody();
        assert_eq!(a.inherit(0o666), 0o664);
        assert_eq!(a.perm(USER_OBJ), 6);
        assert_eq!(a.perm(MASK), 6);
        assert_eq!(a.perm(USER), 7);
        assert_eq!(a.perm(GROUP_OBJ), 5);
        assert_eq!(a.perm(OTHER), 4);
        // mkdir gets drwxrwxr-x+ with the default's entries as they were.
        let mut d = default_with_nobody();
        assert_eq!(d.inherit(0o777), 0o775);
        assert_eq!(d, default_with_nobody());
        // Without a mask, the owning group's entry is the group class.
        let mut m = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 0, NONE), (OTHER, 0, NONE)]);
        assert_eq!(m.inherit(0o644), 0o600);
        assert!(m.is_minimal());
    }

    proptest! {
        #[test]
        fn inherited_modes_never_exceed_the_request_or_the_acl(
            perms in proptest::collection::vec(0u16..8, 5),
            mode in 0u32..0o1000,
        ) {
            let mut a = acl(&[
                (USER_OBJ, perms[0], NONE),
                (USER, perms[1], 7),
                (GROUP_OBJ, perms[2], NONE),
                (MASK, perms[3], NONE),
                (OTHER, perms[4], NONE),
            ]);
            let original = a.clone();
            let bits = a.inherit(mode);
            prop_assert_eq!(bits & !mode, 0);
            prop_assert_eq!(bits & !original.mode_bits(), 0);
            prop_assert_eq!(a.mode_bits(), bits);
            prop_assert_eq!(Acl::parse(&a.to_bytes()), Some(a));
        }
    }
}

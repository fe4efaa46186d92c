//! secretfs: encrypted storage for cloud instances, as a FUSE filesystem (file mode) or dm-crypt
//! (block mode), unlocked by one master key from a pluggable key source.

pub mod audit;
pub mod block;
pub mod config;
pub mod confined;
pub mod crypto;
pub mod daemon;
pub mod fs;
pub mod fsck;
pub mod keysource;
pub mod mountopts;
pub mod mounts;
pub mod pins;

/// Turns a libc return value into an io::Result (shared by modules outside `fs`).
pub(crate) fn fs_sys_cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
pub mod cli;

//! Loop devices for file targets: creating the sparse backing file and attaching it to a free
//! loop device with the kernel's loop ioctls (no losetup), always with autoclear.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

// From <linux/loop.h>; not all of them are exported by the libc crate.
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. It has `LO_FLAGS_AUTOCLEAR`: the kernel detaches it when the last
/// opener goes away. This handle is one opener, so dropping it before dm-crypt holds the device
/// undoes the attach, and after `cryptsetup close` the kernel detaches it by itself.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _fd: File,
}

/// Creates `path` as a sparse file of `size` bytes, readable by root only. Refuses to touch an
/// existing file of another size, which would be somebody else's data or a typo.
pub fn create_sparse(path: &Path, size: u64) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_len(size)?;
    file.sync_all()
}

fn ioctl(fd: &impl AsRawFd, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: every caller passes a request whose argument is an integer or a pointer to a live,
    // correctly laid out struct of <linux/loop.h>.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    crate::sys::cvt(ret)
}

fn info_for(backing: &Path) -> LoopInfo64 {
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_AUTOCLEAR,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    // The name is informational (losetup -l shows it); keep the last byte as the terminator.
    let name = backing.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    info
}

/// Attaches `backing` to a free loop device. Another process may grab the same free device
/// between GET_FREE and the attach (EBUSY): ask again a few times.
pub fn attach(backing: &Path) -> io::Result<LoopDevice> {
    let file = OpenOptions::new().read(true).write(true).open(backing)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..8 {
        let n = ioctl(&control, LOOP_CTL_GET_FREE, 0)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(d) => d,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: info_for(backing),
            reserved: [0; 8],
        };
        match ioctl(
            &dev,
            LOOP_CONFIGURE,
            &config as *const LoopConfig as libc::c_ulong,
        ) {
            Ok(_) => return Ok(LoopDevice { path, _fd: dev }),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            // Kernels before 5.8 have no LOOP_CONFIGURE: the two-step attach.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) => {
                match ioctl(&dev, LOOP_SET_FD, file.as_raw_fd() as libc::c_ulong) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        last = e;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let info = info_for(backing);
                if let Err(e) = ioctl(
                    &dev,
                    LOOP_SET_STATUS64,
                    &info as *const LoopInfo64 as libc::c_ulong,
                ) {
                    let _ = ioctl(&dev, LOOP_CLR_FD, 0);
                    return Err(e);
                }
                return Ok(LoopDevice { path, _fd: dev });
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The backing file of an attached loop device (`/dev/loopN`), from sysfs.
pub fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_matches_the_kernel() {
        // sizeof(struct loop_info64) = 232 and sizeof(struct loop_config) = 304 on every arch.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn sparse_file_is_private_and_not_overwritten() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol.img");
        create_sparse(&path, 1 << 30).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert!(meta.blocks() < 64, "not sparse: {} blocks", meta.blocks());
        assert!(create_sparse(&path, 4096).is_err());
    }

    /// Needs root and loop support (both present on the CI host, which lacks only dm).
    #[test]
    fn attach_then_drop_detaches_by_autoclear() {
        if !crate::testing::root_or_skip() {
            return;
        }
        if !Path::new("/dev/loop-control").exists() {
            eprintln!("skipped: no /dev/loop-control");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol.img");
        create_sparse(&path, 8 << 20).unwrap();
        let lo = attach(&path).unwrap();
        let dev = lo.path.clone();
        assert_eq!(backing_file(&dev), Some(path.clone()));
        let size = crate::block::mkfs::device_size(&std::fs::File::open(&dev).unwrap()).unwrap();
        assert_eq!(size, 8 << 20);
        drop(lo);
        // The kernel clears an autoclear loop device on the last close, asynchronously.
        let mut gone = false;
        for _ in 0..100 {
            if backing_file(&dev).as_deref() != Some(path.as_path()) {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            gone,
            "{} still attached to {}",
            dev.display(),
            path.display()
        );
    }
}

//! Many files under a small open-file limit: the daemon must serve a tree of any size with a
//! bounded number of descriptors (fstab mounts under systemd get a soft limit of 1024).

mod common;

use common::Fs;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A limit from /proc/PID/limits: column 3 is the soft one, 4 the hard one.
fn nofile(pid: u32, column: usize) -> u64 {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Samples the daemon's descriptor count until dropped; `peak()` is the largest seen.
struct FdWatch {
    peak: Arc<AtomicUsize>,
    peak_rss: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FdWatch {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicUsize::new(open_fds(pid)));
        let peak_rss = Arc::new(AtomicUsize::new(rss_kib(pid) as usize));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, r, s) = (peak.clone(), peak_rss.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(open_fds(pid), Ordering::Relaxed);
                r.fetch_max(rss_kib(pid) as usize, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            peak,
            peak_rss,
            stop,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn peak_rss(&self) -> u64 {
        self.peak_rss.load(Ordering::Relaxed) as u64
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn content(d: usize, f: usize) -> String {
    format!("dir {d} file {f}\n")
}

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 1000;

/// Writes DIRS × FILES_PER_DIR small files, one writer thread per core.
fn create_tree(root: &Path) {
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let root = root.to_path_buf();
            std::thread::spawn(move || {
                for d in (t..DIRS).step_by(2) {
                    let dir = root.join(format!("d{d}"));
                    fs::create_dir(&dir).unwrap();
                    for f in 0..FILES_PER_DIR {
                        fs::write(dir.join(format!("f{f}")), content(d, f)).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Reads back every file found by `find`, checking names, count and contents.
fn verify_tree(root: &Path) {
    let out = Command::new("find")
        .arg(root)
        .args(["-type", "f"])
        .output()
        .unwrap();
    assert!(out.status.success(), "find failed: {out:?}");
    let listed: Vec<PathBuf> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(listed.len(), DIRS * FILES_PER_DIR);
    for path in listed {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let (d, f) = rel.split_once("/f").unwrap();
        let (d, f): (usize, usize) = (d[1..].parse().unwrap(), f.parse().unwrap());
        let md = fs::symlink_metadata(&path).unwrap();
        assert_eq!(md.len() as usize, content(d, f).len(), "{rel}");
        assert_eq!(fs::read_to_string(&path).unwrap(), content(d, f), "{rel}");
    }
}

#[test]
fn a_daemon_started_with_a_soft_limit_of_1024_raises_it_to_the_hard_one() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::init();
    fs.mount_with_nofile(1024, 8192, "");
    assert_eq!(
        nofile(fs.daemon_pid(), 3),
        8192,
        "soft limit not raised to the hard one"
    );
}

#[test]
fn two_hundred_thousand_files_under_a_hard_limit_of_1024_with_bounded_descriptors() {
    if !common::can_mount() {
        return;
    }
    let bound = 256;
    let mut fs = Fs::init();
    fs.mount_with_nofile(1024, 1024, &format!("max-fds={bound}"));
    let pid = fs.daemon_pid();
    assert_eq!(nofile(pid, 4), 1024);
    // The daemon's working set (thread buffers, a few inodes) first, then its baseline.
    let warm = fs.p("warm");
    fs::create_dir(&warm).unwrap();
    for i in 0..200 {
        fs::write(warm.join(i.to_string()), vec![7u8; 4 << 20 >> (i % 12)]).unwrap();
    }
    for i in 0..200 {
        assert_eq!(
            fs::read(warm.join(i.to_string())).unwrap().len(),
            4 << 20 >> (i % 12)
        );
    }
    fs::remove_dir_all(&warm).unwrap();
    let base_fds = open_fds(pid);
    let base_rss = rss_kib(pid);
    let watch = FdWatch::start(pid);

    let root = fs.p("tree");
    fs::create_dir(&root).unwrap();
    create_tree(&root);
    verify_tree(&root);

    // Files from the first directories were swept long ago: rename and link them.
    let moved = fs.p("moved");
    fs::create_dir(&moved).unwrap();
    for f in 0..500 {
        let from = root.join(format!("d0/f{f}"));
        let before = fs::symlink_metadata(&from).unwrap().ino();
        let to = moved.join(format!("m{f}"));
        fs::rename(&from, &to).unwrap();
        let link = moved.join(format!("l{f}"));
        fs::hard_link(&to, &link).unwrap();
        let md = fs::symlink_metadata(&link).unwrap();
        assert_eq!((md.ino(), md.nlink()), (before, 2), "m{f}");
        assert_eq!(fs::read_to_string(&link).unwrap(), content(0, f));
        // Back where verify_tree expects it, through the link's name.
        fs::remove_file(&to).unwrap();
        fs::rename(&link, &from).unwrap();
        assert_eq!(fs::symlink_metadata(&from).unwrap().ino(), before);
    }
    // A file held open while swept inodes churn around it keeps working after its unlink.
    let held_path = root.join("d1/f1");
    let mut held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&held_path)
        .unwrap();
    fs::remove_file(&held_path).unwrap();
    verify_tree_except(&root, &held_path);
    use std::io::{Read, Seek, Write};
    held.seek(std::io::SeekFrom::End(0)).unwrap();
    held.write_all(b"more\n").unwrap();
    held.seek(std::io::SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, format!("{}more\n", content(1, 1)));
    drop(held);
    fs::write(&held_path, content(1, 1)).unwrap();

    // A real tree through tar, compared by tar itself.
    let tarball = fs.dir.path().join("include.tar");
    let made = Command::new("tar")
        .args(["-C", "/usr", "-cf"])
        .arg(&tarball)
        .arg("include")
        .status()
        .unwrap();
    assert!(made.success());
    for args in [["-xf"], ["-df"]] {
        let st = Command::new("tar")
            .arg("-C")
            .arg(fs.p(""))
            .args(args)
            .arg(&tarball)
            .status()
            .unwrap();
        assert!(st.success(), "tar {args:?} on the mount failed");
    }

    let rm = Command::new("rm")
        .arg("-rf")
        .arg(&root)
        .arg(fs.p("include"))
        .arg(&moved)
        .status()
        .unwrap();
    assert!(rm.success());
    assert_eq!(fs::read_dir(fs.p("")).unwrap().count(), 0);
    let peak_fds = watch.peak();
    let peak_rss = watch.peak_rss();
    drop(watch);

    // The bound holds the inode descriptors; the rest is what the daemon had at start plus
    // the few a request holds while it runs (an open file, a directory being listed).
    let slack = 16;
    eprintln!("descriptors: {base_fds} at start, peak {peak_fds}, bound {bound}");
    assert!(
        peak_fds <= base_fds + bound + slack,
        "the daemon held {peak_fds} descriptors (bound {bound}, {base_fds} at start)"
    );
    assert!(
        fs.log_text().contains(&format!("bound={bound}")),
        "bound not logged"
    );

    // Once the kernel forgets its inodes, the daemon's memory comes back: all but a quarter of
    // what the tree took, or 8 MiB, whichever is more (allocator slack).
    let allowed = base_rss + (8 * 1024).max(peak_rss.saturating_sub(base_rss) / 4);
    let mut rss = u64::MAX;
    for _ in 0..100 {
        fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        rss = rss_kib(pid);
        if rss < allowed {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "daemon RSS: {base_rss} KiB at start, peak {peak_rss} KiB, {rss} KiB after drop_caches"
    );
    assert!(
        rss < allowed,
        "daemon RSS {rss} KiB after drop_caches: {base_rss} KiB at start, peak {peak_rss} KiB"
    );
    assert!(!fs.log_text().contains("panicked"));
}

fn verify_tree_except(root: &Path, gone: &Path) {
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            let path = root.join(format!("d{d}/f{f}"));
            if path != gone {
                assert_eq!(fs::read_to_string(&path).unwrap(), content(d, f));
            }
        }
    }
    assert!(!gone.exists());
}

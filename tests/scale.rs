//! Many files under a small open-file limit: the daemon must keep serving a tree larger than
//! the soft limit it was started with (fstab mounts under systemd get 1024).

mod common;

use common::Fs;
use std::fs;

/// The soft limit of the daemon process, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_daemon_started_with_a_soft_limit_of_1024_serves_more_files_than_that() {
    let mut fs = Fs::init();
    fs.mount_with_nofile(1024, 8192);
    assert_eq!(
        soft_nofile(fs.daemon_pid()),
        8192,
        "soft limit not raised to the hard one"
    );
    let dir = fs.p("many");
    fs::create_dir(&dir).unwrap();
    let n = 3000;
    for i in 0..n {
        fs::write(dir.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    // Every inode is now cached by the kernel; each is still readable.
    for i in 0..n {
        assert_eq!(
            fs::read_to_string(dir.join(format!("f{i}"))).unwrap(),
            format!("file {i}")
        );
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), n);
}

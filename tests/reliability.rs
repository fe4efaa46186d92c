//! Reliability on real mounts: a full backing disk, daemons killed mid-write, many concurrent
//! clients, and key hygiene (no key bytes in logs, locked memory, insecure key files refused).

mod common;

use common::{errno_of, secretfs, Fs};
use rand::{Rng, SeedableRng};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8)
        .collect()
}

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn daemon_pid(fs: &Fs) -> u32 {
    let out = secretfs(&["status", fs.mnt.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["daemon_pid"].as_u64().expect("daemon pid") as u32
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// fsck's exit code and the plaintext paths of its problems. The report must parse and the
/// exit code must agree with it (0 clean, 4 problems left): fsck failing to run is no "clean".
fn fsck_problem_paths(backing: &Path) -> (i32, Vec<String>) {
    let out = secretfs(&["fsck", backing.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck printed no JSON report ({e}): {stderr}"));
    let paths: Vec<String> = v["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("fsck report has no problem list: {v}"))
        .iter()
        .map(|p| p["path"].as_str().expect("problem path").to_string())
        .collect();
    let code = out.status.code().unwrap_or(-1);
    assert_eq!(
        code,
        if paths.is_empty() { 0 } else { 4 },
        "fsck exit code disagrees with its report {paths:?}: {stderr}"
    );
    (code, paths)
}

/// Unmounts a loop-mounted ext4 when the test ends, even on failure.
struct LoopDisk(std::path::PathBuf);

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A keyfile filesystem initialised (not mounted) on a 40 MiB ext4 loop disk, to fill up.
struct SmallDisk {
    backing: std::path::PathBuf,
    mnt: std::path::PathBuf,
    // Unmounted before the directory holding its image goes.
    _disk: LoopDisk,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new() -> Self {
        common::require_root();
        let dir = tempfile::tempdir().unwrap();
        let (img, disk) = (dir.path().join("disk.img"), dir.path().join("disk"));
        fs::create_dir(&disk).unwrap();
        sh(&format!(
            "truncate -s 40M {0} && mkfs.ext4 -q -F -m 0 {0} && mount -o loop {0} {1}",
            img.display(),
            disk.display()
        ));
        let guard = LoopDisk(disk.clone());
        let (backing, mnt) = (disk.join("backing"), dir.path().join("mnt"));
        fs::create_dir(&mnt).unwrap();
        let key = format!("keyfile:{}", dir.path().join("key").display());
        assert!(
            secretfs(&["init", backing.to_str().unwrap(), "--key", &key])
                .status
                .success()
        );
        SmallDisk {
            backing,
            mnt,
            _disk: guard,
            _dir: dir,
        }
    }
}

/// With `-o writeback` a write returns once the data is in the page cache: a full disk must
/// then surface at fsync (or close), never be lost silently, and damage nothing.
#[test]
fn with_writeback_a_full_disk_surfaces_at_fsync_and_damages_nothing() {
    if !common::can_mount() {
        return;
    }
    let disk = SmallDisk::new();
    let (backing, mnt) = (&disk.backing, &disk.mnt);
    let run = |args: &[&str]| assert!(secretfs(args).status.success(), "{args:?}");
    run(&[
        "mount",
        backing.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        "writeback",
    ]);
    let keeper = pattern(1, 1 << 20);
    fs::write(mnt.join("keeper"), &keeper).unwrap();
    let outcome = (|| -> std::io::Result<()> {
        let mut big = fs::File::create(mnt.join("big"))?;
        for i in 0..60u64 {
            big.write_all(&pattern(i, 1 << 20))?;
        }
        big.sync_all()
    })();
    let err = outcome.expect_err("60 MiB on a 40 MiB disk: write or fsync must fail");
    assert_eq!(errno_of(&err), libc::ENOSPC, "got {err}");
    // Nothing else was harmed, and the store is sound.
    assert!(fs::read(mnt.join("keeper")).unwrap() == keeper);
    fs::remove_file(mnt.join("big")).unwrap();
    run(&["umount", mnt.to_str().unwrap()]);
    assert_eq!(
        fsck_problem_paths(backing),
        (0, vec![]),
        "fsck after ENOSPC"
    );
}

#[test]
fn a_full_disk_gives_enospc_damages_nothing_and_recovers() {
    if !common::can_mount() {
        return;
    }
    let disk = SmallDisk::new();
    let (backing, mnt) = (&disk.backing, &disk.mnt);
    let mount = || {
        assert!(
            secretfs(&["mount", backing.to_str().unwrap(), mnt.to_str().unwrap()])
                .status
                .success()
        )
    };
    let umount = || {
        assert!(secretfs(&["umount", mnt.to_str().unwrap()])
            .status
            .success())
    };
    mount();

    let keeper = pattern(1, 1 << 20);
    fs::write(mnt.join("keeper"), &keeper).unwrap();
    let mut big = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(mnt.join("big"))
        .unwrap();
    let mut written = 0usize;
    let err = loop {
        let chunk = pattern(written as u64, 200_000);
        match big.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written < 100 << 20, "never ran out of space");
    };
    assert_eq!(
        errno_of(&err),
        libc::ENOSPC,
        "a full disk must give ENOSPC, got {err}"
    );
    drop(big);
    let small = fs::write(mnt.join("small"), pattern(3, 300_000));
    assert!(small.is_err_and(|e| errno_of(&e) == libc::ENOSPC));
    // Whatever `big` holds reads back without a torn block.
    let stored =
        fs::read(mnt.join("big")).expect("the file written up to ENOSPC must stay readable");
    assert!(stored.len() >= written);
    // Byte for byte: every chunk that was written, then at most a prefix of the one that
    // failed; and of `small`, at most a prefix of what was asked.
    let mut expected = Vec::with_capacity(written + 200_000);
    while expected.len() < written {
        expected.extend(pattern(expected.len() as u64, 200_000));
    }
    expected.extend(pattern(written as u64, 200_000));
    assert!(
        stored[..] == expected[..stored.len()],
        "big differs from what was written"
    );
    if let Ok(partial) = fs::read(mnt.join("small")) {
        assert!(
            partial[..] == pattern(3, 300_000)[..partial.len()],
            "small holds bytes that were never written"
        );
    }
    assert!(fs::read(mnt.join("keeper")).unwrap() == keeper);
    umount();
    assert_eq!(
        fsck_problem_paths(backing),
        (0, vec![]),
        "fsck after ENOSPC"
    );

    mount();
    fs::remove_file(mnt.join("big")).unwrap();
    fs::write(mnt.join("after"), pattern(4, 2 << 20)).unwrap();
    assert!(fs::read(mnt.join("after")).unwrap() == pattern(4, 2 << 20));
    assert!(fs::read(mnt.join("keeper")).unwrap() == keeper);
    umount();
}

#[test]
fn killing_the_daemon_loses_nothing_that_was_written_and_the_mount_recovers() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    // Even rounds replay the same kill times everywhere, odd ones take new ones each run.
    let mut fixed = rand::rngs::StdRng::seed_from_u64(2024);
    let mut fresh = rand::rngs::StdRng::seed_from_u64(common::fresh_seed("kill timing"));
    let mut kept: Vec<(String, u64, usize)> = Vec::new();
    for round in 0..10 {
        let rng = if round % 2 == 0 {
            &mut fixed
        } else {
            &mut fresh
        };
        let writer_seed = rng.gen::<u64>();
        let done: Arc<Mutex<Vec<(String, u64, usize)>>> = Arc::default();
        let (mnt, log) = (fs.mnt.clone(), done.clone());
        let writer = std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(writer_seed);
            for i in 0.. {
                let name = format!("r{round}-f{i}");
                let (seed, len) = (rng.gen::<u64>(), rng.gen_range(1..300_000));
                let attempt = (|| -> std::io::Result<()> {
                    let mut f = fs::File::create(mnt.join(&name))?;
                    f.write_all(&pattern(seed, len))?;
                    if i % 2 == 0 {
                        f.sync_all()?;
                    }
                    Ok(())
                })();
                if attempt.is_err() {
                    return;
                }
                log.lock().unwrap().push((name, seed, len));
            }
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
        let pid = daemon_pid(&fs);
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        writer.join().unwrap();
        // The dead mount is cleaned up by umount, and the next mount succeeds.
        fs.umount();
        let finished = done.lock().unwrap().clone();
        let (_, problems) = fsck_problem_paths(&fs.backing);
        for p in &problems {
            assert!(
                !finished.iter().any(|(n, _, _)| p == &format!("/{n}")),
                "round {round}: completed file {p} damaged"
            );
        }
        assert!(
            problems.len() <= 1,
            "round {round}: more than the file in flight is damaged: {problems:?}"
        );
        fs.mount();
        kept.extend(finished);
        for (name, seed, len) in &kept {
            assert!(
                fs::read(fs.p(name)).unwrap() == pattern(*seed, *len),
                "round {round}: {name} lost"
            );
        }
    }
    assert!(
        kept.len() >= 10,
        "too few writes finished before the kills to prove anything: {}",
        kept.len()
    );
}

#[test]
fn many_concurrent_clients_keep_their_data_and_memory_stays_flat() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    fs::create_dir(fs.p("shared")).unwrap();
    const REGION: usize = 50_000;
    const CLIENTS: usize = 6;
    let shared = fs.p("shared/big");
    fs::write(&shared, vec![0u8; REGION * CLIENTS]).unwrap();
    let pid = daemon_pid(&fs);
    let rss_start = status_field(pid, "VmRSS:");
    let deadline = Instant::now() + Duration::from_secs(8);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (root, shared) = (fs.mnt.clone(), shared.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
                let own = root.join(format!("client{c}"));
                fs::create_dir(&own).unwrap();
                let mut model: std::collections::HashMap<String, Vec<u8>> = Default::default();
                let big = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&shared)
                    .unwrap();
                let mut last = vec![0u8; REGION];
                let mut ops = 0u64;
                while Instant::now() < deadline {
                    ops += 1;
                    let name = format!("f{}", rng.gen_range(0..20));
                    match rng.gen_range(0..6) {
                        0 | 1 => {
                            let data = pattern(rng.gen(), rng.gen_range(0..40_000));
                            fs::write(own.join(&name), &data).unwrap();
                            model.insert(name, data);
                        }
                        2 => {
                            if let Some(want) = model.get(&name) {
                                assert!(
                                    &fs::read(own.join(&name)).unwrap() == want,
                                    "client {c}: {name}"
                                );
                            }
                        }
                        3 => {
                            let to = format!("f{}", rng.gen_range(0..20));
                            if let Some(data) = model.remove(&name) {
                                fs::rename(own.join(&name), own.join(&to)).unwrap();
                                model.insert(to, data);
                            }
                        }
                        4 => {
                            if model.remove(&name).is_some() {
                                fs::remove_file(own.join(&name)).unwrap();
                            }
                        }
                        _ => {
                            last = pattern(rng.gen(), REGION);
                            big.write_all_at(&last, (c * REGION) as u64).unwrap();
                        }
                    }
                }
                for (name, want) in &model {
                    assert!(
                        &fs::read(own.join(name)).unwrap() == want,
                        "client {c}: final {name}"
                    );
                }
                let mut region = vec![0u8; REGION];
                big.read_exact_at(&mut region, (c * REGION) as u64).unwrap();
                (region == last, ops)
            })
        })
        .collect();
    let mut total = 0;
    for (c, t) in clients.into_iter().enumerate() {
        let (region_ok, ops) = t.join().expect("client panicked");
        assert!(
            region_ok,
            "client {c}: its region of the shared file was overwritten"
        );
        total += ops;
    }
    assert!(total > 100, "only {total} operations ran");
    let rss_end = status_field(pid, "VmRSS:");
    assert!(
        rss_end < 64 * 1024,
        "daemon RSS {rss_end} KiB after the load"
    );
    assert!(
        rss_end < rss_start + 32 * 1024,
        "daemon RSS grew from {rss_start} to {rss_end} KiB"
    );
}

#[test]
fn key_material_stays_out_of_logs_and_in_locked_memory() {
    if !common::can_mount() {
        return;
    }
    common::require_root();
    let mut fs = Fs::init();
    let key = fs::read(&fs.key).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::mode(&fs::metadata(&fs.key).unwrap()) & 0o777,
        0o400
    );
    let out = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .args([
            "mount",
            fs.backing.to_str().unwrap(),
            fs.mnt.to_str().unwrap(),
            "-o",
            &format!("log={}", fs.log.display()),
        ])
        .env("SECRETFS_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = daemon_pid(&fs);
    assert!(
        status_field(pid, "VmLck:") > 0,
        "no locked memory: keys are not mlocked"
    );
    fs::write(fs.p("f"), b"some data").unwrap();
    assert_eq!(fs::read(fs.p("f")).unwrap(), b"some data");
    assert!(secretfs(&["umount", fs.mnt.to_str().unwrap()])
        .status
        .success());
    let log = fs.log_text();
    assert!(
        log.contains("event=\"unlock\""),
        "the trace log was not written"
    );
    use base64::Engine;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    for form in [
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(&key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key),
        format!("{:?}", &key[..8]),
    ] {
        assert!(!log.contains(&form), "key material in the log as {form}");
    }

    // A key file others can read is refused, with the fix in the message.
    fs::set_permissions(&fs.key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = fs.try_mount(&[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 0400"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fs.is_mounted());
}

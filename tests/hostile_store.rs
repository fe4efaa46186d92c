//! The backing store is hostile: objects planted or replaced in it (symlinks to host files or
//! /dev/zero, FIFOs, sockets, directories, huge or empty files, another config) must never make
//! the root daemon or fsck touch anything outside the store, hang, or mount under a key the
//! attacker chose. Each case: a bounded answer (EIO or the clear error), the decoy outside the
//! store unchanged, the daemon still serving other files, fsck reporting it.

mod common;

use common::{errno_of, secretfs, Fs};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Any single operation on a hostile store must answer within this (a hang is the bug).
const BOUND: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread and fails the test if it does not return within `BOUND`.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not answer within {BOUND:?}: the daemon hangs"))
}

/// A file outside the store that a confused root daemon could overwrite.
struct Decoy {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const DECOY: &[u8] = b"host file that must never change\n";

impl Decoy {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decoy");
        fs::write(&path, DECOY).unwrap();
        Decoy { _dir: dir, path }
    }

    fn assert_unchanged(&self) {
        assert_eq!(
            fs::read(&self.path).unwrap(),
            DECOY,
            "the decoy outside the store changed"
        );
    }
}

/// The hostile objects an attacker with write access to the store can plant.
#[derive(Debug, Clone, Copy)]
enum Plant {
    SymlinkToDecoy,
    SymlinkToDevZero,
    Fifo,
    Socket,
    Directory,
    HugeFile,
    EmptyFile,
    /// A character device (1:5, what /dev/zero is): opening it would read forever.
    DeviceNode,
}

const PLANTS: [Plant; 8] = [
    Plant::SymlinkToDecoy,
    Plant::SymlinkToDevZero,
    Plant::Fifo,
    Plant::Socket,
    Plant::Directory,
    Plant::HugeFile,
    Plant::EmptyFile,
    Plant::DeviceNode,
];

/// Replaces whatever is at `path` by `plant`.
fn plant(path: &Path, plant: Plant, decoy: &Decoy) {
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }
    match plant {
        Plant::SymlinkToDecoy => symlink(&decoy.path, path).unwrap(),
        Plant::SymlinkToDevZero => symlink("/dev/zero", path).unwrap(),
        Plant::Fifo => {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        }
        Plant::Socket => {
            let l = std::os::unix::net::UnixListener::bind(path).unwrap();
            std::mem::forget(l);
        }
        Plant::Directory => fs::create_dir(path).unwrap(),
        // create_new: never open what a racing rename put there (it may be a FIFO).
        Plant::HugeFile => {
            let f = fs::File::create_new(path).unwrap();
            f.set_len(256 << 20).unwrap();
        }
        Plant::EmptyFile => drop(fs::File::create_new(path).unwrap()),
        Plant::DeviceNode => {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            let dev = libc::makedev(1, 5);
            assert_eq!(
                unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, dev) },
                0
            );
        }
    }
}

fn backing_entry(fs: &Fs, pred: impl Fn(&str) -> bool, under: &Path) -> PathBuf {
    fs::read_dir(under)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| pred(p.file_name().unwrap().to_str().unwrap()))
        .unwrap_or_else(|| panic!("no such backing entry in {}", fs.backing.display()))
}

/// fsck's exit code (it must answer within the bound); then `fsck --repair`, which may only
/// remove what a crash leaves, must answer too and leave problems it cannot repair reported.
fn fsck_exit(fs: &Fs) -> Option<i32> {
    let backing = fs.backing.to_str().unwrap().to_string();
    let code = within("fsck", {
        let backing = backing.clone();
        move || secretfs(&["fsck", &backing, "--json"]).status.code()
    });
    let repaired = within("fsck --repair", move || {
        secretfs(&["fsck", &backing, "--repair", "--json"])
            .status
            .code()
    });
    assert_eq!(
        repaired, code,
        "fsck --repair claimed to fix hostile objects"
    );
    code
}

#[test]
fn a_hostile_directory_id_gives_eio_for_that_directory_only() {
    if !common::can_mount() {
        return;
    }
    let decoy = Decoy::new();
    let mut fs = Fs::new();
    fs::write(fs.p("control"), b"still fine").unwrap();
    for i in 0..PLANTS.len() {
        fs::create_dir(fs.p(&format!("d{i}"))).unwrap();
        fs::write(fs.p(&format!("d{i}/inside")), b"x").unwrap();
    }
    let dirs: Vec<PathBuf> = (0..PLANTS.len())
        .map(|i| fs.backing_of(&fs.p(&format!("d{i}"))))
        .collect();
    fs.umount();
    for (dir, kind) in dirs.iter().zip(PLANTS) {
        plant(&dir.join("secretfs.dirid"), kind, &decoy);
    }
    assert_eq!(
        fsck_exit(&fs),
        Some(4),
        "fsck did not report the planted ids"
    );
    fs.mount();
    for (i, kind) in PLANTS.iter().enumerate() {
        let d = fs.p(&format!("d{i}"));
        let listed = within("readdir", move || {
            fs::read_dir(&d).and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        });
        assert_eq!(
            listed.map_err(|e| errno_of(&e)).err(),
            Some(libc::EIO),
            "{kind:?} as a directory id was not refused"
        );
        let f = fs.p(&format!("d{i}/new"));
        let created = within("create", move || fs::write(&f, b"y"));
        assert_eq!(
            created.map_err(|e| errno_of(&e)).err(),
            Some(libc::EIO),
            "{kind:?}"
        );
    }
    assert_eq!(fs::read(fs.p("control")).unwrap(), b"still fine");
    decoy.assert_unchanged();
    assert!(
        fs.log_text().contains("dir-id"),
        "no audit event for the directory ids"
    );
}

/// A long name: its encryption does not fit in 255 bytes, so it gets a side file.
fn long_name(tag: char) -> String {
    std::iter::repeat_n(tag, 200).collect()
}

#[test]
fn a_symlink_planted_as_a_long_name_side_file_is_replaced_never_followed() {
    if !common::can_mount() {
        return;
    }
    let decoy = Decoy::new();
    let mut fs = Fs::new();
    let name = long_name('a');
    fs::write(fs.p(&name), b"first").unwrap();
    let side = backing_entry(
        &fs,
        |n| n.starts_with("lname.") && n.ends_with(".name"),
        &fs.backing,
    );
    fs::remove_file(fs.p(&name)).unwrap();
    assert!(!side.exists(), "the side file outlived its name");
    // While mounted: the attacker plants a symlink where the side file will be written again.
    symlink(&decoy.path, &side).unwrap();
    fs::write(fs.p(&name), b"second").unwrap();
    decoy.assert_unchanged();
    // Rename and link onto the long name, with the symlink planted again each time.
    for how in ["rename", "link"] {
        fs::remove_file(fs.p(&name)).unwrap();
        symlink(&decoy.path, &side).unwrap();
        fs::write(fs.p("src"), how.as_bytes()).unwrap();
        if how == "rename" {
            fs::rename(fs.p("src"), fs.p(&name)).unwrap();
        } else {
            fs::hard_link(fs.p("src"), fs.p(&name)).unwrap();
            fs::remove_file(fs.p("src")).unwrap();
        }
        decoy.assert_unchanged();
        assert_eq!(fs::read(fs.p(&name)).unwrap(), how.as_bytes());
    }
    fs.remount();
    assert_eq!(fs::read(fs.p(&name)).unwrap(), b"link");
    decoy.assert_unchanged();
}

#[test]
fn hostile_long_name_side_files_hide_that_entry_and_nothing_else() {
    if !common::can_mount() {
        return;
    }
    let decoy = Decoy::new();
    let mut fs = Fs::new();
    fs::write(fs.p("control"), b"still fine").unwrap();
    let tags = ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'];
    for t in tags {
        fs::write(fs.p(&long_name(t)), b"x").unwrap();
    }
    let mut sides: Vec<PathBuf> = fs::read_dir(&fs.backing)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_str().unwrap().ends_with(".name"))
        .collect();
    sides.sort();
    assert_eq!(sides.len(), tags.len());
    fs.umount();
    for (side, kind) in sides.iter().zip(PLANTS) {
        plant(side, kind, &decoy);
    }
    assert_eq!(
        fsck_exit(&fs),
        Some(4),
        "fsck did not report the side files"
    );
    fs.mount();
    let root = fs.mnt.clone();
    let names: Vec<String> = within("readdir", move || {
        fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    });
    assert_eq!(
        names,
        vec!["control".to_string()],
        "hostile side files were listed"
    );
    assert_eq!(fs::read(fs.p("control")).unwrap(), b"still fine");
    decoy.assert_unchanged();
}

#[test]
fn hostile_content_entries_answer_within_a_bound_and_the_decoy_is_untouched() {
    if !common::can_mount() {
        return;
    }
    let decoy = Decoy::new();
    let mut fs = Fs::new();
    fs::write(fs.p("control"), b"still fine").unwrap();
    for i in 0..PLANTS.len() {
        fs::write(fs.p(&format!("f{i}")), b"secret").unwrap();
    }
    let files: Vec<PathBuf> = (0..PLANTS.len())
        .map(|i| fs.backing_of(&fs.p(&format!("f{i}"))))
        .collect();
    fs.umount();
    for (file, kind) in files.iter().zip(PLANTS) {
        plant(file, kind, &decoy);
    }
    fs.mount();
    for (i, kind) in PLANTS.iter().enumerate() {
        // O_NONBLOCK: a FIFO shown by the mount would otherwise block in the kernel itself.
        let p = fs.p(&format!("f{i}"));
        let read = within("read", move || {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&p)
                .and_then(|mut f| {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut f, &mut buf).map(|_| buf)
                })
        });
        assert!(
            read.as_ref().map_or(true, |b| b.is_empty()),
            "{kind:?}: read gave data"
        );
        let p = fs.p(&format!("f{i}"));
        let _ = within("write", move || {
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&p)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"over"))
        });
        let p = fs.p(&format!("f{i}"));
        let _ = within("xattr", move || {
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            unsafe { libc::lsetxattr(c.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) }
        });
        let p = fs.p(&format!("f{i}"));
        let _ = within("unlink", move || {
            fs::remove_file(&p).or_else(|_| fs::remove_dir_all(&p))
        });
    }
    assert_eq!(fs::read(fs.p("control")).unwrap(), b"still fine");
    decoy.assert_unchanged();
}

fn mount_refused(fs: &Fs, extra: &[&str], why: &str) {
    let before = common::snapshot(&fs.backing);
    let mut args = vec![
        "mount",
        fs.backing.to_str().unwrap(),
        fs.mnt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = secretfs(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{why}: the mount succeeded: {stderr}"
    );
    assert_eq!(out.status.code(), Some(3), "{why}: {stderr}");
    assert!(!fs.is_mounted(), "{why}: something got mounted");
    assert_eq!(
        common::snapshot(&fs.backing),
        before,
        "{why}: the store was changed"
    );
}

/// The config of a store made by the attacker under a key source of their choice.
fn attacker_config(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("b");
    let src = source.replace("DIR", dir.path().to_str().unwrap());
    let mut args = vec!["init", backing.to_str().unwrap(), "--key", &src];
    if source == "passphrase" {
        args.extend(["--passphrase-command", "echo attacker-knows-this"]);
    }
    let out = secretfs(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = fs::read(backing.join("secretfs.conf")).unwrap();
    // Made on the attacker's host: this host has no pin for it.
    let v: serde_json::Value = serde_json::from_slice(&conf).unwrap();
    let id = v["fs_id"].as_str().unwrap();
    fs::remove_file(format!("/etc/secretfs/pins/{id}.json")).unwrap();
    conf
}

#[test]
fn a_substituted_config_never_mounts_under_the_attackers_key_nor_wipes() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::write(fs.p("kept"), b"precious").unwrap();
    fs.umount();
    let conf = fs.backing.join("secretfs.conf");
    let original = fs::read(&conf).unwrap();
    let keyfile = format!("keyfile:{}", fs.key.display());
    for source in ["keyfile:DIR/attacker.key", "ephemeral", "passphrase"] {
        fs::write(&conf, attacker_config(source)).unwrap();
        mount_refused(&fs, &[], &format!("{source} config, no --key"));
        mount_refused(
            &fs,
            &["--key", &keyfile],
            &format!("{source} config, --key keyfile"),
        );
    }
    // The user's own passphrase against an attacker's passphrase config: wrong passphrase.
    fs::write(&conf, attacker_config("passphrase")).unwrap();
    mount_refused(
        &fs,
        &[
            "--key",
            "passphrase",
            "--passphrase-command",
            "echo users-own",
        ],
        "passphrase config, --key passphrase",
    );
    // The same filesystem id, only the key source edited: the pin catches it.
    let mut edited: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edited["key_source"] = serde_json::json!({"type": "ephemeral"});
    fs::write(&conf, serde_json::to_vec(&edited).unwrap()).unwrap();
    mount_refused(&fs, &[], "key source edited to ephemeral, no --key");
    mount_refused(
        &fs,
        &["--key", &keyfile],
        "edited to ephemeral, --key keyfile",
    );
    let attacker_key = fs.dir.path().join("attacker.key");
    edited["key_source"] = serde_json::json!({"type": "keyfile", "path": attacker_key});
    fs::write(&conf, serde_json::to_vec(&edited).unwrap()).unwrap();
    mount_refused(&fs, &[], "key path edited, no --key");

    fs::write(&conf, &original).unwrap();
    fs.mount();
    assert_eq!(fs::read(fs.p("kept")).unwrap(), b"precious");
}

#[test]
fn a_hostile_config_object_is_a_clear_error_within_a_bound() {
    if !common::can_mount() {
        return;
    }
    let decoy = Decoy::new();
    let fs = Fs::init();
    let conf = fs.backing.join("secretfs.conf");
    for kind in PLANTS {
        plant(&conf, kind, &decoy);
        let (b, m) = (fs.backing.clone(), fs.mnt.clone());
        let out = within("mount", move || {
            secretfs(&["mount", b.to_str().unwrap(), m.to_str().unwrap()])
        });
        assert!(!out.status.success(), "{kind:?}: mounted");
        assert_eq!(
            out.status.code(),
            Some(4),
            "{kind:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        decoy.assert_unchanged();
    }
}

#[test]
fn key_files_inside_the_store_or_owned_by_others_are_refused() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::init();
    let inside = fs.backing.join("k");
    fs::copy(&fs.key, &inside).unwrap();
    fs::set_permissions(&inside, fs::Permissions::from_mode(0o400)).unwrap();
    let out = secretfs(&[
        "mount",
        fs.backing.to_str().unwrap(),
        fs.mnt.to_str().unwrap(),
        "--key",
        &format!("keyfile:{}", inside.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the backing store"));

    let foreign = fs.dir.path().join("foreign.key");
    fs::copy(&fs.key, &foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
    let out = secretfs(&[
        "mount",
        fs.backing.to_str().unwrap(),
        fs.mnt.to_str().unwrap(),
        "--key",
        &format!("keyfile:{}", foreign.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not root"));
}

#[test]
fn the_state_directory_is_root_owned_and_not_world_writable() {
    if !common::can_mount() {
        return;
    }
    let _fs = Fs::new();
    let m = fs::symlink_metadata("/run/secretfs").unwrap();
    assert!(m.is_dir());
    assert_eq!(m.uid(), 0);
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
fn random_plants_while_clients_work_never_reach_outside_nor_stop_the_daemon() {
    if !common::can_mount() {
        return;
    }
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::fresh_seed("hostile mutation"));
    let decoy = Decoy::new();
    let fs = Fs::new();
    fs::write(fs.p("control"), b"still fine").unwrap();
    for d in 0..4 {
        fs::create_dir(fs.p(&format!("d{d}"))).unwrap();
        for f in 0..6 {
            fs::write(fs.p(&format!("d{d}/f{f}")), vec![b'a' + f as u8; 5000]).unwrap();
        }
        fs::write(fs.p(&format!("d{d}/{}", long_name('L'))), b"long").unwrap();
        symlink("target", fs.p(&format!("d{d}/link"))).unwrap();
        let fifo = std::ffi::CString::new(fs.p(&format!("d{d}/fifo")).to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        fs::create_dir(fs.p(&format!("d{d}/sub"))).unwrap();
        fs::write(fs.p(&format!("d{d}/sub/inner")), b"inner").unwrap();
    }
    // The control file is spared: it proves the daemon still serves what was not attacked.
    let control = fs.backing_of(&fs.p("control"));
    // Clients keep reading, writing, listing and renaming while the store is attacked.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (mnt, stop) = (fs.mnt.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = mnt.join(format!("d{}", i % 4));
                let _ = fs::read_dir(&d).map(|rd| rd.count());
                // O_NONBLOCK: a planted FIFO would block the client in the kernel otherwise.
                let _ = nonblocking(&d.join(format!("f{}", i % 6)), false)
                    .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut Vec::new()));
                let _ = nonblocking(&d.join(format!("w{}", i % 3)), true)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &i.to_le_bytes()));
                let _ = fs::rename(d.join(format!("w{}", i % 3)), d.join(long_name('R')));
                let _ = fs::remove_file(d.join(long_name('R')));
                i += 1;
            }
            i
        })
    };
    for round in 0..100 {
        let mut all = Vec::new();
        let mut stack = vec![fs.backing.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.file_name().unwrap() == "secretfs.conf" || p == control {
                    continue;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                all.push(p);
            }
        }
        if all.is_empty() {
            break;
        }
        let victim = &all[rng.gen_range(0..all.len())];
        // One in nine: the object stays, only its owner changes (to nobody).
        let kind = match rng.gen_range(0..=PLANTS.len()) {
            i if i == PLANTS.len() => None,
            i => Some(PLANTS[i]),
        };
        // The client may be using the victim right now: a lost race is fine, a hang is not.
        let v = victim.clone();
        let d = Decoy {
            _dir: tempfile::tempdir().unwrap(),
            path: decoy.path.clone(),
        };
        within("planting", move || match kind {
            Some(kind) => drop(std::panic::catch_unwind(move || plant(&v, kind, &d))),
            None => drop(std::os::unix::fs::lchown(&v, Some(65534), Some(65534))),
        });
        let mnt = fs.mnt.clone();
        within(&format!("round {round}: a walk of the mount"), move || {
            walk_all(&mnt)
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ops = within("the client", move || client.join().unwrap());
    assert!(ops > 0, "the client never ran");
    assert_eq!(fs::read(fs.p("control")).unwrap(), b"still fine");
    decoy.assert_unchanged();
    let backing = fs.backing.to_str().unwrap().to_string();
    within("fsck", move || secretfs(&["fsck", &backing]).status.code());
    decoy.assert_unchanged();
}

/// Lists, stats and reads (non-blocking) everything under `dir` through the mount.
fn walk_all(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            walk_all(&p);
        } else if m.is_file() {
            let _ = nonblocking(&p, false)
                .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut Vec::new()));
        } else if m.file_type().is_symlink() {
            let _ = fs::read_link(&p);
        }
    }
}

/// Opens for reading, or creates/truncates for writing, never blocking on a FIFO.
fn nonblocking(p: &Path, write: bool) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .create(write)
        .truncate(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
}

#[test]
fn secretfs_pin_adopts_a_store_only_with_a_key_that_opens_it() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::init();
    let conf: serde_json::Value =
        serde_json::from_slice(&fs::read(fs.backing.join("secretfs.conf")).unwrap()).unwrap();
    let pin = PathBuf::from(format!(
        "/etc/secretfs/pins/{}.json",
        conf["fs_id"].as_str().unwrap()
    ));
    // A store made on another host (or before pins): this host has no pin for it.
    fs::remove_file(&pin).unwrap();
    mount_refused(&fs, &[], "an unpinned store without --key");
    let wrong = fs.dir.path().join("wrong.key");
    fs::write(&wrong, [9u8; 32]).unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o400)).unwrap();
    let backing = fs.backing.to_str().unwrap();
    let out = secretfs(&[
        "pin",
        backing,
        "--key",
        &format!("keyfile:{}", wrong.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !pin.exists(),
        "a key that does not open the store was pinned"
    );
    let out = secretfs(&[
        "pin",
        backing,
        "--key",
        &format!("keyfile:{}", fs.key.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = fs::metadata(&pin).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o644));
    fs.mount();
    fs.umount();
    // A pin anyone could have written is not trusted.
    fs::set_permissions(&pin, fs::Permissions::from_mode(0o666)).unwrap();
    mount_refused(&fs, &[], "a world-writable pin");
}

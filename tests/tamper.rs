//! Tampering with the backing store while unmounted: every change must be detected (EIO or the
//! clear config error), logged as an audit event, and the daemon must keep serving other files.

mod common;

use common::{errno_of, Fs};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

const HEADER: u64 = 18;
const STORED_BLOCK: u64 = 4096 + 28;

fn block_offset(i: u64) -> u64 {
    HEADER + i * STORED_BLOCK
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

fn stored_block(path: &Path, i: u64) -> Vec<u8> {
    let mut buf = vec![0u8; STORED_BLOCK as usize];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, block_offset(i))
        .unwrap();
    buf
}

fn put_block(path: &Path, i: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, block_offset(i))
        .unwrap();
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect()
}

fn assert_eio(fs: &Fs, name: &str) {
    let err = fs::read(fs.p(name)).expect_err(&format!("{name}: tampering was not detected"));
    assert_eq!(errno_of(&err), libc::EIO, "{name}: {err}");
    assert_eq!(
        fs::read(fs.p("control")).unwrap(),
        b"still fine",
        "daemon stopped serving after {name}"
    );
}

#[test]
fn every_kind_of_tampering_is_detected_and_the_daemon_lives_on() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::write(fs.p("control"), b"still fine").unwrap();
    for (i, name) in [
        "flip_block",
        "flip_header",
        "swapped",
        "copy_src",
        "copy_dst",
        "truncated",
        "flip_tag",
    ]
    .iter()
    .enumerate()
    {
        fs::write(fs.p(name), pattern(i as u8 + 3, 3 * 4096)).unwrap();
    }
    fs::create_dir(fs.p("named")).unwrap();
    fs::write(fs.p("named/secret-name"), b"x").unwrap();
    fs::write(fs.p("named/neighbour"), b"y").unwrap();
    std::os::unix::fs::symlink("target", fs.p("link")).unwrap();
    let backing: Vec<_> = [
        "flip_block",
        "flip_header",
        "swapped",
        "copy_src",
        "copy_dst",
        "truncated",
        "flip_tag",
        "named/secret-name",
        "link",
    ]
    .iter()
    .map(|n| fs.backing_of(&fs.p(n)))
    .collect();
    fs.umount();

    flip(&backing[0], block_offset(1) + 100, 0x01);
    flip(&backing[1], 5, 0x80);
    let (b0, b1) = (stored_block(&backing[2], 0), stored_block(&backing[2], 1));
    put_block(&backing[2], 0, &b1);
    put_block(&backing[2], 1, &b0);
    put_block(&backing[4], 1, &stored_block(&backing[3], 1));
    OpenOptions::new()
        .write(true)
        .open(&backing[5])
        .unwrap()
        .set_len(block_offset(2))
        .unwrap();
    flip(&backing[6], block_offset(1) + STORED_BLOCK - 1, 0x10);
    let name = backing[7]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut tampered = name.clone().into_bytes();
    tampered[4] = if tampered[4] == b'A' { b'B' } else { b'A' };
    fs::rename(
        &backing[7],
        backing[7].with_file_name(String::from_utf8(tampered).unwrap()),
    )
    .unwrap();
    let target = fs::read_link(&backing[8])
        .unwrap()
        .into_os_string()
        .into_string()
        .unwrap();
    let mut t = target.into_bytes();
    t[3] = if t[3] == b'A' { b'B' } else { b'A' };
    fs::remove_file(&backing[8]).unwrap();
    std::os::unix::fs::symlink(String::from_utf8(t).unwrap(), &backing[8]).unwrap();

    fs.mount();
    // Inode numbers are the backing ones (the replaced symlink has a new one): each
    // detection's audit event must name its object.
    let detected = [
        "flip_block",
        "flip_header",
        "swapped",
        "copy_dst",
        "truncated",
        "flip_tag",
        "link",
        "named",
    ];
    let inos: Vec<u64> = detected
        .iter()
        .map(|n| std::os::unix::fs::MetadataExt::ino(&fs::symlink_metadata(fs.p(n)).unwrap()))
        .collect();
    // The six content files read as EIO; the link and the directory are checked below.
    for name in &detected[..6] {
        assert_eio(&fs, name);
    }
    assert!(
        fs::read(fs.p("copy_src")).unwrap() == pattern(6, 3 * 4096),
        "the source of the copy is untouched"
    );
    // A block that was not touched still reads: damage is contained to the bad block.
    let mut first = vec![0u8; 4096];
    fs::File::open(fs.p("flip_block"))
        .unwrap()
        .read_exact_at(&mut first, 0)
        .unwrap();
    assert!(first == pattern(3, 4096), "untouched first block");

    let listed: Vec<_> = fs::read_dir(fs.p("named"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        listed,
        vec![std::ffi::OsString::from("neighbour")],
        "a tampered name must not be listed"
    );
    assert_eq!(
        errno_of(&fs::read(fs.p("named/secret-name")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(&fs::read_link(fs.p("link")).unwrap_err()),
        libc::EIO
    );
    assert_eq!(fs::read(fs.p("control")).unwrap(), b"still fine");

    let log = fs.log_text();
    for (name, ino) in detected.iter().zip(&inos) {
        let what = match *name {
            "link" => "symlink",
            "named" => "name",
            _ => "block",
        };
        assert!(
            log.lines()
                .any(|l| l.contains("event=\"integrity_failure\"")
                    && l.contains(&format!("what=\"{what}\""))
                    && l.contains(&format!("ino={ino} "))),
            "no {what} audit event for {name} (ino {ino}):\n{log}"
        );
    }
    // fsck reports every tampered object too (SECURITY.md says it does).
    fs.umount();
    let out = common::secretfs(&["fsck", fs.backing.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(4), "fsck missed the tampering");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for name in detected {
        assert!(
            paths.iter().any(|p| p.starts_with(&format!("/{name}"))),
            "fsck did not report {name}: {paths:?}"
        );
    }
    assert!(!paths.iter().any(|p| *p == "/control" || *p == "/copy_src"));
}

/// A 1 MiB read is opened in parts on several cores: a bad block in a part that another thread
/// opens must still fail the read with EIO, while ranges without it read back intact.
#[test]
fn a_bad_block_inside_a_large_read_fails_it_whichever_core_opens_it() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let data = pattern(11, 4 << 20);
    fs::write(fs.p("big"), &data).unwrap();
    let backing = fs.backing_of(&fs.p("big"));
    fs.umount();
    // Block 200 lies in the second half of the first 1 MiB request.
    flip(&backing, block_offset(200) + 40, 0x04);
    fs.mount();

    let f = fs::File::open(fs.p("big")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let err = f.read_exact_at(&mut buf, 0).unwrap_err();
    assert_eq!(errno_of(&err), libc::EIO, "{err}");
    f.read_exact_at(&mut buf, 2 << 20).unwrap();
    assert!(
        buf == data[2 << 20..3 << 20],
        "an intact range read back wrong"
    );
    assert!(
        fs.log_text().contains("block 200"),
        "no audit event for block 200"
    );
}

#[test]
fn an_edited_config_is_refused_with_the_clear_error() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::write(fs.p("f"), b"data").unwrap();
    fs.umount();
    let conf = fs.backing.join("secretfs.conf");
    let text = fs::read_to_string(&conf).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let root = v["root_dir_id"].as_str().unwrap();
    let other = if root.starts_with('A') {
        root.replacen('A', "B", 1)
    } else {
        format!("A{}", &root[1..])
    };
    fs::write(&conf, text.replace(root, &other)).unwrap();
    let out = fs.try_mount(&[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("this key does not open this filesystem (config MAC mismatch)"));
    assert!(!fs.is_mounted());

    fs::write(&conf, b"{ not json").unwrap();
    let out = fs.try_mount(&[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fs.is_mounted());
}

#[test]
fn random_byte_flips_across_the_tree_never_crash_the_daemon() {
    if !common::can_mount() {
        return;
    }
    use rand::{Rng, SeedableRng};
    let mut fs = Fs::new();
    for d in 0..4 {
        fs::create_dir(fs.p(&format!("d{d}"))).unwrap();
        for f in 0..6 {
            fs::write(
                fs.p(&format!("d{d}/f{f}")),
                pattern(d * 6 + f + 1, 1000 + 3000 * f as usize),
            )
            .unwrap();
        }
    }
    fs.umount();
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let files: Vec<_> = fs
        .backing_files()
        .into_iter()
        .filter(|p| p.is_file() && !p.ends_with("secretfs.conf"))
        .collect();
    for _ in 0..60 {
        let p = &files[rng.gen_range(0..files.len())];
        let len = fs::metadata(p).unwrap().len();
        if len > 0 {
            flip(p, rng.gen_range(0..len), 1 << rng.gen_range(0..8));
        }
    }
    fs.mount();
    for d in 0..4u8 {
        let Ok(entries) = fs::read_dir(fs.p(&format!("d{d}"))) else {
            continue;
        };
        for e in entries.flatten() {
            match fs::read(e.path()) {
                Ok(data) => {
                    let f: u8 = e.file_name().to_str().unwrap()[1..].parse().unwrap();
                    assert!(
                        data == pattern(d * 6 + f + 1, 1000 + 3000 * f as usize),
                        "garbage returned for {:?}",
                        e.path()
                    );
                }
                Err(err) => assert!([libc::EIO, libc::ENOENT].contains(&errno_of(&err)), "{err}"),
            }
        }
    }
    assert!(fs.is_mounted(), "daemon died");
    fs::write(fs.p("after"), b"alive").unwrap();
    assert_eq!(fs::read(fs.p("after")).unwrap(), b"alive");
}

#[test]
fn fsck_is_clean_on_a_healthy_tree_and_repairs_only_what_is_safe() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::create_dir_all(fs.p("a/b")).unwrap();
    fs::write(fs.p("a/b/file"), pattern(5, 70_000)).unwrap();
    fs::write(fs.p(&"n".repeat(200)), b"long name").unwrap();
    std::os::unix::fs::symlink("a/b/file", fs.p("ln")).unwrap();
    fs.umount();
    let out = common::secretfs(&["fsck", fs.backing.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 problems"));

    // What a crash can leave behind: a half-built directory and an orphaned side file.
    fs::create_dir(fs.backing.join("secretfs.tmp.00aa")).unwrap();
    fs::write(fs.backing.join("lname.orphan.name"), b"x").unwrap();
    let check = common::secretfs(&["fsck", fs.backing.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(4));
    assert!(
        fs.backing.join("secretfs.tmp.00aa").exists(),
        "fsck without --repair changed the store"
    );
    let repair = common::secretfs(&["fsck", fs.backing.to_str().unwrap(), "--repair"]);
    assert_eq!(
        repair.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&repair.stdout)
    );
    assert!(String::from_utf8_lossy(&repair.stdout).contains("repaired: "));
    assert_eq!(
        common::secretfs(&["fsck", fs.backing.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );

    let wrong = fs.dir.path().join("wrong-key");
    fs::write(&wrong, [9u8; 32]).unwrap();
    fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let out = common::secretfs(&[
        "fsck",
        fs.backing.to_str().unwrap(),
        "--key",
        &format!("keyfile:{}", wrong.display()),
    ]);
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config MAC mismatch"));
    fs.mount();
    assert!(fs::read(fs.p("a/b/file")).unwrap() == pattern(5, 70_000));
}

#[test]
fn blocks_of_a_version_before_truncation_to_empty_cannot_be_spliced_back() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let old = pattern(7, 3 * 4096);
    fs::write(fs.p("reused"), &old).unwrap();
    let backing = fs.backing_of(&fs.p("reused"));
    let old_header = fs::read(&backing).unwrap()[..HEADER as usize].to_vec();
    let old_block = stored_block(&backing, 1);
    // O_TRUNC: the file becomes empty, then gets new contents of the same length.
    fs::write(fs.p("reused"), pattern(9, 3 * 4096)).unwrap();
    let new_header = fs::read(&backing).unwrap()[..HEADER as usize].to_vec();
    assert_ne!(
        old_header, new_header,
        "the file id was not renewed when it became empty"
    );
    fs.umount();
    put_block(&backing, 1, &old_block);
    fs.mount();
    let err = fs::read(fs.p("reused")).expect_err("an old version's block was accepted");
    assert_eq!(errno_of(&err), libc::EIO);
}

//! File mode on a real FUSE mount: POSIX behaviour checked against expectations and models.

mod common;

use common::{errno_of, secretfs, Fs};
use rand::{Rng, SeedableRng};
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a";

/// A new (or emptied) file open for reading and writing.
fn new_rw(path: impl AsRef<Path>) -> fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn random_writes_and_truncates_match_an_in_memory_model() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    // The fixed seed replays the same run everywhere; a fresh one each run finds new cases.
    for seed in [7, common::fresh_seed("model")] {
        random_writes_and_truncates_match_a_model(&mut fs, seed, true);
    }
}

/// Seeded random writes and truncates over files up to ~400 KiB (requests past 128 KiB are
/// split across cores), each followed by a full read checked against a Vec; every 25 steps
/// through a fresh descriptor too, and at the end after a remount (unless the filesystem is
/// ephemeral, where a remount starts empty).
fn random_writes_and_truncates_match_a_model(fs: &mut Fs, seed: u64, remount: bool) {
    let path = fs.p(&format!("model-{seed}.bin"));
    let file = new_rw(&path);
    let mut model: Vec<u8> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for step in 0..400 {
        if rng.gen_ratio(1, 6) {
            let len = rng.gen_range(0..400_000usize);
            file.set_len(len as u64).unwrap();
            model.resize(len, 0);
        } else {
            let off = rng.gen_range(0..360_000usize);
            let len = if rng.gen_ratio(1, 5) {
                rng.gen_range(128 << 10..200 << 10)
            } else {
                rng.gen_range(1..9_000usize)
            };
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            file.write_all_at(&data, off as u64).unwrap();
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
        }
        assert_eq!(
            file.metadata().unwrap().len(),
            model.len() as u64,
            "seed {seed}: size after step {step}"
        );
        let mut back = vec![0u8; model.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert!(
            back == model,
            "seed {seed}: content differs after step {step}"
        );
        if step % 25 == 24 {
            assert!(
                fs::read(&path).unwrap() == model,
                "seed {seed}: a new descriptor reads other content after step {step}"
            );
        }
    }
    drop(file);
    if remount {
        fs.remount();
        assert!(
            fs::read(&path).unwrap() == model,
            "seed {seed}: content differs after a remount"
        );
    }
}

/// The namespace as the model keeps it: relative path → file contents, or `None` for a directory.
type Tree = std::collections::BTreeMap<String, Option<Vec<u8>>>;

fn tree_of(root: &Path) -> Tree {
    let mut out = Tree::new();
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// What rename(2) with `flags` does to the model, or `None` if it must fail.
fn model_rename(t: &Tree, src: &str, dst: &str, flags: u32) -> Option<Tree> {
    let parent_ok = |p: &str| match p.rsplit_once('/') {
        Some((parent, _)) => t.get(parent) == Some(&None),
        None => true,
    };
    let under = |p: &str, dir: &str| {
        p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
    };
    let src_node = t.get(src)?;
    // Onto itself: nothing happens, and it succeeds (but NOREPLACE: the name exists).
    if src == dst {
        return (flags != libc::RENAME_NOREPLACE).then(|| t.clone());
    }
    if !parent_ok(dst) || under(dst, src) {
        return None;
    }
    let dst_node = t.get(dst);
    let subtree = |root: &str| -> Vec<(String, Option<Vec<u8>>)> {
        t.iter()
            .filter(|(p, _)| p.as_str() == root || under(p, root))
            .map(|(p, n)| (p[root.len()..].to_string(), n.clone()))
            .collect()
    };
    let mut out = t.clone();
    let (moved, displaced) = (subtree(src), subtree(dst));
    out.retain(|p, _| !(p == src || under(p, src) || p == dst || under(p, dst)));
    match flags {
        libc::RENAME_EXCHANGE => {
            dst_node?;
            if under(src, dst) {
                return None;
            }
            for (rest, n) in displaced {
                out.insert(format!("{src}{rest}"), n);
            }
        }
        libc::RENAME_NOREPLACE if dst_node.is_some() => return None,
        _ => match (src_node, dst_node) {
            (_, None) => {}
            (None, Some(None)) if displaced.len() == 1 => {}
            (Some(_), Some(Some(_))) => {}
            _ => return None,
        },
    }
    for (rest, n) in moved {
        out.insert(format!("{dst}{rest}"), n);
    }
    Some(out)
}

#[test]
fn directory_and_file_renames_match_a_namespace_model_across_remounts() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let root = fs.p("ns");
    fs::create_dir(&root).unwrap();
    let names = ["a", "b", "c", "a/x", "a/y", "b/x", "c/z", "a/x/q", "b/x/q"];
    for seed in [5, common::fresh_seed("namespace model")] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut model = tree_of(&root);
        for step in 0..300 {
            let pick = |rng: &mut rand::rngs::StdRng| names[rng.gen_range(0..names.len())];
            let (p, q) = (pick(&mut rng), pick(&mut rng));
            let (path, other) = (root.join(p), root.join(q));
            let parent_ok = |t: &Tree, p: &str| {
                p.rsplit_once('/')
                    .is_none_or(|(d, _)| t.get(d) == Some(&None))
            };
            let what;
            let expect: Option<Tree> = match rng.gen_range(0..7) {
                0 => {
                    what = format!("mkdir {p}");
                    let ok = fs::create_dir(&path).is_ok();
                    let mut t = model.clone();
                    let want = (!t.contains_key(p) && parent_ok(&t, p)).then(|| {
                        t.insert(p.to_string(), None);
                        t
                    });
                    assert_eq!(ok, want.is_some(), "seed {seed} step {step}: {what}");
                    want
                }
                1 => {
                    what = format!("create {p}");
                    let body = format!("{seed}-{step}").into_bytes();
                    let ok = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(&body))
                        .is_ok();
                    let mut t = model.clone();
                    let want = (!t.contains_key(p) && parent_ok(&t, p)).then(|| {
                        t.insert(p.to_string(), Some(body));
                        t
                    });
                    assert_eq!(ok, want.is_some(), "seed {seed} step {step}: {what}");
                    want
                }
                2 => {
                    what = format!("unlink {p}");
                    let ok = fs::remove_file(&path).is_ok();
                    let mut t = model.clone();
                    let want = matches!(t.get(p), Some(Some(_))).then(|| {
                        t.remove(p);
                        t
                    });
                    assert_eq!(ok, want.is_some(), "seed {seed} step {step}: {what}");
                    want
                }
                3 => {
                    what = format!("rmdir {p}");
                    let ok = fs::remove_dir(&path).is_ok();
                    let empty = !model.keys().any(|k| k.starts_with(&format!("{p}/")));
                    let mut t = model.clone();
                    let want = (t.get(p) == Some(&None) && empty).then(|| {
                        t.remove(p);
                        t
                    });
                    assert_eq!(ok, want.is_some(), "seed {seed} step {step}: {what}");
                    want
                }
                k => {
                    let flags = [0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][k - 4];
                    what = format!("rename {p} {q} flags {flags}");
                    let ok = renameat2(&path, &other, flags) == 0;
                    let want = model_rename(&model, p, q, flags);
                    assert_eq!(ok, want.is_some(), "seed {seed} step {step}: {what}");
                    want
                }
            };
            if let Some(t) = expect {
                model = t;
            }
            assert_eq!(
                tree_of(&root),
                model,
                "seed {seed} step {step}: after {what}"
            );
            if step % 100 == 99 {
                fs.remount();
                assert_eq!(
                    tree_of(&root),
                    model,
                    "seed {seed} step {step}: after a remount"
                );
            }
        }
    }
}

#[test]
fn nothing_plaintext_reaches_the_backing_store() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    let marker = String::from_utf8(MARKER.to_vec()).unwrap();
    fs::create_dir(fs.p(&format!("dir-{marker}"))).unwrap();
    let file = fs.p(&format!("dir-{marker}/file-{marker}.txt"));
    let mut content = Vec::new();
    for _ in 0..3000 {
        content.extend_from_slice(MARKER);
    }
    fs::write(&file, &content).unwrap();
    std::os::unix::fs::symlink(format!("target-{marker}"), fs.p(&format!("link-{marker}")))
        .unwrap();
    // Attributes in every stored namespace, on the file and on its directory.
    for (on, ns) in [(&file, "user"), (&file, "trusted"), (&file, "security")] {
        set_marker_xattr(on, ns, &marker);
    }
    set_marker_xattr(&fs.p(&format!("dir-{marker}")), "user", &marker);
    assert_eq!(fs::read(&file).unwrap(), content);
    let mut stored_xattrs = 0;

    for p in fs.backing_files() {
        let name = p.file_name().unwrap().as_bytes();
        assert!(
            !contains(name, b"MARKER"),
            "plaintext name in backing store: {}",
            p.display()
        );
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&p).unwrap();
            assert!(
                !contains(target.as_os_str().as_bytes(), b"MARKER"),
                "plaintext symlink target"
            );
        } else {
            if meta.is_file() {
                assert!(
                    !contains(&fs::read(&p).unwrap(), MARKER),
                    "plaintext in {}",
                    p.display()
                );
            }
            let names = xattr_names(&p);
            assert!(
                !contains(&names, MARKER),
                "plaintext xattr name on {}",
                p.display()
            );
            for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let value = xattr_value(&p, name);
                assert!(
                    !contains(&value, MARKER),
                    "plaintext xattr value on {}",
                    p.display()
                );
                stored_xattrs += 1;
            }
        }
    }
    assert_eq!(
        stored_xattrs, 4,
        "the four attributes were not all found in the backing store"
    );
}

fn set_marker_xattr(on: &Path, namespace: &str, marker: &str) {
    let name = CString::new(format!("{namespace}.{marker}")).unwrap();
    let rc = unsafe {
        libc::setxattr(
            cpath(on).as_ptr(),
            name.as_ptr(),
            MARKER.as_ptr().cast(),
            MARKER.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {namespace}: {}",
        std::io::Error::last_os_error()
    );
}

fn xattr_value(p: &Path, name: &[u8]) -> Vec<u8> {
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "getxattr on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The attribute names of `p` (which must exist and allow xattrs).
fn xattr_names(p: &Path) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::listxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "listxattr on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cmd).args(args).output().unwrap()
}

fn caps_of(path: &Path) -> String {
    let out = run("getcap", &[path.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn file_capabilities_work_at_exec_and_are_dropped_by_writes_trusted_xattrs_for_root() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::init();
    let out = fs.try_mount(&["-o", "suid"]);
    assert!(out.status.success(), "{out:?}");
    // nobody must reach the binaries: every directory down to them 0755.
    use std::os::unix::fs::PermissionsExt;
    for dir in [fs.dir.path(), &fs.mnt] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (with, without) = (fs.p("cat-with-caps"), fs.p("cat"));
    for p in [&with, &without] {
        fs::copy("/usr/bin/cat", p).unwrap();
    }
    let set = run(
        "setcap",
        &["cap_dac_read_search+ep", with.to_str().unwrap()],
    );
    assert!(set.status.success(), "setcap: {set:?}");
    assert!(
        caps_of(&with).ends_with("cap_dac_read_search=ep"),
        "{}",
        caps_of(&with)
    );
    // The kernel reads them back at exec: nobody may read /etc/shadow with one copy only.
    let as_nobody = |bin: &Path| {
        run(
            "runuser",
            &["-u", "nobody", "--", bin.to_str().unwrap(), "/etc/shadow"],
        )
    };
    assert!(as_nobody(&with).status.success(), "{:?}", as_nobody(&with));
    assert!(!as_nobody(&without).status.success());
    // Stored as an encrypted user attribute: no name says what it is.
    let stored = xattr_names(&fs.backing_of(&with));
    assert!(!stored.is_empty());
    for name in stored.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        assert!(
            name.starts_with(b"user."),
            "{:?}",
            String::from_utf8_lossy(name)
        );
        assert!(!String::from_utf8_lossy(name).contains("capab"));
    }
    // trusted.* (root only, the kernel checks) round-trips, and both survive a remount.
    let t = run(
        "setfattr",
        &[
            "-n",
            "trusted.overlay.opaque",
            "-v",
            "y",
            with.to_str().unwrap(),
        ],
    );
    assert!(t.status.success(), "setfattr: {t:?}");
    fs.umount();
    let out = fs.try_mount(&["-o", "suid"]);
    assert!(out.status.success(), "{out:?}");
    assert!(caps_of(&with).ends_with("cap_dac_read_search=ep"));
    let got = run(
        "getfattr",
        &[
            "--only-values",
            "-n",
            "trusted.overlay.opaque",
            with.to_str().unwrap(),
        ],
    );
    assert_eq!(got.stdout, b"y");
    // A write (even root's), a truncate and a fallocate each drop the capabilities.
    let append = || {
        let mut f = OpenOptions::new().append(true).open(&with).unwrap();
        f.write_all(b"\n").unwrap();
    };
    append();
    assert_eq!(caps_of(&with), "", "capabilities kept after a write");
    assert!(!as_nobody(&with).status.success());
    let reset = || {
        assert!(run(
            "setcap",
            &["cap_dac_read_search+ep", with.to_str().unwrap()]
        )
        .status
        .success())
    };
    reset();
    let len = fs::metadata(&with).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&with)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert_eq!(caps_of(&with), "", "capabilities kept after a truncate");
    reset();
    let f = OpenOptions::new().write(true).open(&with).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 1 << 20) }, 0);
    assert_eq!(caps_of(&with), "", "capabilities kept after a fallocate");
    // SELinux labels are per mount, not per file: not stored, and ls -l's query costs nothing.
    let label = run(
        "setfattr",
        &[
            "-n",
            "security.selinux",
            "-v",
            "x",
            without.to_str().unwrap(),
        ],
    );
    assert!(!label.status.success());
    // Any other system.* name stays refused (POSIX ACLs have their own test).
    let other = run(
        "setfattr",
        &[
            "-n",
            "system.sockprotoname",
            "-v",
            "x",
            without.to_str().unwrap(),
        ],
    );
    assert!(!other.status.success());
}

#[test]
fn rename_whiteout_and_overlayfs_with_its_upper_layer_on_secretfs() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    // RENAME_WHITEOUT: the source becomes a 0/0 character device, the target has the data.
    fs::write(fs.p("src"), b"moved").unwrap();
    let (src, dst) = (cpath(&fs.p("src")), cpath(&fs.p("dst")));
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::RENAME_WHITEOUT,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let white = fs::symlink_metadata(fs.p("src")).unwrap();
    assert_eq!(
        (white.mode() & libc::S_IFMT, white.rdev()),
        (libc::S_IFCHR, 0)
    );
    assert_eq!(fs::read(fs.p("dst")).unwrap(), b"moved");

    // overlayfs needs RENAME_WHITEOUT and trusted.* xattrs of its upper layer.
    let lower = fs.dir.path().join("lower");
    let merged = fs.dir.path().join("merged");
    for d in [&lower, &lower.join("dir"), &merged] {
        fs::create_dir(d).unwrap();
    }
    fs::write(lower.join("kept"), b"lower").unwrap();
    fs::write(lower.join("gone"), b"lower").unwrap();
    fs::write(lower.join("dir/inside"), b"lower").unwrap();
    fs::create_dir(fs.p("upper")).unwrap();
    fs::create_dir(fs.p("work")).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        fs.p("upper").display(),
        fs.p("work").display()
    );
    let overlay = || {
        let out = run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts,
                merged.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "overlay mount: {out:?}");
    };
    overlay();
    fs::write(merged.join("kept"), b"changed").unwrap();
    fs::remove_file(merged.join("gone")).unwrap();
    fs::remove_dir_all(merged.join("dir")).unwrap();
    fs::create_dir(merged.join("dir")).unwrap();
    fs::write(merged.join("new"), b"upper").unwrap();
    assert!(run("umount", &[merged.to_str().unwrap()]).status.success());
    // The lower layer is untouched; the upper one, remounted, gives the same merged view.
    assert_eq!(fs::read(lower.join("kept")).unwrap(), b"lower");
    assert!(lower.join("gone").exists() && lower.join("dir/inside").exists());
    fs.remount();
    overlay();
    let mut names: Vec<String> = fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "kept", "new"]);
    assert_eq!(fs::read(merged.join("kept")).unwrap(), b"changed");
    assert_eq!(
        fs::read_dir(merged.join("dir")).unwrap().count(),
        0,
        "opaque dir"
    );
    assert!(run("umount", &[merged.to_str().unwrap()]).status.success());
}

#[test]
fn sizes_names_and_listing() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    for (name, len) in [
        ("empty", 0usize),
        ("one", 1),
        ("block", 4096),
        ("block+1", 4097),
        ("big", 1 << 20),
    ] {
        fs::write(fs.p(name), vec![b'x'; len]).unwrap();
        assert_eq!(
            fs::metadata(fs.p(name)).unwrap().len(),
            len as u64,
            "{name}"
        );
        let stored = fs::metadata(fs.backing_of(&fs.p(name))).unwrap().len();
        let blocks = (len as u64).div_ceil(4096);
        let expected = if len == 0 {
            0
        } else {
            18 + len as u64 + 28 * blocks
        };
        assert_eq!(stored, expected, "stored size of {name}");
    }
    let long = "L".repeat(255);
    fs::write(fs.p(&long), b"long name").unwrap();
    assert_eq!(fs::read(fs.p(&long)).unwrap(), b"long name");
    let mut listed: Vec<String> = fs::read_dir(&fs.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec!["big", "block", "block+1", "empty", "one", long.as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(
        errno_of(&fs::write(fs.p(&"x".repeat(256)), b"").unwrap_err()),
        libc::ENAMETOOLONG
    );
    fs::rename(fs.p(&long), fs.p("short")).unwrap();
    assert_eq!(fs::read(fs.p("short")).unwrap(), b"long name");
    let leftover = fs
        .backing_files()
        .iter()
        .any(|p| p.to_string_lossy().contains("lname."));
    assert!(!leftover, "long-name side file left behind after rename");
}

#[test]
fn hard_links_share_content() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    fs::write(fs.p("a"), b"first").unwrap();
    fs::create_dir(fs.p("sub")).unwrap();
    fs::hard_link(fs.p("a"), fs.p("sub/b")).unwrap();
    let (ma, mb) = (
        fs::metadata(fs.p("a")).unwrap(),
        fs::metadata(fs.p("sub/b")).unwrap(),
    );
    assert_eq!(ma.ino(), mb.ino());
    assert_eq!(ma.nlink(), 2);
    fs::write(fs.p("sub/b"), b"second, longer").unwrap();
    assert_eq!(fs::read(fs.p("a")).unwrap(), b"second, longer");
    fs::remove_file(fs.p("a")).unwrap();
    assert_eq!(fs::read(fs.p("sub/b")).unwrap(), b"second, longer");
    assert_eq!(fs::metadata(fs.p("sub/b")).unwrap().nlink(), 1);
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cpath(from).as_ptr(),
            libc::AT_FDCWD,
            cpath(to).as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

#[test]
fn rename_across_directories_and_flags() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    fs::create_dir_all(fs.p("a/deep")).unwrap();
    fs::create_dir(fs.p("b")).unwrap();
    fs::write(fs.p("a/deep/f"), b"inside").unwrap();
    fs::write(fs.p("a/g"), b"gee").unwrap();
    fs::rename(fs.p("a/g"), fs.p("b/g2")).unwrap();
    assert_eq!(fs::read(fs.p("b/g2")).unwrap(), b"gee");
    fs::rename(fs.p("a/deep"), fs.p("b/moved")).unwrap();
    assert_eq!(fs::read(fs.p("b/moved/f")).unwrap(), b"inside");
    assert!(!fs.p("a/deep").exists());

    fs::write(fs.p("x"), b"x").unwrap();
    fs::write(fs.p("y"), b"y").unwrap();
    assert_eq!(
        renameat2(&fs.p("x"), &fs.p("y"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(renameat2(&fs.p("x"), &fs.p("y"), libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(fs.p("x")).unwrap(), b"y");
    assert_eq!(fs::read(fs.p("y")).unwrap(), b"x");
    assert_eq!(
        renameat2(
            &fs.p("x"),
            &fs.p("z"),
            libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE
        ),
        libc::EINVAL
    );
    assert_eq!(renameat2(&fs.p("x"), &fs.p("z"), 1 << 7), libc::EINVAL);
    assert!(!fs.p("z").exists());
    // Save-by-rename, as editors do.
    fs::write(fs.p("doc.tmp"), b"new version").unwrap();
    fs::rename(fs.p("doc.tmp"), fs.p("x")).unwrap();
    assert_eq!(fs::read(fs.p("x")).unwrap(), b"new version");
}

#[test]
fn a_directory_renamed_onto_an_empty_one_replaces_it_and_never_a_full_one() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::create_dir(fs.p("new")).unwrap();
    fs::write(fs.p("new/f"), b"new contents").unwrap();
    fs::create_dir(fs.p("old")).unwrap();
    // Atomic directory replacement: rename(2) onto an existing empty directory.
    fs::rename(fs.p("new"), fs.p("old")).unwrap();
    assert!(!fs.p("new").exists());
    assert_eq!(fs::read(fs.p("old/f")).unwrap(), b"new contents");
    // Onto a non-empty directory: ENOTEMPTY, and both stay as they were.
    fs::create_dir(fs.p("full")).unwrap();
    fs::write(fs.p("full/keep"), b"kept").unwrap();
    let err = fs::rename(fs.p("old"), fs.p("full")).unwrap_err();
    assert!(
        matches!(errno_of(&err), libc::ENOTEMPTY | libc::EEXIST),
        "{err}"
    );
    assert_eq!(fs::read(fs.p("full/keep")).unwrap(), b"kept");
    assert_eq!(fs::read(fs.p("old/f")).unwrap(), b"new contents");
    // Exchanging two directories keeps both whole.
    assert_eq!(
        renameat2(&fs.p("old"), &fs.p("full"), libc::RENAME_EXCHANGE),
        0
    );
    fs.remount();
    assert_eq!(fs::read(fs.p("old/keep")).unwrap(), b"kept");
    assert_eq!(fs::read(fs.p("full/f")).unwrap(), b"new contents");
    fs::write(fs.p("old/more"), b"still a valid directory").unwrap();
    assert_eq!(fs::read_dir(fs.p("old")).unwrap().count(), 2);
}

#[test]
fn open_then_unlinked_file_stays_usable() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    let mut f = new_rw(fs.p("tmp"));
    f.write_all(b"before unlink").unwrap();
    fs::remove_file(fs.p("tmp")).unwrap();
    assert!(!fs.p("tmp").exists());
    f.write_all(&vec![7u8; 10_000]).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(&back[..13], b"before unlink");
    assert_eq!(back.len(), 10_013);
    assert_eq!(f.metadata().unwrap().nlink(), 0);
}

#[test]
fn shared_writable_mmap() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    let f = new_rw(fs.p("mapped"));
    let len = 3 * 4096 + 100;
    f.set_len(len as u64).unwrap();
    unsafe {
        use std::os::fd::AsRawFd;
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED);
        let bytes = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        assert_eq!(libc::msync(ptr, len, libc::MS_SYNC), 0);
        libc::munmap(ptr, len);
    }
    drop(f);
    let back = fs::read(fs.p("mapped")).unwrap();
    assert_eq!(back.len(), len);
    assert!(back.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[test]
fn concurrent_writers_to_distinct_regions_of_one_file() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    let path = fs.p("shared");
    let f = std::sync::Arc::new(new_rw(&path));
    const REGION: usize = 64 * 1024 + 123;
    f.set_len((REGION * 4) as u64).unwrap();
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                for round in 0..20u8 {
                    let chunk = vec![t.wrapping_mul(31).wrapping_add(round); 1000];
                    for off in (0..REGION).step_by(1000) {
                        let n = chunk.len().min(REGION - off);
                        f.write_all_at(&chunk[..n], (t as usize * REGION + off) as u64)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let back = fs::read(&path).unwrap();
    for t in 0..4u8 {
        let want = t.wrapping_mul(31).wrapping_add(19);
        assert!(
            back[t as usize * REGION..(t as usize + 1) * REGION]
                .iter()
                .all(|b| *b == want),
            "region {t}"
        );
    }
}

/// Writers racing over the same bytes: each write lands whole (the kernel serialises writes to
/// one file; the daemon's block locks keep every stored block consistent), so the overlapped
/// range ends as one writer's record, never a mix, and every block authenticates.
#[test]
fn overlapping_writes_land_whole_and_writes_racing_truncates_tear_no_block() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let path = fs.p("overlap");
    let f = std::sync::Arc::new(new_rw(&path));
    const AT: u64 = 1000;
    const LEN: usize = 3 * 4096 + 77;
    let writers: Vec<_> = (1..=2u8)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                for round in 0..200u8 {
                    let pattern = vec![t * 100 + round % 50; LEN];
                    f.write_all_at(&pattern, AT).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let back = fs::read(&path).unwrap();
    let region = &back[AT as usize..AT as usize + LEN];
    assert!(region.iter().all(|b| *b == region[0]), "a mixed record");
    assert!(
        [149, 249].contains(&region[0]),
        "the last record is a final one"
    );
    drop(f);

    // Writes and truncates racing on one file (separate descriptors): no EIO ever, and the
    // file and the store stay sound.
    let raced = fs.p("raced");
    fs::write(&raced, vec![1u8; 64 << 10]).unwrap();
    let seed = common::fresh_seed("write/truncate race");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (w, t) = {
        let (p1, p2, stop1) = (raced.clone(), raced.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&p1).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut n = 0;
            while !stop1.load(std::sync::atomic::Ordering::Relaxed) || n < 500 {
                let off = rng.gen_range(0..96 << 10);
                let len = rng.gen_range(1..20_000);
                f.write_all_at(&vec![rng.gen_range(1..=255u8); len], off)
                    .unwrap();
                n += 1;
            }
        });
        let truncater = std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&p2).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
            for _ in 0..500 {
                f.set_len(rng.gen_range(0..128 << 10)).unwrap();
            }
        });
        (writer, truncater)
    };
    t.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    w.join().unwrap();
    let len = fs::metadata(&raced).unwrap().len();
    assert_eq!(
        fs::read(&raced).unwrap().len() as u64,
        len,
        "reads back whole, no EIO"
    );
    assert!(
        !fs.log_text().contains("integrity_failure"),
        "{}",
        fs.log_text()
    );
    fs.remount();
    assert_eq!(fs::read(&raced).unwrap().len() as u64, len);
    fs.umount();
    assert_fsck_clean(&fs);
}

/// Large requests have their blocks sealed and opened in parts on several cores: unaligned
/// multi-MiB writes, an overwrite across part boundaries and an extension must read back whole.
#[test]
fn large_unaligned_writes_split_across_cores_read_back_exactly() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let path = fs.p("large");
    let f = new_rw(&path);
    let mut model: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    f.write_all_at(&model[1000..], 1000).unwrap();
    model[..1000].fill(0);
    let patch: Vec<u8> = (0..(1 << 20) + 5).map(|i: usize| (i % 253) as u8).collect();
    f.write_all_at(&patch, 700_001).unwrap();
    model[700_001..700_001 + patch.len()].copy_from_slice(&patch);
    let tail = vec![0xa5u8; 2 << 20];
    f.write_all_at(&tail, model.len() as u64 - 77).unwrap();
    model.truncate(model.len() - 77);
    model.extend_from_slice(&tail);
    drop(f);
    // Read through the daemon, not the page cache the writes left behind.
    fs.umount();
    fs.mount();

    let back = fs::read(&path).unwrap();
    assert_eq!(back.len(), model.len());
    let first_diff = back.iter().zip(&model).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "content differs from the model");
}

/// Writes 4 bytes at 0 and at 10 MiB, and checks the gap reads as zeros.
fn write_sparse_file(path: &std::path::Path) -> std::fs::File {
    let f = new_rw(path);
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", 10 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (10 << 20) + 4);
    let mut mid = vec![1u8; 8192];
    f.read_exact_at(&mut mid, 5 << 20).unwrap();
    assert!(mid.iter().all(|b| *b == 0));
    f
}

fn lseek_errno(f: &std::fs::File, offset: i64, whence: i32) -> Result<i64, i32> {
    use std::os::fd::AsRawFd;
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r)
    }
}

#[test]
fn seek_data_and_seek_hole_answer_as_ext4_at_every_offset() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    const B: i64 = 4096;
    // Data in blocks 0, 10-11 and 30 (the last); holes in 1-9 and 12-29.
    let data_blocks = [0i64, 10, 11, 30];
    let f = new_rw(fs.p("holes"));
    for b in data_blocks {
        f.write_all_at(&vec![0x5a; B as usize], (b * B) as u64)
            .unwrap();
    }
    let size = 31 * B - 100;
    f.set_len(size as u64).unwrap();
    let is_data = |o: i64| data_blocks.contains(&(o / B));
    let model_data = |o: i64| {
        (o..size)
            .find(|&x| is_data(x))
            .map(|x| x.max(o))
            .ok_or(libc::ENXIO)
    };
    let model_hole = |o: i64| {
        if o >= size {
            return Err(libc::ENXIO);
        }
        Ok((o..size).find(|&x| !is_data(x)).unwrap_or(size))
    };
    let mut offsets: Vec<i64> = (0..=size + B).step_by(512).collect();
    offsets.extend([
        B - 1,
        B,
        B + 1,
        10 * B - 1,
        12 * B,
        size - 1,
        size,
        size + 1,
    ]);
    for o in offsets {
        let expect_data = if o >= size {
            Err(libc::ENXIO)
        } else {
            model_data(o)
        };
        assert_eq!(
            lseek_errno(&f, o, libc::SEEK_DATA),
            expect_data,
            "SEEK_DATA at {o}"
        );
        assert_eq!(
            lseek_errno(&f, o, libc::SEEK_HOLE),
            model_hole(o),
            "SEEK_HOLE at {o}"
        );
    }
    assert_eq!(lseek_errno(&f, -1, libc::SEEK_DATA), Err(libc::ENXIO));
    assert_eq!(lseek_errno(&f, -1, libc::SEEK_HOLE), Err(libc::ENXIO));
    // A copy tool's loop (data, then hole, from there) covers exactly the data blocks.
    let (mut pos, mut copied) = (0i64, Vec::new());
    while let Ok(d) = lseek_errno(&f, pos, libc::SEEK_DATA) {
        let h = lseek_errno(&f, d, libc::SEEK_HOLE).unwrap();
        assert!(h > d, "no progress at {d}");
        copied.push((d / B, (h - 1) / B));
        pos = h;
    }
    assert_eq!(copied, vec![(0, 0), (10, 11), (30, 30)]);

    // Data, then a file made longer by truncate (seek_sanity_test 05): the final block is
    // stored but holds only zeros, and is a hole as on ext4.
    let g = new_rw(fs.p("extended"));
    g.set_len(4 * B as u64).unwrap();
    g.write_all_at(&vec![b'a'; B as usize], 0).unwrap();
    let end = 4 * B;
    for (o, data, hole) in [
        (0, Ok(0), Ok(B)),
        (B - 1, Ok(B - 1), Ok(B)),
        (B, Err(libc::ENXIO), Ok(B)),
        (B + 1, Err(libc::ENXIO), Ok(B + 1)),
        (end - B, Err(libc::ENXIO), Ok(end - B)),
        (end - 1, Err(libc::ENXIO), Ok(end - 1)),
        (end, Err(libc::ENXIO), Err(libc::ENXIO)),
    ] {
        assert_eq!(
            lseek_errno(&g, o, libc::SEEK_DATA),
            data,
            "SEEK_DATA at {o}"
        );
        assert_eq!(
            lseek_errno(&g, o, libc::SEEK_HOLE),
            hole,
            "SEEK_HOLE at {o}"
        );
    }
    // Only a hole before a final block with data: that block is data again.
    g.write_all_at(b"z", (end - 1) as u64).unwrap();
    assert_eq!(lseek_errno(&g, B, libc::SEEK_DATA), Ok(end - B));
    assert_eq!(lseek_errno(&g, end - B, libc::SEEK_HOLE), Ok(end));
}

#[test]
fn seek_data_and_seek_hole_match_a_model_of_the_data_map() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    for seed in [11, common::fresh_seed("seek model")] {
        seek_matches_the_data_map(&fs, seed);
    }
}

/// Random writes of nonzero bytes (any offset and length), whole-block punches, truncates and
/// preallocations on one file; after each, SEEK_DATA and SEEK_HOLE at every block boundary,
/// around it and at random offsets are checked against the model, where a block is data
/// exactly when it holds a nonzero byte (with only nonzero writes and whole-block punches,
/// ext4's answer): no data is ever skipped, every hole returned is one, ENXIO exactly when
/// the model says so; and the contents read back as the model.
fn seek_matches_the_data_map(fs: &Fs, seed: u64) {
    use std::os::fd::AsRawFd;
    const B: u64 = 4096;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let path = fs.p(&format!("seek-model-{seed}"));
    let f = new_rw(&path);
    let mut model: Vec<u8> = Vec::new();
    let mut ops: Vec<String> = Vec::new();
    let (mut exact, mut checked) = (0usize, 0usize);
    for step in 0..80 {
        let what = rng.gen_range(0..10);
        let size = model.len() as u64;
        match what {
            0..=4 => {
                let off = rng.gen_range(0..40 * B);
                let len = rng.gen_range(1..3 * B) as usize;
                let data: Vec<u8> = (0..len).map(|_| rng.gen_range(1..=255)).collect();
                f.write_all_at(&data, off).unwrap();
                ops.push(format!("write {off}+{len}"));
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            5 | 6 if size >= B => {
                let b = rng.gen_range(0..size / B);
                let n = rng.gen_range(1..4).min(size / B - b);
                let rc = unsafe {
                    libc::fallocate(
                        f.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        (b * B) as i64,
                        (n * B) as i64,
                    )
                };
                assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
                ops.push(format!("punch blocks {b}+{n}"));
                model[(b * B) as usize..((b + n) * B) as usize].fill(0);
            }
            7 | 8 => {
                let new = rng.gen_range(0..45 * B);
                f.set_len(new).unwrap();
                ops.push(format!("truncate {new}"));
                model.resize(new as usize, 0);
            }
            _ => {
                let off = rng.gen_range(0..40 * B);
                let len = rng.gen_range(1..4 * B);
                let keep = if rng.gen_bool(0.5) {
                    libc::FALLOC_FL_KEEP_SIZE
                } else {
                    0
                };
                let rc = unsafe { libc::fallocate(f.as_raw_fd(), keep, off as i64, len as i64) };
                assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
                ops.push(format!("fallocate {off}+{len} keep={keep}"));
                if keep == 0 && model.len() < (off + len) as usize {
                    model.resize((off + len) as usize, 0);
                }
            }
        }
        let size = model.len() as i64;
        let data_block = |o: i64| {
            let b = (o as u64 / B) as usize;
            let end = ((b + 1) * B as usize).min(model.len());
            model[b * B as usize..end].iter().any(|x| *x != 0)
        };
        let want_data = |o: i64| {
            if o >= size {
                return Err(libc::ENXIO);
            }
            let mut b = o / B as i64;
            while b * (B as i64) < size {
                if data_block(b * B as i64) {
                    return Ok((b * B as i64).max(o));
                }
                b += 1;
            }
            Err(libc::ENXIO)
        };
        let want_hole = |o: i64| {
            if o >= size {
                return Err(libc::ENXIO);
            }
            let mut b = o / B as i64;
            while b * (B as i64) < size {
                if !data_block(b * B as i64) {
                    return Ok((b * B as i64).max(o));
                }
                b += 1;
            }
            Ok(size)
        };
        let mut offsets: Vec<i64> = Vec::new();
        for b in 0..=(size / B as i64 + 1) {
            offsets.extend([b * B as i64 - 1, b * B as i64, b * B as i64 + 1]);
        }
        offsets.extend((0..20).map(|_| rng.gen_range(0..size + 2 * B as i64)));
        let no_data_in = |from: i64, to: i64| {
            let blocks = from / B as i64..=(to.min(size) - 1) / B as i64;
            from >= to || blocks.into_iter().all(|b| !data_block(b * B as i64))
        };
        for o in offsets.into_iter().filter(|o| *o >= 0) {
            let ctx = format!("seed {seed} step {step} size {size} offset {o} after {ops:?}");
            let (got_data, got_hole) = (
                lseek_errno(&f, o, libc::SEEK_DATA),
                lseek_errno(&f, o, libc::SEEK_HOLE),
            );
            // Never a byte of data skipped: SEEK_DATA stops at or before the model's data
            // (a one-block hole between two data blocks may show as data: SEMANTICS.md),
            // and SEEK_HOLE lands only on a real hole or the end.
            match (got_data, want_data(o)) {
                (Err(e), want) => assert_eq!(Err(e), want, "SEEK_DATA: {ctx}"),
                (Ok(d), want) => {
                    assert!(
                        d >= o && d < size && no_data_in(o, d),
                        "SEEK_DATA {d}: {ctx}"
                    );
                    assert!(
                        want.is_err() || want.is_ok_and(|w| d <= w),
                        "SEEK_DATA {d}: {ctx}"
                    );
                }
            }
            match (got_hole, want_hole(o)) {
                (Ok(h), Ok(w)) => {
                    assert!(
                        h >= w && (h == size || !data_block(h)),
                        "SEEK_HOLE {h}: {ctx}"
                    )
                }
                (got, want) => assert_eq!(got, want, "SEEK_HOLE: {ctx}"),
            }
            exact += usize::from(got_data == want_data(o) && got_hole == want_hole(o));
            checked += 1;
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            model,
            "content: seed {seed} step {step}"
        );
    }
    // How often the answer was exactly ext4's (the rest: one-block holes shown as data).
    eprintln!("seed {seed}: {exact} of {checked} seek answers exactly as ext4");
    assert!(exact > 0 && checked > 0);
}

#[test]
fn seek_data_and_seek_hole_agree_on_preallocated_space() {
    if !common::can_mount() {
        return;
    }
    // xfstests generic/436: fallocate 4 MiB, write 56 KiB at 0. Every offset is data or a
    // hole, never neither (the answers a copy tool loops on), and the answers do not move
    // from one call to the next.
    let fs = Fs::new();
    use std::os::fd::AsRawFd;
    let f = new_rw(fs.p("prealloc"));
    let size: i64 = 4 << 20;
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size) }, 0);
    f.write_all_at(&vec![0x33; 56 << 10], 0).unwrap();
    let h0 = lseek_errno(&f, 0, libc::SEEK_HOLE).unwrap();
    assert!(h0 == 56 << 10 || h0 == size, "SEEK_HOLE gave {h0}");
    for o in [1, 4096, 57343] {
        assert_eq!(
            lseek_errno(&f, o, libc::SEEK_HOLE),
            Ok(h0),
            "SEEK_HOLE from {o}"
        );
    }
    for o in (0..size).step_by(4096).chain([57343, 57345, size - 1]) {
        let data = lseek_errno(&f, o, libc::SEEK_DATA);
        let hole = lseek_errno(&f, o, libc::SEEK_HOLE);
        assert!(
            data == Ok(o) || hole == Ok(o),
            "offset {o} is neither data ({data:?}) nor a hole ({hole:?})"
        );
    }
    assert_eq!(
        lseek_errno(&f, 0, libc::SEEK_HOLE),
        Ok(h0),
        "SEEK_HOLE moved"
    );
    let back = fs::read(fs.p("prealloc")).unwrap();
    assert!(back[..56 << 10].iter().all(|b| *b == 0x33));
    assert!(back[56 << 10..].iter().all(|b| *b == 0));
}

#[test]
fn holes_sparse_files_and_seek_data() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    let path = fs.p("sparse");
    let f = write_sparse_file(&path);
    assert!(
        fs::metadata(fs.backing_of(&path)).unwrap().blocks() < 1000,
        "hole was allocated"
    );
    use std::os::fd::AsRawFd;
    let hole = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert!(hole > 0 && hole < 10 << 20, "SEEK_HOLE gave {hole}");
    let data = unsafe { libc::lseek(f.as_raw_fd(), hole, libc::SEEK_DATA) };
    assert!(data >= hole && data <= 10 << 20, "SEEK_DATA gave {data}");
    // One hole block between data blocks: SEEK_HOLE must land on it, never on data.
    let g = new_rw(fs.p("gap"));
    g.write_all_at(&vec![1u8; 291 * 4096], 0).unwrap();
    g.write_all_at(&vec![2u8; 9 * 4096], 292 * 4096).unwrap();
    let hole = unsafe { libc::lseek(g.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert_eq!(
        hole,
        291 * 4096,
        "SEEK_HOLE must find the hole block, not data after it"
    );
    f.set_len(3).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hea");
}

#[test]
fn xattrs_round_trip_and_other_system_names_are_refused() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    let path = fs.p("x");
    fs::write(&path, b"").unwrap();
    let c = cpath(&path);
    let name = CString::new("user.colour").unwrap();
    assert_eq!(
        unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"blue".as_ptr().cast(), 4, 0) },
        0
    );
    let mut buf = [0u8; 64];
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(&buf[..n as usize], b"blue");
    assert_eq!(xattr_names(&path), b"user.colour\0");
    // A system.* name other than the two ACLs: refused.
    let other = CString::new("system.x").unwrap();
    assert_eq!(
        unsafe { libc::setxattr(c.as_ptr(), other.as_ptr(), b"1".as_ptr().cast(), 1, 0) },
        -1
    );
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) }, 0);
    assert!(xattr_names(&path).is_empty());
}

fn set_x(path: &Path, name: &str, value: &[u8], flags: i32, follow: bool) -> Result<(), i32> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let rc = unsafe {
        if follow {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// getxattr into a buffer of `size` bytes (0: ask for the length).
fn get_x(path: &Path, name: &str, size: usize, follow: bool) -> Result<Vec<u8>, i32> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    let rc = unsafe {
        let get = if follow {
            libc::getxattr
        } else {
            libc::lgetxattr
        };
        get(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size)
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(if size == 0 { 0 } else { rc as usize });
    if size == 0 {
        buf = (rc as u64).to_le_bytes().to_vec();
    }
    Ok(buf)
}

#[test]
fn xattr_flags_sizes_errors_symlinks_and_remount() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let f = fs.p("attrs");
    fs::write(&f, b"x").unwrap();
    let value = vec![0xa5u8; 3000];
    // XATTR_CREATE / XATTR_REPLACE.
    assert_eq!(
        set_x(&f, "user.k", b"v1", libc::XATTR_REPLACE, true),
        Err(libc::ENODATA)
    );
    assert_eq!(set_x(&f, "user.k", b"v1", libc::XATTR_CREATE, true), Ok(()));
    assert_eq!(
        set_x(&f, "user.k", b"v2", libc::XATTR_CREATE, true),
        Err(libc::EEXIST)
    );
    assert_eq!(
        set_x(&f, "user.k", b"v3", libc::XATTR_REPLACE, true),
        Ok(())
    );
    assert_eq!(get_x(&f, "user.k", 64, true), Ok(b"v3".to_vec()));
    // Sizes: the length query, a buffer too small, an empty value, a large one.
    assert_eq!(set_x(&f, "user.big", &value, 0, true), Ok(()));
    assert_eq!(
        get_x(&f, "user.big", 0, true),
        Ok(3000u64.to_le_bytes().to_vec())
    );
    assert_eq!(get_x(&f, "user.big", 2999, true), Err(libc::ERANGE));
    assert_eq!(get_x(&f, "user.big", 3000, true), Ok(value.clone()));
    assert_eq!(set_x(&f, "user.empty", b"", 0, true), Ok(()));
    assert_eq!(get_x(&f, "user.empty", 16, true), Ok(Vec::new()));
    // Past what the backing store takes (ext4 keeps ~4 KiB per file; no store takes a value
    // that is 64 KiB once sealed): a clear error, and the file's other attributes intact.
    let huge = vec![1u8; 65536];
    let err = set_x(&f, "user.huge", &huge, 0, true).unwrap_err();
    assert!([libc::E2BIG, libc::ENOSPC].contains(&err), "errno {err}");
    assert_eq!(get_x(&f, "user.huge", 16, true), Err(libc::ENODATA));
    assert_eq!(
        set_x(&f, "user.huger", &vec![1u8; 65537], 0, true),
        Err(libc::E2BIG)
    );
    // Missing ones, and listxattr's ERANGE.
    assert_eq!(get_x(&f, "user.none", 16, true), Err(libc::ENODATA));
    let none = CString::new("user.none").unwrap();
    assert_eq!(
        unsafe { libc::removexattr(cpath(&f).as_ptr(), none.as_ptr()) },
        -1
    );
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA)
    );
    let mut small = [0u8; 8];
    let n = unsafe { libc::listxattr(cpath(&f).as_ptr(), small.as_mut_ptr().cast(), 8) };
    assert_eq!(
        (n, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ERANGE))
    );
    // Symlinks: user.* cannot be set on one (EPERM, as on ext4), has none, lists none; the
    // calls that follow reach the target.
    let link = fs.p("link");
    std::os::unix::fs::symlink("attrs", &link).unwrap();
    assert_eq!(set_x(&link, "user.l", b"1", 0, false), Err(libc::EPERM));
    assert_eq!(get_x(&link, "user.k", 16, false), Err(libc::ENODATA));
    assert_eq!(get_x(&link, "user.k", 16, true), Ok(b"v3".to_vec()));
    let n = unsafe { libc::llistxattr(cpath(&link).as_ptr(), small.as_mut_ptr().cast(), 8) };
    assert_eq!(n, 0);
    // trusted.* and security.* on a symlink, a FIFO and a device node, as on ext4 (xfstests
    // generic/062): sealed under the backing object's trusted.*, never in clear.
    let fifo = fs.p("fifo");
    let dev = fs.p("null");
    assert_eq!(unsafe { libc::mkfifo(cpath(&fifo).as_ptr(), 0o644) }, 0);
    assert_eq!(
        unsafe {
            libc::mknod(
                cpath(&dev).as_ptr(),
                libc::S_IFCHR | 0o644,
                libc::makedev(1, 3),
            )
        },
        0
    );
    for p in [&link, &fifo, &dev] {
        assert_eq!(
            set_x(p, "trusted.name", &[0xba, 0xbe], 0, false),
            Ok(()),
            "{p:?}"
        );
        assert_eq!(set_x(p, "security.label", b"x", 0, false), Ok(()), "{p:?}");
        assert_eq!(get_x(p, "trusted.name", 16, false), Ok(vec![0xba, 0xbe]));
        let backing = fs.backing_of(p);
        let n = unsafe { libc::llistxattr(cpath(&backing).as_ptr(), std::ptr::null_mut(), 0) };
        let mut names = vec![0u8; n as usize];
        let n = unsafe {
            libc::llistxattr(
                cpath(&backing).as_ptr(),
                names.as_mut_ptr().cast(),
                names.len(),
            )
        };
        names.truncate(n as usize);
        let stored: Vec<&[u8]> = names.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
        assert_eq!(stored.len(), 2, "{p:?}: {names:?}");
        for name in stored {
            assert!(
                name.starts_with(b"trusted.")
                    && !contains(name, b"name")
                    && !contains(name, b"label")
            );
        }
    }
    assert_eq!(
        get_x(&link, "trusted.name", 16, true),
        Err(libc::ENODATA),
        "the target has none"
    );
    // A directory carries them too, and everything is there after a remount.
    let d = fs.p("dir");
    fs::create_dir(&d).unwrap();
    assert_eq!(set_x(&d, "user.d", b"dir", 0, true), Ok(()));
    fs.remount();
    assert_eq!(get_x(&f, "user.k", 64, true), Ok(b"v3".to_vec()));
    assert_eq!(get_x(&f, "user.big", 4096, true), Ok(value));
    assert_eq!(get_x(&f, "user.empty", 16, true), Ok(Vec::new()));
    assert_eq!(get_x(&d, "user.d", 16, true), Ok(b"dir".to_vec()));
    for p in [&link, &fifo, &dev] {
        assert_eq!(
            get_x(p, "trusted.name", 16, false),
            Ok(vec![0xba, 0xbe]),
            "{p:?}"
        );
        assert_eq!(
            get_x(p, "security.label", 16, false),
            Ok(b"x".to_vec()),
            "{p:?}"
        );
    }
    fs.umount();
    assert_fsck_clean(&fs);
    fs.mount();
    let mut names: Vec<Vec<u8>> = xattr_names(&f)
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    assert_eq!(names, [&b"user.big"[..], b"user.empty", b"user.k"]);
}

/// fsck of the (unmounted) store finds nothing to report.
fn assert_fsck_clean(fs: &Fs) {
    let out = secretfs(&["fsck", fs.backing.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn setfacl(args: &[&str]) {
    let out = run("setfacl", args);
    assert!(
        out.status.success(),
        "setfacl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `getfacl` without its header (and with `-d`, the default ACL only).
fn acl_text(path: &Path, default: bool) -> String {
    let mut args = vec!["--omit-header", "--absolute-names"];
    if default {
        args.push("-d");
    }
    args.push(path.to_str().unwrap());
    let out = run("getfacl", &args);
    assert!(
        out.status.success(),
        "getfacl {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn posix_acls_are_enforced_inherited_follow_chmod_and_survive_remount_and_fsck() {
    if !common::can_mount() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut fs = Fs::new();
    let file = fs.p("report");
    fs::write(&file, MARKER).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let read_as_nobody = |p: &Path| as_nobody(&["cat", p.to_str().unwrap()]);
    assert!(!read_as_nobody(&file), "0600 and no ACL: nobody is out");

    // A named entry: enforced by the kernel, the mask shown as the group bits.
    setfacl(&["-m", "u:nobody:r", file.to_str().unwrap()]);
    assert!(read_as_nobody(&file), "the ACL lets nobody read");
    assert_eq!(mode_of(&file), 0o640, "group bits are the mask");
    assert!(acl_text(&file, false).contains("user:nobody:r--"));

    // chmod changes the mask, and so what the named entry gets.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(acl_text(&file, false).contains("mask::---"));
    assert!(!read_as_nobody(&file), "chmod 600 masks the entry out");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(read_as_nobody(&file));

    // An ACL that says no more than the mode bits is a chmod, and nothing is stored.
    let plain = fs.p("plain");
    fs::write(&plain, b"x").unwrap();
    setfacl(&["-m", "u::rwx,g::r,o::-", plain.to_str().unwrap()]);
    assert_eq!(mode_of(&plain), 0o740);
    assert!(xattr_names(&fs.backing_of(&plain)).is_empty());
    // Removing an ACL that is not there succeeds, as on ext4.
    setfacl(&["-b", plain.to_str().unwrap()]);

    // Default ACLs: inherited by files (mode limited by the ACL, umask ignored) and by
    // directories (which also get the default); without one the umask applies.
    let dir = fs.p("shared");
    fs::create_dir(&dir).unwrap();
    setfacl(&["-d", "-m", "u:nobody:rwx", dir.to_str().unwrap()]);
    let sh = |script: &str| {
        let out = run("sh", &["-c", script]);
        assert!(out.status.success(), "{script}: {out:?}");
    };
    let d = dir.to_str().unwrap();
    sh(&format!(
        "umask 077 && echo hi > {d}/new && mkdir {d}/sub && mknod {d}/fifo p"
    ));
    let new = dir.join("new");
    assert_eq!(mode_of(&new), 0o664, "as ext4: the ACL, not the umask");
    let inherited = acl_text(&new, false);
    assert!(inherited.contains("user:nobody:rwx"), "{inherited}");
    assert!(inherited.contains("mask::rw-"), "{inherited}");
    assert!(read_as_nobody(&new));
    assert_eq!(mode_of(&dir.join("sub")), 0o775);
    assert_eq!(acl_text(&dir.join("sub"), true), acl_text(&dir, true));
    // A FIFO too (its attributes are kept under the backing object's trusted.*).
    assert_eq!(mode_of(&dir.join("fifo")), 0o664);
    assert!(acl_text(&dir.join("fifo"), false).contains("user:nobody:rwx"));
    sh(&format!(
        "umask 077 && echo hi > {}",
        fs.p("private").display()
    ));
    assert_eq!(
        mode_of(&fs.p("private")),
        0o600,
        "no default ACL: the umask"
    );

    // Setting an ACL clears setgid when the caller is not in the file's group (generic/375).
    let sgid = fs.p("sgid");
    fs::write(&sgid, b"x").unwrap();
    std::os::unix::fs::chown(&sgid, Some(65534), Some(0)).unwrap();
    fs::set_permissions(&sgid, fs::Permissions::from_mode(0o2770)).unwrap();
    assert!(as_nobody(&[
        "setfacl",
        "-m",
        "o::r",
        sgid.to_str().unwrap()
    ]));
    assert_eq!(mode_of(&sgid), 0o774, "setgid cleared");
    fs::set_permissions(&sgid, fs::Permissions::from_mode(0o2774)).unwrap();
    setfacl(&["-m", "o::-", sgid.to_str().unwrap()]);
    assert_eq!(mode_of(&sgid), 0o2770, "root (CAP_FSETID) keeps it");

    // Stored encrypted: the backing store holds only sealed user.* names, no ACL in clear.
    for p in [&file, &new, &dir] {
        let names = xattr_names(&fs.backing_of(p));
        assert!(!names.is_empty(), "{}: the ACL is stored", p.display());
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            assert!(name.starts_with(b"user.") && !contains(name, b"posix_acl"));
            let value = xattr_value(&fs.backing_of(p), name);
            assert!(
                !contains(&value, &65534u32.to_le_bytes()),
                "nobody's uid in clear"
            );
        }
    }

    // After a remount everything is as it was, and fsck finds it sound.
    let before = [
        acl_text(&file, false),
        acl_text(&new, false),
        acl_text(&dir, true),
    ];
    fs.remount();
    assert_eq!(
        [
            acl_text(&file, false),
            acl_text(&new, false),
            acl_text(&dir, true)
        ],
        before
    );
    assert!(read_as_nobody(&file));
    setfacl(&["-x", "u:nobody", file.to_str().unwrap()]);
    assert!(
        !read_as_nobody(&file),
        "the entry removed, nobody is out again"
    );
    setfacl(&["-m", "u:nobody:r", file.to_str().unwrap()]);
    let backing_file = fs.backing_of(&file);
    fs.umount();
    assert_fsck_clean(&fs);

    // A tampered ACL fails closed: nobody is refused, getfacl gets EIO, fsck reports it.
    let names = xattr_names(&backing_file);
    let name = names
        .split(|b| *b == 0)
        .find(|n| !n.is_empty())
        .unwrap()
        .to_vec();
    let mut value = xattr_value(&backing_file, &name);
    value[10] ^= 1;
    let cname = CString::new(name).unwrap();
    let rc = unsafe {
        libc::setxattr(
            cpath(&backing_file).as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0);
    let out = secretfs(&["fsck", fs.backing.to_str().unwrap(), "--json"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("xattr-value"));
    fs.mount();
    assert!(!read_as_nobody(&file), "a tampered ACL grants nothing");
    let out = run("getfacl", &[file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        fs.log_text().contains("integrity"),
        "the tampering is logged"
    );

    // noacl: ACLs refused and not enforced (the stored ones stay for an acl mount).
    fs.umount();
    let out = fs.try_mount(&["-o", "noacl"]);
    assert!(out.status.success(), "{out:?}");
    let out = run("setfacl", &["-m", "u:nobody:r", plain.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));
    assert!(
        xattr_names(&dir).is_empty(),
        "no ACL listed where none is served"
    );
}

#[test]
fn symlinks_fifos_and_modes() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    std::os::unix::fs::symlink("some/where/../target", fs.p("ln")).unwrap();
    assert_eq!(
        fs::read_link(fs.p("ln")).unwrap(),
        Path::new("some/where/../target")
    );
    assert_eq!(
        fs::symlink_metadata(fs.p("ln")).unwrap().len(),
        "some/where/../target".len() as u64
    );
    let fifo = cpath(&fs.p("fifo"));
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let m = fs::symlink_metadata(fs.p("fifo")).unwrap();
    assert_eq!(m.mode() & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(m.mode() & 0o777, 0o640);
    fs::write(fs.p("f"), b"").unwrap();
    fs::set_permissions(
        fs.p("f"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4711),
    )
    .unwrap();
    assert_eq!(fs::metadata(fs.p("f")).unwrap().mode() & 0o7777, 0o4711);
    std::os::unix::fs::chown(fs.p("f"), Some(65534), Some(65534)).unwrap();
    assert_eq!(fs::metadata(fs.p("f")).unwrap().uid(), 65534);
}

#[test]
fn symlink_targets_up_to_path_max_less_one_survive_remount_links_and_fsck() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    // Around the inline limit (3,055 bytes) and up to PATH_MAX - 1, as ext4 takes.
    let lens = [3055usize, 3056, 3500, 4095];
    let target = |len: usize| -> String {
        (0..len)
            .map(|i| {
                if i % 100 == 99 {
                    '/'
                } else {
                    (b'a' + (i % 26) as u8) as char
                }
            })
            .collect()
    };
    for len in lens {
        std::os::unix::fs::symlink(target(len), fs.p(&format!("l{len}"))).unwrap();
        assert_eq!(
            fs::symlink_metadata(fs.p(&format!("l{len}")))
                .unwrap()
                .len(),
            len as u64,
            "lstat size of a {len}-byte target"
        );
    }
    fs::hard_link(fs.p("l4095"), fs.p("l4095-link")).unwrap();
    fs::create_dir(fs.p("d")).unwrap();
    fs::rename(fs.p("l3500"), fs.p("d/moved")).unwrap();
    let err = std::os::unix::fs::symlink(target(4096), fs.p("too-long")).unwrap_err();
    assert_eq!(errno_of(&err), libc::ENAMETOOLONG);
    fs.remount();
    for (name, len) in [
        ("l3055", 3055),
        ("l3056", 3056),
        ("d/moved", 3500),
        ("l4095", 4095),
        ("l4095-link", 4095),
    ] {
        assert_eq!(
            fs::read_link(fs.p(name)).unwrap().as_os_str().len(),
            len,
            "{name}"
        );
        assert_eq!(
            fs::read_link(fs.p(name)).unwrap().to_str().unwrap(),
            target(len)
        );
    }
    assert!(fs::read_dir(&fs.backing).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("secretfs.tmp.")));
    fs.umount();
    assert_fsck_clean(&fs);
}

#[test]
fn remount_with_the_same_key_reads_everything_back() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::create_dir_all(fs.p("d/e")).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    fs::write(fs.p("d/e/data"), &data).unwrap();
    std::os::unix::fs::symlink("d/e/data", fs.p("link")).unwrap();
    fs.remount();
    assert_eq!(fs::read(fs.p("d/e/data")).unwrap(), data);
    assert_eq!(fs::read(fs.p("link")).unwrap(), data);
}

#[test]
fn wrong_key_fails_clearly_and_mounts_nothing() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::init();
    let other = fs.dir.path().join("other-key");
    let out = secretfs(&[
        "init",
        fs.dir.path().join("other").to_str().unwrap(),
        "--key",
        &format!("keyfile:{}", other.display()),
    ]);
    assert!(out.status.success());
    let out = fs.try_mount(&["--key", &format!("keyfile:{}", other.display())]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("this key does not open this filesystem (config MAC mismatch)"),
        "{err}"
    );
    assert!(!fs.is_mounted());
}

#[test]
fn read_only_mount_refuses_every_change_and_leaves_the_store_as_it_was() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::write(fs.p("keep"), b"kept").unwrap();
    fs::create_dir(fs.p("d")).unwrap();
    fs::create_dir(fs.p("empty")).unwrap();
    fs::write(fs.p("d/inner"), b"in").unwrap();
    fs.umount();
    let out = fs.try_mount(&["-o", "ro"]);
    assert!(out.status.success());
    assert_eq!(fs::read(fs.p("keep")).unwrap(), b"kept");
    let before = common::snapshot(&fs.backing);
    let rofs = |what: &str, r: std::io::Result<()>| {
        assert_eq!(r.map_err(|e| errno_of(&e)), Err(libc::EROFS), "{what}");
    };
    rofs("create", fs::write(fs.p("new"), b""));
    rofs(
        "open for writing",
        OpenOptions::new().write(true).open(fs.p("keep")).map(drop),
    );
    let rc = unsafe { libc::truncate(cpath(&fs.p("keep")).as_ptr(), 0) };
    rofs(
        "truncate",
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    );
    rofs("unlink", fs::remove_file(fs.p("d/inner")));
    rofs("rmdir", fs::remove_dir(fs.p("empty")));
    rofs("mkdir", fs::create_dir(fs.p("dir2")));
    rofs("rename", fs::rename(fs.p("keep"), fs.p("renamed")));
    rofs("link", fs::hard_link(fs.p("keep"), fs.p("link")));
    rofs("symlink", std::os::unix::fs::symlink("keep", fs.p("sym")));
    use std::os::unix::fs::PermissionsExt;
    rofs(
        "chmod",
        fs::set_permissions(fs.p("keep"), fs::Permissions::from_mode(0o600)),
    );
    let name = CString::new("user.x").unwrap();
    let rc = unsafe {
        libc::setxattr(
            cpath(&fs.p("keep")).as_ptr(),
            name.as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    rofs(
        "setxattr",
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    );
    assert_eq!(fs::read(fs.p("d/inner")).unwrap(), b"in");
    assert!(
        common::snapshot(&fs.backing) == before,
        "the read-only mount changed the store"
    );
}

#[test]
fn status_reports_every_field_of_the_mount_from_either_side() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let status = |path: &Path| -> serde_json::Value {
        let out = secretfs(&["status", path.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(fs.backing.join("secretfs.conf")).unwrap()).unwrap();
    let (mnt, backing) = (
        fs::canonicalize(&fs.mnt).unwrap(),
        fs::canonicalize(&fs.backing).unwrap(),
    );
    for (asked, v) in [(&mnt, status(&fs.mnt)), (&backing, status(&fs.backing))] {
        assert_eq!(v["path"], asked.to_str().unwrap());
        assert_eq!(v["mounted"], true);
        assert_eq!(v["mode"], "file");
        assert_eq!(v["mountpoint"], mnt.to_str().unwrap());
        assert_eq!(v["backing"], backing.to_str().unwrap());
        assert_eq!(v["fs_id"], config["fs_id"]);
        assert_eq!(v["cipher"], "AES-256-GCM-4096/AES-256-SIV");
        assert!(v["key_source"].as_str().unwrap().starts_with("keyfile"));
        let pid = v["daemon_pid"].as_u64().unwrap();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(String::from_utf8_lossy(&cmdline).contains("secretfs"));
    }
    fs.umount();
    let v = status(&fs.backing);
    assert_eq!(v["mounted"], false);
    assert!(v["mountpoint"].is_null() && v["daemon_pid"].is_null());
    assert_eq!(v["fs_id"], config["fs_id"]);
    let out = secretfs(&["status", fs.dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6));
}

#[test]
fn ephemeral_filesystems_start_empty_at_every_mount() {
    if !common::can_mount() {
        return;
    }
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let (back, mnt) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&mnt).unwrap();
    assert!(
        secretfs(&["init", back.to_str().unwrap(), "--key", "ephemeral"])
            .status
            .success()
    );
    for round in 0..2 {
        let out = secretfs(&["mount", back.to_str().unwrap(), mnt.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read_dir(&mnt).unwrap().count(),
            0,
            "round {round}: old data survived"
        );
        fs::write(mnt.join("scratch"), b"gone after unmount").unwrap();
        assert!(secretfs(&["umount", mnt.to_str().unwrap()])
            .status
            .success());
    }
}

#[test]
fn passphrase_source_unlocks_and_rejects_a_wrong_passphrase() {
    if !common::can_mount() {
        return;
    }
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let (back, mnt) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&mnt).unwrap();
    let init = secretfs(&[
        "init",
        back.to_str().unwrap(),
        "--key",
        "passphrase",
        "--passphrase-command",
        "echo correct horse",
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let wrong = secretfs(&[
        "mount",
        back.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "--passphrase-command",
        "echo wrong",
    ]);
    assert_eq!(wrong.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    let ok = secretfs(&[
        "mount",
        back.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "--passphrase-command",
        "echo correct horse",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    fs::write(mnt.join("f"), b"x").unwrap();
    assert!(secretfs(&["umount", mnt.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn bad_mount_options_are_usage_errors() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::init();
    let out = fs.try_mount(&["-o", "bogus_option"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid options"));
    assert!(!fs.is_mounted());
}

#[test]
fn rmdir_clears_leftovers_of_a_crashed_mkdir() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    fs::create_dir(fs.p("parent")).unwrap();
    fs::create_dir(fs.p("parent/victim")).unwrap();
    let backing = fs.backing_of(&fs.p("parent/victim"));
    fs::create_dir(backing.join("secretfs.tmp.0123456789abcdef")).unwrap();
    fs::write(
        backing.join("secretfs.tmp.0123456789abcdef/secretfs.dirid"),
        [0u8; 16],
    )
    .unwrap();
    assert_eq!(
        fs::read_dir(fs.p("parent/victim")).unwrap().count(),
        0,
        "internal entries are hidden"
    );
    fs::remove_dir(fs.p("parent/victim")).unwrap();
    assert!(!backing.exists());
    fs::write(fs.p("parent/f"), b"").unwrap();
    assert_eq!(
        errno_of(&fs::remove_dir(fs.p("parent")).unwrap_err()),
        libc::ENOTEMPTY
    );
}

/// The benchmark's passthrough control: our frontend with the identity codec. It must do the
/// very same backing I/O as file mode, so only the crypto differs between the two.
#[cfg(feature = "passthrough-control")]
mod passthrough_control {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    const WARNING: &str =
        "passthrough control: contents and names are NOT encrypted; for benchmarks only";

    fn control_fs() -> Fs {
        let mut fs = Fs::init_with_key(Some("ephemeral"));
        let out = fs.try_mount(&["--passthrough-control"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "mount failed: {err}");
        assert!(err.contains(WARNING), "no warning on stderr: {err}");
        fs::set_permissions(&fs.mnt, fs::Permissions::from_mode(0o755)).unwrap();
        fs
    }

    /// The backing size format v1 gives a file of `len` plaintext bytes.
    fn stored_len(len: u64) -> u64 {
        if len == 0 {
            0
        } else {
            18 + len + 28 * len.div_ceil(4096)
        }
    }

    /// What a stored name, target or side file holds: base64url of a zero SIV slot ‖ plaintext.
    fn clear(encoded: &[u8]) -> Vec<u8> {
        let raw = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        assert_eq!(&raw[..16], &[0; 16], "SIV slot of {encoded:?}");
        raw[16..].to_vec()
    }

    fn name_of(p: &Path) -> &[u8] {
        p.file_name().unwrap().as_bytes()
    }

    #[test]
    fn identity_codec_keeps_the_layout_and_stores_plaintext() {
        let mut fs = control_fs();
        let out = secretfs(&["status", fs.mnt.to_str().unwrap(), "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["cipher"], "none (passthrough control)");

        for len in [1usize, 4095, 4096, 4097, 100_000, 1 << 20] {
            let name = format!("file-{len}");
            let content: Vec<u8> = MARKER.iter().copied().cycle().take(len).collect();
            fs::write(fs.p(&name), &content).unwrap();
            assert_eq!(fs::read(fs.p(&name)).unwrap(), content, "{name}");
            let backing = fs.backing_of(&fs.p(&name));
            assert_eq!(clear(name_of(&backing)), name.as_bytes());
            let stored = fs::read(&backing).unwrap();
            assert_eq!(stored.len() as u64, stored_len(len as u64), "{name}");
            // Plaintext right after the header and the (zero) nonce of block 0.
            let first = len.min(4096);
            assert_eq!(&stored[18 + 12..18 + 12 + first], &content[..first]);
            assert!(
                stored[18..18 + 12].iter().all(|b| *b == 0),
                "nonce of {name}"
            );
        }

        // Sparse: the hole stays a backing hole and reads as zeros, as in file mode.
        let sparse = fs.p("sparse");
        let f = super::write_sparse_file(&sparse);
        let backing = fs.backing_of(&sparse);
        let meta = fs::metadata(&backing).unwrap();
        assert_eq!(meta.len(), stored_len((10 << 20) + 4));
        assert!(meta.blocks() < 1000, "hole was allocated");
        let mut tail = [0u8; 4];
        f.read_exact_at(&mut tail, 10 << 20).unwrap();
        assert_eq!(&tail, b"tail");
        f.set_len(3).unwrap();
        assert_eq!(fs::read(&sparse).unwrap(), b"hea");
        assert_eq!(fs::metadata(&backing).unwrap().len(), stored_len(3));
        // An extending truncate ends in a final block of zeros, stored as all zeros.
        f.set_len(5000).unwrap();
        let mut want = b"hea".to_vec();
        want.resize(5000, 0);
        assert_eq!(fs::read(&sparse).unwrap(), want);

        // A 255-byte name takes the long-name path: hashed entry plus side file.
        let long = "L".repeat(255);
        fs::write(fs.p(&long), b"long").unwrap();
        assert_eq!(fs::read(fs.p(&long)).unwrap(), b"long");
        assert!(fs::read_dir(&fs.mnt)
            .unwrap()
            .any(|e| e.unwrap().file_name().as_bytes() == long.as_bytes()));
        let hashed = fs.backing_of(&fs.p(&long));
        assert!(
            name_of(&hashed).starts_with(b"lname."),
            "{}",
            hashed.display()
        );
        let side = fs::read(format!("{}.name", hashed.display())).unwrap();
        assert_eq!(clear(&side), long.as_bytes());

        // Symlink targets and user xattrs: encoded, not encrypted.
        std::os::unix::fs::symlink("some/target", fs.p("ln")).unwrap();
        assert_eq!(fs::read_link(fs.p("ln")).unwrap(), Path::new("some/target"));
        let target = fs::read_link(fs.backing_of(&fs.p("ln"))).unwrap();
        assert_eq!(clear(target.as_os_str().as_bytes()), b"some/target");
        let file = cpath(&fs.p("file-1"));
        let attr = CString::new("user.colour").unwrap();
        let rc =
            unsafe { libc::setxattr(file.as_ptr(), attr.as_ptr(), b"blue".as_ptr().cast(), 4, 0) };
        assert_eq!(rc, 0, "setxattr");
        assert_eq!(xattr_names(&fs.p("file-1")), b"user.colour\0");
        let stored_names = xattr_names(&fs.backing_of(&fs.p("file-1")));
        let stored = stored_names
            .split(|b| *b == 0)
            .find_map(|n| n.strip_prefix(b"user."))
            .unwrap();
        assert_eq!(clear(stored), b"colour");

        random_writes_and_truncates_match_a_model(&mut fs, 7, false);
    }

    #[test]
    fn control_mode_refuses_a_filesystem_that_is_not_ephemeral() {
        let mut fs = Fs::init();
        fs.mount();
        fs::write(fs.p("kept"), b"encrypted").unwrap();
        fs.umount();
        let out = fs.try_mount(&["--passthrough-control"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("ephemeral"), "{err}");
        assert!(!err.contains(WARNING), "{err}");
        assert!(!fs.is_mounted());
        fs.mount();
        assert_eq!(fs::read(fs.p("kept")).unwrap(), b"encrypted");
    }
}

/// Runs a command as nobody (as an unprivileged program would), returning whether it succeeded.
fn as_nobody(args: &[&str]) -> bool {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn setuid_and_setgid_are_cleared_by_unprivileged_direct_writes_and_fallocate() {
    if !common::can_mount() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let fs = Fs::new();
    let cases: [(&str, Vec<&str>); 5] = [
        (
            "buffered",
            vec!["dd", "if=/dev/zero", "bs=4096", "count=1", "conv=notrunc"],
        ),
        (
            "direct",
            vec![
                "dd",
                "if=/dev/zero",
                "bs=4096",
                "count=1",
                "conv=notrunc",
                "oflag=direct",
            ],
        ),
        ("fallocate", vec!["fallocate", "-l", "65536"]),
        ("punch", vec!["fallocate", "-p", "-o", "0", "-l", "4096"]),
        (
            "zero-range",
            vec!["fallocate", "-z", "-o", "0", "-l", "4096"],
        ),
    ];
    // (start mode, group of the file, mode after): setuid always goes; setgid goes when
    // group-executable or when the writer is outside the file's group (xfstests 683-685),
    // and stays for a member on a file that is not group-executable.
    let shapes = [
        (0o6777, 0, "777"),
        (0o6666, 0, "666"),
        (0o6666, 65534, "2666"),
    ];
    for ((what, cmd), (start, group, after)) in cases
        .iter()
        .flat_map(|c| shapes.iter().map(move |s| (c, s)))
    {
        let path = fs.p(&format!("suid-{what}-{start:o}-{group}"));
        fs::write(&path, vec![7u8; 16384]).unwrap();
        std::os::unix::fs::chown(&path, None, Some(*group)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*start)).unwrap();
        let target = path.to_str().unwrap().to_string();
        let mut args: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
        if args[0] == "dd" {
            args.push(format!("of={target}"));
        } else {
            args.push(target);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(as_nobody(&args), "{what}: {args:?} failed as nobody");
        // First a stat that asks for the mode alone (xfstests generic/355, 683-685): the
        // kernel answers it from its cache unless the daemon dropped the stale attributes.
        let out = run("stat", &["-c", "%a", path.to_str().unwrap()]);
        let cached = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(cached, *after, "{what} on {start:o}, group {group}");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            format!("{mode:o}"),
            *after,
            "{what} on {start:o}, group {group}"
        );
    }
}

#[test]
fn writes_and_truncates_past_the_largest_file_give_efbig() {
    if !common::can_mount() {
        return;
    }
    use std::os::fd::AsRawFd;
    let fs = Fs::new();
    let f = new_rw(fs.p("big"));
    // Past what the stored form can address: the plaintext offset is legal, its ciphertext
    // offset would pass 2^63.
    let off = i64::MAX - (1 << 40);
    let n = unsafe { libc::pwrite(f.as_raw_fd(), b"x".as_ptr().cast(), 1, off) };
    assert_eq!(n, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFBIG)
    );
    assert_eq!(
        unsafe { libc::ftruncate(f.as_raw_fd(), off) },
        -1,
        "ftruncate past the largest file succeeded"
    );
    let e = std::io::Error::last_os_error().raw_os_error();
    assert!(matches!(e, Some(libc::EFBIG)), "ftruncate gave {e:?}");
    fs::write(fs.p("one"), b"1").unwrap();
    let src = fs::File::open(fs.p("one")).unwrap();
    let mut off_in: i64 = 0;
    let mut off_out: i64 = off;
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            f.as_raw_fd(),
            &mut off_out,
            1,
            0,
        )
    };
    assert_eq!(n, -1, "copy_file_range past the largest file succeeded");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EFBIG)
    );
    assert_eq!(f.metadata().unwrap().len(), 0);
}

/// Polls `done` every 20 ms for up to 10 s: the daemon's exit and the kernel's unmount are
/// asynchronous to the caller.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

/// The audit lines of one event kind, each as its `key="value"` fields.
fn audit_events(log: &str, event: &str) -> Vec<std::collections::HashMap<String, String>> {
    let tag = format!("event=\"{event}\"");
    log.lines()
        .filter(|l| l.contains("secretfs::audit") && l.contains(&tag))
        .map(|l| {
            l.split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn mount_and_unmount_audit_events_name_the_filesystem_key_and_paths() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    fs::write(fs.p("f"), b"x").unwrap();
    fs.umount();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(fs.backing.join("secretfs.conf")).unwrap()).unwrap();
    let fs_id = config["fs_id"].as_str().unwrap().to_string();
    let log = fs.log_text();
    let (unlock, mount, unmount) = (
        audit_events(&log, "unlock"),
        audit_events(&log, "mount"),
        audit_events(&log, "unmount"),
    );
    assert_eq!(
        (unlock.len(), mount.len(), unmount.len()),
        (1, 1, 1),
        "{log}"
    );
    for e in [&unlock[0], &mount[0], &unmount[0]] {
        assert_eq!(e["fs_id"], fs_id, "{e:?}");
    }
    assert_eq!(unlock[0]["key_source"], "keyfile");
    assert_eq!(
        mount[0]["backing"],
        fs.backing.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(mount[0]["mountpoint"], fs.mnt.to_str().unwrap());
    assert_eq!(unmount[0]["mountpoint"], fs.mnt.to_str().unwrap());
    // In order: unlocked, then mounted, then unmounted.
    let at = |what: &str| log.find(&format!("event=\"{what}\"")).unwrap();
    assert!(at("unlock") < at("mount") && at("mount") < at("unmount"));
    // A second cycle adds one of each; a failed mount (wrong key) adds no unlock or mount.
    fs.mount();
    fs.umount();
    let other = fs.dir.path().join("other-key");
    fs::write(&other, [7u8; 32]).unwrap();
    let out = fs.try_mount(&["--key", &format!("keyfile:{}", other.display())]);
    assert!(!out.status.success());
    let log = fs.log_text();
    assert_eq!(audit_events(&log, "unlock").len(), 2, "{log}");
    assert_eq!(audit_events(&log, "mount").len(), 2);
    assert_eq!(audit_events(&log, "unmount").len(), 2);
}

#[test]
fn mount_lifecycle_second_mount_busy_umount_sigterm_and_allow_other() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    // One daemon per backing store.
    let other = fs.dir.path().join("other-mnt");
    fs::create_dir(&other).unwrap();
    let out = secretfs(&[
        "mount",
        fs.backing.to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("one backing store can be served by one daemon at a time"));

    // A busy mount is not unmounted, says why and what to do, and keeps working.
    fs::write(fs.p("open"), b"data").unwrap();
    let held = fs::File::open(fs.p("open")).unwrap();
    let out = secretfs(&["umount", fs.mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("files are open under it") && err.contains("--lazy"),
        "{err}"
    );
    assert!(fs.is_mounted());
    assert_eq!(fs::read(fs.p("open")).unwrap(), b"data");
    drop(held);

    // Renaming a directory into its own subtree is refused.
    fs::create_dir_all(fs.p("top/sub")).unwrap();
    assert_eq!(
        errno_of(&fs::rename(fs.p("top"), fs.p("top/sub/top")).unwrap_err()),
        libc::EINVAL
    );

    // SIGTERM to the daemon unmounts cleanly; the data is there at the next mount.
    let pid = fs.daemon_pid();
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_until("the daemon exits", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    wait_until("the mount is gone", || !fs.is_mounted());
    fs.mark_mounted(false);

    // Without allow_other, only root reaches the mount, whatever the modes say.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fs.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = secretfs(&[
        "mount",
        fs.backing.to_str().unwrap(),
        fs.mnt.to_str().unwrap(),
        "-o",
        &format!("log={}", fs.log.display()),
    ]);
    assert!(out.status.success(), "{out:?}");
    fs::set_permissions(&fs.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    let list_as_nobody = |fs: &Fs| {
        run(
            "runuser",
            &["-u", "nobody", "--", "ls", fs.mnt.to_str().unwrap()],
        )
    };
    assert!(!list_as_nobody(&fs).status.success());
    assert_eq!(fs::read(fs.p("open")).unwrap(), b"data");
    fs.umount();
    fs.mount(); // the test helper mounts with allow_other
    fs::set_permissions(&fs.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    let out = list_as_nobody(&fs);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("open"));
}

/// The kernel's `struct iocb` and `struct io_event` (linux/aio_abi.h), for the one test that
/// needs asynchronous I/O.
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

#[test]
fn buffered_reads_see_what_asynchronous_o_direct_writes_wrote() {
    if !common::can_mount() {
        return;
    }
    // xfstests generic/451: readers keep the page cache full while AIO O_DIRECT writes
    // rewrite the file; a buffered read after each completed write must see it all.
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let fs = Fs::new();
    let path = fs.p("dio");
    const LEN: usize = 640 << 10;
    fs::write(&path, vec![0u8; LEN]).unwrap();
    let dio = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let layout = std::alloc::Layout::from_size_align(LEN, 4096).unwrap();
    let buf = unsafe { std::alloc::alloc(layout) };
    assert!(!buf.is_null());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = fs::read(&path);
                }
            })
        })
        .collect();
    let mut ctx: libc::c_ulong = 0;
    assert_eq!(unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx) }, 0);
    let mut stale = None;
    for cycle in 1..=300u32 {
        let byte = (cycle % 251) as u8 + 1;
        unsafe { std::ptr::write_bytes(buf, byte, LEN) };
        let mut cb = Iocb {
            aio_lio_opcode: 1, // IOCB_CMD_PWRITE
            aio_fildes: dio.as_raw_fd() as u32,
            aio_buf: buf as u64,
            aio_nbytes: LEN as u64,
            ..Default::default()
        };
        let mut list = [&mut cb as *mut Iocb];
        assert_eq!(
            unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()) },
            1
        );
        let mut ev = [IoEvent::default()];
        let got = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                1,
                1,
                ev.as_mut_ptr(),
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        assert_eq!((got, ev[0].res), (1, LEN as i64), "cycle {cycle}");
        let back = fs::read(&path).unwrap();
        if let Some(at) = back.iter().position(|b| *b != byte) {
            stale = Some((cycle, at, back[at], byte));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    unsafe { std::alloc::dealloc(buf, layout) };
    assert_eq!(
        stale, None,
        "(cycle, offset, read, written): stale data from a buffered read"
    );
}

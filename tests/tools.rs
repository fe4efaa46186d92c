//! Ordinary tools on a real mount: tar, cp -a, git, sqlite3 and an editor's save-by-rename
//! must work unchanged, and what they leave must read back identically after a remount.

mod common;

use common::Fs;
use std::path::Path;
use std::process::Command;

fn run(dir: &Path, cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn tar_and_cp_round_trip_a_source_tree() {
    if !common::can_mount() {
        return;
    }
    let mut fs = Fs::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(
        &fs.mnt,
        &format!(
            "tar -C {} -cf - src tests Cargo.toml | tar -xf -",
            src.display()
        ),
    );
    run(&fs.mnt, &format!("cp -a {}/src copied", src.display()));
    // Owners and modes the daemon would not give on its own, so that keeping them shows.
    run(
        &fs.mnt,
        "chown -R 65534:65534 src/fs && chmod 0640 src/lib.rs && cp -a src odd",
    );
    fs.remount();
    run(
        &fs.mnt,
        &format!(
            "diff -r {}/src src && diff -r {}/src copied && diff {}/Cargo.toml Cargo.toml",
            src.display(),
            src.display(),
            src.display()
        ),
    );
    // Type, mode, owner and modification time of every entry, as the originals had them,
    // after the remount (cp -a keeps nanoseconds, tar whole seconds).
    let meta = |dir: &Path, tree: &str| {
        run(
            dir,
            &format!("cd {tree} && find . -printf '%P %y %m %U:%G %T@\\n' | sort"),
        )
    };
    let original = meta(src, "src");
    assert!(original.lines().count() > 20, "{original}");
    assert_eq!(meta(&fs.mnt, "copied"), original, "cp -a");
    // The same listings with the time cut to whole seconds.
    let times = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .map(|l| {
                let (rest, time) = l.rsplit_once(' ').unwrap();
                let secs = time.split('.').next().unwrap();
                format!("{rest} {secs}")
            })
            .collect()
    };
    let extracted = meta(&fs.mnt, "src");
    let odd = meta(&fs.mnt, "odd");
    assert_eq!(times(&odd), times(&extracted), "cp -a of the changed tree");
    assert!(odd.contains("fs d 755 65534:65534"), "{odd}");
    assert!(odd.contains("lib.rs f 640 0:0"), "{odd}");
    // The tar copy differs from the source only in the owners and mode changed above.
    let source = times(&original);
    let restored: Vec<String> = times(&extracted)
        .into_iter()
        .map(|l| {
            l.replace(" 65534:65534 ", " 0:0 ")
                .replace("lib.rs f 640 ", "lib.rs f 644 ")
        })
        .collect();
    assert_eq!(restored, source, "tar");
}

#[test]
fn git_repository_lives_on_the_mount() {
    if !common::can_mount() {
        return;
    }
    assert!(
        have("git"),
        "git is required (scripts/install-deps.sh installs it)"
    );
    let fs = Fs::new();
    run(&fs.mnt, "git init -q repo && cd repo && git config user.email t@example.com && git config user.name t \
                  && printf 'one\\n' > a && git add a && git commit -qm first \
                  && printf 'two\\n' >> a && git commit -qam second && git gc -q");
    let log = run(
        &fs.p("repo"),
        "git log --oneline | wc -l && git fsck --strict 2>&1 && cat a",
    );
    assert!(
        log.starts_with("2\n") && log.ends_with("one\ntwo\n"),
        "{log}"
    );
}

#[test]
fn sqlite_database_survives_writes_and_remount() {
    if !common::can_mount() {
        return;
    }
    assert!(
        have("sqlite3"),
        "sqlite3 is required (scripts/install-deps.sh installs it)"
    );
    let mut fs = Fs::new();
    run(&fs.mnt, "sqlite3 db.sqlite 'PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);' >/dev/null");
    run(&fs.mnt, "for i in $(seq 1 50); do echo \"INSERT INTO t(v) VALUES (hex(randomblob(300)));\"; done | sqlite3 db.sqlite");
    fs.remount();
    let out = run(
        &fs.mnt,
        "sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT count(*) FROM t;'",
    );
    assert_eq!(out, "ok\n50\n");
}

#[test]
fn editor_save_by_rename_keeps_one_file() {
    if !common::can_mount() {
        return;
    }
    let fs = Fs::new();
    std::fs::write(fs.p("notes.txt"), b"draft 1").unwrap();
    for i in 2..6 {
        let tmp = fs.p(&format!(".notes.txt.swp{i}"));
        std::fs::write(&tmp, format!("draft {i}")).unwrap();
        std::fs::rename(&tmp, fs.p("notes.txt")).unwrap();
    }
    assert_eq!(std::fs::read(fs.p("notes.txt")).unwrap(), b"draft 5");
    assert_eq!(std::fs::read_dir(&fs.mnt).unwrap().count(), 1);
}

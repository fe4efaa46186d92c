//! Build-time facts for `secretfs --version`: the git commit the binary was built from (short
//! hash, `-dirty` when the tree had changes) and the Cargo features it was built with.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Packagers build from a tarball without .git: they say which commit it was.
    println!("cargo:rerun-if-env-changed=SECRETFS_GIT_COMMIT");
    let commit = match std::env::var("SECRETFS_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".into()),
    };
    // Not the override's own name: Cargo also sets these in the environment of `cargo test`,
    // where the tests must still tell an override from what git said.
    println!("cargo:rustc-env=SECRETFS_BUILD_COMMIT={commit}");

    // Cargo tells a build script its features only as CARGO_FEATURE_<NAME> (upper case, `-` as
    // `_`); reading them all keeps a feature added later (fips) from being left out here.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_ascii_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=SECRETFS_BUILD_FEATURES={features}");
}

/// `1a2b3c4` or `1a2b3c4-dirty`; None without git or outside a repository.
fn from_git() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let hash = git(&["rev-parse", "--short", "HEAD"])?;
    watch_head(&dir, &git);
    // Without rerun-if-changed lines Cargo would rerun this script (and so rebuild the crate)
    // whenever any file of the package changed; with them it reruns when HEAD moves or a file
    // that goes into the binary changes, so the dirty mark follows the sources. An edit to a
    // file outside these (a README) alone leaves the mark as it was at the last build.
    for p in ["src", "build.rs", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={p}");
    }
    // Untracked files are left out: a new file only changes the binary once a tracked one
    // (a `mod` line) names it, and that edit is seen.
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout), the branch it points to (a
/// commit), packed-refs (a ref packed by gc), and the index (a stage or a reset).
fn watch_head(dir: &Path, git: &dyn Fn(&[&str]) -> Option<String>) {
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    // In a worktree HEAD and the index are per worktree, the refs shared by all of them.
    let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]).map(abs),
        git(&["rev-parse", "--git-common-dir"]).map(abs),
    ) else {
        return;
    };
    let mut watched = vec![
        git_dir.join("HEAD"),
        git_dir.join("index"),
        common.join("packed-refs"),
    ];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common.join(branch));
    }
    for p in watched.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

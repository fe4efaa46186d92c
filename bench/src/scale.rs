//! The scale benchmark (`secretfs-bench --scale`): how time, descriptors and daemon memory grow
//! with the number of files (1,000 to 1,000,000), and one directory of many entries.

use super::systems::{Mounted, System};
use super::workloads::{drop_caches, process_memory_kib};
use super::{check_interrupt, io, BenchError, Scratch};
use std::fs;
use std::path::Path;
use std::time::Instant;

/// Files per directory in the many-files tree.
const PER_DIR: u64 = 1000;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScaleOptions {
    /// Tree sizes, each a power of ten from 1,000 up to this.
    pub max_files: u64,
    /// Entries of the one big directory.
    pub dir_entries: u64,
    pub systems: Vec<System>,
}

/// One tree size on one system.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TreePoint {
    pub system: System,
    pub files: u64,
    pub create_s: f64,
    /// Caches dropped, then every file stat'ed by path (one lookup each).
    pub stat_s: f64,
    pub rm_s: f64,
    /// The daemon after the stat pass, with every inode in the kernel's cache.
    pub daemon_fds: Option<u64>,
    pub daemon_rss_kib: Option<u64>,
    /// (RSS after the stat pass − RSS before creating) / files.
    pub bytes_per_cached_inode: Option<f64>,
    /// The daemon once `rm -rf` is done and the caches are dropped.
    pub daemon_rss_after_kib: Option<u64>,
}

/// The big directory on one system.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DirPoint {
    pub system: System,
    pub entries: u64,
    pub create_s: f64,
    /// Caches dropped, then one readdir of the whole directory.
    pub list_s: f64,
    /// Then every entry looked up by name (stat).
    pub lookup_s: f64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScaleReport {
    pub options: ScaleOptions,
    pub trees: Vec<TreePoint>,
    pub dirs: Vec<DirPoint>,
}

fn sizes(max: u64) -> Vec<u64> {
    std::iter::successors(Some(1000u64), |n| n.checked_mul(10))
        .take_while(|n| *n <= max.max(1000))
        .collect()
}

fn count_fds(pid: u32) -> Option<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

fn timed(f: impl FnOnce() -> Result<(), BenchError>) -> Result<f64, BenchError> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

fn create_files(dir: &Path, n: u64, per_dir: u64) -> Result<(), BenchError> {
    for i in 0..n {
        if i % per_dir == 0 {
            check_interrupt()?;
            let sub = dir.join(format!("d{}", i / per_dir));
            fs::create_dir_all(&sub).map_err(io(format!("cannot create {}", sub.display())))?;
        }
        let path = dir.join(format!("d{}/f{}", i / per_dir, i % per_dir));
        fs::File::create(&path).map_err(io(format!("cannot create {}", path.display())))?;
    }
    Ok(())
}

fn stat_files(dir: &Path, n: u64, per_dir: u64) -> Result<(), BenchError> {
    for i in 0..n {
        if i % per_dir == 0 {
            check_interrupt()?;
        }
        let path = dir.join(format!("d{}/f{}", i / per_dir, i % per_dir));
        fs::symlink_metadata(&path).map_err(io(format!("cannot stat {}", path.display())))?;
    }
    Ok(())
}

fn remove(dir: &Path) -> Result<(), BenchError> {
    fs::remove_dir_all(dir).map_err(io(format!("cannot remove {}", dir.display())))
}

fn rss(m: &Mounted) -> Option<u64> {
    m.daemon_pid.and_then(|p| process_memory_kib(p, "VmRSS"))
}

fn tree_point(m: &Mounted, files: u64) -> Result<TreePoint, BenchError> {
    let dir = m.root.join("scale-tree");
    drop_caches();
    let before = rss(m);
    let create_s = timed(|| create_files(&dir, files, PER_DIR))?;
    drop_caches();
    let stat_s = timed(|| stat_files(&dir, files, PER_DIR))?;
    let daemon_fds = m.daemon_pid.and_then(count_fds);
    let daemon_rss_kib = rss(m);
    let rm_s = timed(|| remove(&dir))?;
    drop_caches();
    let bytes_per_cached_inode = match (before, daemon_rss_kib) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b) * 1024) as f64 / files as f64),
        _ => None,
    };
    Ok(TreePoint {
        system: m.system,
        files,
        create_s,
        stat_s,
        rm_s,
        daemon_fds,
        daemon_rss_kib,
        bytes_per_cached_inode,
        daemon_rss_after_kib: rss(m),
    })
}

fn dir_point(m: &Mounted, entries: u64) -> Result<DirPoint, BenchError> {
    let dir = m.root.join("scale-dir");
    // One directory: every entry goes into d0.
    let create_s = timed(|| create_files(&dir, entries, u64::MAX))?;
    drop_caches();
    let big = dir.join("d0");
    let list_s = timed(|| {
        let listed = fs::read_dir(&big)
            .map_err(io(format!("cannot list {}", big.display())))?
            .count() as u64;
        if listed != entries {
            return Err(BenchError::Setup(format!(
                "{} lists {listed} entries, not {entries}",
                big.display()
            )));
        }
        Ok(())
    })?;
    let lookup_s = timed(|| stat_files(&dir, entries, u64::MAX))?;
    remove(&dir)?;
    Ok(DirPoint {
        system: m.system,
        entries,
        create_s,
        list_s,
        lookup_s,
    })
}

/// Runs the scale benchmark on a fresh tmpfs store; systems that cannot run are skipped.
pub fn run(
    opts: &ScaleOptions,
    bin: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<ScaleReport, BenchError> {
    super::catch_interrupts();
    let mut scratch = Scratch::new(&std::env::temp_dir(), "secretfs-scale")?;
    let store = scratch.mount_tmpfs()?;
    let mounts = scratch.path.join("mnt");
    let mut mounted = Vec::new();
    for &system in &opts.systems {
        match system.unavailable(bin) {
            Some(reason) => progress(&format!("skipping {}: {reason}", system.name())),
            None => mounted.push(Mounted::setup(system, bin, &store, &mounts, 1 << 30)?),
        }
    }
    let mut report = ScaleReport {
        options: opts.clone(),
        trees: Vec::new(),
        dirs: Vec::new(),
    };
    let result = (|| {
        for files in sizes(opts.max_files) {
            for m in &mounted {
                let p = tree_point(m, files)?;
                progress(&format!(
                    "{:<9} {files:>9} files: create {:.2} s, stat {:.2} s, rm {:.2} s, \
                     daemon {} fds, {:.0} B per cached inode",
                    m.system.name(),
                    p.create_s,
                    p.stat_s,
                    p.rm_s,
                    p.daemon_fds.map_or("-".into(), |n| n.to_string()),
                    p.bytes_per_cached_inode.unwrap_or(0.0),
                ));
                report.trees.push(p);
            }
        }
        for m in &mounted {
            let p = dir_point(m, opts.dir_entries)?;
            progress(&format!(
                "{:<9} one directory of {}: list {:.2} s, look up all {:.2} s",
                m.system.name(),
                p.entries,
                p.list_s,
                p.lookup_s
            ));
            report.dirs.push(p);
        }
        Ok(())
    })();
    for m in mounted.into_iter().rev() {
        let name = m.system.name();
        if let Err(e) = m.teardown() {
            progress(&format!("warning: tearing down {name}: {e}"));
        }
    }
    result.map(|()| report)
}

/// The tables of BENCHMARKS.md's scale section.
pub fn markdown(r: &ScaleReport) -> String {
    let mut out = String::from(
        "| system | files | create (s) | stat, cold (s) | rm -rf (s) | daemon fds | \
         daemon RSS (MiB) | B per cached inode | RSS after (MiB) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    for p in &r.trees {
        out += &format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |\n",
            p.system.name(),
            p.files,
            p.create_s,
            p.stat_s,
            p.rm_s,
            p.daemon_fds.map_or("-".into(), |n| n.to_string()),
            mib(p.daemon_rss_kib),
            p.bytes_per_cached_inode
                .map_or("-".into(), |b| format!("{b:.0}")),
            mib(p.daemon_rss_after_kib),
        );
    }
    out += "\n| system | entries in one directory | create (s) | readdir, cold (s) | \
            look up each (s) |\n|---|---:|---:|---:|---:|\n";
    for p in &r.dirs {
        out += &format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |\n",
            p.system.name(),
            p.entries,
            p.create_s,
            p.list_s,
            p.lookup_s
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sizes_are_powers_of_ten_from_a_thousand() {
        assert_eq!(sizes(1_000_000), vec![1000, 10_000, 100_000, 1_000_000]);
        assert_eq!(sizes(50_000), vec![1000, 10_000]);
        assert_eq!(sizes(10), vec![1000]);
    }

    #[test]
    fn markdown_has_a_row_per_point() {
        let r = ScaleReport {
            options: ScaleOptions {
                max_files: 1000,
                dir_entries: 10,
                systems: vec![System::Secretfs],
            },
            trees: vec![TreePoint {
                system: System::Secretfs,
                files: 1000,
                create_s: 1.0,
                stat_s: 0.5,
                rm_s: 0.7,
                daemon_fds: Some(30),
                daemon_rss_kib: Some(20480),
                bytes_per_cached_inode: Some(300.0),
                daemon_rss_after_kib: Some(10240),
            }],
            dirs: vec![DirPoint {
                system: System::Secretfs,
                entries: 10,
                create_s: 0.1,
                list_s: 0.01,
                lookup_s: 0.02,
            }],
        };
        let md = markdown(&r);
        assert!(md.contains("| secretfs | 1000 | 1.00 | 0.50 | 0.70 | 30 | 20.0 | 300 | 10.0 |"));
        assert!(md.contains("| secretfs | 10 | 0.10 | 0.01 | 0.02 |"));
    }
}

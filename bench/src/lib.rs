//! The comparison benchmark (`secretfs-bench`): the same workloads over plain, our passthrough
//! control, file mode, block mode and gocryptfs, interleaved round by round on tmpfs and disk.

pub mod chart;
pub mod report;
pub mod scale;
pub mod systems;
pub mod workloads;

use report::{Host, MemorySeries, Report, Series, Skipped, StoreReport};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use systems::{Mounted, System};
use workloads::{Round, Sizes, Workload};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

/// Where the backing data of every system lives during one part of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// A fresh tmpfs: isolates filesystem overhead from the disk.
    Tmpfs,
    /// A directory on a real disk (`--disk-dir`).
    Disk,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Tmpfs => "tmpfs",
            Store::Disk => "disk",
        }
    }
}

pub struct Options {
    pub quick: bool,
    pub rounds: u32,
    pub sizes: Sizes,
    pub stores: Vec<Store>,
    pub systems: Vec<System>,
    /// A directory to pack, or a tar file (or a device holding one) to extract.
    pub tree: PathBuf,
    pub disk_dir: PathBuf,
    /// Untar + delete cycles after the rounds, watching the daemons' memory.
    pub rss_rounds: u32,
    /// The secretfs binary that mounts file and block mode (see `--secretfs-bin`).
    pub bin: PathBuf,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C stops the run between two measurements, so every mount is torn down on the way out.
pub(crate) fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub(crate) fn check_interrupt() -> Result<(), BenchError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

/// A scratch directory that removes itself (after unmounting anything on top of its parts).
pub(crate) struct Scratch {
    path: PathBuf,
    tmpfs: Option<PathBuf>,
}

impl Scratch {
    pub(crate) fn new(parent: &Path, name: &str) -> Result<Self, BenchError> {
        let path = parent.join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(io(format!("cannot create {}", path.display())))?;
        Ok(Self { path, tmpfs: None })
    }

    /// Mounts a fresh tmpfs (default size: half the RAM) at `self.path/store`.
    pub(crate) fn mount_tmpfs(&mut self) -> Result<PathBuf, BenchError> {
        let at = self.path.join("store");
        fs::create_dir_all(&at).map_err(io(format!("cannot create {}", at.display())))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0700", "secretfs-bench"])
            .arg(&at)
            .status()
            .map_err(io("cannot run mount".into()))?;
        if !status.success() {
            return Err(BenchError::Setup(format!(
                "cannot mount a tmpfs at {} (the benchmark must run as root)",
                at.display()
            )));
        }
        self.tmpfs = Some(at.clone());
        Ok(at)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(at) = self.tmpfs.take() {
            let _ = Command::new("umount").arg(&at).status();
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

fn host(bin: &Path) -> Host {
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Host {
        started_unix: now,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        kernel: first_line(Command::new("uname").arg("-r")).unwrap_or_default(),
        // The version of the binary measured, which is not necessarily the benchmark's own.
        secretfs: first_line(Command::new(bin).arg("--version"))
            .map(|v| v.trim_start_matches("secretfs ").to_string())
            .unwrap_or_else(|| "unknown".into()),
        gocryptfs: first_line(Command::new("gocryptfs").arg("-version")),
    }
}

/// Size of the tar, which may be a block device (the VM passes it as a raw disk).
fn tar_size(path: &Path) -> u64 {
    use std::io::Seek;
    fs::File::open(path)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .unwrap_or(0)
}

/// The workloads of one round on a mounted system.
fn round_on<'a>(m: &'a Mounted, opts: &'a Options, tree: &'a Path, data: &'a [u8]) -> Round<'a> {
    Round {
        dir: &m.root,
        sizes: &opts.sizes,
        tree,
        daemon_pid: m.daemon_pid,
        data,
    }
}

/// Runs the whole benchmark; `progress` gets one line per measurement.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    catch_interrupts();
    let host = host(&opts.bin);
    let mut skipped = Vec::new();
    let systems: Vec<System> = opts
        .systems
        .iter()
        .copied()
        .filter(|s| match s.unavailable(&opts.bin) {
            Some(reason) => {
                progress(&format!("skipping {}: {reason}", s.name()));
                skipped.push(Skipped { system: *s, reason });
                false
            }
            None => true,
        })
        .collect();

    let mut scratch = Scratch::new(&std::env::temp_dir(), "secretfs-bench")?;
    let tree = if opts.tree.is_dir() {
        let tar = scratch.path.join("tree.tar");
        progress(&format!("packing {} into a tar", opts.tree.display()));
        workloads::pack_tree(&opts.tree, &tar)?;
        tar
    } else {
        opts.tree.clone()
    };
    let tree_bytes = tar_size(&tree);
    let data = workloads::random_bytes(1 << 20);
    // Room for the big file, a few trees and the small files, plus ext4's own overhead.
    let block_bytes = opts.sizes.seq_bytes * 5 / 4
        + tree_bytes.max(64 << 20) * 3
        + opts.sizes.files as u64 * 8192
        + (512 << 20);

    let per_store = systems.len() * (opts.rounds as usize * Workload::ALL.len());
    let total = opts.stores.len() * per_store;
    let mut done = 0usize;
    let mut stores = Vec::new();
    for &store in &opts.stores {
        let (store_dir, _disk_scratch) = match store {
            Store::Tmpfs => (scratch.mount_tmpfs()?, None),
            Store::Disk => {
                let s = Scratch::new(&opts.disk_dir, "secretfs-bench")?;
                (s.path.clone(), Some(s))
            }
        };
        let mounts = scratch.path.join(format!("mnt-{}", store.name()));
        let mut mounted = Vec::new();
        for &system in &systems {
            check_interrupt()?;
            progress(&format!("{}: setting up {}", store.name(), system.name()));
            mounted.push(Mounted::setup(
                system,
                &opts.bin,
                &store_dir,
                &mounts,
                block_bytes,
            )?);
        }
        let mut series: Vec<Series> = Vec::new();
        for round in 0..opts.rounds {
            // Rotate the order so no system always runs first (or right after another).
            let n = mounted.len();
            for k in 0..n {
                let m = &mounted[(k + round as usize) % n];
                let r = round_on(m, opts, &tree, &data);
                for workload in Workload::ALL {
                    check_interrupt()?;
                    done += 1;
                    let sample = r.run(workload).map_err(|e| {
                        // Ctrl-C also reaches the tar or ls it was running: that is no failure.
                        if INTERRUPTED.load(Ordering::SeqCst) {
                            return BenchError::Interrupted;
                        }
                        BenchError::Setup(format!(
                            "{} on {} ({}): {e}",
                            workload.label(),
                            m.system.name(),
                            store.name()
                        ))
                    })?;
                    progress(&format!(
                        "[{done:>4}/{total}] {:<5} round {}/{} {:<9} {:<20} {:>10.2} {}",
                        store.name(),
                        round + 1,
                        opts.rounds,
                        m.system.name(),
                        workload.label(),
                        sample.value,
                        workload.unit()
                    ));
                    match series
                        .iter_mut()
                        .find(|s| s.system == m.system && s.workload == workload)
                    {
                        Some(s) => s.samples.push(sample),
                        None => series.push(Series {
                            system: m.system,
                            workload,
                            samples: vec![sample],
                        }),
                    }
                }
                r.clean()?;
            }
        }
        let mut memory = Vec::new();
        for m in mounted.iter().filter(|m| m.daemon_pid.is_some()) {
            let mut rss = Vec::new();
            let r = round_on(m, opts, &tree, &data);
            for i in 0..opts.rss_rounds {
                check_interrupt()?;
                r.run(Workload::Untar)?;
                r.clean()?;
                let kib = m
                    .daemon_pid
                    .and_then(|p| workloads::process_memory_kib(p, "VmRSS"))
                    .unwrap_or(0);
                progress(&format!(
                    "{:<5} untar loop {}/{} {:<9} daemon RSS {:.1} MiB",
                    store.name(),
                    i + 1,
                    opts.rss_rounds,
                    m.system.name(),
                    kib as f64 / 1024.0
                ));
                rss.push(kib);
            }
            memory.push(MemorySeries {
                system: m.system,
                rss_kib_after_untar: rss,
                peak_kib: m
                    .daemon_pid
                    .and_then(|p| workloads::process_memory_kib(p, "VmHWM")),
            });
        }
        for m in mounted.drain(..).rev() {
            let name = m.system.name();
            if let Err(e) = m.teardown() {
                progress(&format!("warning: tearing down {name}: {e}"));
            }
        }
        stores.push(StoreReport {
            store,
            fstype: fstype_of(&store_dir),
            systems: systems.clone(),
            series,
            memory,
        });
    }
    Ok(Report {
        format: 1,
        host,
        quick: opts.quick,
        rounds: opts.rounds,
        sizes: opts.sizes.clone(),
        tree: opts.tree.display().to_string(),
        tree_bytes,
        skipped,
        stores,
    })
}

/// The filesystem type of `path`, from /proc/self/mountinfo (longest matching mount point).
fn fstype_of(path: &Path) -> String {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".into();
    };
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((
                PathBuf::from(fields.get(4)?),
                fields.get(sep + 1)?.to_string(),
            ))
        })
        .filter(|(mp, _)| path.starts_with(mp))
        .max_by_key(|(mp, _)| mp.as_os_str().len())
        .map(|(_, t)| t)
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_filesystem_has_a_type() {
        assert_ne!(fstype_of(Path::new("/")), "unknown");
        assert_eq!(fstype_of(Path::new("/proc/self")), "proc");
    }
}

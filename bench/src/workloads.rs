//! The comparison benchmark's workloads: each one runs against a directory, whatever filesystem
//! serves it, and measures wall time plus the CPU time of the client and of the daemon.

use super::BenchError;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
const IO_SIZE: usize = 1 << 20;
const SMALL: usize = 4096;
const FILES_PER_DIR: u32 = 100;

/// What one round does, in this order (later workloads use what earlier ones left behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    SeqWrite,
    SeqRead,
    RandRead,
    RandWrite,
    Create,
    ListRecursive,
    ReadAll,
    Delete,
    Untar,
}

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::SeqWrite,
        Workload::SeqRead,
        Workload::RandRead,
        Workload::RandWrite,
        Workload::Create,
        Workload::ListRecursive,
        Workload::ReadAll,
        Workload::Delete,
        Workload::Untar,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Workload::SeqWrite => "seq write (fsync)",
            Workload::SeqRead => "seq read, cold",
            Workload::RandRead => "rand read 4 KiB",
            Workload::RandWrite => "rand write 4 KiB",
            Workload::Create => "create small files",
            Workload::ListRecursive => "ls -lR",
            Workload::ReadAll => "read small files",
            Workload::Delete => "rm -rf small files",
            Workload::Untar => "untar tree",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Workload::SeqWrite | Workload::SeqRead => "MB/s",
            Workload::RandRead | Workload::RandWrite => "IOPS",
            _ => "s",
        }
    }

    /// Throughputs grow with speed, times shrink.
    pub fn higher_is_better(self) -> bool {
        matches!(self.unit(), "MB/s" | "IOPS")
    }

    /// Workloads whose CPU cost is reported per GiB moved.
    pub fn moves_bulk_data(self) -> bool {
        matches!(self, Workload::SeqWrite | Workload::SeqRead)
    }
}

/// How much work a round does.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    /// Size of the sequential file, also the span of the random I/O.
    pub seq_bytes: u64,
    /// Random 4 KiB operations per random workload.
    pub rand_ops: u32,
    /// Number of 4 KiB small files.
    pub files: u32,
}

/// One measurement of one workload on one system.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// In the workload's unit.
    pub value: f64,
    pub seconds: f64,
    /// CPU seconds (user + system) of the benchmark process and the tools it ran.
    pub cpu_client: f64,
    /// CPU seconds of the FUSE daemon, when the system has one.
    pub cpu_daemon: Option<f64>,
    pub bytes: u64,
}

impl Sample {
    pub fn cpu_per_gib(&self) -> Option<f64> {
        (self.bytes > 0).then(|| {
            (self.cpu_client + self.cpu_daemon.unwrap_or(0.0)) / (self.bytes as f64 / GIB as f64)
        })
    }
}

/// Wall clock and CPU counters at the start of a measurement.
struct Meter {
    start: Instant,
    client: f64,
    daemon: Option<f64>,
    pid: Option<u32>,
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn client_cpu() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF) + rusage_seconds(libc::RUSAGE_CHILDREN)
}

/// utime + stime of every thread of `pid`, from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / hz)
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
pub fn process_memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

impl Meter {
    fn start(pid: Option<u32>) -> Self {
        Self {
            client: client_cpu(),
            daemon: pid.and_then(process_cpu),
            pid,
            start: Instant::now(),
        }
    }

    fn finish(self, bytes: u64, value: impl FnOnce(f64) -> f64) -> Sample {
        let seconds = self.start.elapsed().as_secs_f64().max(1e-9);
        let cpu_daemon = match (self.daemon, self.pid.and_then(process_cpu)) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        Sample {
            value: value(seconds),
            seconds,
            cpu_client: (client_cpu() - self.client).max(0.0),
            cpu_daemon,
            bytes,
        }
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

/// Writes back dirty data everywhere and drops the page, dentry and inode caches, so that the
/// next read really goes through the filesystem. Returns false when not allowed (not root).
pub fn drop_caches() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// A small xorshift generator: the same offsets for every system, no dependency.
struct Offsets(u64);

impl Offsets {
    fn next_block(&mut self, blocks: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % blocks.max(1)
    }
}

/// Incompressible bytes (all-zero blocks would be stored as holes by some systems).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    buf
}

fn advise_random(file: &File) {
    // SAFETY: advisory only, on an fd we own. Turns off read-ahead as fio does for random I/O.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<(), BenchError> {
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io_err(format!("cannot run {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Where one system's round puts its files.
pub struct Round<'a> {
    pub dir: &'a Path,
    pub sizes: &'a Sizes,
    pub tree: &'a Path,
    pub daemon_pid: Option<u32>,
    pub data: &'a [u8],
}

impl Round<'_> {
    fn big_file(&self) -> PathBuf {
        self.dir.join("big.bin")
    }

    fn small_dir(&self) -> PathBuf {
        self.dir.join("small")
    }

    fn tree_dir(&self) -> PathBuf {
        self.dir.join("tree")
    }

    pub fn run(&self, workload: Workload) -> Result<Sample, BenchError> {
        match workload {
            Workload::SeqWrite => self.seq_write(),
            Workload::SeqRead => self.seq_read(),
            Workload::RandRead => self.rand_read(),
            Workload::RandWrite => self.rand_write(),
            Workload::Create => self.create(),
            Workload::ListRecursive => self.list(),
            Workload::ReadAll => self.read_all(),
            Workload::Delete => self.delete(),
            Workload::Untar => self.untar(),
        }
    }

    /// Removes what a round left (not measured), so stores do not fill up across rounds.
    pub fn clean(&self) -> Result<(), BenchError> {
        for path in [self.big_file(), self.small_dir(), self.tree_dir()] {
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot remove {}", path.display()))(e)),
            }
        }
        Ok(())
    }

    fn mb_per_s(bytes: u64) -> impl FnOnce(f64) -> f64 {
        move |s| bytes as f64 / 1e6 / s
    }

    fn seq_write(&self) -> Result<Sample, BenchError> {
        let path = self.big_file();
        let what = || format!("sequential write to {}", path.display());
        let meter = Meter::start(self.daemon_pid);
        let mut file = File::create(&path).map_err(io_err(what()))?;
        let mut left = self.sizes.seq_bytes;
        while left > 0 {
            let n = left.min(self.data.len() as u64) as usize;
            file.write_all(&self.data[..n]).map_err(io_err(what()))?;
            left -= n as u64;
        }
        file.sync_all().map_err(io_err(what()))?;
        drop(file);
        Ok(meter.finish(self.sizes.seq_bytes, Self::mb_per_s(self.sizes.seq_bytes)))
    }

    fn seq_read(&self) -> Result<Sample, BenchError> {
        let path = self.big_file();
        let what = || format!("sequential read of {}", path.display());
        drop_caches();
        let meter = Meter::start(self.daemon_pid);
        let mut file = File::open(&path).map_err(io_err(what()))?;
        let mut buf = vec![0u8; IO_SIZE];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err(what()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        drop(file);
        let sample = meter.finish(total, Self::mb_per_s(total));
        if total != self.sizes.seq_bytes {
            return Err(BenchError::Setup(format!(
                "{}: read {total} bytes, wrote {}",
                what(),
                self.sizes.seq_bytes
            )));
        }
        Ok(sample)
    }

    fn rand_read(&self) -> Result<Sample, BenchError> {
        let path = self.big_file();
        let what = || format!("random read of {}", path.display());
        drop_caches();
        let blocks = self.sizes.seq_bytes / SMALL as u64;
        let mut offsets = Offsets(0x2545_F491_4F6C_DD1D);
        let meter = Meter::start(self.daemon_pid);
        let file = File::open(&path).map_err(io_err(what()))?;
        advise_random(&file);
        let mut buf = [0u8; SMALL];
        for _ in 0..self.sizes.rand_ops {
            let off = offsets.next_block(blocks) * SMALL as u64;
            file.read_exact_at(&mut buf, off).map_err(io_err(what()))?;
        }
        drop(file);
        let ops = self.sizes.rand_ops as f64;
        Ok(meter.finish(0, |s| ops / s))
    }

    fn rand_write(&self) -> Result<Sample, BenchError> {
        let path = self.big_file();
        let what = || format!("random write to {}", path.display());
        drop_caches();
        let blocks = self.sizes.seq_bytes / SMALL as u64;
        let mut offsets = Offsets(0x9E37_79B9_7F4A_7C15);
        let meter = Meter::start(self.daemon_pid);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(what()))?;
        advise_random(&file);
        for i in 0..self.sizes.rand_ops {
            let block = offsets.next_block(blocks);
            let src = (i as usize * 64) % (self.data.len() - SMALL);
            file.write_all_at(&self.data[src..src + SMALL], block * SMALL as u64)
                .map_err(io_err(what()))?;
        }
        file.sync_all().map_err(io_err(what()))?;
        drop(file);
        let ops = self.sizes.rand_ops as f64;
        Ok(meter.finish(0, |s| ops / s))
    }

    fn small_file(&self, i: u32) -> PathBuf {
        self.small_dir()
            .join(format!("d{:03}", i / FILES_PER_DIR))
            .join(format!("file-{i:05}.dat"))
    }

    fn create(&self) -> Result<Sample, BenchError> {
        let root = self.small_dir();
        let what = || format!("creating small files under {}", root.display());
        let meter = Meter::start(self.daemon_pid);
        fs::create_dir(&root).map_err(io_err(what()))?;
        for i in 0..self.sizes.files {
            if i % FILES_PER_DIR == 0 {
                fs::create_dir(root.join(format!("d{:03}", i / FILES_PER_DIR)))
                    .map_err(io_err(what()))?;
            }
            let src = (i as usize * 64) % (self.data.len() - SMALL);
            fs::write(self.small_file(i), &self.data[src..src + SMALL]).map_err(io_err(what()))?;
        }
        Ok(meter.finish(0, |s| s))
    }

    fn list(&self) -> Result<Sample, BenchError> {
        drop_caches();
        let meter = Meter::start(self.daemon_pid);
        run_tool(
            Command::new("ls").arg("-lR").arg(self.small_dir()),
            "ls -lR",
        )?;
        Ok(meter.finish(0, |s| s))
    }

    fn read_all(&self) -> Result<Sample, BenchError> {
        drop_caches();
        let what = || format!("reading small files under {}", self.small_dir().display());
        let meter = Meter::start(self.daemon_pid);
        let mut buf = vec![0u8; SMALL * 2];
        let mut total = 0u64;
        for i in 0..self.sizes.files {
            let mut f = File::open(self.small_file(i)).map_err(io_err(what()))?;
            loop {
                let n = f.read(&mut buf).map_err(io_err(what()))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        let sample = meter.finish(0, |s| s);
        if total != self.sizes.files as u64 * SMALL as u64 {
            return Err(BenchError::Setup(format!("{}: short read", what())));
        }
        Ok(sample)
    }

    fn delete(&self) -> Result<Sample, BenchError> {
        let meter = Meter::start(self.daemon_pid);
        run_tool(
            Command::new("rm").arg("-rf").arg(self.small_dir()),
            "rm -rf",
        )?;
        let sample = meter.finish(0, |s| s);
        if self.small_dir().exists() {
            return Err(BenchError::Setup("rm -rf left files behind".into()));
        }
        Ok(sample)
    }

    fn untar(&self) -> Result<Sample, BenchError> {
        let dest = self.tree_dir();
        fs::create_dir(&dest).map_err(io_err(format!("cannot create {}", dest.display())))?;
        let meter = Meter::start(self.daemon_pid);
        run_tool(
            Command::new("tar")
                .arg("-xf")
                .arg(self.tree)
                .arg("-C")
                .arg(&dest),
            "tar -x",
        )?;
        Ok(meter.finish(0, |s| s))
    }
}

/// Packs a directory into `out` as an uncompressed tar (gzip would measure the compressor).
pub fn pack_tree(src: &Path, out: &Path) -> Result<(), BenchError> {
    let parent = src.parent().unwrap_or(Path::new("/"));
    let name = src.file_name().unwrap_or(src.as_os_str());
    run_tool(
        Command::new("tar")
            .arg("-cf")
            .arg(out)
            .arg("-C")
            .arg(parent)
            .arg(name),
        "tar -c",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Sizes {
        Sizes {
            seq_bytes: 2 * MIB,
            rand_ops: 50,
            files: 150,
        }
    }

    #[test]
    fn a_round_runs_every_workload_on_a_plain_directory_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/a.c"), b"int main;").unwrap();
        let tree = dir.path().join("tree.tar");
        pack_tree(&src, &tree).unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let data = random_bytes(IO_SIZE);
        let sizes = sizes();
        let round = Round {
            dir: &work,
            sizes: &sizes,
            tree: &tree,
            daemon_pid: Some(std::process::id()),
            data: &data,
        };
        for w in Workload::ALL {
            let s = round.run(w).unwrap();
            assert!(s.value > 0.0 && s.seconds > 0.0, "{w:?}: {s:?}");
            assert!(s.cpu_daemon.is_some());
        }
        assert_eq!(fs::metadata(work.join("big.bin")).unwrap().len(), 2 * MIB);
        assert!(work.join("tree/src/sub/a.c").exists());
        assert!(!work.join("small").exists());
        round.clean().unwrap();
        assert_eq!(fs::read_dir(&work).unwrap().count(), 0);
    }

    #[test]
    fn a_short_file_is_an_error_not_a_figure() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(IO_SIZE);
        let sizes = sizes();
        fs::write(dir.path().join("big.bin"), b"short").unwrap();
        let round = Round {
            dir: dir.path(),
            sizes: &sizes,
            tree: Path::new("/nonexistent.tar"),
            daemon_pid: None,
            data: &data,
        };
        assert!(round.run(Workload::SeqRead).is_err());
        assert!(round.run(Workload::Untar).is_err());
    }

    #[test]
    fn process_counters_are_read_from_proc() {
        let me = std::process::id();
        assert!(process_cpu(me).is_some());
        assert!(process_memory_kib(me, "VmRSS").unwrap() > 0);
        assert!(process_cpu(u32::MAX).is_none());
    }
}

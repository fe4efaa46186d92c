//! Running the filesystem as a service: fork to the background with a readiness pipe (the
//! parent returns only once the mount is usable), logging, signals, and the runtime state file.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where mounted daemons record themselves, for `status` and `umount`.
pub const STATE_DIR: &str = "/run/secretfs";

/// The child's end of the readiness pipe.
pub struct Readiness {
    pipe: Option<std::fs::File>,
}

/// The parent's end: blocks until the child reports.
pub struct ReadinessWaiter {
    pipe: std::fs::File,
}

pub enum Forked {
    Parent(ReadinessWaiter),
    Child(Readiness),
}

impl Readiness {
    /// For foreground mounts: nobody waits.
    pub fn none() -> Self {
        Self { pipe: None }
    }

    pub fn ok(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"OK\n");
        }
    }

    /// Reports why the mount failed: the error's kind (one word), message and hint.
    pub fn fail(&mut self, kind: &str, message: &str, hint: Option<&str>) {
        if let Some(mut p) = self.pipe.take() {
            let _ = write!(p, "ERR {kind} {message}");
            if let Some(h) = hint {
                let _ = write!(p, "\0{h}");
            }
        }
    }
}

/// Why the daemon could not mount, as it reported it.
#[derive(Debug, PartialEq, Eq)]
pub struct Failed {
    pub kind: String,
    pub message: String,
    pub hint: Option<String>,
}

impl ReadinessWaiter {
    /// Ok once the mount is usable; otherwise what the child reported.
    pub fn wait(mut self) -> Result<(), Failed> {
        let mut msg = String::new();
        let _ = self.pipe.read_to_string(&mut msg);
        if msg.starts_with("OK") {
            return Ok(());
        }
        match msg.strip_prefix("ERR ").and_then(|r| r.split_once(' ')) {
            Some((kind, text)) => {
                let (message, hint) = match text.split_once('\0') {
                    Some((m, h)) => (m.to_string(), Some(h.to_string())),
                    None => (text.to_string(), None),
                };
                Err(Failed {
                    kind: kind.to_string(),
                    message,
                    hint,
                })
            }
            None => Err(Failed {
                kind: "failure".into(),
                message: "the daemon exited before the mount was ready (see the system log)".into(),
                hint: None,
            }),
        }
    }
}

/// Forks; the child starts a new session. Must be called while the process has one thread.
pub fn fork_background() -> std::io::Result<Forked> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 returns.
    crate::sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point, so the child may continue running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read);
            // SAFETY: plain syscall in the child.
            unsafe { libc::setsid() };
            Ok(Forked::Child(Readiness {
                pipe: Some(std::fs::File::from(write)),
            }))
        }
        _ => {
            drop(write);
            Ok(Forked::Parent(ReadinessWaiter {
                pipe: std::fs::File::from(read),
            }))
        }
    }
}

/// After readiness: the daemon keeps no terminal.
pub fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// No core dumps and no ptrace or /proc/PID/mem by other users: called by every command that
/// holds a key or passphrase (init, mount, pin, fsck, rewrap, block open), before it gets one.
pub fn forbid_core_dumps() {
    // SAFETY: plain prctl call.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Security settings of the daemon process: no core dumps (memory holds keys), umask 0 (the
/// kernel already applied the caller's umask to every mode we receive).
pub fn harden_process() {
    forbid_core_dumps();
    // SAFETY: plain umask call.
    unsafe { libc::umask(0) };
}

/// Raises the soft open-file limit to the hard one. The daemon holds descriptors for the inodes
/// the kernel caches, and fstab mounts start under systemd's soft limit of 1024, which a large
/// tree would exhaust. Returns (soft before, soft now) for the log.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit for getrlimit to fill.
    crate::sys::cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: lim is a valid rlimit; raising the soft limit up to the hard one needs no
        // privilege.
        crate::sys::cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok((before, lim.rlim_cur))
}

/// Blocks termination signals in this thread and every thread it spawns afterwards, so that
/// only the thread started by `on_termination` receives them.
pub fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask for this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Starts a thread that waits for one of the blocked signals and then calls `on_signal`.
pub fn on_termination(
    set: libc::sigset_t,
    on_signal: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: set is a valid, initialised sigset.
            unsafe { libc::sigwait(&set, &mut sig) };
            tracing::info!(signal = sig, "termination signal: unmounting");
            on_signal();
        })?;
    Ok(())
}

/// Installs the tracing subscriber: stderr in the foreground, else `log` or syslog.
pub fn init_logging(foreground: bool, log: Option<&Path>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SECRETFS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal: journald and log shippers store the codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match (log, foreground) {
        (Some(path), _) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init(),
            Err(_) => builder.with_writer(std::io::stderr).try_init(),
        },
        (None, true) => builder.with_writer(std::io::stderr).try_init(),
        (None, false) => {
            // SAFETY: the ident is a static C string, as openlog requires.
            unsafe { libc::openlog(c"secretfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
            builder
                .with_ansi(false)
                .without_time()
                .with_writer(SyslogWriter::default)
                .try_init()
        }
    };
}

/// One syslog record per tracing event.
#[derive(Default)]
struct SyslogWriter {
    buf: Vec<u8>,
}

impl Write for SyslogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        let priority = if text.contains("ERROR") {
            libc::LOG_ERR
        } else if text.contains("WARN") {
            libc::LOG_WARNING
        } else {
            libc::LOG_INFO
        };
        if let Ok(c) = std::ffi::CString::new(text.replace('\0', " ")) {
            // SAFETY: "%s" with one valid C string argument.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
        }
    }
}

/// What a running daemon records about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MountState {
    pub pid: u32,
    pub mode: String,
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    pub fs_id: String,
    pub key_source: String,
    /// The cipher the daemon really uses; absent in state files of older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
}

pub fn state_path(mountpoint: &Path) -> PathBuf {
    let escaped = mountpoint
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "-");
    Path::new(STATE_DIR).join(format!(
        "{}.json",
        if escaped.is_empty() {
            "-".into()
        } else {
            escaped
        }
    ))
}

/// The state directory, created 0755 whatever the umask; refused unless it is a real directory
/// owned by root and writable by root alone, since `status` and `umount` believe what it says.
fn state_dir(create: bool) -> std::io::Result<&'static Path> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = Path::new(STATE_DIR);
    if create {
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let mut meta = std::fs::symlink_metadata(dir)?;
    if create && meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 != 0 {
        // Made world-writable by an older version: ours, so tighten it (its files are still
        // checked one by one when read).
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        meta = std::fs::symlink_metadata(dir)?;
    }
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{STATE_DIR} is not a root-owned directory writable by root alone (uid {}, mode {:o}); remove it",
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(dir)
}

pub fn write_state(state: &MountState) -> std::io::Result<()> {
    state_dir(true)?;
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::store::config::write_atomically(&state_path(&state.mountpoint), &json, 0o644)
}

/// The recorded state of the daemon serving `mountpoint`, if a trustworthy one exists.
pub fn read_state(mountpoint: &Path) -> Option<MountState> {
    use std::os::fd::AsRawFd;
    let dir = crate::store::confined::open_root(state_dir(false).ok()?).ok()?;
    let path = state_path(mountpoint);
    let name = std::ffi::CString::new(path.file_name()?.as_encoded_bytes()).ok()?;
    let file = crate::store::confined::open_regular(dir.as_raw_fd(), &name).ok()?;
    // Written by root's daemon only: a file of anyone else's was planted.
    let meta = std::fs::File::from(file.try_clone().ok()?)
        .metadata()
        .ok()?;
    if std::os::unix::fs::MetadataExt::uid(&meta) != 0 {
        return None;
    }
    let bytes = crate::store::confined::read_fd_bounded(file.as_raw_fd(), 64 * 1024).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn remove_state(mountpoint: &Path) {
    let _ = std::fs::remove_file(state_path(mountpoint));
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readiness_pair() -> (Readiness, ReadinessWaiter) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 returns, owned below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (
            Readiness {
                pipe: Some(std::fs::File::from(write)),
            },
            ReadinessWaiter {
                pipe: std::fs::File::from(read),
            },
        )
    }

    #[test]
    fn readiness_carries_the_failure_kind_message_and_hint() {
        let (mut ready, waiter) = readiness_pair();
        ready.fail("key", "this key does not open it", Some("check --key"));
        drop(ready);
        assert_eq!(
            waiter.wait(),
            Err(Failed {
                kind: "key".into(),
                message: "this key does not open it".into(),
                hint: Some("check --key".into()),
            })
        );
        let (mut ready, waiter) = readiness_pair();
        ready.fail("mount", "cannot mount at /m: busy", None);
        drop(ready);
        assert_eq!(
            waiter.wait().map_err(|f| (f.kind, f.hint)),
            Err(("mount".into(), None))
        );
        let (mut ready, waiter) = readiness_pair();
        ready.ok();
        assert_eq!(waiter.wait(), Ok(()));
        // A daemon that dies before a word is a failure, not a success.
        let (ready, waiter) = readiness_pair();
        drop(ready);
        assert_eq!(waiter.wait().map_err(|f| f.kind), Err("failure".into()));
    }

    #[test]
    fn hardened_process_is_not_dumpable() {
        // In a child, so the test runner keeps its own settings.
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { libc::fork() } {
            0 => {
                harden_process();
                // SAFETY: plain prctl query.
                let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
                unsafe { libc::_exit(if dumpable == 0 { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "daemon would be dumpable"
                );
            }
        }
    }

    #[test]
    fn open_file_limit_is_raised_to_the_hard_limit() {
        // In a child with a soft limit of 1024 below its hard limit, so the runner keeps its own.
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: plain rlimit calls on a local.
                unsafe {
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    let hard = lim.rlim_max.min(4096);
                    lim.rlim_max = hard;
                    lim.rlim_cur = 1024.min(hard);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                let ok = matches!(raise_open_file_limit(), Ok((1024, now)) if now == lim.rlim_max);
                // SAFETY: plain rlimit query.
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
                unsafe {
                    libc::_exit(if ok && lim.rlim_cur == lim.rlim_max {
                        0
                    } else {
                        1
                    })
                }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "soft limit not raised to the hard limit"
                );
            }
        }
    }

    #[test]
    fn state_paths_are_distinct_per_mountpoint() {
        assert_ne!(
            state_path(Path::new("/mnt/a")),
            state_path(Path::new("/mnt/b"))
        );
        assert!(state_path(Path::new("/")).starts_with(STATE_DIR));
    }
}

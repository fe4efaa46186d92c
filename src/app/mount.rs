//! Mounting file mode: plan (paths, key, config), unlock and verify, mount the FUSE filesystem
//! and return once it is usable, leaving the daemon in the background (or serving in the foreground).

use super::{Error, ErrorKind, KeyChoice, Result};
use crate::crypto::keys::KeyRing;
use crate::crypto::{passthrough, Codec};
use crate::daemon::{self, Forked, MountState, Readiness};
use crate::fs::kmount::{self, KernelMount};
use crate::fs::{FsOptions, SecretFs};
use crate::mountopts::{Mode, MountOptions};
use crate::store::config::{self, FsConfig, KeySourceDescriptor};
use crate::{audit, mounts};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything decided before the daemon starts serving.
pub struct MountPlan {
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    pub config: FsConfig,
    pub mac: Vec<u8>,
    /// The trusted slots to try, in order, and the pin of a first use.
    pub unlock: super::keys::UnlockPlan,
    pub opts: MountOptions,
    pub foreground: bool,
    pub codec: Codec,
}

/// Switches a plan to the identity codec. Only an ephemeral filesystem qualifies: it is emptied
/// at every mount, so no encrypted data can be read as clear or overwritten in clear, and the
/// plaintext it holds dies at the next mount.
pub fn passthrough_control(mut plan: MountPlan) -> Result<MountPlan> {
    let Some(control) = passthrough::AVAILABLE else {
        // The flag exists only where the control does: only a MountArgs built by hand gets here.
        return Err(Error::usage(
            "this secretfs was built without `--features passthrough-control`",
        ));
    };
    if !plan.unlock.is_ephemeral() {
        return Err(Error::usage(format!(
            "--passthrough-control stores everything in clear, so it mounts only an ephemeral filesystem; {} uses key source {}",
            plan.backing.display(),
            plan.config.primary().kind()
        ))
        .hint("secretfs init NEW_BACKING --key ephemeral"));
    }
    eprintln!("secretfs: WARNING: {CONTROL_WARNING}");
    plan.codec = Codec::PassthroughControl(control);
    Ok(plan)
}

const CONTROL_WARNING: &str =
    "passthrough control: contents and names are NOT encrypted; for benchmarks only";

pub fn plan(
    backing: &Path,
    mountpoint: &Path,
    key: &KeyChoice,
    opts: MountOptions,
    foreground: bool,
) -> Result<MountPlan> {
    if opts.mode == Mode::Block {
        return Err(Error::usage(
            "mode=block is handled by `secretfs block open` or by mount.secretfs (fstab)",
        )
        .hint("secretfs block open DEVICE|FILE MOUNTPOINT --key …"));
    }
    let key = &key.with_options(&opts);
    if let Some(region) = &opts.region {
        // Read by the AWS SDK's region chain; set while the process is still single-threaded.
        std::env::set_var("AWS_REGION", region);
    }
    if opts.init_auto && !crate::store::config::config_path(backing).exists() {
        init_if_blank(backing, key)?;
    }
    let backing = super::existing_dir(backing, "backing directory", ErrorKind::Backing)?;
    let mountpoint = super::existing_dir(mountpoint, "mount point", ErrorKind::Mount)?;
    if mounts::at(&mountpoint).is_some_and(|m| m.fstype == mounts::FUSE_TYPE) {
        return Err(Error::mount(format!(
            "{} is already a secretfs mount",
            mountpoint.display()
        ))
        .hint(format!("secretfs umount {}", mountpoint.display())));
    }
    if let Some(m) = mounts::serving(&backing) {
        return Err(Error::mount(format!(
            "{} is already mounted at {}",
            backing.display(),
            m.mountpoint.display()
        ))
        .hint("one backing store can be served by one daemon at a time"));
    }
    let (config, mac) = config::load(&backing)?;
    let unlock = super::keys::plan_unlock(&backing, key, opts.key.as_deref(), &config)?;
    Ok(MountPlan {
        backing,
        mountpoint,
        config,
        mac,
        unlock,
        opts,
        foreground,
        codec: Codec::default(),
    })
}

/// `init=auto`: a missing or empty backing directory (a fresh instance-store disk) gets a new
/// filesystem; anything else without a config is left alone and reported by the mount.
fn init_if_blank(backing: &Path, key: &KeyChoice) -> Result<()> {
    let blank = match std::fs::read_dir(backing) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if !blank {
        return Ok(());
    }
    let args = super::init::InitRequest {
        backing: backing.to_path_buf(),
        key: key.clone(),
        force: false,
        recovery: false,
    };
    let done = super::init::run(&args)?;
    tracing::info!(fs_id = %done.config.fs_id, backing = %done.backing.display(), "init=auto created a new filesystem");
    Ok(())
}

/// Mounts according to `plan`: in the foreground, or forks and waits for the daemon's word.
pub fn start(mut plan: MountPlan) -> Result<()> {
    daemon::forbid_core_dumps();
    // The daemon has no terminal: ask for typed secrets now, before forking.
    plan.unlock.preread()?;
    if plan.foreground {
        daemon::init_logging(true, plan.opts.log.as_deref());
        return serve(plan, &mut Readiness::none());
    }
    match daemon::fork_background()
        .map_err(|e| Error::failure(format!("cannot start the daemon: {e}")))?
    {
        Forked::Parent(waiter) => waiter.wait().map_err(|failed| {
            let kind = ErrorKind::from_word(&failed.kind).unwrap_or(ErrorKind::Failure);
            let err = Error::new(kind, failed.message);
            match failed.hint {
                Some(h) => err.hint(h),
                None => err,
            }
        }),
        Forked::Child(mut ready) => {
            daemon::init_logging(false, plan.opts.log.as_deref());
            if let Err(e) = serve(plan, &mut ready) {
                tracing::error!("{e}");
                ready.fail(e.kind.as_str(), &e.message, e.hint.as_deref());
                std::process::exit(1);
            }
            std::process::exit(0);
        }
    }
}

/// An ephemeral filesystem starts empty with a new key at every mount. Only reached when the
/// trusted key source (pin or user) says ephemeral and the config agrees; it keeps its fs id,
/// so its pin stays valid.
fn rekey_ephemeral(plan: &MountPlan) -> Result<(FsConfig, KeyRing)> {
    let entries = std::fs::read_dir(&plan.backing)
        .map_err(|e| Error::backing(format!("cannot empty {}: {e}", plan.backing.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed
            .map_err(|e| Error::backing(format!("cannot empty {}: {e}", plan.backing.display())))?;
    }
    let mut config = FsConfig::new(KeySourceDescriptor::Ephemeral);
    config.fs_id = plan.config.fs_id;
    let master = crate::crypto::keys::MasterKey::random();
    let keys = KeyRing::new(&master, &config.fs_id_bytes());
    config::store(&plan.backing, &config, &keys, true)?;
    Ok((config, keys))
}

fn mount_error(e: std::io::Error, mountpoint: &Path) -> Error {
    let err = Error::mount(format!("cannot mount at {}: {e}", mountpoint.display()));
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            err.hint("FUSE is not available: load it with `modprobe fuse` (needs /dev/fuse)")
        }
        Some(libc::EPERM) | Some(libc::EACCES) => err.hint("mounting needs root (CAP_SYS_ADMIN)"),
        Some(libc::EBUSY) => err.hint("something is already mounted there"),
        _ => err,
    }
}

/// How many inode descriptors the daemon may keep: as asked (or the default), but no more than
/// half its open-file limit, which must also hold open files, FUSE channels and the log.
fn fd_bound(asked: Option<usize>, soft_limit: Option<u64>) -> usize {
    let wanted = asked.unwrap_or(crate::fs::inodes::DEFAULT_FD_BOUND);
    let room = soft_limit.map_or(wanted, |limit| {
        usize::try_from(limit / 2)
            .unwrap_or(usize::MAX)
            .max(crate::mountopts::MIN_FDS)
    });
    if wanted > room {
        tracing::warn!(
            asked = wanted,
            bound = room,
            "max-fds lowered to half the open-file limit"
        );
    }
    let bound = wanted.min(room);
    tracing::info!(bound, "inode descriptors kept open at most");
    bound
}

fn serve(plan: MountPlan, ready: &mut Readiness) -> Result<()> {
    daemon::harden_process();
    // Said in the daemon's own log, where an auditor of a FIPS deployment looks for it.
    if let Some(module) = super::require_fips_mode()? {
        tracing::info!(module = %module, "cryptography runs on the FIPS module");
    }
    let soft_limit = match daemon::raise_open_file_limit() {
        Ok((before, now)) => {
            tracing::info!(soft_before = before, soft_now = now, "open-file limit");
            Some(now)
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            None
        }
    };
    // The store is emptied only when the trusted source itself is ephemeral: a config edited
    // to say `ephemeral` meets a keyfile or KMS spec and fails to open, touching nothing.
    let (config, keys, key_source) = if plan.unlock.is_ephemeral() {
        let (config, keys) = rekey_ephemeral(&plan)?;
        (config, keys, "ephemeral")
    } else {
        let opened = plan.unlock.open(&plan.config, &plan.mac)?;
        let kind = plan
            .config
            .slot(opened.slot)
            .map_or("?", |s| s.source.kind());
        (plan.config.clone(), opened.keys, kind)
    };
    super::keys::record_pin(&plan.unlock.new_pin);
    let fs_id = config.fs_id.to_string();
    audit::unlocked(&fs_id, key_source);
    if matches!(plan.codec, Codec::PassthroughControl(_)) {
        tracing::warn!(fs_id = %fs_id, "{CONTROL_WARNING}");
    }

    let fs_opts = FsOptions {
        read_only: plan.opts.read_only,
        ttl: Duration::from_secs(1),
        writeback_cache: plan.opts.writeback,
        acl: !plan.opts.noacl,
        max_fds: fd_bound(plan.opts.max_fds, soft_limit),
        codec: plan.codec,
    };
    let fs = SecretFs::new(&plan.backing, config.root_dir_id()?, keys, fs_opts)
        .map_err(|e| Error::backing(format!("cannot open {}: {e}", plan.backing.display())))?;

    let signals = daemon::block_termination_signals();
    let how = KernelMount {
        read_only: plan.opts.read_only,
        allow_other: plan.opts.allow_other,
        suid: plan.opts.suid,
        dev: plan.opts.dev,
        noexec: plan.opts.noexec,
        noatime: plan.opts.noatime,
    };
    let device = kmount::mount(&plan.backing, &plan.mountpoint, &how)
        .map_err(|e| mount_error(e, &plan.mountpoint))?;
    let acl = if plan.opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    // The crypto threads that share large requests with the FUSE threads (one per core), named
    // for `top -H`. Only fails if the pool already exists; it then keeps rayon's default names.
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("secretfs-aes-{i}"))
        .build_global();
    let notifier = fs.notifier_slot();
    let session = match fuser::Session::from_fd(fs, device, acl, session_config(&plan)) {
        Ok(s) => s,
        Err(e) => {
            let _ = kmount::unmount(&plan.mountpoint, true);
            return Err(mount_error(e, &plan.mountpoint));
        }
    };
    let _ = notifier.set(session.notifier());
    // Best effort: a kernel or container without the bdi knob keeps the default readahead.
    if let Err(e) = kmount::set_readahead(&plan.mountpoint, 1024) {
        tracing::debug!("cannot raise the readahead: {e}");
    }
    let mountpoint = plan.mountpoint.clone();
    daemon::on_termination(signals, move || {
        if let Err(e) = kmount::unmount(&mountpoint, false) {
            tracing::error!("unmount on signal failed: {e}");
        }
    })
    .map_err(|e| Error::failure(format!("cannot start the signal thread: {e}")))?;

    let state = MountState {
        pid: std::process::id(),
        mode: "file".into(),
        backing: plan.backing.clone(),
        mountpoint: plan.mountpoint.clone(),
        fs_id: fs_id.clone(),
        key_source: key_source.into(),
        cipher: Some(plan.codec.cipher_name(&config.cipher).into()),
    };
    if let Err(e) = daemon::write_state(&state) {
        tracing::warn!("cannot record the mount in {}: {e}", daemon::STATE_DIR);
    }
    audit::mounted(
        &fs_id,
        &plan.backing.to_string_lossy(),
        &plan.mountpoint.to_string_lossy(),
    );
    ready.ok();
    if !plan.foreground {
        daemon::detach_stdio();
    }
    if let Err(e) = session.run() {
        tracing::error!("FUSE session ended with an error: {e}");
    }
    daemon::remove_state(&plan.mountpoint);
    audit::unmounted(&fs_id, &plan.mountpoint.to_string_lossy());
    Ok(())
}

/// Threads: one per core by default, each with its own cloned /dev/fuse descriptor.
fn session_config(plan: &MountPlan) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.n_threads = Some(
        plan.opts
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    );
    config.clone_fd = true;
    config
}

/// mount(8)'s `-f`: everything but the mount — options, paths and (if present) the config are
/// checked.
pub fn dry_run(source: &Path, dir: &Path, opts: &MountOptions) -> Result<()> {
    super::existing_dir(dir, "mount point", ErrorKind::Mount)?;
    if opts.mode == crate::mountopts::Mode::Block {
        // No config to read: the device describes itself once it is opened.
        crate::block::preflight()?;
        return Ok(());
    }
    if crate::store::config::config_path(source).exists() || !opts.init_auto {
        crate::store::config::load(source)?;
    }
    Ok(())
}

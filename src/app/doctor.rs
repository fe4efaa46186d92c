//! `secretfs doctor`: whether this host has what a mount needs (FUSE, device-mapper and
//! cryptsetup, the helpers, the fstab lines, the pins, AWS credentials, keys, objects and clock,
//! the IMDSv2 hop limit in a container), as typed checks each with a status, a message and a fix.
//!
//! Every check only reads: the fstab lines go through the helper's own option parser and its
//! `-f` dry run, and the network checks are dry (KMS DescribeKey, S3 HeadObject, never Decrypt),
//! each bounded by the request's timeout.

mod aws;

use crate::keysource::aws::Placement;
use crate::keysource::kms::arn_region;
use crate::mountopts::{Mode, MountOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth fixing, but no mount this host is configured for fails because of it.
    Warn,
    /// A mount this host is configured for (or any mount at all) cannot work until it is fixed.
    Fail,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked: `fuse`, `helper mount.secretfs`, `fstab line 3`, `kms alias/x`, …
    pub name: String,
    pub status: Status,
    pub message: String,
    /// What to do about a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn bad(
        status: Status,
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn warn(name: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::bad(Status::Warn, name, message, fix)
    }

    fn fail(name: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::bad(Status::Fail, name, message, fix)
    }
}

/// Where doctor looks; the defaults are the real host's, tests point them at temporary files.
#[derive(Debug, Clone)]
pub struct DoctorRequest {
    pub fstab: PathBuf,
    pub pins: PathBuf,
    /// Where mount(8) looks for helpers (it never searches PATH).
    pub sbin: PathBuf,
    /// The bound on each network check.
    pub timeout: Duration,
}

impl Default for DoctorRequest {
    fn default() -> Self {
        Self {
            fstab: PathBuf::from("/etc/fstab"),
            pins: PathBuf::from(crate::keysource::pins::PIN_DIR),
            sbin: PathBuf::from("/sbin"),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// No check failed (warnings allowed).
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// A KMS key or an S3 object some fstab line or pin depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    what: TargetKind,
    /// The region the line names (`region=`), else the one in a key ARN.
    region: Option<String>,
    /// A pinned slot's own region and endpoint (they win over the host's, as at mount).
    placement: Placement,
    /// Who named it: `fstab line 3`, `pin <fs id> slot 2`.
    origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetKind {
    Kms(String),
    S3(String),
}

impl Target {
    fn add(targets: &mut Vec<Target>, what: TargetKind, region: Option<String>, origin: &str) {
        Self::add_placed(targets, what, region, Placement::default(), origin);
    }

    fn add_placed(
        targets: &mut Vec<Target>,
        what: TargetKind,
        region: Option<String>,
        placement: Placement,
        origin: &str,
    ) {
        let region = region.or_else(|| match &what {
            TargetKind::Kms(key) => arn_region(key).map(str::to_string),
            TargetKind::S3(_) => None,
        });
        match targets
            .iter_mut()
            .find(|t| t.what == what && t.placement == placement)
        {
            Some(t) => t.origins.push(origin.to_string()),
            None => targets.push(Target {
                what,
                region,
                placement,
                origins: vec![origin.to_string()],
            }),
        }
    }
}

/// The pinned key source, or every pinned slot.
fn describe_pin(pin: &crate::keysource::pins::Pin) -> String {
    if pin.slots.is_empty() {
        return super::status::describe_key(&pin.key_source);
    }
    pin.slots()
        .iter()
        .map(|s| format!("slot {}: {}", s.id, super::status::describe_key(&s.source)))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn run(req: &DoctorRequest) -> Report {
    let mut checks = vec![privileges(), fuse()];
    let (fstab_checks, parsed) = fstab(&req.fstab);
    let block_used = parsed.iter().any(|(_, o)| o.mode == Mode::Block);
    checks.extend(block_mode(block_used));
    checks.extend(helpers(&req.sbin, block_used));
    checks.extend(fstab_checks);
    let mut targets = Vec::new();
    for (origin, opts) in &parsed {
        if let Some(k) = &opts.kms_key {
            Target::add(
                &mut targets,
                TargetKind::Kms(k.clone()),
                opts.region.clone(),
                origin,
            );
        }
        if let Some(u) = &opts.wrapped_key {
            Target::add(
                &mut targets,
                TargetKind::S3(u.clone()),
                opts.region.clone(),
                origin,
            );
        }
    }
    checks.extend(pins(&req.pins, &mut targets));
    let aws_needed = !targets.is_empty()
        || parsed
            .iter()
            .any(|(_, o)| matches!(o.key.as_deref(), Some("kms" | "kms-password")));
    let (credentials, source) = aws::credentials(req.timeout, aws_needed);
    checks.push(credentials);
    checks.extend(aws::targets(&targets, req.timeout));
    checks.push(aws::hop_limit(source, req.timeout));
    Report {
        ok: checks.iter().all(|c| c.status != Status::Fail),
        checks,
    }
}

/// Mounting, block devices and pins are root's business; as a user most checks say less.
fn privileges() -> Check {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Check::ok("privileges", "running as root")
    } else {
        Check::warn(
            "privileges",
            "not running as root: mounts need root, and some checks below may fail only for this user",
            "run `sudo secretfs doctor` to check as the mount will run",
        )
    }
}

/// /dev/fuse present and openable, and the kernel's FUSE. The FUSE protocol version is agreed
/// in the INIT exchange of a mount and the kernel publishes it nowhere else (neither /sys nor
/// /proc), so only the kernel release is shown.
fn fuse() -> Check {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let registered = std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("fuse"))
        })
        .unwrap_or(false);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Check::ok(
            "fuse",
            format!("/dev/fuse opens read-write; kernel {kernel} (its FUSE protocol version is agreed at mount)"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::fail(
            "fuse",
            format!(
                "/dev/fuse is missing (kernel {kernel}, fuse {})",
                if registered { "registered" } else { "not loaded" }
            ),
            "modprobe fuse; in a container, pass the device: --device /dev/fuse",
        ),
        Err(e) => Check::fail(
            "fuse",
            format!("/dev/fuse cannot be opened: {e}"),
            "run as root; in a container, allow the device (--device /dev/fuse --cap-add SYS_ADMIN)",
        ),
    }
}

/// device-mapper and cryptsetup: failures when an fstab line uses block mode, else warnings.
fn block_mode(used: bool) -> Vec<Check> {
    let status = if used { Status::Fail } else { Status::Warn };
    let why = if used {
        ""
    } else {
        " (only block mode needs it, and no fstab line uses mode=block)"
    };
    // /proc/misc, not /dev/mapper/control: lvm2 and dmsetup create that node even on kernels
    // without device-mapper.
    let dm = std::fs::read_to_string("/proc/misc")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        })
        .unwrap_or(false);
    let mut out = vec![if dm {
        Check::ok("device-mapper", "the kernel has device-mapper (/proc/misc)")
    } else {
        Check::bad(
            status,
            "device-mapper",
            format!("the kernel has no device-mapper (no `device-mapper` line in /proc/misc){why}"),
            "modprobe dm_crypt, or use a kernel with CONFIG_BLK_DEV_DM and CONFIG_DM_CRYPT",
        )
    }];
    out.push(match crate::block::tool("cryptsetup") {
        Some(p) => Check::ok("cryptsetup", format!("{}", p.display())),
        None => Check::bad(
            status,
            "cryptsetup",
            format!("cryptsetup is not installed{why}"),
            "apt-get install cryptsetup-bin (dnf install cryptsetup)",
        ),
    });
    out
}

/// The links scripts/install.sh makes: mount(8) runs `mount.secretfs`; umount(8) runs
/// `umount.fuse.secretfs` (file mode, to wait for the daemon) and `umount.secretfs` (block mode,
/// to close the volume).
fn helpers(sbin: &Path, block_used: bool) -> Vec<Check> {
    [
        (
            "mount.secretfs",
            Status::Fail,
            "mount(8) cannot mount type secretfs",
        ),
        (
            "umount.fuse.secretfs",
            Status::Warn,
            "umount(8) will not wait for the daemon to write everything back",
        ),
        (
            "umount.secretfs",
            if block_used {
                Status::Fail
            } else {
                Status::Warn
            },
            "umount(8) will leave block volumes open",
        ),
    ]
    .into_iter()
    .map(|(name, missing, consequence)| {
        let path = sbin.join(name);
        let check = format!("helper {name}");
        let fix = format!(
            "bash scripts/install.sh, or: ln -sf \"$(command -v secretfs)\" {}",
            path.display()
        );
        if std::fs::symlink_metadata(&path).is_err() {
            return Check::bad(
                missing,
                check,
                format!("{} is missing: {consequence}", path.display()),
                fix,
            );
        }
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&path) {
            Err(e) => Check::bad(
                missing,
                check,
                format!("{} is a dangling link ({e}): {consequence}", path.display()),
                fix,
            ),
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Check::bad(
                missing,
                check,
                format!(
                    "{} is not an executable file: {consequence}",
                    path.display()
                ),
                fix,
            ),
            Ok(_) => {
                let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                Check::ok(check, format!("{} -> {}", path.display(), target.display()))
            }
        }
    })
    .collect()
}

/// One line of fstab whose type is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FstabLine {
    number: usize,
    source: PathBuf,
    dir: PathBuf,
    fstype: String,
    options: String,
}

/// The lines of type secretfs (and the mistaken fuse.secretfs), with their 1-based numbers.
fn fstab_lines(text: &str) -> Vec<FstabLine> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let fstype = *f.get(2)?;
            (fstype == "secretfs" || fstype == crate::mounts::FUSE_TYPE).then(|| FstabLine {
                number: i + 1,
                source: PathBuf::from(crate::mounts::unescape(f[0])),
                dir: PathBuf::from(crate::mounts::unescape(f[1])),
                fstype: fstype.to_string(),
                options: f.get(3).copied().unwrap_or("defaults").to_string(),
            })
        })
        .collect()
}

/// Each secretfs line through the helper's parser and its `mount -f` dry run; returns the
/// parsed options of the lines that parse, by origin.
fn fstab(path: &Path) -> (Vec<Check>, Vec<(String, MountOptions)>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return (
                vec![Check::warn(
                    "fstab",
                    format!("cannot read {}: {e}", path.display()),
                    "nothing to check without it; mount by hand with `secretfs mount`",
                )],
                Vec::new(),
            )
        }
    };
    let lines = fstab_lines(&text);
    if lines.is_empty() {
        return (
            vec![Check::ok(
                "fstab",
                format!("{} has no secretfs line", path.display()),
            )],
            Vec::new(),
        );
    }
    let mut checks = Vec::new();
    let mut parsed = Vec::new();
    for l in lines {
        let name = format!("fstab line {}", l.number);
        let what = format!("{} on {}", l.source.display(), l.dir.display());
        if l.fstype != "secretfs" {
            checks.push(Check::fail(
                name,
                format!(
                    "{what}: type {} makes mount(8) run mount.fuse, not mount.secretfs",
                    l.fstype
                ),
                "write the type as `secretfs`",
            ));
            continue;
        }
        let opts = match MountOptions::parse([l.options.as_str()]) {
            Ok(o) => o,
            Err(e) => {
                checks.push(Check::fail(
                    name,
                    format!("{what}: {e}"),
                    "correct the options (secretfs-fstab(5) lists them)",
                ));
                continue;
            }
        };
        checks.push(match super::mount::dry_run(&l.source, &l.dir, &opts) {
            Ok(()) => Check::ok(
                name.clone(),
                format!(
                    "{what}: {} mode, key {}",
                    if opts.mode == Mode::Block {
                        "block"
                    } else {
                        "file"
                    },
                    opts.key.as_deref().unwrap_or("as pinned")
                ),
            ),
            Err(e) => Check::fail(
                name.clone(),
                format!("{what}: {}", e.message),
                e.hint
                    .unwrap_or_else(|| "see the message; `mount -fv DIR` checks the same".into()),
            ),
        });
        parsed.push((name, opts));
    }
    (checks, parsed)
}

/// Every pin in `dir`, read as a mount reads it (ownership and form checked); the KMS keys and
/// S3 objects they name join `targets`.
fn pins(dir: &Path, targets: &mut Vec<Target>) -> Vec<Check> {
    use crate::store::config::KeySourceDescriptor as K;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::ok(
                "pins",
                format!(
                    "{} does not exist yet (no filesystem pinned)",
                    dir.display()
                ),
            )]
        }
        Err(e) => {
            return vec![Check::fail(
                "pins",
                format!("cannot read {}: {e}", dir.display()),
                "run as root",
            )]
        }
    };
    let mut ids: Vec<uuid::Uuid> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    ids.sort();
    if ids.is_empty() {
        return vec![Check::ok("pins", format!("no pins in {}", dir.display()))];
    }
    ids.into_iter()
        .map(|id| {
            let name = format!("pin {id}");
            match crate::keysource::pins::load(dir, &id) {
                Ok(Some(pin)) => {
                    // Every pinned slot, in its own region and endpoint, as a mount reaches it.
                    for slot in pin.slots() {
                        let origin = format!("{name} slot {}", slot.id);
                        let placement = Placement {
                            region: slot.region.clone(),
                            endpoint: slot.endpoint.clone(),
                            slot: Some(slot.id),
                        };
                        let place = |targets: &mut Vec<Target>, what| {
                            Target::add_placed(targets, what, None, placement.clone(), &origin)
                        };
                        match &slot.source {
                            K::Kms {
                                key_id,
                                key_arn,
                                s3_uri,
                                ..
                            } => {
                                let key = key_arn.clone().unwrap_or_else(|| key_id.clone());
                                place(targets, TargetKind::Kms(key));
                                if let Some(u) = s3_uri {
                                    place(targets, TargetKind::S3(u.clone()));
                                }
                            }
                            K::KmsPassword {
                                s3_uri, key_arn, ..
                            } => {
                                if let Some(k) = key_arn {
                                    place(targets, TargetKind::Kms(k.clone()));
                                }
                                place(targets, TargetKind::S3(s3_uri.clone()));
                            }
                            _ => {}
                        }
                    }
                    Check::ok(
                        name,
                        format!(
                            "{}: key source {}",
                            pin.backing.display(),
                            describe_pin(&pin)
                        ),
                    )
                }
                Ok(None) => Check::warn(
                    name,
                    "the pin vanished while it was read",
                    "run doctor again",
                ),
                Err(e) => Check::fail(
                    name,
                    e.to_string(),
                    "a mount refuses this pin: remove it and pin again with `secretfs pin`",
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_lines_of_ours_with_numbers_and_escapes() {
        let text = "# comment secretfs\n\
                    UUID=1 / ext4 defaults 0 1\n\
                    \n\
                    /var/lib/s /mnt/with\\040space secretfs key=kms,kms-key=alias/a 0 0\n\
                    /b /m fuse.secretfs defaults\n\
                    /c /n secretfs\n";
        let lines = fstab_lines(text);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0].number, 4);
        assert_eq!(lines[0].dir, PathBuf::from("/mnt/with space"));
        assert_eq!(lines[0].options, "key=kms,kms-key=alias/a");
        assert_eq!(lines[1].fstype, "fuse.secretfs");
        assert_eq!(
            (lines[2].number, lines[2].options.as_str()),
            (6, "defaults")
        );
    }

    #[test]
    fn targets_merge_and_take_the_region_of_an_arn() {
        let mut t = Vec::new();
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/abcd";
        Target::add(&mut t, TargetKind::Kms(arn.into()), None, "fstab line 1");
        Target::add(&mut t, TargetKind::Kms(arn.into()), None, "pin x");
        Target::add(&mut t, TargetKind::S3("s3://b/k".into()), None, "pin x");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].region.as_deref(), Some("eu-west-1"));
        assert_eq!(t[0].origins, ["fstab line 1", "pin x"]);
        assert_eq!(arn_region("alias/x"), None);
    }
}

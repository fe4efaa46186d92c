//! `-o` / fstab option parsing, shared by `secretfs mount` and `mount.secretfs`: turns the
//! comma-separated text into a typed `MountOptions`, rejecting anything unknown with the valid list.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    /// FUSE mounts are nosuid and nodev unless `suid` / `dev` is given.
    pub suid: bool,
    pub dev: bool,
    pub noexec: bool,
    pub noatime: bool,
    /// `key=…`: a key source spec (keyfile:PATH, passphrase, ephemeral).
    pub key: Option<String>,
    pub threads: Option<usize>,
    /// `max-fds=`: how many backing descriptors of inodes the daemon keeps open at most.
    pub max_fds: Option<usize>,
    pub writeback: bool,
    /// `noacl`: POSIX ACLs refused instead of stored and enforced.
    pub noacl: bool,
    /// Where the daemon writes its log (default: syslog when in the background).
    pub log: Option<PathBuf>,
    /// `mode=file|block`.
    pub mode: Mode,
    /// `init=auto`: create the filesystem when the backing store is empty (fresh instance store).
    pub init_auto: bool,
    /// `kms-key=`, `wrapped-key=`, `kms-context=` (or `context=` outside fstab), `aws-timeout=`:
    /// as the CLI flags of the same names.
    pub kms_key: Option<String>,
    pub wrapped_key: Option<String>,
    pub context: Option<String>,
    pub aws_timeout: Option<u64>,
    /// `region=`: the AWS region, when neither the key ARN nor the environment names it.
    pub region: Option<String>,
    /// `slot=N`: open with this key slot only.
    pub slot: Option<u32>,
    /// `slot-timeout=SECS`: how long one slot may take before the next is tried.
    pub slot_timeout: Option<u64>,
    /// Options for mount(8)/systemd that the daemon itself has no use for.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    File,
    Block,
}

/// Options with a value, then flags: the list printed when an option is unknown.
pub const VALID: &[&str] = &[
    "key=",
    "mode=file|block",
    "init=auto|never",
    "kms-key=",
    "wrapped-key=",
    "kms-context=",
    "context=",
    "region=",
    "aws-timeout=",
    "slot=",
    "slot-timeout=",
    "threads=",
    "max-fds=",
    "log=",
    "ro",
    "rw",
    "allow_other",
    "writeback",
    "acl",
    "noacl",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "noatime",
    "atime",
    "relatime",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "default_permissions",
    "x-systemd.*",
    "x-*",
];

/// What each entry of `VALID` does, for the fstab manual page (secretfs-fstab(5)); a unit test
/// holds every entry of `VALID` to a description and to the parser accepting it.
pub fn describe(option: &str) -> Option<&'static str> {
    Some(match option {
        "key=" => "The key source: keyfile:PATH, passphrase, ephemeral, kms or kms-password. Without it the source this host pinned for the filesystem is used.",
        "mode=file|block" => "file (default): the FUSE filesystem on a backing directory. block: dm-crypt/LUKS2 on a device or a file, with ext4 inside.",
        "init=auto|never" => "auto: create the filesystem when the backing directory is missing or empty (a fresh instance-store disk). never (default): refuse to mount an uninitialised store.",
        "kms-key=" => "The KMS key (key id, alias/NAME or ARN) that wraps the master key of a kms filesystem.",
        "wrapped-key=" => "The S3 object (s3://BUCKET/KEY) that holds the wrapped master key.",
        "kms-context=" => "Extra KMS encryption-context pairs, written k=v;k2=v2 because a comma separates options.",
        "context=" => "As kms-context=, for secretfs mount -o only: mount(8) keeps context= for SELinux and never passes it to the helper.",
        "region=" => "The AWS region, when neither the key ARN nor the environment names it.",
        "aws-timeout=" => "One deadline in seconds for every AWS call of the mount, retries included (default 60).",
        "slot=" => "Open with this key slot only (see secretfs key list); otherwise every slot this host pinned is tried in order.",
        "slot-timeout=" => "Seconds one key slot that calls AWS may take before the next is tried (default 15); the last such slot gets what is left of aws-timeout.",
        "threads=" => "FUSE worker threads, 1 to 64.",
        "max-fds=" => "How many backing descriptors the daemon keeps open at most (default 512).",
        "log=" => "The daemon's log file (default: syslog).",
        "ro" => "Mount read-only.",
        "rw" => "Mount read-write (default).",
        "allow_other" => "Let users other than the one who mounted reach the filesystem.",
        "writeback" => "Use the kernel's writeback cache.",
        "acl" => "Store and enforce POSIX ACLs (default).",
        "noacl" => "Refuse POSIX ACLs.",
        "nosuid" => "Ignore setuid and setgid bits (default).",
        "suid" => "Honour setuid and setgid bits.",
        "nodev" => "Refuse device nodes (default).",
        "dev" => "Allow device nodes.",
        "noexec" => "Refuse to execute programs.",
        "exec" => "Allow programs to be executed (default).",
        "noatime" => "Do not update access times.",
        "atime" => "Update access times (default).",
        "relatime" => "Accepted as atime.",
        "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "default_permissions" => {
            "For mount(8) and systemd; accepted and ignored by secretfs."
        }
        "x-systemd.*" => "systemd's mount options (ordering, timeouts); accepted and ignored by secretfs.",
        "x-*" => "Any other x- option is for other tools; accepted and ignored.",
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("unknown mount option `{0}`; valid options: {valid}", valid = VALID.join(", "))]
    Unknown(String),
    #[error("mount option `{0}` needs a value (`{0}=…`)")]
    MissingValue(String),
    #[error("mount option `{name}` has an invalid value `{value}`: {why}")]
    BadValue {
        name: String,
        value: String,
        why: String,
    },
    #[error("mount option `{0}` is refused: a user mount would let any local user unlock the key")]
    Refused(String),
}

impl MountOptions {
    /// Parses one or more comma-separated option strings (later options win).
    pub fn parse<'a>(groups: impl IntoIterator<Item = &'a str>) -> Result<Self, OptionError> {
        Self::parse_with(groups, false)
    }

    /// mount(8)'s `-s`: unknown options are dropped (and listed in `ignored`) instead of refused.
    pub fn parse_sloppy<'a>(
        groups: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, OptionError> {
        Self::parse_with(groups, true)
    }

    /// The extra KMS context pairs, written `k=v;k2=v2` in fstab (a comma separates options).
    pub fn context_pairs(&self) -> Option<String> {
        self.context.as_ref().map(|c| c.replace(';', ","))
    }

    fn parse_with<'a>(
        groups: impl IntoIterator<Item = &'a str>,
        sloppy: bool,
    ) -> Result<Self, OptionError> {
        let mut o = MountOptions::default();
        for opt in groups
            .into_iter()
            .flat_map(|g| g.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (opt, None),
            };
            match name {
                "key" => o.key = Some(need(name, value)?.to_string()),
                "threads" => o.threads = Some(number(name, need(name, value)?, 1, 64)?),
                "max-fds" => o.max_fds = Some(number(name, need(name, value)?, MIN_FDS, MAX_FDS)?),
                "log" => o.log = Some(PathBuf::from(need(name, value)?)),
                "mode" => {
                    o.mode = match need(name, value)? {
                        "file" => Mode::File,
                        "block" => Mode::Block,
                        v => {
                            return Err(OptionError::BadValue {
                                name: name.into(),
                                value: v.into(),
                                why: "must be file or block".into(),
                            })
                        }
                    }
                }
                "init" => {
                    o.init_auto = match need(name, value)? {
                        "auto" => true,
                        "never" => false,
                        v => {
                            return Err(OptionError::BadValue {
                                name: name.into(),
                                value: v.into(),
                                why: "must be auto or never".into(),
                            })
                        }
                    }
                }
                "kms-key" => o.kms_key = Some(need(name, value)?.to_string()),
                "wrapped-key" => o.wrapped_key = Some(need(name, value)?.to_string()),
                // `kms-context=` in fstab: mount(8) takes `context=` for SELinux and never
                // hands it to the helper; `context=` still works with `secretfs mount -o`.
                "kms-context" | "context" => o.context = Some(need(name, value)?.to_string()),
                "region" => o.region = Some(need(name, value)?.to_string()),
                "aws-timeout" => {
                    o.aws_timeout = Some(seconds(name, need(name, value)?)?);
                }
                "slot" => {
                    let v = need(name, value)?;
                    let id: u32 = v
                        .parse()
                        .ok()
                        .filter(|id| *id <= crate::store::config::MAX_SLOT_ID)
                        .ok_or_else(|| OptionError::BadValue {
                            name: name.into(),
                            value: v.into(),
                            why: format!(
                                "must be a slot number, 0 to {}",
                                crate::store::config::MAX_SLOT_ID
                            ),
                        })?;
                    o.slot = Some(id);
                }
                "slot-timeout" => {
                    o.slot_timeout = Some(seconds(name, need(name, value)?)?);
                }
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "allow_other" => o.allow_other = true,
                "writeback" => o.writeback = true,
                "acl" => o.noacl = false,
                "noacl" => o.noacl = true,
                "nosuid" => o.suid = false,
                "suid" => o.suid = true,
                "nodev" => o.dev = false,
                "dev" => o.dev = true,
                "noexec" => o.noexec = true,
                "exec" => o.noexec = false,
                "noatime" => o.noatime = true,
                "atime" | "relatime" => o.noatime = false,
                "user" | "users" | "owner" | "group" => {
                    return Err(OptionError::Refused(name.to_string()))
                }
                "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "default_permissions" => {
                    o.ignored.push(opt.to_string())
                }
                n if n.starts_with("x-") || n == "comment" => o.ignored.push(opt.to_string()),
                _ if sloppy => o.ignored.push(opt.to_string()),
                _ => return Err(OptionError::Unknown(opt.to_string())),
            }
            if value.is_some()
                && matches!(
                    name,
                    "ro" | "rw"
                        | "allow_other"
                        | "writeback"
                        | "acl"
                        | "noacl"
                        | "nosuid"
                        | "nodev"
                        | "noexec"
                )
            {
                return Err(OptionError::BadValue {
                    name: name.into(),
                    value: value.unwrap_or("").into(),
                    why: "takes no value".into(),
                });
            }
        }
        Ok(o)
    }
}

/// The range `max-fds=` accepts: a handful keeps a deep path workable, a million is the
/// kernel's usual cap on one process's descriptors.
pub const MIN_FDS: usize = 16;
pub const MAX_FDS: usize = 1 << 20;

/// A decimal option value within `min..=max`.
fn number(name: &str, v: &str, min: usize, max: usize) -> Result<usize, OptionError> {
    let bad = |why: String| OptionError::BadValue {
        name: name.into(),
        value: v.into(),
        why,
    };
    let n: usize = v.parse().map_err(|_| bad("not a number".into()))?;
    if !(min..=max).contains(&n) {
        return Err(bad(format!("must be {min} to {max}")));
    }
    Ok(n)
}

fn need<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, OptionError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OptionError::MissingValue(name.to_string()))
}

/// A positive number of seconds (`aws-timeout=`, `slot-timeout=`).
fn seconds(name: &str, v: &str) -> Result<u64, OptionError> {
    v.parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| OptionError::BadValue {
            name: name.into(),
            value: v.into(),
            why: "must be a number of seconds, at least 1".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_options_take_a_slot_number_and_seconds() {
        let o = MountOptions::parse(["slot=3,slot-timeout=7"]).unwrap();
        assert_eq!((o.slot, o.slot_timeout), (Some(3), Some(7)));
        for bad in [
            "slot=x",
            "slot=1000",
            "slot=-1",
            "slot-timeout=0",
            "slot-timeout=",
            "slot",
        ] {
            assert!(MountOptions::parse([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_usual_fstab_line() {
        let o = MountOptions::parse(["key=keyfile:/etc/k,ro,_netdev,nofail,x-systemd.requires=network-online.target,allow_other"]).unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.key.as_deref(), Some("keyfile:/etc/k"));
        assert_eq!(o.ignored.len(), 3);
    }

    #[test]
    fn fstab_options_for_kms_and_first_boot() {
        let o = MountOptions::parse(["key=kms,kms-key=alias/sfs,wrapped-key=s3://b/k,context=app=web;env=prod,region=eu-west-1,init=auto,mode=file,aws-timeout=90"]).unwrap();
        assert_eq!(o.kms_key.as_deref(), Some("alias/sfs"));
        assert_eq!(o.wrapped_key.as_deref(), Some("s3://b/k"));
        assert_eq!(o.context_pairs().as_deref(), Some("app=web,env=prod"));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            (o.init_auto, o.mode, o.aws_timeout),
            (true, Mode::File, Some(90))
        );
        assert!(matches!(
            MountOptions::parse(["mode=disk"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(["init=maybe"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(["aws-timeout=0"]),
            Err(OptionError::BadValue { .. })
        ));
        let sloppy = MountOptions::parse_sloppy(["ro,whatever"]).unwrap();
        assert!(sloppy.read_only && sloppy.ignored == ["whatever"]);
    }

    #[test]
    fn later_options_win_and_groups_merge() {
        let o = MountOptions::parse(["ro", "rw,threads=4"]).unwrap();
        assert!(!o.read_only);
        assert_eq!(o.threads, Some(4));
        assert!(!MountOptions::parse(["acl"]).unwrap().noacl);
        assert!(MountOptions::parse(["acl,noacl"]).unwrap().noacl);
        assert!(!MountOptions::parse(["noacl", "acl"]).unwrap().noacl);
        assert!(MountOptions::parse(["noacl=1"]).is_err());
    }

    #[test]
    fn bad_options_are_clear_errors() {
        let e = MountOptions::parse(["bogus"]).unwrap_err();
        assert!(e.to_string().contains("valid options: key="), "{e}");
        assert_eq!(
            MountOptions::parse(["key="]).unwrap_err(),
            OptionError::MissingValue("key".into())
        );
        assert!(matches!(
            MountOptions::parse(["threads=0"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(["threads=x"]),
            Err(OptionError::BadValue { .. })
        ));
        assert_eq!(
            MountOptions::parse(["max-fds=64"]).unwrap().max_fds,
            Some(64)
        );
        for bad in ["max-fds=8", "max-fds=2000000", "max-fds=lots", "max-fds="] {
            assert!(MountOptions::parse([bad]).is_err(), "{bad}");
        }
        assert!(matches!(
            MountOptions::parse(["users"]),
            Err(OptionError::Refused(_))
        ));
        assert!(matches!(
            MountOptions::parse(["ro=1"]),
            Err(OptionError::BadValue { .. })
        ));
    }

    #[test]
    fn every_listed_option_is_described_and_parsed() {
        for entry in VALID {
            assert!(describe(entry).is_some(), "{entry} has no description");
            // The listed form with a sample value: `key=` → `key=x`, `mode=file|block` →
            // `mode=file`, `x-systemd.*` → `x-systemd.a`.
            let sample = match entry.split_once('=') {
                Some((name, ""))
                    if ["aws-timeout", "threads", "slot", "slot-timeout"].contains(&name) =>
                {
                    format!("{name}=4")
                }
                Some((name, "")) if name == "max-fds" => format!("{name}=64"),
                Some((name, "")) => format!("{name}=x"),
                Some((name, choices)) => format!("{name}={}", choices.split('|').next().unwrap()),
                None => entry.replace('*', "a"),
            };
            assert!(
                MountOptions::parse([sample.as_str()]).is_ok(),
                "the parser refuses the listed option {sample}"
            );
        }
        assert!(describe("colour=").is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = MountOptions::parse([s.as_str()]);
        }
    }
}

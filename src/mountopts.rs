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
    pub writeback: bool,
    /// Where the daemon writes its log (default: syslog when in the background).
    pub log: Option<PathBuf>,
    /// Options for mount(8)/systemd that the daemon itself has no use for.
    pub ignored: Vec<String>,
}

/// Options with a value, then flags: the list printed when an option is unknown.
pub const VALID: &[&str] = &[
    "key=",
    "threads=",
    "log=",
    "ro",
    "rw",
    "allow_other",
    "writeback",
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
                "threads" => {
                    let v = need(name, value)?;
                    let n: usize = v.parse().map_err(|_| OptionError::BadValue {
                        name: name.into(),
                        value: v.into(),
                        why: "not a number".into(),
                    })?;
                    if !(1..=64).contains(&n) {
                        return Err(OptionError::BadValue {
                            name: name.into(),
                            value: v.into(),
                            why: "must be 1 to 64".into(),
                        });
                    }
                    o.threads = Some(n);
                }
                "log" => o.log = Some(PathBuf::from(need(name, value)?)),
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "allow_other" => o.allow_other = true,
                "writeback" => o.writeback = true,
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
                n if n.starts_with("x-") || n.starts_with("comment=") => {
                    o.ignored.push(opt.to_string())
                }
                _ => return Err(OptionError::Unknown(opt.to_string())),
            }
            if value.is_some()
                && matches!(
                    name,
                    "ro" | "rw" | "allow_other" | "writeback" | "nosuid" | "nodev" | "noexec"
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

fn need<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, OptionError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OptionError::MissingValue(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_fstab_line() {
        let o = MountOptions::parse(["key=keyfile:/etc/k,ro,_netdev,nofail,x-systemd.requires=network-online.target,allow_other"]).unwrap();
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.key.as_deref(), Some("keyfile:/etc/k"));
        assert_eq!(o.ignored.len(), 3);
    }

    #[test]
    fn later_options_win_and_groups_merge() {
        let o = MountOptions::parse(["ro", "rw,threads=4"]).unwrap();
        assert!(!o.read_only);
        assert_eq!(o.threads, Some(4));
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
        assert!(matches!(
            MountOptions::parse(["users"]),
            Err(OptionError::Refused(_))
        ));
        assert!(matches!(
            MountOptions::parse(["ro=1"]),
            Err(OptionError::BadValue { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = MountOptions::parse([s.as_str()]);
        }
    }
}

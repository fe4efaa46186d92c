//! The mount(8)/umount(8) helper protocol: `mount.secretfs SOURCE DIR [-sfnv] [-o OPTIONS]` and
//! `umount.fuse.secretfs DIR [-flnrv]`, mapped onto the same plan/start code as `secretfs mount`.

use super::CliError;
use crate::app::{self, mount, KeyChoice};
use crate::mountopts::MountOptions;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// mount(8)'s helper exit codes.
const EX_USAGE: i32 = 1;
const EX_FAIL: i32 = 32;

/// The name a helper was invoked as decides what it does.
pub fn invoked_as_helper(argv0: &Path) -> Option<&'static str> {
    let name = argv0.file_name()?.to_str()?;
    if name.starts_with("mount.") {
        Some("mount")
    } else if name.starts_with("umount.") {
        Some("umount")
    } else {
        None
    }
}

/// Runs the helper role named by argv[0] (or `default` when the name names none) and returns its
/// exit code; `None` means this is the ordinary `secretfs` command.
pub fn run_from_argv(default: Option<&'static str>) -> Option<i32> {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next().unwrap_or_default());
    let role = invoked_as_helper(&argv0).or(default)?;
    let program = argv0.file_name().map_or_else(
        || format!("{role}.secretfs"),
        |n| n.to_string_lossy().into_owned(),
    );
    Some(if role == "mount" {
        mount_main(&program, args)
    } else {
        umount_main(&program, args)
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct HelperArgs {
    positional: Vec<PathBuf>,
    options: Vec<String>,
    fake: bool,
    verbose: bool,
    sloppy: bool,
    lazy: bool,
}

/// mount(8) passes flags in any order and may group them (`-nv`); `-o` and `-t` take a value,
/// either joined (`-oro`) or as the next argument.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<HelperArgs, String> {
    let mut out = HelperArgs::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str().filter(|t| t.starts_with('-') && t.len() > 1) else {
            out.positional.push(PathBuf::from(arg));
            continue;
        };
        let flags: Vec<char> = text[1..].chars().collect();
        for (i, flag) in flags.iter().enumerate() {
            match flag {
                'o' | 't' | 'N' => {
                    let rest: String = flags[i + 1..].iter().collect();
                    let value = if rest.is_empty() {
                        args.next()
                            .and_then(|v| v.into_string().ok())
                            .ok_or(format!("-{flag} needs a value"))?
                    } else {
                        rest
                    };
                    if *flag == 'o' {
                        out.options.push(value);
                    }
                    break;
                }
                'f' => out.fake = true,
                'v' => out.verbose = true,
                's' => out.sloppy = true,
                'l' => out.lazy = true,
                'n' | 'r' | 'd' | 'i' => {}
                other => return Err(format!("unknown flag -{other}")),
            }
        }
    }
    Ok(out)
}

/// The helper's command line as clap would describe it, for mount.secretfs(8) only: the parsing
/// is `parse_args` above (mount(8)'s grouped flags are not clap's), so keep the two together.
pub fn man_command() -> clap::Command {
    use clap::{Arg, ArgAction};
    let flag = |id: &'static str, help: &'static str| {
        Arg::new(id)
            .short(id.chars().next().unwrap_or('?'))
            .action(ArgAction::SetTrue)
            .help(help)
    };
    clap::Command::new("mount.secretfs")
        .about("mount(8) helper for secretfs (also umount.fuse.secretfs and umount.secretfs)")
        .long_about(
            "mount(8) runs mount.secretfs SOURCE DIR for fstab lines and `mount -t secretfs`; it mounts as `secretfs mount` does (file mode) or opens a dm-crypt volume (mode=block), and returns once the mount is usable. umount(8) runs umount.fuse.secretfs DIR (file mode) or umount.secretfs DIR (block mode), which unmount and wait for the daemon or close the volume. All three are links to the secretfs binary, which acts by the name it is run as.",
        )
        .arg(
            Arg::new("source")
                .value_name("SOURCE")
                .required(true)
                .help("The backing directory (file mode), or a device or file (mode=block)"),
        )
        .arg(
            Arg::new("dir")
                .value_name("DIR")
                .required(true)
                .help("The mount point"),
        )
        .arg(
            Arg::new("o")
                .short('o')
                .value_name("OPTIONS")
                .help("Comma-separated mount options, see secretfs-fstab(5)"),
        )
        .arg(flag("s", "Sloppy: ignore unknown options instead of failing"))
        .arg(flag("f", "Fake: check the source, mount point and options, mount nothing"))
        .arg(flag("n", "Accepted and ignored (no mtab)"))
        .arg(flag("v", "Verbose: say what is mounted"))
        .arg(flag("l", "umount only: lazy unmount"))
}

fn report(program: &str, e: &CliError) {
    eprintln!("{program}: {e}");
    let line = format!("{program}: {}", e.message);
    if let Ok(c) = std::ffi::CString::new(line.replace('\0', " ")) {
        // SAFETY: "%s" with one valid C string, after openlog with a static ident.
        unsafe {
            libc::openlog(c"secretfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
            libc::syslog(libc::LOG_ERR, c"%s".as_ptr(), c.as_ptr());
        }
    }
}

/// `mount.secretfs SOURCE DIR [-sfnv] [-o OPTIONS]`; returns mount(8)'s exit code.
pub fn mount_main(program: &str, args: impl IntoIterator<Item = OsString>) -> i32 {
    let parsed = match parse_args(args) {
        Ok(p) if p.positional.len() == 2 => p,
        Ok(_) => {
            eprintln!("usage: {program} SOURCE DIR [-sfnv] [-o OPTIONS]");
            return EX_USAGE;
        }
        Err(e) => {
            eprintln!("{program}: {e}\nusage: {program} SOURCE DIR [-sfnv] [-o OPTIONS]");
            return EX_USAGE;
        }
    };
    let (source, dir) = (&parsed.positional[0], &parsed.positional[1]);
    let groups = parsed.options.iter().map(String::as_str);
    let opts = if parsed.sloppy {
        MountOptions::parse_sloppy(groups)
    } else {
        MountOptions::parse(groups)
    };
    let opts = match opts {
        Ok(o) => o,
        Err(e) => {
            report(program, &CliError::new(EX_USAGE, e.to_string()));
            return EX_USAGE;
        }
    };
    if parsed.verbose {
        println!(
            "{program}: mounting {} on {} ({})",
            source.display(),
            dir.display(),
            parsed.options.join(",")
        );
    }
    if parsed.fake {
        return match mount::dry_run(source, dir, &opts) {
            Ok(()) => 0,
            Err(e) => {
                report(program, &e.into());
                EX_FAIL
            }
        };
    }
    let result = if opts.mode == crate::mountopts::Mode::Block {
        mount_block(source, dir, &opts)
    } else {
        mount::plan(source, dir, &KeyChoice::none(), opts, false).and_then(mount::start)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let usage = e.kind == app::ErrorKind::Usage;
            report(program, &e.into());
            if usage {
                EX_USAGE
            } else {
                EX_FAIL
            }
        }
    }
}

/// fstab `mode=block`: open (formatting a blank device, as `--format auto`) and mount ext4.
fn mount_block(source: &Path, dir: &Path, opts: &MountOptions) -> app::Result<()> {
    let mut flags = 0;
    for (on, flag) in [
        (opts.read_only, libc::MS_RDONLY),
        (!opts.suid, libc::MS_NOSUID),
        (!opts.dev, libc::MS_NODEV),
        (opts.noexec, libc::MS_NOEXEC),
        (opts.noatime, libc::MS_NOATIME),
    ] {
        if on {
            flags |= flag;
        }
    }
    let req = crate::block::OpenRequest {
        target: source.to_path_buf(),
        mountpoint: dir.to_path_buf(),
        size: None,
        fs: crate::block::FsType::Ext4,
        format: crate::block::FormatPolicy::Auto,
        wipe: false,
        no_workqueue: false,
        mount_flags: flags,
        recovery: false,
    };
    let key = KeyChoice::none().with_options(opts);
    app::block::open(&req, &key, opts.key.as_deref()).map(drop)
}

/// `umount.fuse.secretfs DIR [-flnrv]`: unmount and wait for the daemon, as `secretfs umount`.
pub fn umount_main(program: &str, args: impl IntoIterator<Item = OsString>) -> i32 {
    let parsed = match parse_args(args) {
        Ok(p) if p.positional.len() == 1 => p,
        _ => {
            eprintln!("usage: {program} DIR [-flnrv]");
            return EX_USAGE;
        }
    };
    // A block-mode mount (ext4 on /dev/mapper/secretfs-…) reaches us through helper=secretfs.
    let target = parsed.positional[0].to_string_lossy().into_owned();
    if app::block::is_volume(&target) {
        return match app::block::close(&target) {
            Ok(_) => 0,
            Err(e) => {
                report(program, &e.into());
                EX_FAIL
            }
        };
    }
    match app::umount::run(&parsed.positional[0], parsed.lazy) {
        Ok(()) => 0,
        Err(e) => {
            report(program, &e.into());
            EX_FAIL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_what_mount8_passes() {
        let p = parse_args(args(&[
            "/var/lib/s",
            "/mnt/s",
            "-n",
            "-o",
            "rw,key=kms",
            "-sv",
        ]))
        .unwrap();
        assert_eq!(
            p.positional,
            vec![PathBuf::from("/var/lib/s"), PathBuf::from("/mnt/s")]
        );
        assert_eq!(p.options, vec!["rw,key=kms".to_string()]);
        assert!(p.sloppy && p.verbose && !p.fake);
        let joined = parse_args(args(&["-oro", "a", "b", "-t", "secretfs"])).unwrap();
        assert_eq!(joined.options, vec!["ro".to_string()]);
        assert_eq!(joined.positional.len(), 2);
        assert!(parse_args(args(&["a", "b", "-o"])).is_err());
        assert!(parse_args(args(&["a", "b", "-Z"])).is_err());
    }

    #[test]
    fn helper_role_comes_from_the_program_name() {
        assert_eq!(
            invoked_as_helper(Path::new("/sbin/mount.secretfs")),
            Some("mount")
        );
        assert_eq!(
            invoked_as_helper(Path::new("/sbin/umount.fuse.secretfs")),
            Some("umount")
        );
        assert_eq!(
            invoked_as_helper(Path::new("/usr/local/bin/secretfs")),
            None
        );
    }

    #[test]
    fn bad_usage_is_exit_1() {
        assert_eq!(mount_main("mount.secretfs", args(&["only-one"])), EX_USAGE);
        assert_eq!(
            mount_main("mount.secretfs", args(&["a", "b", "-o", "bogus"])),
            EX_USAGE
        );
        assert_eq!(umount_main("umount.secretfs", args(&[])), EX_USAGE);
    }
}

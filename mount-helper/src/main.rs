//! `mount.secretfs` (and, installed under that name, `umount.fuse.secretfs`): the mount(8) and
//! umount(8) helpers. Thin: the protocol and all logic live in `secretfs::cli::helper`.

fn main() {
    let mut args = std::env::args_os();
    let argv0 = std::path::PathBuf::from(args.next().unwrap_or_default());
    let program = argv0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mount.secretfs".into());
    let code = match secretfs::cli::helper::invoked_as_helper(&argv0) {
        Some("umount") => secretfs::cli::helper::umount_main(&program, args),
        _ => secretfs::cli::helper::mount_main(&program, args),
    };
    std::process::exit(code);
}

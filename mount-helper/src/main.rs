//! `mount.secretfs` (and, installed under that name, `umount.fuse.secretfs`): the mount(8) and
//! umount(8) helpers. Thin: the protocol and all logic live in `secretfs::cli::helper`.

fn main() {
    // Run under its build name (mount-secretfs) it acts as the mount helper.
    std::process::exit(secretfs::cli::helper::run_from_argv(Some("mount")).unwrap_or(1));
}

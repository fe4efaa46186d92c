//! `mount.secretfs`: the mount(8) helper. Placeholder until the fstab issue fills it; it refuses
//! to run rather than pretend, so an fstab line fails loudly instead of silently.

fn main() {
    eprintln!(
        "mount.secretfs: not implemented yet; use `secretfs mount BACKING MOUNTPOINT -o OPTIONS`"
    );
    std::process::exit(32);
}

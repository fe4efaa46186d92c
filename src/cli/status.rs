//! `secretfs status`: its arguments and the human rendering of a file-mode status (JSON comes
//! from the same struct).

use crate::app::status::Status;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A mount point or a backing directory.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn render(s: &Status) -> String {
    let opt = |v: &Option<String>| {
        v.clone()
            .unwrap_or_else(|| "unknown (backing store unreadable)".into())
    };
    let mut out = format!(
        "{}: {}\n",
        s.path.display(),
        if s.mounted {
            "mounted (file mode)"
        } else {
            "not mounted"
        }
    );
    if let Some(m) = &s.mountpoint {
        out += &format!("  mount point: {}\n", m.display());
    }
    out += &format!(
        "  backing:     {}\n  fs id:       {}\n  cipher:      {}\n  key source:  {}\n",
        s.backing.display(),
        opt(&s.fs_id),
        opt(&s.cipher),
        opt(&s.key_source)
    );
    if s.mounted {
        out += &match s.daemon_pid {
            Some(pid) => format!("  daemon pid:  {pid}\n"),
            None => {
                "  daemon:      not running (dead mount: run `secretfs umount` on it)\n".to_string()
            }
        };
    }
    out
}

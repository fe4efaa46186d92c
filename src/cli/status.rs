//! `secretfs status`: its arguments and the human renderings of a file-mode status and of the
//! list of every mount (JSON comes from the same structs).

use crate::app::status::{MountLine, Status};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A mount point or a backing directory; without it, every secretfs mount on this host
    /// (both modes), one line each.
    pub path: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One line per mount under a header, columns aligned, as `findmnt -t` prints them.
pub fn render_list(lines: &[MountLine]) -> String {
    if lines.is_empty() {
        return "no secretfs mounts\n".into();
    }
    let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let mut rows = vec![["TARGET", "MODE", "SOURCE", "ID", "KEY SOURCE"].map(String::from)];
    rows.extend(lines.iter().map(|l| {
        [
            l.mountpoint
                .as_ref()
                .map_or_else(|| "-".into(), |m| m.display().to_string()),
            l.mode.to_string(),
            l.source.display().to_string(),
            unknown(&l.id),
            unknown(&l.key_source),
        ]
    }));
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                line += &format!("{cell:<w$} ");
            }
        }
        out += line.trim_end();
        out += "\n";
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_says_so_and_rows_line_up() {
        assert_eq!(render_list(&[]), "no secretfs mounts\n");
        let line = |m: &str, mode, id: Option<&str>| MountLine {
            mountpoint: Some(PathBuf::from(m)),
            mode,
            source: PathBuf::from("/var/lib/store"),
            id: id.map(str::to_string),
            key_source: Some("kms (alias/x)".into()),
        };
        let text = render_list(&[
            line("/mnt/a", "file", Some("id-1")),
            line("/mnt/longer-name", "block", None),
        ]);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].starts_with("TARGET"));
        // Every column starts at the same offset on every row.
        let col = rows[0].find("MODE").unwrap();
        assert_eq!(rows[1].find("file"), Some(col), "{text}");
        assert_eq!(rows[2].find("block"), Some(col), "{text}");
        assert!(
            rows[2].contains(" ? "),
            "an unreadable id shows as ?: {text}"
        );
    }
}

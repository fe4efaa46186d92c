//! `secretfs generate man DIR | completions SHELL|DIR` (hidden, for packagers): the manual pages
//! and shell completions, made from the clap definitions and the mount option parser's own list.

use super::{exit, CliError};
use clap_complete::aot::{Generator, Shell};
use roff::{bold, italic, roman, Roff};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Write the manual pages into DIR: secretfs.8, secretfs-SUBCOMMAND.8, mount.secretfs.8
    /// and secretfs-fstab.5.
    Man { dir: PathBuf },
    /// Print the completion script of SHELL (bash, zsh, fish), or write all three into DIR.
    Completions {
        #[arg(value_name = "SHELL|DIR")]
        target: String,
    },
}

const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// `cmd` is the whole `secretfs` command as clap knows it (built in main.rs, where it lives).
pub fn run(args: &GenerateArgs, cmd: clap::Command) -> Result<(), CliError> {
    match &args.what {
        What::Man { dir } => {
            for path in man_pages(cmd, dir).map_err(|e| write_error(dir, e))? {
                println!("{}", path.display());
            }
            Ok(())
        }
        What::Completions { target } => {
            let mut cmd = cmd;
            if let Some(shell) = SHELLS.into_iter().find(|s| s.to_string() == *target) {
                use std::io::Write;
                return std::io::stdout()
                    .write_all(&script(shell, &mut cmd))
                    .map_err(|e| CliError::new(exit::FAILURE, format!("cannot print: {e}")));
            }
            let dir = Path::new(target);
            if !dir.is_dir() {
                return Err(CliError::new(
                    exit::USAGE,
                    format!("`{target}` is neither a shell (bash, zsh, fish) nor a directory"),
                ));
            }
            for path in completions(&mut cmd, dir).map_err(|e| write_error(dir, e))? {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

fn write_error(dir: &Path, e: std::io::Error) -> CliError {
    CliError::new(
        exit::FAILURE,
        format!("cannot write into {}: {e}", dir.display()),
    )
}

/// Writes the bash, zsh and fish scripts under the names each shell looks for.
pub fn completions(cmd: &mut clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    SHELLS
        .into_iter()
        .map(|shell| {
            let path = dir.join(shell.file_name("secretfs"));
            std::fs::write(&path, script(shell, cmd))?;
            Ok(path)
        })
        .collect()
}

/// The completion script of one shell. clap_complete panics when its writer fails (a closed
/// pipe), so it writes into memory and the caller reports the write.
fn script(shell: Shell, cmd: &mut clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::aot::generate(shell, cmd, "secretfs", &mut out);
    out
}

/// Writes every page and returns their paths.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    // Building names each subcommand `secretfs-SUB` (its page) and `secretfs SUB` (its synopsis).
    cmd.build();
    let mut written = Vec::new();
    command_pages(&cmd, dir, &mut written)?;
    for (name, section, text) in [
        ("mount.secretfs", "8", helper_page()?),
        ("secretfs-fstab", "5", fstab_page()),
    ] {
        let path = dir.join(format!("{name}.{section}"));
        std::fs::write(&path, ascii(&text))?;
        written.push(path);
    }
    Ok(written)
}

/// secretfs.8 and one page per (visible) subcommand, nested ones too (secretfs-block-open.8).
fn command_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_pages(sub, dir, written)?;
    }
    // The exit codes are a list; clap_mangen would run them together as one paragraph.
    let after = cmd.get_after_help().map(|h| h.to_string());
    // Subcommands have no version of their own; every page's footer names the build.
    let page = cmd.clone().after_help(None::<&str>).version(super::VERSION);
    let man = clap_mangen::Man::new(page)
        .section("8")
        .source(format!("secretfs {}", super::VERSION));
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let mut tail = Roff::new();
    match after.as_deref() {
        Some(text) if text.starts_with("Exit codes:") => exit_status(&mut tail, text),
        Some(text) => {
            let (section, body) = match text.strip_prefix("Exit status: ") {
                Some(body) => ("EXIT STATUS", body),
                None => ("NOTES", text),
            };
            tail.control("SH", [section]).text([roman(body)]);
        }
        None => {}
    }
    see_also(&mut tail, cmd.get_display_name().unwrap_or(cmd.get_name()));
    out.extend(tail.render().into_bytes());
    man.render_version_section(&mut out)?;
    std::fs::write(&path, ascii(&String::from_utf8_lossy(&out)))?;
    written.push(path);
    Ok(())
}

/// groff reads its input as Latin-1 unless preconv runs first (man does, `groff -man` does
/// not): every other character goes in as groff's own escape, `\[u2026]` for `…`.
fn ascii(roff: &str) -> String {
    roff.chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\[u{:04X}]", u32::from(c))
            }
        })
        .collect()
}

/// `  3  key problem: …` lines as a tagged list.
fn exit_status(roff: &mut Roff, text: &str) {
    roff.control("SH", ["EXIT STATUS"]);
    for line in text.lines().skip(1) {
        let (code, what) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        roff.control("TP", [])
            .text([bold(code)])
            .text([roman(what.trim())]);
    }
}

fn see_also(roff: &mut Roff, page: &str) {
    let refs: Vec<(&str, &str)> = [
        ("secretfs", "8"),
        ("mount.secretfs", "8"),
        ("secretfs-fstab", "5"),
        ("fstab", "5"),
        ("mount", "8"),
        ("cryptsetup", "8"),
    ]
    .into_iter()
    .filter(|(n, _)| *n != page)
    .collect();
    roff.control("SH", ["SEE ALSO"]);
    let mut inlines = Vec::new();
    for (i, (name, section)) in refs.iter().enumerate() {
        inlines.push(bold(*name));
        let sep = if i + 1 == refs.len() { "" } else { ", " };
        inlines.push(roman(format!("({section}){sep}")));
    }
    roff.text(inlines);
}

/// mount.secretfs(8): the helper's command line (cli/helper.rs) and what it does with it.
fn helper_page() -> std::io::Result<String> {
    let helper = super::helper::man_command().version(super::VERSION);
    let man = clap_mangen::Man::new(helper)
        .section("8")
        .source(format!("secretfs {}", super::VERSION));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut tail = Roff::new();
    tail.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "mounted (or unmounted)"),
        ("1", "bad usage or mount options"),
        (
            "32",
            "the mount failed; the reason is on stderr and in syslog",
        ),
    ] {
        tail.control("TP", [])
            .text([bold(code)])
            .text([roman(what)]);
    }
    see_also(&mut tail, "mount.secretfs");
    out.extend(tail.render().into_bytes());
    man.render_version_section(&mut out)?;
    String::from_utf8(out).map_err(std::io::Error::other)
}

/// secretfs-fstab(5): the fields of an fstab line and every option the parser accepts, listed
/// from `mountopts::VALID` itself.
fn fstab_page() -> String {
    let mut r = Roff::new();
    r.control(
        "TH",
        ["SECRETFS-FSTAB", "5", "", "secretfs", "File Formats"],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "secretfs-fstab - /etc/fstab lines and mount options of secretfs",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        italic("SOURCE"),
        roman(" "),
        italic("DIR"),
        roman(" "),
        bold("secretfs"),
        roman(" "),
        italic("OPTIONS"),
        roman(" 0 0"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "mount(8) runs mount.secretfs(8) for fstab lines of type secretfs. In file mode (the default) SOURCE is the backing directory of the encrypted store and the mount shows as type fuse.secretfs; with mode=block SOURCE is a block device or a file, opened with dm-crypt/LUKS2. OPTIONS is a comma-separated list; an unknown option is an error that lists the valid ones, except with mount -s, which ignores it.",
    )]);
    r.text([roman(
        "secretfs doctor parses every secretfs line of /etc/fstab with the same parser and names the line of any error.",
    )]);
    r.control("SH", ["OPTIONS"]);
    for entry in crate::mountopts::VALID {
        r.control("TP", []);
        let (name, value) = match entry.split_once('=') {
            Some((n, "")) => (format!("{n}="), Some("VALUE".to_string())),
            Some((n, v)) => (format!("{n}="), Some(v.to_string())),
            None => (entry.to_string(), None),
        };
        let mut head = vec![bold(name)];
        if let Some(v) = value {
            head.push(italic(v));
        }
        r.text(head);
        r.text([roman(crate::mountopts::describe(entry).unwrap_or(""))]);
    }
    r.text([roman(
        "user, users, owner and group are refused: a user mount would let any local user unlock the key.",
    )]);
    r.control("SH", ["EXAMPLES"]);
    r.control("nf", []);
    for line in [
        "/var/lib/secretfs  /mnt/secretfs  secretfs  key=keyfile:/etc/secretfs/key,init=auto  0 0",
        "/var/lib/scratch   /mnt/scratch   secretfs  key=kms,kms-key=alias/secretfs,wrapped-key=s3://b/k,init=auto,_netdev,nofail  0 0",
        "/dev/nvme1n1       /data          secretfs  mode=block,key=keyfile:/etc/secretfs/key,nofail  0 0",
    ] {
        r.text([roman(line)]);
    }
    r.control("fi", []);
    see_also(&mut r, "secretfs-fstab");
    r.control("SH", ["NOTES"]);
    r.text([roman(
        "KMS mounts need the network: add _netdev (and nofail where boot must not wait for it).",
    )]);
    r.render()
}

//! `secretfs key list|add|remove`: the key slots of a file-mode store or a block-mode volume,
//! their arguments (the key that opens it now, and the new slot's key under `--new-*` names).

use super::{print_report, CliError, KeyArgs, SlotArgs};
use crate::app::block_slots::{self, VolumeSlotList};
use crate::app::slots::{self, AddRequest, RemoveRequest, SlotList};
use crate::app::{AwsChoice, KeyChoice};
use crate::keysource::PassphraseInput;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct KeyCommand {
    #[command(subcommand)]
    pub action: KeyAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyAction {
    /// Show the slots of a store or volume and whether this host trusts each (no key needed).
    List(ListArgs),
    /// Add a slot: unlock with an existing slot (--key/--slot), then wrap the master key under
    /// a new key (--new-key). The new slot is proven to open the store before it is written.
    Add(AddArgs),
    /// Remove a slot. Never the last one; the slot used to unlock only with --force.
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Backing directory, or a block-mode volume (its device, or its image file).
    pub backing: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The new slot's key, under names of its own so they cannot be confused with the key that
/// unlocks the store now.
#[derive(Debug, Clone, clap::Args)]
pub struct NewKeyArgs {
    /// Key source of the new slot: recovery, keyfile:PATH, passphrase, kms or kms-password.
    #[arg(long, value_name = "SOURCE")]
    pub new_key: Option<String>,
    /// KMS key of the new slot: key id, alias/NAME or ARN (an ARN's region is recorded).
    #[arg(long, value_name = "ID|ALIAS|ARN")]
    pub new_kms_key: Option<String>,
    /// S3 object for the new slot's wrapped key (kms: written; kms-password: read).
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub new_wrapped_key: Option<String>,
    /// Extra KMS encryption-context pairs of the new slot.
    #[arg(long, value_name = "K=V,...")]
    pub new_context: Option<String>,
    /// AWS region of the new slot (e.g. a second region's KMS key).
    #[arg(long, value_name = "REGION")]
    pub new_region: Option<String>,
    /// Endpoint URL for the new slot's KMS and S3 calls (e.g. a VPC endpoint).
    #[arg(long, value_name = "URL")]
    pub new_endpoint_url: Option<String>,
    /// Read the new passphrase from this inherited file descriptor.
    #[arg(long, value_name = "FD", conflicts_with = "new_passphrase_command")]
    pub new_passphrase_fd: Option<i32>,
    /// Run this command and use the first line it prints as the new passphrase.
    #[arg(long, value_name = "CMD")]
    pub new_passphrase_command: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Backing directory, or a block-mode volume (its device, or its image file).
    pub backing: PathBuf,
    #[command(flatten)]
    pub new: NewKeyArgs,
    /// Replace an existing S3 object named by --new-wrapped-key.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub slot: SlotArgs,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// Backing directory, or a block-mode volume (its device, or its image file).
    pub backing: PathBuf,
    /// The slot to remove (see `secretfs key list`).
    #[arg(value_name = "SLOT")]
    pub remove: u32,
    /// Also remove the slot that unlocked this command (never the last slot).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub slot: SlotArgs,
}

impl NewKeyArgs {
    fn choice(&self, timeout_secs: u64) -> KeyChoice {
        KeyChoice {
            key: self.new_key.clone(),
            passphrase: match (&self.new_passphrase_fd, &self.new_passphrase_command) {
                (Some(fd), _) => PassphraseInput::Fd(*fd),
                (None, Some(cmd)) => PassphraseInput::Command(cmd.clone()),
                (None, None) => PassphraseInput::Tty,
            },
            aws: AwsChoice {
                kms_key: self.new_kms_key.clone(),
                wrapped_key: self.new_wrapped_key.clone(),
                context: self.new_context.clone(),
                timeout_secs,
                region: self.new_region.clone(),
                endpoint: self.new_endpoint_url.clone(),
            },
            slot: None,
            slot_timeout_secs: None,
        }
    }
}

pub fn run(cmd: &KeyCommand) -> Result<(), CliError> {
    match &cmd.action {
        KeyAction::List(args) if block_slots::is_volume(&args.backing) => {
            let list = block_slots::list(&args.backing)?;
            print_report(&list, args.json, render_volume)
        }
        KeyAction::List(args) => {
            let list = slots::list(&args.backing)?;
            print_report(&list, args.json, render)
        }
        KeyAction::Add(args) => {
            let req = AddRequest {
                backing: args.backing.clone(),
                unlock: args.slot.apply(args.key.choice()),
                new_key: args.new.choice(args.key.aws.aws_timeout),
                force: args.force,
            };
            let volume = block_slots::is_volume(&args.backing);
            let done = if volume {
                block_slots::add(&req)?
            } else {
                slots::add(&req)?
            };
            println!(
                "added slot {} ({}) to {} {}",
                done.slot,
                done.key_source,
                if volume { "volume" } else { "filesystem" },
                done.fs_id
            );
            match &done.recovery_text {
                Some(text) if volume => print_volume_recovery_key(text, &args.backing),
                Some(text) => print_recovery_key(text),
                None => {}
            }
            Ok(())
        }
        KeyAction::Remove(args) => {
            let req = RemoveRequest {
                backing: args.backing.clone(),
                unlock: args.slot.apply(args.key.choice()),
                slot: args.remove,
                force: args.force,
            };
            if block_slots::is_volume(&args.backing) {
                let done = block_slots::remove(&req)?;
                match done.key_source {
                    Some(kind) => println!(
                        "removed slot {} ({kind}) from volume {}",
                        done.slot, done.uuid
                    ),
                    None => println!(
                        "wiped keyslot {} (no secretfs token named it) of volume {}",
                        done.slot, done.uuid
                    ),
                }
                return Ok(());
            }
            let done = slots::remove(&req)?;
            println!(
                "removed slot {} ({}) from filesystem {}",
                done.slot.id,
                done.slot.source.kind(),
                done.fs_id
            );
            if let crate::store::config::KeySourceDescriptor::Kms {
                s3_uri: Some(uri), ..
            } = &done.slot.source
            {
                println!("  its wrapped key is still in {uri}: delete the object (and any copy of the old config) to revoke it for good");
            }
            Ok(())
        }
    }
}

/// The recovery key, shown once: on stdout, so it can be piped to a printer or a vault.
pub fn print_recovery_key(text: &str) {
    println!("  recovery key (shown once, stored nowhere; write it down and keep it offline):");
    println!("    {text}");
    println!("  it opens the filesystem with: secretfs mount BACKING DIR --key recovery");
}

/// Store strings shown as they are, but with control characters (a planted escape sequence)
/// escaped.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A volume's recovery key, shown once, and the two ways it opens the volume: secretfs, and a
/// stock cryptsetup (its keyslot passphrase is this very text) where secretfs is gone.
pub fn print_volume_recovery_key(text: &str, device: &std::path::Path) {
    let device = device.display();
    println!("  recovery key (shown once, stored nowhere; write it down and keep it offline):");
    println!("    {text}");
    println!("  it opens the volume with: secretfs block open {device} DIR --key recovery");
    println!("  or, with no secretfs at all: cryptsetup open {device} NAME (type it, dashes included), then mount /dev/mapper/NAME");
}

/// One slot's line in a listing.
fn slot_line(s: &slots::SlotInfo) -> String {
    let mut line = format!("  slot {}: {}", s.id, s.key_source);
    if !s.key.is_empty() {
        line += &format!(" {}", printable(&s.key));
    }
    if let Some(o) = &s.s3_object {
        line += &format!(" object {}", printable(o));
    }
    if let Some(r) = &s.region {
        line += &format!(" region {}", printable(r));
    }
    if let Some(e) = &s.endpoint {
        line += &format!(" endpoint {}", printable(e));
    }
    if s.direct {
        line += " (direct)";
    }
    line += match s.pinned {
        Some(true) => " [pinned]",
        Some(false) => " [NOT pinned on this host: never tried]",
        None => "",
    };
    line.push('\n');
    line
}

pub fn render_volume(list: &VolumeSlotList) -> String {
    let mut out = format!(
        "{}: volume {} (LUKS2), {} slot(s)\n",
        list.device.display(),
        list.uuid,
        list.slots.len()
    );
    for s in &list.slots {
        out += &slot_line(s);
    }
    for k in &list.untokened_keyslots {
        out += &format!("  keyslot {k}: no secretfs token (never tried; an interrupted `key add`, or not ours): `secretfs key remove {} {k}` wipes it\n", list.device.display());
    }
    out += "  (read from the LUKS2 header: each slot is the keyslot of the same number; proven only when it opens)\n";
    out
}

pub fn render(list: &SlotList) -> String {
    let mut out = format!(
        "{}: filesystem {} (format {}), {} slot(s)\n",
        list.backing.display(),
        list.fs_id,
        list.format_version,
        list.slots.len()
    );
    for s in &list.slots {
        out += &slot_line(s);
    }
    out += "  (read from the store: authenticated only when a slot opens it)\n";
    out
}

#!/usr/bin/python3
"""Checks what docs/EC2.md tells a reader to paste into a launch template.

Every ```yaml block that starts with #cloud-config is validated by Debian 12's own
`cloud-init schema` (unpacked, not installed, by scripts/install-deps.sh) and its top-level keys
must be modules cloud-init knows (the schema lets unknown keys through silently); every
`secretfs ...` command line in it (runcmd, and the ExecStart of an example unit it enables) is
parsed by secretfs's own command-line parser (`--help` appended: clap rejects an unknown flag or
a bad value before it prints help); every fstab line (written by write_files, or in a ```fstab
block) goes through the mount helper's option parser (`mount.secretfs -f`, a dry run).

usage: check_ec2_doc.py [--secretfs BIN] [--cloud-init ROOT] [--doc docs/EC2.md]
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def fail(msg):
    failures.append(msg)
    print(f"check_ec2_doc: {msg}", file=sys.stderr)


def fenced_blocks(text, lang):
    return re.findall(r"^```" + lang + r"\n(.*?)^```", text, flags=re.S | re.M)


def secretfs_commands(command):
    """The `secretfs ...` pipeline segments of one shell command line."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments, current = [], []
    for token in lexer:
        if token in ("|", "||", "&&", ";", "&", ">", ">>", "<"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    return [s for s in segments if s and os.path.basename(s[0]) == "secretfs"]


def check_command(binary, argv, where):
    out = subprocess.run([binary, *argv[1:], "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{where}: `{shlex.join(argv)}` is refused by secretfs's parser: {out.stderr.strip()}")
    return out.returncode == 0


def check_fstab_line(helper, line, where, scratch):
    fields = line.split()
    if len(fields) != 6 or fields[2] != "secretfs":
        fail(f"{where}: not a 6-field secretfs fstab line: {line!r}")
        return
    source, _mnt, _type, options = fields[:4]
    # The mount point given is a scratch directory: -f checks that it exists, then the store.
    out = subprocess.run(
        [helper, source, scratch, "-f", "-o", options], capture_output=True, text=True
    )
    # 1 is mount(8)'s usage/option error; 0 or 32 (here: no store, no device-mapper) means the
    # options were all understood.
    if out.returncode not in (0, 32) or "unknown mount option" in out.stderr:
        fail(f"{where}: mount.secretfs refuses the options of {line!r}: {out.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secretfs", default=os.path.join(ROOT, "target/debug/secretfs"))
    ap.add_argument("--cloud-init", default="/var/cache/secretfs-cloud-init/root")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs/EC2.md"))
    args = ap.parse_args()
    binary = os.path.abspath(args.secretfs)
    ci_root = args.cloud_init
    ci_env = dict(os.environ, PYTHONPATH=os.path.join(ci_root, "usr/lib/python3/dist-packages"))
    ci_bin = os.path.join(ci_root, "usr/bin/cloud-init")
    if not os.access(binary, os.X_OK):
        sys.exit(f"check_ec2_doc: {binary} is missing: cargo build first")
    if not os.path.exists(ci_bin):
        sys.exit(f"check_ec2_doc: {ci_bin} is missing: scripts/install-deps.sh --with-suites unpacks it")

    known = subprocess.run(
        ["/usr/bin/python3", "-c",
         "from cloudinit.config.schema import get_schema\n"
         "for d in get_schema()['$defs'].values(): print('\\n'.join(d.get('properties', {})))"],
        env=ci_env, capture_output=True, text=True, check=True,
    ).stdout.split()

    text = open(args.doc).read()
    configs = [b for b in fenced_blocks(text, "yaml") if b.startswith("#cloud-config\n")]
    if len(configs) < 2:
        fail(f"{len(configs)} #cloud-config blocks in {args.doc}, expected the file-mode and block-mode ones")
    fstab_lines = [(line, "```fstab block") for b in fenced_blocks(text, "fstab")
                   for line in b.splitlines() if line.strip() and not line.startswith("#")]

    with tempfile.TemporaryDirectory() as tmp:
        helper = os.path.join(tmp, "mount.secretfs")
        os.symlink(binary, helper)
        scratch = os.path.join(tmp, "mnt")
        os.mkdir(scratch)
        commands_checked = 0
        for n, block in enumerate(configs, 1):
            where = f"cloud-config #{n}"
            path = os.path.join(tmp, f"config{n}.yaml")
            with open(path, "w") as f:
                f.write(block)
            out = subprocess.run(["/usr/bin/python3", ci_bin, "schema", "--config-file", path],
                                 env=ci_env, capture_output=True, text=True)
            if out.returncode != 0:
                fail(f"{where}: cloud-init schema: {(out.stdout + out.stderr).strip()}")
            config = yaml.safe_load(block)
            for key in config:
                if key not in known:
                    fail(f"{where}: `{key}` is no cloud-init module key")
            for entry in config.get("write_files", []):
                if entry.get("path") == "/etc/fstab":
                    if not entry.get("append"):
                        fail(f"{where}: write_files would replace /etc/fstab (append: true)")
                    fstab_lines += [(line, where) for line in entry["content"].splitlines()
                                    if line.strip() and not line.startswith("#")]
            for command in config.get("runcmd", []):
                line = command if isinstance(command, str) else shlex.join(command)
                for argv in secretfs_commands(line):
                    commands_checked += check_command(binary, argv, where)
                # An example unit the config installs: the file exists and its commands parse.
                for unit in re.findall(r"/usr/share/doc/secretfs/examples/(\S+)", line):
                    source = os.path.join(ROOT, "docs/systemd", unit)
                    if not os.path.exists(source):
                        fail(f"{where}: the package ships no example {unit}")
                        continue
                    for exec_line in re.findall(r"/usr/bin/secretfs [^'\n;]*", open(source).read()):
                        for argv in secretfs_commands(exec_line):
                            commands_checked += check_command(binary, argv, f"{where} ({unit})")
        if commands_checked < 3:
            fail(f"only {commands_checked} secretfs command lines were checked")
        if len(fstab_lines) < 2:
            fail(f"only {len(fstab_lines)} fstab lines found")
        for line, where in fstab_lines:
            check_fstab_line(helper, line, where, scratch)

    if failures:
        sys.exit(1)
    print(f"check_ec2_doc: {len(configs)} cloud-configs valid, {commands_checked} secretfs "
          f"commands and {len(fstab_lines)} fstab lines parse")


if __name__ == "__main__":
    main()

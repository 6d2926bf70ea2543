//! `cargo xtask run`: build, then become netprobe (as root).

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command};

use anyhow::{Result, bail};

use crate::{build_cmd, util};

pub fn run(args: Vec<OsString>) -> Result<()> {
    let bin = build_cmd::build(true)?;
    // netprobe loads eBPF programs, which needs root.
    let mut cmd = if util::is_root() {
        Command::new(&bin)
    } else if let Some(sudo) = util::which("sudo") {
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&bin);
        cmd
    } else {
        bail!("netprobe needs root and sudo is not installed: rerun `cargo xtask run` as root");
    };
    cmd.args(args);
    eprintln!("==> running netprobe: {}", util::show(&cmd));
    // exec, not spawn: Ctrl-C and the exit code belong to netprobe alone.
    let err = cmd.exec();
    bail!("cannot exec `{}`: {err}", util::show(&cmd))
}

//! `cargo xtask build`: setup, then build the netprobe binary.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{setup, util};

/// Builds netprobe and returns the absolute path of the binary.
pub fn build(release: bool) -> Result<PathBuf> {
    setup::setup()?;
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "probe-user"]);
    if release {
        cmd.arg("--release");
    }
    util::run("building netprobe", &mut cmd)?;
    let bin = util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("netprobe");
    // Absolute and checked: tests and sudo get this path from elsewhere.
    let bin = bin
        .canonicalize()
        .with_context(|| format!("build succeeded but {} is missing", bin.display()))?;
    eprintln!("==> netprobe: {}", bin.display());
    Ok(bin)
}

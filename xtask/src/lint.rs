//! CI helpers: formatting and lints.

use anyhow::Result;

use crate::{setup, util};

pub fn fmt_check() -> Result<()> {
    util::run(
        "checking formatting",
        util::cargo().args(["fmt", "--all", "--", "--check"]),
    )
}

pub fn clippy() -> Result<()> {
    // probe-user's build script builds the eBPF object: it needs bpf-linker.
    setup::setup()?;
    util::run(
        "clippy",
        util::cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )
}

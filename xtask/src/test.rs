//! `cargo xtask test`: unit tests, then the privileged lab tests against the
//! release binary.

use std::ffi::OsString;

use anyhow::{Result, bail};

use crate::{build_cmd, util};

pub fn test(args: &[OsString]) -> Result<()> {
    let bin = build_cmd::build(true)?;

    // The lab crate is left out here: it runs below, as root, with NETPROBE_BIN.
    let mut unit = util::cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "probe-ebpf",
        "--exclude",
        "netprobe-tests",
    ]);
    if !args.is_empty() {
        unit.arg("--").args(args);
    }
    let unit = util::run("unit tests", &mut unit);

    let lab = if util::is_root() {
        util::run(
            "lab tests",
            util::cargo()
                .env("NETPROBE_BIN", &bin)
                .args(["test", "-p", "netprobe-tests", "--", "--test-threads=1"])
                .args(args),
        )
    } else {
        Err(anyhow::anyhow!(
            "lab tests need root (namespaces, eBPF): rerun as root, e.g. \
             sudo -E env \"PATH=$PATH\" cargo xtask test"
        ))
    };

    // Both parts run whatever the other did, so one CI log shows everything.
    let verdict = |r: &Result<()>| if r.is_ok() { "ok" } else { "FAILED" };
    let lab_verdict = if util::is_root() {
        verdict(&lab)
    } else {
        "refused (not root)"
    };
    println!("xtask test: unit {}, lab {lab_verdict}", verdict(&unit));
    let errors: Vec<String> = [unit, lab]
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(())
}

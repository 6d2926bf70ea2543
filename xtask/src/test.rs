//! `cargo xtask test`: unit tests, then the privileged lab tests against the
//! release binary, then every fuzz target for a few seconds.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{build_cmd, util};

/// Seconds per fuzz target in `cargo xtask test`: enough to build, load the
/// seeds and run a few thousand inputs.
const FUZZ_SECONDS: u64 = 5;

pub fn test(args: &[OsString]) -> Result<()> {
    let bin = build_cmd::build(true)?;
    // The static binary and the image, for the lab tests that run them in
    // an empty root and under containerd (tests/tests/dist.rs).
    let dist = crate::dist::build_all()?;

    // The lab crate is left out here: it runs below, as root, with NETPROBE_BIN.
    let mut unit = util::cargo();
    unit.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "probe-ebpf",
        "--exclude",
        "netprobe-tests",
    ]);
    if !args.is_empty() {
        unit.arg("--").args(args);
    }
    let mut tally = Tally::default();
    let unit = run_counted("unit tests", &mut unit, &mut tally);

    let lab = if util::is_root() {
        run_counted(
            "lab tests",
            util::cargo()
                .env("NETPROBE_BIN", &bin)
                .env("NETPROBE_DIST", util::target_dir().join("dist"))
                .env("NETPROBE_IMAGE", &dist.reference)
                .args([
                    "test",
                    "--no-fail-fast",
                    "-p",
                    "netprobe-tests",
                    "--",
                    "--test-threads=1",
                ])
                .args(args),
            &mut tally,
        )
    } else {
        Err(anyhow::anyhow!(
            "lab tests need root (namespaces, eBPF): rerun as root, e.g. \
             sudo -E env \"PATH=$PATH\" cargo xtask test"
        ))
    };

    // Every fuzz target briefly, so the fuzz build cannot rot unseen; not
    // when a filter asks for particular tests.
    let fuzz = if args.is_empty() {
        Some(crate::fuzz::fuzz(FUZZ_SECONDS, &[]))
    } else {
        None
    };

    // The kernel matrix: Debian's kernels under QEMU, one at a time (about
    // 2-4 minutes each here); not when a filter asks for particular tests.
    let matrix = if args.is_empty() && crate::kernels::enabled() && util::is_root() {
        Some(crate::kernels::run(&bin, &[]).map(drop))
    } else {
        None
    };

    // All parts run whatever the others did, so one CI log shows everything.
    let verdict = |r: &Result<()>| if r.is_ok() { "ok" } else { "FAILED" };
    let lab_verdict = if util::is_root() {
        verdict(&lab)
    } else {
        "refused (not root)"
    };
    println!(
        "xtask test: unit {}, lab {lab_verdict}, fuzz {}, kernel matrix {}",
        verdict(&unit),
        fuzz.as_ref().map_or("skipped (filter given)", verdict),
        matrix.as_ref().map_or(
            "skipped (filter given, not root, or NETPROBE_KERNEL_MATRIX=0)",
            verdict
        )
    );
    // One closing line for the whole run: cargo's own last line is often a
    // doc-test binary's `0 passed`, which says nothing about the run.
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    let errors: Vec<String> = [unit, lab]
        .into_iter()
        .chain(fuzz)
        .chain(matrix)
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(())
}

/// Test counts summed over every test binary of a run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds the counts of a libtest summary line
    /// (`test result: ok. 12 passed; 0 failed; 1 ignored; ...`).
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd` like `util::run`, echoing its stdout while counting tests.
fn run_counted(what: &str, cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    println!("==> {what}: {}", util::show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("reading {what} output"))?;
        println!("{line}");
        tally.add_line(&line);
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summaries() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.5s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 5 tests");
        assert_eq!(
            t,
            Tally {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}

//! `cargo xtask bench`: set up and build, run the lab bench (the `bench`
//! binary of the tests crate, as root: it builds its own namespaces and
//! measures), then print its figures as a table on stdout (progress goes to
//! stderr) and write target/bench/bench.json and target/bench/bench.md.
//!
//! One job per module: [`machine`] (date and host), [`stats`] (median and
//! spread), [`report`] (table, Markdown, JSON).

mod machine;
mod report;
mod stats;

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{build_cmd, util};

pub struct Options {
    /// Runs of each measurement (the lab's default: 5, or 2 with --quick).
    pub runs: Option<u32>,
    /// CI scale: fewer runs, shorter windows.
    pub quick: bool,
    /// Only these measurements (comma-separated names), e.g. "storm".
    pub only: Option<String>,
}

pub fn bench(opts: &Options) -> Result<()> {
    let started = Instant::now();
    if !util::is_root() {
        bail!(
            "the bench needs root (namespaces, eBPF, nft): rerun as root, e.g. \
             sudo -E env \"PATH=$PATH\" cargo xtask bench"
        );
    }
    let bin = build_cmd::build(true)?;
    let dir = util::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let raw = dir.join("raw.json");
    // A stale file must not pass for this run's results.
    let _ = std::fs::remove_file(&raw);

    let machine = machine::Machine::describe();
    let mut lab = util::cargo();
    lab.env("NETPROBE_BIN", &bin)
        .args([
            "run",
            "--quiet",
            "-p",
            "netprobe-tests",
            "--bin",
            "bench",
            "--",
        ])
        .arg("--out")
        .arg(&raw);
    if opts.quick {
        lab.arg("--quick");
    }
    // "pipeline" is measured here, not by the lab.
    let lab_only: Option<Vec<&str>> = opts.only.as_deref().map(|names| {
        names
            .split(',')
            .map(str::trim)
            .filter(|n| *n != "pipeline")
            .collect()
    });
    if let Some(names) = &lab_only {
        lab.args(["--only", &names.join(",")]);
    }
    if let Some(n) = opts.runs {
        lab.args(["--runs", &n.to_string()]);
    }
    if lab_only.as_ref().is_some_and(Vec::is_empty) {
        std::fs::write(&raw, r#"{"runs": 0, "quick": false, "rows": []}"#)
            .with_context(|| format!("writing {}", raw.display()))?;
    } else {
        util::run("bench lab", &mut lab)?;
    }
    let mut report = report::Report::load(&raw, machine)?;

    // The userspace pipeline under a synthetic flood: throughput on one
    // core and memory with 100k / 1M flows (no lab needed).
    let wants_pipeline = opts
        .only
        .as_deref()
        .is_none_or(|names| names.split(',').any(|n| n.trim() == "pipeline"));
    if wants_pipeline {
        let pipeline = dir.join("pipeline.json");
        let _ = std::fs::remove_file(&pipeline);
        util::run(
            "bench pipeline",
            util::cargo().args(["bench", "-p", "probe-user", "--bench", "pipeline"]),
        )?;
        report.merge(&pipeline)?;
    }
    println!("\n{}", report.table());
    let json = dir.join("bench.json");
    let md = dir.join("bench.md");
    std::fs::write(&json, serde_json::to_string_pretty(&report.json())? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    eprintln!(
        "==> bench: wrote {} and {} ({:.0?} in all)",
        json.display(),
        md.display(),
        started.elapsed()
    );
    Ok(())
}

//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` for a bounded
//! time, one after the other, with a one-line account of each (executions,
//! speed, corpus growth) and the input of any crash.
//!
//! The seeds in `fuzz/corpus/TARGET` are read, never written: libFuzzer
//! adds what it finds to `fuzz/corpus-work/TARGET` (ignored by git), and
//! crash inputs land in `fuzz/artifacts/TARGET`. Needs the nightly
//! toolchain (sanitizers); installs cargo-fuzz when it is missing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::util;

/// The targets, as in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "decode_record",
    "tls_reassembler",
    "arp_ndp_parse",
    "netlink_conntrack",
    "netlink_route",
    "replay_jsonl",
    "btf_parse",
];

const TOOLCHAIN: &str = "nightly";

/// What one run came to.
#[derive(Debug, Default)]
struct Run {
    execs: Option<u64>,
    per_sec: Option<u64>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
    /// The first lines of the failure (panic message, sanitizer report).
    failure: Option<String>,
    artifact: Option<PathBuf>,
}

pub fn fuzz(seconds: u64, only: &[String]) -> Result<()> {
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown fuzz target {t} (targets: {})", TARGETS.join(", "));
        }
    }
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    nightly()?;
    cargo_fuzz()?;
    util::run(
        "building the fuzz targets (nightly, ASan, debug assertions)",
        fuzz_cmd().args(["build", "--debug-assertions"]),
    )?;

    let fuzz_dir = util::root().join("fuzz");
    let logs = util::target_dir().join("fuzz-logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut results = Vec::new();
    for target in &targets {
        let work = fuzz_dir.join("corpus-work").join(target);
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let log = logs.join(format!("{target}.log"));
        let mut cmd = fuzz_cmd();
        cmd.args(["run", "--debug-assertions", target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // A single input taking this long is a hang: reported as a crash.
            .arg("-timeout=10")
            .arg("-print_final_stats=1");
        let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
        if dict.is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        println!(
            "==> fuzzing {target} for {seconds} s (log: {})",
            log.display()
        );
        let started = Instant::now();
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(|| format!("cannot start `{}`", util::show(&cmd)))?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let mut run = parse_log(&text);
        if !status.success() && run.failure.is_none() {
            run.failure = Some(format!("{} ended with {status}", util::show(&cmd)));
        }
        println!(
            "    {target}: {} execs, {} exec/s, {} new corpus units, peak RSS {} MB, {:.0} s{}",
            show(run.execs),
            show(run.per_sec),
            show(run.new_units),
            show(run.peak_rss_mb),
            started.elapsed().as_secs_f64(),
            if run.failure.is_some() { ": CRASH" } else { "" }
        );
        if let Some(failure) = &run.failure {
            println!("{}", indent(failure));
            if let Some(a) = &run.artifact {
                println!("    input: {}", a.display());
                if let Ok(bytes) = fs::read(a) {
                    println!(
                        "    input hex ({} bytes): {}",
                        bytes.len(),
                        hex(&bytes, 512)
                    );
                }
                println!(
                    "    reproduce: cargo +{TOOLCHAIN} fuzz run --debug-assertions {target} {}",
                    a.display()
                );
            }
        }
        results.push((*target, run));
    }

    let crashed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.failure.is_some())
        .map(|(t, _)| *t)
        .collect();
    println!(
        "xtask fuzz: {} target(s), {seconds} s each: {}",
        results.len(),
        if crashed.is_empty() {
            "no crash".to_string()
        } else {
            format!("CRASH in {}", crashed.join(", "))
        }
    );
    if !crashed.is_empty() {
        bail!("fuzzing found crashes in {}", crashed.join(", "));
    }
    Ok(())
}

/// `cargo +nightly fuzz` through rustup, whichever cargo started xtask.
fn fuzz_cmd() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN, "cargo", "fuzz"])
        .current_dir(util::root())
        // Set by the stable cargo that runs xtask; the nightly one sets its own.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        // probe-user's build script then embeds an empty eBPF object: the
        // targets never load it (see probe-user/build.rs).
        .env("NETPROBE_SKIP_EBPF", "1");
    c
}

fn nightly() -> Result<()> {
    let found = util::probe(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--version"]))
        .context("rustup is needed to run the nightly toolchain")?;
    if found.is_none() {
        bail!(
            "the {TOOLCHAIN} toolchain is missing (cargo-fuzz needs it for the sanitizers): \
             rustup toolchain install {TOOLCHAIN} --profile minimal"
        );
    }
    Ok(())
}

/// Installs cargo-fuzz unless it is already on PATH (idempotent).
fn cargo_fuzz() -> Result<()> {
    if util::which("cargo-fuzz").is_some() {
        return Ok(());
    }
    util::run(
        "installing cargo-fuzz (a few minutes, once)",
        util::cargo().args(["install", "cargo-fuzz", "--locked"]),
    )?;
    if util::which("cargo-fuzz").is_none() {
        bail!("cargo-fuzz is still not on PATH after installing it");
    }
    Ok(())
}

/// Final stats (`-print_final_stats=1`), or the last progress line if the
/// run died first, and the failure's first lines.
fn parse_log(text: &str) -> Run {
    let stat = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut run = Run {
        execs: stat("number_of_executed_units"),
        per_sec: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
        peak_rss_mb: stat("peak_rss_mb"),
        ..Run::default()
    };
    if run.execs.is_none() {
        // "#123456\tpulse  cov: ... exec/s: 789 rss: 45Mb"
        if let Some(last) = text.lines().rev().find(|l| l.starts_with('#')) {
            run.execs = last
                .trim_start_matches('#')
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok());
            run.per_sec = field_after(last, "exec/s:");
        }
    }
    let start = text.lines().position(|l| {
        l.contains("panicked at")
            || l.contains("==ERROR:")
            || l.contains("ERROR: libFuzzer")
            || l.starts_with("SUMMARY:")
    });
    if let Some(i) = start {
        let lines: Vec<&str> = text.lines().skip(i).take(40).collect();
        run.failure = Some(lines.join("\n"));
    }
    run.artifact = text.lines().find_map(|l| {
        l.split("Test unit written to ")
            .nth(1)
            .map(|p| Path::new(p.trim()).to_path_buf())
            .map(|p| {
                if p.is_absolute() {
                    p
                } else {
                    util::root().join(p)
                }
            })
    });
    run
}

fn field_after(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn show(v: Option<u64>) -> String {
    v.map_or("?".to_string(), |n| n.to_string())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex(bytes: &[u8], max: usize) -> String {
    let shown: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        format!("{shown}... (first {max})")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_final_stats() {
        let log = "#2\tINITED cov: 10\n#1000\tpulse  cov: 10 ft: 20 corp: 3/30b exec/s: 500 rss: 40Mb\n\
                   Done 123456 runs in 61 second(s)\nstat::number_of_executed_units: 123456\n\
                   stat::average_exec_per_sec:     2023\nstat::new_units_added:         17\n\
                   stat::slowest_unit_time_sec:   0\nstat::peak_rss_mb:             88\n";
        let r = parse_log(log);
        assert_eq!(
            (r.execs, r.per_sec, r.new_units, r.peak_rss_mb),
            (Some(123_456), Some(2023), Some(17), Some(88))
        );
        assert!(r.failure.is_none() && r.artifact.is_none());
    }

    #[test]
    fn reads_a_crash() {
        let log = "#4096\tpulse  cov: 10 ft: 20 corp: 3/30b exec/s: 2048 rss: 40Mb\n\
                   thread '<unnamed>' panicked at src/tls.rs:1:1:\nboom\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-ab\n";
        let r = parse_log(log);
        assert_eq!((r.execs, r.per_sec), (Some(4096), Some(2048)));
        assert!(
            r.failure
                .unwrap()
                .starts_with("thread '<unnamed>' panicked")
        );
        assert_eq!(
            r.artifact,
            Some(PathBuf::from("/w/fuzz/artifacts/x/crash-ab"))
        );
    }
}

//! `cargo xtask`: the one entry point for setting up, building, running,
//! testing and benchmarking netprobe. See `cargo xtask --help`.

mod bench;
mod build_cmd;
mod dist;
mod fuzz;
mod kernels;
mod lint;
mod run;
mod setup;
mod test;
mod util;

use std::{ffi::OsString, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(bin_name = "cargo xtask", about = "netprobe developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check and install what building and testing need (idempotent; installs need root)
    Setup,
    /// Set up, then build netprobe (release unless --debug)
    Build {
        /// Release build; the default, accepted for habit's sake
        #[arg(long, conflicts_with = "debug")]
        release: bool,
        /// Debug build of the userspace binary (the eBPF object is release either way)
        #[arg(long)]
        debug: bool,
    },
    /// Set up, then build the static binary, completions, man pages and the
    /// OCI image into target/dist, and pin the image's digest in deploy/
    Dist,
    /// Set up, build, then exec netprobe as root with ARGS
    Run {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Set up, build, run the unit tests, then the privileged lab tests (as root)
    Test {
        /// Passed to every test harness, e.g. a name filter or --nocapture
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Set up, build, then measure netprobe in lab namespaces (as root): table
    /// on stdout, target/bench/bench.json and bench.md
    Bench {
        /// Runs of each measurement (default 5; 2 with --quick)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
        runs: Option<u32>,
        /// CI scale: fewer runs and shorter windows
        #[arg(long)]
        quick: bool,
        /// Only these: incident1,incident2,startup,interfaces,storm,throughput,testrun
        #[arg(long, value_name = "NAME,...")]
        only: Option<String>,
    },
    /// Run every cargo-fuzz target for a bounded time (nightly; installs cargo-fuzz)
    Fuzz {
        /// Seconds per target
        #[arg(long, value_name = "N", default_value_t = 30)]
        seconds: u64,
        /// Only these targets (default: all)
        #[arg(value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Boot Debian's kernels (5.10, 6.1, 6.12) under QEMU and run doctor and
    /// a trace check in each (as root; `cargo xtask test` runs it too)
    Kernels {
        /// Only these kernels (labels: 5.10, 6.1, 6.12)
        #[arg(value_name = "LABEL")]
        labels: Vec<String>,
    },
    /// cargo fmt --all -- --check
    FmtCheck,
    /// Set up, then clippy the workspace (eBPF crate excluded) with warnings denied
    Clippy,
}

fn main() -> ExitCode {
    // Print the cause chain on one line ourselves: anyhow's Debug output would
    // add a backtrace to CI logs whenever RUST_BACKTRACE is set.
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    // Must come first: it edits the process environment, which is only sound
    // while no other thread exists.
    util::init_env()?;
    match Cli::parse().cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release: _, debug } => build_cmd::build(!debug).map(drop),
        Cmd::Dist => dist::dist(),
        Cmd::Run { args } => run::run(args),
        Cmd::Test { args } => test::test(&args),
        Cmd::Bench { runs, quick, only } => bench::bench(&bench::Options { runs, quick, only }),
        Cmd::Fuzz { seconds, targets } => fuzz::fuzz(seconds, &targets),
        Cmd::Kernels { labels } => {
            let bin = build_cmd::build(true)?;
            kernels::run(&bin, &labels).map(drop)
        }
        Cmd::FmtCheck => lint::fmt_check(),
        Cmd::Clippy => lint::clippy(),
    }
}

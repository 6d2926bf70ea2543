//! The lab half of `cargo xtask bench`: builds its own namespaces, runs
//! every measurement several times and writes the raw samples as JSON for
//! xtask to summarise (median, spread, table, Markdown).
//!
//! Root only. `NETPROBE_BIN` names the binary under test (xtask sets it).
//!
//! ```text
//! bench --runs N [--quick] [--only NAME,...] --out FILE
//! ```
//!
//! NAME: incident1, incident2, startup, interfaces, storm, throughput, testrun.
//!
//! Modules, one measurement each: [`incident1`], [`incident2`] (time to
//! diagnosis), [`startup`] (start-up and idle memory against bpftrace),
//! [`interfaces`] (start-up, memory and exit with 1, 100, 300 interfaces),
//! [`storm`] (completeness under a retransmit storm, peers in
//! [`storm_peers`]), [`throughput`] (iperf3 with and without netprobe or
//! tcpdump), [`testrun`] (the classifier's ns per packet on [`frames`]).
//! Helpers: [`np`] (netprobe runs), [`record`] (rows and runs that may
//! fail), [`rss`], [`bpf`] (the empty TC program and program info).

mod bpf;
mod frames;
mod hooks;
mod incident1;
mod incident2;
mod interfaces;
mod np;
mod record;
mod rss;
mod startup;
mod storm;
mod storm_peers;
mod testrun;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use record::Row;

/// What every measurement is told.
pub struct Config {
    /// Runs of each measurement.
    pub runs: usize,
    /// CI scale: shorter windows.
    pub quick: bool,
}

/// A measurement: every run of it, as rows.
type Bench = fn(&Config) -> Vec<Row>;

/// The measurements, in priority order.
const MEASUREMENTS: [(&str, Bench); 8] = [
    ("incident1", incident1::bench),
    ("incident2", incident2::bench),
    ("startup", startup::bench),
    ("interfaces", interfaces::bench),
    ("storm", storm::bench),
    ("throughput", throughput::bench),
    ("testrun", testrun::bench),
    ("hooks", hooks::bench),
];

impl Config {
    /// `full` normally, `quick` with `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

fn main() -> ExitCode {
    let (cfg, only, out) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}\nusage: bench --runs N [--quick] [--only NAME,...] --out FILE");
            return ExitCode::from(2);
        }
    };
    if !netprobe_tests::is_root() {
        eprintln!("bench: needs root (namespaces, eBPF, nft)");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    // A failed measurement gives "not measured" rows; the next one runs.
    for (name, bench) in MEASUREMENTS {
        if only.as_ref().is_none_or(|o| o.iter().any(|x| x == name)) {
            rows.extend(bench(&cfg));
        }
    }
    eprintln!("bench: lab done in {:.0?}", started.elapsed());
    match record::write(&out, &cfg, &rows) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: writing {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

type Args = (Config, Option<Vec<String>>, PathBuf);

fn parse_args() -> Result<Args, String> {
    let mut runs = None;
    let mut quick = false;
    let mut only = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--runs" => {
                let v = args.next().ok_or("--runs needs a number")?;
                let n: usize = v.parse().map_err(|_| format!("bad --runs {v:?}"))?;
                if !(1..=50).contains(&n) {
                    return Err("--runs must be 1..=50".into());
                }
                runs = Some(n);
            }
            "--only" => {
                let v = args.next().ok_or("--only needs names")?;
                let names: Vec<String> = v.split(',').map(String::from).collect();
                if let Some(bad) = names
                    .iter()
                    .find(|n| !MEASUREMENTS.iter().any(|(m, _)| m == n))
                {
                    return Err(format!("unknown measurement {bad:?}"));
                }
                only = Some(names);
            }
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a path")?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let runs = runs.unwrap_or(if quick { 2 } else { 5 });
    let out = out.ok_or("--out is required")?;
    Ok((Config { runs, quick }, only, out))
}

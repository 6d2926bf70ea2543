//! The `netprobe` binary: parse, prepare the process (namespace, tracefs),
//! start the runtime, dispatch. Errors end as one line on stderr.

use std::process::ExitCode;

use clap::Parser as _;
use probe_user::{
    cli::{self, Cli, Command},
    correlate, doctor,
    kernel::netns,
    kernel::privileges,
    kernel::tracefs,
    model::event::Event,
    replay,
    sinks::capture,
    sinks::output::{Format, Sink},
    sinks::top,
    trace,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("netprobe: {}", cli::one_line_error(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            use std::io::Write as _;
            writeln!(
                buf,
                "netprobe: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netprobe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Namespace and mount changes happen here, while the process has one
/// thread: setns and unshare apply to the caller, and runtime threads
/// inherit them. Returns the inode of the namespace the session runs in.
fn prepare(netns_spec: Option<&str>) -> anyhow::Result<Option<u32>> {
    if let Some(msg) = privileges::check() {
        anyhow::bail!("{msg}");
    }
    if let Some(msg) = privileges::optional_warning() {
        log::warn!("{msg}");
    }
    if let Some(spec) = netns_spec {
        netns::enter(spec)?;
    }
    if !tracefs::mounted() {
        tracefs::mount_private()?;
    }
    tracefs::check_all()?;
    Ok(netns::current_inode())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Trace(args) => {
            let tc_netns = prepare(args.common.netns.as_deref())?;
            runtime()?.block_on(trace::run(args, tc_netns))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top(args) => {
            let tc_netns = prepare(args.common.netns.as_deref())?;
            runtime()?.block_on(top::run(args, tc_netns))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Capture(args) => {
            let tc_netns = prepare(args.common.netns.as_deref())?;
            runtime()?.block_on(capture::run(args, tc_netns))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let input: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let file = std::fs::File::open(&args.file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
                Box::new(std::io::BufReader::new(file))
            };
            let config = correlate::Config {
                handshake_timeout: args.handshake_timeout,
                ..Default::default()
            };
            let result = replay::replay(input, config)?;
            // Not a recording at all (a pcap, a text log, an empty file):
            // an error, not an empty replay.
            if result.events == 0 {
                match result.skipped.first() {
                    Some((line, why)) => anyhow::bail!(
                        "{}: not a `netprobe trace --json` recording (line {line}: {why})",
                        args.file.display()
                    ),
                    None => anyhow::bail!("{}: no events in it", args.file.display()),
                }
            }
            for (line, why) in &result.skipped {
                eprintln!("netprobe: line {line} skipped: {why}");
            }
            let mut sink = Sink::stdout(if args.json {
                Format::Json
            } else {
                Format::Text
            });
            // Diagnoses and recoveries in time order, as the live run wrote them.
            let mut out: Vec<&Event> = result.diagnoses.iter().chain(&result.recovered).collect();
            out.sort_by_key(|e| e.time);
            for event in out {
                sink.emit(event)?;
            }
            sink.flush()?;
            eprintln!(
                "netprobe: replayed {} events: {} diagnoses ({} in the recording), {} recovered",
                result.events,
                result.diagnoses.len(),
                result.recorded.len(),
                result.recovered.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            cli::completions(shell, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            for page in cli::man_pages(&dir)? {
                eprintln!("netprobe: wrote {}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            if let Some(spec) = args.netns.as_deref() {
                netns::enter(spec)?;
            }
            if !tracefs::mounted() && privileges::check().is_none() {
                let _ = tracefs::mount_private();
            }
            let checks = doctor::run();
            let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
            for c in &checks {
                println!(
                    "{} {:width$}  {}",
                    match (c.ok, c.detail.starts_with("off (")) {
                        (true, false) => "ok  ",
                        (true, true) => "off ",
                        (false, _) => "FAIL",
                    },
                    c.name,
                    c.detail
                );
            }
            Ok(if checks.iter().all(|c| c.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

//! Command-line contract (shared/design.md).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `netprobe --version`, the `start` record and the capture bundle: the
/// crate version and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NETPROBE_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "netprobe",
    version = VERSION,
    about = "Names the cause of TLS handshake timeouts and retransmit storms, with evidence and the fix"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream events (and diagnoses) until Ctrl-C.
    Trace(TraceArgs),
    /// Check what this kernel and these privileges allow.
    Doctor(DoctorArgs),
    /// Live retransmit histograms, pending handshakes and diagnoses.
    Top(TopArgs),
    /// Write one incident capture bundle (pcapng, events, state, report).
    Capture(CaptureArgs),
    /// Run the correlator over a recorded `trace --json` stream (no root needed).
    Replay(ReplayArgs),
    /// Print a shell completion script (e.g. `netprobe completions bash >
    /// /etc/bash_completion.d/netprobe`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (netprobe.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

/// The completion script for `shell`, from the same definitions as the parser.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "netprobe", out);
}

/// Writes netprobe.1 and netprobe-SUBCOMMAND.1 into `dir`; returns the files.
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut write = |name: String, cmd: clap::Command| -> std::io::Result<()> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page)?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("netprobe-{}", sub.get_name());
        // clap keeps names as &'static str: a few bytes, once per process.
        let title: &'static str = Box::leak(name.clone().into_boxed_str());
        write(name, sub.clone().name(title).version(VERSION))?;
    }
    write("netprobe".into(), cmd)?;
    Ok(written)
}

/// clap's message for bad arguments on one line, keeping what it says is
/// missing or wrong, its tip ("a similar argument exists") and the usage:
/// `the following required arguments were not provided: --out <DIR> (usage:
/// netprobe capture --out <DIR>; see --help)`.
pub fn one_line_error(rendered: &str) -> String {
    let mut what = Vec::new();
    let mut tips = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if line.starts_with("For more information") {
            continue;
        } else if let Some(t) = line.strip_prefix("tip: ") {
            tips.push(t.to_string());
        } else if usage.is_none() {
            what.push(line.trim_start_matches("error: ").to_string());
        }
    }
    let mut out = what.join(" ");
    let mut extra = tips;
    if let Some(u) = usage {
        extra.push(format!("usage: {u}; see --help"));
    }
    if !extra.is_empty() {
        out += &format!(" ({})", extra.join("; "));
    }
    out
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Screen refresh period.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub refresh: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// New directory to write the bundle into (must not exist).
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// Stop after this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, conflicts_with = "until_diagnosis")]
    pub duration: Option<Duration>,
    /// Stop after the first diagnosis (or after --max-wait).
    #[arg(long)]
    pub until_diagnosis: bool,
    /// Give up waiting for a diagnosis after this long.
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// Cap on the bundle's size in MiB; capture stops, with a message, when reached.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub max_size_mib: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A file written by `netprobe trace --json` (`-` for stdin).
    pub file: std::path::PathBuf,
    /// JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Handshake timeout to apply (as given to `trace`).
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// JSON lines on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print only diagnoses and recoveries (and the `start` record and the
    /// final `stats`): no per-packet events. Metrics still count everything.
    #[arg(long)]
    pub diagnoses_only: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (bound in the
    /// namespace the session runs in, i.e. the --netns one when given).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What every tracing command (trace, top, capture) takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TCP port to watch for TLS handshakes (repeatable, or a list:
    /// 443,6443). Default: 443 and 6443.
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,
    /// Interface to attach to (repeatable). Default: every interface that is
    /// up, and those that come up later.
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// How long a ClientHello may wait for its ServerHello.
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Run the namespace-bound parts (TC attach, state look-ups) in this
    /// network namespace: a name under /run/netns or a path such as
    /// /proc/PID/ns/net.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ring_kib)]
    pub ring_kib: u32,
    /// How often a `stats` line is written.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,
    /// The container runtime's CRI socket, for pod names and namespaces
    /// (`none`: cgroups only). Default: $NETPROBE_CRI_SOCKET, else
    /// containerd's /run/containerd/containerd.sock, else CRI-O's
    /// /var/run/crio/crio.sock when only that exists.
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<String>,
    /// Never send an ARP/ND probe (who claims this address), a path check
    /// or a TLS handshake of netprobe's own through each claimant MAC; the
    /// diagnosis then rests on what the wire and the tables show.
    #[arg(long)]
    pub no_probe: bool,
}

impl CommonArgs {
    pub fn ports(&self) -> Vec<u16> {
        if self.ports.is_empty() {
            vec![443, 6443]
        } else {
            self.ports.clone()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Check inside this network namespace.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 3s, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "`{s}` is not an address and port (examples: 127.0.0.1:9464, 0.0.0.0:9464, [::]:9464)"
        )
    })
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err("must be a power of two between 4 and 1048576".into());
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_line(args: &[&str]) -> String {
        one_line_error(&parse(args).unwrap_err().to_string())
    }

    #[test]
    fn errors_keep_what_is_missing_the_tip_and_the_usage() {
        let e = error_line(&["capture"]);
        assert!(
            e.starts_with("the following required arguments were not provided: --out <DIR>"),
            "{e}"
        );
        assert!(e.contains("usage: netprobe capture --out <DIR>"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = error_line(&["trace", "--prot", "443"]);
        assert!(e.contains("unexpected argument '--prot'"), "{e}");
        assert!(e.contains("a similar argument exists: '--port'"), "{e}");
        let e = error_line(&["tarce"]);
        assert!(e.contains("similar subcommand exists: 'trace'"), "{e}");
        let e = error_line(&["trace", "--port", "0"]);
        assert!(e.contains("invalid value '0' for '--port <PORT>'"), "{e}");
    }

    #[test]
    fn version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains(" (commit "), "{VERSION}");
        let err = parse(&["--version"]).unwrap_err();
        assert!(err.to_string().contains(VERSION), "{err}");
    }

    #[test]
    fn completions_and_man_pages_come_from_the_parser() {
        let mut bash = Vec::new();
        completions(clap_complete::Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("--handshake-timeout") && bash.contains("replay"));
        let dir = std::env::temp_dir().join(format!("netprobe-man-{}", std::process::id()));
        let pages = man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"netprobe.1".to_string()), "{names:?}");
        assert!(names.contains(&"netprobe-trace.1".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("man")), "{names:?}");
        let trace = std::fs::read_to_string(dir.join("netprobe-trace.1")).unwrap();
        assert!(trace.contains("handshake\\-timeout"), "{trace}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("netprobe").chain(args.iter().copied()))
    }

    #[test]
    fn ports_default_and_range() {
        let Command::Trace(t) = parse(&["trace"]).unwrap().command else {
            panic!()
        };
        assert_eq!(t.common.ports(), vec![443, 6443]);
        assert_eq!(t.common.handshake_timeout, Duration::from_secs(3));
        let Command::Trace(t) = parse(&["trace", "--port", "8443", "--port", "1"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(t.common.ports(), vec![8443, 1]);
        let Command::Trace(t) = parse(&["trace", "--port", "443,6443", "--port", "8443"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(t.common.ports(), vec![443, 6443, 8443]);
        assert!(parse(&["trace", "--port", "443,0"]).is_err());
        assert!(
            parse(&[
                "capture",
                "--out",
                "/tmp/x",
                "--duration",
                "5s",
                "--until-diagnosis"
            ])
            .is_err()
        );
        assert!(parse(&["trace", "--port", "0"]).is_err());
        assert!(parse(&["trace", "--port", "70000"]).is_err());
        assert!(parse(&["trace", "--handshake-timeout", "0s"]).is_err());
        assert!(parse(&["trace", "--ring-kib", "3"]).is_err());
        let Command::Trace(t) = parse(&["trace", "--metrics-listen", "[::1]:9464"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(t.metrics_listen, Some("[::1]:9464".parse().unwrap()));
        for bad in ["9464", "localhost:9464", "127.0.0.1:70000", "127.0.0.1"] {
            let err = parse(&["trace", "--metrics-listen", bad])
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not an address and port"), "{bad}: {err}");
        }
    }
}

//! Command-line contract (shared/design.md).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "netprobe",
    version,
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
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (bound in the
    /// namespace the session runs in, i.e. the --netns one when given).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What every tracing command (trace, top, capture) takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TCP port to watch for TLS handshakes (repeatable). Default: 443 and 6443.
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
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

//! Per-packet cost seen as TCP throughput: iperf3 between two namespaces
//! over one veth, four ways, interleaved within every run (the order
//! rotates run by run): baseline; netprobe attached in the sender's
//! namespace with iperf3 on an unwatched port; the same with the port
//! watched (`--port 5201`); `tcpdump -i IF port 5201 -w /dev/null` instead.

use std::net::SocketAddr;
use std::time::Duration;

use netprobe_tests::peers::wait_listening;
use netprobe_tests::{Background, Host, Lab, Stream};
use serde_json::Value;

use crate::record::{Row, ratios, repeat};
use crate::{Config, np};

const SECTION: &str = "throughput (iperf3 over veth)";
const PORT: u16 = 5201;

#[derive(Clone, Copy)]
enum Mode {
    Baseline,
    Unwatched,
    Watched,
    Tcpdump,
}

const MODES: [Mode; 4] = [
    Mode::Baseline,
    Mode::Unwatched,
    Mode::Watched,
    Mode::Tcpdump,
];

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Unwatched => "netprobe attached, port not watched",
            Mode::Watched => "netprobe, traffic on a watched port",
            Mode::Tcpdump => "tcpdump port 5201 -w /dev/null",
        }
    }
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let secs = cfg.pick(5, 2);
    let mut lab = Lab::new("bench-tput");
    let (a, b) = lab.pair();
    let server_addr = SocketAddr::new(b.ipv4.into(), PORT);
    let mut server = b.spawn([
        "iperf3",
        "-s",
        "-B",
        &b.ipv4.to_string(),
        "-p",
        &PORT.to_string(),
    ]);
    wait_listening(&b, server_addr, &mut server);

    let runs = repeat("throughput", cfg, |i| {
        let mut gbps = [0.0; 4];
        for k in 0..MODES.len() {
            let m = (k + i) % MODES.len();
            gbps[m] = measure(&a, &b, MODES[m], secs);
        }
        gbps
    });
    server.kill();
    lab.teardown();

    let col = |m: usize| runs.each(|g| g[m]);
    let mut rows = Vec::new();
    for (m, mode) in MODES.iter().enumerate() {
        rows.push(Row::new(SECTION, format!("{}, {secs} s", mode.label()), "Gb/s").samples(col(m)));
    }
    for (m, mode) in MODES.iter().enumerate().skip(1) {
        let mut r = Row::new(SECTION, format!("{} / baseline", mode.label()), "%").samples(ratios(
            &col(m),
            &col(0),
            true,
        ));
        if !matches!(mode, Mode::Tcpdump) {
            r = r.reference("target ≥ 97 %, and above tcpdump's");
        }
        rows.push(r);
    }
    runs.finish(rows)
}

/// One iperf3 run from `a` to `b` with `mode` set up around it, in Gb/s.
fn measure(a: &Host, b: &Host, mode: Mode, secs: u32) -> f64 {
    let watched = format!("{PORT}");
    let _np = match mode {
        Mode::Unwatched => Some(np::trace(a.name(), &[]).np),
        Mode::Watched => Some(np::trace(a.name(), &["--port", &watched]).np),
        _ => None,
    };
    let _dump = matches!(mode, Mode::Tcpdump).then(|| tcpdump(a));
    let done = a.try_exec(
        [
            "iperf3",
            "-c",
            &b.ipv4.to_string(),
            "-p",
            &watched,
            "-t",
            &secs.to_string(),
            "-O",
            "1",
            "-J",
        ],
        Duration::from_secs(u64::from(secs) + 20),
    );
    assert!(
        done.success(),
        "iperf3 ({}): {}",
        mode.label(),
        done.report()
    );
    let v: Value = serde_json::from_str(&done.stdout()).expect("iperf3 -J output");
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no end.sum_received in iperf3 output: {}", done.report()));
    bps / 1e9
}

/// tcpdump on the sender's interface, writing nothing anywhere.
fn tcpdump(a: &Host) -> Background {
    let filter_port = PORT.to_string();
    let mut p = a.spawn([
        "tcpdump",
        "-i",
        &a.ifname,
        "-nn",
        "port",
        &filter_port,
        "-w",
        "/dev/null",
    ]);
    let up = p.wait_line(
        Stream::Stderr,
        |l| l.contains("listening on"),
        Duration::from_secs(10),
    );
    assert!(up.is_some(), "tcpdump did not start: {}", p.report());
    p
}

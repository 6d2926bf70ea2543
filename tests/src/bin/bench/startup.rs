//! Start-up and idle memory, netprobe against bpftrace running an
//! equivalent tracepoint script: exec → ready line (netprobe's `netprobe:
//! ready` on stderr once every probe is attached; bpftrace's BEGIN output,
//! which runs after its probes are attached), then peak RSS (VmHWM) after
//! an idle window. The two alternate which goes first, run by run.

use std::process::Command;
use std::time::{Duration, Instant};

use netprobe_tests::{Background, Lab, Stream};

use crate::record::{Row, ratios, repeat};
use crate::{Config, np, rss};

const SECTION: &str = "start-up and memory";
const BPFTRACE_SCRIPT: &str = "tracepoint:tcp:tcp_retransmit_skb { @[pid] = count(); } \
     tracepoint:neigh:neigh_update { @n = count(); } BEGIN { printf(\"ready\\n\"); }";

#[derive(Default)]
struct Run {
    np_ready: f64,
    np_peak: f64,
    bt_ready: Option<f64>,
    bt_peak: Option<f64>,
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let idle = Duration::from_secs(cfg.pick(10, 5));
    let bpftrace = which("bpftrace");
    let mut lab = Lab::new("bench-start");
    let (a, _b) = lab.pair();
    let runs = repeat("start-up and idle memory", cfg, |i| {
        let mut r = Run::default();
        let bt_first = i % 2 == 1;
        if bt_first && bpftrace {
            (r.bt_ready, r.bt_peak) = run_bpftrace(idle);
        }
        (r.np_ready, r.np_peak) = run_netprobe(a.name(), idle);
        if !bt_first && bpftrace {
            (r.bt_ready, r.bt_peak) = run_bpftrace(idle);
        }
        r
    });
    lab.teardown();
    let np_ready = runs.each(|r| r.np_ready);
    let np_peak = runs.each(|r| r.np_peak);
    let paired = |f: fn(&Run) -> Option<f64>, g: fn(&Run) -> f64| -> (Vec<f64>, Vec<f64>) {
        runs.ok.iter().filter_map(|r| Some((f(r)?, g(r)))).unzip()
    };
    let (bt_ready, np_ready_p) = paired(|r| r.bt_ready, |r| r.np_ready);
    let (bt_peak, np_peak_p) = paired(|r| r.bt_peak, |r| r.np_peak);
    let secs = idle.as_secs();
    let mut rows = vec![
        Row::new(SECTION, "netprobe: exec → ready (1 interface)", "s").samples(np_ready),
        Row::new(SECTION, "bpftrace: exec → ready (2 tracepoints)", "s").samples(bt_ready.clone()),
        Row::new(SECTION, "start-up netprobe / bpftrace", "x")
            .samples(ratios(&np_ready_p, &bt_ready, false))
            .note("netprobe also attaches TC ingress/egress, reads BTF, enters the netns"),
        Row::new(SECTION, format!("netprobe: peak RSS, idle {secs} s"), "MiB").samples(np_peak),
        Row::new(SECTION, format!("bpftrace: peak RSS, idle {secs} s"), "MiB")
            .samples(bt_peak.clone()),
        Row::new(SECTION, "peak RSS netprobe / bpftrace", "x")
            .samples(ratios(&np_peak_p, &bt_peak, false)),
    ];
    if !bpftrace {
        for r in &mut rows[1..] {
            if r.name.contains("bpftrace") {
                r.not_measured =
                    Some("bpftrace not installed (`cargo xtask setup` installs it)".into());
            }
        }
    }
    let mut rows = runs.finish(rows);
    rows.push(Row::not_measured(
        SECTION,
        "bcc tcpretrans: start-up, memory",
        "bcc compiles C against kernel headers at start-up; this kernel ships none \
         (no /lib/modules/$(uname -r)/build, no CONFIG_IKHEADERS)",
    ));
    rows
}

/// Ready time and peak RSS of `netprobe trace --json --netns NS`.
fn run_netprobe(netns: &str, idle: Duration) -> (f64, f64) {
    let mut s = np::trace(netns, &[]);
    std::thread::sleep(idle);
    let peak = rss::peak_mib(s.np.pid()).expect("netprobe exited while idle");
    s.np.stop();
    (s.ready_after.as_secs_f64(), peak)
}

/// The same for bpftrace; (None, None) when it does not start (reported on
/// stderr, the row then says "not measured").
fn run_bpftrace(idle: Duration) -> (Option<f64>, Option<f64>) {
    let mut c = Command::new("bpftrace");
    c.args(["-B", "line", "-e", BPFTRACE_SCRIPT]);
    let t = Instant::now();
    let mut p = Background::spawn(c, "bpftrace");
    let ready = p.wait_line(Stream::Stdout, |l| l.trim() == "ready", np::READY_TIMEOUT);
    let ready_after = t.elapsed().as_secs_f64();
    if ready.is_none() {
        eprintln!("bench: bpftrace did not get ready: {}", p.report());
        p.kill();
        return (None, None);
    }
    std::thread::sleep(idle);
    let peak = rss::peak_mib(p.pid());
    p.stop(Duration::from_secs(5));
    (Some(ready_after), peak)
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(prog).is_file()))
}

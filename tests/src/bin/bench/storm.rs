//! Completeness under a retransmit storm: 1,000 established connections
//! from one namespace to a peer that then drops silently (nft), one small
//! segment sent on each, retransmitted with back-off for the window, then
//! every connection aborted. netprobe's `retransmit` events for the lab's
//! flows against the kernel's TcpRetransSegs of the lab's namespaces over
//! the same span (netprobe ready → all connections gone), its `lost`
//! counter, the runs the kernel skipped (see the README: a shared machine's
//! other BPF tracing programs make whole retransmit bursts invisible), and
//! its peak RSS with that many flows.

use std::time::Duration;

use netprobe_tests::{Lab, poll_until};

use crate::record::{Row, ratios, repeat};
use crate::storm_peers::{Client, Server};
use crate::{Config, bpf, np, rss};

const SECTION: &str = "retransmit storm";
const CONNS: usize = 1000;
const PORT: u16 = 9000;

struct Run {
    kernel: f64,
    netprobe: f64,
    lost: Option<f64>,
    /// Runs of netprobe's tcp_retransmit program the kernel skipped.
    skipped: f64,
    /// Runs of it (the kernel's run-time statistics, on for the run).
    ran: f64,
    /// SYN and SYN-ACK retransmits (TcpExt TCPSynRetrans); SYN-ACKs are
    /// counted in RetransSegs but reported by another tracepoint.
    syn: f64,
    /// netprobe's events of the lab's flows in SYN_SENT (SYN retransmits).
    syn_seen: f64,
    /// netprobe's `synack_retransmit` events of the lab's listeners.
    synack_seen: f64,
    /// Retransmits the kernel counted but could not send (TCPRetransFail).
    failed: f64,
    peak: f64,
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let window = Duration::from_secs(cfg.pick(10, 5));
    let runs = repeat("retransmit storm", cfg, |_| one(window));
    let kernel = runs.each(|r| r.kernel);
    let seen = runs.each(|r| r.netprobe);
    let w = window.as_secs();
    let mut rows = runs.finish(vec![
        Row::new(
            SECTION,
            format!("kernel TcpRetransSegs ({CONNS} conns, {w} s)"),
            "segs",
        )
        .samples(kernel.clone()),
        Row::new(SECTION, "netprobe retransmit events (lab flows)", "events").samples(seen.clone()),
        Row::new(SECTION, "netprobe / kernel", "%")
            .samples(ratios(&seen, &kernel, true))
            .reference("target 100 %"),
        Row::new(SECTION, "netprobe stats.lost", "records")
            .samples(runs.ok.iter().filter_map(|r| r.lost))
            .reference("target 0"),
        Row::new(SECTION, "tcp_retransmit runs skipped by the kernel", "runs")
            .samples(runs.each(|r| r.skipped))
            .note(
                "bpf_prog_info.recursion_misses: a tracepoint firing while any \
                 kprobe/tracepoint program runs on that CPU skips every program; \
                 machine-wide, so an upper bound for the lab's flows",
            ),
        Row::new(SECTION, "tcp_retransmit program runs", "runs")
            .samples(runs.each(|r| r.ran))
            .note("bpf_prog_info.run_cnt with BPF_ENABLE_STATS on: machine-wide"),
        Row::new(SECTION, "kernel TCPSynRetrans (SYN and SYN-ACK)", "segs")
            .samples(runs.each(|r| r.syn))
            .note("SYN-ACK retransmits count in RetransSegs; netprobe reports them as synack_retransmit"),
        Row::new(SECTION, "netprobe SYN_SENT retransmit events", "events")
            .samples(runs.each(|r| r.syn_seen)),
        Row::new(SECTION, "netprobe synack_retransmit events", "events")
            .samples(runs.each(|r| r.synack_seen)),
        Row::new(SECTION, "kernel TCPRetransFail", "segs").samples(runs.each(|r| r.failed)),
        Row::new(SECTION, "kernel − netprobe − lost", "segs")
            .samples(runs.each(|r| {
                r.kernel - r.netprobe - r.synack_seen - r.lost.unwrap_or(0.0)
            }))
            .reference("0, or at most the skipped runs"),
        Row::new(
            SECTION,
            format!("netprobe: peak RSS, {CONNS} flows retransmitting"),
            "MiB",
        )
        .samples(runs.each(|r| r.peak)),
    ]);
    rows.push(Row::not_measured(
        SECTION,
        "bcc tcpretrans: retransmits seen",
        "bcc compiles against kernel headers, absent on this kernel",
    ));
    // Memory with 100k / 1M distinct flows and pipeline throughput come
    // from the userspace pipeline benchmark (probe-user/benches/pipeline.rs).
    rows
}

fn one(window: Duration) -> Run {
    let mut lab = Lab::new("bench-storm");
    let (a, b) = lab.pair();
    let _server = Server::start(&b, b.ipv4, PORT);
    let _stats = bpf::enable_run_time_stats().expect("BPF_ENABLE_STATS");
    let mut trace = np::trace(a.name(), &["--stats-interval", "1s"]).np;
    let kernel = || (a.tcp_retrans_segs() + b.tcp_retrans_segs()) as f64;
    let ext = |field: &str| (a.tcp_ext(field) + b.tcp_ext(field)) as f64;
    let (k0, syn0, fail0) = (kernel(), ext("TCPSynRetrans"), ext("TCPRetransFail"));

    let mut client = Client::connect(&a, b.ipv4, PORT, CONNS);
    b.nft().rule("input", &format!("tcp dport {PORT} drop"));
    client.send();
    std::thread::sleep(window);
    let peak = rss::peak_mib(trace.pid()).expect("netprobe exited during the storm");
    client.abort();
    let (k1, syn1, fail1) = (kernel(), ext("TCPSynRetrans"), ext("TCPRetransFail"));

    // Let the last events through the ring buffer and the pipe (bounded).
    let count = |t: &netprobe_tests::Netprobe| {
        t.events()
            .iter()
            .filter(|v| np::lab_event(&lab, v, "retransmit"))
            .count()
    };
    let mut last = count(&trace);
    let _ = poll_until(Duration::from_secs(10), Duration::from_secs(1), || {
        let now = count(&trace);
        let same = now == last;
        last = now;
        same.then_some(())
    });
    let prog = bpf::prog_fd(np::program_id(&trace, "tcp_retransmit"))
        .and_then(|fd| bpf::prog_info(std::os::fd::AsFd::as_fd(&fd)))
        .expect("info of netprobe's tcp_retransmit program");
    let stopped = trace.stop();
    assert!(
        !stopped.killed,
        "netprobe did not stop in time: its last records are lost"
    );
    // The final stats line is netprobe's last: without it the count would
    // miss whatever was still in the pipe (a loaded machine lags the reader).
    assert!(
        stopped
            .events
            .iter()
            .any(|v| np::is(v, "stats") && v["final"] == true),
        "netprobe's output was not read to its final stats line"
    );
    let lab_events: Vec<_> = stopped
        .events
        .iter()
        .filter(|v| np::lab_event(&lab, v, "retransmit"))
        .collect();
    let seen = lab_events.len();
    let syn_seen = lab_events
        .iter()
        .filter(|v| v["state"] == "SYN_SENT")
        .count();
    let synack_seen = stopped
        .events
        .iter()
        .filter(|v| np::lab_event(&lab, v, "synack_retransmit"))
        .count();
    Run {
        kernel: k1 - k0,
        netprobe: seen as f64,
        lost: np::lost(&stopped.events).map(|l| l as f64),
        skipped: prog.recursion_misses as f64,
        ran: prog.run_cnt as f64,
        syn: syn1 - syn0,
        syn_seen: syn_seen as f64,
        synack_seen: synack_seen as f64,
        failed: fail1 - fail0,
        peak,
    }
}

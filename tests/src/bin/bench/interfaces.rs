//! Hundreds of pods: exec → ready and peak RSS with 1, 100 and 300 up
//! interfaces in the traced namespace (lo, plus 50 or 150 veth pairs), and
//! how long netprobe takes to exit. The three sizes alternate their order
//! run by run. Then pod churn: veth pairs created and deleted per second
//! by a CNI-like loop, alone and with netprobe tracing the node, side by
//! side in each run.
//!
//! Every tcx link the kernel makes (and every one it drops while its
//! interface is still there) waits for an RCU grace period under the RTNL
//! lock, so netprobe hooks no pod veth: its socket hooks on the root
//! cgroup see the pods' sockets.

use std::time::{Duration, Instant};

use netprobe_tests::netns::Netns;
use netprobe_tests::scale_lab::{ip_batch, ready_count, veth_pairs};

use crate::record::{Row, repeat};
use crate::{Config, np, rss};

const SECTION: &str = "hundreds of pods (interfaces in the traced namespace)";
/// veth pairs per size: 1 (lo only), 100 (+ lo), 300 (+ lo).
const SIZES: [(usize, &str); 3] = [(0, "1"), (50, "100"), (150, "300")];
const STOP_GRACE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Run {
    ready: [f64; 3],
    peak: [f64; 3],
    exit: [f64; 3],
    attached: [u32; 3],
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let idle = Duration::from_secs(cfg.pick(3, 1));
    let labs: Vec<Netns> = SIZES
        .iter()
        .map(|(pairs, n)| {
            let ns = Netns::new(&format!("bench-if{n}"));
            veth_pairs(&ns, *pairs);
            ns
        })
        .collect();
    let runs = repeat("interfaces: start-up, memory, exit", cfg, |i| {
        let mut r = Run::default();
        for k in 0..SIZES.len() {
            // Rotate the order so no size always runs first.
            let s = (k + i) % SIZES.len();
            let mut started = np::trace(labs[s].name(), &[]);
            r.ready[s] = started.ready_after.as_secs_f64();
            r.attached[s] = ready_count(&started.np.stderr()).unwrap_or(0);
            std::thread::sleep(idle);
            r.peak[s] = rss::peak_mib(started.np.pid()).expect("netprobe exited while idle");
            let t = Instant::now();
            let stopped = started.np.stop_within(STOP_GRACE);
            assert!(
                stopped.clean_exit(),
                "netprobe did not exit cleanly: {}",
                stopped.stderr
            );
            r.exit[s] = t.elapsed().as_secs_f64();
        }
        r
    });
    for ns in &labs {
        ns.teardown();
    }
    let mut rows = Vec::new();
    for (s, (_, n)) in SIZES.iter().enumerate() {
        let attached: Vec<u32> = runs.each(|r| r.attached[s]);
        let note = format!(
            "interfaces in the ready line: {}",
            attached
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        rows.push(
            Row::new(SECTION, format!("exec → ready, {n} interface(s)"), "s")
                .samples(runs.each(|r| r.ready[s]))
                .note(note),
        );
    }
    for (s, (_, n)) in SIZES.iter().enumerate() {
        rows.push(
            Row::new(
                SECTION,
                format!("peak RSS, {n} interface(s), idle {} s", idle.as_secs()),
                "MiB",
            )
            .samples(runs.each(|r| r.peak[s])),
        );
    }
    for (s, (_, n)) in SIZES.iter().enumerate() {
        rows.push(
            Row::new(SECTION, format!("SIGINT → exit, {n} interface(s)"), "s")
                .samples(runs.each(|r| r.exit[s]))
                .note("every hook unlinked"),
        );
    }
    rows.push(
        Row::new(
            SECTION,
            "start-up per interface: (ready 300 − ready 1) / 300",
            "ms",
        )
        .samples(runs.each(|r| (r.ready[2] - r.ready[0]) * 1000.0 / 300.0))
        .note("pod veths get no tc hook: the sockets are seen at the root cgroup"),
    );
    let mut rows = runs.finish(rows);
    rows.extend(churn(cfg));
    rows
}

/// Pairs a churn batch creates, then deletes (one netlink request each).
const CHURN_BATCH: usize = 10;

/// veth pairs created (up, the peer in `pods`) and deleted per second in
/// `host` during `seconds`, as a CNI does for pods.
fn churn_rate(host: &Netns, pods: &Netns, seconds: f64) -> f64 {
    let started = Instant::now();
    let (mut pairs, mut round) = (0usize, 0usize);
    while started.elapsed().as_secs_f64() < seconds {
        let names: Vec<String> = (0..CHURN_BATCH).map(|i| format!("c{round}x{i}")).collect();
        let add: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "link add {n} up type veth peer name {n}p netns {}",
                    pods.name()
                )
            })
            .collect();
        ip_batch(host, &add);
        let del: Vec<String> = names.iter().map(|n| format!("link del {n}")).collect();
        ip_batch(host, &del);
        pairs += CHURN_BATCH;
        round += 1;
    }
    pairs as f64 / started.elapsed().as_secs_f64()
}

#[derive(Default)]
struct ChurnRun {
    alone: f64,
    traced: f64,
}

/// Pod churn with and without netprobe, in alternating order.
fn churn(cfg: &Config) -> Vec<Row> {
    const CHURN: &str = "pod churn (veth pairs created and deleted)";
    let seconds = cfg.pick(5, 2) as f64;
    let host = Netns::new("bench-churn");
    let pods = Netns::new("bench-churnp");
    let runs = repeat("interfaces: pod churn", cfg, |i| {
        let mut r = ChurnRun::default();
        for k in 0..2 {
            if (k + i) % 2 == 0 {
                r.alone = churn_rate(&host, &pods, seconds);
            } else {
                let mut started = np::trace(host.name(), &[]);
                r.traced = churn_rate(&host, &pods, seconds);
                let stopped = started.np.stop_within(STOP_GRACE);
                assert!(stopped.clean_exit(), "{}", stopped.stderr);
            }
        }
        r
    });
    host.teardown();
    pods.teardown();
    let rows = vec![
        Row::new(CHURN, "pairs a second, alone", "1/s").samples(runs.each(|r| r.alone)),
        Row::new(CHURN, "pairs a second, netprobe tracing the node", "1/s")
            .samples(runs.each(|r| r.traced)),
        Row::new(CHURN, "with netprobe / without (target >= 0.95)", "ratio")
            .samples(runs.each(|r| r.traced / r.alone))
            .note("measured side by side in each run"),
    ];
    runs.finish(rows)
}

//! Hundreds of pods: exec → ready and peak RSS with 1, 100 and 300 up
//! interfaces in the traced namespace (lo, plus 50 or 150 veth pairs), and
//! how long netprobe takes to exit (it unlinks every hook). The three
//! sizes alternate their order run by run.
//!
//! Every tcx link the kernel makes (and every one it drops while its
//! interface is still there) waits for an RCU grace period under the RTNL
//! lock: the last row divides the difference between 300 and 1
//! interfaces by the 600 extra hooks.

use std::time::{Duration, Instant};

use netprobe_tests::netns::Netns;
use netprobe_tests::scale_lab::{ready_count, veth_pairs};

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
            "per tcx hook linked: (ready 300 − ready 1) / 600",
            "ms",
        )
        .samples(runs.each(|r| (r.ready[2] - r.ready[0]) * 1000.0 / 600.0))
        .note("the kernel waits an RCU grace period under RTNL for each link"),
    );
    runs.finish(rows)
}

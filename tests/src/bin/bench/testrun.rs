//! Per-packet cost of the TC classifier with BPF_PROG_TEST_RUN (`bpftool
//! prog run ... repeat N`): netprobe's own loaded `tc_ingress` program, run
//! by the kernel on crafted frames: TCP on an unwatched port, a ClientHello
//! on a watched port, an ARP reply. Frames that match write records to
//! netprobe's ring buffer, so they are repeated less.

use std::process::Command;
use std::time::Duration;

use netprobe_tests::cleanup::{bpf_held, bpf_programs};
use netprobe_tests::cmd::run_bounded;
use netprobe_tests::tls_bytes::client_hello;
use netprobe_tests::tmp::TempDir;
use netprobe_tests::{Lab, Netprobe};
use serde_json::Value;

use crate::record::{Row, repeat};
use crate::{Config, frames, np};

const SECTION: &str = "per-packet cost (BPF_PROG_TEST_RUN, tc_ingress)";

/// (label, frame, repeat count)
fn cases() -> [(&'static str, Vec<u8>, u32); 3] {
    [
        (
            "TCP, unwatched port, 100 B payload",
            frames::tcp(80, &[0; 100]),
            100_000,
        ),
        (
            "ClientHello on a watched port",
            frames::tcp(6443, &client_hello(Some("kubernetes"))),
            2_000,
        ),
        ("ARP reply", frames::arp_reply(), 2_000),
    ]
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let mut lab = Lab::new("bench-testrun");
    let (a, _b) = lab.pair();
    let dir = TempDir::new();
    let cases = cases();
    for (i, (_, frame, _)) in cases.iter().enumerate() {
        std::fs::write(dir.join(&format!("frame{i}")), frame).expect("writing a frame");
    }
    let runs = repeat("BPF_PROG_TEST_RUN", cfg, |_| {
        let mut s = np::trace(a.name(), &["--port", "6443"]).np;
        let id = classifier_id(&s);
        let ns: Vec<f64> = cases
            .iter()
            .enumerate()
            .map(|(i, (_, _, n))| run_ns(id, &dir.join(&format!("frame{i}")), *n))
            .collect();
        let events = s.stop().events;
        (ns, decoded(&events))
    });
    let rows = cases
        .iter()
        .enumerate()
        .map(|(i, (label, _, n))| {
            let mut r = Row::new(SECTION, format!("{label} (repeat {n})"), "ns/pkt")
                .samples(runs.each(|r| r.0[i]));
            if i > 0 {
                let seen = runs.ok.iter().filter(|r| r.1[i - 1]).count();
                r = r.note(format!(
                    "netprobe printed it in {seen} of {} runs",
                    runs.ok.len()
                ));
            }
            r
        })
        .collect();
    runs.finish(rows)
}

/// Whether netprobe printed the crafted ClientHello and ARP reply: proof
/// that those runs took the matching path.
fn decoded(events: &[Value]) -> [bool; 2] {
    let hello = events
        .iter()
        .any(|v| np::is(v, "tls_client_hello") && v["src"] == frames::SRC_ENDPOINT);
    let arp = events
        .iter()
        .any(|v| np::is(v, "arp") && v["sender_ip"] == frames::DST_ADDR);
    [hello, arp]
}

/// Id of the `tc_ingress` program this netprobe holds.
fn classifier_id(np: &Netprobe) -> u64 {
    let held = bpf_held(Some(np.pid()));
    bpf_programs(&["tc_ingress"])
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .find(|id| held.progs.contains(id))
        .unwrap_or_else(|| panic!("netprobe (pid {}) holds no tc_ingress program", np.pid()))
}

/// Average ns per run of program `id` over `frame`, repeated `n` times.
fn run_ns(id: u64, frame: &std::path::Path, n: u32) -> f64 {
    let mut c = Command::new("bpftool");
    c.args(["-j", "prog", "run", "id", &id.to_string(), "data_in"])
        .arg(frame)
        .args(["repeat", &n.to_string()]);
    let done = run_bounded(&mut c, Duration::from_secs(30));
    assert!(done.success(), "bpftool prog run: {}", done.report());
    let v: Value = serde_json::from_str(done.stdout().trim())
        .unwrap_or_else(|e| panic!("bpftool -j prog run output ({e}): {}", done.report()));
    v["duration"]
        .as_f64()
        .unwrap_or_else(|| panic!("no duration from bpftool: {}", done.report()))
}

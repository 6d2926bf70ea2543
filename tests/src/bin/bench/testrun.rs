//! Per-packet cost of the TC classifier with BPF_PROG_TEST_RUN (`bpftool
//! prog run ... repeat N`): netprobe's own loaded `tc_ingress` program and
//! an empty TC program (`r0 = TCX_NEXT; exit`, the floor any TC program
//! pays), run by the kernel on the same crafted frames in the same run,
//! alternately: TCP on an unwatched port, bulk data on a watched port, a
//! ClientHello on a watched port, an ARP reply. Frames that match write
//! records to netprobe's ring buffer, so they are repeated less. Also what
//! the verifier made of each classifier: instructions processed, size and
//! stack, so a regression shows beside the figure it explains.

use std::os::fd::{AsFd as _, OwnedFd};
use std::process::Command;
use std::time::Duration;

use netprobe_tests::Lab;
use netprobe_tests::cmd::run_bounded;
use netprobe_tests::tls_bytes::client_hello;
use netprobe_tests::tmp::TempDir;
use serde_json::Value;

use crate::record::{Row, ratios, repeat};
use crate::{Config, bpf, frames, np};

const SECTION: &str = "per-packet cost (BPF_PROG_TEST_RUN, tc_ingress)";
/// Alternate rounds of (empty, netprobe) per case and run; medians kept.
const ROUNDS: usize = 3;

struct Case {
    label: &'static str,
    frame: Vec<u8>,
    repeat: u32,
    /// ns above the empty program the issue asks for, if any.
    target: Option<f64>,
}

fn cases() -> [Case; 4] {
    [
        Case {
            label: "TCP, unwatched port, 100 B payload",
            frame: frames::tcp(80, &[0; 100]),
            repeat: 1_000_000,
            target: Some(10.0),
        },
        Case {
            // A TLS application data record (17 03 03 len) toward the
            // server: what a watched port carries after the handshake, and
            // the classifier's most expensive bulk case (the record header
            // sends it to the client-flight slot).
            label: "bulk data on a watched port, 1400 B payload",
            frame: frames::tcp(6443, &app_data_record(1400)),
            repeat: 1_000_000,
            target: Some(15.0),
        },
        Case {
            label: "ClientHello on a watched port",
            frame: frames::tcp(6443, &client_hello(Some("kubernetes"))),
            repeat: 500,
            target: None,
        },
        Case {
            label: "ARP reply",
            frame: frames::arp_reply(),
            repeat: 500,
            target: None,
        },
    ]
}

/// The socket hook's cases: the TCP ones (a socket sees no ARP).
const SOCKET_CASES: usize = 3;
const SOCKET_SECTION: &str = "per-packet cost (BPF_PROG_TEST_RUN, sock_egress on the root cgroup)";

/// One run: per case, medians of netprobe and of the empty program.
struct Run {
    netprobe: Vec<f64>,
    empty: Vec<f64>,
    /// The same for the socket hook and an empty `cgroup_skb` program.
    socket: Vec<f64>,
    socket_empty: Vec<f64>,
    decoded: [bool; 2],
    progs: Vec<(String, bpf::ProgInfo, Vec<u32>)>,
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let mut lab = Lab::new("bench-testrun");
    let (a, _b) = lab.pair();
    let dir = TempDir::new();
    let cases = cases();
    for (i, c) in cases.iter().enumerate() {
        std::fs::write(dir.join(&format!("frame{i}")), &c.frame).expect("writing a frame");
    }
    let empty: OwnedFd = match bpf::load_empty() {
        Ok(fd) => fd,
        Err(e) => {
            return vec![Row::not_measured(
                SECTION,
                "all",
                &format!("loading the empty TC program: {e}"),
            )];
        }
    };
    let empty_id = bpf::prog_info(empty.as_fd())
        .expect("info of the empty program")
        .id;
    let empty_cg = bpf::load_empty_cgroup_skb().expect("loading an empty cgroup_skb program");
    let empty_cg_id = bpf::prog_info(empty_cg.as_fd())
        .expect("info of the empty cgroup_skb program")
        .id;
    let runs = repeat("BPF_PROG_TEST_RUN", cfg, |_| {
        let mut s = np::trace(a.name(), &["--port", "6443"]).np;
        let progs = ["tc_ingress", "tc_egress"]
            .iter()
            .map(|name| {
                let id = np::program_id(&s, name);
                let fd = bpf::prog_fd(id).expect("fd of netprobe's classifier");
                let info = bpf::prog_info(fd.as_fd()).expect("info of netprobe's classifier");
                let stack = bpf::stack_per_function(id).unwrap_or_default();
                (name.to_string(), info, stack)
            })
            .collect::<Vec<_>>();
        let id = progs[0].1.id;
        let mut netprobe = Vec::new();
        let mut floor = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let frame = dir.join(&format!("frame{i}"));
            let (mut n, mut e) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                e.push(run_ns(empty_id, &frame, c.repeat));
                n.push(run_ns(id, &frame, c.repeat));
                if c.repeat < 10_000 {
                    // Let netprobe drain its records: a full ring buffer
                    // would time the cheaper "lost" path.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            netprobe.push(median(n));
            floor.push(median(e));
        }
        // The socket hook on the same frames (the kernel's test run hands
        // a cgroup_skb program the packet from its network header). The
        // run's socket is in the bench's namespace, not the traced one:
        // a ClientHello takes the filtered path (namespace read, map
        // lookup), as a foreign namespace's does on a lab machine.
        let sock_id = np::program_id(&s, "sock_egress");
        let (mut socket, mut socket_empty) = (Vec::new(), Vec::new());
        for (i, c) in cases.iter().enumerate().take(SOCKET_CASES) {
            let frame = dir.join(&format!("frame{i}"));
            let (mut n, mut e) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                e.push(run_ns(empty_cg_id, &frame, c.repeat));
                n.push(run_ns(sock_id, &frame, c.repeat));
            }
            socket.push(median(n));
            socket_empty.push(median(e));
        }
        let events = s.stop().events;
        Run {
            netprobe,
            empty: floor,
            socket,
            socket_empty,
            decoded: decoded(&events),
            progs,
        }
    });
    let mut rows = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let n = runs.each(|r| r.netprobe[i]);
        let e = runs.each(|r| r.empty[i]);
        let above: Vec<f64> = n.iter().zip(&e).map(|(n, e)| n - e).collect();
        let mut r = Row::new(SECTION, format!("{}: netprobe", c.label), "ns/pkt")
            .samples(n.clone())
            .note(format!("repeat {}, median of {ROUNDS} rounds", c.repeat));
        if i >= 2 {
            let seen = runs.ok.iter().filter(|r| r.decoded[i - 2]).count();
            r = r.note(format!(
                "netprobe printed it in {seen} of {} runs",
                runs.ok.len()
            ));
        }
        rows.push(r);
        rows.push(
            Row::new(SECTION, format!("{}: empty TC program", c.label), "ns/pkt")
                .samples(e.clone()),
        );
        let mut r =
            Row::new(SECTION, format!("{}: netprobe − empty", c.label), "ns").samples(above);
        if let Some(t) = c.target {
            r = r.reference(format!("target ≤ {t} ns"));
        }
        rows.push(r);
        rows.push(
            Row::new(SECTION, format!("{}: netprobe / empty", c.label), "x")
                .samples(ratios(&n, &e, false)),
        );
    }
    for (i, c) in cases.iter().enumerate().take(SOCKET_CASES) {
        let n = runs.each(|r| r.socket[i]);
        let e = runs.each(|r| r.socket_empty[i]);
        let above: Vec<f64> = n.iter().zip(&e).map(|(n, e)| n - e).collect();
        rows.push(
            Row::new(
                SOCKET_SECTION,
                format!("{}: sock_egress", c.label),
                "ns/pkt",
            )
            .samples(n.clone())
            .note(format!("repeat {}, median of {ROUNDS} rounds", c.repeat)),
        );
        rows.push(
            Row::new(
                SOCKET_SECTION,
                format!("{}: empty cgroup_skb program", c.label),
                "ns/pkt",
            )
            .samples(e.clone()),
        );
        let mut r = Row::new(
            SOCKET_SECTION,
            format!("{}: sock_egress − empty", c.label),
            "ns",
        )
        .samples(above);
        if let Some(t) = c.target {
            r = r.reference(format!("tc target ≤ {t} ns"));
        }
        rows.push(r);
    }
    for (k, name) in ["tc_ingress", "tc_egress"].iter().enumerate() {
        let stacks: Vec<String> = runs
            .ok
            .iter()
            .map(|r| {
                r.progs[k]
                    .2
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        rows.push(
            Row::new(SECTION, format!("{name}: instructions verified"), "insns")
                .samples(runs.each(|r| f64::from(r.progs[k].1.verified_insns)))
                .note("bpf_prog_info.verified_insns: every path the verifier walked"),
        );
        rows.push(
            Row::new(SECTION, format!("{name}: size"), "insns")
                .samples(runs.each(|r| f64::from(r.progs[k].1.xlated_len / 8)))
                .note(format!(
                    "jited {} bytes",
                    runs.ok.first().map_or(0, |r| r.progs[k].1.jited_len)
                )),
        );
        rows.push(
            Row::new(
                SECTION,
                format!("{name}: stack of the main function"),
                "bytes",
            )
            .samples(runs.each(|r| f64::from(r.progs[k].2.first().copied().unwrap_or(0))))
            .note(format!(
                "per function: {}",
                stacks.first().map_or("?", String::as_str)
            ))
            .reference("limit 512 per call chain"),
        );
    }
    drop(empty);
    drop(empty_cg);
    runs.finish(rows)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

/// Average ns per run of program `id` over `frame`, repeated `n` times.
fn run_ns(id: u32, frame: &std::path::Path, n: u32) -> f64 {
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

/// `len` bytes starting with a TLS 1.2/1.3 application data record header.
fn app_data_record(len: usize) -> Vec<u8> {
    let mut p = vec![0x17; len];
    let body = u16::try_from(len - 5).expect("small record");
    p[1..3].copy_from_slice(&[0x03, 0x03]);
    p[3..5].copy_from_slice(&body.to_be_bytes());
    p
}

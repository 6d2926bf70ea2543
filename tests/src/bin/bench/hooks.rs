//! What netprobe's tracepoint programs cost per call, on live traffic: the
//! kernel's own run-time accounting (`BPF_ENABLE_STATS`, run_time_ns and
//! run_cnt of each program) read before and after each load, netprobe
//! tracing a lab namespace. `skb/kfree_skb` runs for every dropped skb on
//! the machine, so its cost per call bounds what a drop flood costs; the
//! loads are UDP datagrams to a closed port (not TCP: the program's first
//! test), TCP SYNs to closed ports (reason NO_SOCKET: not a path's, the
//! program stops at the reason), TCP SYNs a firewall rule drops
//! (NETFILTER_DROP) to an unwatched port (parsed, one map look-up) and to a
//! watched port (a new flow each: counted in the map and reported), and
//! accepted connections for `sock/inet_sock_set_state`. `icmp/icmp_send`:
//! UDP to a closed port (port unreachable: not TCP, the program's first
//! test after the type), TCP SYNs a `reject` rule answers with ICMP to an
//! unwatched port (parsed, one map look-up) and to a watched one (counted,
//! reported); the receiver's ICMP rate limits are lifted in its namespace
//! so every datagram is answered. `tcp/tcp_send_reset`: SYNs to a closed
//! port, unwatched (connect() refused, one after the other) and watched
//! (443, a new flow each, sent as fast as the ICMP loads).
//! Other drops on the machine in the same window count too (noted).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netprobe_tests::{Lab, py};

use crate::record::{Row, repeat};
use crate::{Config, bpf, np};

const SECTION: &str = "tracepoint programs (run-time stats, live traffic)";

/// Sends `count` UDP datagrams or TCP connection attempts, as fast as it
/// can, and prints how long that took.
const LOAD: &str = r#"
import socket, sys, time
mode, dst, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = time.monotonic()
if mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(count):
        s.sendto(b"x" * 64, (dst, port))
elif mode == "syn":
    # One SYN per connection, never answered (closing a SYN_SENT socket
    # sends nothing): a new flow each time.
    for _ in range(count):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex((dst, port))
        c.close()
else:
    for _ in range(count):
        c = socket.socket()
        c.settimeout(2)
        try:
            c.connect((dst, port))
        except OSError:
            pass
        c.close()
print(time.monotonic() - t)
"#;

/// One load: which program it exercises (and its tracepoint), and what it
/// sends.
struct Load {
    name: &'static str,
    program: &'static str,
    tracepoint: (&'static str, &'static str),
    mode: &'static str,
    port: u16,
}

/// A port the peer's firewall drops (NETFILTER_DROP, a path reason).
const FIREWALLED: u16 = 9998;
/// Ports the peer's firewall rejects with ICMP admin-prohibited: one not
/// watched, one watched (`--port`).
const REJECTED: u16 = 9997;
const REJECTED_WATCHED: u16 = 9996;

const LOADS: [Load; 11] = [
    Load {
        name: "skb_kfree: UDP to a closed port (not TCP)",
        program: "skb_kfree",
        tracepoint: ("skb", "kfree_skb"),
        mode: "udp",
        port: 9999,
    },
    Load {
        name: "skb_kfree: TCP SYN to a closed port, unwatched",
        program: "skb_kfree",
        tracepoint: ("skb", "kfree_skb"),
        mode: "tcp",
        port: 9999,
    },
    Load {
        name: "skb_kfree: TCP SYN to a closed watched port (443)",
        program: "skb_kfree",
        tracepoint: ("skb", "kfree_skb"),
        mode: "tcp",
        port: 443,
    },
    Load {
        name: "skb_kfree: TCP SYN dropped by a firewall rule, unwatched port",
        program: "skb_kfree",
        tracepoint: ("skb", "kfree_skb"),
        mode: "syn",
        port: FIREWALLED,
    },
    Load {
        name: "skb_kfree: TCP SYN dropped by a firewall rule, watched port (6443), a new flow each",
        program: "skb_kfree",
        tracepoint: ("skb", "kfree_skb"),
        mode: "syn",
        port: 6443,
    },
    Load {
        name: "icmp_send: UDP to a closed port (port unreachable, not TCP)",
        program: "icmp_send",
        tracepoint: ("icmp", "icmp_send"),
        mode: "udp",
        port: 9999,
    },
    Load {
        name: "icmp_send: TCP SYN rejected with ICMP, unwatched port",
        program: "icmp_send",
        tracepoint: ("icmp", "icmp_send"),
        mode: "syn",
        port: REJECTED,
    },
    Load {
        name: "icmp_send: TCP SYN rejected with ICMP, watched port (9996), a new flow each",
        program: "icmp_send",
        tracepoint: ("icmp", "icmp_send"),
        mode: "syn",
        port: REJECTED_WATCHED,
    },
    Load {
        name: "tcp_send_reset: TCP SYN to a closed port, unwatched",
        program: "tcp_send_reset",
        tracepoint: ("tcp", "tcp_send_reset"),
        mode: "tcp",
        port: 9999,
    },
    Load {
        name: "tcp_send_reset: TCP SYN to a closed watched port (443), a new flow each",
        program: "tcp_send_reset",
        tracepoint: ("tcp", "tcp_send_reset"),
        mode: "syn",
        port: 443,
    },
    Load {
        name: "sock_state: connections accepted and closed",
        program: "sock_state",
        tracepoint: ("sock", "inet_sock_set_state"),
        mode: "tcp",
        port: 8080,
    },
];

/// Per load: netprobe's calls, its ns per call, the empty program's ns per
/// call on the same tracepoint in the same window.
type Run = Vec<(f64, f64, f64)>;

pub fn bench(cfg: &Config) -> Vec<Row> {
    let count = cfg.pick(20_000, 5_000);
    let runs = repeat("tracepoint programs", cfg, |_| one(count));
    let mut rows = program_rows();
    for (i, l) in LOADS.iter().enumerate() {
        let ns = runs.each(|r| r[i].1);
        let floor = runs.each(|r| r[i].2);
        rows.push(
            Row::new(SECTION, format!("{}: netprobe", l.name), "ns/call")
                .samples(ns.clone())
                .note(format!("{count} sends a run; run_time_ns / run_cnt")),
        );
        rows.push(
            Row::new(SECTION, format!("{}: empty program", l.name), "ns/call")
                .samples(floor.clone())
                .note("r0 = 0; exit, on the same tracepoint in the same window"),
        );
        rows.push(
            Row::new(SECTION, format!("{}: netprobe − empty", l.name), "ns")
                .samples(runs.each(|r| r[i].1 - r[i].2)),
        );
        rows.push(
            Row::new(SECTION, format!("{}: calls", l.name), "calls")
                .samples(runs.each(|r| r[i].0))
                .note("machine-wide: other events in the window count too"),
        );
        rows.push(
            Row::new(
                SECTION,
                format!("{}: calls a CPU could take", l.name),
                "M/s",
            )
            .samples(ns.iter().map(|n| 1e3 / n.max(1e-3)))
            .note("1 / ns per call: netprobe's program alone, at 100 % of one CPU"),
        );
    }
    runs.finish(rows)
}

fn one(count: u32) -> Run {
    let mut lab = Lab::new("bench-hooks");
    let (a, b) = lab.pair();
    // A listener for the sock_state load, accepting and closing.
    let _server = b.ns.spawn([
        py::python(),
        "-c",
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',8080))\ns.listen(4096)\nwhile True:\n  c,_=s.accept()\n  c.close()",
    ]);
    b.nft()
        .rule("input", &format!("tcp dport {{ {FIREWALLED}, 6443 }} drop"));
    b.nft().rule(
        "input",
        &format!(
            "tcp dport {{ {REJECTED}, {REJECTED_WATCHED} }} reject with icmp type admin-prohibited"
        ),
    );
    // Every datagram and SYN answered: the ICMP rate limits (per
    // namespace) lifted on the receiver.
    for (k, v) in [
        ("net.ipv4.icmp_ratelimit", "0"),
        ("net.ipv4.icmp_msgs_per_sec", "1000000"),
        ("net.ipv4.icmp_msgs_burst", "1000000"),
    ] {
        b.ns.sysctl(k, v);
    }
    std::thread::sleep(Duration::from_millis(300));
    let watched = REJECTED_WATCHED.to_string();
    let trace = np::trace(
        a.name(),
        &["--port", "443", "--port", "6443", "--port", &watched],
    )
    .np;
    let _stats = bpf::enable_run_time_stats().expect("BPF_ENABLE_STATS");
    let empty: Vec<_> = [
        ("skb", "kfree_skb"),
        ("sock", "inet_sock_set_state"),
        ("icmp", "icmp_send"),
        ("tcp", "tcp_send_reset"),
    ]
    .into_iter()
    .map(|(c, n)| {
        let (id, prog, perf) =
            bpf::attach_empty_tracepoint(c, n).expect("attach the empty tracepoint program");
        ((c, n), id, (prog, perf))
    })
    .collect();
    let info = |id: u32| {
        bpf::prog_fd(id)
            .and_then(|fd| bpf::prog_info(fd.as_fd()))
            .unwrap_or_else(|e| {
                panic!(
                    "info of program {id}: {e}; netprobe: {}",
                    trace
                        .stderr()
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
            })
    };
    let mut out = Vec::new();
    for l in &LOADS {
        let id = np::program_id(&trace, l.program);
        let floor_id = empty
            .iter()
            .find(|(tp, ..)| *tp == l.tracepoint)
            .map(|(_, id, _)| *id)
            .expect("an empty program on every load's tracepoint");
        let (before, floor_before) = (info(id), info(floor_id));
        let t = Instant::now();
        let done = a.ns.try_exec(
            [
                py::python(),
                "-c",
                LOAD,
                l.mode,
                &b.ipv4.to_string(),
                &l.port.to_string(),
                &count.to_string(),
            ],
            Duration::from_secs(120),
        );
        assert!(done.success(), "load {}: {}", l.name, done.report());
        let (after, floor_after) = (info(id), info(floor_id));
        let per_call = |a: &bpf::ProgInfo, b: &bpf::ProgInfo| {
            let calls = a.run_cnt.saturating_sub(b.run_cnt);
            assert!(
                calls > 0,
                "{}: no call counted in {:?}",
                l.name,
                t.elapsed()
            );
            (
                calls as f64,
                a.run_time_ns.saturating_sub(b.run_time_ns) as f64 / calls as f64,
            )
        };
        let (calls, ns) = per_call(&after, &before);
        let (_, floor) = per_call(&floor_after, &floor_before);
        out.push((calls, ns, floor));
    }
    drop(trace);
    out
}

/// Every tracepoint program of netprobe's as loaded: instructions the
/// verifier walked, size, and stack per function (one netprobe, one
/// sample: these do not vary run to run).
fn program_rows() -> Vec<Row> {
    let mut lab = Lab::new("bench-progs");
    let (a, _b) = lab.pair();
    let trace = np::trace(a.name(), &[]).np;
    let names = std::iter::once("tcp_retransmit").chain(
        probe_user::kernel::probes::TRACEPOINTS
            .iter()
            .map(|(p, _, _)| *p),
    );
    let mut rows = Vec::new();
    for name in names {
        let id = np::program_id(&trace, name);
        let Ok(info) = bpf::prog_fd(id).and_then(|fd| bpf::prog_info(fd.as_fd())) else {
            rows.push(Row::not_measured(
                SECTION,
                format!("{name}: program"),
                "no info",
            ));
            continue;
        };
        let stack = bpf::stack_per_function(id).unwrap_or_default();
        rows.push(
            Row::new(SECTION, format!("{name}: instructions verified"), "insns")
                .samples([f64::from(info.verified_insns)])
                .note(format!(
                    "size {} insns, jited {} bytes",
                    info.xlated_len / 8,
                    info.jited_len
                )),
        );
        rows.push(
            Row::new(SECTION, format!("{name}: stack"), "bytes")
                .samples([f64::from(stack.iter().sum::<u32>())])
                .note(format!(
                    "per function: {}",
                    stack
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join("+")
                ))
                .reference("limit 512 per call chain"),
        );
    }
    drop(trace);
    rows
}

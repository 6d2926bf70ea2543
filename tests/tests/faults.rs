//! Faults while tracing, and least privilege (issue 5, "Robustness"):
//! netprobe keeps running when an attached interface or its namespace goes
//! away, counts what a full ring buffer loses (and loses nothing silently),
//! leaves nothing attached on SIGTERM, and runs with only the capabilities
//! the kernel requires, naming exactly the one that is missing.
//!
//! Root only, lab namespaces only, every wait bounded. Run one at a time:
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test faults -- --test-threads=1
//! ```
//!
//! Capabilities, as the kernel proves them (`kernel_requires_each_minimal_capability`):
//! CAP_BPF (maps, program loads), CAP_PERFMON (tracepoint programs and
//! their perf events), CAP_NET_ADMIN (TC programs; ctnetlink), CAP_NET_RAW
//! (the packet socket of the active ARP/NDP probe), and for a non-root uid
//! CAP_DAC_READ_SEARCH (tracefs is 0700 root); `--netns` adds
//! CAP_SYS_ADMIN (setns).
//!
//! Tracepoints are global and other netprobe runs may share the machine:
//! tests pick their own events out by interface, address and MAC, and
//! judge "left behind" by the BPF objects their own netprobe held.

use netprobe_tests::netns::with_caps;
use netprobe_tests::{require_root, secs};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use netprobe_tests::cleanup::{self, HeldBpf, NETPROBE_PROGRAMS};
use netprobe_tests::cmd::{self, Finished};
use netprobe_tests::netprobe::binary;
use netprobe_tests::peers::{BlackHole, tls_client};
use netprobe_tests::tls_bytes::client_hello;
use netprobe_tests::{Host, Lab, Netns, Netprobe, Stopped, poll_until, py};
use serde_json::Value;

/// Loading and attaching takes a few seconds on 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// An event for traffic that already happened.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Periodic stats come every second (`--stats-interval 1s`).
const STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// BPF objects are freed shortly after their last fd closes.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused start must end quickly.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

fn is_type(v: &Value, t: &str) -> bool {
    v["type"] == t
}

// ---------------------------------------------------------------------------
// Reading a run
// ---------------------------------------------------------------------------

/// Stats lines, ARP events and anything naming `needles`, plus stderr: what
/// a failure message needs.
fn report(events: &[Value], stderr: &str, needles: &[String]) -> String {
    let mut counts = BTreeMap::<String, usize>::new();
    for v in events {
        *counts
            .entry(v["type"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let mine: Vec<String> = events
        .iter()
        .filter(|v| {
            is_type(v, "stats") || {
                let s = v.to_string();
                needles.iter().any(|n| s.contains(n.as_str()))
            }
        })
        .map(Value::to_string)
        .collect();
    let shown = mine.len().min(200);
    let stderr_tail: Vec<&str> = stderr.lines().rev().take(40).collect();
    format!(
        "--- netprobe events ({} of this test shown of {}; by type {counts:?}) ---\n{}\n\
         --- netprobe stderr (last {} lines) ---\n{}",
        shown,
        events.len(),
        mine[mine.len() - shown..].join("\n"),
        stderr_tail.len(),
        stderr_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// The first event after the first `from` ones that matches `pred`.
fn wait_after(
    np: &Netprobe,
    from: usize,
    pred: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> Option<Value> {
    poll_until(timeout, secs(0.05), || {
        np.events().into_iter().skip(from).find(|v| pred(v))
    })
}

/// A stats line (after the first `from` events) with `interfaces == n`.
fn wait_interfaces(np: &Netprobe, from: usize, n: u64) -> Option<Value> {
    wait_after(
        np,
        from,
        |v| is_type(v, "stats") && v["interfaces"].as_u64() == Some(n),
        STATS_TIMEOUT,
    )
}

/// An `arp` event seen on `iface` whose sender is `ip`.
fn arp_on(iface: &str, ip: Ipv4Addr) -> impl Fn(&Value) -> bool {
    let (iface, ip) = (iface.to_string(), ip.to_string());
    move |v| is_type(v, "arp") && v["iface"] == iface.as_str() && v["sender_ip"] == ip.as_str()
}

/// Clean exit on SIGINT: exit 0, only JSON on stdout, exactly one final
/// stats line, printed last. Returns that line.
fn check_clean_exit<'s>(s: &'s Stopped, rep: &dyn Fn() -> String) -> &'s Value {
    assert!(
        s.clean_exit(),
        "netprobe did not exit 0 on its own (status {:?}, killed {})\n{}",
        s.status,
        s.killed,
        rep()
    );
    assert!(
        s.non_json_stdout.is_empty(),
        "non-JSON lines on stdout: {:?}\n{}",
        s.non_json_stdout,
        rep()
    );
    let finals: Vec<&Value> = s
        .of_type("stats")
        .into_iter()
        .filter(|v| v["final"] == true)
        .collect();
    assert_eq!(finals.len(), 1, "want one final stats line\n{}", rep());
    assert_eq!(
        s.events.last(),
        Some(finals[0]),
        "the final stats line is not last\n{}",
        rep()
    );
    finals[0]
}

/// `lost` is the sum of `lost_by_type` on every stats line.
fn check_lost_adds_up(s: &Stopped, rep: &dyn Fn() -> String) {
    for st in s.of_type("stats") {
        let by_type: u64 = st["lost_by_type"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        assert_eq!(
            st["lost"].as_u64(),
            Some(by_type),
            "lost is not the sum of lost_by_type: {st}\n{}",
            rep()
        );
    }
}

// ---------------------------------------------------------------------------
// Nothing left behind
// ---------------------------------------------------------------------------

/// Every interface of the given namespaces that still exist.
fn devices<'n>(namespaces: &[&'n Netns]) -> Vec<(&'n Netns, String)> {
    let mut devs = Vec::new();
    for ns in namespaces {
        for l in ns
            .ip_json(["link", "show"])
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(name) = l["ifname"].as_str() {
                devs.push((*ns, name.to_string()));
            }
        }
    }
    devs
}

/// Programs and links `own` held that are still loaded, netprobe objects
/// no process holds, and TC state on `devs`.
fn leftovers(own: &HeldBpf, devs: &[(&Netns, String)]) -> Vec<String> {
    let mut left = Vec::new();
    for p in cleanup::bpf_programs(NETPROBE_PROGRAMS) {
        if p["id"].as_u64().is_some_and(|id| own.progs.contains(&id)) {
            left.push(format!("bpf prog of this run still loaded: {p}"));
        }
    }
    for l in cleanup::bpf_links(NETPROBE_PROGRAMS) {
        if l["id"].as_u64().is_some_and(|id| own.links.contains(&id)) {
            left.push(format!("bpf link of this run still present: {l}"));
        }
    }
    left.extend(cleanup::bpf_orphans(NETPROBE_PROGRAMS));
    for (ns, dev) in devs {
        left.extend(cleanup::tc_leftovers(Some(ns), dev));
    }
    left
}

fn assert_released(own: &HeldBpf, devs: &[(&Netns, String)], rep: &dyn Fn() -> String) {
    let mut left = Vec::new();
    let gone = poll_until(RELEASE_TIMEOUT, secs(0.1), || {
        left = leftovers(own, devs);
        left.is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "left behind after {RELEASE_TIMEOUT:?}:\n{}\n{}",
        left.join("\n"),
        rep()
    );
}

/// What `np` holds now, checked to include a TC program: it really attached.
fn held_by(np: &Netprobe, rep: &dyn Fn() -> String) -> HeldBpf {
    let own = cleanup::bpf_held(Some(np.pid()));
    let tc = cleanup::bpf_programs(&["tc_ingress", "tc_egress"])
        .into_iter()
        .any(|p| p["id"].as_u64().is_some_and(|id| own.progs.contains(&id)));
    assert!(tc, "netprobe holds no TC program while tracing\n{}", rep());
    own
}

fn start_ready(mut np: Netprobe) -> Netprobe {
    if let Err(e) = np.wait_ready(READY_TIMEOUT) {
        panic!("netprobe did not get ready: {e:#}");
    }
    np
}

// ---------------------------------------------------------------------------
// (a) An attached interface deleted while tracing
// ---------------------------------------------------------------------------

/// Namespace A has eth0 (to B) and eth1 (to C); netprobe traces A. eth1 is
/// deleted mid-run (a pod veth going away): netprobe keeps running, its
/// stats stop counting eth1, ARP on eth0 is still reported, and SIGINT
/// ends it cleanly with final stats and nothing left attached.
fn interface_deleted(label: &str, explicit: bool) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let c_ns = lab.namespace("c");
    let (a1, c) = lab.connect(&a.ns, &c_ns);
    assert_eq!((a.ifname.as_str(), a1.ifname.as_str()), ("eth0", "eth1"));

    let mut args = vec!["trace", "--json", "--stats-interval", "1s"];
    if explicit {
        args.extend(["--iface", "eth0", "--iface", "eth1"]);
    }
    let np = start_ready(Netprobe::start_in(&a.ns, &args));
    let needles = vec![b.ipv4.to_string(), c.ipv4.to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    // Both uplinks (lo gets no tc hook: its sockets are seen at the root
    // cgroup), whether named or followed.
    let before: u64 = 2;
    assert!(
        wait_interfaces(&np, 0, before).is_some(),
        "no stats line with interfaces = {before}\n{}",
        rep()
    );
    let own = held_by(&np, &rep);

    c.gratuitous_arp(c.ipv4);
    assert!(
        np.wait_for(arp_on("eth1", c.ipv4), EVENT_TIMEOUT).is_some(),
        "no ARP event on eth1 before the deletion\n{}",
        rep()
    );

    let mark = np.events().len();
    a.ip(["link", "del", "eth1"]);
    let after = wait_interfaces(&np, mark, before - 1);
    let mut np = np;
    assert!(
        np.is_running(),
        "netprobe exited when eth1 was deleted\n{}",
        report(&np.events(), &np.stderr(), &needles)
    );
    assert!(
        after.is_some(),
        "stats still count the deleted eth1: no stats line with interfaces = {} within \
         {STATS_TIMEOUT:?} after the deletion\n{}",
        before - 1,
        report(&np.events(), &np.stderr(), &needles)
    );

    let mark = np.events().len();
    b.gratuitous_arp(b.ipv4);
    assert!(
        wait_after(&np, mark, arp_on("eth0", b.ipv4), EVENT_TIMEOUT).is_some(),
        "no ARP event on eth0 after eth1 was deleted\n{}",
        report(&np.events(), &np.stderr(), &needles)
    );

    let stopped = np.stop();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    let fin = check_clean_exit(&stopped, &rep);
    assert_eq!(fin["lost"].as_u64(), Some(0), "{fin}\n{}", rep());
    assert_released(&own, &devices(&[&a.ns, &b.ns, &c.ns]), &rep);
}

#[test]
fn attached_interface_deleted_while_following_links() {
    interface_deleted("ifdel", false);
}

#[test]
fn attached_interface_deleted_while_tracing_named_interfaces() {
    interface_deleted("ifdelx", true);
}

// ---------------------------------------------------------------------------
// (b) The traced namespace deleted while tracing
// ---------------------------------------------------------------------------

/// Listens on 127.0.0.1:6443, connects to itself and sends the hex
/// ClientHello given: a handshake's first flight on loopback.
const LOOPBACK_HELLO: &str = r#"
import socket, sys
hello = bytes.fromhex(sys.argv[1])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', 6443))
l.listen(1)
c = socket.create_connection(('127.0.0.1', 6443))
c.sendall(hello)
s, _ = l.accept()
s.recv(65536)
print(1)
"#;

fn mac_hex(mac: &str) -> String {
    mac.replace(':', "")
}

/// netprobe runs in namespace A (`--netns A`, as an operator points it at a
/// pod). The namespace is deleted under it: `ip netns del A`, then its only
/// link goes with B, the peer namespace. netprobe keeps running in the
/// now nameless namespace (its own process keeps it alive), drops eth0
/// from its stats, still reports ARP on A's `lo`, exits 0 on SIGINT, and
/// leaves nothing attached; the namespace is gone with it.
#[test]
fn traced_namespace_deleted_while_tracing() {
    require_root();
    let mut lab = Lab::new("nsdel");
    let (a, b) = lab.pair();
    let name = a.name().to_string();
    let np = start_ready(Netprobe::start([
        "trace",
        "--json",
        "--stats-interval",
        "1s",
        "--netns",
        &name,
    ]));
    let needles = vec![b.ipv4.to_string(), "127.0.0.77".to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    assert!(
        wait_interfaces(&np, 0, 1).is_some(),
        "no stats line with interfaces = 1 (eth0)\n{}",
        rep()
    );
    let own = held_by(&np, &rep);

    // What `ip netns del` + killing the namespace's processes does, except
    // that netprobe itself is one of them: it is spared, so the namespace
    // lives on through it, nameless.
    let inside = a.pids();
    let done = cmd::run_bounded(
        Command::new("ip").args(["netns", "del", &name]),
        cmd::DEFAULT_TIMEOUT,
    );
    assert!(done.success(), "{}", done.report());
    for pid in inside {
        if pid != np.pid() as i32 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let mark = np.events().len();
    // Deleting the peer namespace takes the veth pair, A's eth0 included.
    b.ns.teardown();
    let after = wait_interfaces(&np, mark, 0);
    let mut np = np;
    assert!(
        np.is_running(),
        "netprobe exited when its namespace was deleted\n{}",
        report(&np.events(), &np.stderr(), &needles)
    );
    assert!(
        after.is_some(),
        "stats still count eth0 after the veth pair went away\n{}",
        report(&np.events(), &np.stderr(), &needles)
    );

    // Still reporting: a ClientHello on lo of the orphaned namespace, seen
    // by the socket hooks, sent through netprobe's own /proc entry.
    let mark = np.events().len();
    let hello = netprobe_tests::tls_bytes::client_hello(Some("orphan.lab"));
    let hex: String = hello.iter().map(|b| format!("{b:02x}")).collect();
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{}/ns/net", np.pid())).args([
        py::python(),
        "-c",
        LOOPBACK_HELLO,
        &hex,
    ]);
    let sent = cmd::run_bounded(&mut c, cmd::DEFAULT_TIMEOUT);
    assert!(sent.success(), "{}", sent.report());
    assert!(
        wait_after(
            &np,
            mark,
            |v: &Value| v["type"] == "tls_client_hello" && v["sni"] == "orphan.lab",
            EVENT_TIMEOUT
        )
        .is_some(),
        "no ClientHello on lo of the deleted namespace\n{}",
        report(&np.events(), &np.stderr(), &needles)
    );

    let stopped = np.stop();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    check_clean_exit(&stopped, &rep);
    assert_released(&own, &[], &rep);
    assert!(
        !netprobe_tests::netns::list().contains(&name),
        "namespace {name} is back"
    );
}

// ---------------------------------------------------------------------------
// (c) Ring buffer overflow
// ---------------------------------------------------------------------------

/// Floods `ifname` with `arps` gratuitous ARP frames from `mac` for `ip`,
/// then `tls` TCP segments carrying a ClientHello (hex) from `src` to
/// `dst`:6443, sources ports varying, as fast as python sends them.
const FLOOD: &str = r#"
import socket, struct, sys
ifname, mac, dst_mac = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
ip, src, dst = (socket.inet_aton(x) for x in sys.argv[4:7])
arps, tls, hello = int(sys.argv[7]), int(sys.argv[8]), bytes.fromhex(sys.argv[9])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
arp = b'\xff' * 6 + mac + b'\x08\x06' + bytes([0, 1, 8, 0, 6, 4, 0, 1]) + mac + ip + bytes(6) + ip
arp += bytes(60 - len(arp))
for _ in range(arps):
    s.send(arp)
def csum(b):
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for i in range(tls):
    tcp = struct.pack('!HHIIBBHHH', 20000 + i % 40000, 6443, 1000 + i, 1, 5 << 4, 0x18, 65535, 0, 0)
    iph = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp) + len(hello), i & 0xffff, 0, 64, 6, 0, src, dst)
    iph = iph[:10] + struct.pack('!H', csum(iph)) + iph[12:]
    s.send(dst_mac + mac + b'\x08\x00' + iph + tcp + hello)
print(arps, tls)
"#;

/// Packets counted by an nft netdev ingress rule: it runs right after the
/// TC hook, so it counts exactly the frames the classifier saw.
fn ingress_counter(ns: &Netns, dev: &str, match_expr: &str) {
    ns.exec(["nft", "add table netdev npflood"]);
    ns.exec([
        "nft",
        &format!(
            "add chain netdev npflood in {{ type filter hook ingress device {dev} priority 0; \
             policy accept; }}"
        ),
    ]);
    ns.exec([
        "nft",
        &format!("add rule netdev npflood in {match_expr} counter"),
    ]);
}

fn ingress_count(ns: &Netns) -> u64 {
    let out = ns.exec(["nft", "-j", "list", "chain", "netdev", "npflood", "in"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j prints JSON");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum()
}

/// `--ring-kib 4` (the smallest) and a flood of ARP frames and TLS
/// ClientHellos into the traced namespace: the final stats say records
/// were lost, `lost` is the sum of `lost_by_type` (ARP and TLS among
/// them), every flood frame the classifier saw is either an event or
/// counted as lost, and netprobe goes on reporting afterwards.
#[test]
fn ring_buffer_overflow_is_counted_by_type() {
    require_root();
    let mut lab = Lab::new("ring");
    let (a, b) = lab.pair();
    let flood_mac = format!("02:6e:70:{:02x}:00:ee", lab.octet());
    let flood_ip = Ipv4Addr::new(10, lab.octet(), 0, 77);
    ingress_counter(
        &a.ns,
        &a.ifname,
        &format!("ether saddr {flood_mac} ether type arp"),
    );

    let np = start_ready(Netprobe::start_in(
        &a.ns,
        [
            "trace",
            "--json",
            "--ring-kib",
            "4",
            "--stats-interval",
            "1s",
        ],
    ));
    let needles = vec![flood_mac.clone(), b.ipv4.to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    let own = held_by(&np, &rep);

    const ARPS: usize = 20_000;
    const TLS: usize = 3_000;
    let hello: String = client_hello(Some("flood.test"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let args: Vec<String> = [
        b.ifname.clone(),
        mac_hex(&flood_mac),
        mac_hex(&a.mac),
        flood_ip.to_string(),
        b.ipv4.to_string(),
        a.ipv4.to_string(),
        ARPS.to_string(),
        TLS.to_string(),
        hello,
    ]
    .into();
    let started = Instant::now();
    let flood = cmd::run_bounded(&mut py::command(&b.ns, FLOOD, &args), secs(60.0));
    assert!(flood.success(), "{}", flood.report());
    let flood_time = started.elapsed();

    // The flood is over: a later ARP must still be reported.
    let mark = np.events().len();
    b.gratuitous_arp(b.ipv4);
    assert!(
        wait_after(&np, mark, arp_on(&a.ifname, b.ipv4), EVENT_TIMEOUT).is_some(),
        "no ARP event after the flood\n{}",
        rep()
    );
    let mut np = np;
    assert!(
        np.is_running(),
        "netprobe died in the flood\n{}",
        report(&np.events(), &np.stderr(), &needles)
    );
    let seen_by_hook = ingress_count(&a.ns);
    let stopped = np.stop();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    let fin = check_clean_exit(&stopped, &rep);
    check_lost_adds_up(&stopped, &rep);

    let lost = fin["lost"].as_u64().unwrap_or(0);
    let lost_arp = fin["lost_by_type"]["arp"].as_u64().unwrap_or(0);
    let lost_tls = fin["lost_by_type"]["tls"].as_u64().unwrap_or(0);
    let arp_events = stopped
        .events
        .iter()
        .filter(|v| is_type(v, "arp") && v["sender_mac"] == flood_mac.as_str())
        .count() as u64;
    eprintln!(
        "flood: {ARPS} ARP + {TLS} TLS frames in {flood_time:?}; hook saw {seen_by_hook} ARP; \
         {arp_events} ARP events; lost {lost} ({})",
        fin["lost_by_type"]
    );
    assert!(
        lost > 0,
        "a 4 KiB ring lost nothing in the flood: {fin}\n{}",
        rep()
    );
    assert!(
        lost_arp > 0 && lost_tls > 0,
        "want ARP and TLS records among the lost: {fin}\n{}",
        rep()
    );
    assert!(
        seen_by_hook > 0 && arp_events <= seen_by_hook,
        "{arp_events} ARP events for {seen_by_hook} frames seen\n{}",
        rep()
    );
    // Lost ARP records may include others' ARP; the flood's are all there.
    assert!(
        arp_events + lost_arp >= seen_by_hook,
        "ARP records lost silently: {seen_by_hook} flood frames reached the classifier, \
         {arp_events} were reported and {lost_arp} ARP records counted as lost\n{}",
        rep()
    );
    assert_released(&own, &devices(&[&a.ns, &b.ns]), &rep);
}

// ---------------------------------------------------------------------------
// (d) SIGTERM
// ---------------------------------------------------------------------------

/// SIGTERM (what systemd and kubelet send) ends netprobe like SIGINT: exit
/// 0, final stats, no program, link, filter or qdisc left.
#[test]
fn sigterm_leaves_nothing_attached() {
    require_root();
    let mut lab = Lab::new("sigterm");
    let (a, b) = lab.pair();
    let devs = devices(&[&a.ns, &b.ns]);
    let mut np = start_ready(Netprobe::start_in(
        &a.ns,
        ["trace", "--json", "--stats-interval", "1s"],
    ));
    let needles = vec![b.ipv4.to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    assert!(
        np.wait_for_type("stats", STATS_TIMEOUT).is_some(),
        "{}",
        rep()
    );
    let own = held_by(&np, &rep);
    assert!(
        own.links.len() >= 2,
        "no tcx links held: {own:?}\n{}",
        rep()
    );

    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(np.pid() as i32, libc::SIGTERM) };
    let exited = poll_until(Duration::from_secs(10), secs(0.05), || {
        (!np.is_running()).then_some(())
    });
    // Collects the exit status (SIGKILL only if still running).
    let stopped = np.kill9();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    assert!(
        exited.is_some(),
        "still running 10 s after SIGTERM\n{}",
        rep()
    );
    assert!(
        stopped.status.success(),
        "exit status {:?} after SIGTERM\n{}",
        stopped.status,
        rep()
    );
    let finals = stopped
        .of_type("stats")
        .into_iter()
        .filter(|v| v["final"] == true)
        .count();
    assert_eq!(
        finals,
        1,
        "want one final stats line after SIGTERM\n{}",
        rep()
    );
    assert_released(&own, &devs, &rep);
}

// ---------------------------------------------------------------------------
// (e) Least privilege
// ---------------------------------------------------------------------------

const NOBODY: u32 = 65534;

/// What netprobe needs as a non-root user, each proven by
/// [`kernel_requires_each_minimal_capability`]: the three it names; a
/// packet socket for the active ARP/NDP probe of a handshake
/// investigation (CAP_NET_RAW); and read access to tracefs
/// (`/sys/kernel/tracing` is 0700 root), which CAP_DAC_READ_SEARCH grants.
const MINIMAL: &[&str] = &["bpf", "perfmon", "net_admin", "net_raw", "dac_read_search"];

fn cap_name(setpriv: &str) -> String {
    format!("CAP_{}", setpriv.to_uppercase())
}

/// Runs netprobe traced into lab host `a` as `uid` with `caps`: it must
/// get ready, report a gratuitous ARP from `b`, and exit 0 on SIGINT with
/// nothing left attached.
fn runs_with(label: &str, uid: u32, caps: &[&str], extra: &[&str]) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let bin = binary();
    let mut args = vec![bin.to_str().unwrap(), "trace", "--json", "--iface", "eth0"];
    args.extend_from_slice(extra);
    let mut np = Netprobe::start_command(with_caps(&a.ns, uid, caps, &args));
    if let Err(e) = np.wait_ready(READY_TIMEOUT) {
        panic!("netprobe as uid {uid} with {caps:?} did not get ready: {e:#}");
    }
    let needles = vec![b.ipv4.to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    let own = held_by(&np, &rep);
    b.gratuitous_arp(b.ipv4);
    assert!(
        np.wait_for(arp_on("eth0", b.ipv4), EVENT_TIMEOUT).is_some(),
        "no ARP event as uid {uid} with {caps:?}\n{}",
        rep()
    );
    let stopped = np.stop();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    check_clean_exit(&stopped, &rep);
    assert_released(&own, &devices(&[&a.ns, &b.ns]), &rep);
}

/// Runs netprobe as `uid` with `caps` and `extra` arguments and expects a
/// refusal: non-zero exit, one stderr line naming `missing`, nothing on
/// stdout, nothing attached.
fn refused_without(label: &str, uid: u32, caps: &[&str], extra: &[&str], missing: &str) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let bin = binary();
    let mut args = vec![bin.to_str().unwrap(), "trace", "--json", "--iface", "eth0"];
    args.extend_from_slice(extra);
    let done: Finished = cmd::run_bounded(&mut with_caps(&a.ns, uid, caps, &args), REFUSE_TIMEOUT);
    let what = done.report();
    assert!(!done.timed_out, "not refused: still running: {what}");
    assert!(
        done.code().is_some_and(|c| c != 0),
        "want a non-zero exit code: {what}"
    );
    let stderr = done.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line on stderr: {what}");
    assert!(
        lines[0].contains(missing),
        "uid {uid} with {caps:?}: the message does not name {missing}: {what}"
    );
    assert!(done.stdout().trim().is_empty(), "stdout: {what}");
    assert_released(&HeldBpf::default(), &devices(&[&a.ns, &b.ns]), &|| {
        what.clone()
    });
}

#[test]
fn least_privilege_nobody_with_minimal_capabilities_traces() {
    runs_with("lpmin", NOBODY, MINIMAL, &[]);
}

#[test]
fn least_privilege_root_uid_needs_no_dac_capability() {
    // uid 0 owns tracefs, so no DAC capability is needed.
    runs_with(
        "lproot",
        0,
        &["bpf", "perfmon", "net_admin", "net_raw"],
        &[],
    );
}

/// Runs netprobe as nobody with `caps` (the minimal set less `missing`)
/// for up to [`NAMING_WINDOW`]. It must name `missing`, and no other
/// capability as missing, on stderr: either refusing to start (non-zero
/// exit, one line, nothing on stdout) or, for a capability only some
/// feature needs, warning at start and tracing on. Nothing may be left
/// attached either way.
fn names_missing(label: &str, caps: &[&str], missing: &str) -> Result<(), String> {
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let bin = binary();
    let args = [bin.to_str().unwrap(), "trace", "--json", "--iface", "eth0"];
    let done = cmd::run_bounded(&mut with_caps(&a.ns, NOBODY, caps, &args), NAMING_WINDOW);
    let what = done.report();
    let stderr = done.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let naming: Vec<&&str> = lines.iter().filter(|l| l.contains(missing)).collect();
    let result = if naming.is_empty() {
        Err(format!(
            "without {missing} netprobe {} without naming it: {what}",
            if done.timed_out { "started" } else { "stopped" }
        ))
    } else if !done.timed_out
        && (done.code().is_none_or(|c| c == 0) || lines.len() != 1 || !done.stdout().is_empty())
    {
        Err(format!(
            "without {missing}: want a non-zero exit, one stderr line, no stdout: {what}"
        ))
    } else {
        match naming[0].split("missing capabilities ").nth(1) {
            Some(rest) if rest.split(" (").next() != Some(missing) => {
                Err(format!("names more than {missing} as missing: {what}"))
            }
            _ => Ok(()),
        }
    };
    assert_released(&HeldBpf::default(), &devices(&[&a.ns, &b.ns]), &|| {
        what.clone()
    });
    result
}

/// Long enough to get ready and warn; a refusal comes in milliseconds.
const NAMING_WINDOW: Duration = Duration::from_secs(8);

/// One capability of [`MINIMAL`] removed at a time: netprobe names it, and
/// only it (all are tried; the failures are listed together).
#[test]
fn least_privilege_each_missing_capability_is_named() {
    require_root();
    let mut failures = Vec::new();
    for (i, drop) in MINIMAL.iter().enumerate() {
        let caps: Vec<&str> = MINIMAL.iter().copied().filter(|c| c != drop).collect();
        if let Err(e) = names_missing(&format!("lpno{i}"), &caps, &cap_name(drop)) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} capabilities not named when missing:\n\n{}",
        failures.len(),
        MINIMAL.len(),
        failures.join("\n\n")
    );
}

/// Makes an unanswered ClientHello from lab host A (a black hole in B
/// accepts and never answers) with netprobe traced into A as nobody with
/// `caps`, and returns the investigation's snapshot of that flow, the
/// address and MAC of B, after a clean SIGINT exit.
fn handshake_snapshot(label: &str, caps: &[&str]) -> (Value, Host) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let _hole = BlackHole::start(&b.ns, b.ipv4.into(), 6443);
    let bin = binary();
    let args = [
        bin.to_str().unwrap(),
        "trace",
        "--json",
        "--iface",
        "eth0",
        "--port",
        "6443",
        "--handshake-timeout",
        "1s",
    ];
    let mut np = Netprobe::start_command(with_caps(&a.ns, NOBODY, caps, &args));
    if let Err(e) = np.wait_ready(READY_TIMEOUT) {
        panic!("netprobe with {caps:?} did not get ready: {e:#}");
    }
    let needles = vec![b.ipv4.to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    let own = held_by(&np, &rep);
    let hello = tls_client(&a.ns, b.ipv4.into(), 6443, None, secs(4.0));
    assert!(hello.tcp_connected, "{}", hello.report);
    let dst = format!("{}:6443", b.ipv4);
    let snap = np.wait_for(
        |v| is_type(v, "snapshot") && v["flow"]["dst"] == dst.as_str(),
        secs(10.0),
    );
    let Some(snap) = snap else {
        panic!("no snapshot for the unanswered handshake\n{}", rep());
    };
    let stopped = np.stop();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    check_clean_exit(&stopped, &rep);
    assert_released(&own, &devices(&[&a.ns, &b.ns]), &rep);
    (snap, b)
}

/// Under the minimal set the investigation of an unanswered ClientHello is
/// complete: no look-up fails, and the active ARP probe of the next hop
/// (a packet socket) finds B.
#[test]
fn least_privilege_handshake_investigation_is_complete() {
    let (snap, b) = handshake_snapshot("lpinv", MINIMAL);
    assert_eq!(
        snap["errors"].as_array().map(Vec::len),
        Some(0),
        "look-ups failed under {MINIMAL:?}: {snap}"
    );
    let answers = snap["probe"]["answers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        answers.iter().any(|x| x["mac"] == b.mac.as_str()),
        "the ARP probe did not find {} at {}: {snap}",
        b.ipv4,
        b.mac
    );
}

/// Without CAP_NET_RAW netprobe starts (the probe is only needed when a
/// handshake goes unanswered), and the snapshot says the probe failed and
/// names the capability.
#[test]
fn least_privilege_without_net_raw_the_snapshot_names_it() {
    let caps: Vec<&str> = MINIMAL
        .iter()
        .copied()
        .filter(|c| *c != "net_raw")
        .collect();
    let (snap, _) = handshake_snapshot("lpnoraw", &caps);
    assert!(
        snap["probe"].is_null(),
        "a probe result without CAP_NET_RAW: {snap}"
    );
    let errors = snap["errors"].to_string();
    assert!(
        errors.contains("CAP_NET_RAW"),
        "the snapshot does not name CAP_NET_RAW: {snap}"
    );
}

/// `--netns` means setns(2), which needs CAP_SYS_ADMIN: refused, naming it,
/// without; traces the named namespace with it.
#[test]
fn least_privilege_netns_needs_sys_admin() {
    require_root();
    let mut lab = Lab::new("lpnetns");
    let target = lab.namespace("target");
    let name = target.name().to_string();
    refused_without(
        "lpnsno",
        NOBODY,
        MINIMAL,
        &["--netns", &name],
        "CAP_SYS_ADMIN",
    );
    let mut with = MINIMAL.to_vec();
    with.push("sys_admin");
    runs_with_netns("lpnsyes", &with);
}

/// Like [`runs_with`], with `--netns` naming the traced namespace while
/// netprobe starts in another lab namespace.
fn runs_with_netns(label: &str, caps: &[&str]) {
    require_root();
    let mut lab = Lab::new(label);
    let (a, b) = lab.pair();
    let start_in = lab.namespace("start");
    let bin = binary();
    let name = a.name().to_string();
    let args = [
        bin.to_str().unwrap(),
        "trace",
        "--json",
        "--iface",
        "eth0",
        "--netns",
        &name,
    ];
    let mut np = Netprobe::start_command(with_caps(&start_in, NOBODY, caps, &args));
    if let Err(e) = np.wait_ready(READY_TIMEOUT) {
        panic!("netprobe with {caps:?} and --netns did not get ready: {e:#}");
    }
    let needles = vec![b.ipv4.to_string()];
    let rep = || report(&np.events(), &np.stderr(), &needles);
    let own = held_by(&np, &rep);
    b.gratuitous_arp(b.ipv4);
    assert!(
        np.wait_for(arp_on("eth0", b.ipv4), EVENT_TIMEOUT).is_some(),
        "no ARP event with --netns\n{}",
        rep()
    );
    let stopped = np.stop();
    let rep = || report(&stopped.events, &stopped.stderr, &needles);
    check_clean_exit(&stopped, &rep);
    assert_released(&own, &devices(&[&a.ns, &b.ns]), &rep);
}

/// The kernel's own gates, without netprobe's up-front check in the way:
/// a python probe makes the calls netprobe depends on (ring buffer map,
/// tracepoint and TC program loads, a packet socket, the tracepoint's id
/// in tracefs and its perf event) as nobody with the minimal set less one
/// capability, and each capability turns out to be what one of those
/// calls needs.
#[test]
fn kernel_requires_each_minimal_capability() {
    require_root();
    let mut lab = Lab::new("lpkernel");
    let ns = lab.namespace("k");
    let run = |caps: &[&str]| -> BTreeMap<String, String> {
        let mut c = with_caps(&ns, NOBODY, caps, &[py::python(), "-c", KERNEL_PROBE]);
        let done = cmd::run_bounded(&mut c, cmd::DEFAULT_TIMEOUT);
        assert!(done.success(), "{}", done.report());
        done.stdout()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let all = run(MINIMAL);
    assert!(
        all.values().all(|v| v == "ok"),
        "with {MINIMAL:?} the kernel refused: {all:?}"
    );
    // Which calls each capability's absence breaks, and how.
    let expect: &[(&str, &[(&str, &str)])] = &[
        (
            "bpf",
            &[
                ("map_create(ringbuf)", "EPERM"),
                ("prog_load(tracepoint)", "EPERM"),
                ("prog_load(sched_cls)", "EPERM"),
            ],
        ),
        (
            "perfmon",
            &[
                ("prog_load(tracepoint)", "EPERM"),
                ("perf_event_open(tracepoint)", "EACCES"),
            ],
        ),
        ("net_admin", &[("prog_load(sched_cls)", "EPERM")]),
        ("net_raw", &[("packet_socket", "EPERM")]),
        ("dac_read_search", &[("tracefs id", "EACCES")]),
    ];
    for (drop, failing) in expect {
        let caps: Vec<&str> = MINIMAL.iter().copied().filter(|c| c != drop).collect();
        let got = run(&caps);
        for (call, result) in got.iter() {
            let want = failing
                .iter()
                .find(|(c, _)| c == call)
                .map_or("ok", |(_, e)| e);
            assert_eq!(
                result,
                want,
                "without CAP_{}: {call} gave {result}, expected {want}: {got:?}",
                drop.to_uppercase()
            );
        }
    }
}

/// Makes each privileged call netprobe depends on and prints
/// `call: ok|ERRNO` per line.
const KERNEL_PROBE: &str = r#"
import ctypes, errno, os, struct
libc = ctypes.CDLL(None, use_errno=True)
# (bpf, perf_event_open) syscall numbers
SYS_bpf, SYS_perf_event_open = {'x86_64': (321, 298), 'aarch64': (280, 241)}[os.uname().machine]
def result(r):
    return 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]
def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    return result(libc.syscall(SYS_bpf, cmd, buf, 128))
# BPF_MAP_CREATE of a BPF_MAP_TYPE_RINGBUF (netprobe's EVENTS)
print('map_create(ringbuf):', bpf(0, struct.pack('IIIII', 27, 0, 0, 4096, 0)))
# BPF_PROG_LOAD of `r0 = 0; exit` as a tracepoint and as a TC classifier
insns = ctypes.create_string_buffer(struct.pack('<BBhi', 0xb7, 0, 0, 0) + struct.pack('<BBhi', 0x95, 0, 0, 0))
lic = ctypes.create_string_buffer(b'GPL')
for name, prog_type in (('tracepoint', 5), ('sched_cls', 3)):
    attr = struct.pack('IIQQ', prog_type, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    print('prog_load(%s):' % name, bpf(5, attr))
# AF_PACKET raw socket: the active ARP/NDP probe
import socket
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    print('packet_socket: ok')
except OSError as e:
    print('packet_socket:', errno.errorcode[e.errno])
# The tracepoint's id, as aya reads it to attach, and its perf event.
try:
    tp = int(open('/sys/kernel/tracing/events/tcp/tcp_retransmit_skb/id').read())
    print('tracefs id: ok')
except OSError as e:
    tp = None
    print('tracefs id:', errno.errorcode[e.errno])
if tp is not None:
    attr = ctypes.create_string_buffer(struct.pack('IIQ', 2, 128, tp), 128)
    # pid -1, cpu 0, no group, PERF_FLAG_FD_CLOEXEC: as aya attaches tracepoints
    print('perf_event_open(tracepoint):', result(libc.syscall(SYS_perf_event_open, attr, -1, 0, -1, 8)))
"#;

//! The kernel's own evidence (issue 9): this node's kernel drops a flow's
//! packets and says why (`skb/kfree_skb` reasons), and netprobe names it,
//! with the rule, from the node's view: netprobe in the node's namespace on
//! every interface, a pod behind the node. Only drops counted in the node's
//! namespace are evidence; the server's "machine" shares the kernel, and a
//! drop there would not be.
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test kernel_evidence -- --test-threads=1 --nocapture
//! ```

use std::{net::SocketAddr, time::Instant};

use serde_json::Value;

use netprobe_tests::{
    Host, Lab, PodLab,
    kube_cgroup::KubeCgroup,
    peers::{EchoServer, TlsServer, curl_https},
    require_root, secs,
    verdicts::{Trace, bare_fix, ep, event_time, is_type, mentions_lab},
};

const PORT: u16 = 9443;
const API_PORT: u16 = 6443;

/// A pod behind the node and an echo server past it on [`PORT`].
fn echo_lab(label: &str) -> (PodLab, EchoServer, SocketAddr) {
    let l = PodLab::build(label);
    let echo = EchoServer::start(&l.server.ns, l.server.ipv4.into(), PORT);
    let dst = SocketAddr::new(l.server.ipv4.into(), PORT);
    (l, echo, dst)
}

/// The first diagnosis for a flow whose `end` ("src" or "dst") is `addr`,
/// and how long after the flow's first retransmit it came (printed with
/// the verdict).
fn storm_verdict(
    trace: &Trace,
    end: &str,
    addr: SocketAddr,
    what: &str,
    started: Instant,
) -> (Value, f64) {
    let d = trace.expect(
        "diagnosis for the stuck connection",
        |v| is_type(v, "diagnosis") && ep(&v["flow"][end]) == Some(addr),
        secs(12.0),
    );
    let first_retx = trace
        .events()
        .iter()
        .find(|v| is_type(v, "retransmit") && ep(&v[end]) == Some(addr))
        .map(event_time);
    let after = first_retx.map_or(f64::NAN, |t| event_time(&d) - t);
    eprintln!(
        "VERDICT ({what}): {:?} after connect, {after:.3} s after the first retransmit\n{}",
        started.elapsed(),
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    (d, after)
}

#[test]
fn a_firewall_rule_on_the_node_dropping_a_pods_syns_is_a_kernel_drop_with_its_rule() {
    require_root();
    let (PodLab { lab, node, pod, .. }, _echo, dst) = echo_lab("kd-fw");

    // A NetworkPolicy-like rule on the node: the pod's SYNs to 9443 vanish.
    node.ns.exec(["nft", "add table inet fw"]);
    node.ns.exec([
        "nft",
        "add chain inet fw forward { type filter hook forward priority 0; }",
    ]);
    node.ns.exec([
        "nft",
        &format!("add rule inet fw forward tcp dport {PORT} drop"),
    ]);

    let trace = Trace::start(&lab, &node.ns, Some("kernel_drop_firewall"));
    let started = Instant::now();
    let url = format!("http://{dst}/");
    // curl runs in a cgroup named as the kubelet names a container's.
    let cgroup = KubeCgroup::create(lab.octet().into());
    // `ip netns exec` execs the shell in place, so its pid is the child's;
    // curl starts once the shell is in the cgroup.
    let client = pod.ns.spawn([
        "sh",
        "-c",
        &format!("sleep 0.3; exec curl -s -o /dev/null --max-time 10 {url}"),
    ]);
    cgroup.adopt(client.pid());
    let (d, after) = storm_verdict(&trace, "dst", dst, "firewall drop", started);
    assert_eq!(d["cause"], "kernel_drop", "{}", trace.report());
    assert_eq!(d["drop_reason"], "NETFILTER_DROP", "{d}");
    // The stuck socket's owner, recorded at connect() in the pod, and its
    // pod and container from the cgroup.
    assert_eq!(d["process"]["comm"], "curl", "{d}");
    assert_eq!(d["pod"]["uid"], cgroup.pod_uid.as_str(), "{d}");
    assert_eq!(d["container"]["id"], cgroup.container_id.as_str(), "{d}");
    let rule = d["rule"].as_str().unwrap_or_default();
    assert!(
        rule.contains("inet fw forward") && rule.contains(&format!("port {PORT}")),
        "the rule that drops it: {d}"
    );
    assert!(
        bare_fix(&d).starts_with("nft -a list chain inet fw forward"),
        "{d}"
    );
    // The drop events the verdict rests on are in the stream, from the
    // node's own namespace.
    assert!(
        trace.events().iter().any(|v| is_type(v, "drop")
            && v["reason"] == "NETFILTER_DROP"
            && ep(&v["dst"]) == Some(dst)),
        "no drop event\n{}",
        trace.report()
    );
    assert!(
        after < 5.0,
        "verdict {after:.3} s after the first retransmit"
    );
    trace.stop();
}

#[test]
fn the_same_path_without_the_rule_gets_no_verdict() {
    require_root();
    let (PodLab { lab, node, pod, .. }, _echo, dst) = echo_lab("kd-ok");
    let trace = Trace::start(&lab, &node.ns, None);
    let mut lines = netprobe_tests::peers::LineClient::start(&pod.ns, dst, secs(0.2));
    assert!(lines.wait_echoes(10, secs(10.0)), "echoes through the node");
    std::thread::sleep(secs(1.0));
    assert!(lines.is_running() && lines.error().is_none());
    let diags: Vec<_> = trace
        .events()
        .into_iter()
        .filter(|v| is_type(v, "diagnosis") && mentions_lab(&lab, &v["flow"]))
        .collect();
    assert!(
        diags.is_empty(),
        "a working path gets no verdict: {diags:#?}"
    );
    trace.stop();
}

/// The machine-wide `nf_conntrack_max` (settable only from the root
/// namespace, compared with each namespace's own count), set for the life
/// of the guard and restored in `Drop`, also when the test panics.
struct ConntrackMax {
    old: String,
}

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    fn set(max: u32) -> ConntrackMax {
        let old = std::fs::read_to_string(CONNTRACK_MAX).expect("nf_conntrack loaded");
        std::fs::write(CONNTRACK_MAX, max.to_string()).expect("set nf_conntrack_max");
        ConntrackMax { old }
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(CONNTRACK_MAX, self.old.trim()) {
            eprintln!(
                "could not restore nf_conntrack_max to {}: {e}",
                self.old.trim()
            );
        }
    }
}

#[test]
fn a_full_conntrack_table_on_the_node_is_named() {
    require_root();
    let (PodLab { lab, node, pod, .. }, _echo, dst) = echo_lab("kd-ct");
    // The node tracks what it forwards (a stateful rule registers
    // conntrack's hooks in its namespace), as every Kubernetes node does.
    node.ns.exec(["nft", "add table inet lab"]);
    node.ns.exec([
        "nft",
        "add chain inet lab forward { type filter hook forward priority 0; }",
    ]);
    node.ns.exec([
        "nft",
        "add rule inet lab forward ct state established,related accept",
    ]);
    // Control first: with room in the table the pod's connection works.
    let lines = netprobe_tests::peers::LineClient::start(&pod.ns, dst, secs(0.2));
    assert!(lines.wait_echoes(3, secs(10.0)), "echoes through the node");
    drop(lines);

    let trace = Trace::start(&lab, &node.ns, Some("conntrack_table_full"));
    // Fill the node's table with established, assured entries (conntrack
    // never evicts those early) up to a small machine-wide maximum; kept
    // set only until the verdict.
    const MAX: u32 = 64;
    let guard = ConntrackMax::set(MAX);
    node.ns.sh(&format!(
        "i=0; while [ $i -lt {} ]; do i=$((i+1)); \
         conntrack -I -p tcp -s 10.254.$((i/250)).$((i%250+1)) -d 10.253.0.1 --sport 40000 --dport 80 \
           --state ESTABLISHED -t 120 -u ASSURED,SEEN_REPLY >/dev/null 2>&1 || break; done",
        MAX + 8
    ));
    let out = node
        .ns
        .exec(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]);
    let count: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(count >= MAX, "node table filled: {count} of {MAX}");
    let started = Instant::now();
    let _client = pod.ns.spawn([
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "10",
        &format!("http://{dst}/"),
    ]);
    let (d, after) = storm_verdict(&trace, "dst", dst, "conntrack table full", started);
    drop(guard);
    assert_eq!(d["cause"], "conntrack_table_full", "{}", trace.report());
    assert_eq!(d["drop_reason"], "NETFILTER_DROP", "{d}");
    assert!(
        d["fix"]
            .as_str()
            .is_some_and(|f| f.starts_with("sysctl -w net.netfilter.nf_conntrack_max=128")),
        "{d}"
    );
    assert!(
        after < 5.0,
        "verdict {after:.3} s after the first retransmit"
    );
    trace.stop();
}

/// pod — node —1500— r1 —1400 (the "overlay")— r2 —1500— server. With
/// `filter_icmp`, both routers drop the "fragmentation needed" they send:
/// a PMTU black hole. Returns the lab, node, pod and server hosts.
fn mtu_lab(label: &str, filter_icmp: bool) -> (Lab, Host, Host, Host) {
    let mut lab = Lab::new(label);
    let node_ns = lab.namespace("node");
    let r1 = lab.namespace("r1");
    let r2 = lab.namespace("r2");
    let srv = lab.namespace("srv");
    let (node_a, r1_a) = lab.connect(&node_ns, &r1);
    let (r1_b, r2_b) = lab.connect(&r1, &r2);
    let (r2_c, server) = lab.connect(&r2, &srv);
    let pod_ns = lab.namespace("pod");
    let pod = lab.pod_behind(&node_a, &pod_ns);
    let net = |h: &Host| {
        let o = h.ipv4.octets();
        format!("{}.{}.{}.0/24", o[0], o[1], o[2])
    };
    node_a.route(&net(&server), r1_a.ipv4.into());
    r1_b.route(&net(&server), r2_b.ipv4.into());
    r1_a.route(&net(&pod), node_a.ipv4.into());
    r2_b.route(&net(&node_a), r1_b.ipv4.into());
    r2_b.route(&net(&pod), r1_b.ipv4.into());
    server.route("default", r2_c.ipv4.into());
    for (h, ifname) in [(&r1_b, &r1_b.ifname), (&r2_b, &r2_b.ifname)] {
        h.ns.ip(["link", "set", ifname, "mtu", "1400"]);
    }
    for r in [&r1, &r2] {
        r.sysctl("net.ipv4.ip_forward", "1");
        if filter_icmp {
            r.exec(["nft", "add table inet bh"]);
            r.exec([
                "nft",
                "add chain inet bh out { type filter hook output priority 0; }",
            ]);
            r.exec([
                "nft",
                "add rule inet bh out icmp type destination-unreachable icmp code frag-needed drop",
            ]);
        }
    }
    (lab, node_a, pod, server)
}

#[test]
fn an_mtu_black_hole_is_named_with_the_path_mtu() {
    require_root();
    let (lab, node, pod, server) = mtu_lab("kd-mtu", true);
    let _tls = TlsServer::start_with_chain(&server.ns, server.ipv4.into(), API_PORT, 6);
    let api = SocketAddr::new(server.ipv4.into(), API_PORT);
    let trace = Trace::start(&lab, &node.ns, Some("mtu_blackhole"));
    let started = Instant::now();
    let d = trace.stalled_handshake(&pod.ns, api, secs(8.0));
    eprintln!(
        "VERDICT (MTU black hole): {:?} after curl started\n{}",
        started.elapsed(),
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    assert_eq!(d["cause"], "mtu_blackhole", "{}", trace.report());
    assert_eq!(d["path_mtu"], 1400, "{d}");
    assert!(
        d["detected_after_ms"].as_u64().is_some_and(|ms| ms < 5000),
        "{d}"
    );
    trace.stop();
}

/// The same black hole from the server's node: netprobe in the server's
/// namespace sees its own socket's full-size segments retransmit, and the
/// path check toward the client finds the 1400-byte staircase.
#[test]
fn an_mtu_black_hole_is_named_from_the_servers_node() {
    require_root();
    let (lab, _node, pod, server) = mtu_lab("kd-mtus", true);
    let _tls = TlsServer::start_with_chain(&server.ns, server.ipv4.into(), API_PORT, 6);
    let api = SocketAddr::new(server.ipv4.into(), API_PORT);
    let trace = Trace::start(&lab, &server.ns, Some("mtu_blackhole_server"));
    let started = Instant::now();
    let r = curl_https(&pod.ns, api.ip(), API_PORT, "kubernetes", secs(8.0));
    assert!(
        r.tcp_connected && !r.tls_done,
        "want the handshake stalled: {}",
        r.report
    );
    let (d, after) = storm_verdict(&trace, "src", api, "MTU black hole, server's node", started);
    assert_eq!(d["symptom"], "retransmit_storm", "{d}");
    assert_eq!(d["cause"], "mtu_blackhole", "{}", trace.report());
    assert_eq!(d["path_mtu"], 1400, "{d}");
    assert!(
        after < 5.0,
        "verdict {after:.3} s after the first retransmit"
    );
    trace.stop();
}

#[test]
fn the_same_lower_mtu_with_icmp_allowed_gets_no_verdict() {
    pmtud_works_without_a_verdict("kd-pmtu", false);
}

/// The server-side view of the same control: its own socket's segments
/// get through after PMTUD, so no storm and no verdict there either.
#[test]
fn the_same_lower_mtu_with_icmp_allowed_gets_no_verdict_on_the_servers_node() {
    pmtud_works_without_a_verdict("kd-pmtus", true);
}

/// The 1400-byte hop with ICMP allowed, netprobe on the client's node or
/// on the server's: the handshake completes and nothing is diagnosed.
fn pmtud_works_without_a_verdict(label: &str, on_server: bool) {
    require_root();
    let (lab, node, pod, server) = mtu_lab(label, false);
    let _tls = TlsServer::start_with_chain(&server.ns, server.ipv4.into(), API_PORT, 6);
    let view = if on_server { &server.ns } else { &node.ns };
    let trace = Trace::start(&lab, view, None);
    let r = curl_https(
        &pod.ns,
        server.ipv4.into(),
        API_PORT,
        "kubernetes",
        secs(8.0),
    );
    assert_eq!(r.http_code, Some(200), "PMTUD works: {}", r.report);
    std::thread::sleep(secs(4.0));
    let diags: Vec<_> = trace
        .events()
        .into_iter()
        .filter(|v| is_type(v, "diagnosis") && mentions_lab(&lab, &v["flow"]))
        .collect();
    assert!(diags.is_empty(), "PMTUD works: no verdict: {diags:#?}");
    // netprobe watched the handshake from there: the client's next flight
    // (after the server's whole flight) crossed this node's hooks.
    let api = SocketAddr::new(server.ipv4.into(), API_PORT);
    assert!(
        trace
            .events()
            .iter()
            .any(|v| is_type(v, "tls_client_flight") && ep(&v["dst"]) == Some(api)),
        "{}",
        trace.report()
    );
    trace.stop();
}

/// A server on the node that either listens with a backlog of 1 and never
/// calls accept() (`never`: its accept queue fills and the kernel drops the
/// rest), or accepts with a normal backlog and keeps each connection open
/// without a word (`hold`: a silent server, not a full queue).
const LISTENER: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
hold = sys.argv[3] == "hold"
s.listen(128 if hold else 1)
print('listening', flush=True)
held = []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if hold:
        s.settimeout(1)
        try:
            held.append(s.accept()[0])
        except socket.timeout:
            pass
    else:
        time.sleep(1)
"#;

/// [`LISTENER`] on the node at `api`, ready.
fn node_listener(node: &Host, api: SocketAddr, mode: &str) -> netprobe_tests::Background {
    let mut server = node.ns.spawn([
        netprobe_tests::py::python(),
        "-u",
        "-c",
        LISTENER,
        &api.ip().to_string(),
        &api.port().to_string(),
        mode,
    ]);
    assert!(
        server
            .wait_line(
                netprobe_tests::Stream::Stdout,
                |l| l == "listening",
                secs(5.0)
            )
            .is_some(),
        "server: {}",
        server.report()
    );
    server
}

/// Four pod clients' handshakes to `api` at once.
fn four_clients(pod: &Host, api: SocketAddr) -> Vec<netprobe_tests::Background> {
    let url = format!("https://{api}/");
    (0..4)
        .map(|_| {
            pod.ns
                .spawn(["curl", "-sk", "-o", "/dev/null", "--max-time", "10", &url])
        })
        .collect()
}

#[test]
fn a_full_accept_queue_on_the_node_is_a_listen_overflow() {
    require_root();
    let PodLab { lab, node, pod, .. } = PodLab::build("kd-lo");
    let api = SocketAddr::new(node.ipv4.into(), API_PORT);
    let _server = node_listener(&node, api, "never");
    let trace = Trace::start(&lab, &node.ns, None);
    let _clients = four_clients(&pod, api);
    let d = trace.expect(
        "a listen_overflow diagnosis",
        |v| {
            is_type(v, "diagnosis")
                && ep(&v["flow"]["dst"]) == Some(api)
                && v["cause"] == "listen_overflow"
        },
        secs(12.0),
    );
    eprintln!(
        "VERDICT (full accept queue):\n{}",
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    assert!(
        d["fix"]
            .as_str()
            .is_some_and(|f| f.contains(&format!(":{API_PORT}"))),
        "{d}"
    );
    trace.stop();
}

/// The same node and clients, the server accepting every connection and
/// then saying nothing: a silent server, never a full accept queue.
#[test]
fn a_server_that_accepts_but_stays_silent_is_not_a_listen_overflow() {
    require_root();
    let PodLab { lab, node, pod, .. } = PodLab::build("kd-lo-ok");
    let api = SocketAddr::new(node.ipv4.into(), API_PORT);
    let _server = node_listener(&node, api, "hold");
    let trace = Trace::start(&lab, &node.ns, None);
    let _clients = four_clients(&pod, api);
    // The clients' handshakes are diagnosed (the pipeline works here)...
    let d = trace.expect(
        "a diagnosis of a client's handshake",
        |v| is_type(v, "diagnosis") && ep(&v["flow"]["dst"]) == Some(api),
        secs(12.0),
    );
    std::thread::sleep(secs(1.0));
    // ...and none blames the accept queue.
    let overflow: Vec<_> = trace
        .lab_diagnoses()
        .into_iter()
        .filter(|v| v["cause"] == "listen_overflow")
        .collect();
    assert!(overflow.is_empty(), "{overflow:#?}");
    assert_eq!(d["cause"], "server_not_responding", "{d}");
    trace.stop();
}

//! Time to diagnosis, incident 2 (stale conntrack DNAT): cpod — node1 —
//! node2 — spod1/spod2, node1 DNATs ServiceIP:8000 to spod1:8000, a client
//! in cpod sends a line every second. spod1's veth is deleted on node2 (a
//! force-deleted pod; `ip netns del` would not remove a namespace with a
//! process in it), the DNAT re-pointed to spod2, one new connection made.
//! netprobe runs with `--netns node1 --port 8000`; measured: from the first
//! `retransmit` event of the stuck flow to its `diagnosis` (event times).

use std::net::SocketAddr;
use std::time::Duration;

use netprobe_tests::peers::{EchoServer, LineClient};
use netprobe_tests::{Lab, Netns};
use serde_json::Value;

use crate::record::{Row, repeat};
use crate::{Config, np};

const PORT: u16 = 8000;
const SECTION: &str = "time to diagnosis";

struct Run {
    after_retx: f64,
    detected_ms: Option<f64>,
    cause: String,
}

pub fn bench(cfg: &Config) -> Vec<Row> {
    let runs = repeat("incident 2", cfg, |_| one());
    let mut causes: Vec<String> = runs.each(|r| r.cause.clone());
    causes.sort();
    causes.dedup();
    runs.finish(vec![
        Row::new(
            SECTION,
            "incident 2 (stale DNAT): first retransmit → diagnosis",
            "s",
        )
        .samples(runs.each(|r| r.after_retx))
        .reference("client hangs ~15 min (924.6 s, tcp_retries2=15)")
        .note(format!("cause: {}", causes.join(", "))),
        Row::new(SECTION, "incident 2: detected_after_ms", "ms")
            .samples(runs.ok.iter().filter_map(|r| r.detected_ms))
            .reference("bar: 5 s after the first retransmit"),
    ])
}

fn nat_rule(node: &Netns, svc: SocketAddr, target: SocketAddr) {
    let rule = format!(
        "add rule ip nat prerouting ip daddr {} tcp dport {} dnat to {target}",
        svc.ip(),
        svc.port()
    );
    node.exec(["nft", &rule]);
}

fn one() -> Run {
    let mut lab = Lab::new("bench-inc2");
    let cpod = lab.namespace("cpod");
    let node1 = lab.namespace("node1");
    let node2 = lab.namespace("node2");
    let spod1 = lab.namespace("spod1");
    let spod2 = lab.namespace("spod2");
    let (n1_cpod, cpod_h) = lab.connect(&node1, &cpod);
    let (n1_n2, n2_n1) = lab.connect(&node1, &node2);
    let (n2_s1, s1) = lab.connect(&node2, &spod1);
    let (n2_s2, s2) = lab.connect(&node2, &spod2);
    let o = lab.octet();
    node1.sysctl("net.ipv4.ip_forward", "1");
    node2.sysctl("net.ipv4.ip_forward", "1");
    cpod_h.route("default", n1_cpod.ipv4.into());
    s1.route("default", n2_s1.ipv4.into());
    s2.route("default", n2_s2.ipv4.into());
    n1_n2.route(&format!("10.{o}.2.0/23"), n2_n1.ipv4.into());
    n2_n1.route(&format!("10.{o}.0.0/24"), n1_n2.ipv4.into());
    // A node blackholes its pod CIDR: a deleted pod's packets vanish.
    node2.ip(["route", "add", "blackhole", &format!("10.{o}.2.0/23")]);

    let svc: SocketAddr = format!("10.{o}.250.10:{PORT}").parse().expect("addr");
    let pod1 = SocketAddr::new(s1.ipv4.into(), PORT);
    let pod2 = SocketAddr::new(s2.ipv4.into(), PORT);
    node1.exec(["nft", "add table ip nat"]);
    node1.exec([
        "nft",
        "add chain ip nat prerouting { type nat hook prerouting priority -100; }",
    ]);
    nat_rule(&node1, svc, pod1);

    let _server1 = EchoServer::start(&spod1, pod1.ip(), PORT);
    let stuck = LineClient::start(&cpod_h, svc, Duration::from_secs(1));
    assert!(
        stuck.wait_echoes(2, Duration::from_secs(5)),
        "no echo via {svc}"
    );
    let local = stuck.local_addr().to_string();

    let mut trace = np::trace(node1.name(), &["--port", "8000"]).np;
    let _server2 = EchoServer::start(&spod2, pod2.ip(), PORT);
    node2.ip(["link", "del", &n2_s1.ifname]);
    node1.exec(["nft", "flush chain ip nat prerouting"]);
    nat_rule(&node1, svc, pod2);
    let fresh = LineClient::start(&cpod_h, svc, Duration::from_secs(1));
    assert!(
        fresh.wait_echoes(1, Duration::from_secs(5)),
        "a new connection should reach {pod2}"
    );

    let of_stuck = |v: &Value, key: &str| v[key].as_str() == Some(local.as_str());
    let d = trace.wait_for(
        |v| np::is(v, "diagnosis") && of_stuck(&v["flow"], "src"),
        Duration::from_secs(20),
    );
    let stopped = trace.stop();
    let d = d.unwrap_or_else(|| panic!("no diagnosis for {local} within 20 s"));
    let first = stopped
        .events
        .iter()
        .find(|v| np::is(v, "retransmit") && of_stuck(v, "src"))
        .unwrap_or_else(|| panic!("no retransmit event for {local}"));
    let (Some(t_d), Some(t_r)) = (np::event_secs(&d), np::event_secs(first)) else {
        panic!("events without a parsable time: {first} {d}");
    };
    Run {
        after_retx: t_d - t_r,
        detected_ms: d["detected_after_ms"].as_f64(),
        cause: d["cause"].as_str().unwrap_or("?").to_string(),
    }
}

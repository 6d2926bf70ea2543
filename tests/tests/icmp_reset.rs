//! What this node's own stack answers (issue 9): ICMP errors it sends
//! (`icmp/icmp_send`: a `reject` rule, an unreachable host) and RSTs it
//! sends (`tcp/tcp_send_reset`: nothing listens), reported as `icmp_sent`
//! and `reset_sent` events from the node's namespace and named in the
//! diagnosis' evidence. netprobe runs in the node's namespace; the pod and
//! the server are other "machines" on the same kernel, and their answers
//! are never this node's.
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test icmp_reset -- --test-threads=1 --nocapture
//! ```

use std::{net::SocketAddr, time::Instant};

use serde_json::Value;

use netprobe_tests::{
    Lab, PodLab,
    peers::{EchoServer, LineClient},
    require_root, secs,
    verdicts::{Trace, ep, event_time, is_type, str_list},
};

const PORT: u16 = 9443;
/// Watched by default (`trace` watches 443 and 6443): nothing listens on
/// it on the node.
const CLOSED_WATCHED: u16 = 6443;
/// Not watched: only arming (a storm) makes its RSTs counted.
const CLOSED: u16 = 9444;

/// Events of type `t` that `pred` accepts.
fn events(trace: &Trace, t: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    trace
        .events()
        .into_iter()
        .filter(|v| is_type(v, t) && pred(v))
        .collect()
}

/// Every event of the kinds this file is about names a namespace, and only
/// the node's: the pod and the server share the kernel.
fn only_from(lab: &Lab, trace: &Trace, node: u64) {
    for v in trace.events() {
        if (is_type(&v, "icmp_sent") || is_type(&v, "reset_sent"))
            && netprobe_tests::verdicts::mentions_lab(lab, &v)
        {
            assert_eq!(v["netns"].as_u64(), Some(node), "another namespace's: {v}");
        }
    }
}

#[test]
fn a_reject_rule_on_the_node_is_reported_as_icmp_sent_and_named_in_the_verdict() {
    require_root();
    let l = PodLab::build("ir-rej");
    let (lab, node, pod) = (&l.lab, &l.node, &l.pod);
    let _echo = EchoServer::start(&l.server.ns, l.server.ipv4.into(), PORT);
    let dst = SocketAddr::new(l.server.ipv4.into(), PORT);
    let trace = Trace::start(lab, &node.ns, Some("icmp_reject"));
    // An established connection through the node first (a rejected SYN
    // fails connect() at once: nothing would be stuck).
    let lines = LineClient::start(&pod.ns, dst, secs(0.2));
    assert!(lines.wait_echoes(3, secs(10.0)), "echoes through the node");
    let client = lines.local_addr();
    // Then a NetworkPolicy-like reject on the node's forward path.
    let started = Instant::now();
    node.ns.nft().rule(
        "forward",
        &format!(
            "ip saddr {} tcp dport {PORT} reject with icmp type host-unreachable",
            pod.ipv4
        ),
    );
    let d = trace.expect(
        "diagnosis for the rejected connection",
        |v| is_type(v, "diagnosis") && ep(&v["flow"]["src"]) == Some(client),
        secs(15.0),
    );
    let first_retx = trace
        .events()
        .iter()
        .find(|v| is_type(v, "retransmit") && ep(&v["src"]) == Some(client))
        .map(event_time);
    let after = first_retx.map_or(f64::NAN, |t| event_time(&d) - t);
    eprintln!(
        "VERDICT (reject rule): {:?} after the rule, {after:.3} s after the first retransmit\n{}",
        started.elapsed(),
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    let node_ns = node.ns.inode();
    let icmp = events(&trace, "icmp_sent", |v| {
        ep(&v["src"]) == Some(client) && ep(&v["dst"]) == Some(dst)
    });
    assert!(!icmp.is_empty(), "no icmp_sent event\n{}", trace.report());
    for v in &icmp {
        assert_eq!(v["icmp_type"], 3, "{v}");
        assert_eq!(v["code"], 1, "{v}");
        assert_eq!(v["message"], "host_unreachable", "{v}");
        assert_eq!(v["netns"].as_u64(), Some(node_ns), "{v}");
    }
    only_from(lab, &trace, node_ns);
    assert_eq!(d["cause"], "kernel_drop", "{}", trace.report());
    assert_eq!(d["drop_reason"], "NETFILTER_DROP", "{d}");
    let rule = d["rule"].as_str().unwrap_or_default();
    assert!(
        rule.contains("rejects what matches") && rule.contains(&format!("port {PORT}")),
        "the reject rule: {d}"
    );
    assert!(
        d["summary"]
            .as_str()
            .is_some_and(|s| s.contains("this node answers with ICMP host unreachable")),
        "{d}"
    );
    assert!(
        str_list(&d["evidence"])
            .iter()
            .any(|e| e.contains(&format!("{client} -> {dst} with ICMP host unreachable"))),
        "{d}"
    );
    assert!(
        after < 5.0,
        "verdict {after:.3} s after the first retransmit"
    );
    drop(lines);
    trace.stop();
}

#[test]
fn a_pod_connecting_to_a_closed_watched_port_on_the_node_is_reset_sent() {
    require_root();
    let l = PodLab::build("ir-rst");
    let (lab, node, pod) = (&l.lab, &l.node, &l.pod);
    let trace = Trace::start(lab, &node.ns, None);
    let dst = SocketAddr::new(node.ipv4.into(), CLOSED_WATCHED);
    // Three refused connections from the pod to the node's own address
    // (a local route): the node's stack answers each SYN with a RST.
    let out = pod.ns.sh(&format!(
        "for i in 1 2 3; do curl -s -o /dev/null --max-time 2 http://{dst}/; echo rc=$?; done"
    ));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(said.matches("rc=7").count(), 3, "refused each time: {said}");
    let v = trace.expect(
        "reset_sent for the refused connections",
        |v| {
            is_type(v, "reset_sent")
                && ep(&v["src"]) == Some(dst)
                && v["dst"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(&format!("{}:", pod.ipv4)))
        },
        secs(5.0),
    );
    let node_ns = node.ns.inode();
    assert_eq!(v["reason"], "NO_SOCKET", "{v}");
    assert!(v["state"].is_null(), "no socket, no state: {v}");
    assert_eq!(v["count"], 1, "{v}");
    // Refused at once: no storm, so nothing to diagnose.
    std::thread::sleep(secs(1.0));
    let resets = events(&trace, "reset_sent", |v| ep(&v["src"]) == Some(dst));
    assert_eq!(
        resets.len(),
        3,
        "one per connection (a new flow each): {resets:#?}"
    );
    only_from(lab, &trace, node_ns);
    assert!(trace.lab_diagnoses().is_empty(), "{}", trace.report());
    trace.stop();
}

#[test]
fn a_storm_whose_syns_the_node_answers_with_rst_names_the_rst_in_the_evidence() {
    require_root();
    let l = PodLab::build("ir-rsd");
    let (lab, node, pod) = (&l.lab, &l.node, &l.pod);
    // The node's firewall drops the RSTs it sends toward the pod network
    // (a "drop outgoing RST" hardening rule): the pod never hears the
    // refusal and keeps retransmitting its SYN.
    let o = pod.ipv4.octets();
    node.ns.nft().rule(
        "output",
        &format!(
            "ip daddr {}.{}.{}.0/24 tcp flags & rst == rst drop",
            o[0], o[1], o[2]
        ),
    );
    let trace = Trace::start(lab, &node.ns, Some("rst_dropped"));
    let dst = SocketAddr::new(node.ipv4.into(), CLOSED);
    let started = Instant::now();
    let client = pod.ns.spawn([
        "sh",
        "-c",
        &format!("sleep 0.3; exec curl -s -o /dev/null --max-time 10 http://{dst}/"),
    ]);
    let d = trace.expect(
        "diagnosis for the unrefused SYNs",
        |v| is_type(v, "diagnosis") && ep(&v["flow"]["dst"]) == Some(dst),
        secs(12.0),
    );
    eprintln!(
        "VERDICT (RSTs dropped): {:?} after connect\n{}",
        started.elapsed(),
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    let node_ns = node.ns.inode();
    let resets = events(&trace, "reset_sent", |v| ep(&v["src"]) == Some(dst));
    assert!(!resets.is_empty(), "no reset_sent\n{}", trace.report());
    assert!(
        resets
            .iter()
            .all(|v| v["reason"] == "NO_SOCKET" && v["netns"].as_u64() == Some(node_ns)),
        "{resets:#?}"
    );
    only_from(lab, &trace, node_ns);
    assert!(
        str_list(&d["evidence"])
            .iter()
            .any(|e| e.contains(&format!("no listener on port {CLOSED} here"))),
        "{d}"
    );
    assert_eq!(d["cause"], "kernel_drop", "{d}");
    assert!(
        d["summary"].as_str().is_some_and(|s| s.contains(&format!(
            "the RSTs its own stack sends because nothing listens on port {CLOSED}"
        ))),
        "{d}"
    );
    drop(client);
    trace.stop();
}

#[test]
fn the_node_sending_fragmentation_needed_is_icmp_sent_and_pmtud_works() {
    require_root();
    let l = PodLab::build("ir-frag");
    let (lab, node, pod) = (&l.lab, &l.node, &l.pod);
    // The node's side of the pod's veth gets a lower MTU than both ends:
    // the server's full-size segments toward the pod do not fit, and the
    // node answers them with "fragmentation needed" (PMTUD working).
    let route = node.ns.ip_json(["route", "get", &pod.ipv4.to_string()]);
    let dev = route[0]["dev"]
        .as_str()
        .unwrap_or_else(|| panic!("no route to the pod: {route}"))
        .to_string();
    node.ns.ip(["link", "set", &dev, "mtu", "1400"]);
    let api_port = 6443;
    let _tls = netprobe_tests::peers::TlsServer::start_with_chain(
        &l.server.ns,
        l.server.ipv4.into(),
        api_port,
        6,
    );
    let server = SocketAddr::new(l.server.ipv4.into(), api_port);
    let trace = Trace::start(lab, &node.ns, None);
    let r =
        netprobe_tests::peers::curl_https(&pod.ns, server.ip(), api_port, "kubernetes", secs(8.0));
    assert_eq!(r.http_code, Some(200), "PMTUD works: {}", r.report);
    let v = trace.expect(
        "icmp_sent frag_needed toward the server",
        |v| is_type(v, "icmp_sent") && ep(&v["src"]) == Some(server),
        secs(5.0),
    );
    let node_ns = node.ns.inode();
    assert_eq!(v["message"], "frag_needed", "{v}");
    assert_eq!(
        (v["icmp_type"].as_u64(), v["code"].as_u64()),
        (Some(3), Some(4)),
        "{v}"
    );
    assert!(
        v["dst"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("{}:", pod.ipv4))),
        "{v}"
    );
    only_from(lab, &trace, node_ns);
    std::thread::sleep(secs(1.0));
    assert!(
        trace.lab_diagnoses().is_empty(),
        "PMTUD works: no verdict\n{}",
        trace.report()
    );
    trace.stop();
}

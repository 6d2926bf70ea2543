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

use netprobe_tests::{
    PodLab,
    peers::EchoServer,
    require_root, secs,
    verdicts::{Trace, ep, event_time, is_type, mentions_lab},
};

const PORT: u16 = 9443;

#[test]
fn a_firewall_rule_on_the_node_dropping_a_pods_syns_is_a_kernel_drop_with_its_rule() {
    require_root();
    let PodLab {
        lab,
        node,
        server,
        pod,
    } = PodLab::build("kd-fw");
    let _echo = EchoServer::start(&server.ns, server.ipv4.into(), PORT);
    let dst = SocketAddr::new(server.ipv4.into(), PORT);

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
    let _client = pod
        .ns
        .spawn(["curl", "-s", "-o", "/dev/null", "--max-time", "10", &url]);
    let d = trace.expect(
        "diagnosis for the pod's connection",
        |v| is_type(v, "diagnosis") && ep(&v["flow"]["dst"]) == Some(dst),
        secs(12.0),
    );
    let events = trace.events();
    let first_retx = events
        .iter()
        .find(|v| is_type(v, "retransmit") && ep(&v["dst"]) == Some(dst))
        .map(event_time);
    eprintln!(
        "VERDICT (firewall drop): {:?} after connect, {:.3} s after the first retransmit\n{}",
        started.elapsed(),
        first_retx.map_or(f64::NAN, |t| event_time(&d) - t),
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    assert_eq!(d["cause"], "kernel_drop", "{}", trace.report());
    assert_eq!(d["drop_reason"], "NETFILTER_DROP", "{d}");
    // The stuck socket's owner, recorded at connect() in the pod.
    assert_eq!(d["process"]["comm"], "curl", "{d}");
    let rule = d["rule"].as_str().unwrap_or_default();
    assert!(
        rule.contains("inet fw forward") && rule.contains(&format!("port {PORT}")),
        "the rule that drops it: {d}"
    );
    assert!(
        d["fix"]
            .as_str()
            .is_some_and(|f| f.starts_with("nft -a list chain inet fw forward")),
        "{d}"
    );
    // The drop events the verdict rests on are in the stream, from the
    // node's own namespace.
    assert!(
        events.iter().any(|v| is_type(v, "drop")
            && v["reason"] == "NETFILTER_DROP"
            && ep(&v["dst"]) == Some(dst)),
        "no drop event\n{}",
        trace.report()
    );
    let after = first_retx.map(|t| event_time(&d) - t).unwrap_or(f64::MAX);
    assert!(
        after < 5.0,
        "verdict {after:.3} s after the first retransmit"
    );
    trace.stop();
}

#[test]
fn the_same_path_without_the_rule_gets_no_verdict() {
    require_root();
    let PodLab {
        lab,
        node,
        server,
        pod,
    } = PodLab::build("kd-ok");
    let _echo = EchoServer::start(&server.ns, server.ipv4.into(), PORT);
    let dst = SocketAddr::new(server.ipv4.into(), PORT);
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

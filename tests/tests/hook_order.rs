//! First in line on every hook (issue 10, part 6), and hooks nothing can
//! hide (issue 16): a CNI's programs sit on the pod veths and uplinks before
//! netprobe starts, and one that ends the tcx chain (a redirect, or any
//! verdict but TCX_NEXT) hides the packets from every tc program after it.
//! netprobe attaches at the head of the chain and says who else is on the
//! hook; and its socket hooks (the root cgroup's) see the handshake at the
//! socket whatever happens on tc. Root only.

use std::net::SocketAddr;
use std::time::Duration;

use netprobe_tests::peers::{TlsServer, tls_client};
use netprobe_tests::tcx::{self, Action, HeadProgram};
use netprobe_tests::{Lab, Netprobe, poll_until, require_root, secs};
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn handshake_seen_through_a_chain_ending_program_attached_before_netprobe() {
    require_root();
    let mut lab = Lab::new("hookorder");
    let seg = lab.bridge_segment(2);
    let (srv, cli) = (seg.host(0), seg.host(1));
    let server = SocketAddr::new(srv.ipv4.into(), 6443);
    let _tls = TlsServer::start(srv, server.ip(), 6443);
    // The "CNI" comes first: both directions of the client's interface.
    let _cni_in = HeadProgram::attach_first(cli, &cli.ifname, true);
    let _cni_out = HeadProgram::attach_first(cli, &cli.ifname, false);

    let mut np = Netprobe::start_in(cli, ["trace", "--json", "--port", "6443"]);
    np.wait_ready(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("netprobe did not get ready: {e:#}"));
    let stderr = np.stderr();
    for dir in ["ingress", "egress"] {
        let want = format!(
            "netprobe: tcx hook {} {dir}: position 1 of 2 (after it: {}",
            cli.ifname,
            tcx::NAME
        );
        assert!(stderr.contains(&want), "want {want:?} in stderr:\n{stderr}");
    }

    let hellos = |np: &Netprobe, t: &str| -> Vec<Value> {
        np.events_of_type(t)
            .into_iter()
            .filter(|v| {
                let peer = if t == "tls_client_hello" {
                    &v["dst"]
                } else {
                    &v["src"]
                };
                peer.as_str() == Some(server.to_string().as_str())
            })
            .collect()
    };
    let hs = tls_client(cli, server.ip(), 6443, Some("first.lab"), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    for t in ["tls_client_hello", "tls_server_hello"] {
        let seen = poll_until(EVENT_TIMEOUT, secs(0.05), || {
            (!hellos(&np, t).is_empty()).then_some(())
        });
        assert!(
            seen.is_some(),
            "no {t} with the CNI program ahead on the hook\n{}",
            np.stderr()
        );
    }

    // A program linked ahead of netprobe now hides the packets from its tc
    // hooks (so the first handshake's hop was seen because of the order),
    // but not from its socket hooks: the second handshake is still
    // reported, from the client's socket, and has no hop on the uplink.
    let on_uplink = |np: &Netprobe, sni_flow: &Value| {
        np.events_of_type("tls_hop")
            .into_iter()
            .filter(|h| h["src"] == sni_flow["src"] && h["iface"] == cli.ifname.as_str())
            .count()
    };
    let first = hellos(&np, "tls_client_hello")[0].clone();
    assert_eq!(first["direction"], "socket_egress", "{first}");
    let _late_in = HeadProgram::attach_first(cli, &cli.ifname, true);
    let _late_out = HeadProgram::attach_first(cli, &cli.ifname, false);
    let hs = tls_client(cli, server.ip(), 6443, Some("second.lab"), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    std::thread::sleep(secs(1.0));
    let got = hellos(&np, "tls_client_hello");
    assert_eq!(
        got.len(),
        2,
        "both handshakes seen at the socket: {got:?}\n{}",
        np.stderr()
    );
    assert_eq!(got[1]["sni"], "second.lab", "{got:?}");
    assert_eq!(on_uplink(&np, &first), 1, "{:?}", np.events());
    assert_eq!(
        on_uplink(&np, &got[1]),
        0,
        "the program ahead must hide the second handshake from tc: {:?}",
        np.events()
    );
    assert_eq!(
        hellos(&np, "tls_server_hello").len(),
        2,
        "{:?}",
        np.events()
    );

    // doctor names the programs sharing the hooks.
    let done = Netprobe::run(["doctor", "--netns", cli.name()], secs(60.0));
    let line = done
        .stdout()
        .lines()
        .find(|l| l.contains("tcx hooks"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no tcx hooks line: {}", done.report()));
    for dir in ["ingress", "egress"] {
        assert!(
            line.contains(&format!("{} {dir}: {}", cli.ifname, tcx::NAME)),
            "{line}"
        );
    }

    eprintln!(
        "doctor: {line}\ntrace: {}",
        stderr
            .lines()
            .filter(|l| l.contains("tcx hook"))
            .collect::<Vec<_>>()
            .join("\ntrace: ")
    );
    let stopped = np.stop();
    assert!(stopped.clean_exit(), "{}", stopped.stderr);
}

/// Cilium's way: on the switch's ports, a program redirects every packet
/// straight into the other host's interface (`bpf_redirect_peer`), past the
/// bridge. The switch is a node whose "pods" are the two hosts (their veths
/// end on it, unaddressed). netprobe on it, started after the redirect and
/// asked for the ports' own hooks, heads their chains and sees the hello on
/// the client's port; its socket hooks see both hellos at the pods' sockets.
#[test]
fn handshake_seen_through_a_redirect_peer_program_attached_before_netprobe() {
    require_root();
    let mut lab = Lab::new("hookredir");
    let seg = lab.bridge_segment(2);
    let (srv, cli) = (seg.host(0), seg.host(1));
    let sw = &seg.switch;
    let server = SocketAddr::new(srv.ipv4.into(), 6443);
    let _tls = TlsServer::start(srv, server.ip(), 6443);
    // p1 is the client's port, p0 the server's: each redirects into the other.
    let to_srv = HeadProgram::attach_first_doing(sw, "p1", true, Action::RedirectPeer("p0".into()));
    let to_cli = HeadProgram::attach_first_doing(sw, "p0", true, Action::RedirectPeer("p1".into()));
    // The redirect works on its own: the handshake completes past the bridge.
    let hs = tls_client(cli, server.ip(), 6443, Some("redirect.lab"), secs(5.0));
    assert!(hs.handshake_done, "through the redirect: {}", hs.report);

    let mut np = Netprobe::start_in(
        sw,
        [
            "trace", "--json", "--port", "6443", "--iface", "p0", "--iface", "p1",
        ],
    );
    np.wait_ready(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("netprobe did not get ready: {e:#}"));
    let want = format!(
        "netprobe: tcx hook p1 ingress: position 1 of 2 (after it: {}",
        tcx::REDIRECT_NAME
    );
    assert!(
        np.stderr().contains(&want),
        "want {want:?} in:\n{}",
        np.stderr()
    );

    let hs = tls_client(cli, server.ip(), 6443, Some("redirect.lab"), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    let ch = np.wait_for(
        |v| v["type"] == "tls_client_hello" && v["dst"] == server.to_string(),
        EVENT_TIMEOUT,
    );
    let ch = ch.unwrap_or_else(|| panic!("no ClientHello past the redirect\n{}", np.stderr()));
    // At the client pod's socket first, in its namespace.
    assert_eq!(ch["direction"], "socket_egress", "{ch}");
    assert_eq!(ch["netns"], cli.inode(), "{ch}");
    let sh = np.wait_for(
        |v| v["type"] == "tls_server_hello" && v["src"] == server.to_string(),
        EVENT_TIMEOUT,
    );
    assert!(
        sh.is_some(),
        "no ServerHello past the redirect\n{}",
        np.stderr()
    );
    let hop_on = |np: &Netprobe, iface: &str, dir: &str| {
        np.events_of_type("tls_hop")
            .into_iter()
            .any(|v| v["iface"] == iface && v["direction"] == dir && v["src"] == ch["src"])
    };
    // netprobe heads p1's ingress chain: the hello's hop there is seen.
    let seen = poll_until(EVENT_TIMEOUT, secs(0.05), || {
        hop_on(&np, "p1", "ingress").then_some(())
    });
    assert!(seen.is_some(), "no hop on p1 ingress: {:?}", np.events());
    // Redirected past the bridge: it never crosses p0's egress.
    std::thread::sleep(secs(0.5));
    assert!(
        !hop_on(&np, "p0", "egress"),
        "a p0 egress hop despite the redirect: {:?}",
        np.events()
    );
    // Control: without the redirect, the next handshake crosses the bridge
    // and shows up on the other port's egress too.
    drop((to_srv, to_cli));
    let hs = tls_client(cli, server.ip(), 6443, Some("bridged.lab"), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    let hop = np.wait_for(
        |v| v["type"] == "tls_hop" && v["iface"] == "p0" && v["direction"] == "egress",
        EVENT_TIMEOUT,
    );
    assert!(
        hop.is_some(),
        "no hop on p0 egress once bridged: {:?}\n{}",
        np.events(),
        np.stderr()
    );
    let stopped = np.stop();
    assert!(stopped.clean_exit(), "{}", stopped.stderr);
}

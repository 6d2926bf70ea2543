//! First in line on every hook (issue 10, part 6): a CNI's programs sit on
//! the pod veths and uplinks before netprobe starts, and one that ends the
//! tcx chain (a redirect, or any verdict but TCX_NEXT) hides the packets
//! from every program after it. netprobe attaches at the head of the chain,
//! says who else is on the hook, and still sees the handshake. Root only.

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

    // Control: a program linked ahead of netprobe now does hide the
    // packets (so the first handshake was seen because of the order).
    let _late_in = HeadProgram::attach_first(cli, &cli.ifname, true);
    let _late_out = HeadProgram::attach_first(cli, &cli.ifname, false);
    let hs = tls_client(cli, server.ip(), 6443, Some("second.lab"), secs(5.0));
    assert!(hs.handshake_done, "{}", hs.report);
    std::thread::sleep(secs(1.0));
    for t in ["tls_client_hello", "tls_server_hello"] {
        let got = hellos(&np, t);
        assert_eq!(
            got.len(),
            1,
            "{t}: the program ahead must hide the second handshake: {got:?}"
        );
    }

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
/// bridge. netprobe, on the switch, attached after it was there, still sees
/// both hellos on the ports' ingress hooks.
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

    let mut np = Netprobe::start_in(sw, ["trace", "--json", "--port", "6443"]);
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
    assert_eq!(ch["iface"], "p1", "{ch}");
    assert_eq!(ch["direction"], "ingress", "{ch}");
    let sh = np.wait_for(
        |v| v["type"] == "tls_server_hello" && v["src"] == server.to_string(),
        EVENT_TIMEOUT,
    );
    let sh = sh.unwrap_or_else(|| panic!("no ServerHello past the redirect\n{}", np.stderr()));
    assert_eq!(sh["iface"], "p0", "{sh}");
    // Redirected past the bridge: the hellos never cross another hook (a
    // second crossing would be a `tls_hop`, e.g. on p0's egress).
    let hops = |np: &Netprobe| np.events_of_type("tls_hop");
    std::thread::sleep(secs(0.5));
    assert!(
        hops(&np).is_empty(),
        "hops despite the redirect: {:?}",
        hops(&np)
    );
    // Control: without the redirect, the same handshake crosses the bridge
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

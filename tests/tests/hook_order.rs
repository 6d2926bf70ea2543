//! First in line on every hook (issue 10, part 6): a CNI's programs sit on
//! the pod veths and uplinks before netprobe starts, and one that ends the
//! tcx chain (a redirect, or any verdict but TCX_NEXT) hides the packets
//! from every program after it. netprobe attaches at the head of the chain,
//! says who else is on the hook, and still sees the handshake. Root only.

use std::net::SocketAddr;
use std::time::Duration;

use netprobe_tests::peers::{TlsServer, tls_client};
use netprobe_tests::tcx::{self, HeadProgram};
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

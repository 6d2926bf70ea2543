//! Acceptance tests: the two incidents of shared/incidents.md reproduced in
//! lab namespaces, and the control case. netprobe must name the cause, with
//! the fix, in seconds; the fix it prints must work; and plain packet loss
//! must not be blamed on ARP or conntrack.
//!
//! Root only, one at a time (netprobe's tracepoints see every namespace):
//!
//! ```text
//! NETPROBE_BIN=$PWD/target/release/netprobe \
//!     cargo test -p netprobe-tests --test incidents -- --test-threads=1 --nocapture
//! ```
//!
//! With `NETPROBE_RECORD_FIXTURES=1` the incident 1 (IPv4), incident 2 and
//! control runs also save netprobe's JSON stream as
//! `tests/fixtures/<name>.jsonl`; copied to `probe-user/tests/fixtures/`
//! they are the inputs of `probe-user/tests/replay_fixtures.rs`.
//!
//! On failure the panic is followed by netprobe's events for this lab and
//! its stderr.

use netprobe_tests::{require_root, secs};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netprobe_tests::peers::{BlackHole, EchoServer, LineClient, TlsServer, curl_https};
use netprobe_tests::verdicts::{
    Trace, ep, event_time, is_diagnosis_for_dst, is_diagnosis_for_src, is_type, mentions_lab,
    now_epoch, report, str_list,
};
use netprobe_tests::{Host, Lab, ServiceLab, poll_until, py};
use serde_json::Value;

/// kubectl's TLS handshake timeout, and the `--max-time` of the failing curl.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(10);
/// The SNI curl sends (`--resolve` maps it to the VIP).
const API_NAME: &str = "kubernetes";
const API_PORT: u16 = 6443;
const SVC_PORT: u16 = 8000;

// ---------------------------------------------------------------------------
// Incident 1: stale ARP/NDP entry for an HA VIP
// ---------------------------------------------------------------------------

/// Unsolicited neighbour advertisement (override flag set, solicited flag
/// clear) for TARGET with link-layer address MAC, from TARGET to ff02::1
/// out of IFNAME, hop limit 255: what a host taking over an IPv6 address
/// sends. The kernel fills in the ICMPv6 checksum.
const UNSOLICITED_NA: &str = r#"
import socket, struct, sys
ifname, target, mac = sys.argv[1], sys.argv[2], sys.argv[3]
idx = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
s.bind((target, 0, 0, idx))
na = struct.pack('!BBHI', 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, target)
na += bytes([2, 1]) + bytes.fromhex(mac.replace(':', ''))
s.sendto(na, ('ff02::1', 0, 0, idx))
print('sent')
"#;

/// `host` announces that `vip` (one of its addresses) is at its MAC: a
/// gratuitous ARP for IPv4, an unsolicited NA for IPv6.
fn announce(host: &Host, vip: IpAddr) {
    match vip {
        IpAddr::V4(v4) => host.gratuitous_arp(v4),
        IpAddr::V6(_) => {
            let args = [host.ifname.clone(), vip.to_string(), host.mac.clone()];
            let done = netprobe_tests::cmd::run_bounded(
                &mut py::command(host, UNSOLICITED_NA, &args),
                Duration::from_secs(5),
            );
            assert!(done.success(), "unsolicited NA: {}", done.report());
        }
    }
}

/// Repeats `impostor`'s announcement until `client`'s entry for `vip` says
/// the impostor's MAC (the kernel ignores ARP overrides within locktime).
fn poison(client: &Host, impostor: &Host, vip: IpAddr) {
    let moved = poll_until(secs(10.0), secs(0.1), || {
        announce(impostor, vip);
        client.wait_neighbour(vip, secs(0.5), |n| {
            n.lladdr.as_deref() == Some(impostor.mac.as_str())
        })
    });
    let n = moved.unwrap_or_else(|| {
        panic!(
            "{}'s entry for {vip} never moved to {}: {:?}",
            client.name(),
            impostor.mac,
            client.neighbour(vip)
        )
    });
    eprintln!("client's entry poisoned: {n:?}");
}

fn url_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Incident 1. `watch_poisoning`: netprobe runs before the impostor's
/// announcement (it sees it on the wire) or is started only after (the
/// active probe alone must find both claimants).
fn incident1(v6: bool, watch_poisoning: bool, fixture: Option<&'static str>) {
    incident1_with(v6, watch_poisoning, fixture, false)
}

/// What `kubectl version` did against the lab's VIP.
struct KubectlRun {
    failed: bool,
    elapsed: Duration,
    report: String,
}

/// `kubectl version` from `client` against https://VIP:6443 (SNI
/// kubernetes, certificate not checked): the real client of the seed.
fn kubectl_version(client: &Host, vip: IpAddr) -> KubectlRun {
    let dir = netprobe_tests::tmp::TempDir::new();
    let config = dir.join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{}:{API_PORT}\n    insecure-skip-tls-verify: true\n    tls-server-name: {API_NAME}\nusers:\n- name: lab\n  user:\n    token: lab\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\n",
        url_ip(vip)
    );
    std::fs::write(&config, yaml).expect("writing the kubeconfig");
    let config = config.to_string_lossy().to_string();
    let started = Instant::now();
    let ran = client.try_exec(["kubectl", "--kubeconfig", &config, "version"], secs(30.0));
    KubectlRun {
        failed: !ran.success(),
        elapsed: started.elapsed(),
        report: ran.report(),
    }
}

/// Incident 1 with real kubectl (`kubectl_client`) instead of curl.
fn incident1_with(
    v6: bool,
    watch_poisoning: bool,
    fixture: Option<&'static str>,
    kubectl_client: bool,
) {
    require_root();
    let label = match (v6, watch_poisoning) {
        _ if kubectl_client => "inc1-kctl",
        (false, true) => "inc1-v4",
        (false, false) => "inc1-v4-late",
        (true, true) => "inc1-v6",
        (true, false) => "inc1-v6-late",
    };
    let mut lab = Lab::new(label);
    let seg = lab.bridge_segment(3);
    let (client, owner, impostor) = (seg.host(0), seg.host(1), seg.host(2));
    let vip: IpAddr = if v6 {
        seg.vip6(0).into()
    } else {
        seg.vip(0).into()
    };
    let api = SocketAddr::new(vip, API_PORT);

    // The VIP owner serves the API; the client resolves the VIP to it and
    // talks TLS fine: the state before the incident. When netprobe runs
    // already, it sees that handshake answered through the owner's MAC:
    // the evidence that tells the owner from the impostor later.
    owner.add_ip(vip);
    let _server = TlsServer::start(owner, vip, API_PORT);
    let mut trace = None;
    if watch_poisoning {
        trace = Some(Trace::start(&lab, client, fixture));
    }
    assert!(client.ping(vip), "client reaches the VIP");
    let n = client
        .wait_neighbour(vip, secs(3.0), |n| n.lladdr.is_some())
        .expect("client resolved the VIP");
    assert_eq!(n.lladdr.as_deref(), Some(owner.mac.as_str()), "{n:?}");
    let ok = curl_https(client, vip, API_PORT, API_NAME, secs(5.0));
    assert_eq!(
        ok.http_code,
        Some(200),
        "before the incident: {}",
        ok.report
    );

    // A second host also holds the VIP, accepts TCP and never answers TLS.
    impostor.add_ip(vip);
    let hole = BlackHole::start(impostor, vip, API_PORT);

    poison(client, impostor, vip);
    let trace = trace.unwrap_or_else(|| Trace::start(&lab, client, fixture));
    let before = client.neighbour(vip).expect("entry for the VIP");
    assert_eq!(before.lladdr.as_deref(), Some(impostor.mac.as_str()));

    // kubectl: curl with a 10 s deadline. netprobe must speak before it.
    let curl_wall = now_epoch();
    let curl_start = Instant::now();
    let (bad, diag, seen_after) = std::thread::scope(|s| {
        let curl = s.spawn(|| {
            if kubectl_client {
                Err(kubectl_version(client, vip))
            } else {
                Ok(curl_https(client, vip, API_PORT, API_NAME, KUBECTL_TIMEOUT))
            }
        });
        let diag = trace.np.wait_for(
            |v| is_diagnosis_for_dst(v, api),
            KUBECTL_TIMEOUT + secs(5.0),
        );
        let seen_after = curl_start.elapsed();
        let bad = curl.join().expect("curl thread");
        (bad, diag, seen_after)
    });
    match &bad {
        Ok(bad) => {
            eprintln!(
                "curl: exit {:?} after {:?} (connected {}, TLS done {})",
                bad.exit_code, bad.elapsed, bad.tcp_connected, bad.tls_done
            );
            assert!(
                bad.exit_code == Some(28) && bad.tcp_connected && !bad.tls_done,
                "want a TLS handshake timeout (TCP connected, no TLS, curl exit 28): {}\n{}",
                bad.report,
                trace.report()
            );
        }
        Err(k) => {
            eprintln!(
                "kubectl version: failed {} after {:?}\n{}",
                k.failed, k.elapsed, k.report
            );
            assert!(
                k.failed && k.report.contains("TLS handshake timeout"),
                "want kubectl's TLS handshake timeout: {}\n{}",
                k.report,
                trace.report()
            );
        }
    }
    assert!(
        !hole.accepted().is_empty(),
        "the impostor should have taken the TCP connection"
    );
    let d = diag.unwrap_or_else(|| {
        panic!(
            "no diagnosis for {api} within {:?} of starting curl\n{}",
            KUBECTL_TIMEOUT + secs(5.0),
            trace.report()
        )
    });
    let diag_after_curl = event_time(&d) - curl_wall;
    eprintln!(
        "TIME TO DIAGNOSIS ({label}): printed {seen_after:?} after curl started \
         (event time {diag_after_curl:.3} s after), detected_after_ms {}\n{}",
        d["detected_after_ms"],
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );

    // The verdict, field by field.
    let dump = || format!("diagnosis: {d}\n{}", trace.report());
    assert_eq!(d["symptom"], "tls_handshake_unanswered", "{}", dump());
    if !watch_poisoning {
        // Started after the poisoning, netprobe saw no handshake through
        // either MAC and no change of the entry: what decides is its own
        // TLS handshake through each claimant, the owner's answered.
        let evidence = str_list(&d["evidence"]);
        let own = evidence
            .iter()
            .find(|e| e.starts_with("netprobe's own TLS handshake"))
            .unwrap_or_else(|| panic!("no owner-probe evidence\n{}", dump()));
        eprintln!("owner probe: {own}");
        let through_owner = format!("through {}: TCP accepted in", owner.mac);
        let owner_part = own
            .split("; ")
            .find(|p| p.contains(&through_owner))
            .unwrap_or_else(|| panic!("no attempt through the owner: {own}\n{}", dump()));
        assert!(owner_part.contains("ServerHello in"), "{own}\n{}", dump());
        let impostor_part = own
            .split("; ")
            .find(|p| p.contains(&format!("through {}:", impostor.mac)))
            .unwrap_or_else(|| panic!("no attempt through the impostor: {own}\n{}", dump()));
        assert!(
            impostor_part.contains("no ServerHello in"),
            "{own}\n{}",
            dump()
        );
        assert!(
            evidence
                .iter()
                .any(|e| e.starts_with("decisive: netprobe's own")),
            "{}",
            dump()
        );
        // The owner saw netprobe's probe, the impostor took one more
        // connection than the client's own.
        assert!(
            hole.accepted().len() >= 2,
            "the impostor should have taken the client's and netprobe's connections: {:?}",
            hole.accepted()
        );
    }
    assert_eq!(d["cause"], "stale_neighbour", "{}", dump());
    assert_eq!(d["ip"], vip.to_string(), "{}", dump());
    assert_eq!(d["dev"], "eth0", "{}", dump());
    assert_eq!(d["mac_used"], impostor.mac.as_str(), "{}", dump());
    let claiming = str_list(&d["macs_claiming"]);
    assert!(
        claiming.contains(&owner.mac) && claiming.contains(&impostor.mac),
        "macs_claiming {claiming:?} must name the owner {} and the impostor {}\n{}",
        owner.mac,
        impostor.mac,
        dump()
    );
    // It names the client's namespace (netprobe ran with --netns): pasted
    // on the node, it acts there.
    let fix = d["fix"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        fix,
        format!("ip -n {} neigh del {vip} dev eth0", client.name()),
        "{}",
        dump()
    );
    assert_eq!(d["netns"], client.name(), "{}", dump());
    assert!(
        d["summary"].as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        dump()
    );
    assert!(!str_list(&d["evidence"]).is_empty(), "{}", dump());
    let client_src = ep(&d["flow"]["src"]).expect("flow.src");
    assert_eq!(client_src.ip(), client.addr(v6), "{}", dump());

    // Before kubectl gives up, with margin.
    assert!(
        seen_after < KUBECTL_TIMEOUT && diag_after_curl < KUBECTL_TIMEOUT.as_secs_f64(),
        "diagnosis came {seen_after:?} (event time {diag_after_curl:.3} s) after curl \
         started: kubectl gives up at {KUBECTL_TIMEOUT:?}\n{}",
        dump()
    );
    let detected = d["detected_after_ms"].as_u64().expect("detected_after_ms");
    assert!(detected < 5000, "detected_after_ms {detected}\n{}", dump());

    // The state it used is in the stream (what `netprobe replay` needs).
    let events = trace.events();
    let d_at = events
        .iter()
        .position(|v| *v == d)
        .expect("diagnosis in stream");
    assert!(
        events[..d_at]
            .iter()
            .any(|v| is_type(v, "snapshot") && ep(&v["flow"]["dst"]) == Some(api)),
        "no snapshot for {api} before the diagnosis\n{}",
        dump()
    );
    if !watch_poisoning {
        // Nothing announced the impostor while netprobe ran.
        assert!(
            !events.iter().any(|v| is_type(v, "arp")
                && v["sender_ip"] == vip.to_string()
                && v["op"] == "gratuitous"),
            "netprobe saw a gratuitous ARP it should not have\n{}",
            dump()
        );
    }

    // A diagnosis must not change what it diagnoses.
    let after = client.neighbour(vip).expect("entry for the VIP after");
    assert_eq!(
        after.lladdr.as_deref(),
        Some(impostor.mac.as_str()),
        "netprobe's probe moved the client's entry: before {before:?}, after {after:?}"
    );

    // The operator: the impostor lets go of the VIP, then the printed fix,
    // pasted in a shell on the node (the root namespace).
    impostor.del_ip(vip);
    let ran = netprobe_tests::cmd::run_bounded(
        std::process::Command::new("sh").args(["-c", &fix]),
        secs(10.0),
    );
    assert!(ran.success(), "the fix failed: {}", ran.report());
    assert_eq!(
        client.neighbour(vip).and_then(|n| n.lladdr),
        None,
        "the fix removed the entry"
    );
    let fixed = curl_https(client, vip, API_PORT, API_NAME, KUBECTL_TIMEOUT);
    assert!(
        fixed.exit_code == Some(0) && fixed.http_code == Some(200),
        "curl after the fix: {}\n{}",
        fixed.report,
        trace.report()
    );
    let n = client.neighbour(vip).expect("re-resolved");
    assert_eq!(n.lladdr.as_deref(), Some(owner.mac.as_str()), "{n:?}");
    eprintln!(
        "after the fix: curl https://{}:{API_PORT} -> HTTP 200 in {:?}",
        url_ip(vip),
        fixed.elapsed
    );

    // Give a wrongly late verdict on the fixed flow a chance to show.
    std::thread::sleep(secs(1.0));
    let stopped = trace.stop();
    let stale: Vec<&Value> = stopped
        .of_type("diagnosis")
        .into_iter()
        .filter(|v| {
            let src = ep(&v["flow"]["src"]);
            // kubectl's dispatcher and kubectl itself: two failing flows.
            let failing = if kubectl_client {
                src.map(|a| a.ip()) == Some(client_src.ip()) && ep(&v["flow"]["dst"]) == Some(api)
            } else {
                src == Some(client_src)
            };
            v["cause"] == "stale_neighbour" && !failing
        })
        .collect();
    assert!(
        stale.is_empty(),
        "stale_neighbour for a flow other than the failing one: {stale:?}\n{}",
        report(&lab, &stopped.events, &stopped.stderr)
    );
}

#[test]
fn incident1_ipv4_stale_arp_for_vip_is_named_before_kubectl_gives_up() {
    incident1(false, true, Some("incident1_v4"));
}

/// The usual case: netprobe is started once kubectl already fails. It saw
/// no handshake through the owner and no change of the entry; its own TLS
/// handshake through each claimant MAC tells the owner from the impostor.
#[test]
fn incident1_ipv4_netprobe_started_after_the_poisoning_is_named_by_its_own_handshakes() {
    incident1(false, false, None);
}

#[test]
fn incident1_ipv6_netprobe_started_after_the_poisoning_is_named_by_its_own_handshakes() {
    incident1(true, false, None);
}

/// The seed as the operator met it: real `kubectl version` (here a
/// dispatcher that makes a `/version` connection of its own, then runs
/// kubectl: two ClientHellos), netprobe started after the poisoning.
#[test]
fn incident1_real_kubectl_netprobe_started_after_the_poisoning_is_named_before_it_gives_up() {
    incident1_with(false, false, None, true);
}

/// The client's entry is moved by a real unsolicited neighbour
/// advertisement (override flag) from the impostor, sent with a python raw
/// ICMPv6 socket: what a host taking over an address sends.
#[test]
fn incident1_ipv6_stale_ndp_for_vip_is_named_before_kubectl_gives_up() {
    incident1(true, true, None);
}

// ---------------------------------------------------------------------------
// Incident 2: stale conntrack DNAT after a force-deleted server pod
// ---------------------------------------------------------------------------

#[test]
fn incident2_stale_conntrack_dnat_is_named_and_its_fix_releases_the_client() {
    // As incidents.md tells it: one client, nothing else talks to the
    // Service; the verdict rests on the target alone.
    incident2(Duration::ZERO, false, Some("incident2"));
}

/// kube-proxy often re-points the Service a second or more after the pod's
/// network is gone: netprobe's first look then finds nothing conclusive, and
/// it must look again while the flow stays stuck.
#[test]
fn incident2_service_repointed_late_is_still_named() {
    incident2(secs(3.0), true, None);
}

/// `other_flow`: a second client connects to the Service after the
/// re-point (support for the verdict, never needed for it).
fn incident2(repoint_after: Duration, other_flow: bool, fixture: Option<&'static str>) {
    require_root();
    // cpod -- node1 (DNAT SVC -> pod1) -- node2 -- spod1 / spod2
    let sl = ServiceLab::build("inc2", SVC_PORT);
    let (node1, cpod_h) = (&sl.node1, &sl.client);
    let (svc, pod1, pod2) = (sl.svc, sl.pod1, sl.pod2);

    let _server1 = EchoServer::start(&sl.spod1, pod1.ip(), SVC_PORT);
    let mut stuck = LineClient::start(cpod_h, svc, secs(1.0));
    assert!(
        stuck.wait_echoes(2, secs(5.0)),
        "echoes through the Service"
    );
    let local = stuck.local_addr();
    eprintln!("client {local} -> {svc} (DNAT to {pod1})");

    let trace = Trace::start(&sl.lab, node1, fixture);
    assert!(
        stuck.wait_echoes(3, secs(5.0)),
        "echoes while netprobe runs"
    );

    // The replacement pod is up; `kubectl delete pod --force` of the old
    // one: its veth (and route) go at once, silently, then its namespace;
    // kube-proxy re-points the Service.
    let _server2 = EchoServer::start(&sl.spod2, pod2.ip(), SVC_PORT);
    let echoes_before = stuck.echoes();
    let deleted_at = now_epoch();
    sl.delete_pod1();
    std::thread::sleep(repoint_after);
    sl.repoint_to_pod2();
    let repointed_at = now_epoch();

    // Other flows to the Service now reach the new pod.
    let fresh = other_flow.then(|| {
        let fresh = LineClient::start(cpod_h, svc, secs(1.0));
        assert!(
            fresh.wait_echoes(1, secs(5.0)),
            "a new connection to {svc} should land on {pod2}"
        );
        fresh
    });

    // Before the re-point the target is still in the rules: at most an
    // `endpoint_unreachable` (or `unknown`) with no state-deleting fix may
    // come first; the verdict that counts is the stale NAT.
    let d = trace.expect(
        "diagnosis for the stuck flow",
        |v| is_diagnosis_for_src(v, local) && v["cause"] == "stale_conntrack_nat",
        secs(20.0),
    );
    let dump = || format!("diagnosis: {d}\n{}", trace.report());
    let events = trace.events();
    let retx: Vec<&Value> = events
        .iter()
        .filter(|v| is_type(v, "retransmit") && ep(&v["src"]) == Some(local))
        .collect();
    let first_retx = retx
        .first()
        .unwrap_or_else(|| panic!("no retransmit event for {local}\n{}", dump()));
    let after_first_retx = event_time(&d) - event_time(first_retx);
    eprintln!(
        "TIME TO DIAGNOSIS (incident 2): {after_first_retx:.3} s after the first retransmit \
         ({} retransmits seen; first {:.3} s after the delete), detected_after_ms {}\n{}",
        retx.len(),
        event_time(first_retx) - deleted_at,
        d["detected_after_ms"],
        serde_json::to_string_pretty(&d).unwrap_or_default()
    );
    assert_eq!(d["symptom"], "retransmit_storm", "{}", dump());
    assert_eq!(d["cause"], "stale_conntrack_nat", "{}", dump());
    let earlier: Vec<&Value> = events
        .iter()
        .filter(|v| is_diagnosis_for_src(v, local) && v["cause"] != "stale_conntrack_nat")
        .collect();
    assert!(
        earlier.iter().all(
            |v| (v["cause"] == "unknown" || v["cause"] == "endpoint_unreachable")
                && !v["fix"].as_str().unwrap_or("").contains("conntrack -D")
        ),
        "only `unknown` or `endpoint_unreachable`, without conntrack -D, may precede the verdict: {earlier:?}"
    );
    if repoint_after.is_zero() {
        assert!(
            earlier.is_empty(),
            "immediate re-point: one verdict: {earlier:?}"
        );
    }
    assert_eq!(ep(&d["service"]), Some(svc), "{}", dump());
    assert_eq!(ep(&d["nat_target"]), Some(pod1), "{}", dump());
    assert_eq!(ep(&d["flow"]["src"]), Some(local), "{}", dump());
    assert_eq!(ep(&d["flow"]["dst"]), Some(svc), "{}", dump());
    let fix = d["fix"].as_str().unwrap_or_default().to_string();
    assert!(
        fix.starts_with(&format!(
            "nsenter --net=/run/netns/{} conntrack -D",
            node1.name()
        )),
        "fix {fix:?}\n{}",
        dump()
    );
    if repoint_after.is_zero() {
        assert!(
            after_first_retx < 5.0,
            "diagnosis {after_first_retx:.3} s after the first retransmit (bar: 5 s)\n{}",
            dump()
        );
    } else {
        // The cause exists only from the re-point on; the next retransmit
        // (RTO back-off: 3.2 s at most this early) must bring it.
        let after_repoint = event_time(&d) - repointed_at;
        eprintln!("late re-point: diagnosis {after_repoint:.3} s after it");
        assert!(
            after_repoint < 5.0,
            "diagnosis {after_repoint:.3} s after the re-point (bar: 5 s)\n{}",
            dump()
        );
    }

    // Still hanging, as in the incident: no echo, no error.
    assert!(
        stuck.is_running() && stuck.error().is_none(),
        "the stuck client should still be blocked: {:?}",
        stuck.error()
    );
    assert!(
        stuck.echoes() <= echoes_before + 1,
        "echoes after the delete"
    );

    // The operator pastes the printed command in a shell on the node (the
    // root namespace: the fix names node1's).
    let fixed_at = Instant::now();
    let ran = netprobe_tests::cmd::run_bounded(
        std::process::Command::new("sh").args(["-c", &fix]),
        secs(10.0),
    );
    assert!(
        ran.success(),
        "the fix failed: {}\n{}",
        ran.report(),
        dump()
    );
    let failed = poll_until(secs(15.0), secs(0.05), || stuck.error());
    let released_after = fixed_at.elapsed();
    let err = failed.unwrap_or_else(|| {
        panic!(
            "the stuck client did not fail within 15 s of the fix (running {})\n{}",
            stuck.is_running(),
            dump()
        )
    });
    eprintln!("after the fix: the stuck client failed in {released_after:?}: {err}");
    assert!(
        err.contains("ConnectionResetError") || err.contains("reset"),
        "want a connection reset, got {err:?}"
    );
    if let Some(fresh) = &fresh {
        assert!(fresh.error().is_none(), "{:?}", fresh.error());
    }
    trace.stop();
}

// ---------------------------------------------------------------------------
// Control case: plain loss
// ---------------------------------------------------------------------------

#[test]
fn control_random_loss_is_never_blamed_on_arp_or_conntrack() {
    require_root();
    let t0 = Instant::now();
    let mut lab = Lab::new("control");
    let (client, server) = lab.pair();
    let o = server.ipv4.octets();
    // A Service IP on the link, DNATed on the client (kube-proxy style,
    // output hook) to the echo server.
    let svc: SocketAddr = format!("{}.{}.{}.200:{SVC_PORT}", o[0], o[1], o[2])
        .parse()
        .unwrap();
    let backend = SocketAddr::new(server.ipv4.into(), SVC_PORT);
    client.exec(["nft", "add table ip npnat"]);
    client.exec([
        "nft",
        "add chain ip npnat out { type nat hook output priority -100; }",
    ]);
    client.exec([
        "nft",
        &format!(
            "add rule ip npnat out ip daddr {} tcp dport {SVC_PORT} dnat to {backend}",
            svc.ip()
        ),
    ]);
    let _tls = TlsServer::start(&server, server.ipv4.into(), API_PORT);
    let _echo = EchoServer::start(&server, backend.ip(), SVC_PORT);

    let trace = Trace::start(&lab, &client, Some("control"));
    let started = Instant::now();
    // 20 % loss each way, on the server's side.
    let nft = server.nft();
    nft.random_loss(20);
    nft.rule("input", "numgen random mod 100 < 20 drop");

    let lines = LineClient::start_with(&client, svc, secs(0.02), None);
    let budget = secs(60.0);
    let mut ok = 0;
    let mut runs = Vec::new();
    for _ in 0..10 {
        let left = budget.saturating_sub(started.elapsed());
        if left < secs(1.0) {
            runs.push("out of time budget".to_string());
            continue;
        }
        let r = curl_https(
            &client,
            server.ipv4.into(),
            API_PORT,
            API_NAME,
            left.min(secs(15.0)),
        );
        if r.http_code == Some(200) {
            ok += 1;
        }
        runs.push(format!("exit {:?} in {:?}", r.exit_code, r.elapsed));
    }
    // At least 15 s of echoes through the lossy DNAT, however fast the
    // handshakes went.
    std::thread::sleep(secs(15.0).saturating_sub(started.elapsed()));
    let echoes = lines.echoes();
    // A handshake that took over 3 s gets its (loss) verdict ~1 s later.
    std::thread::sleep(secs(4.5));
    let diags = trace.lab_diagnoses();
    let events = trace.events();
    let retx = events
        .iter()
        .filter(|v| is_type(v, "retransmit") && mentions_lab(&lab, v))
        .count();
    let elapsed = t0.elapsed();
    eprintln!(
        "control: {ok}/10 handshakes completed ({runs:?}); {echoes} echoes through the DNAT; \
         {retx} retransmits; {elapsed:?} in all; diagnoses:\n{}",
        diags
            .iter()
            .map(|d| format!(
                "  {} / {} {} -> {}: {}",
                d["symptom"].as_str().unwrap_or("?"),
                d["cause"].as_str().unwrap_or("?"),
                d["flow"]["src"],
                d["flow"]["dst"],
                d["summary"].as_str().unwrap_or("?")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(ok >= 7, "only {ok}/10 handshakes completed: {runs:?}");
    assert!(echoes >= 30, "only {echoes} echoes through the lossy DNAT");
    assert!(lines.error().is_none(), "{:?}", lines.error());
    assert!(
        retx > 0,
        "20% loss should cause retransmits\n{}",
        trace.report()
    );
    let false_alarms: Vec<&Value> = diags
        .iter()
        .filter(|d| d["cause"] == "stale_neighbour" || d["cause"] == "stale_conntrack_nat")
        .collect();
    assert!(
        false_alarms.is_empty(),
        "false alarm on plain loss: {false_alarms:#?}\n{}",
        trace.report()
    );
    assert!(elapsed < secs(90.0), "the control case took {elapsed:?}");
    trace.stop();
}

//! The correlator over streams recorded in the lab (no root, no kernel).
//!
//! The fixtures in `tests/fixtures/` are `netprobe trace --json` output of
//! the acceptance tests in `tests/tests/incidents.rs`, recorded with
//! `NETPROBE_RECORD_FIXTURES=1` and copied here:
//! - `incident1_v4.jsonl`: stale ARP entry for an HA VIP; a handshake
//!   through the owner's MAC is answered, then the impostor's gratuitous ARP
//!   moves the entry and the client's ClientHello goes to the impostor's
//!   MAC; after the fix a ClientHello goes to the owner and is answered.
//! - `incident2.jsonl`: a client pod's flow stuck on a conntrack DNAT to a
//!   deleted server pod, seen from the client's node.
//! - `control.jsonl`: TLS handshakes and a DNATed echo flow over a link with
//!   20 % random loss each way.
//! - `trust_pod_silent_server.jsonl` (tests/tests/trust.rs): a pod behind
//!   the node makes a handshake to a server that accepts and stays silent.
//! - `trust_dead_endpoint.jsonl`: a new connection to a Service whose NAT
//!   rule still points at a deleted pod.
//! - `trust_two_backends.jsonl`: six clients of a two-backend Service, one
//!   backend pausing 4 s.
//! - `kernel_drop_firewall.jsonl` (tests/tests/kernel_evidence.rs): a pod's
//!   SYNs dropped by a firewall rule on the node.
//! - `conntrack_table_full.jsonl`: a pod's SYNs dropped by the node's
//!   conntrack, its table at a machine-wide maximum of 64.
//! - `mtu_blackhole.jsonl`: a pod's handshake through a 1400-byte link whose
//!   routers drop "fragmentation needed".
//! - `mtu_blackhole_server.jsonl`: the same path seen from the server's
//!   namespace: its own socket's full-size segments retransmit.
//! - `icmp_reject.jsonl` (tests/tests/icmp_reset.rs): a `reject with icmp
//!   type host-unreachable` rule on the node hits a pod's established flow.
//! - `rst_dropped.jsonl`: a pod's SYNs to a port nothing listens on at the
//!   node, the node's firewall dropping the RSTs its stack sends.
//!
//! Replaying each must give the verdict the live run gave. The expected
//! values are read from the wire facts in the stream (ClientHellos,
//! retransmits) and the lab's addressing, not from the recorded verdicts,
//! so a re-recorded fixture needs no edit here.

use std::fs::File;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use probe_user::model::event::{Diagnosis, EventBody};
use probe_user::{correlate::Config, replay::replay};
use serde_json::Value;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.jsonl"))
}

/// The fixture's lines as JSON values.
fn lines(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path(name))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path(name).display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: bad line {l}: {e}")))
        .collect()
}

/// Replays the fixture with the live run's settings (`--handshake-timeout
/// 3s`, storm threshold 3: the defaults). Returns the new diagnoses and
/// the ones the recording holds.
fn replayed(name: &str) -> (Vec<Diagnosis>, Vec<Diagnosis>) {
    let file =
        File::open(path(name)).unwrap_or_else(|e| panic!("opening {}: {e}", path(name).display()));
    let r = replay(BufReader::new(file), Config::default())
        .unwrap_or_else(|e| panic!("replaying {name}: {e:#}"));
    assert!(
        r.skipped.is_empty(),
        "{name}: lines the replay could not read: {:?}",
        r.skipped
    );
    assert_eq!(
        r.events as usize,
        lines(name).len(),
        "{name}: every line is an event"
    );
    let diagnoses = r
        .diagnoses
        .into_iter()
        .map(|e| match e.body {
            EventBody::Diagnosis(d) => *d,
            other => panic!("{name}: replay gave a non-diagnosis {other:?}"),
        })
        .collect();
    (diagnoses, r.recorded)
}

fn is_stale(d: &Diagnosis) -> bool {
    d.cause == "stale_neighbour" || d.cause == "stale_conntrack_nat"
}

/// What a diagnosis says, without its wording or timing.
fn verdict(d: &Diagnosis) -> String {
    let mut macs = d.macs_claiming.clone().unwrap_or_default();
    macs.sort();
    format!(
        "{} {} {}->{} ip={:?} dev={:?} mac_used={:?} macs={macs:?} service={:?} nat_target={:?} fix={:?}",
        d.symptom,
        d.cause,
        d.flow.src,
        d.flow.dst,
        d.ip,
        d.dev,
        d.mac_used,
        d.service,
        d.nat_target,
        d.fix
    )
}

/// The replay reaches the same verdicts as the live run, flow by flow.
fn assert_same_as_live(name: &str, replayed: &[Diagnosis], recorded: &[Diagnosis]) {
    let mut got: Vec<String> = replayed.iter().map(verdict).collect();
    let mut want: Vec<String> = recorded.iter().map(verdict).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "{name}: replayed verdicts differ from the live run"
    );
}

fn endpoint(v: &Value) -> SocketAddr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an endpoint: {v}"))
}

#[test]
fn incident1_stale_arp_replays_to_stale_neighbour_with_both_macs() {
    let name = "incident1_v4";
    let stream = lines(name);
    let hellos: Vec<&Value> = stream
        .iter()
        .filter(|v| v["type"] == "tls_client_hello")
        .collect();
    assert!(
        hellos.len() >= 3,
        "{name}: the answered one before the incident, the failing one, the fixed one"
    );
    // The failing handshake (the one no ServerHello answered) went to the
    // impostor; before the incident and after the fix the ClientHellos went
    // to the VIP's owner.
    let answered = |h: &Value| {
        stream.iter().any(|v| {
            v["type"] == "tls_server_hello" && v["src"] == h["dst"] && v["dst"] == h["src"]
        })
    };
    let failing = *hellos
        .iter()
        .find(|h| !answered(h))
        .unwrap_or_else(|| panic!("{name}: no unanswered ClientHello"));
    let fixed = hellos[hellos.len() - 1];
    assert!(
        answered(hellos[0]) && answered(fixed),
        "{name}: owner's handshakes answered"
    );
    let vip = endpoint(&failing["dst"]).ip();
    let impostor = failing["dst_mac"].as_str().unwrap().to_string();
    let owner = fixed["dst_mac"].as_str().unwrap().to_string();
    assert_ne!(impostor, owner, "{name}: two different MACs were used");

    let (got, recorded) = replayed(name);
    assert_eq!(
        got.len(),
        1,
        "{name}: one diagnosis, for the failing flow: {got:#?}"
    );
    let d = &got[0];
    assert_eq!(d.symptom, "tls_handshake_unanswered");
    assert_eq!(d.cause, "stale_neighbour", "{d:#?}");
    assert_eq!(d.flow.src, endpoint(&failing["src"]));
    assert_eq!(d.flow.dst, endpoint(&failing["dst"]));
    assert_eq!(d.ip, Some(vip));
    assert_eq!(d.dev.as_deref(), Some("eth0"));
    assert_eq!(d.mac_used.as_deref(), Some(impostor.as_str()));
    let claiming = d.macs_claiming.clone().unwrap_or_default();
    assert!(
        claiming.contains(&impostor) && claiming.contains(&owner),
        "{name}: macs_claiming {claiming:?} must name {impostor} and {owner}"
    );
    assert_eq!(d.fix, Some(format!("ip neigh del {vip} dev eth0")));
    assert!(d.detected_after_ms < 5000, "{d:#?}");
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn incident2_stale_dnat_replays_to_stale_conntrack_nat() {
    let name = "incident2";
    let stream = lines(name);
    let retx = stream
        .iter()
        .find(|v| v["type"] == "retransmit")
        .unwrap_or_else(|| panic!("{name}: no retransmit"));
    let client = endpoint(&retx["src"]);
    let service = endpoint(&retx["dst"]);
    // The lab's layout: the deleted server pod is host 2 of segment 2,
    // 10.<lab>.2.2, serving on the Service's port.
    let IpAddr::V4(svc_ip) = service.ip() else {
        panic!("{name}: IPv4 lab")
    };
    let o = svc_ip.octets();
    let dead_pod: SocketAddr = SocketAddr::new([o[0], o[1], 2, 2].into(), service.port());

    let (got, recorded) = replayed(name);
    let mine: Vec<&Diagnosis> = got.iter().filter(|d| d.flow.src == client).collect();
    assert_eq!(
        mine.len(),
        1,
        "{name}: one verdict for the stuck flow: {got:#?}"
    );
    let d = mine[0];
    assert_eq!(d.symptom, "retransmit_storm");
    assert_eq!(d.cause, "stale_conntrack_nat", "{d:#?}");
    assert_eq!(d.flow.dst, service);
    assert_eq!(d.service, Some(service));
    assert_eq!(d.nat_target, Some(dead_pod));
    let fix = d.fix.as_deref().unwrap_or_default();
    assert!(fix.starts_with("conntrack -D"), "{fix:?}");
    for part in [
        format!("--orig-src {}", client.ip()),
        format!("--orig-port-src {}", client.port()),
        format!("--orig-dst {}", service.ip()),
        format!("--reply-src {}", dead_pod.ip()),
    ] {
        assert!(fix.contains(&part), "fix {fix:?} lacks {part:?}");
    }
    assert!(d.detected_after_ms < 5000, "{d:#?}");
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn control_loss_replays_without_a_stale_state_verdict() {
    let name = "control";
    let stream = lines(name);
    assert!(
        stream.iter().filter(|v| v["type"] == "retransmit").count() >= 10,
        "{name}: the recording has the lossy link's retransmits"
    );
    let (got, recorded) = replayed(name);
    let stale: Vec<&Diagnosis> = got.iter().filter(|d| is_stale(d)).collect();
    assert!(
        stale.is_empty(),
        "{name}: false alarm on plain loss: {stale:#?}"
    );
    assert!(
        !recorded.iter().any(is_stale),
        "{name}: the live run had a false alarm"
    );
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn pod_to_a_silent_server_replays_to_server_not_responding() {
    let name = "trust_pod_silent_server";
    let (got, recorded) = replayed(name);
    let d = got
        .iter()
        .find(|d| d.symptom == "tls_handshake_unanswered")
        .unwrap_or_else(|| panic!("{name}: no handshake verdict: {got:#?}"));
    assert_eq!(d.cause, "server_not_responding", "{d:#?}");
    assert!(!got.iter().any(is_stale), "{got:#?}");
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn dead_endpoint_replays_to_endpoint_unreachable_without_conntrack_delete() {
    let name = "trust_dead_endpoint";
    let (got, recorded) = replayed(name);
    let d = got
        .iter()
        .find(|d| d.symptom == "retransmit_storm")
        .unwrap_or_else(|| panic!("{name}: no storm verdict: {got:#?}"));
    assert_eq!(d.cause, "endpoint_unreachable", "{d:#?}");
    assert!(!d.fix.as_deref().unwrap_or("").contains("conntrack -D"));
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn two_backends_with_a_pause_replay_without_a_stale_verdict() {
    let name = "trust_two_backends";
    let (got, recorded) = replayed(name);
    assert!(!got.iter().any(is_stale), "{got:#?}");
    assert!(
        got.iter()
            .all(|d| !d.fix.as_deref().unwrap_or("").contains("conntrack -D"))
    );
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn firewall_drop_replays_to_kernel_drop_with_its_rule() {
    let name = "kernel_drop_firewall";
    let (got, recorded) = replayed(name);
    let d = got
        .iter()
        .find(|d| d.symptom == "retransmit_storm")
        .unwrap_or_else(|| panic!("{name}: no storm verdict: {got:#?}"));
    assert_eq!(d.cause, "kernel_drop", "{d:#?}");
    assert_eq!(d.drop_reason.as_deref(), Some("NETFILTER_DROP"));
    assert!(d.rule.as_deref().is_some_and(|r| r.contains("forward")));
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn full_conntrack_table_replays_to_conntrack_table_full() {
    let name = "conntrack_table_full";
    let (got, recorded) = replayed(name);
    let d = got
        .iter()
        .find(|d| d.symptom == "retransmit_storm")
        .unwrap_or_else(|| panic!("{name}: no storm verdict: {got:#?}"));
    assert_eq!(d.cause, "conntrack_table_full", "{d:#?}");
    assert_eq!(d.drop_reason.as_deref(), Some("NETFILTER_DROP"));
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn mtu_black_hole_replays_to_mtu_blackhole_with_the_path_mtu() {
    let name = "mtu_blackhole";
    let (got, recorded) = replayed(name);
    let d = got
        .iter()
        .find(|d| d.symptom == "tls_handshake_unanswered")
        .unwrap_or_else(|| panic!("{name}: no handshake verdict: {got:#?}"));
    assert_eq!(d.cause, "mtu_blackhole", "{d:#?}");
    assert_eq!(d.path_mtu, Some(1400));
    assert_same_as_live(name, &got, &recorded);
}

#[test]
fn mtu_black_hole_from_the_servers_node_replays_to_mtu_blackhole() {
    let name = "mtu_blackhole_server";
    let (got, recorded) = replayed(name);
    let d = got
        .iter()
        .find(|d| d.symptom == "retransmit_storm")
        .unwrap_or_else(|| panic!("{name}: no storm verdict: {got:#?}"));
    assert_eq!(d.cause, "mtu_blackhole", "{d:#?}");
    assert_eq!(d.path_mtu, Some(1400));
    assert_same_as_live(name, &got, &recorded);
}

// ---------------------------------------------------------------------------
// The fixtures hold nothing from outside the lab.
// ---------------------------------------------------------------------------

/// Every IP address written anywhere in `v`, fields and sentences alike.
/// Replays `name` with the `netns` of its events of type `kind` moved to
/// another namespace (as a lab's other "machine" would report them).
fn replayed_elsewhere(name: &str, kind: &str) -> Vec<Diagnosis> {
    let text: String = lines(name)
        .into_iter()
        .map(|mut v| {
            if v["type"] == kind {
                v["netns"] = Value::from(1u32);
            }
            format!("{v}\n")
        })
        .collect();
    let r = replay(std::io::Cursor::new(text), Config::default())
        .unwrap_or_else(|e| panic!("replaying {name}: {e:#}"));
    r.diagnoses
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Diagnosis(d) => Some(*d),
            _ => None,
        })
        .collect()
}

/// The storm verdict of a replay.
fn storm<'a>(name: &str, got: &'a [Diagnosis]) -> &'a Diagnosis {
    got.iter()
        .find(|d| d.symptom == "retransmit_storm")
        .unwrap_or_else(|| panic!("{name}: no storm verdict: {got:#?}"))
}

#[test]
fn reject_rule_replays_to_kernel_drop_naming_the_icmp_answer() {
    let name = "icmp_reject";
    let (got, recorded) = replayed(name);
    let d = storm(name, &got);
    assert_eq!(d.cause, "kernel_drop", "{d:#?}");
    assert!(d.rule.as_deref().is_some_and(|r| r.contains("rejects")));
    assert!(
        d.summary
            .contains("this node answers with ICMP host unreachable"),
        "{d:#?}"
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("with ICMP host unreachable"))
    );
    assert_same_as_live(name, &got, &recorded);
    // Control: the same ICMP errors sent from another namespace are not
    // this node's answer.
    let other = replayed_elsewhere(name, "icmp_sent");
    let d = storm(name, &other);
    assert_eq!(d.cause, "kernel_drop", "{d:#?}");
    assert!(!d.summary.contains("ICMP"), "{d:#?}");
    assert!(!d.evidence.iter().any(|e| e.contains("ICMP")), "{d:#?}");
}

#[test]
fn dropped_rsts_replay_to_kernel_drop_naming_the_closed_port() {
    let name = "rst_dropped";
    let (got, recorded) = replayed(name);
    let d = storm(name, &got);
    assert_eq!(d.cause, "kernel_drop", "{d:#?}");
    let port = d.flow.dst.port();
    assert!(
        d.summary.contains(&format!(
            "RSTs its own stack sends because nothing listens on port {port}"
        )),
        "{d:#?}"
    );
    assert_same_as_live(name, &got, &recorded);
    let other = replayed_elsewhere(name, "reset_sent");
    let d = storm(name, &other);
    assert!(!d.summary.contains("RST"), "{d:#?}");
}

fn addresses_in(v: &Value, out: &mut Vec<IpAddr>) {
    match v {
        Value::String(s) => {
            for tok in s.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')) {
                let tok = tok.trim_matches(|c| c == '.' || c == ':');
                if let Ok(ip) = tok.parse::<IpAddr>() {
                    out.push(ip);
                } else if let Ok(sa) = tok.parse::<SocketAddr>() {
                    out.push(sa.ip());
                } else if let Some(ip) = tok
                    .rsplit_once(':')
                    .filter(|(_, port)| port.parse::<u16>().is_ok())
                    .and_then(|(host, _)| host.parse::<std::net::Ipv4Addr>().ok())
                {
                    out.push(ip.into());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| addresses_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| addresses_in(x, out)),
        _ => {}
    }
}

/// The lab's blocks: 10.200-255.0.0/16 and fd00:10::/32 (plus the
/// unspecified address, which names nobody).
fn is_lab(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_unspecified() || (a.octets()[0] == 10 && a.octets()[1] >= 200),
        IpAddr::V6(a) => {
            a.is_unspecified() || (a.segments()[0] == 0xfd00 && a.segments()[1] == 0x10)
        }
    }
}

#[test]
fn fixtures_name_only_lab_addresses() {
    for name in [
        "incident1_v4",
        "incident2",
        "control",
        "trust_pod_silent_server",
        "trust_dead_endpoint",
        "trust_two_backends",
        "kernel_drop_firewall",
        "conntrack_table_full",
        "mtu_blackhole",
        "mtu_blackhole_server",
        "icmp_reject",
        "rst_dropped",
    ] {
        let mut ips = Vec::new();
        for v in lines(name) {
            addresses_in(&v, &mut ips);
        }
        assert!(ips.len() > 10, "{name}: the scan finds the lab's addresses");
        let foreign: Vec<&IpAddr> = ips.iter().filter(|ip| !is_lab(ip)).collect();
        assert!(
            foreign.is_empty(),
            "{name}: addresses outside the lab: {foreign:?}"
        );
    }
}

#[test]
fn the_address_scan_sees_addresses_in_sentences() {
    let v = serde_json::json!({
        "a": "10.201.0.1:40000 via [fd00:10:201::1]:443 to 10.201.2.0/24, at 12:00:01.250",
        "b": ["02:6e:70:c9:00:03 on 8.8.8.8."]
    });
    let mut ips = Vec::new();
    addresses_in(&v, &mut ips);
    let got: Vec<String> = ips.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["10.201.0.1", "fd00:10:201::1", "10.201.2.0", "8.8.8.8"]
    );
    assert!(!is_lab(&ips[3]) && is_lab(&ips[0]) && is_lab(&ips[1]));
}

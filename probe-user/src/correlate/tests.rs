//! The correlator on synthetic event streams: both incidents, the control
//! case, and the edges (late ServerHello, answer during the investigation,
//! a neighbour that flaps and comes back, progress between retransmits).

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Duration, Utc};

pub mod handshake_sample;
mod stages;
pub mod storm_sample;

use super::*;
use crate::{
    model::event::{Arp, Neighbour, Retransmit, TlsClientHello, TlsServerHello},
    model::facts::{ConntrackEntry, Liveness, LivenessOutcome, Translation},
};

const A: &str = "02:00:00:00:00:0a"; // the VIP's real owner
const B: &str = "02:00:00:00:00:0b"; // the host that also claims it

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ms(n: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(n)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ev(time: DateTime<Utc>, body: EventBody) -> Event {
    Event {
        time,
        netns: None,
        body,
    }
}

fn hello(mac: &str) -> EventBody {
    EventBody::TlsClientHello(TlsClientHello {
        src: addr("10.9.0.1:40000"),
        dst: addr("10.9.0.100:6443"),
        iface: "eth0".into(),
        src_mac: "02:00:00:00:00:01".into(),
        dst_mac: mac.into(),
        sni: Some("kubernetes".into()),
        record_version: "0x0301".into(),
        handshake_version: "0x0303".into(),
        segments: 1,
        direction: "egress".into(),
        partial: false,
    })
}

fn server_hello() -> EventBody {
    EventBody::TlsServerHello(TlsServerHello {
        src: addr("10.9.0.100:6443"),
        dst: addr("10.9.0.1:40000"),
        iface: "eth0".into(),
        src_mac: A.into(),
        dst_mac: "02:00:00:00:00:01".into(),
        record_version: "0x0303".into(),
        handshake_version: "0x0303".into(),
        selected_version: None,
        direction: "ingress".into(),
    })
}

/// A handshake to the VIP from another port that the server answered,
/// its hello sent toward `mac`: what the node saw before the incident.
fn earlier_handshake(at: i64, mac: &str) -> [Event; 2] {
    let EventBody::TlsClientHello(mut h) = hello(mac) else {
        unreachable!()
    };
    h.src = addr("10.9.0.1:39000");
    let EventBody::TlsServerHello(mut sh) = server_hello() else {
        unreachable!()
    };
    sh.dst = h.src;
    [
        ev(ms(at), EventBody::TlsClientHello(h)),
        ev(ms(at + 5), EventBody::TlsServerHello(sh)),
    ]
}

fn neigh(old: &str, new: &str) -> EventBody {
    EventBody::Neighbour(Neighbour {
        ip: "10.9.0.100".parse().unwrap(),
        dev: "eth0".into(),
        old_mac: Some(old.into()),
        new_mac: Some(new.into()),
        old_state: "REACHABLE".into(),
        new_state: "STALE".into(),
        update_flags: vec!["OVERRIDE".into()],
        pid: 0,
    })
}

fn garp(mac: &str) -> EventBody {
    EventBody::Arp(Arp {
        iface: "eth0".into(),
        op: "gratuitous".into(),
        sender_ip: "10.9.0.100".parse().unwrap(),
        sender_mac: mac.into(),
        target_ip: "10.9.0.100".parse().unwrap(),
        eth_src: mac.into(),
        eth_dst: "ff:ff:ff:ff:ff:ff".into(),
        direction: "ingress".into(),
    })
}

fn vip_flow() -> FlowRef {
    FlowRef {
        src: addr("10.9.0.1:40000"),
        dst: addr("10.9.0.100:6443"),
    }
}

fn handshake_snapshot(entry_mac: &str, answers: &[&str]) -> EventBody {
    let vip: IpAddr = "10.9.0.100".parse().unwrap();
    EventBody::Snapshot(Box::new(Snapshot {
        flow: Some(vip_flow()),
        node_netns: Some(NODE_NS),
        ..handshake_sample::snapshot_for(vip, "unicast", "eth0", Some(entry_mac), answers)
    }))
}

/// The namespace netprobe's look-ups ran in: the node's.
const NODE_NS: u32 = 4_026_531_840;

/// Runs a stream through the correlator the way `trace` does: a tick before
/// each event, then the event.
fn run(events: &[Event], c: &mut Correlator) -> (Vec<Investigation>, Vec<Diagnosis>) {
    let (mut invs, mut diags) = (Vec::new(), Vec::new());
    for e in events {
        invs.extend(c.tick(e.time));
        let out = c.observe(e);
        invs.extend(out.investigations);
        diags.extend(out.diagnoses);
    }
    (invs, diags)
}

#[test]
fn incident_1_stale_arp_entry_for_the_vip() {
    let mut c = Correlator::new(Config::default());
    let [h, sh] = earlier_handshake(-5000, A);
    let events = [
        h,
        sh,
        ev(ms(0), garp(B)),
        ev(ms(1), neigh(A, B)),
        ev(ms(1000), hello(B)),
        ev(ms(4000), handshake_snapshot(B, &[A, B])),
    ];
    let (invs, diags) = run(&events, &mut c);
    assert_eq!(
        invs,
        vec![Investigation::Handshake {
            flow: vip_flow(),
            iface: "eth0".into(),
            sni: Some("kubernetes".into()),
            claims: vec![B.to_string()],
        }]
    );
    assert_eq!(diags.len(), 1);
    let d = &diags[0];
    assert_eq!(d.symptom, "tls_handshake_unanswered");
    assert_eq!(d.cause, "stale_neighbour");
    assert_eq!(d.mac_used.as_deref(), Some(B));
    assert_eq!(
        d.macs_claiming.clone().unwrap(),
        vec![B.to_string(), A.to_string()]
    );
    assert_eq!(d.fix.as_deref(), Some("ip neigh del 10.9.0.100 dev eth0"));
    assert_eq!(d.detected_after_ms, 3000);
    let text = d.evidence.join("\n");
    assert!(
        text.contains(&format!("{A} -> {B}").replace(" -> ", " REACHABLE -> ")),
        "{text}"
    );
    assert!(
        text.contains("answered by 02:00:00:00:00:0a and 02:00:00:00:00:0b"),
        "{text}"
    );
}

#[test]
fn incident_1_started_after_the_poisoning_cannot_tell_owner_from_impostor() {
    // No GARP, neighbour change or earlier handshake seen: the probe shows
    // two claimants and nothing says which is the owner. No `neigh del`.
    let mut c = Correlator::new(Config::default());
    let events = [
        ev(ms(0), hello(B)),
        ev(ms(3200), handshake_snapshot(B, &[A, B])),
    ];
    let (_, diags) = run(&events, &mut c);
    assert_eq!(diags[0].cause, "unknown");
    assert_eq!(diags[0].fix, None);
    assert_eq!(
        diags[0].macs_claiming.clone().unwrap(),
        vec![B.to_string(), A.to_string()]
    );
    assert!(
        diags[0].evidence.iter().any(|e| e.starts_with("to check:")),
        "{:?}",
        diags[0].evidence
    );
}

#[test]
fn incident_1_started_after_the_poisoning_is_named_by_netprobe_s_own_handshakes() {
    // The same stream, and the investigation's handshake through each
    // claimant: through A a ServerHello, through B (in use) none. The
    // snapshot goes through JSON as `replay` reads it.
    let mut snap = handshake_snapshot(B, &[A, B]);
    if let EventBody::Snapshot(s) = &mut snap {
        s.owner_probe = Some(crate::model::facts::OwnerProbe {
            dst: vip_flow().dst,
            dev: "eth0".into(),
            sni: Some("kubernetes".into()),
            attempts: [
                (B, crate::model::facts::OwnerOutcome::Silent, 1000),
                (A, crate::model::facts::OwnerOutcome::ServerHello, 2),
            ]
            .into_iter()
            .map(
                |(mac, outcome, after_ms)| crate::model::facts::OwnerAttempt {
                    mac: mac.into(),
                    outcome,
                    connect_ms: Some(0),
                    after_ms,
                    frames: 4,
                    error: None,
                },
            )
            .collect(),
        });
    }
    let json = serde_json::to_string(&snap).expect("snapshot to JSON");
    assert!(json.contains("\"outcome\":\"server_hello\""), "{json}");
    let snap: EventBody = serde_json::from_str(&json).expect("snapshot from JSON");
    let mut c = Correlator::new(Config::default());
    let (_, diags) = run(&[ev(ms(0), hello(B)), ev(ms(4400), snap)], &mut c);
    let d = &diags[0];
    assert_eq!(d.cause, "stale_neighbour", "{d:#?}");
    assert_eq!(d.mac_used.as_deref(), Some(B));
    assert_eq!(d.fix.as_deref(), Some("ip neigh del 10.9.0.100 dev eth0"));
    assert!(
        d.evidence
            .iter()
            .any(|e| e.starts_with("decisive: netprobe's own TLS handshake")),
        "{:?}",
        d.evidence
    );
}

#[test]
fn entry_pointing_at_a_mac_that_no_longer_answers_after_serving_elsewhere() {
    // The hello goes to B, only A answers the probe, and handshakes to the
    // VIP completed through A before: B is stale.
    let mut c = Correlator::new(Config::default());
    let [h, sh] = earlier_handshake(-2000, A);
    let (_, diags) = run(
        &[
            h,
            sh,
            ev(ms(0), hello(B)),
            ev(ms(3200), handshake_snapshot(B, &[A])),
        ],
        &mut c,
    );
    assert_eq!(diags[0].cause, "stale_neighbour");
    assert_eq!(
        diags[0].fix.as_deref(),
        Some("ip neigh del 10.9.0.100 dev eth0")
    );
}

#[test]
fn a_recovered_handshake_says_so() {
    let mut c = Correlator::new(Config::default());
    let events = [
        ev(ms(0), hello(A)),
        ev(ms(3200), handshake_snapshot(A, &[A])),
    ];
    let (_, diags) = run(&events, &mut c);
    assert_eq!(diags[0].cause, "server_not_responding");
    let out = c.observe(&ev(ms(5000), server_hello()));
    assert_eq!(out.recovered.len(), 1);
    assert_eq!(out.recovered[0].cause, "server_not_responding");
    assert_eq!(out.recovered[0].after_ms, 1800);
}

#[test]
fn a_quiet_storm_after_a_verdict_is_recovered() {
    // Control of the two-backend hiccup: the backend pauses (in the rules,
    // not answering), then the flow moves on and stops retransmitting.
    let mut c = Correlator::new(Config::default());
    let src = "10.244.1.5:50020";
    let flow = FlowRef {
        src: addr(src),
        dst: addr("10.96.0.10:8000"),
    };
    let paused = ct(src, "10.244.2.7:8000");
    let mut events: Vec<Event> = (0..3).map(|i| retransmit(i * 400, 1000, src)).collect();
    events.push(storm_snapshot_with(
        flow,
        Some(paused.clone()),
        vec![paused],
        &["10.244.2.7:8000", "10.244.2.9:8000"],
        false,
    ));
    let (_, diags) = run(&events, &mut c);
    assert_eq!(diags[0].cause, "endpoint_unreachable");
    assert!(c.quiet_storms(ms(1500)).is_empty(), "not overdue yet");
    let r = c.quiet_storms(ms(4000));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cause, "endpoint_unreachable");
}

#[test]
fn answered_handshake_is_not_investigated() {
    let mut c = Correlator::new(Config::default());
    let (invs, diags) = run(
        &[
            ev(ms(0), hello(A)),
            ev(ms(2900), server_hello()),
            ev(ms(9000), garp(A)),
        ],
        &mut c,
    );
    assert!(invs.is_empty() && diags.is_empty());
}

#[test]
fn serverhello_during_the_investigation_cancels_the_diagnosis() {
    let mut c = Correlator::new(Config::default());
    let events = [
        ev(ms(0), hello(B)),
        ev(ms(3100), server_hello()),
        ev(ms(3400), handshake_snapshot(B, &[A, B])),
    ];
    let (invs, diags) = run(&events, &mut c);
    assert_eq!(invs.len(), 1, "investigated at 3.1 s");
    assert!(diags.is_empty(), "answered late: no diagnosis");
}

#[test]
fn neighbour_that_flapped_back_is_not_blamed() {
    // B claimed the VIP once, the entry went A -> B -> A; now only A answers
    // and the hello went to A: whatever is wrong, it is not the ARP entry.
    let mut c = Correlator::new(Config::default());
    let events = [
        ev(ms(0), garp(B)),
        ev(ms(1), neigh(A, B)),
        ev(ms(500), garp(A)),
        ev(ms(501), neigh(B, A)),
        ev(ms(1000), hello(A)),
        ev(ms(4100), handshake_snapshot(A, &[A])),
    ];
    let (_, diags) = run(&events, &mut c);
    assert_eq!(diags.len(), 1);
    // B claimed the address 4 s ago: still a claimant, and nothing tells
    // which one owns it. Not a stale verdict, no fix.
    assert_eq!(diags[0].cause, "unknown");
    assert!(diags[0].fix.is_none());
    assert!(
        diags[0].evidence.iter().any(|e| e.contains("changed at")),
        "history still shown"
    );
}

fn retransmit(at: i64, una: u32, src: &str) -> Event {
    ev(
        ms(at),
        EventBody::Retransmit(Retransmit {
            src: addr(src),
            dst: addr("10.96.0.10:8000"),
            state: "ESTABLISHED".into(),
            count: 0,
            snd_una: Some(una),
            snd_nxt: Some(una + 10),
            not_sent: None,
            process: None,
            pod: None,
            container: None,
        }),
    )
}

fn ct(src: &str, reply_src: &str) -> ConntrackEntry {
    ConntrackEntry {
        proto: 6,
        orig_src: addr(src),
        orig_dst: addr("10.96.0.10:8000"),
        reply_src: addr(reply_src),
        reply_dst: addr(src),
        tcp_state: Some("ESTABLISHED".into()),
        status: vec!["ASSURED".into(), "DST_NAT".into()],
        timeout_s: Some(431000),
        id: Some(7),
    }
}

/// What the Service's NAT rules translate to now, and whether the flow's
/// target answered a fresh connection.
fn storm_snapshot_with(
    flow: FlowRef,
    entry: Option<ConntrackEntry>,
    same: Vec<ConntrackEntry>,
    rules_to: &[&str],
    answers: bool,
) -> Event {
    let target = entry.as_ref().map(|e| e.reply_src);
    let rule = "ip nat prerouting".to_string();
    let translation = target.map(|t| Translation {
        target: Some(t),
        service_rules: vec![rule.clone()],
        target_rules: if rules_to.iter().any(|r| addr(r) == t) {
            vec![rule.clone()]
        } else {
            Vec::new()
        },
        dnat_targets: rules_to.iter().map(|r| addr(r).ip()).collect(),
        incomplete: false,
        nat_rules: rules_to.len() as u32,
    });
    ev(
        ms(1500),
        EventBody::Snapshot(Box::new(Snapshot {
            symptom: Symptom::RetransmitStorm.as_str().into(),
            flow: Some(flow),
            conntrack: entry,
            same_service: same,
            tcp_retries2: Some(15),
            translation,
            liveness: target.map(|t| Liveness {
                addr: t,
                outcome: if answers {
                    LivenessOutcome::Accepted
                } else {
                    LivenessOutcome::NoAnswer
                },
                after_ms: 1000,
            }),
            ..Default::default()
        })),
    )
}

/// The Service re-pointed to 10.244.2.9 and the old target dead.
fn storm_snapshot(
    flow: FlowRef,
    entry: Option<ConntrackEntry>,
    same: Vec<ConntrackEntry>,
) -> Event {
    storm_snapshot_with(flow, entry, same, &["10.244.2.9:8000"], false)
}

#[test]
fn incident_2_stale_conntrack_nat() {
    let mut c = Correlator::new(Config::default());
    let flow = FlowRef {
        src: addr("10.244.1.5:50000"),
        dst: addr("10.96.0.10:8000"),
    };
    let stale = ct("10.244.1.5:50000", "10.244.2.7:8000");
    let fresh = ct("10.244.1.5:50002", "10.244.2.9:8000");
    let events = [
        retransmit(200, 1000, "10.244.1.5:50000"),
        retransmit(600, 1000, "10.244.1.5:50000"),
        retransmit(1400, 1000, "10.244.1.5:50000"),
        storm_snapshot(flow, Some(stale.clone()), vec![stale.clone(), fresh]),
    ];
    let (invs, diags) = run(&events, &mut c);
    assert_eq!(invs, vec![Investigation::Storm { flow, netns: None }]);
    let d = &diags[0];
    assert_eq!(d.cause, "stale_conntrack_nat");
    assert_eq!(d.service, Some(addr("10.96.0.10:8000")));
    assert_eq!(d.nat_target, Some(addr("10.244.2.7:8000")));
    assert_eq!(d.fix.as_deref(), Some(stale.delete_command().as_str()));
    assert!(d.summary.contains("10.244.2.9:8000"), "{}", d.summary);
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("intervals 0.4s, 0.8s")),
        "{:?}",
        d.evidence
    );
    assert!(
        d.evidence.iter().any(|e| e.contains("tcp_retries2=15")),
        "{:?}",
        d.evidence
    );
    assert_eq!(d.detected_after_ms, 1300, "from the first retransmit");
}

#[test]
fn control_case_progress_means_loss_not_stale_state() {
    let mut c = Correlator::new(Config::default());
    let src = "10.244.1.5:50010";
    let flow = FlowRef {
        src: addr(src),
        dst: addr("10.96.0.10:8000"),
    };
    // ACKs advance between losses: no storm from these.
    let mut events: Vec<Event> = (0..6)
        .map(|i| retransmit(i * 300, 1000 + i as u32 * 1448, src))
        .collect();
    let (invs, _) = run(&events, &mut c);
    assert!(invs.is_empty(), "progress resets the streak: {invs:?}");
    // Then one segment is lost three times in a row: a storm, but ACKs had
    // advanced before and the target is alive: packet_loss, never stale NAT.
    events = vec![
        retransmit(2000, 50000, src),
        retransmit(2400, 50000, src),
        retransmit(3200, 50000, src),
    ];
    let (invs, _) = run(&events, &mut c);
    assert_eq!(invs, vec![Investigation::Storm { flow, netns: None }]);
    let live = ct(src, "10.244.2.7:8000");
    let (_, diags) = run(
        &[storm_snapshot(flow, Some(live.clone()), vec![live])],
        &mut c,
    );
    assert_eq!(diags[0].cause, "packet_loss");
    assert!(diags[0].fix.is_none());
}

#[test]
fn one_diagnosis_per_flow_and_symptom() {
    let mut c = Correlator::new(Config::default());
    let flow = FlowRef {
        src: addr("10.244.1.5:50000"),
        dst: addr("10.96.0.10:8000"),
    };
    let stale = ct("10.244.1.5:50000", "10.244.2.7:8000");
    let fresh = ct("10.244.1.5:50002", "10.244.2.9:8000");
    let mut events: Vec<Event> = (0..3)
        .map(|i| retransmit(i * 400, 1000, "10.244.1.5:50000"))
        .collect();
    events.push(storm_snapshot(
        flow,
        Some(stale.clone()),
        vec![stale.clone(), fresh.clone()],
    ));
    events.push(storm_snapshot(
        flow,
        Some(stale.clone()),
        vec![stale, fresh],
    ));
    events.extend((3..8).map(|i| retransmit(i * 400, 1000, "10.244.1.5:50000")));
    let (invs, diags) = run(&events, &mut c);
    assert_eq!(invs.len(), 1);
    assert_eq!(diags.len(), 1);
}

#[test]
fn flow_closed_by_rst_is_not_unanswered() {
    let mut c = Correlator::new(Config::default());
    let rst = EventBody::Reset(crate::model::event::Reset {
        src: addr("10.9.0.1:40000"),
        dst: addr("10.9.0.100:6443"),
    });
    let (invs, diags) = run(
        &[ev(ms(0), hello(B)), ev(ms(500), rst), ev(ms(5000), garp(A))],
        &mut c,
    );
    assert!(invs.is_empty() && diags.is_empty(), "{invs:?}");
}

#[test]
fn storm_in_an_unrelated_namespace_stays_quiet() {
    let mut c = Correlator::new(Config::default());
    let src = "10.244.7.5:50000";
    let flow = FlowRef {
        src: addr(src),
        dst: addr("10.96.0.10:8000"),
    };
    let events: Vec<Event> = (0..3).map(|i| retransmit(i * 400, 1000, src)).collect();
    run(&events, &mut c);
    let snap = ev(
        ms(1500),
        EventBody::Snapshot(Box::new(Snapshot {
            symptom: Symptom::RetransmitStorm.as_str().into(),
            flow: Some(flow),
            foreign_netns: Some(4026532999),
            ..Default::default()
        })),
    );
    let (_, diags) = run(&[snap], &mut c);
    assert!(
        diags.is_empty(),
        "nothing to say about an unrelated namespace: {diags:?}"
    );
    assert_eq!(c.unrelated, 1);
}

#[test]
fn storm_is_looked_at_again_until_the_cause_shows() {
    // kube-proxy re-points the Service only after netprobe's first look:
    // the first verdict is unknown, a later look finds the stale NAT.
    let mut c = Correlator::new(Config::default());
    let src = "10.244.1.5:50000";
    let flow = FlowRef {
        src: addr(src),
        dst: addr("10.96.0.10:8000"),
    };
    let stale = ct(src, "10.244.2.7:8000");
    let fresh = ct("10.244.1.5:50002", "10.244.2.9:8000");
    let mut events: Vec<Event> = (0..3).map(|i| retransmit(i * 400, 1000, src)).collect();
    let still = ["10.244.2.7:8000"];
    events.push(storm_snapshot_with(
        flow,
        Some(stale.clone()),
        vec![stale.clone()],
        &still,
        false,
    ));
    let (invs, diags) = run(&events, &mut c);
    assert_eq!(invs.len(), 1);
    assert_eq!(diags[0].cause, "endpoint_unreachable");
    assert!(
        !diags[0]
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("conntrack -D")
    );
    // Next retransmit: looked at again; still the same state, nothing new said.
    let (invs, diags) = run(
        &[
            retransmit(2000, 1000, src),
            storm_snapshot_with(
                flow,
                Some(stale.clone()),
                vec![stale.clone()],
                &still,
                false,
            ),
        ],
        &mut c,
    );
    assert_eq!(invs.len(), 1);
    assert!(diags.is_empty(), "same verdict is not repeated: {diags:?}");
    // The Service has moved: the next look names the stale NAT.
    let (invs, diags) = run(
        &[
            retransmit(4000, 1000, src),
            storm_snapshot(flow, Some(stale.clone()), vec![stale, fresh]),
        ],
        &mut c,
    );
    assert_eq!(invs.len(), 1);
    assert_eq!(diags[0].cause, "stale_conntrack_nat");
    // Settled: no more looks.
    let (invs, _) = run(&[retransmit(8000, 1000, src)], &mut c);
    assert!(invs.is_empty());
}

/// The server's side retransmits (its ServerHello is being lost), its
/// socket in namespace `netns`.
fn server_retransmit(netns: u32) -> Event {
    Event {
        netns: Some(netns),
        ..ev(
            ms(1500),
            EventBody::Retransmit(Retransmit {
                src: addr("10.9.0.100:6443"),
                dst: addr("10.9.0.1:40000"),
                state: "ESTABLISHED".into(),
                count: 1,
                snd_una: Some(5),
                snd_nxt: Some(900),
                not_sent: None,
                process: None,
                pod: None,
                container: None,
            }),
        )
    }
}

#[test]
fn another_machines_retransmits_are_not_this_nodes_evidence() {
    // In a lab the server is another namespace on the same kernel: its
    // retransmits are visible to the tracepoint, and no real node would
    // see them.
    let mut c = Correlator::new(Config::default());
    let events = [
        ev(ms(0), hello(A)),
        server_retransmit(NODE_NS + 1),
        ev(ms(3300), handshake_snapshot(A, &[A])),
    ];
    let (_, diags) = run(&events, &mut c);
    assert_ne!(diags[0].cause, "packet_loss", "{:#?}", diags[0]);
}

#[test]
fn lost_serverhello_is_packet_loss_not_a_silent_server() {
    let mut c = Correlator::new(Config::default());
    let events = [
        ev(ms(0), hello(A)),
        server_retransmit(NODE_NS),
        ev(ms(3300), handshake_snapshot(A, &[A])),
    ];
    let (_, diags) = run(&events, &mut c);
    assert_eq!(diags[0].cause, "packet_loss");
    assert!(
        diags[0]
            .evidence
            .iter()
            .any(|e| e.contains("server retransmitted")),
        "{:?}",
        diags[0].evidence
    );
}

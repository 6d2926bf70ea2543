//! Handshake cases for the cause modules' tests: one unanswered hello with
//! its path, the state read for it, and what the history holds.

use chrono::{DateTime, Duration, Utc};

use crate::{
    correlate::{
        handshake::{Hop, Pending},
        handshake_case::HandshakeCase,
        history::History,
        storm::{Series, Storms},
    },
    model::event::{Diagnosis, Retransmit, Snapshot, TlsClientHello},
    model::facts::{
        NeighbourEntry, OwnerAttempt, OwnerOutcome, OwnerProbe, PathCheck, ProbeAnswer,
        ProbeResult, RouteInfo, SizeResult,
    },
};

pub const OWNER: &str = "02:00:00:00:00:0a";
pub const IMPOSTOR: &str = "02:00:00:00:00:0b";
pub const GATEWAY: &str = "ee:ee:ee:ee:ee:ee";

pub struct Sample {
    pub pending: Pending,
    pub history: History,
    pub snap: Snapshot,
    pub client: Option<Series>,
    pub now: DateTime<Utc>,
}

impl Sample {
    pub fn judge(&self) -> Diagnosis {
        HandshakeCase::new(
            &self.pending,
            &self.history,
            &self.snap,
            [self.client.as_ref(), None],
            Vec::new(),
            self.now,
        )
        .judge()
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn hop(iface: &str, direction: &str, mac: &str) -> Hop {
    Hop {
        iface: iface.into(),
        direction: direction.into(),
        dst_mac: mac.into(),
    }
}

/// A hello from `src` to 10.0.0.100:6443 that crossed `hops`.
fn pending(src: &str, hops: Vec<Hop>) -> Pending {
    let first = hops[0].clone();
    Pending {
        hello: TlsClientHello {
            src: src.parse().unwrap(),
            dst: "10.0.0.100:6443".parse().unwrap(),
            iface: first.iface.clone(),
            src_mac: "02:00:00:00:00:01".into(),
            dst_mac: first.dst_mac.clone(),
            sni: Some("kubernetes".into()),
            record_version: "0x0301".into(),
            handshake_version: "0x0303".into(),
            segments: 1,
            direction: first.direction.clone(),
            partial: false,
        },
        server_hello: None,
        time: t0(),
        investigating: true,
        hops,
    }
}

fn snapshot(kind: &str, dev: &str, entry: Option<&str>, answers: &[&str]) -> Snapshot {
    snapshot_for("10.0.0.100".parse().unwrap(), kind, dev, entry, answers)
}

/// What the handshake investigation read for `ip`: the route (`kind` via
/// `dev`), the neighbour entry (`entry` REACHABLE), the probe's `answers`
/// and a path check where full-size packets pass (unicast routes).
pub fn snapshot_for(
    ip: std::net::IpAddr,
    kind: &str,
    dev: &str,
    entry: Option<&str>,
    answers: &[&str],
) -> Snapshot {
    Snapshot {
        symptom: "tls_handshake_unanswered".into(),
        route: Some(RouteInfo {
            dst: ip,
            dev: Some(dev.into()),
            gateway: None,
            kind: kind.into(),
        }),
        neighbour: entry.map(|m| NeighbourEntry {
            ip,
            dev: dev.into(),
            mac: Some(m.into()),
            state: "REACHABLE".into(),
            updated_ago_ms: Some(4000),
            confirmed_ago_ms: Some(100),
        }),
        probe: (kind == "unicast").then(|| ProbeResult {
            ip,
            dev: dev.into(),
            probe_mac: "02:6e:70:00:00:01".into(),
            window_ms: 300,
            answers: answers
                .iter()
                .map(|m| ProbeAnswer {
                    mac: m.to_string(),
                    after_us: 50,
                })
                .collect(),
        }),
        path: (kind == "unicast").then(|| full_size_passes(ip)),
        ..Default::default()
    }
}

/// DF echo requests of every size came back.
pub fn full_size_passes(dst: std::net::IpAddr) -> PathCheck {
    PathCheck {
        dst,
        route_mtu: 1500,
        sizes: [1500, 576]
            .into_iter()
            .map(|size| SizeResult {
                size,
                sent: true,
                answered: true,
            })
            .collect(),
        frag_needed: None,
    }
}

fn sample(pending: Pending, history: History, snap: Snapshot) -> Sample {
    Sample {
        pending,
        history,
        snap,
        client: None,
        now: t0() + Duration::milliseconds(3300),
    }
}

/// The hello went to the impostor; both answer the probe. With
/// `served_before`, a handshake to the VIP completed through the owner.
pub fn two_claimants(served_before: bool) -> Sample {
    let mut history = History::default();
    if served_before {
        history.served(
            t0() - Duration::seconds(30),
            "10.0.0.100".parse().unwrap(),
            OWNER,
        );
    }
    sample(
        pending("10.0.0.1:40000", vec![hop("eth0", "egress", IMPOSTOR)]),
        history,
        snapshot("unicast", "eth0", Some(IMPOSTOR), &[IMPOSTOR, OWNER]),
    )
}

impl Sample {
    /// netprobe's own handshake to the hello's destination through each
    /// MAC, with what came back (every attempt pinned unless `frames` is 0).
    pub fn owner_probe(mut self, through: &[(&str, OwnerOutcome, u32)]) -> Sample {
        self.snap.owner_probe = Some(OwnerProbe {
            dst: self.pending.hello.dst,
            dev: "eth0".into(),
            sni: self.pending.hello.sni.clone(),
            attempts: through
                .iter()
                .map(|(mac, outcome, frames)| OwnerAttempt {
                    mac: mac.to_string(),
                    outcome: *outcome,
                    connect_ms: (!matches!(
                        outcome,
                        OwnerOutcome::NoAnswer | OwnerOutcome::Refused
                    ))
                    .then_some(0),
                    after_ms: match outcome {
                        OwnerOutcome::ServerHello => 3,
                        OwnerOutcome::NoAnswer => 1000,
                        _ => 1000,
                    },
                    frames: *frames,
                    error: None,
                })
                .collect(),
        });
        self
    }
}

/// A correct failover to a slow new owner: the hello goes to the new owner
/// (the entry says so); the old one still claims the address on the wire
/// and served it 30 s ago, but holds it no more.
pub fn failover_to_slow_owner() -> Sample {
    let mut history = History::default();
    history.served(
        t0() - Duration::seconds(30),
        "10.0.0.100".parse().unwrap(),
        OWNER,
    );
    sample(
        pending("10.0.0.1:40000", vec![hop("eth0", "egress", IMPOSTOR)]),
        history,
        snapshot("unicast", "eth0", Some(IMPOSTOR), &[IMPOSTOR, OWNER]),
    )
}

/// A pod's hello: the node's veth sees it toward the gateway MAC, the
/// uplink toward the server's own; one owner answers.
pub fn pod_behind_node() -> Sample {
    sample(
        pending(
            "10.1.0.5:40000",
            vec![
                hop("cali1234", "ingress", GATEWAY),
                hop("eth0", "egress", OWNER),
            ],
        ),
        History::default(),
        snapshot("unicast", "eth0", Some(OWNER), &[OWNER]),
    )
}

/// A pod talks to a VIP this node holds itself.
pub fn local_vip() -> Sample {
    sample(
        pending("10.1.0.5:40000", vec![hop("cali1234", "ingress", GATEWAY)]),
        History::default(),
        snapshot("local", "lo", None, &[]),
    )
}

/// The node's own client, one owner, the server accepts and is silent.
pub fn silent_server() -> Sample {
    sample(
        pending("10.0.0.1:40000", vec![hop("eth0", "egress", OWNER)]),
        History::default(),
        snapshot("unicast", "eth0", Some(OWNER), &[OWNER]),
    )
}

/// Like `silent_server`, but the client keeps retransmitting the hello.
pub fn hello_not_acked() -> Sample {
    let mut s = silent_server();
    let mut storms = Storms::default();
    let flow_src = s.pending.hello.src;
    let flow_dst = s.pending.hello.dst;
    for (i, at) in [200, 600, 1400].into_iter().enumerate() {
        storms.retransmit(
            t0() + Duration::milliseconds(at),
            &Retransmit {
                src: flow_src,
                dst: flow_dst,
                state: "ESTABLISHED".into(),
                count: i as u64 + 1,
                snd_una: Some(1000),
                snd_nxt: Some(1500),
                not_sent: None,
                process: None,
                pod: None,
                container: None,
            },
            None,
            3,
        );
    }
    s.client = storms
        .get(&crate::model::event::FlowRef {
            src: flow_src,
            dst: flow_dst,
        })
        .cloned();
    s
}

//! Storm cases for the cause modules' tests: a client NATed to a Service
//! whose target stopped answering.

use chrono::{DateTime, Duration, Utc};

use crate::{
    correlate::{
        storm::{Series, Storms},
        storm_case::StormCase,
    },
    model::event::{Diagnosis, FlowRef, Retransmit, Snapshot},
    model::facts::{ConntrackEntry, Liveness, LivenessOutcome, RouteInfo, Translation},
};

pub struct Sample {
    pub flow: FlowRef,
    pub series: Series,
    pub snap: Snapshot,
    pub now: DateTime<Utc>,
}

impl Sample {
    pub fn judge(&self) -> Diagnosis {
        StormCase::new(self.flow, &self.series, &self.snap, None, self.now).judge()
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Three retransmits without progress of 10.1.0.5 -> 10.96.0.10:8000,
/// NATed to 10.244.2.7:8000. `in_rules`: the Service's NAT rule still
/// translates to that target (else it moved to 10.244.3.9).
pub fn nat_storm(in_rules: bool, liveness: Option<LivenessOutcome>) -> Sample {
    let flow = FlowRef {
        src: "10.1.0.5:40000".parse().unwrap(),
        dst: "10.96.0.10:8000".parse().unwrap(),
    };
    let target = "10.244.2.7:8000".parse().unwrap();
    let mut storms = Storms::default();
    for (i, at) in [0, 400, 1200].into_iter().enumerate() {
        storms.retransmit(
            t0() + Duration::milliseconds(at),
            &Retransmit {
                src: flow.src,
                dst: flow.dst,
                state: "ESTABLISHED".into(),
                count: i as u64 + 1,
                snd_una: Some(7),
                snd_nxt: Some(9),
                not_sent: None,
                process: None,
                pod: None,
                container: None,
            },
            None,
            3,
        );
    }
    let rule = "ip nat prerouting".to_string();
    let snap = Snapshot {
        symptom: "retransmit_storm".into(),
        flow: Some(flow),
        conntrack: Some(ConntrackEntry {
            proto: 6,
            orig_src: flow.src,
            orig_dst: flow.dst,
            reply_src: target,
            reply_dst: flow.src,
            tcp_state: Some("ESTABLISHED".into()),
            status: vec!["DST_NAT".into()],
            timeout_s: Some(300),
            id: None,
        }),
        translation: Some(Translation {
            target: Some(target),
            service_rules: vec![rule.clone()],
            target_rules: if in_rules { vec![rule] } else { Vec::new() },
            dnat_targets: vec![if in_rules {
                target.ip()
            } else {
                "10.244.3.9".parse().unwrap()
            }],
            incomplete: false,
            nat_rules: 1,
        }),
        liveness: liveness.map(|outcome| Liveness {
            addr: target,
            outcome,
            after_ms: 1000,
        }),
        route: Some(RouteInfo {
            dst: target.ip(),
            dev: Some("eth1".into()),
            gateway: Some("10.150.1.2".parse().unwrap()),
            kind: "unicast".into(),
        }),
        ..Default::default()
    };
    Sample {
        flow,
        series: storms.get(&flow).cloned().unwrap(),
        snap,
        now: t0() + Duration::milliseconds(2300),
    }
}

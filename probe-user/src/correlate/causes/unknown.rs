//! `unknown`: no rule had decisive evidence. Says what was seen, what was
//! ruled out and what could not be checked, so the operator knows where to
//! look next; never a fix that changes state.

use crate::{
    correlate::{
        handshake_case::{HandshakeCase, Stage},
        storm_case::StormCase,
    },
    model::event::Diagnosis,
    model::facts::{LivenessOutcome, RouteKind},
};

pub fn handshake(c: &HandshakeCase, d: &mut Diagnosis) {
    let dst = c.flow.dst;
    let mut notes: Vec<String> = Vec::new();
    match c.stage {
        Stage::HelloSent => notes.push(
            "the ClientHello was never acknowledged: lost on the way, dropped, or the server's TCP is gone".into(),
        ),
        Stage::HelloAcked => notes.push("the server's TCP acknowledged the ClientHello".into()),
        Stage::ServerHello => notes.push(
            "the ServerHello arrived, then the client sent nothing more: the rest of the server's flight (certificate, finished) did not arrive, or the client gave up without an alert".into(),
        ),
    }
    if c.route != Some(RouteKind::Local) && c.egress_mac.is_none() {
        notes.push(format!(
            "the MAC the hello left {} with was not seen, so the neighbour entry could not be checked",
            c.dev
        ));
    }
    if c.route == Some(RouteKind::Unicast) {
        match &c.snap.path {
            None => notes.push(
                "the path MTU could not be checked, so a silent server cannot be told from an MTU black hole".into(),
            ),
            Some(p) if p.largest_answered().is_none() => notes.push(format!(
                "no echo came back from {}, so a silent server cannot be told from an MTU black hole",
                p.dst
            )),
            Some(_) => {}
        }
    }
    if c.claimants.is_empty() && c.route == Some(RouteKind::Unicast) {
        notes.push(format!(
            "nothing answered for {} (no probe answer, no recent claim)",
            c.next_hop
        ));
    }
    d.summary = format!(
        "TLS handshake to {dst} unanswered after {:.1} s; no cause could be proven: {}",
        c.waited_s(),
        notes.join("; ")
    );
}

pub fn storm(c: &StormCase, d: &mut Diagnosis) {
    let mut notes: Vec<String> = Vec::new();
    if let Some(l) = c.snap.liveness.as_ref()
        && l.outcome == LivenessOutcome::Accepted
    {
        notes.push(format!(
            "{} accepts fresh connections from this node, so it is alive",
            l.addr
        ));
    }
    match (c.nat, c.translation) {
        (Some(_), Some(t)) if t.target_removed() => notes.push(format!(
            "{} is no longer in the NAT rules, but it was not shown dead",
            c.target
        )),
        (Some(_), Some(t)) if t.target_present() => {
            notes.push(format!("{} is still in the NAT rules", c.target))
        }
        (Some(_), _) => {
            notes.push("the NAT rules could not be read or do not mention the Service".into())
        }
        (None, _) => notes.push("no NAT on this node for the flow".into()),
    }
    if c.dead_reason().is_none() && c.snap.liveness.is_none() {
        notes.push(format!(
            "the route to {} and its next hop resolve",
            c.target.ip()
        ));
    }
    d.summary = format!(
        "{} -> {} retransmits with no progress; no cause could be proven: {}",
        c.flow.src,
        c.flow.dst,
        notes.join("; ")
    );
}

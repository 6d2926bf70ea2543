//! `endpoint_unreachable`: the destination (or the NAT target a Service
//! sends it to) does not answer, and nothing on this node would send the
//! flow elsewhere: no route, a next hop that does not resolve, or a NAT
//! target still in the Service's translation that fails a fresh connection.
//! Deleting conntrack entries cannot help (a new entry NATs the same way),
//! so the fix is what to check, never `conntrack -D`.

use crate::{
    correlate::{Cause, handshake_case::HandshakeCase, storm_case::StormCase},
    model::event::Diagnosis,
    model::facts::{Resolution, RouteKind},
};

pub fn handshake(c: &HandshakeCase, d: &mut Diagnosis) -> bool {
    let dst = c.flow.dst;
    let why = match (c.route, c.resolution) {
        (Some(RouteKind::Reject), _) => format!(
            "the route to {} is {}",
            dst.ip(),
            c.snap.route.as_ref().map_or("", |r| r.kind.as_str())
        ),
        (_, Some(Resolution::Unresolved)) => format!(
            "{} does not resolve (neighbour {})",
            c.next_hop,
            c.snap.neighbour.as_ref().map_or("", |n| n.state.as_str())
        ),
        _ => return false,
    };
    d.cause = Cause::EndpointUnreachable.as_str().into();
    d.summary = format!("TLS handshake to {dst} unanswered: {why}");
    true
}

pub fn storm(c: &StormCase, d: &mut Diagnosis) -> bool {
    if c.series.progressed || !c.target_dead() {
        return false;
    }
    let target = c.target;
    d.cause = Cause::EndpointUnreachable.as_str().into();
    match c.nat {
        Some(ct) => {
            d.service = Some(ct.orig_dst);
            d.nat_target = Some(target);
            let held = c
                .translation
                .filter(|t| t.target_present())
                .map(|t| t.target_rules.join("; "));
            d.summary = format!(
                "{} -> {} is NATed to {target}, which does not answer{}",
                c.flow.src,
                ct.orig_dst,
                match &held {
                    Some(rules) => format!(
                        ", and this node's NAT rules still send the Service there ({rules}): the endpoint itself is down, paused or cut off, or the Service still lists a gone pod"
                    ),
                    None => String::from(
                        "; this node's NAT rules could not confirm whether it is still an endpoint"
                    ),
                }
            );
            if held.is_none() {
                d.evidence.push(format!(
                    "only if {target} is no longer an endpoint of the Service: `{}` releases this flow",
                    ct.delete_command()
                ));
            }
            d.evidence.push(format!(
                "deleting conntrack entries does not help while the rules still hold {target}: a new entry NATs to it again"
            ));
            d.fix = Some(format!(
                "kubectl get endpointslices -A -o wide | grep -w {}   # is {target} still listed? its pod is gone or unreachable: fix or remove the endpoint",
                target.ip()
            ));
        }
        None => {
            d.summary = format!(
                "{} -> {} retransmits into nothing: {}",
                c.flow.src,
                c.flow.dst,
                c.dead_reason().unwrap_or_default()
            );
        }
    }
    true
}

//! `stale_neighbour`: the hello left toward a MAC that holds the address
//! but is not the one serving it. Two MACs answering for an IP is not by
//! itself proof (proxy-ARP routers, hosts with two NICs, a failover in
//! progress): the rule needs a handshake to the address that completed
//! through the other MAC, and none through the MAC in use since. Without
//! that it says plainly that two hosts claim the address, and prints no
//! `neigh del`.

use crate::{
    correlate::{Cause, handshake_case::HandshakeCase},
    model::event::Diagnosis,
    model::facts::RouteKind,
};

pub fn judge(c: &HandshakeCase, d: &mut Diagnosis) -> bool {
    // A VIP held by this node, or a rejected route: no neighbour involved.
    if c.route != Some(RouteKind::Unicast) {
        return false;
    }
    let Some(used) = c.egress_mac.as_deref() else {
        return false;
    };
    let others = c.other_claimants();
    if others.is_empty() {
        return false;
    }
    let hop = c.next_hop;
    let dst = c.flow.dst;
    let mut macs = vec![used.to_string()];
    macs.extend(others.iter().map(|m| m.to_string()));
    d.ip = Some(hop);
    d.dev = Some(c.dev.clone());
    d.mac_used = Some(used.to_string());
    d.macs_claiming = Some(macs);

    let served = c.history.served_by(&dst.ip());
    let by_other = served
        .iter()
        .filter(|s| others.contains(&s.mac.as_str()))
        .max_by_key(|s| s.last);
    let by_used = served.iter().find(|s| s.mac == used);
    let entry_matches = c.entry_mac.as_deref() == Some(used);
    let decisive = match (by_other, by_used) {
        (Some(o), Some(u)) => o.last > u.last,
        (Some(_), None) => true,
        _ => false,
    } && entry_matches;

    let other_list = others.join(", ");
    if decisive {
        let o = by_other.expect("decisive needs a handshake through another MAC");
        d.cause = Cause::StaleNeighbour.as_str().into();
        d.summary = format!(
            "TLS handshake to {dst} is going to {used}, but handshakes to it were answered through {}, which also claims {hop}: the ARP/ND entry points at the wrong owner",
            o.mac
        );
        d.evidence.push(format!(
            "decisive: TLS to {} was answered through {} (last at {}), never through {used} since",
            dst.ip(),
            o.mac,
            super::super::evidence::clock(o.last)
        ));
        d.evidence.push(format!(
            "fix: delete the entry so {hop} is resolved afresh, then find out why more than one host claims it"
        ));
        d.fix = Some(format!("ip neigh del {hop} dev {}", c.dev));
    } else {
        d.cause = Cause::Unknown.as_str().into();
        d.summary = format!(
            "TLS handshake to {dst} unanswered through {used}; {other_list} also claim(s) {hop}, and nothing seen here tells the owner from an impostor (a proxy-ARP router, a second NIC or a failover look the same)"
        );
        if !entry_matches {
            d.evidence.push(format!(
                "the neighbour entry now says {}, not the {used} the hello went to",
                c.entry_mac.as_deref().unwrap_or("(no MAC)")
            ));
        }
        d.evidence.push(format!(
            "to check: which host really holds {hop} (`ip -br addr` on the hosts with MACs {used} and {other_list}; `arping -I {} {hop}` shows every answer); only if {used} is not the owner, `ip neigh del {hop} dev {}`",
            c.dev, c.dev
        ));
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::correlate::tests::handshake_sample as sample;

    #[test]
    fn two_claimants_and_a_handshake_through_the_other_is_stale() {
        let d = sample::two_claimants(true).judge();
        assert_eq!(d.cause, "stale_neighbour");
        assert_eq!(d.fix.as_deref(), Some("ip neigh del 10.0.0.100 dev eth0"));
        assert_eq!(d.mac_used.as_deref(), Some(sample::IMPOSTOR));
    }

    #[test]
    fn two_claimants_without_separating_evidence_get_no_fix() {
        // Control: a proxy-ARP router also answers; the server is silent.
        let d = sample::two_claimants(false).judge();
        assert_eq!(d.cause, "unknown");
        assert_eq!(d.fix, None);
        assert!(d.summary.contains("also claim"), "{}", d.summary);
        assert_eq!(d.macs_claiming.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn the_mac_of_the_first_hook_is_not_the_mac_in_use() {
        // Control: a pod's hello seen first on its veth toward the gateway's
        // MAC, then on the uplink toward the server's: one owner.
        let d = sample::pod_behind_node().judge();
        assert_eq!(d.cause, "server_not_responding", "{d:#?}");
        assert_eq!(
            d.fix.as_deref().map(|f| f.contains("neigh del")),
            Some(false)
        );
    }

    #[test]
    fn a_local_route_never_blames_a_neighbour() {
        let d = sample::local_vip().judge();
        assert_eq!(d.cause, "server_not_responding", "{d:#?}");
        assert!(d.ip.is_none());
    }
}

//! `stale_neighbour`: the hello left toward a MAC that holds the address
//! but is not the one serving it. Two MACs answering for an IP is not by
//! itself proof (proxy-ARP routers, hosts with two NICs, a failover in
//! progress). What decides, first: a handshake of netprobe's own through
//! each claimant (`state::owner`): a ServerHello through another MAC and
//! none through the MAC in use names the other the owner. Without one, a
//! handshake to the address seen completing through the other MAC, and
//! none through the MAC in use since. Without either it says plainly that
//! two hosts claim the address, and prints no `neigh del`.

use crate::{
    correlate::{
        Cause,
        handshake_case::{HandshakeCase, OwnerEvidence},
    },
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
    let entry_matches = c.entry_mac.as_deref() == Some(used);
    let owner = c.owner_evidence();
    // Who claims the address is said whatever the verdict.
    d.ip = Some(hop);
    d.dev = Some(c.dev.clone());
    d.mac_used = Some(used.to_string());
    d.macs_claiming = Some(macs);
    // The MAC in use serves the address (or is the only one holding it):
    // not this cause, whoever else claims it.
    if matches!(
        owner,
        Some(OwnerEvidence::InUseServes | OwnerEvidence::InUseOnlyHolder)
    ) {
        return false;
    }
    let other_list = others.join(", ");
    if let Some(OwnerEvidence::OtherServes(o)) = owner
        && entry_matches
    {
        let in_use = c
            .owner_probe()
            .and_then(|p| p.attempt(used))
            .map(|a| a.describe())
            .unwrap_or_default();
        d.cause = Cause::StaleNeighbour.as_str().into();
        d.summary = format!(
            "TLS handshake to {dst} is going to {used}, but {} is the one serving it (netprobe's own handshake through it got a ServerHello in {} ms, through {used} none): the ARP/ND entry for {hop} points at the wrong owner",
            o.mac, o.after_ms
        );
        d.evidence.push(format!(
            "decisive: netprobe's own TLS handshake to {dst} {}; {in_use}",
            o.describe()
        ));
        d.evidence.push(format!(
            "fix: delete the entry so {hop} is resolved afresh, then find out why more than one host claims it ({} and {used})",
            o.mac
        ));
        d.fix = Some(format!("ip neigh del {hop} dev {}", c.dev));
        return true;
    }
    if let Some(OwnerEvidence::NoneServes) = owner {
        d.cause = Cause::Unknown.as_str().into();
        d.summary = format!(
            "TLS handshake to {dst} unanswered through {used}; {other_list} also claim(s) {hop}, and netprobe's own TLS handshake through each got no ServerHello: no MAC was shown to serve {dst}, so nothing tells the owner from an impostor"
        );
        d.evidence.push(format!(
            "ruled out: that another claimant serves {dst} while {used} does not (no ServerHello through any of {used}, {other_list})"
        ));
        d.evidence.push(format!(
            "to check: is the server on {dst} up at all (`ss -tlnp` on the hosts with MACs {used} and {other_list}); which host really holds {hop} (`ip -br addr` there)"
        ));
        return true;
    }

    let served = c.history.served_by(&dst.ip());
    let by_other = served
        .iter()
        .filter(|s| others.contains(&s.mac.as_str()))
        .max_by_key(|s| s.last);
    let by_used = served.iter().find(|s| s.mac == used);
    let decisive = match (by_other, by_used) {
        (Some(o), Some(u)) => o.last > u.last,
        (Some(_), None) => true,
        _ => false,
    } && entry_matches;

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
    use crate::model::facts::OwnerOutcome;

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
    fn started_after_the_poisoning_the_owner_probe_names_the_owner() {
        // Nothing seen served the VIP; netprobe's own handshakes decide.
        let d = sample::two_claimants(false)
            .owner_probe(&[
                (sample::IMPOSTOR, OwnerOutcome::Silent, 3),
                (sample::OWNER, OwnerOutcome::ServerHello, 3),
            ])
            .judge();
        assert_eq!(d.cause, "stale_neighbour", "{d:#?}");
        assert_eq!(d.fix.as_deref(), Some("ip neigh del 10.0.0.100 dev eth0"));
        assert_eq!(d.mac_used.as_deref(), Some(sample::IMPOSTOR));
        let decisive = d
            .evidence
            .iter()
            .find(|e| e.starts_with("decisive:"))
            .expect("decisive evidence");
        assert!(
            decisive.contains(&format!(
                "through {}: TCP accepted in 0 ms, ServerHello in 3 ms",
                sample::OWNER
            )) && decisive.contains(&format!(
                "through {}: TCP accepted in 0 ms, no ServerHello in 1000 ms",
                sample::IMPOSTOR
            )),
            "{decisive}"
        );
    }

    #[test]
    fn both_macs_answering_is_not_stale() {
        // Control: a proxy-ARP router in front of the same server, or two
        // NICs of one host: both answer netprobe's handshake.
        let d = sample::two_claimants(true)
            .owner_probe(&[
                (sample::IMPOSTOR, OwnerOutcome::ServerHello, 3),
                (sample::OWNER, OwnerOutcome::ServerHello, 3),
            ])
            .judge();
        assert_ne!(d.cause, "stale_neighbour", "{d:#?}");
        assert!(
            !d.fix.as_deref().unwrap_or("").contains("neigh del"),
            "{d:#?}"
        );
    }

    #[test]
    fn a_failover_to_a_slow_owner_is_not_stale() {
        // The old owner served 30 s ago and still claims the address; the
        // new one (in use) takes netprobe's connection, the old does not.
        let d = sample::failover_to_slow_owner()
            .owner_probe(&[
                (sample::IMPOSTOR, OwnerOutcome::Silent, 3),
                (sample::OWNER, OwnerOutcome::NoAnswer, 2),
            ])
            .judge();
        assert_eq!(d.cause, "server_not_responding", "{d:#?}");
        assert!(d.fix.as_deref().is_some_and(|f| !f.contains("neigh del")));
        assert_eq!(d.macs_claiming.as_ref().map(Vec::len), Some(2), "{d:#?}");
        // And the slow new owner that answers netprobe's handshake in time.
        let d = sample::failover_to_slow_owner()
            .owner_probe(&[
                (sample::IMPOSTOR, OwnerOutcome::ServerHello, 3),
                (sample::OWNER, OwnerOutcome::NoAnswer, 2),
            ])
            .judge();
        assert_eq!(d.cause, "server_not_responding", "{d:#?}");
    }

    #[test]
    fn without_the_owner_probe_the_failover_still_rests_on_history() {
        // What the owner probe fixes: the old "served" record alone.
        let d = sample::failover_to_slow_owner().judge();
        assert_eq!(d.cause, "stale_neighbour", "{d:#?}");
    }

    #[test]
    fn neither_mac_answering_is_unknown_with_what_was_ruled_out() {
        let d = sample::two_claimants(false)
            .owner_probe(&[
                (sample::IMPOSTOR, OwnerOutcome::Silent, 3),
                (sample::OWNER, OwnerOutcome::Silent, 3),
            ])
            .judge();
        assert_eq!(d.cause, "unknown", "{d:#?}");
        assert_eq!(d.fix, None);
        assert!(d.summary.contains("no ServerHello"), "{}", d.summary);
        assert!(
            d.evidence.iter().any(|e| e.starts_with("ruled out:")),
            "{d:#?}"
        );
        assert_eq!(d.macs_claiming.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn an_attempt_that_did_not_go_through_its_mac_is_not_evidence() {
        // No frame went through the pin (no hook on the device): the
        // "ServerHello through the owner" may have gone to the MAC in use.
        let d = sample::two_claimants(false)
            .owner_probe(&[
                (sample::IMPOSTOR, OwnerOutcome::Silent, 3),
                (sample::OWNER, OwnerOutcome::ServerHello, 0),
            ])
            .judge();
        assert_eq!(d.cause, "unknown", "{d:#?}");
        assert_eq!(d.fix, None);
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

//! `kernel_drop`: this node's kernel dropped the stuck flow's packets and
//! said why (the skb drop reason). Only drops in the node's own namespace
//! count: a lab's other "machines" share the kernel, and their drops are
//! not this node's evidence. Reasons that are TCP's own bookkeeping (old
//! data, out-of-window, a closed socket) are not a path's fault and are left
//! to the other rules.

use crate::{
    correlate::{Cause, drops::Seen},
    model::event::{Diagnosis, FlowRef, Snapshot},
    model::facts::PATH_DROP_REASONS,
};

/// The path drop with the most packets, if the kernel reported one.
pub fn top_path_drop(drops: &[Seen]) -> Option<&Seen> {
    drops
        .iter()
        .filter(|s| PATH_DROP_REASONS.contains(&s.reason.as_str()))
        .max_by_key(|s| s.count)
}

/// One evidence line per drop the kernel reported for the flow.
pub fn drop_evidence(drops: &[Seen], d: &mut Diagnosis) {
    for s in drops {
        d.evidence.push(format!(
            "this node's kernel dropped {} packet(s) {} -> {}: {} (at {})",
            if s.count > 1 {
                format!("at least {}", s.count)
            } else {
                "1".to_string()
            },
            s.flow.src,
            s.flow.dst,
            s.reason,
            s.location
        ));
    }
}

pub fn judge(drops: &[Seen], snap: &Snapshot, progressed: bool, d: &mut Diagnosis) -> bool {
    if progressed {
        return false;
    }
    let Some(top) = top_path_drop(drops) else {
        return false;
    };
    drop_evidence(drops, d);
    // A full accept queue is a cause of its own.
    if top.reason == "TCP_LISTEN_OVERFLOW" {
        d.cause = Cause::ListenOverflow.as_str().into();
        d.drop_reason = Some(top.reason.clone());
        d.summary = format!(
            "{} does not accept connections fast enough: its accept queue is full and this node drops new ones from {}",
            top.flow.dst, top.flow.src
        );
        d.fix = Some(format!(
            "ss -ltnp 'sport = :{}'   # Recv-Q at Send-Q: the process is not calling accept(); raise its backlog and net.core.somaxconn",
            top.flow.dst.port()
        ));
        return true;
    }
    let rule = (top.reason == "NETFILTER_DROP" && !snap.drop_rules.is_empty())
        .then(|| snap.drop_rules.join("; "));
    let (what, fix) = remedy(&top.reason, top.flow, rule.as_deref());
    d.cause = Cause::KernelDrop.as_str().into();
    d.drop_reason = Some(top.reason.clone());
    d.rule = rule.clone();
    d.summary = format!(
        "this node drops {} -> {} ({}): {what}",
        top.flow.src, top.flow.dst, top.reason
    );
    if top.reason == "NETFILTER_DROP" && rule.is_none() {
        d.evidence.push("no rule of this node's nftables ruleset that drops and matches the flow's addresses or ports was found (a chain policy, a set lookup or iptables-legacy may hold it)".into());
    }
    d.fix = Some(fix);
    true
}

/// What the reason means and what to run (never a change: the operator
/// decides whether the rule is wrong).
fn remedy(reason: &str, f: FlowRef, rule: Option<&str>) -> (String, String) {
    let dst = f.dst.ip();
    match reason {
        "NETFILTER_DROP" => match rule {
            Some(r) => (
                format!("a firewall rule drops it ({r})"),
                format!("nft -a list chain {}   # the rule that drops it; a NetworkPolicy or kube-proxy rule if the table is theirs", first_chain(r)),
            ),
            None => (
                "a netfilter rule drops it".into(),
                format!("nft -a list ruleset | grep -n -e drop -e reject   # look for what matches {dst} port {}", f.dst.port()),
            ),
        },
        "IP_RPFILTER" => (
            "reverse-path filtering rejects its source on the interface it came in (an asymmetric path)".into(),
            "sysctl -a 2>/dev/null | grep '\\.rp_filter'   # 2 (loose) on the interface the packets arrive on fixes asymmetric paths".into(),
        ),
        "NEIGH_FAILED" | "NEIGH_DEAD" | "NEIGH_CREATEFAIL" | "NEIGH_QUEUEFULL" => (
            "the next hop does not answer ARP/ND".into(),
            format!("ip route get {dst}; ip neigh show   # the next hop there is down or unreachable"),
        ),
        "IP_OUTNOROUTES" | "IP_INNOROUTES" => (
            "there is no route for it".into(),
            format!("ip route get {dst}"),
        ),
        "PKT_TOO_BIG" => (
            "it is larger than the path's MTU and may not be fragmented".into(),
            format!("ip route get {dst}; ip link   # lower the MTU or clamp the MSS"),
        ),
        "TCP_LISTEN_OVERFLOW" => (
            "the server's accept queue is full: it is not accepting fast enough".into(),
            format!("ss -ltn 'sport = :{}'   # Recv-Q at Send-Q means a full queue", f.dst.port()),
        ),
        r => (
            format!("the kernel says {r}"),
            format!("ip route get {dst}"),
        ),
    }
}

fn first_chain(rules: &str) -> &str {
    rules
        .split(';')
        .next()
        .and_then(|r| r.split(':').next())
        .unwrap_or(rules)
        .trim()
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    pub(crate) fn seen(reason: &str, netns: Option<u32>) -> Seen {
        Seen {
            flow: FlowRef {
                src: "10.1.0.5:40000".parse().unwrap(),
                dst: "10.0.0.2:9443".parse().unwrap(),
            },
            reason: reason.into(),
            count: 2,
            netns,
            location: "0xffffffff81000000".into(),
            last: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    #[test]
    fn a_firewall_drop_names_the_rule() {
        let snap = Snapshot {
            drop_rules: vec!["inet fw forward: drops tcp to port 9443".into()],
            ..Default::default()
        };
        let s = seen("NETFILTER_DROP", Some(1));
        let mut d = Diagnosis::new("retransmit_storm", "unknown", s.flow, "");
        assert!(judge(&[s], &snap, false, &mut d));
        assert_eq!(d.cause, "kernel_drop");
        assert_eq!(d.drop_reason.as_deref(), Some("NETFILTER_DROP"));
        assert!(
            d.rule
                .as_deref()
                .is_some_and(|r| r.contains("inet fw forward"))
        );
        assert!(
            d.fix
                .as_deref()
                .is_some_and(|f| f.starts_with("nft -a list chain inet fw forward"))
        );
    }

    #[test]
    fn a_full_accept_queue_is_named() {
        let s = seen("TCP_LISTEN_OVERFLOW", Some(1));
        let mut d = Diagnosis::new("retransmit_storm", "unknown", s.flow, "");
        assert!(judge(&[s], &Snapshot::default(), false, &mut d));
        assert_eq!(d.cause, "listen_overflow");
    }

    #[test]
    fn tcp_bookkeeping_and_progress_are_not_a_path_drop() {
        let snap = Snapshot::default();
        let s = seen("TCP_OLD_DATA", Some(1));
        let mut d = Diagnosis::new("retransmit_storm", "unknown", s.flow, "");
        assert!(!judge(std::slice::from_ref(&s), &snap, false, &mut d));
        let nf = seen("NETFILTER_DROP", Some(1));
        assert!(!judge(&[nf], &snap, true, &mut d));
        assert_eq!(d.cause, "unknown");
    }
}

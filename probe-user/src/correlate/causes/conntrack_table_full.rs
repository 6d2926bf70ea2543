//! `conntrack_table_full`: netfilter dropped the stuck flow's packets on
//! this node because conntrack could not make an entry for it. The kernel
//! gives the drop only the generic reason NETFILTER_DROP, so the rule needs
//! the table itself: its count at the maximum, and, where the per-CPU
//! statistics are readable, conntrack's own `drop` counter having moved
//! since netprobe started (that counter counts exactly these packets).
//!
//! Controls: a firewall rule dropping the flow while the table has room
//! (`kernel_drop` with its rule); a full table while a rule of this node
//! drops the flow and conntrack itself dropped nothing (the rule is the
//! cause); a flow that progresses.

use super::kernel_drop::{drop_evidence, top_path_drop};
use crate::{
    correlate::{Cause, drops::Seen},
    model::event::{Diagnosis, Snapshot},
};

pub fn judge(drops: &[Seen], snap: &Snapshot, progressed: bool, d: &mut Diagnosis) -> bool {
    if progressed {
        return false;
    }
    let Some(top) = top_path_drop(drops).filter(|s| s.reason == "NETFILTER_DROP") else {
        return false;
    };
    let Some(u) = snap.conntrack_usage.filter(|u| u.full()) else {
        return false;
    };
    let conntrack_dropped = match u.since_start {
        Some(s) => s.drop > 0,
        // Without the statistics, a full table explains the drop only when
        // no rule of this node drops the flow.
        None => snap.drop_rules.is_empty(),
    };
    if !conntrack_dropped {
        return false;
    }
    drop_evidence(drops, d);
    d.cause = Cause::ConntrackTableFull.as_str().into();
    d.drop_reason = Some(top.reason.clone());
    d.summary = format!(
        "this node drops {} -> {}: the conntrack table is full ({} of {} entries), so netfilter drops packets it cannot track",
        top.flow.src, top.flow.dst, u.count, u.max
    );
    d.evidence.push(format!(
        "nf_conntrack_count {} of nf_conntrack_max {} in this namespace",
        u.count, u.max
    ));
    match u.since_start {
        Some(s) => d.evidence.push(format!(
            "since netprobe started, conntrack dropped {} packet(s) for want of an entry, evicted {} unreplied entries and lost {} insert race(s)",
            s.drop, s.early_drop, s.insert_failed
        )),
        None => d.evidence.push(
            "conntrack's per-CPU statistics were not readable; no rule of this node drops the flow"
                .into(),
        ),
    }
    d.fix = Some(format!(
        "sysctl -w net.netfilter.nf_conntrack_max={}   # then find what fills it: conntrack -L 2>/dev/null | grep -o 'dst=[^ ]*' | awk 'NR % 2' | sort | uniq -c | sort -rn | head",
        u.max.saturating_mul(2)
    ));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        correlate::causes::kernel_drop::tests::seen,
        model::facts::{ConntrackStats, ConntrackUsage},
    };

    fn usage(count: u32, max: u32, dropped: Option<u64>) -> Option<ConntrackUsage> {
        Some(ConntrackUsage {
            count,
            max,
            since_start: dropped.map(|drop| ConntrackStats {
                drop,
                ..Default::default()
            }),
        })
    }

    fn judged(snap: &Snapshot, reason: &str, progressed: bool) -> Option<Diagnosis> {
        let s = seen(reason, Some(1));
        let mut d = Diagnosis::new("retransmit_storm", "unknown", s.flow, "");
        judge(&[s], snap, progressed, &mut d).then_some(d)
    }

    #[test]
    fn a_full_table_that_dropped_the_flow_is_named_with_a_fix_that_deletes_nothing() {
        let snap = Snapshot {
            conntrack_usage: usage(1024, 1024, Some(3)),
            ..Default::default()
        };
        let d = judged(&snap, "NETFILTER_DROP", false).expect("named");
        assert_eq!(d.cause, "conntrack_table_full");
        assert!(d.summary.contains("1024 of 1024"), "{}", d.summary);
        assert!(d.evidence.iter().any(|e| e.contains("dropped 3 packet(s)")));
        let fix = d.fix.unwrap();
        assert!(fix.starts_with("sysctl -w net.netfilter.nf_conntrack_max=2048"));
        assert!(!fix.contains("-D") && !fix.contains("-F"), "{fix}");
    }

    #[test]
    fn a_table_with_room_is_not_blamed() {
        let snap = Snapshot {
            conntrack_usage: usage(100, 1024, Some(0)),
            ..Default::default()
        };
        assert!(judged(&snap, "NETFILTER_DROP", false).is_none());
    }

    #[test]
    fn a_full_table_that_dropped_nothing_leaves_a_firewall_rule_to_blame() {
        let snap = Snapshot {
            conntrack_usage: usage(1024, 1024, Some(0)),
            drop_rules: vec!["inet fw forward: drops tcp to port 9443".into()],
            ..Default::default()
        };
        assert!(judged(&snap, "NETFILTER_DROP", false).is_none());
        // Without statistics, a matching rule keeps the verdict off too.
        let snap = Snapshot {
            conntrack_usage: usage(1024, 1024, None),
            ..snap
        };
        assert!(judged(&snap, "NETFILTER_DROP", false).is_none());
        let snap = Snapshot {
            drop_rules: Vec::new(),
            ..snap
        };
        assert!(judged(&snap, "NETFILTER_DROP", false).is_some());
    }

    #[test]
    fn other_reasons_and_progress_are_not_a_full_table() {
        let snap = Snapshot {
            conntrack_usage: usage(1024, 1024, Some(5)),
            ..Default::default()
        };
        assert!(judged(&snap, "IP_RPFILTER", false).is_none());
        assert!(judged(&snap, "NETFILTER_DROP", true).is_none());
    }
}

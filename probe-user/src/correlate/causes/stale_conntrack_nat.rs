//! `stale_conntrack_nat`: the flow's conntrack entry still NATs it to an
//! endpoint the Service no longer has. Decisive evidence about the target
//! itself is required on both counts:
//! - removed: this node's NAT rules, read from the kernel, know the
//!   Service and no longer translate to the target (a target still in the
//!   rules is a stale endpoint or a pause, and deleting the entry would only
//!   NAT the flow to it again, or kill a healthy connection);
//! - dead: it fails a fresh connection from this node, or has no route or
//!   next hop (a paused backend fails this too, hence "removed" as well).
//!
//! Other flows to the Service going elsewhere is support, never proof:
//! several healthy backends do that all the time.

use crate::{
    correlate::{Cause, storm_case::StormCase},
    model::event::Diagnosis,
};

/// Retransmits without progress before a stale-NAT verdict: several RTO
/// back-offs, so a blip is not a verdict.
pub const MIN_STALL: u32 = 3;

pub fn judge(c: &StormCase, d: &mut Diagnosis) -> bool {
    let Some(ct) = c.nat else { return false };
    let Some(tr) = c.translation else {
        return false;
    };
    let stalled = c.series.streak >= MIN_STALL || c.series.state == "SYN_SENT";
    if c.series.progressed || !stalled || !tr.target_removed() {
        return false;
    }
    let Some(dead) = c.dead_reason() else {
        return false;
    };
    let target = c.target;
    d.cause = Cause::StaleConntrackNat.as_str().into();
    d.service = Some(ct.orig_dst);
    d.nat_target = Some(target);
    let now_to: Vec<String> = c.others_now_to().iter().map(|a| a.to_string()).collect();
    d.summary = format!(
        "{} -> {} is stuck: its conntrack entry still NATs to {target}, which is gone (no longer in this node's NAT rules for {}, and {dead}){}; the client hangs until tcp_retries2 gives up{}",
        c.flow.src,
        ct.orig_dst,
        ct.orig_dst,
        if now_to.is_empty() {
            String::new()
        } else {
            format!("; the service now goes to {}", now_to.join(", "))
        },
        c.hang_text()
            .map(|h| format!(", about {h} after the first loss"))
            .unwrap_or_default()
    );
    d.evidence.push(format!(
        "decisive: the NAT rules for {} ({}) no longer translate to {target}; {dead}",
        ct.orig_dst,
        tr.service_rules.join("; ")
    ));
    if let Some(h) = c.hang_text() {
        d.evidence.push(format!(
            "tcp_retries2={} gives up after about {h}",
            c.snap.tcp_retries2.unwrap_or(15)
        ));
    }
    d.evidence.push("fix: delete this conntrack entry; the next retransmit is translated afresh, gets a RST and the client reconnects at once; set TCP_USER_TIMEOUT or keepalive on the client to bound the hang".to_string());
    d.fix = Some(ct.delete_command());
    true
}

#[cfg(test)]
mod tests {
    use crate::correlate::tests::storm_sample as sample;
    use crate::model::facts::LivenessOutcome;

    #[test]
    fn removed_from_the_rules_and_dead_is_stale_with_no_other_flow() {
        // Incident 2 as told: one client, nothing else talks to the Service.
        let d = sample::nat_storm(false, Some(LivenessOutcome::NoAnswer)).judge();
        assert_eq!(d.cause, "stale_conntrack_nat", "{d:#?}");
        assert!(
            d.fix
                .as_deref()
                .is_some_and(|f| f.starts_with("conntrack -D"))
        );
    }

    #[test]
    fn still_in_the_rules_and_not_answering_is_an_endpoint_not_stale_nat() {
        // Control: a backend pausing for a few seconds, or a dead endpoint
        // kube-proxy has not removed. Never conntrack -D.
        let d = sample::nat_storm(true, Some(LivenessOutcome::NoAnswer)).judge();
        assert_eq!(d.cause, "endpoint_unreachable", "{d:#?}");
        assert!(!d.fix.as_deref().unwrap_or("").contains("conntrack -D"));
    }

    #[test]
    fn removed_but_still_answering_is_not_stale() {
        let d = sample::nat_storm(false, Some(LivenessOutcome::Accepted)).judge();
        assert_eq!(d.cause, "unknown", "{d:#?}");
        assert_eq!(d.fix, None);
    }

    #[test]
    fn unreadable_rules_never_print_a_bare_conntrack_delete() {
        let mut s = sample::nat_storm(false, Some(LivenessOutcome::NoAnswer));
        s.snap.translation = None;
        let d = s.judge();
        assert_eq!(d.cause, "endpoint_unreachable", "{d:#?}");
        assert!(!d.fix.as_deref().unwrap_or("").contains("conntrack -D"));
        assert!(d.evidence.iter().any(|e| e.starts_with("only if")));
    }
}

//! What this node's own stack answered the stuck flow's packets with: ICMP
//! destination-unreachable errors (`icmp/icmp_send`) and RSTs
//! (`tcp/tcp_send_reset`), in the node's own namespace only (a lab's other
//! "machines" share the kernel; their answers are not this node's).
//!
//! Not a cause of its own: evidence lines for every verdict, and three
//! refinements where the answer is about the very packets the verdict is
//! about:
//! - `kernel_drop` with NETFILTER_DROP and this node answering the same
//!   flow with an unreachable / prohibited ICMP: the rule rejects (a
//!   `reject` rule), it does not silently drop.
//! - `mtu_blackhole` and this node sending "fragmentation needed" for the
//!   flow: PMTUD is not broken at this node; the ICMP is lost beyond it.
//! - `kernel_drop` whose dropped packets go the way of the RSTs this node's
//!   stack sends for want of a listener (no socket: those RSTs are the only
//!   packets it sends on that flow): the client never hears the refusal.
//! - `unknown` on a flow whose packets this node answers with RST for want
//!   of a listener: said in the summary (the client keeps retransmitting,
//!   so the RSTs do not reach it), without naming a cause.

use crate::{
    correlate::{
        Cause,
        drops::{Answered, Seen},
    },
    model::event::Diagnosis,
};

/// `answers` and `drops`: the flow's, both directions, in the node's
/// namespace only.
pub fn apply(answers: &[Answered], drops: &[Seen], d: &mut Diagnosis) {
    if answers.is_empty() {
        return;
    }
    for a in answers {
        let line = a.evidence();
        if !d.evidence.contains(&line) {
            d.evidence.push(line);
        }
    }
    let cause = Cause::parse(&d.cause).unwrap_or(Cause::Unknown);
    match cause {
        Cause::KernelDrop if d.drop_reason.as_deref() == Some("NETFILTER_DROP") => {
            if let Some(a) = answers.iter().find(|a| a.is_unreachable()) {
                d.summary = format!(
                    "{}; the rule rejects: this node answers with ICMP {}",
                    d.summary,
                    a.words()
                );
            } else if let Some(a) = answers.iter().find(|a| {
                a.is_no_listener()
                    && drops
                        .iter()
                        .any(|s| s.flow == a.flow && s.reason == "NETFILTER_DROP")
            }) {
                d.summary = format!(
                    "{}; what it drops are the RSTs its own stack sends because nothing listens on port {} here: the client never hears the refusal and retries until it gives up",
                    d.summary,
                    a.flow.src.port()
                );
            }
        }
        Cause::MtuBlackhole if answers.iter().any(Answered::is_frag_needed) => {
            d.summary = format!(
                "{}; this node itself sends \"fragmentation needed\" for the flow, so the ICMP is lost between this node and the sender",
                d.summary
            );
        }
        Cause::Unknown => {
            if let Some(a) = answers.iter().find(|a| a.is_no_listener()) {
                d.summary = format!(
                    "{}; this node's stack answers the flow with RST (nothing listens on port {} here), yet the client keeps retransmitting: the RSTs do not reach it",
                    d.summary,
                    a.flow.src.port()
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::{
        correlate::drops::{Answer, Answered},
        model::event::FlowRef,
    };

    fn flow() -> FlowRef {
        FlowRef {
            src: "10.1.0.5:40000".parse().unwrap(),
            dst: "10.0.0.2:9443".parse().unwrap(),
        }
    }

    fn icmp(code: u8, message: &str) -> Answered {
        Answered {
            flow: flow(),
            answer: Answer::Icmp {
                code,
                message: message.into(),
            },
            count: 4,
            netns: Some(1),
            last: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    fn no_listener() -> Answered {
        Answered {
            flow: FlowRef {
                src: flow().dst,
                dst: flow().src,
            },
            answer: Answer::Reset {
                state: None,
                reason: "NO_SOCKET".into(),
            },
            count: 2,
            netns: Some(1),
            last: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    fn diagnosis(cause: &str) -> Diagnosis {
        let mut d = Diagnosis::new("retransmit_storm", cause, flow(), "base");
        if cause == "kernel_drop" {
            d.drop_reason = Some("NETFILTER_DROP".into());
        }
        d
    }

    #[test]
    fn control_nothing_answered_changes_nothing() {
        let mut d = diagnosis("kernel_drop");
        apply(&[], &[], &mut d);
        assert_eq!((d.summary.as_str(), d.evidence.len()), ("base", 0));
    }

    #[test]
    fn a_netfilter_drop_answered_with_icmp_is_a_reject() {
        let mut d = diagnosis("kernel_drop");
        apply(&[icmp(1, "host_unreachable")], &[], &mut d);
        assert_eq!(d.cause, "kernel_drop");
        assert!(
            d.summary
                .contains("rejects: this node answers with ICMP host unreachable")
        );
        assert!(d.evidence[0].contains("with ICMP host unreachable"));
        // Fragmentation needed is not a rejection.
        let mut d = diagnosis("kernel_drop");
        apply(&[icmp(4, "frag_needed")], &[], &mut d);
        assert_eq!(d.summary, "base");
        assert!(d.evidence[0].contains("path MTU discovery is not broken at this node"));
    }

    #[test]
    fn frag_needed_from_this_node_refines_mtu_blackhole_only() {
        let mut d = diagnosis("mtu_blackhole");
        apply(&[icmp(4, "frag_needed")], &[], &mut d);
        assert!(d.summary.contains("lost between this node and the sender"));
        let mut d = diagnosis("mtu_blackhole");
        apply(&[icmp(1, "host_unreachable")], &[], &mut d);
        assert_eq!(d.summary, "base");
    }

    fn dropped(flow: FlowRef) -> Seen {
        Seen {
            flow,
            reason: "NETFILTER_DROP".into(),
            count: 1,
            netns: Some(1),
            location: "0x1".into(),
            last: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    #[test]
    fn dropped_rsts_of_a_closed_port_are_named_only_when_the_drop_is_theirs() {
        let rst = no_listener();
        // Control: the drop is of the client's SYNs, not of the RSTs.
        let mut d = diagnosis("kernel_drop");
        apply(std::slice::from_ref(&rst), &[dropped(flow())], &mut d);
        assert_eq!(d.summary, "base");
        let mut d = diagnosis("kernel_drop");
        apply(std::slice::from_ref(&rst), &[dropped(rst.flow)], &mut d);
        assert!(
            d.summary
                .contains("the RSTs its own stack sends because nothing listens on port 9443"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn rst_without_listener_is_said_but_names_no_cause() {
        let mut d = diagnosis("unknown");
        apply(&[no_listener()], &[], &mut d);
        assert_eq!(d.cause, "unknown");
        assert!(d.summary.contains("nothing listens on port 9443 here"));
        assert!(d.evidence[0].contains("no listener on port 9443"));
        // Another verdict keeps its summary; the line is still evidence.
        let mut d = diagnosis("endpoint_unreachable");
        apply(&[no_listener()], &[], &mut d);
        assert_eq!((d.summary.as_str(), d.evidence.len()), ("base", 1));
    }
}

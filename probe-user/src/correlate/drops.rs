//! Drops this kernel reported for armed flows (`drop` events), and what
//! this node's stack answered their packets with (`icmp_sent`,
//! `reset_sent`), by flow direction. Bounded: the oldest flows are
//! forgotten first.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::model::event::{Drop, FlowRef, IcmpSent, ResetSent};

const MAX_FLOWS: usize = 8192;
const REASONS_PER_FLOW: usize = 8;

/// One flow direction's drops for one reason in one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub flow: FlowRef,
    pub reason: String,
    /// The kernel's count when it last reported (1, 2, 4, ...).
    pub count: u32,
    pub netns: Option<u32>,
    pub location: String,
    pub last: DateTime<Utc>,
}

/// What this node's stack answered a flow's packets with.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// An ICMP destination-unreachable error about the flow's packets.
    Icmp { code: u8, message: String },
    /// A RST; `state` is the socket's (none: no socket matched).
    Reset {
        state: Option<String>,
        reason: String,
    },
}

/// Answers of one kind to one flow direction in one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    /// ICMP: the offending packet's direction. RST: this node -> peer.
    pub flow: FlowRef,
    pub answer: Answer,
    /// The kernel's count when it last reported (1, 2, 4, ...).
    pub count: u32,
    pub netns: Option<u32>,
    pub last: DateTime<Utc>,
}

/// Per-flow lists, bounded in flows (oldest first out) and entries.
struct ByFlow<T> {
    map: HashMap<FlowRef, Vec<T>>,
    order: VecDeque<FlowRef>,
}

impl<T> Default for ByFlow<T> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Clone> ByFlow<T> {
    /// The list of `flow`, made room for; counts what was forgotten.
    fn list(&mut self, flow: FlowRef, evicted: &mut u64) -> &mut Vec<T> {
        if !self.map.contains_key(&flow) {
            while self.map.len() >= MAX_FLOWS {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.map.remove(&old);
                *evicted += 1;
            }
            self.order.push_back(flow);
        }
        self.map.entry(flow).or_default()
    }

    /// Entries of both directions of `flow`.
    fn both(&self, flow: FlowRef) -> impl Iterator<Item = &T> {
        let reverse = FlowRef {
            src: flow.dst,
            dst: flow.src,
        };
        [flow, reverse]
            .into_iter()
            .filter_map(|f| self.map.get(&f))
            .flatten()
    }
}

#[derive(Default)]
pub struct Drops {
    by_flow: ByFlow<Seen>,
    answers: ByFlow<Answered>,
    pub evicted: u64,
}

impl Drops {
    pub fn drop(&mut self, time: DateTime<Utc>, netns: Option<u32>, d: &Drop) {
        let flow = FlowRef {
            src: d.src,
            dst: d.dst,
        };
        let list = self.by_flow.list(flow, &mut self.evicted);
        if let Some(s) = list
            .iter_mut()
            .find(|s| s.reason == d.reason && s.netns == netns)
        {
            s.count = s.count.max(d.count);
            s.last = time;
        } else if list.len() < REASONS_PER_FLOW {
            list.push(Seen {
                flow,
                reason: d.reason.clone(),
                count: d.count,
                netns,
                location: d.location.clone(),
                last: time,
            });
        }
    }

    /// Drops of both directions of `flow` in namespace `netns`.
    pub fn of(&self, flow: FlowRef, netns: Option<u32>) -> Vec<Seen> {
        self.by_flow
            .both(flow)
            .filter(|s| netns.is_some() && s.netns == netns)
            .cloned()
            .collect()
    }

    pub fn icmp(&mut self, time: DateTime<Utc>, netns: Option<u32>, i: &IcmpSent) {
        let answer = Answer::Icmp {
            code: i.code,
            message: i.message.clone(),
        };
        self.answer(time, netns, i.src, i.dst, answer, i.count);
    }

    pub fn reset(&mut self, time: DateTime<Utc>, netns: Option<u32>, r: &ResetSent) {
        let answer = Answer::Reset {
            state: r.state.clone(),
            reason: r.reason.clone(),
        };
        self.answer(time, netns, r.src, r.dst, answer, r.count);
    }

    fn answer(
        &mut self,
        time: DateTime<Utc>,
        netns: Option<u32>,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        answer: Answer,
        count: u32,
    ) {
        let flow = FlowRef { src, dst };
        let list = self.answers.list(flow, &mut self.evicted);
        if let Some(a) = list
            .iter_mut()
            .find(|a| a.answer == answer && a.netns == netns)
        {
            a.count = a.count.max(count);
            a.last = time;
        } else if list.len() < REASONS_PER_FLOW {
            list.push(Answered {
                flow,
                answer,
                count,
                netns,
                last: time,
            });
        }
    }

    /// What this node's stack in namespace `netns` answered either
    /// direction of `flow` with. Another namespace's answers (a lab's
    /// other "machines" share the kernel) are never this node's.
    pub fn answers(&self, flow: FlowRef, netns: Option<u32>) -> Vec<Answered> {
        self.answers
            .both(flow)
            .filter(|a| netns.is_some() && a.netns == netns)
            .cloned()
            .collect()
    }
}

impl Answered {
    /// An ICMP error that says "not through here": unreachable or
    /// prohibited, not fragmentation needed.
    pub fn is_unreachable(&self) -> bool {
        matches!(&self.answer, Answer::Icmp { code, .. } if *code != FRAG_NEEDED)
    }

    pub fn is_frag_needed(&self) -> bool {
        matches!(&self.answer, Answer::Icmp { code, .. } if *code == FRAG_NEEDED)
    }

    /// A RST because no socket matched: nothing listens on the port.
    pub fn is_no_listener(&self) -> bool {
        matches!(&self.answer, Answer::Reset { state: None, reason } if reason == "NO_SOCKET")
    }

    /// The ICMP message in words (`host unreachable`).
    pub fn words(&self) -> String {
        match &self.answer {
            Answer::Icmp { message, .. } => match message.as_str() {
                "frag_needed" => "fragmentation needed".to_string(),
                "admin_prohibited" => "administratively prohibited".to_string(),
                m => m.replace('_', " "),
            },
            Answer::Reset { reason, .. } => format!("RST ({reason})"),
        }
    }

    fn times(&self) -> String {
        if self.count > 1 {
            format!("at least {}", self.count)
        } else {
            "1".to_string()
        }
    }

    /// One evidence line.
    pub fn evidence(&self) -> String {
        let f = self.flow;
        match &self.answer {
            Answer::Icmp { code, .. } if *code == FRAG_NEEDED => format!(
                "this node sent ICMP fragmentation needed to {} for {} packet(s) {} -> {}: path MTU discovery is not broken at this node (if the sender keeps sending full size, the ICMP is lost between this node and it)",
                f.src.ip(),
                self.times(),
                f.src,
                f.dst
            ),
            Answer::Icmp { .. } => format!(
                "this node answered {} packet(s) {} -> {} with ICMP {}",
                self.times(),
                f.src,
                f.dst,
                self.words()
            ),
            Answer::Reset {
                state: None,
                reason,
            } if reason == "NO_SOCKET" => format!(
                "this node's stack reset {} -> {} {} time(s): no listener on port {} here",
                f.dst,
                f.src,
                self.times(),
                f.src.port()
            ),
            Answer::Reset { state, reason } => format!(
                "this node's stack reset the connection {} -> {} {} time(s) ({reason}, socket {})",
                f.src,
                f.dst,
                self.times(),
                state.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// ICMP destination-unreachable code 4.
const FRAG_NEEDED: u8 = 4;

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;

    use super::*;

    pub(crate) fn icmp(code: u8, message: &str, netns: u32) -> (Option<u32>, IcmpSent) {
        (
            Some(netns),
            IcmpSent {
                src: "10.1.0.5:40000".parse().unwrap(),
                dst: "10.0.0.2:9443".parse().unwrap(),
                icmp_type: 3,
                code,
                message: message.into(),
                count: 2,
            },
        )
    }

    fn t() -> DateTime<Utc> {
        Utc.timestamp_opt(0, 0).unwrap()
    }

    #[test]
    fn answers_count_only_in_the_nodes_namespace() {
        let mut d = Drops::default();
        let (ns, i) = icmp(1, "host_unreachable", 7);
        d.icmp(t(), ns, &i);
        let (_, other) = icmp(3, "port_unreachable", 8);
        d.icmp(t(), Some(8), &other);
        let flow = FlowRef {
            src: i.src,
            dst: i.dst,
        };
        let mine = d.answers(flow, Some(7));
        assert_eq!(mine.len(), 1);
        assert!(mine[0].is_unreachable());
        assert!(mine[0].evidence().contains("ICMP host unreachable"));
        assert!(d.answers(flow, None).is_empty());
        // The reverse direction finds it too; a later, larger count wins.
        let mut again = i.clone();
        again.count = 8;
        d.icmp(t(), ns, &again);
        let rev = FlowRef {
            src: i.dst,
            dst: i.src,
        };
        assert_eq!(d.answers(rev, Some(7))[0].count, 8);
    }

    #[test]
    fn a_reset_without_socket_means_no_listener() {
        let mut d = Drops::default();
        let r = ResetSent {
            src: "10.0.0.1:9444".parse().unwrap(),
            dst: "10.1.0.5:40000".parse().unwrap(),
            state: None,
            reason: "NO_SOCKET".into(),
            count: 4,
        };
        d.reset(t(), Some(7), &r);
        let client = FlowRef {
            src: r.dst,
            dst: r.src,
        };
        let a = &d.answers(client, Some(7))[0];
        assert!(a.is_no_listener() && !a.is_unreachable());
        assert!(
            a.evidence().contains("no listener on port 9444"),
            "{}",
            a.evidence()
        );
        // A RST from a live socket is not "no listener".
        let mut live = r.clone();
        live.state = Some("ESTABLISHED".into());
        live.reason = "TCP_ABORT_ON_CLOSE".into();
        d.reset(t(), Some(7), &live);
        assert_eq!(
            d.answers(client, Some(7))
                .iter()
                .filter(|a| a.is_no_listener())
                .count(),
            1
        );
    }
}

//! Per-flow retransmit series: counts, intervals (the RTO back-off), and
//! whether the peer acknowledged anything in between (forward progress).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::model::event::{FlowRef, Retransmit};

const MAX_FLOWS: usize = 100_000;
const TIMES_KEPT: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub state: String,
    pub first: DateTime<Utc>,
    pub times: VecDeque<DateTime<Utc>>,
    pub total: u64,
    /// Retransmits since the last sign of progress.
    pub streak: u32,
    /// When the current streak began.
    pub streak_start: DateTime<Utc>,
    pub streak_una: Option<u32>,
    /// snd_una moved between retransmits at least once.
    pub progressed: bool,
    /// The current streak was handed out for investigation.
    pub reported: bool,
    /// The process that connected the socket, when the kernel knew it.
    pub process: Option<crate::model::event::Process>,
    /// The socket's namespace, when the kernel told it.
    pub netns: Option<u32>,
    /// The owner's pod and container, from its cgroup.
    pub pod: Option<crate::model::pod::Pod>,
    pub container: Option<crate::model::pod::Container>,
}

impl Series {
    /// Gaps between consecutive retransmits of the current streak, in ms.
    pub fn intervals_ms(&self) -> Vec<i64> {
        let streak: Vec<_> = self
            .times
            .iter()
            .filter(|t| **t >= self.streak_start)
            .collect();
        streak
            .windows(2)
            .map(|w| (*w[1] - *w[0]).num_milliseconds())
            .collect()
    }

    /// When the next retransmit of a still-stuck streak is overdue: the RTO
    /// doubles (up to TCP_RTO_MAX), so the next gap is about twice the last;
    /// a quarter more is margin for timer slack.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        let last = *self.times.back()?;
        let gap = *self.intervals_ms().last()?;
        let next = (gap * 2).min(crate::model::facts::TCP_RTO_MAX_MS as i64);
        Some(last + chrono::TimeDelta::milliseconds(next * 5 / 4 + 100))
    }
}

/// What one retransmit changed for its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The flow just became a storm: `threshold` retransmits with snd_una
    /// unchanged (or unknown) in a row.
    pub started: bool,
    /// The flow's first retransmit seen.
    pub first: bool,
    /// snd_una moved since the previous retransmit: the peer acknowledged.
    pub moved: bool,
}

#[derive(Default)]
pub struct Storms {
    flows: HashMap<FlowRef, Series>,
    order: VecDeque<FlowRef>,
    pub evicted: u64,
}

impl Storms {
    /// Records one retransmit of a socket in namespace `netns` and says what
    /// it changed.
    pub fn retransmit(
        &mut self,
        time: DateTime<Utc>,
        r: &Retransmit,
        netns: Option<u32>,
        threshold: u32,
    ) -> Step {
        let flow = FlowRef {
            src: r.src,
            dst: r.dst,
        };
        if !self.flows.contains_key(&flow) {
            while self.flows.len() >= MAX_FLOWS {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.flows.remove(&old);
                self.evicted += 1;
            }
            self.order.push_back(flow);
        }
        let s = self.flows.entry(flow).or_insert_with(|| Series {
            state: r.state.clone(),
            first: time,
            times: VecDeque::new(),
            total: 0,
            streak: 0,
            streak_start: time,
            streak_una: r.snd_una,
            progressed: false,
            reported: false,
            process: None,
            netns,
            pod: None,
            container: None,
        });
        s.netns = netns;
        if r.process.is_some() || r.pod.is_some() {
            if r.process.is_some() {
                s.process = r.process.clone();
            }
            s.pod = r.pod.as_deref().cloned();
            s.container = r.container.clone();
        }
        let moved = matches!((s.streak_una, r.snd_una), (Some(a), Some(b)) if a != b);
        if moved {
            s.progressed = true;
            s.streak = 0;
            s.streak_start = time;
            s.reported = false;
        }
        s.streak_una = r.snd_una;
        s.state = r.state.clone();
        s.total += 1;
        s.streak += 1;
        if s.times.len() >= TIMES_KEPT {
            s.times.pop_front();
        }
        s.times.push_back(time);
        // A SYN retransmitted twice has waited 3 s for any answer (initial
        // RTO 1 s, then 2 s): that is already a stall.
        let threshold = if s.state == "SYN_SENT" {
            threshold.min(2)
        } else {
            threshold
        };
        let started = s.streak >= threshold && !s.reported;
        s.reported |= started;
        Step {
            started,
            first: s.total == 1,
            moved,
        }
    }

    pub fn get(&self, flow: &FlowRef) -> Option<&Series> {
        self.flows.get(flow)
    }

    pub fn forget(&mut self, flow: &FlowRef) {
        self.flows.remove(flow);
    }
}

//! Drops this kernel reported for armed flows (`drop` events), by flow
//! direction. Bounded: the oldest flows are forgotten first.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::event::{Drop, FlowRef};

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

#[derive(Default)]
pub struct Drops {
    by_flow: HashMap<FlowRef, Vec<Seen>>,
    order: VecDeque<FlowRef>,
    pub evicted: u64,
}

impl Drops {
    pub fn drop(&mut self, time: DateTime<Utc>, netns: Option<u32>, d: &Drop) {
        let flow = FlowRef {
            src: d.src,
            dst: d.dst,
        };
        if !self.by_flow.contains_key(&flow) {
            while self.by_flow.len() >= MAX_FLOWS {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.by_flow.remove(&old);
                self.evicted += 1;
            }
            self.order.push_back(flow);
        }
        let list = self.by_flow.entry(flow).or_default();
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
        let reverse = FlowRef {
            src: flow.dst,
            dst: flow.src,
        };
        [flow, reverse]
            .iter()
            .filter_map(|f| self.by_flow.get(f))
            .flatten()
            .filter(|s| netns.is_some() && s.netns == netns)
            .cloned()
            .collect()
    }
}

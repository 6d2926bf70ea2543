//! The correlator: events and state snapshots in, diagnoses out, the clock
//! passed in. Nothing here touches the kernel, so recorded streams replay
//! through it exactly (`netprobe replay`) and unit tests need no root.
//!
//! Flow of one diagnosis: an event makes a symptom (`tick` finds a
//! ClientHello overdue, or `observe` sees a retransmit storm begin) and the
//! correlator returns an [`Investigation`]; the runtime reads the kernel
//! state it asks for and feeds it back as a `snapshot` event; `observe` of
//! that snapshot returns the [`Diagnosis`].

pub mod diagnose;
pub mod handshake;
pub mod history;
pub mod storm;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};

use crate::event::{Diagnosis, Event, EventBody, FlowRef, Snapshot};

#[derive(Clone, Debug)]
pub struct Config {
    /// How long a ClientHello may wait for its ServerHello.
    pub handshake_timeout: Duration,
    /// Retransmits in a row without progress that make a storm.
    pub storm_threshold: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(3),
            storm_threshold: 3,
        }
    }
}

/// Looks at one storm's kernel state at most this often.
const MAX_LOOKS: u32 = 8;
/// Verdicts remembered at most (one per diagnosed flow and symptom).
const MAX_VERDICTS: usize = 100_000;

#[derive(Clone, Debug)]
struct Verdict {
    cause: String,
    settled: bool,
    looks: u32,
}

/// What the runtime should look up to explain a symptom.
#[derive(Clone, Debug, PartialEq)]
pub enum Investigation {
    /// A ClientHello went unanswered: route, neighbour entry and an active
    /// claimant probe for the next hop toward `dst`, out of `iface`.
    Handshake { flow: FlowRef, iface: String },
    /// A flow retransmits without progress: its conntrack entry, others to
    /// the same destination, and the route/neighbour of the NAT target.
    /// `netns` is the socket's namespace inode, when the kernel told it.
    Storm { flow: FlowRef, netns: Option<u32> },
}

#[derive(Default)]
pub struct Output {
    pub investigations: Vec<Investigation>,
    pub diagnoses: Vec<Diagnosis>,
}

pub struct Correlator {
    config: Config,
    history: history::History,
    handshakes: handshake::Handshakes,
    storms: storm::Storms,
    /// Last verdict per (symptom, flow). A settled verdict is final; an
    /// `unknown` one is looked at again while the symptom lasts (state the
    /// cause depends on, like a Service re-pointed by kube-proxy, may come
    /// later), and only a changed cause is reported again.
    verdicts: HashMap<(String, FlowRef), Verdict>,
    /// Storms left undiagnosed because they belong to another namespace.
    pub unrelated: u64,
}

impl Correlator {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            history: Default::default(),
            handshakes: Default::default(),
            storms: Default::default(),
            verdicts: HashMap::new(),
            unrelated: 0,
        }
    }

    /// Feeds one event of the stream.
    pub fn observe(&mut self, event: &Event) -> Output {
        let mut out = Output::default();
        let t = event.time;
        match &event.body {
            EventBody::TlsClientHello(h) => self.handshakes.client_hello(t, h),
            EventBody::TlsServerHello(h) => {
                self.handshakes.server_hello(h.src, h.dst);
            }
            EventBody::Neighbour(n) => self.history.neighbour(t, n),
            EventBody::Arp(a) => self.history.arp(t, a),
            EventBody::Retransmit(r) => {
                let flow = FlowRef {
                    src: r.src,
                    dst: r.dst,
                };
                let started = self.storms.retransmit(t, r, self.config.storm_threshold);
                let key = (diagnose::STORM.to_string(), flow);
                let look = match self.verdicts.get_mut(&key) {
                    None => started.is_some(),
                    // Still stuck after an inconclusive look: look again,
                    // at the pace of the RTO back-off, a bounded number of times.
                    Some(v) => {
                        let stuck = self
                            .storms
                            .get(&flow)
                            .is_some_and(|s| s.streak > 0 && !s.progressed);
                        let again = !v.settled && stuck && v.looks < MAX_LOOKS;
                        if again {
                            v.looks += 1;
                        }
                        again
                    }
                };
                if look {
                    out.investigations.push(Investigation::Storm {
                        flow,
                        netns: event.netns,
                    });
                }
            }
            EventBody::Reset(r) => {
                // A refused or aborted flow is not waiting for anything.
                let flow = FlowRef {
                    src: r.src,
                    dst: r.dst,
                };
                self.handshakes.forget(&flow);
                self.storms.forget(&flow);
            }
            EventBody::Snapshot(s) => out.diagnoses.extend(self.diagnose(s, t)),
            EventBody::Stats(_) | EventBody::Diagnosis(_) => {}
        }
        out
    }

    /// Advances the clock: ClientHellos that waited too long.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Investigation> {
        self.handshakes
            .overdue(now, self.config.handshake_timeout)
            .into_iter()
            .filter_map(|flow| {
                let p = self.handshakes.get(&flow)?;
                Some(Investigation::Handshake {
                    flow,
                    iface: p.hello.iface.clone(),
                })
            })
            .collect()
    }

    fn diagnose(&mut self, snap: &Snapshot, now: DateTime<Utc>) -> Option<Diagnosis> {
        let flow = snap.flow?;
        let key = (snap.symptom.clone(), flow);
        let previous = self.verdicts.get(&key).cloned();
        if previous.as_ref().is_some_and(|v| v.settled) {
            return None;
        }
        let diagnosis = match snap.symptom.as_str() {
            diagnose::HANDSHAKE => {
                // Answered while we were looking: no diagnosis.
                let pending = self.handshakes.get(&flow)?;
                let reverse = FlowRef {
                    src: flow.dst,
                    dst: flow.src,
                };
                diagnose::handshake(
                    pending,
                    &self.history,
                    snap,
                    [self.storms.get(&flow), self.storms.get(&reverse)],
                    now,
                )
            }
            diagnose::STORM => {
                if snap.foreign_netns.is_some() {
                    // A socket in another namespace whose traffic does not
                    // pass through ours (no conntrack entry here): nothing
                    // we can say about it, so say nothing.
                    self.remember(key, "unrelated", true);
                    self.unrelated += 1;
                    return None;
                }
                let series = self.storms.get(&flow)?;
                let hang = hang_estimate(snap, series);
                diagnose::storm(flow, series, snap, now, hang)
            }
            _ => return None,
        };
        if previous.is_some_and(|v| v.cause == diagnosis.cause) {
            return None; // looked again, nothing new to say
        }
        let settled = diagnosis.cause != "unknown";
        self.remember(key, &diagnosis.cause, settled);
        Some(diagnosis)
    }

    /// State forgotten to stay within bounds: flows, IPs and handshakes.
    pub fn evictions(&self) -> u64 {
        self.storms.evicted + self.history.evicted + self.handshakes.dropped
    }

    fn remember(&mut self, key: (String, FlowRef), cause: &str, settled: bool) {
        if self.verdicts.len() >= MAX_VERDICTS {
            // Keep the ones that can still change; forget settled history.
            self.verdicts.retain(|_, v| !v.settled);
        }
        let looks = self.verdicts.get(&key).map_or(0, |v| v.looks);
        self.verdicts.insert(
            key,
            Verdict {
                cause: cause.to_string(),
                settled,
                looks,
            },
        );
    }
}

/// How long the client will block: the kernel's tcp_retries2 arithmetic,
/// from the first RTO seen on the flow (at least 200 ms).
fn hang_estimate(snap: &Snapshot, series: &storm::Series) -> Option<Duration> {
    let retries2 = snap.tcp_retries2?;
    // The gap between the first two retransmits is twice the base RTO.
    let base = series
        .intervals_ms()
        .first()
        .map(|gap| gap / 2)
        .unwrap_or(200)
        .max(200) as u64;
    Some(crate::state::hang_estimate(retries2, base))
}

#[cfg(test)]
mod tests;

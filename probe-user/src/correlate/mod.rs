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

use std::{collections::HashSet, net::IpAddr, time::Duration};

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
    /// (symptom, flow) pairs already diagnosed: one diagnosis each.
    diagnosed: HashSet<(String, FlowRef)>,
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
            diagnosed: HashSet::new(),
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
                if let Some(flow) = self.storms.retransmit(t, r, self.config.storm_threshold)
                    && !self
                        .diagnosed
                        .contains(&(diagnose::STORM.to_string(), flow))
                {
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
        if self.diagnosed.contains(&key) {
            return None;
        }
        let diagnosis = match snap.symptom.as_str() {
            diagnose::HANDSHAKE => {
                // Answered while we were looking: no diagnosis.
                let pending = self.handshakes.get(&flow)?;
                diagnose::handshake(pending, &self.history, snap, self.storms.get(&flow), now)
            }
            diagnose::STORM => {
                if snap.foreign_netns.is_some() {
                    // A socket in another namespace whose traffic does not
                    // pass through ours (no conntrack entry here): nothing
                    // we can say about it, so say nothing.
                    self.diagnosed.insert(key);
                    self.unrelated += 1;
                    return None;
                }
                let series = self.storms.get(&flow)?;
                let hang = hang_estimate(snap, series);
                diagnose::storm(flow, series, snap, now, hang)
            }
            _ => return None,
        };
        self.diagnosed.insert(key);
        Some(diagnosis)
    }

    /// The neighbour IP an investigation is about, for callers and tests.
    pub fn next_hop_of(flow: &FlowRef) -> IpAddr {
        flow.dst.ip()
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

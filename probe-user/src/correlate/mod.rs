//! The correlator: events and state snapshots in, diagnoses out, the clock
//! passed in. Nothing here touches the kernel, so recorded streams replay
//! through it exactly (`netprobe replay`) and unit tests need no root.
//!
//! Flow of one diagnosis: an event makes a symptom (`tick` finds a
//! ClientHello overdue, or `observe` sees a retransmit storm begin) and the
//! correlator returns an [`Investigation`]; the runtime reads the kernel
//! state it asks for and feeds it back as a `snapshot` event; `observe` of
//! that snapshot returns the [`Diagnosis`].

pub mod cause;
pub mod causes;
pub mod drops;
pub mod evidence;
pub mod handshake;
pub mod handshake_case;
pub mod history;
pub mod storm;
pub mod storm_case;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};

pub use cause::{Cause, Symptom};

use crate::model::event::{Diagnosis, Event, EventBody, FlowRef, Recovered, Snapshot};

#[derive(Clone, Debug)]
pub struct Config {
    /// How long a ClientHello may wait for its ServerHello.
    pub handshake_timeout: Duration,
    /// Retransmits in a row without progress that make a storm.
    pub storm_threshold: u32,
    /// The stream reports the client's next flight (`tls_client_flight`),
    /// so a handshake that got its ServerHello is followed until then.
    /// Learnt from the stream when off (a recording made before these
    /// events existed never gets a stall it could not have seen).
    pub client_flights: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(3),
            storm_threshold: 3,
            client_flights: false,
        }
    }
}

/// Looks at one storm's kernel state at most this often.
const MAX_LOOKS: u32 = 8;
/// Verdicts remembered at most (one per diagnosed flow and symptom).
const MAX_VERDICTS: usize = 100_000;

#[derive(Clone, Debug)]
struct Verdict {
    /// `None` for a storm left alone as another namespace's.
    cause: Option<Cause>,
    settled: bool,
    looks: u32,
    /// When it was named.
    at: DateTime<Utc>,
}

/// What the runtime should look up to explain a symptom.
#[derive(Clone, Debug, PartialEq)]
pub enum Investigation {
    /// A ClientHello went unanswered: route, neighbour entry and an active
    /// claimant probe for the next hop toward `dst`, out of `iface`; when
    /// more than one MAC claims it, a handshake of netprobe's own through
    /// each (with the hello's `sni`). `claims`: the MACs seen claiming
    /// `dst`'s address on the wire recently.
    Handshake {
        flow: FlowRef,
        iface: String,
        sni: Option<String>,
        claims: Vec<String>,
    },
    /// A flow retransmits without progress: its conntrack entry, others to
    /// the same destination, and the route/neighbour of the NAT target.
    /// `netns` is the socket's namespace inode, when the kernel told it.
    Storm { flow: FlowRef, netns: Option<u32> },
}

#[derive(Default)]
pub struct Output {
    pub investigations: Vec<Investigation>,
    pub diagnoses: Vec<Diagnosis>,
    /// Diagnosed flows that made progress again.
    pub recovered: Vec<Recovered>,
    /// Flows whose drops the kernel should count from now on.
    pub arm: Vec<FlowRef>,
}

pub struct Correlator {
    config: Config,
    history: history::History,
    handshakes: handshake::Handshakes,
    storms: storm::Storms,
    drops: drops::Drops,
    /// Last verdict per (symptom, flow). A settled verdict is final; an
    /// `unknown` one is looked at again while the symptom lasts (state the
    /// cause depends on, like a Service re-pointed by kube-proxy, may come
    /// later), and only a changed cause is reported again.
    verdicts: HashMap<(Symptom, FlowRef), Verdict>,
    /// Storms left undiagnosed because they belong to another namespace.
    pub unrelated: u64,
    /// `recovered` events emitted.
    pub recovered: u64,
}

impl Correlator {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            history: Default::default(),
            handshakes: Default::default(),
            storms: Default::default(),
            drops: Default::default(),
            verdicts: HashMap::new(),
            unrelated: 0,
            recovered: 0,
        }
    }

    /// Feeds one event of the stream.
    pub fn observe(&mut self, event: &Event) -> Output {
        let mut out = Output::default();
        let t = event.time;
        match &event.body {
            EventBody::TlsClientHello(h) => self.handshakes.client_hello(t, h),
            EventBody::TlsHop(h) => self.handshakes.hop(t, h),
            EventBody::TlsServerHello(h) => {
                let flow = FlowRef {
                    src: h.dst,
                    dst: h.src,
                };
                let follow = self.config.client_flights;
                if let Some(p) = self.handshakes.server_hello(t, h.src, h.dst, follow) {
                    // Which MACs serve this address: the egress hops of the
                    // hello that got its answer.
                    for hop in p.hops.iter().filter(|h| h.direction == "egress") {
                        self.history.served(t, flow.dst.ip(), &hop.dst_mac);
                    }
                }
                self.recover(
                    Symptom::HandshakeUnanswered,
                    flow,
                    t,
                    "the ServerHello arrived",
                    &mut out,
                );
            }
            EventBody::TlsClientFlight(f) => {
                self.config.client_flights = true;
                let flow = FlowRef {
                    src: f.src,
                    dst: f.dst,
                };
                self.handshakes.client_flight(&flow);
                self.recover(
                    Symptom::HandshakeStalled,
                    flow,
                    t,
                    "the client sent its next flight: the server's flight arrived",
                    &mut out,
                );
            }
            EventBody::Drop(d) => self.drops.drop(t, event.netns, d),
            EventBody::IcmpSent(i) => self.drops.icmp(t, event.netns, i),
            EventBody::ResetSent(r) => self.drops.reset(t, event.netns, r),
            EventBody::Neighbour(n) => self.history.neighbour(t, n),
            EventBody::Arp(a) => self.history.arp(t, a),
            EventBody::Retransmit(r) => {
                let flow = FlowRef {
                    src: r.src,
                    dst: r.dst,
                };
                let step = self
                    .storms
                    .retransmit(t, r, event.netns, self.config.storm_threshold);
                if step.first {
                    // A flow in trouble: count its drops from its next packet.
                    out.arm.push(flow);
                }
                if step.moved {
                    self.recover(
                        Symptom::RetransmitStorm,
                        flow,
                        t,
                        "snd_una advanced: the peer acknowledged data again",
                        &mut out,
                    );
                }
                let key = (Symptom::RetransmitStorm, flow);
                let look = match self.verdicts.get_mut(&key) {
                    None => step.started,
                    // Still stuck after a verdict that can change: look
                    // again, at the pace of the RTO back-off, a bounded
                    // number of times.
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
            // SYN-ACK retransmits are reported, not judged: no rule uses
            // them yet, and a listener's side is not a storm of its own.
            EventBody::Start(_)
            | EventBody::Stats(_)
            | EventBody::Diagnosis(_)
            | EventBody::Recovered(_)
            | EventBody::SynackRetransmit(_) => {}
        }
        out
    }

    /// Advances the clock: ClientHellos that waited too long, and storms
    /// that went quiet when the RTO back-off expected another retransmit.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Investigation> {
        self.handshakes
            .overdue(now, self.config.handshake_timeout)
            .into_iter()
            .filter_map(|flow| {
                let p = self.handshakes.get(&flow)?;
                let claims = self
                    .history
                    .recent_claims(&flow.dst.ip(), now)
                    .into_iter()
                    .map(|c| c.mac.clone())
                    .collect();
                Some(Investigation::Handshake {
                    flow,
                    iface: p.hello.iface.clone(),
                    sni: p.hello.sni.clone(),
                    claims,
                })
            })
            .collect()
    }

    /// Diagnosed storms whose next retransmit is overdue: the RTO timer
    /// would have fired again had nothing been acknowledged.
    pub fn quiet_storms(&mut self, now: DateTime<Utc>) -> Vec<Recovered> {
        let mut out = Output::default();
        let quiet: Vec<(FlowRef, DateTime<Utc>)> = self
            .verdicts
            .iter()
            .filter(|((symptom, _), v)| {
                *symptom == Symptom::RetransmitStorm
                    && v.cause.is_some_and(|c| c != Cause::PacketLoss)
            })
            .filter_map(|((_, flow), _)| {
                let due = self.storms.get(flow)?.next_due()?;
                (now > due).then_some((*flow, due))
            })
            .collect();
        for (flow, due) in quiet {
            let how = format!(
                "no retransmit when the back-off expected one (by {}): the peer acknowledged, or the socket closed",
                evidence::clock(due)
            );
            self.storms.forget(&flow);
            self.recover(Symptom::RetransmitStorm, flow, now, &how, &mut out);
        }
        out.recovered
    }

    /// How far a TLS handshake on the flow (either end's socket) got, for
    /// a storm on it: retransmitting while the hello waits is `hello_sent`.
    fn handshake_stage(&self, flow: FlowRef) -> Option<&'static str> {
        let reverse = FlowRef {
            src: flow.dst,
            dst: flow.src,
        };
        let p = self
            .handshakes
            .get(&flow)
            .or_else(|| self.handshakes.get(&reverse))?;
        Some(if p.server_hello.is_some() {
            handshake_case::Stage::ServerHello.as_str()
        } else {
            handshake_case::Stage::HelloSent.as_str()
        })
    }

    /// A flow with a verdict moves again: say so, and forget the verdict so
    /// a new stall is judged afresh.
    fn recover(
        &mut self,
        symptom: Symptom,
        flow: FlowRef,
        now: DateTime<Utc>,
        how: &str,
        out: &mut Output,
    ) {
        let key = (symptom, flow);
        let Some(v) = self.verdicts.get(&key) else {
            return;
        };
        let Some(cause) = v.cause else { return };
        if cause == Cause::PacketLoss {
            return; // it was moving all along
        }
        out.recovered.push(Recovered {
            flow,
            symptom: symptom.as_str().to_string(),
            cause: cause.as_str().to_string(),
            after_ms: (now - v.at).num_milliseconds().max(0) as u64,
            how: how.to_string(),
        });
        self.recovered += 1;
        self.verdicts.remove(&key);
    }

    fn diagnose(&mut self, snap: &Snapshot, now: DateTime<Utc>) -> Option<Diagnosis> {
        let flow = snap.flow?;
        let mut symptom = Symptom::parse(&snap.symptom)?;
        // One investigation serves both handshake questions; which one it
        // answers depends on how far the handshake got meanwhile.
        if symptom == Symptom::HandshakeUnanswered
            && let Some(p) = self.handshakes.get(&flow)
        {
            symptom = p.symptom();
        }
        let key = (symptom, flow);
        let previous = self.verdicts.get(&key).cloned();
        if previous.as_ref().is_some_and(|v| v.settled) {
            return None;
        }
        let mut diagnosis = match symptom {
            Symptom::HandshakeUnanswered | Symptom::HandshakeStalled => {
                // Answered while we were looking: no diagnosis.
                let pending = self.handshakes.get(&flow)?;
                let reverse = FlowRef {
                    src: flow.dst,
                    dst: flow.src,
                };
                handshake_case::HandshakeCase::new(
                    pending,
                    &self.history,
                    snap,
                    [self.storms.get(&flow), self.storms.get(&reverse)],
                    self.drops.of(flow, snap.node_netns),
                    now,
                )
                .judge()
            }
            Symptom::RetransmitStorm => {
                // Dropped or answered here: the flow's packets pass through
                // this node.
                let dropped_here = !self.drops.of(flow, snap.node_netns).is_empty()
                    || !self.drops.answers(flow, snap.node_netns).is_empty();
                if snap.foreign_netns.is_some() && !dropped_here {
                    // A socket in another namespace whose traffic does not
                    // pass through ours (no conntrack entry here): nothing
                    // we can say about it, so say nothing, and count it.
                    self.remember(key, None, now);
                    self.unrelated += 1;
                    return None;
                }
                let series = self.storms.get(&flow)?;
                let hang = hang_estimate(snap, series);
                let drops = self.drops.of(flow, snap.node_netns);
                storm_case::StormCase::new(flow, series, snap, hang, now)
                    .with_drops(drops)
                    .judge()
            }
        };
        if diagnosis.stage.is_none() {
            diagnosis.stage = self.handshake_stage(flow).map(str::to_string);
        }
        causes::answered::apply(
            &self.drops.answers(flow, snap.node_netns),
            &self.drops.of(flow, snap.node_netns),
            &mut diagnosis,
        );
        let cause = Cause::parse(&diagnosis.cause).unwrap_or(Cause::Unknown);
        if let Some(v) = &previous {
            // Looked again: the same cause says nothing new, and a lack of
            // evidence (`unknown`) does not contradict a named cause.
            if v.cause == Some(cause) || (cause == Cause::Unknown && v.cause.is_some()) {
                return None;
            }
        }
        self.remember(key, Some(cause), now);
        Some(diagnosis)
    }

    /// State forgotten to stay within bounds: flows, IPs and handshakes.
    pub fn evictions(&self) -> u64 {
        self.storms.evicted + self.history.evicted + self.handshakes.dropped + self.drops.evicted
    }

    fn remember(&mut self, key: (Symptom, FlowRef), cause: Option<Cause>, at: DateTime<Utc>) {
        if self.verdicts.len() >= MAX_VERDICTS {
            // Keep the ones that can still change; forget settled history.
            self.verdicts.retain(|_, v| !v.settled);
        }
        let looks = self.verdicts.get(&key).map_or(0, |v| v.looks);
        self.verdicts.insert(
            key,
            Verdict {
                cause,
                settled: cause.is_none_or(Cause::is_settled),
                looks,
                at,
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
    Some(crate::model::facts::hang_estimate(retries2, base))
}

#[cfg(test)]
mod tests;

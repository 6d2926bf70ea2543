//! An unanswered ClientHello, with every fact the handshake causes judge:
//! the path it took through this node, the route and neighbour entry of
//! the next hop, who claims that address now, and what retransmitted.
//! Built once; each cause module reads it and claims it or passes.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{
    Cause, causes,
    evidence::{self, clock},
    handshake::Pending,
    history::History,
    storm::Series,
};
use crate::{
    model::event::{Diagnosis, FlowRef, Snapshot},
    model::facts::{OwnerAttempt, OwnerProbe, Resolution, RouteKind},
};

/// Where a handshake stalled, as far as this node can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The ClientHello itself is being retransmitted: never acknowledged.
    HelloSent,
    /// No retransmit of the hello: the server's TCP acknowledged it.
    HelloAcked,
    /// The ServerHello arrived; the rest of the server's flight did not
    /// (the client never sent its next flight).
    ServerHello,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::HelloSent => "hello_sent",
            Stage::HelloAcked => "hello_acked",
            Stage::ServerHello => "server_hello",
        }
    }
}

/// What netprobe's own handshake through each claimant MAC showed.
#[derive(Clone, Copy, Debug)]
pub enum OwnerEvidence<'a> {
    /// Through the MAC in use a TLS server answered (a ServerHello, or an
    /// alert): it serves the address, whoever else also answers.
    InUseServes,
    /// Through the MAC in use no ServerHello came, through this other one
    /// it did: the other MAC is the owner.
    OtherServes(&'a OwnerAttempt),
    /// No ServerHello anywhere, and only the MAC in use took the TCP
    /// connection: the others do not hold the address at all.
    InUseOnlyHolder,
    /// No ServerHello through any MAC: nothing tells owner from impostor.
    NoneServes,
}

pub struct HandshakeCase<'a> {
    pub pending: &'a Pending,
    pub snap: &'a Snapshot,
    pub history: &'a History,
    pub flow: FlowRef,
    /// The next hop toward the server (the gateway, or the server itself).
    pub next_hop: IpAddr,
    /// The route's device toward it.
    pub dev: String,
    pub route: Option<RouteKind>,
    /// The destination MAC the hello had leaving `dev`; `None` when no hook
    /// on `dev` saw it leave (not attached there, or it went elsewhere).
    pub egress_mac: Option<String>,
    /// The neighbour entry's MAC and state for the next hop.
    pub entry_mac: Option<String>,
    pub resolution: Option<Resolution>,
    /// MACs claiming the next hop now: the probe's answers and the claims
    /// seen on the wire within their age limit.
    pub claimants: Vec<String>,
    /// Retransmits of the client's flow, and of the server's answer flow.
    pub client_retransmits: u64,
    pub client_progressed: bool,
    pub server_retransmits: u64,
    pub stage: Stage,
    /// This node's kernel dropped packets of the flow (either direction).
    pub drops: Vec<super::drops::Seen>,
    pub now: DateTime<Utc>,
}

impl<'a> HandshakeCase<'a> {
    pub fn new(
        pending: &'a Pending,
        history: &'a History,
        snap: &'a Snapshot,
        retransmits: [Option<&Series>; 2],
        drops: Vec<super::drops::Seen>,
        now: DateTime<Utc>,
    ) -> Self {
        let hello = &pending.hello;
        let dst_ip = hello.dst.ip();
        let route = snap.route.as_ref();
        let next_hop = route.and_then(|r| r.gateway).unwrap_or(dst_ip);
        let dev = route
            .and_then(|r| r.dev.clone())
            .unwrap_or_else(|| hello.iface.clone());
        let egress_mac = pending.egress_mac(&dev).map(str::to_string);
        let probed = snap
            .probe
            .as_ref()
            .map(|p| p.distinct_macs())
            .unwrap_or_default();
        // The probe's answers, and what claimed the address on the wire
        // recently: a proxy-ARP router answers real requests but not the
        // probe's (sender 0.0.0.0), so neither alone is the whole picture.
        let mut claimants = probed;
        for c in history.recent_claims(&next_hop, now) {
            if !claimants.contains(&c.mac) {
                claimants.push(c.mac.clone());
            }
        }
        let [client, server] = retransmits;
        let client_retransmits = client.map_or(0, |s| s.total);
        let client_progressed = client.is_some_and(|s| s.progressed);
        let stage = if pending.server_hello.is_some() {
            Stage::ServerHello
        } else if client_retransmits > 0 && !client_progressed {
            Stage::HelloSent
        } else {
            Stage::HelloAcked
        };
        Self {
            pending,
            snap,
            history,
            flow: FlowRef {
                src: hello.src,
                dst: hello.dst,
            },
            next_hop,
            dev,
            route: route.map(|r| r.route_kind()),
            egress_mac,
            entry_mac: snap.neighbour.as_ref().and_then(|n| n.mac.clone()),
            resolution: snap.neighbour.as_ref().map(|n| n.resolution()),
            claimants,
            client_retransmits,
            client_progressed,
            // Only a server socket in this node's own namespace is this
            // node's evidence; in a lab, other "machines" share the kernel.
            server_retransmits: server
                .filter(|s| s.netns.is_some() && s.netns == snap.node_netns)
                .map_or(0, |s| s.total),
            stage,
            drops,
            now,
        }
    }

    /// Claimants other than the MAC the hello went to.
    pub fn other_claimants(&self) -> Vec<&str> {
        self.claimants
            .iter()
            .map(String::as_str)
            .filter(|m| Some(*m) != self.egress_mac.as_deref())
            .collect()
    }

    /// netprobe's own handshakes through the claimants of this flow's
    /// destination, when they were made.
    pub fn owner_probe(&self) -> Option<&'a OwnerProbe> {
        self.snap
            .owner_probe
            .as_ref()
            .filter(|p| p.dst == self.flow.dst)
    }

    /// What netprobe's own handshakes say about the MAC the hello went to;
    /// `None` when they say nothing (not made, not pinned, or none through
    /// the MAC in use or through another claimant).
    pub fn owner_evidence(&self) -> Option<OwnerEvidence<'a>> {
        let used = self.egress_mac.as_deref()?;
        let probe = self.owner_probe()?;
        let in_use = probe.attempt(used).filter(|a| a.pinned())?;
        let others: Vec<&OwnerAttempt> = probe
            .attempts
            .iter()
            .filter(|a| a.mac != used && a.pinned())
            .collect();
        if others.is_empty() {
            return None;
        }
        Some(if in_use.speaks_tls() {
            OwnerEvidence::InUseServes
        } else if let Some(o) = others.iter().find(|a| a.serves()) {
            OwnerEvidence::OtherServes(o)
        } else if in_use.holds() && !others.iter().any(|a| a.holds()) {
            OwnerEvidence::InUseOnlyHolder
        } else {
            OwnerEvidence::NoneServes
        })
    }

    pub fn waited_s(&self) -> f64 {
        (self.now - self.pending.time).num_milliseconds() as f64 / 1000.0
    }

    /// What was seen, whatever the verdict.
    fn evidence(&self) -> Vec<String> {
        let hello = &self.pending.hello;
        let sni = hello
            .sni
            .as_deref()
            .map(|s| format!(" (SNI {s})"))
            .unwrap_or_default();
        // Where it left the node: the egress hook of the route's device,
        // whose frame carries the MAC that matters; else the first hook
        // (a socket hook has no link layer, hence no MAC).
        let (left, mac) = match self.egress_mac.as_deref() {
            Some(mac) => (self.dev.as_str(), mac),
            None => (hello.iface.as_str(), hello.dst_mac.as_str()),
        };
        let toward = if mac.is_empty() {
            String::new()
        } else {
            format!(" toward MAC {mac}")
        };
        let mut ev = vec![format!(
            "ClientHello {} -> {}{sni} left {left} at {}{toward}; no ServerHello after {:.1} s",
            hello.src,
            hello.dst,
            clock(self.pending.time),
            self.waited_s()
        )];
        if self.pending.hops.len() > 1 {
            let path: Vec<String> = self
                .pending
                .hops
                .iter()
                .map(|h| {
                    if h.dst_mac.is_empty() {
                        format!("{} {}", h.iface, h.direction)
                    } else {
                        format!("{} {} to {}", h.iface, h.direction, h.dst_mac)
                    }
                })
                .collect();
            ev.push(format!("path through this node: {}", path.join(", ")));
        }
        ev.push(match self.stage {
            Stage::HelloAcked => "the TCP connection was established and the ClientHello was not retransmitted: the server's TCP acknowledged it".to_string(),
            Stage::HelloSent => format!(
                "the client retransmitted {} time(s) without progress: the ClientHello was never acknowledged",
                self.client_retransmits
            ),
            Stage::ServerHello => format!(
                "the ServerHello came back at {}, and the client has sent nothing since: the server's flight did not arrive whole",
                self.pending
                    .server_hello
                    .map(super::evidence::clock)
                    .unwrap_or_default()
            ),
        });
        if let Some(r) = &self.snap.route {
            let via = r
                .gateway
                .map(|g| format!(" via gateway {g}"))
                .unwrap_or_default();
            ev.push(format!(
                "route to {}: {}{via} dev {}",
                r.dst, r.kind, self.dev
            ));
        }
        if let Some(n) = &self.snap.neighbour {
            let age = n
                .updated_ago_ms
                .map(|ms| format!(", updated {:.1} s ago", ms as f64 / 1000.0))
                .unwrap_or_default();
            ev.push(format!(
                "neighbour entry {} dev {}: {} {}{age}",
                n.ip,
                n.dev,
                n.mac.as_deref().unwrap_or("(no MAC)"),
                n.state
            ));
        }
        match &self.egress_mac {
            Some(m) => ev.push(format!("the hello left {} toward {m}", self.dev)),
            None if self.route != Some(RouteKind::Local) => ev.push(format!(
                "no hook saw the hello leave {} (the device toward the next hop): the MAC in use could not be checked",
                self.dev
            )),
            None => {}
        }
        ev.extend(evidence::changes(self.history, &self.next_hop));
        ev.extend(evidence::claims(self.history, &self.next_hop, self.now));
        ev.extend(evidence::served(self.history, &self.flow.dst.ip()));
        if let Some(probe) = &self.snap.probe {
            let macs = probe.distinct_macs();
            ev.push(if macs.is_empty() {
                format!(
                    "active probe for {} from {} on {}: no answer in {} ms",
                    self.next_hop, probe.probe_mac, probe.dev, probe.window_ms
                )
            } else {
                format!(
                    "active probe for {} from {} on {}: answered by {} within {} ms",
                    self.next_hop,
                    probe.probe_mac,
                    probe.dev,
                    macs.join(" and "),
                    probe.window_ms
                )
            });
        }
        if let Some(p) = &self.snap.path {
            let sizes: Vec<String> = p
                .sizes
                .iter()
                .map(|s| format!("{} {}", s.size, if s.answered { "back" } else { "lost" }))
                .collect();
            ev.push(format!(
                "DF echo requests to {} (route MTU {}): {}{}",
                p.dst,
                p.route_mtu,
                sizes.join(", "),
                p.frag_needed
                    .map(|m| format!("; \"fragmentation needed\" came back (MTU {m})"))
                    .unwrap_or_else(|| "; no \"fragmentation needed\" came back".into())
            ));
        }
        if let Some(p) = self.owner_probe() {
            ev.push(p.describe());
        }
        if let Some(why) = &self.snap.owner_probe_skipped {
            ev.push(format!(
                "no handshake of netprobe's own through each claimant: {why}"
            ));
        }
        if let Some(why) = &self.snap.probe_skipped {
            ev.push(format!("no active probe: {why}"));
        }
        if self.server_retransmits > 0 {
            ev.push(format!(
                "the server retransmitted its side {} times: its answer is being lost on the way",
                self.server_retransmits
            ));
        }
        ev.extend(evidence::lookup_failures(self.snap));
        ev
    }

    /// The verdict: the first cause whose rule holds, else `unknown` with
    /// what was ruled out.
    pub fn judge(&self) -> Diagnosis {
        let stalled = self.stage == Stage::ServerHello;
        let mut d = Diagnosis::new(
            self.pending.symptom().as_str(),
            Cause::Unknown.as_str(),
            self.flow,
            String::new(),
        );
        d.evidence = self.evidence();
        d.stage = Some(self.stage.as_str().to_string());
        let since = self.pending.server_hello.unwrap_or(self.pending.time);
        d.detected_after_ms = (self.now - since).num_milliseconds().max(0) as u64;
        if stalled {
            // The server answered through the path in use: nothing about
            // its neighbour, its listener or its liveness is in question.
            let judged = causes::kernel_drop::judge(&self.drops, self.snap, false, &mut d)
                || causes::mtu_blackhole::judge(self, &mut d);
            if !judged {
                causes::unknown::handshake(self, &mut d);
            }
            return d;
        }
        let judged = causes::kernel_drop::judge(&self.drops, self.snap, false, &mut d)
            || causes::endpoint_unreachable::handshake(self, &mut d)
            || causes::stale_neighbour::judge(self, &mut d)
            || causes::packet_loss::handshake(self, &mut d)
            || causes::mtu_blackhole::judge(self, &mut d)
            || causes::listen_overflow::judge(self.snap, self.flow, &mut d)
            || causes::server_not_responding::judge(self, &mut d);
        if !judged {
            causes::unknown::handshake(self, &mut d);
        }
        d
    }
}

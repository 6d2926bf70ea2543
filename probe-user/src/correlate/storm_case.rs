//! A retransmit storm, with every fact the storm causes judge: the series,
//! the flow's conntrack entry and NAT target, the Service's translation in
//! this node's rules, a fresh connection attempt to the target, and the
//! route and next hop toward it.

use std::{net::SocketAddr, time::Duration};

use chrono::{DateTime, Utc};

use super::{
    Cause,
    cause::Symptom,
    causes,
    evidence::{self, clock, delays},
    storm::Series,
};
use crate::{
    model::event::{Diagnosis, FlowRef, Snapshot},
    model::facts::{ConntrackEntry, LivenessOutcome, Resolution, RouteKind, Translation},
};

pub struct StormCase<'a> {
    pub flow: FlowRef,
    pub series: &'a Series,
    pub snap: &'a Snapshot,
    /// The flow's conntrack entry when it is DNATed.
    pub nat: Option<&'a ConntrackEntry>,
    pub translation: Option<&'a Translation>,
    /// Where the packets really go: the NAT target, else the destination.
    pub target: SocketAddr,
    pub hang: Option<Duration>,
    /// This node's kernel dropped packets of the flow (either direction).
    pub drops: Vec<super::drops::Seen>,
    pub now: DateTime<Utc>,
}

impl<'a> StormCase<'a> {
    pub fn new(
        flow: FlowRef,
        series: &'a Series,
        snap: &'a Snapshot,
        hang: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Self {
        let nat = snap.conntrack.as_ref().filter(|c| c.is_dnat());
        Self {
            flow,
            series,
            snap,
            nat,
            translation: snap.translation.as_ref(),
            target: nat.map_or(flow.dst, |c| c.reply_src),
            hang,
            drops: Vec::new(),
            now,
        }
    }

    pub fn with_drops(mut self, drops: Vec<super::drops::Seen>) -> Self {
        self.drops = drops;
        self
    }

    /// Why the target counts as dead, if it does: evidence about the
    /// target itself (its route, its next hop, a fresh connection to it).
    pub fn dead_reason(&self) -> Option<String> {
        let ip = self.target.ip();
        if let Some(r) = &self.snap.route
            && r.route_kind() == RouteKind::Reject
        {
            return Some(format!("the route to {ip} is {}", r.kind));
        }
        if let Some(n) = &self.snap.neighbour
            && n.resolution() == Resolution::Unresolved
        {
            return Some(format!("its next hop {} is {}", n.ip, n.state));
        }
        let l = self.snap.liveness.as_ref()?;
        match l.outcome {
            LivenessOutcome::NoAnswer => Some(format!(
                "a fresh connection to {} from this node got no answer in {} ms",
                l.addr, l.after_ms
            )),
            LivenessOutcome::Unreachable => Some(format!(
                "a fresh connection to {} from this node was refused as unreachable",
                l.addr
            )),
            LivenessOutcome::Accepted | LivenessOutcome::Refused => None,
        }
    }

    pub fn target_dead(&self) -> bool {
        self.dead_reason().is_some()
    }

    /// Destinations other conntrack entries of the same Service go to now
    /// (supporting evidence only).
    pub fn others_now_to(&self) -> Vec<SocketAddr> {
        let Some(ct) = self.nat else {
            return Vec::new();
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        for o in &self.snap.same_service {
            if o.orig_src != ct.orig_src
                && o.is_dnat()
                && o.reply_src != ct.reply_src
                && !out.contains(&o.reply_src)
            {
                out.push(o.reply_src);
            }
        }
        out
    }

    pub fn hang_text(&self) -> Option<String> {
        self.hang.map(|h| {
            format!(
                "{:.0} s (~{:.0} min)",
                h.as_secs_f64(),
                h.as_secs_f64() / 60.0
            )
        })
    }

    fn evidence(&self) -> Vec<String> {
        let s = self.series;
        let mut ev = vec![format!(
            "{} retransmits of {} -> {} since {} ({} in the current run, state {}), intervals {}",
            s.total,
            self.flow.src,
            self.flow.dst,
            clock(s.first),
            s.streak,
            s.state,
            delays(s)
        )];
        ev.push(if s.progressed {
            "the peer acknowledged data between retransmits (snd_una moved)".to_string()
        } else {
            "no forward progress: nothing acknowledged between retransmits".to_string()
        });
        match &self.snap.conntrack {
            Some(ct) => ev.push(format!(
                "conntrack: {} -> {} replied from {} ({}; {}{})",
                ct.orig_src,
                ct.orig_dst,
                ct.reply_src,
                ct.tcp_state.as_deref().unwrap_or("-"),
                ct.status.join(","),
                ct.timeout_s
                    .map(|t| format!("; expires in {t} s"))
                    .unwrap_or_default()
            )),
            None => ev.push("conntrack: no entry for this flow in this namespace".to_string()),
        }
        if let (Some(_), Some(t)) = (self.nat, self.translation) {
            ev.push(if t.target_present() {
                format!(
                    "NAT rules still translating to {}: {}",
                    self.target.ip(),
                    t.target_rules.join("; ")
                )
            } else if t.service_rules.is_empty() {
                format!(
                    "no NAT rule of this node matches the Service ({} NAT rules read)",
                    t.nat_rules
                )
            } else {
                format!(
                    "NAT rules for the Service ({}) translate to {}, not to {}",
                    t.service_rules.join("; "),
                    if t.dnat_targets.is_empty() {
                        "nothing".to_string()
                    } else {
                        t.dnat_targets
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    self.target.ip()
                )
            });
            if t.incomplete {
                ev.push("some NAT rule takes its target from a map that was not read: the target's absence proves nothing".into());
            }
        }
        if let Some(l) = &self.snap.liveness {
            ev.push(format!(
                "fresh connection to {} from this node: {} after {} ms",
                l.addr,
                match l.outcome {
                    LivenessOutcome::Accepted => "accepted",
                    LivenessOutcome::Refused => "refused (RST)",
                    LivenessOutcome::Unreachable => "unreachable (ICMP)",
                    LivenessOutcome::NoAnswer => "no answer",
                },
                l.after_ms
            ));
        }
        if let Some(r) = &self.snap.route {
            ev.push(format!(
                "route to {}: {} {}",
                r.dst,
                r.kind,
                r.dev.as_deref().unwrap_or("")
            ));
        }
        if let Some(n) = &self.snap.neighbour {
            ev.push(format!(
                "neighbour {} dev {}: {} {}",
                n.ip,
                n.dev,
                n.mac.as_deref().unwrap_or("(no MAC)"),
                n.state
            ));
        }
        if let Some(ct) = self.nat {
            let others = self.others_now_to();
            if !others.is_empty() {
                ev.push(format!(
                    "other flows to {} are now translated to {} (support only: several healthy backends do this too)",
                    ct.orig_dst,
                    others
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        ev.extend(evidence::lookup_failures(self.snap));
        ev
    }

    pub fn judge(&self) -> Diagnosis {
        let mut d = Diagnosis::new(
            Symptom::RetransmitStorm.as_str(),
            Cause::Unknown.as_str(),
            self.flow,
            String::new(),
        );
        d.evidence = self.evidence();
        if let Some(p) = &self.series.process {
            d.evidence.insert(
                1,
                format!("the socket belongs to pid {} ({})", p.pid, p.comm),
            );
            d.process = Some(p.clone());
        }
        if let Some(pod) = &self.series.pod {
            d.evidence.insert(
                2.min(d.evidence.len()),
                format!(
                    "the socket is of pod {pod}{}",
                    self.series
                        .container
                        .as_ref()
                        .map(|c| format!(", container {c}"))
                        .unwrap_or_default()
                ),
            );
            d.pod = Some(pod.clone());
            d.container = self.series.container.clone();
        }
        d.detected_after_ms = (self.now - self.series.streak_start)
            .num_milliseconds()
            .max(0) as u64;
        let judged = causes::packet_loss::storm(self, &mut d)
            || causes::conntrack_table_full::judge(
                &self.drops,
                self.snap,
                self.series.progressed,
                &mut d,
            )
            || causes::kernel_drop::judge(&self.drops, self.snap, self.series.progressed, &mut d)
            || causes::listen_overflow::judge(self.snap, self.flow, &mut d)
            || causes::mtu_blackhole::storm(self, &mut d)
            || causes::stale_conntrack_nat::judge(self, &mut d)
            || causes::endpoint_unreachable::storm(self, &mut d);
        if !judged {
            causes::unknown::storm(self, &mut d);
        }
        d
    }
}

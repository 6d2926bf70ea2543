//! Handshakes in flight: ClientHellos waiting for their ServerHello, then
//! for the client's next flight (the server's flight arrived whole), each
//! with the hooks its first segment crossed on this node (pod veth,
//! bridge, uplink).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};

use crate::model::event::{FlowRef, TlsClientHello, TlsHop};

const MAX_PENDING: usize = 65_536;

#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub hello: TlsClientHello,
    pub time: DateTime<Utc>,
    /// When the ServerHello came back (the handshake then waits for the
    /// client's next flight).
    pub server_hello: Option<DateTime<Utc>>,
    /// Already handed out for investigation.
    pub investigating: bool,
    /// Every hook the ClientHello was seen on, in order (the first is the
    /// hello's own `iface`).
    pub hops: Vec<Hop>,
}

/// One hook a ClientHello crossed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub iface: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub dst_mac: String,
}

/// A packet crosses few hooks on one node; more is a loop or noise.
const MAX_HOPS: usize = 8;

impl Pending {
    /// The question a stall of this handshake raises: no ServerHello, or
    /// no client flight after it.
    pub fn symptom(&self) -> super::Symptom {
        if self.server_hello.is_some() {
            super::Symptom::HandshakeStalled
        } else {
            super::Symptom::HandshakeUnanswered
        }
    }

    /// The destination MAC the hello left `dev` with: the frame on the
    /// device toward the next hop, not the first hook that saw it.
    pub fn egress_mac(&self, dev: &str) -> Option<&str> {
        self.hops
            .iter()
            .find(|h| h.iface == dev && h.direction == "egress")
            .map(|h| h.dst_mac.as_str())
    }
}

/// Hops kept for hellos not complete yet, at most: a hello in several
/// segments is complete only on its last, after the first segment's copies
/// on later hooks (the uplink's, with the MAC that matters) came by.
const MAX_EARLY: usize = 4096;
/// An early hop's hello completes within the reassembler's patience
/// (`pipeline::PARTIAL_AFTER_NS`, 1 s), or never.
const EARLY_FOR: Duration = Duration::from_secs(2);

/// Adds a hook the hello crossed, once per (interface, direction), at most
/// [`MAX_HOPS`].
fn add_hop(hops: &mut Vec<Hop>, hop: Hop) {
    if hops.len() < MAX_HOPS
        && !hops
            .iter()
            .any(|x| x.iface == hop.iface && x.direction == hop.direction)
    {
        hops.push(hop);
    }
}

#[derive(Default)]
pub struct Handshakes {
    pending: HashMap<FlowRef, Pending>,
    /// Hops of hellos still being reassembled, by flow, with when the
    /// first came (a ServerHello's copies come here too, and age out).
    early: HashMap<FlowRef, (DateTime<Utc>, Vec<Hop>)>,
    pub answered: u64,
    pub dropped: u64,
}

impl Handshakes {
    pub fn client_hello(&mut self, time: DateTime<Utc>, hello: &TlsClientHello) {
        let flow = FlowRef {
            src: hello.src,
            dst: hello.dst,
        };
        if self.pending.contains_key(&flow) {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            // Oldest first: they are the least likely to still matter.
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.time)
                .map(|(f, _)| *f)
            {
                self.pending.remove(&oldest);
                self.dropped += 1;
            }
        }
        let mut hops = vec![Hop {
            iface: hello.iface.clone(),
            direction: hello.direction.clone(),
            dst_mac: hello.dst_mac.clone(),
        }];
        for h in self.early.remove(&flow).map(|(_, h)| h).unwrap_or_default() {
            add_hop(&mut hops, h);
        }
        self.pending.insert(
            flow,
            Pending {
                hello: hello.clone(),
                time,
                server_hello: None,
                investigating: false,
                hops,
            },
        );
    }

    /// The hello's segment seen again on another hook.
    pub fn hop(&mut self, time: DateTime<Utc>, h: &TlsHop) {
        let flow = FlowRef {
            src: h.src,
            dst: h.dst,
        };
        let hop = Hop {
            iface: h.iface.clone(),
            direction: h.direction.clone(),
            dst_mac: h.dst_mac.clone(),
        };
        let Some(p) = self.pending.get_mut(&flow) else {
            // Its hello is not complete yet: keep the hop for it.
            if self.early.len() >= MAX_EARLY && !self.early.contains_key(&flow) {
                self.early
                    .retain(|_, (t, _)| (time - *t).to_std().is_ok_and(|age| age < EARLY_FOR));
                if self.early.len() >= MAX_EARLY {
                    self.early.clear();
                }
            }
            let (_, early) = self.early.entry(flow).or_insert((time, Vec::new()));
            if early.len() < MAX_HOPS {
                early.push(hop);
            }
            return;
        };
        add_hop(&mut p.hops, hop);
    }

    /// A ServerHello from `src` to `dst` answers the flow `dst -> src`; with
    /// `follow`, the handshake now waits for the client's next flight, else
    /// it is done. The handshake as it was, the first time only.
    pub fn server_hello(
        &mut self,
        time: DateTime<Utc>,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        follow: bool,
    ) -> Option<Pending> {
        let flow = FlowRef { src: dst, dst: src };
        if !follow {
            let answered = self.pending.remove(&flow);
            if answered.is_some() {
                self.answered += 1;
            }
            return answered;
        }
        let p = self.pending.get_mut(&flow)?;
        if p.server_hello.is_some() {
            return None;
        }
        let before = p.clone();
        p.server_hello = Some(time);
        // A stall after this is a new question.
        p.investigating = false;
        self.answered += 1;
        Some(before)
    }

    /// The client sent its next flight: the handshake is done here.
    pub fn client_flight(&mut self, flow: &FlowRef) -> Option<Pending> {
        self.pending.remove(flow)
    }

    /// The flow ended (RST, close): nothing to wait for.
    pub fn forget(&mut self, flow: &FlowRef) {
        self.pending.remove(flow);
    }

    /// Flows whose ClientHello (or, once answered, whose ServerHello) has
    /// waited `timeout` by `now`, once each.
    pub fn overdue(&mut self, now: DateTime<Utc>, timeout: Duration) -> Vec<FlowRef> {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let mut due: Vec<(DateTime<Utc>, FlowRef)> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| !p.investigating && now - p.server_hello.unwrap_or(p.time) >= timeout)
            .map(|(f, p)| {
                p.investigating = true;
                (p.time, *f)
            })
            .collect();
        due.sort_by_key(|(time, _)| *time);
        // Drop what has been waiting far longer than anyone will care.
        let horizon = timeout * 20;
        self.pending.retain(|_, p| now - p.time < horizon);
        due.into_iter().map(|(_, f)| f).collect()
    }

    pub fn get(&self, flow: &FlowRef) -> Option<&Pending> {
        self.pending.get(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn flow() -> (std::net::SocketAddr, std::net::SocketAddr) {
        (
            "10.0.0.2:40000".parse().unwrap(),
            "10.0.0.100:6443".parse().unwrap(),
        )
    }

    fn socket_hello() -> TlsClientHello {
        let (src, dst) = flow();
        TlsClientHello {
            src,
            dst,
            iface: "eth0".into(),
            src_mac: String::new(),
            dst_mac: String::new(),
            sni: Some("api".into()),
            record_version: "0x0301".into(),
            handshake_version: "0x0303".into(),
            segments: 2,
            direction: "socket_egress".into(),
            partial: false,
        }
    }

    fn uplink_hop(mac: &str) -> TlsHop {
        let (src, dst) = flow();
        TlsHop {
            src,
            dst,
            iface: "eth0".into(),
            direction: "egress".into(),
            src_mac: "02:00:00:00:00:02".into(),
            dst_mac: mac.into(),
        }
    }

    #[test]
    fn a_hop_seen_before_its_split_hello_completes_is_kept_for_it() {
        let mut hs = Handshakes::default();
        // The first segment crossed the uplink before the second segment
        // completed the hello at the socket.
        hs.hop(at(0), &uplink_hop("02:00:00:00:00:64"));
        hs.client_hello(at(300), &socket_hello());
        let (src, dst) = flow();
        let p = hs.get(&FlowRef { src, dst }).expect("pending");
        assert_eq!(p.hops.len(), 2, "{:?}", p.hops);
        assert_eq!(p.egress_mac("eth0"), Some("02:00:00:00:00:64"));
    }

    #[test]
    fn early_hops_of_hellos_that_never_complete_age_out() {
        let mut hs = Handshakes::default();
        for i in 0..MAX_EARLY as u16 {
            let mut h = uplink_hop("02:00:00:00:00:64");
            h.src.set_port(1000 + i);
            hs.hop(at(0), &h);
        }
        assert_eq!(hs.early.len(), MAX_EARLY);
        // Three seconds on, a new one makes room by dropping the old.
        hs.hop(at(3000), &uplink_hop("02:00:00:00:00:64"));
        assert_eq!(hs.early.len(), 1);
    }
}

//! Raw ring-buffer bytes in, contract events out: decode, de-duplicate,
//! enrich. Counts everything it skips, so nothing disappears silently.

pub mod decode;
pub mod enrich;
pub mod tls;

use std::collections::HashMap;

use self::{
    decode::Record,
    enrich::{Enricher, IfaceNames, direction_name, socket_addr},
};
use crate::model::event::{Event, EventBody, TlsHop};

/// A segment seen again within this window on another hook (the same packet
/// crossing lo twice, or a bridge port and then the bridge) is a duplicate.
const DUP_WINDOW_NS: u64 = 1_000_000_000;
const DUP_MAX: usize = 8192;
/// A ClientHello still missing a continuation this long after its first
/// segment is reported without SNI (a lost segment is retransmitted well
/// within this; one that never comes must not hide the handshake).
pub const PARTIAL_AFTER_NS: u64 = 1_000_000_000;

/// A packet the classifier copied in capture mode: Ethernet frame from its
/// first byte, cut after the TCP header unless it carries TLS handshake
/// bytes (payload beyond the handshake is never copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub time: chrono::DateTime<chrono::Utc>,
    pub ifindex: u32,
    pub iface: String,
    /// `probe_common::direction::INGRESS` or `EGRESS`.
    pub direction: u8,
    /// Length of the frame on the wire.
    pub wire_len: u32,
    /// The copied bytes (a prefix of the frame).
    pub data: Vec<u8>,
}

pub enum Fed {
    Event(Event),
    Packet(Packet),
    Nothing,
}

pub struct Pipeline {
    enricher: Enricher,
    /// TLS segments recently seen: (src, dst, seq, part) -> time.
    recent: HashMap<(std::net::SocketAddr, std::net::SocketAddr, u32, u8), u64>,
    pub records: u64,
    pub malformed: u64,
    pub duplicates: u64,
}

impl Pipeline {
    pub fn new(enricher: Enricher) -> Self {
        Self {
            enricher,
            recent: HashMap::new(),
            records: 0,
            malformed: 0,
            duplicates: 0,
        }
    }

    pub fn enricher(&self) -> &Enricher {
        &self.enricher
    }

    pub fn enricher_mut(&mut self) -> &mut Enricher {
        &mut self.enricher
    }

    /// One ring-buffer record: an event, a packet copy, or nothing (skipped,
    /// duplicate, or a TLS piece still being reassembled).
    pub fn feed(&mut self, bytes: &[u8], ifaces: &impl IfaceNames) -> Fed {
        let record = match decode::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.malformed += 1;
                log::debug!("skipped record: {e}");
                return Fed::Nothing;
            }
        };
        self.records += 1;
        if let Record::Packet(p) = &record {
            let captured = (p.captured as usize).min(p.data.len());
            return Fed::Packet(Packet {
                time: self.enricher.wall(p.header.ts_ns),
                ifindex: p.ifindex,
                iface: ifaces.name(p.ifindex),
                direction: p.direction,
                wire_len: p.wire_len,
                data: p.data[..captured].to_vec(),
            });
        }
        if let Record::Tls(t) = &record
            && self.is_duplicate(
                (
                    socket_addr(t.family, &t.saddr, t.sport),
                    socket_addr(t.family, &t.daddr, t.dport),
                    t.seq,
                    t.part,
                ),
                t.header.ts_ns,
            )
        {
            self.duplicates += 1;
            // The same segment on another hook: where it went next is
            // evidence (the egress toward the next hop carries the MAC that
            // matters), so the first piece of each segment says so.
            if t.part == probe_common::tls_part::START && t.chunk == 0 {
                let (src_mac, dst_mac) = enrich::record_macs(t);
                return Fed::Event(Event {
                    time: self.enricher.wall(t.header.ts_ns),
                    netns: None,
                    body: EventBody::TlsHop(TlsHop {
                        src: socket_addr(t.family, &t.saddr, t.sport),
                        dst: socket_addr(t.family, &t.daddr, t.dport),
                        iface: self.enricher.iface_of(t, ifaces),
                        direction: direction_name(t.direction),
                        src_mac,
                        dst_mac,
                    }),
                });
            }
            return Fed::Nothing;
        }
        match self.enricher.event(&record, ifaces) {
            Some(e) => Fed::Event(e),
            None => Fed::Nothing,
        }
    }

    fn is_duplicate(
        &mut self,
        key: (std::net::SocketAddr, std::net::SocketAddr, u32, u8),
        now: u64,
    ) -> bool {
        if self.recent.len() >= DUP_MAX {
            self.recent
                .retain(|_, t| now.saturating_sub(*t) < DUP_WINDOW_NS);
            if self.recent.len() >= DUP_MAX {
                self.recent.clear();
            }
        }
        match self.recent.insert(key, now) {
            Some(prev) => now.saturating_sub(prev) < DUP_WINDOW_NS,
            None => false,
        }
    }

    /// Ages out reassembly state; returns the ClientHellos reported without
    /// their end (see [`PARTIAL_AFTER_NS`]).
    pub fn expire(&mut self, now_mono_ns: u64) -> Vec<Event> {
        let partial = self.enricher.partial_hellos(now_mono_ns, PARTIAL_AFTER_NS);
        self.enricher.expire(now_mono_ns);
        partial
    }
}

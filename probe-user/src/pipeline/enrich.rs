//! Typed kernel records to contract events: wall-clock time, interface
//! names, per-flow retransmit counts, TLS reassembly and SNI.
//!
//! Pure apart from what it is given: the clock offset and an interface-name
//! lookup are passed in, so recorded records replay the same way.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use chrono::{DateTime, Utc};
use probe_common::{
    AF_INET, ArpRecord, NeighRecord, TcpRecord, TlsRecord, arp_op, direction, tls_part,
};

use crate::{
    model::event::{
        self, Arp, Event, EventBody, Neighbour, Retransmit, TlsClientFlight, TlsClientHello,
        TlsServerHello,
    },
    model::names,
    pipeline::decode::Record,
    pipeline::tls::{FlowId, Handshake, Reassembler, Segment},
};

/// Maps kernel CLOCK_MONOTONIC nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in nanoseconds, measured once at start.
    offset_ns: i128,
}

impl Clock {
    pub fn new(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Reads both clocks now.
    pub fn system() -> Self {
        let read = |id| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid clock id and out pointer.
            unsafe { libc::clock_gettime(id, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        Self::new(read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC))
    }

    pub fn wall(&self, mono_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(mono_ns) + self.offset_ns;
        DateTime::from_timestamp_nanos(ns.clamp(0, i128::from(i64::MAX)) as i64)
    }
}

/// Interface index to name, in the namespace the classifier is attached in.
pub trait IfaceNames {
    fn name(&self, ifindex: u32) -> String;
}

impl IfaceNames for HashMap<u32, String> {
    fn name(&self, ifindex: u32) -> String {
        self.get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{ifindex}"))
    }
}

/// Retransmits per flow, bounded: the oldest flow is forgotten first.
struct FlowCounts {
    counts: HashMap<(SocketAddr, SocketAddr), u64>,
    order: VecDeque<(SocketAddr, SocketAddr)>,
    cap: usize,
    evicted: u64,
}

impl FlowCounts {
    fn new(cap: usize) -> Self {
        Self {
            counts: HashMap::new(),
            order: VecDeque::new(),
            cap,
            evicted: 0,
        }
    }

    fn bump(&mut self, flow: (SocketAddr, SocketAddr)) -> u64 {
        if !self.counts.contains_key(&flow) {
            while self.counts.len() >= self.cap {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.counts.remove(&old);
                self.evicted += 1;
            }
            self.order.push_back(flow);
        }
        let count = self.counts.entry(flow).or_insert(0);
        *count += 1;
        *count
    }
}

pub struct Enricher {
    clock: Clock,
    /// Namespace the TC hooks are in: TC events are attributed to it.
    tc_netns: Option<u32>,
    retransmits: FlowCounts,
    /// SYN-ACK retransmits per (listener, client).
    synacks: FlowCounts,
    tls: Reassembler,
    /// skb drop reason names of this kernel, by value.
    drop_reasons: HashMap<u32, String>,
    /// `tcp_send_reset` reason names of this kernel, by value.
    reset_reasons: HashMap<u32, String>,
    /// Where each unfinished hello's first segment was seen, to report it
    /// if its continuation never comes.
    starts: HashMap<FlowId, HelloSeen>,
    /// Pod and container of sockets: the runtime's sandboxes, cgroups.
    identities: crate::state::cri::identity::Identities,
}

/// Unfinished hellos whose first hook is remembered at most.
const MAX_STARTS: usize = 4096;

/// The hook a hello's first segment was seen on.
#[derive(Clone, Debug)]
struct HelloSeen {
    iface: String,
    src_mac: String,
    dst_mac: String,
    direction: String,
}

pub fn socket_addr(family: u8, addr: &[u8; 16], port: u16) -> SocketAddr {
    SocketAddr::new(ip_addr(family, addr), port)
}

/// A kernel address. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what
/// the socket tracepoints say for an IPv4 peer of a server bound to `::`)
/// is the IPv4 address it maps: the packets are IPv4, and so are the
/// routes, neighbours and conntrack entries it is looked up in.
pub fn ip_addr(family: u8, addr: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr)).to_canonical()
    }
}

/// `egress` and `ingress` for tc on a device; `socket_egress` (sent by a
/// local socket) and `socket_ingress` (delivered to one) at the root
/// cgroup's socket hooks, which see no link layer.
pub fn direction_name(d: u8) -> String {
    match d {
        direction::EGRESS => "egress",
        direction::SOCKET_EGRESS => "socket_egress",
        direction::SOCKET_INGRESS => "socket_ingress",
        _ => "ingress",
    }
    .to_string()
}

/// Whether a record came from a socket hook.
pub fn at_socket(d: u8) -> bool {
    d == direction::SOCKET_EGRESS || d == direction::SOCKET_INGRESS
}

/// A TLS record's (source, destination) MACs; empty at a socket hook,
/// which is above the link layer.
pub fn record_macs(r: &TlsRecord) -> (String, String) {
    if at_socket(r.direction) {
        (String::new(), String::new())
    } else {
        (event::format_mac(&r.src_mac), event::format_mac(&r.dst_mac))
    }
}

/// NUL-padded kernel string to `String`.
fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn mac_or_none(mac: &[u8], len: u8) -> Option<String> {
    let len = usize::from(len).min(mac.len());
    if len == 0 || mac[..len].iter().all(|&b| b == 0) {
        return None;
    }
    Some(event::format_mac(&mac[..len]))
}

impl Enricher {
    pub fn new(clock: Clock, tc_netns: Option<u32>) -> Self {
        Self {
            clock,
            tc_netns,
            retransmits: FlowCounts::new(100_000),
            synacks: FlowCounts::new(100_000),
            tls: Reassembler::default(),
            drop_reasons: HashMap::new(),
            reset_reasons: HashMap::new(),
            starts: HashMap::new(),
            identities: Default::default(),
        }
    }

    /// ClientHellos whose continuation did not come within `after_ns` of
    /// their first segment, as events without SNI.
    pub fn partial_hellos(&mut self, now_ns: u64, after_ns: u64) -> Vec<Event> {
        let hellos = self.tls.partial_hellos(now_ns, after_ns);
        let mut out = Vec::with_capacity(hellos.len());
        for (flow, born_ns, h) in hellos {
            let Some(seen) = self.starts.remove(&flow) else {
                continue;
            };
            if let Handshake::ClientHello {
                record_version,
                version,
                sni,
                segments,
            } = h
            {
                out.push(Event {
                    time: self.clock.wall(born_ns),
                    netns: self.tc_netns,
                    body: EventBody::TlsClientHello(TlsClientHello {
                        src: flow.src,
                        dst: flow.dst,
                        iface: seen.iface,
                        src_mac: seen.src_mac,
                        dst_mac: seen.dst_mac,
                        sni,
                        record_version: event::format_version(record_version),
                        handshake_version: event::format_version(version),
                        segments,
                        direction: seen.direction,
                        partial: true,
                    }),
                });
            }
        }
        out
    }

    /// Names pods with the container runtime's help (see [`crate::state::cri`]).
    pub fn with_identities(mut self, identities: crate::state::cri::identity::Identities) -> Self {
        self.identities = identities;
        self
    }

    /// A diagnosis the correlator made without a socket's identity: the
    /// client's pod by its IP, where the runtime knows it.
    pub fn name_pod(&mut self, d: &mut event::Diagnosis) {
        if d.pod.is_none() {
            d.pod = self.identities.of_ip(d.flow.src.ip());
        }
    }

    /// Names for `drop` events' reasons (see `tracefs::drop_reasons`).
    pub fn with_drop_reasons(mut self, names: HashMap<u32, String>) -> Self {
        self.drop_reasons = names;
        self
    }

    /// Names for `reset_sent` events' reasons (see `tracefs::reset_reasons`).
    pub fn with_reset_reasons(mut self, names: HashMap<u32, String>) -> Self {
        self.reset_reasons = names;
        self
    }

    /// Wall-clock time of a kernel timestamp.
    pub fn wall(&self, mono_ns: u64) -> DateTime<Utc> {
        self.clock.wall(mono_ns)
    }

    pub fn tls_counters(&self) -> crate::pipeline::tls::TlsCounters {
        self.tls.counters()
    }

    pub fn flows_evicted(&self) -> u64 {
        self.retransmits.evicted
    }

    /// Drops TLS reassembly state older than the reassembler's limit.
    pub fn expire(&mut self, now_mono_ns: u64) {
        self.tls.expire(now_mono_ns);
    }

    /// The event a record stands for; `None` while a TLS hello is still
    /// being reassembled, or for handshake bytes that are not a hello.
    pub fn event(&mut self, record: &Record, ifaces: &impl IfaceNames) -> Option<Event> {
        let ts = record.header().ts_ns;
        let (body, netns) = match record {
            Record::Retransmit(r) => (self.retransmit(r), (r.netns != 0).then_some(r.netns)),
            Record::Reset(r) => (
                EventBody::Reset(event::Reset {
                    src: socket_addr(r.family, &r.saddr, r.sport),
                    dst: socket_addr(r.family, &r.daddr, r.dport),
                }),
                None,
            ),
            Record::SynackRetransmit(r) => {
                let (src, dst) = (
                    socket_addr(r.family, &r.saddr, r.sport),
                    socket_addr(r.family, &r.daddr, r.dport),
                );
                (
                    EventBody::SynackRetransmit(event::SynackRetransmit {
                        src,
                        dst,
                        count: self.synacks.bump((src, dst)),
                    }),
                    (r.netns != 0).then_some(r.netns),
                )
            }
            Record::Neighbour(r) => (neighbour(r), None),
            Record::Arp(r) => (arp(r, ifaces), self.tc_netns),
            Record::Tls(r) => {
                let netns = if r.netns != 0 {
                    Some(r.netns)
                } else {
                    self.tc_netns
                };
                (self.tls(r, ifaces)?, netns)
            }
            Record::Drop(r) => (self.drop(r), (r.key.netns != 0).then_some(r.key.netns)),
            Record::IcmpSent(r) => (icmp_sent(r), (r.key.netns != 0).then_some(r.key.netns)),
            Record::ResetSent(r) => (
                self.reset_sent(r),
                (r.key.netns != 0).then_some(r.key.netns),
            ),
            // Packet copies are not events; the pipeline hands them out.
            Record::Packet(_) => return None,
        };
        Some(Event {
            body,
            time: self.clock.wall(ts),
            netns,
        })
    }

    fn drop(&mut self, r: &probe_common::DropRecord) -> EventBody {
        let (src, dst) = flow_addrs(&r.key.flow);
        let pod = self
            .identities
            .of_socket(None, (r.key.netns != 0).then_some(r.key.netns))
            .map(|id| Box::new(id.pod));
        EventBody::Drop(event::Drop {
            src,
            dst,
            reason: reason_name(&self.drop_reasons, r.key.reason),
            count: r.count,
            location: format!("0x{:x}", r.location),
            pod,
        })
    }

    fn reset_sent(&self, r: &probe_common::ResetRecord) -> EventBody {
        let (src, dst) = flow_addrs(&r.key.flow);
        EventBody::ResetSent(event::ResetSent {
            src,
            dst,
            state: (r.key.state != 0).then(|| names::tcp_state(r.key.state).to_string()),
            reason: reason_name(&self.reset_reasons, r.key.reason),
            count: r.count,
        })
    }

    fn retransmit(&mut self, r: &TcpRecord) -> EventBody {
        let src = socket_addr(r.family, &r.saddr, r.sport);
        let dst = socket_addr(r.family, &r.daddr, r.dport);
        let has_seq = r.has_seq != 0;
        let id = self.identities.of_socket(
            (r.pid != 0).then_some(r.pid),
            (r.netns != 0).then_some(r.netns),
        );
        EventBody::Retransmit(Retransmit {
            src,
            dst,
            state: names::tcp_state(r.state).to_string(),
            count: self.retransmits.bump((src, dst)),
            snd_una: has_seq.then_some(r.snd_una),
            snd_nxt: has_seq.then_some(r.snd_nxt),
            not_sent: (r.not_sent != 0).then(|| names::errno(r.not_sent).to_string()),
            process: (r.pid != 0).then(|| event::Process {
                pid: r.pid,
                comm: c_str(&r.comm),
            }),
            pod: id.as_ref().map(|i| Box::new(i.pod.clone())),
            container: id.and_then(|i| i.container),
        })
    }

    /// The device a TLS record's packet was on: by name in this namespace;
    /// in a pod's (a socket hook's record), `ifN@netns:INODE`.
    pub fn iface_of(&self, r: &TlsRecord, ifaces: &impl IfaceNames) -> String {
        if r.netns != 0 && Some(r.netns) != self.tc_netns {
            return format!("if{}@netns:{}", r.ifindex, r.netns);
        }
        ifaces.name(r.ifindex)
    }

    fn tls(&mut self, r: &TlsRecord, ifaces: &impl IfaceNames) -> Option<EventBody> {
        let src = socket_addr(r.family, &r.saddr, r.sport);
        let dst = socket_addr(r.family, &r.daddr, r.dport);
        let iface = self.iface_of(r, ifaces);
        if r.part == tls_part::FLIGHT {
            let captured = usize::from(r.captured).min(r.payload.len());
            return Some(EventBody::TlsClientFlight(TlsClientFlight {
                src,
                dst,
                iface,
                direction: direction_name(r.direction),
                record: event::tls_content_type(r.payload[..captured].first().copied()),
            }));
        }
        let captured = usize::from(r.captured).min(r.payload.len());
        let segment = Segment {
            flow: FlowId { src, dst },
            seq: r.seq,
            start: r.part == tls_part::START,
            payload: &r.payload[..captured],
            payload_len: r.payload_len,
            chunk: r.chunk,
        };
        let (src_mac, dst_mac) = record_macs(r);
        let direction = direction_name(r.direction);
        let flow = FlowId { src, dst };
        if r.part == tls_part::START && r.chunk == 0 {
            if self.starts.len() >= MAX_STARTS {
                self.starts.clear();
            }
            self.starts.insert(
                flow,
                HelloSeen {
                    iface: iface.clone(),
                    src_mac: src_mac.clone(),
                    dst_mac: dst_mac.clone(),
                    direction: direction.clone(),
                },
            );
        }
        let done = self.tls.push(segment, r.header.ts_ns);
        if done.is_some() {
            self.starts.remove(&flow);
        }
        Some(match done? {
            Handshake::ClientHello {
                record_version,
                version,
                sni,
                segments,
            } => EventBody::TlsClientHello(TlsClientHello {
                src,
                dst,
                iface,
                src_mac,
                dst_mac,
                sni,
                record_version: event::format_version(record_version),
                handshake_version: event::format_version(version),
                segments,
                direction,
                partial: false,
            }),
            Handshake::ServerHello {
                record_version,
                version,
                selected_version,
            } => EventBody::TlsServerHello(TlsServerHello {
                src,
                dst,
                iface,
                src_mac,
                dst_mac,
                record_version: event::format_version(record_version),
                handshake_version: event::format_version(version),
                selected_version: selected_version.map(event::format_version),
                direction,
            }),
        })
    }
}

/// A kernel flow key's two ends.
fn flow_addrs(f: &probe_common::FlowKey) -> (SocketAddr, SocketAddr) {
    (
        socket_addr(f.family, &f.saddr, f.sport),
        socket_addr(f.family, &f.daddr, f.dport),
    )
}

/// A kernel enum value by the name tracefs prints, or `REASON_N`.
fn reason_name(names: &HashMap<u32, String>, value: u32) -> String {
    names
        .get(&value)
        .cloned()
        .unwrap_or_else(|| format!("REASON_{value}"))
}

fn icmp_sent(r: &probe_common::IcmpRecord) -> EventBody {
    let (src, dst) = flow_addrs(&r.key.flow);
    EventBody::IcmpSent(event::IcmpSent {
        src,
        dst,
        icmp_type: r.key.icmp_type,
        code: r.key.code,
        message: event::unreach_name(r.key.code),
        count: r.count,
    })
}

fn neighbour(r: &NeighRecord) -> EventBody {
    EventBody::Neighbour(Neighbour {
        ip: ip_addr(r.family, &r.ip),
        dev: c_str(&r.dev),
        old_mac: mac_or_none(&r.old_mac, r.lladdr_len),
        new_mac: mac_or_none(&r.new_mac, r.lladdr_len),
        old_state: names::nud_state(r.old_state),
        new_state: names::nud_state(r.new_state),
        update_flags: names::update_flags(r.update_flags),
        pid: r.pid,
    })
}

fn arp(r: &ArpRecord, ifaces: &impl IfaceNames) -> EventBody {
    let op = match (r.op, r.flags) {
        (arp_op::NEIGHBOUR_ADVERT, _) => "neighbour_advert",
        // Sender IP == target IP: an announcement, whether sent as request or reply.
        (_, 1) => "gratuitous",
        (arp_op::REPLY, _) => "reply",
        _ => "request",
    };
    EventBody::Arp(Arp {
        iface: ifaces.name(r.ifindex),
        op: op.to_string(),
        sender_ip: ip_addr(r.family, &r.sender_ip),
        sender_mac: event::format_mac(&r.sender_mac),
        target_ip: ip_addr(r.family, &r.target_ip),
        eth_src: event::format_mac(&r.eth_src),
        eth_dst: event::format_mac(&r.eth_dst),
        direction: direction_name(r.direction),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&[10, 250, 13, 10]);
        assert_eq!(
            socket_addr(probe_common::AF_INET6, &b, 6443),
            "10.250.13.10:6443".parse::<SocketAddr>().unwrap()
        );
        let v6 = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            ip_addr(probe_common::AF_INET6, &v6),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn socket_hook_directions_are_named_apart_from_tc() {
        assert_eq!(direction_name(direction::EGRESS), "egress");
        assert_eq!(direction_name(direction::INGRESS), "ingress");
        assert_eq!(direction_name(direction::SOCKET_EGRESS), "socket_egress");
        assert_eq!(direction_name(direction::SOCKET_INGRESS), "socket_ingress");
        assert!(at_socket(direction::SOCKET_INGRESS) && !at_socket(direction::EGRESS));
    }
}

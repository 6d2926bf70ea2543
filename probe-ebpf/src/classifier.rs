//! The classifiers: dispatch by protocol. They run on every packet of every
//! attached interface (tc on the node's uplinks) and of every local socket
//! (`cgroup_skb` on the root cgroup: the node's and its pods'), so the
//! common case (TCP on a port nobody watches) reads two or three headers in
//! place and one bitmap word, and calls no helper. Watched segments check
//! the first payload byte and a hash bucket before anything costlier.

use aya_ebpf::{maps::ring_buf::RingBufEntry, programs::TcContext};
use probe_common::{AF_INET, AF_INET6, ArpRecord, arp_op, kind};

use crate::{
    capture, emit,
    maps::watched,
    packet::{
        self, ETH_LEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Ethernet, IPPROTO_ICMPV6, IPPROTO_TCP, Pkt,
    },
    tls,
};

const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
const NDP_OPT_TARGET_LLADDR: u8 = 2;

/// TCX_NEXT (== TC_ACT_UNSPEC): let the next program and the stack decide.
pub const TCX_NEXT: i32 = -1;

/// Always returns TCX_NEXT. Functions LLVM may outline return the verdict
/// too: a subprogram whose result is dropped can leave a stack pointer in
/// r0, which the verifier rejects.
#[inline(always)]
pub fn handle(ctx: &TcContext, direction: u8) -> i32 {
    let Some(ethertype) = packet::ethertype(ctx) else {
        return TCX_NEXT;
    };
    let ip = match ethertype {
        ETH_P_IP => packet::ipv4(ctx),
        ETH_P_IPV6 => packet::ipv6(ctx),
        ETH_P_ARP => return arp(ctx, direction),
        _ => None,
    };
    let Some(ip) = ip else {
        return TCX_NEXT;
    };
    match ip.proto {
        IPPROTO_TCP => tcp(ctx, direction, &ip),
        IPPROTO_ICMPV6 if ip.family == AF_INET6 => neighbour_advert(ctx, &ip, direction),
        _ => TCX_NEXT,
    }
}

/// Packets that start at the network header: a local socket's (whose
/// neighbour traffic is not its own) and tc's on devices without a link
/// layer. Returns TCX_NEXT too; the socket programs allow the packet
/// whatever this says.
#[inline(always)]
pub fn handle_l3<C: Pkt>(ctx: &C, direction: u8) -> i32 {
    let ip = match packet::ip_version(ctx) {
        Some(4) => packet::ipv4(ctx),
        Some(6) => packet::ipv6(ctx),
        _ => None,
    };
    match ip {
        Some(ip) if ip.proto == IPPROTO_TCP => tcp(ctx, direction, &ip),
        _ => TCX_NEXT,
    }
}

/// A TCP segment: only watched ports go further.
#[inline(always)]
fn tcp<C: Pkt>(ctx: &C, direction: u8, ip: &packet::Ip) -> i32 {
    let Some((sport, dport)) = packet::tcp_ports(ctx, ip) else {
        return TCX_NEXT;
    };
    if !watched(dport) && !watched(sport) {
        return TCX_NEXT;
    }
    watched_segment(ctx, direction, ip, sport, dport)
}

/// A segment on a watched port: handshake records are copied to userspace;
/// in capture mode the frame too (whole for handshakes, else up to the TCP
/// header).
#[inline(always)]
fn watched_segment<C: Pkt>(ctx: &C, direction: u8, ip: &packet::Ip, sport: u16, dport: u16) -> i32 {
    let Some(tcp) = packet::tcp(ctx, ip, sport, dport) else {
        return TCX_NEXT;
    };
    let handshake = tcp.payload_len > 0 && tls::handle(ctx, direction, ip, &tcp);
    let keep = if handshake {
        ctx.len() as usize
    } else {
        tcp.payload_off
    };
    ctx.capture(direction, keep);
    TCX_NEXT
}

/// Fills the parts of an ARP record every sighting has; the record lives
/// in the ring buffer, not on the (512-byte) eBPF stack.
#[inline(always)]
fn start_arp(ctx: &TcContext, direction: u8, family: u8) -> Option<RingBufEntry<ArpRecord>> {
    let eth: Ethernet = packet::macs(ctx)?;
    let mut entry = emit::reserve::<ArpRecord>(kind::ARP)?;
    let rec = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot; every field is written
    // here or by the caller before submit.
    unsafe {
        core::ptr::write_bytes(rec, 0, 1);
        (*rec).header = emit::header(kind::ARP, size_of::<ArpRecord>());
        (*rec).ifindex = (*ctx.skb.skb).ifindex;
        (*rec).direction = direction;
        (*rec).family = family;
        (*rec).eth_src = eth.src;
        (*rec).eth_dst = eth.dst;
    }
    Some(entry)
}

/// ARP for IPv4 over Ethernet: requests, replies and gratuitous announcements.
#[inline(never)]
fn arp(ctx: &TcContext, direction: u8) -> i32 {
    let Some(b) = packet::load::<[u8; 28], _>(ctx, ETH_LEN) else {
        return TCX_NEXT;
    };
    let op = packet::be16(&b, 6);
    let is_ipv4_ether =
        packet::be16(&b, 0) == 1 && packet::be16(&b, 2) == 0x0800 && b[4] == 6 && b[5] == 4;
    if !is_ipv4_ether || (op != arp_op::REQUEST as u16 && op != arp_op::REPLY as u16) {
        return TCX_NEXT;
    }
    let Some(mut entry) = start_arp(ctx, direction, AF_INET) else {
        return TCX_NEXT;
    };
    // SAFETY: start_arp initialised the whole slot, which we own.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    rec.op = op as u8;
    rec.sender_mac.copy_from_slice(&b[8..14]);
    rec.sender_ip[..4].copy_from_slice(&b[14..18]);
    rec.target_ip[..4].copy_from_slice(&b[24..28]);
    rec.flags = u8::from(b[14..18] == b[24..28]);
    emit::submit(entry);
    capture::frame(ctx, direction, ETH_LEN + 28);
    TCX_NEXT
}

/// ICMPv6 neighbour advertisements: who says it owns an IPv6 address.
#[inline(never)]
fn neighbour_advert(ctx: &TcContext, ip: &packet::Ip, direction: u8) -> i32 {
    // type, code, csum, flags(4), target(16): 24 bytes, then maybe an option.
    let Some(b) = packet::load::<[u8; 24], _>(ctx, ip.l4_off) else {
        return TCX_NEXT;
    };
    if b[0] != ICMPV6_NEIGHBOUR_ADVERT {
        return TCX_NEXT;
    }
    let opt = packet::load::<[u8; 8], _>(ctx, ip.l4_off + 24);
    let Some((_, daddr)) = packet::addrs(ctx, AF_INET6) else {
        return TCX_NEXT;
    };
    let Some(mut entry) = start_arp(ctx, direction, AF_INET6) else {
        return TCX_NEXT;
    };
    // SAFETY: start_arp initialised the whole slot, which we own.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    rec.op = arp_op::NEIGHBOUR_ADVERT;
    rec.flags = b[4] & 0xe0;
    rec.sender_ip.copy_from_slice(&b[8..24]);
    rec.target_ip = daddr;
    rec.sender_mac = rec.eth_src;
    if let Some(opt) = opt
        && opt[0] == NDP_OPT_TARGET_LLADDR
        && opt[1] == 1
    {
        rec.sender_mac.copy_from_slice(&opt[2..8]);
    }
    emit::submit(entry);
    capture::frame(ctx, direction, ip.l4_off + 32);
    TCX_NEXT
}

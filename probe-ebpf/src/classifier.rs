//! The TC classifier: dispatch by protocol. Cheap checks first, so packets
//! that are neither ARP, NDP nor TCP on a watched port cost a few loads.

use aya_ebpf::programs::TcContext;
use probe_common::{AF_INET, AF_INET6, ArpRecord, arp_op, kind};

use crate::{
    emit,
    maps::PORTS,
    packet::{self, ETH_LEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Ethernet, IPPROTO_ICMPV6, IPPROTO_TCP, Ip},
    tls,
};

const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
const NDP_OPT_TARGET_LLADDR: u8 = 2;

pub fn handle(ctx: &TcContext, direction: u8) -> Option<()> {
    let eth = packet::ethernet(ctx)?;
    let ip = match eth.proto {
        ETH_P_ARP => return arp(ctx, &eth, direction),
        ETH_P_IP => packet::ipv4(ctx)?,
        ETH_P_IPV6 => packet::ipv6(ctx)?,
        _ => return None,
    };
    match ip.proto {
        IPPROTO_TCP => {
            let tcp = packet::tcp(ctx, &ip)?;
            if tcp.payload_len == 0 || !watched(tcp.sport, tcp.dport) {
                return None;
            }
            tls::handle(ctx, direction, &eth, &ip, &tcp)
        }
        IPPROTO_ICMPV6 => neighbour_advert(ctx, &eth, &ip, direction),
        _ => None,
    }
}

#[inline(always)]
fn watched(sport: u16, dport: u16) -> bool {
    // SAFETY: read-only lookups of a plain map.
    unsafe { PORTS.get(&dport).is_some() || PORTS.get(&sport).is_some() }
}

#[inline(always)]
fn blank_arp(ctx: &TcContext, eth: &Ethernet, direction: u8, family: u8) -> ArpRecord {
    ArpRecord {
        header: emit::header(kind::ARP, size_of::<ArpRecord>()),
        // SAFETY: reading the ifindex of the skb we were given.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        direction,
        op: 0,
        family,
        flags: 0,
        sender_ip: [0; 16],
        target_ip: [0; 16],
        sender_mac: [0; 6],
        eth_src: eth.src,
        eth_dst: eth.dst,
        _pad: [0; 6],
    }
}

/// ARP for IPv4 over Ethernet: requests, replies and gratuitous announcements.
fn arp(ctx: &TcContext, eth: &Ethernet, direction: u8) -> Option<()> {
    let b: [u8; 28] = packet::load(ctx, ETH_LEN)?;
    let op = packet::be16(&b, 6);
    let is_ipv4_ether = packet::be16(&b, 0) == 1 && packet::be16(&b, 2) == 0x0800 && b[4] == 6 && b[5] == 4;
    if !is_ipv4_ether || (op != arp_op::REQUEST as u16 && op != arp_op::REPLY as u16) {
        return None;
    }
    let mut rec = blank_arp(ctx, eth, direction, AF_INET);
    rec.op = op as u8;
    rec.sender_mac.copy_from_slice(&b[8..14]);
    rec.sender_ip[..4].copy_from_slice(&b[14..18]);
    rec.target_ip[..4].copy_from_slice(&b[24..28]);
    rec.flags = u8::from(b[14..18] == b[24..28]);
    let mut entry = emit::reserve::<ArpRecord>(kind::ARP)?;
    entry.write(rec);
    entry.submit(0);
    Some(())
}

/// ICMPv6 neighbour advertisements: who says it owns an IPv6 address.
fn neighbour_advert(ctx: &TcContext, eth: &Ethernet, ip: &Ip, direction: u8) -> Option<()> {
    // type, code, csum, flags(4), target(16): 24 bytes, then maybe an option.
    let b: [u8; 24] = packet::load(ctx, ip.l4_off)?;
    if b[0] != ICMPV6_NEIGHBOUR_ADVERT {
        return None;
    }
    let mut rec = blank_arp(ctx, eth, direction, AF_INET6);
    rec.op = arp_op::NEIGHBOUR_ADVERT;
    rec.flags = b[4] & 0xe0;
    rec.sender_ip.copy_from_slice(&b[8..24]);
    rec.target_ip = ip.daddr;
    rec.sender_mac = eth.src;
    if let Some(opt) = packet::load::<[u8; 8]>(ctx, ip.l4_off + 24)
        && opt[0] == NDP_OPT_TARGET_LLADDR
        && opt[1] == 1
    {
        rec.sender_mac.copy_from_slice(&opt[2..8]);
    }
    let mut entry = emit::reserve::<ArpRecord>(kind::ARP)?;
    entry.write(rec);
    entry.submit(0);
    Some(())
}

//! Header parsing over `bpf_skb_load_bytes` (works on non-linear skbs too,
//! where direct packet access would see no payload).

use aya_ebpf::programs::TcContext;
use probe_common::{AF_INET, AF_INET6};

pub const ETH_LEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPV6_LEN: usize = 40;

#[inline(always)]
pub fn load<T>(ctx: &TcContext, off: usize) -> Option<T> {
    ctx.load::<T>(off).ok()
}

#[inline(always)]
pub fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
pub fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[derive(Clone, Copy)]
pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[inline(always)]
pub fn ethernet(ctx: &TcContext) -> Option<Ethernet> {
    let b: [u8; ETH_LEN] = load(ctx, 0)?;
    Some(Ethernet {
        dst: [b[0], b[1], b[2], b[3], b[4], b[5]],
        src: [b[6], b[7], b[8], b[9], b[10], b[11]],
        proto: be16(&b, 12),
    })
}

/// The network header: addresses, upper protocol, where it starts and how
/// many bytes of it the IP header says there are.
pub struct Ip {
    pub family: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub proto: u8,
    pub l4_off: usize,
    pub l4_len: usize,
}

#[inline(always)]
pub fn ipv4(ctx: &TcContext) -> Option<Ip> {
    let b: [u8; 20] = load(ctx, ETH_LEN)?;
    let ihl = ((b[0] & 0x0f) as usize) * 4;
    let total = be16(&b, 2) as usize;
    // Fragments after the first carry no TCP header.
    if ihl < 20 || total < ihl || be16(&b, 6) & 0x1fff != 0 {
        return None;
    }
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr[..4].copy_from_slice(&b[12..16]);
    daddr[..4].copy_from_slice(&b[16..20]);
    Some(Ip {
        family: AF_INET,
        saddr,
        daddr,
        proto: b[9],
        l4_off: ETH_LEN + ihl,
        l4_len: total - ihl,
    })
}

/// IPv6 without extension headers (TCP and NDP do not use them in practice).
#[inline(always)]
pub fn ipv6(ctx: &TcContext) -> Option<Ip> {
    let b: [u8; IPV6_LEN] = load(ctx, ETH_LEN)?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&b[8..24]);
    daddr.copy_from_slice(&b[24..40]);
    Some(Ip {
        family: AF_INET6,
        saddr,
        daddr,
        proto: b[6],
        l4_off: ETH_LEN + IPV6_LEN,
        l4_len: be16(&b, 4) as usize,
    })
}

pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub payload_off: usize,
    pub payload_len: usize,
}

#[inline(always)]
pub fn tcp(ctx: &TcContext, ip: &Ip) -> Option<Tcp> {
    let b: [u8; 20] = load(ctx, ip.l4_off)?;
    let doff = ((b[12] >> 4) as usize) * 4;
    if doff < 20 || ip.l4_len < doff {
        return None;
    }
    let payload_off = ip.l4_off + doff;
    // GSO super-packets can carry more than the IP header says; trust the
    // smaller of the two so loads never run past the skb.
    let in_skb = (ctx.len() as usize).saturating_sub(payload_off);
    let payload_len = core::cmp::min(ip.l4_len - doff, in_skb);
    Some(Tcp {
        sport: be16(&b, 0),
        dport: be16(&b, 2),
        seq: be32(&b, 4),
        payload_off,
        payload_len,
    })
}

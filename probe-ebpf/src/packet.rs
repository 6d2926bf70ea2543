//! Header parsing by direct packet access: the classifiers run on every
//! packet of every attached interface and local socket, so headers are read
//! straight from the skb's linear data (a few instructions) instead of
//! copied out by `bpf_skb_load_bytes` (a helper call each). Headers outside
//! the linear data are pulled in first where the hook may (tc; rare: drivers
//! and veth keep them linear). Payload may sit in page fragments; it is read
//! with the helper (see [`load`]).
//!
//! The same parsers serve two hooks, told apart by [`Pkt`]: tc on an
//! Ethernet device (the network header at 14) and `cgroup_skb` at a socket
//! (at 0, no pull).

use aya_ebpf::{
    bindings::__sk_buff,
    programs::{SkBuffContext, TcContext},
};
use probe_common::{AF_INET, AF_INET6};

/// A hook's view of an skb: where its network header starts, and whether
/// the hook may pull non-linear headers in (`bpf_skb_pull_data` is refused
/// outside tc).
pub trait Pkt {
    /// Offset of the network header.
    const L3: usize;
    fn skb(&self) -> *mut __sk_buff;
    /// Makes the first `len` bytes linear; false where the hook cannot.
    fn pull(&self, len: u32) -> bool;
    /// Copies the frame for a capture bundle (tc on Ethernet only: a
    /// bundle's pcapng has Ethernet framing).
    #[inline(always)]
    fn capture(&self, _direction: u8, _keep: usize) {}
    /// The namespace of the packet's socket, at a socket hook; 0 at tc,
    /// whose events belong to the namespace the hook is in.
    #[inline(always)]
    fn netns(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: a field of the program's context.
        unsafe { (*self.skb()).data as usize }
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { (*self.skb()).data_end as usize }
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.skb()).len }
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.skb()).ifindex }
    }
}

impl Pkt for TcContext {
    const L3: usize = ETH_LEN;
    #[inline(always)]
    fn skb(&self) -> *mut __sk_buff {
        self.skb.skb
    }
    #[inline(always)]
    fn pull(&self, len: u32) -> bool {
        self.pull_data(len).is_ok()
    }
    #[inline(always)]
    fn capture(&self, direction: u8, keep: usize) {
        crate::capture::frame(self, direction, keep);
    }
}

impl Pkt for SkBuffContext {
    const L3: usize = 0;
    #[inline(always)]
    fn skb(&self) -> *mut __sk_buff {
        self.skb.skb
    }
    #[inline(always)]
    fn pull(&self, _len: u32) -> bool {
        false
    }
    #[inline(always)]
    fn netns(&self) -> u32 {
        crate::skb::netns(crate::skb::ctx_addr(self.skb() as *const _))
    }
}

pub const ETH_LEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;

/// A copy of `T` at `off`, through `bpf_skb_load_bytes` (linear or not).
#[inline(always)]
pub fn load<T, C: Pkt>(ctx: &C, off: usize) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `v`,
    // which is read only when it succeeded.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb() as *const _,
            off as u32,
            v.as_mut_ptr().cast(),
            size_of::<T>() as u32,
        )
    };
    // SAFETY: fully written on success.
    (rc == 0).then(|| unsafe { v.assume_init() })
}

#[inline(always)]
pub fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Address of packet byte `off` when `N` bytes from there are in the linear
/// data, pulling them in if the packet is long enough. The check is on
/// `off` plus the constant `N`: the verifier gives a range only to the
/// pointer it saw compared. Every earlier packet pointer is stale after a
/// pull, so callers derive theirs from this one.
#[inline(always)]
fn at<const N: usize, C: Pkt>(ctx: &C, off: usize) -> Option<usize> {
    let p = ctx.data() + off;
    if p + N <= ctx.data_end() {
        return Some(p);
    }
    if (ctx.len() as usize) < off + N || !ctx.pull((off + N) as u32) {
        return None;
    }
    let p = ctx.data() + off;
    (p + N <= ctx.data_end()).then_some(p)
}

/// # Safety
/// `[p, p + 2)` must be inside bounds the verifier has checked.
#[inline(always)]
unsafe fn rd16(p: usize) -> u16 {
    // SAFETY: per the caller; packet data has no alignment guarantee.
    u16::from_be(unsafe { core::ptr::read_unaligned(p as *const u16) })
}

/// # Safety
/// As for [`rd16`], four bytes.
#[inline(always)]
unsafe fn rd32(p: usize) -> u32 {
    // SAFETY: per the caller.
    unsafe { core::ptr::read_unaligned(p as *const u32) }
}

/// The EtherType.
#[inline(always)]
pub fn ethertype<C: Pkt>(ctx: &C) -> Option<u16> {
    let d = at::<ETH_LEN, C>(ctx, 0)?;
    // SAFETY: ETH_LEN bytes checked.
    Some(unsafe { rd16(d + 12) })
}

/// The IP version nibble of a packet that starts at its network header.
#[inline(always)]
pub fn ip_version<C: Pkt>(ctx: &C) -> Option<u8> {
    // 20 bytes, not 1: LLVM turns a one-byte check into a form the
    // verifier cannot follow, and no IP packet is shorter.
    let p = at::<IPV4_LEN, C>(ctx, C::L3)?;
    // SAFETY: IPV4_LEN bytes checked.
    Some(unsafe { *(p as *const u8) } >> 4)
}

/// What the network header says, as scalars: no addresses are copied on
/// the hot path (see [`addrs`]).
#[derive(Clone, Copy)]
pub struct Ip {
    pub family: u8,
    pub proto: u8,
    pub l4_off: usize,
    pub l4_len: usize,
}

#[inline(always)]
pub fn ipv4<C: Pkt>(ctx: &C) -> Option<Ip> {
    let h = at::<IPV4_LEN, C>(ctx, C::L3)?;
    // SAFETY: IPV4_LEN bytes from h checked.
    let (ver_ihl, total, frag, proto) = unsafe {
        (
            *(h as *const u8),
            rd16(h + 2),
            rd16(h + 6),
            *((h + 9) as *const u8),
        )
    };
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    let total = total as usize;
    // Fragments after the first carry no TCP header.
    if ihl < IPV4_LEN || total < ihl || frag & 0x1fff != 0 {
        return None;
    }
    Some(Ip {
        family: AF_INET,
        proto,
        l4_off: C::L3 + ihl,
        l4_len: total - ihl,
    })
}

/// IPv6 without extension headers (TCP and NDP do not use them in practice).
#[inline(always)]
pub fn ipv6<C: Pkt>(ctx: &C) -> Option<Ip> {
    let h = at::<IPV6_LEN, C>(ctx, C::L3)?;
    // SAFETY: IPV6_LEN bytes from h checked.
    let (payload_len, proto) = unsafe { (rd16(h + 4), *((h + 6) as *const u8)) };
    Some(Ip {
        family: AF_INET6,
        proto,
        l4_off: C::L3 + IPV6_LEN,
        l4_len: payload_len as usize,
    })
}

pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    /// Offset of the byte after the TCP header.
    pub payload_off: usize,
    pub payload_len: usize,
    /// A cheap digest of addresses and ports, for the follow table.
    pub flow_hash: u32,
}

/// Source and destination ports only: all an unwatched packet costs.
#[inline(always)]
pub fn tcp_ports<C: Pkt>(ctx: &C, ip: &Ip) -> Option<(u16, u16)> {
    let t = at::<TCP_LEN, C>(ctx, ip.l4_off)?;
    // SAFETY: TCP_LEN bytes from t checked.
    Some(unsafe { (rd16(t), rd16(t + 2)) })
}

/// The rest of the TCP header, for segments on watched ports.
#[inline(always)]
pub fn tcp<C: Pkt>(ctx: &C, ip: &Ip, sport: u16, dport: u16) -> Option<Tcp> {
    // The verifier knows a range only for pointers with the offset it
    // checked: one check for the (constant) network header, one for TCP.
    let (a, b) = if ip.family == AF_INET {
        let h = at::<IPV4_LEN, C>(ctx, C::L3)?;
        // SAFETY: IPV4_LEN bytes from h checked.
        unsafe { (rd32(h + 12), rd32(h + 16)) }
    } else {
        let h = at::<IPV6_LEN, C>(ctx, C::L3)?;
        // Last words of the IPv6 source and destination.
        // SAFETY: IPV6_LEN bytes from h checked.
        unsafe { (rd32(h + 20), rd32(h + 36)) }
    };
    let t = at::<TCP_LEN, C>(ctx, ip.l4_off)?;
    // SAFETY: TCP_LEN bytes from t checked.
    let (seq, doff) = unsafe {
        (
            u32::from_be(rd32(t + 4)),
            ((*((t + 12) as *const u8) >> 4) as usize) * 4,
        )
    };
    if doff < TCP_LEN || ip.l4_len < doff {
        return None;
    }
    let payload_off = ip.l4_off + doff;
    // GSO super-packets can carry more than the IP header says; trust the
    // smaller of the two so loads never run past the skb.
    let in_skb = (ctx.len() as usize).saturating_sub(payload_off);
    let payload_len = core::cmp::min(ip.l4_len - doff, in_skb);
    let ports = (u32::from(sport) << 16) | u32::from(dport);
    let flow_hash = (a ^ b.rotate_left(16) ^ ports).wrapping_mul(0x9e37_79b1);
    Some(Tcp {
        sport,
        dport,
        seq,
        payload_off,
        payload_len,
        flow_hash,
    })
}

/// The first `N` payload bytes: from the linear data if they are there,
/// else copied (GSO payload usually sits in page fragments; it is not
/// pulled, which would copy it).
#[inline(always)]
pub fn payload_head<const N: usize, C: Pkt>(ctx: &C, off: usize) -> Option<[u8; N]> {
    let p = ctx.data() + off;
    if p + N <= ctx.data_end() {
        // SAFETY: N bytes from p checked.
        return Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) });
    }
    load(ctx, off)
}

/// Addresses of the network header, IPv4 in the first 4 bytes. For
/// records and flow keys only, never on the per-packet path.
#[inline(always)]
pub fn addrs<C: Pkt>(ctx: &C, family: u8) -> Option<([u8; 16], [u8; 16])> {
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        let b: [u8; 8] = load(ctx, C::L3 + 12)?;
        saddr[..4].copy_from_slice(&b[..4]);
        daddr[..4].copy_from_slice(&b[4..]);
    } else {
        let b: [u8; 32] = load(ctx, C::L3 + 8)?;
        saddr.copy_from_slice(&b[..16]);
        daddr.copy_from_slice(&b[16..]);
    }
    Some((saddr, daddr))
}

#[derive(Clone, Copy)]
pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// MAC addresses, for records only; zero where the hook has no
/// link-layer header.
#[inline(always)]
pub fn macs<C: Pkt>(ctx: &C) -> Option<Ethernet> {
    if C::L3 < ETH_LEN {
        return Some(Ethernet {
            dst: [0; 6],
            src: [0; 6],
        });
    }
    let b: [u8; 12] = load(ctx, 0)?;
    Some(Ethernet {
        dst: [b[0], b[1], b[2], b[3], b[4], b[5]],
        src: [b[6], b[7], b[8], b[9], b[10], b[11]],
    })
}

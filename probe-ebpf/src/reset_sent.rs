//! `tcp/tcp_send_reset`: RSTs this node's stack sends (no listener, a
//! closed or aborted socket, an invalid segment), on armed flows or watched
//! ports. Counted per (flow, socket state, reset reason, namespace) and
//! reported at counts 1, 2, 4, ... like drops.
//!
//! Newer kernels' records carry the ends as `sockaddr_in`/`sockaddr_in6`
//! (28 bytes each) and a reset reason; older ones (the `tcp_event_sk_skb`
//! class) ports, family and IPv4/IPv6 addresses of the socket, as the
//! other TCP tracepoints. Either way already in the RST's direction: source
//! is this node's end.

use aya_ebpf::programs::TracePointContext;
use probe_common::{AF_INET, AF_INET6, FlowKey, ResetKey, ResetRecord, kind, tp};

use crate::{
    emit,
    maps::{self, RESET_SENT},
    skb::{netns, of_interest, sock_netns},
    tcp_tracepoint::{self, AddrSlots, field, read},
};

const OLD_ADDRS: AddrSlots = AddrSlots {
    family: tp::SR_FAMILY,
    saddr: tp::SR_SADDR,
    daddr: tp::SR_DADDR,
    saddr_v6: tp::SR_SADDR6,
    daddr_v6: tp::SR_DADDR6,
};

/// One end from a sockaddr read whole (one helper call): (family, port,
/// address).
#[inline(always)]
fn end(ctx: &TracePointContext, off: usize) -> Option<(u8, u16, [u8; 16])> {
    let sa: [u8; 28] = read(ctx, off)?;
    let family = u16::from_ne_bytes([sa[0], sa[1]]) as u8;
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    let mut addr = [0u8; 16];
    match family {
        AF_INET => addr[..4].copy_from_slice(&sa[4..8]),
        // sin6_flowinfo comes first.
        AF_INET6 => addr.copy_from_slice(&sa[8..24]),
        // Neither a full socket nor a packet to take them from.
        _ => return None,
    }
    Some((family, port, addr))
}

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let sk: u64 = field(ctx, tp::SR_SKADDR).unwrap_or(0);
    let (family, sport, saddr, dport, daddr) = match maps::tp_off(tp::SR_SOCKADDR_S) {
        Some(off) => {
            let (family, sport, saddr) = end(ctx, off)?;
            let (_, dport, daddr) = end(ctx, maps::tp_off(tp::SR_SOCKADDR_D)?)?;
            (family, sport, saddr, dport, daddr)
        }
        None => {
            let (family, saddr, daddr) = tcp_tracepoint::addrs(ctx, &OLD_ADDRS, sk)?;
            let sport: u16 = field(ctx, tp::SR_SPORT)?;
            let dport: u16 = field(ctx, tp::SR_DPORT)?;
            (family, sport, saddr, dport, daddr)
        }
    };
    let flow = FlowKey {
        saddr,
        daddr,
        sport,
        dport,
        family,
        _pad: [0; 3],
    };
    if !of_interest(&flow) {
        return None;
    }
    let mut ns = if sk != 0 { sock_netns(sk) } else { 0 };
    if ns == 0 {
        let skb: u64 = field(ctx, tp::SR_SKBADDR).unwrap_or(0);
        if skb != 0 {
            ns = netns(skb);
        }
    }
    let key = ResetKey {
        flow,
        reason: field(ctx, tp::SR_REASON).unwrap_or(0),
        netns: ns,
        state: field::<i32>(ctx, tp::SR_STATE).unwrap_or(0) as u8,
        _pad: [0; 3],
    };
    let count = emit::bump(&RESET_SENT, &key);
    if !count.is_power_of_two() {
        return Some(());
    }
    emit::record(
        kind::RESET_SENT,
        ResetRecord {
            header: emit::header(kind::RESET_SENT, size_of::<ResetRecord>()),
            key,
            count,
        },
    )
}

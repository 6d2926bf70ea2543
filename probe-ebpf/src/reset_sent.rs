//! `tcp/tcp_send_reset`: RSTs this node's stack sends (no listener, a
//! closed or aborted socket, an invalid segment), on armed flows or watched
//! ports. Counted per (flow, socket state, reset reason, namespace) and
//! reported at counts 1, 2, 4, ... like drops.
//!
//! The record's addresses are `sockaddr_in`/`sockaddr_in6` (28 bytes each),
//! already in the RST's direction: source is this node's end.

use aya_ebpf::programs::TracePointContext;
use probe_common::{AF_INET, AF_INET6, FlowKey, ResetKey, ResetRecord, kind};

use crate::{
    emit,
    maps::RESET_SENT,
    skb::{netns, of_interest, sock_netns},
    tcp_tracepoint::read,
};

const OFF_SKBADDR: usize = 8;
const OFF_SKADDR: usize = 16;
const OFF_STATE: usize = 24;
const OFF_REASON: usize = 28;
const OFF_SADDR: usize = 32;
const OFF_DADDR: usize = 60;

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
    let (family, sport, saddr) = end(ctx, OFF_SADDR)?;
    let (_, dport, daddr) = end(ctx, OFF_DADDR)?;
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
    let sk: u64 = read(ctx, OFF_SKADDR).unwrap_or(0);
    let mut ns = if sk != 0 { sock_netns(sk) } else { 0 };
    if ns == 0 {
        let skb: u64 = read(ctx, OFF_SKBADDR).unwrap_or(0);
        if skb != 0 {
            ns = netns(skb);
        }
    }
    let key = ResetKey {
        flow,
        reason: read(ctx, OFF_REASON).unwrap_or(0),
        netns: ns,
        state: read::<i32>(ctx, OFF_STATE).unwrap_or(0) as u8,
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

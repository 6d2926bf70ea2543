//! `icmp/icmp_send`: ICMP destination-unreachable errors this node sends
//! (host / port unreachable, fragmentation needed, administratively
//! prohibited: a `reject` rule) about TCP packets of armed flows or watched
//! ports. The tracepoint fires only for errors that pass the rate limits,
//! i.e. ones really sent. Counted per (flow, type, code, namespace) and
//! reported at counts 1, 2, 4, ... like drops.
//!
//! The tracepoint's own ports are filled only for UDP (`ulen` non-zero:
//! not TCP, the cheap exit), so the TCP ports are read from the offending
//! packet through its skb.

use aya_ebpf::programs::TracePointContext;
use probe_common::{IcmpKey, IcmpRecord, kind, tp};

use crate::{
    emit,
    maps::ICMP_SENT,
    skb::{ETH_P_IP, netns, of_interest, tcp_flow},
    tcp_tracepoint::field,
};

const ICMP_DEST_UNREACH: i32 = 3;

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    // Type first: echo replies and the like end here.
    if field::<i32>(ctx, tp::IC_TYPE)? != ICMP_DEST_UNREACH {
        return None;
    }
    // A UDP datagram's length: set only for UDP.
    if field::<u16>(ctx, tp::IC_ULEN)? != 0 {
        return None;
    }
    let code: i32 = field(ctx, tp::IC_CODE)?;
    let skb: u64 = field(ctx, tp::IC_SKBADDR)?;
    // icmp_send is IPv4's (ICMPv6 has no tracepoint on this kernel).
    let flow = tcp_flow(skb, ETH_P_IP)?;
    if !of_interest(&flow) {
        return None;
    }
    let key = IcmpKey {
        flow,
        netns: netns(skb),
        icmp_type: ICMP_DEST_UNREACH as u8,
        code: code as u8,
        _pad: [0; 2],
    };
    let count = emit::bump(&ICMP_SENT, &key);
    if !count.is_power_of_two() {
        return Some(());
    }
    emit::record(
        kind::ICMP_SENT,
        IcmpRecord {
            header: emit::header(kind::ICMP_SENT, size_of::<IcmpRecord>()),
            key,
            count,
            _pad: 0,
        },
    )
}

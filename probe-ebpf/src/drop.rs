//! `skb/kfree_skb`: drops for a path's reason (userspace sets which) of
//! packets that belong to flows userspace armed (a flow under suspicion,
//! both directions) or to a watched port. Counted in the kernel per
//! (flow, reason, namespace); a record goes out at counts 1, 2, 4, 8, ...
//! so a flood of drops costs a handful of records, never one per packet.
//!
//! The packet's headers are read through the skb (`head` plus the network
//! and transport header offsets, found in BTF by userspace). Only TCP over
//! IPv4 or IPv6 without extension headers is looked at.

use aya_ebpf::programs::TracePointContext;
use probe_common::{DropKey, DropRecord, kind, tp};

use crate::{
    emit,
    maps::{DROPS, kernel_offsets},
    skb::{netns, of_interest, tcp_flow},
    tcp_tracepoint::field,
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let offs = kernel_offsets();
    if offs.skb_head == 0 {
        return None;
    }
    // The reason first: most drops on a node (no socket, TCP's own
    // bookkeeping) are not a path's fault and end here. Kernels before
    // 5.17 give none: 0, and userspace then counts every reason.
    let reason: u32 = field(ctx, tp::KF_REASON).unwrap_or(0);
    if !crate::maps::path_reason(reason) {
        return None;
    }
    let skb: u64 = field(ctx, tp::KF_SKBADDR)?;
    // The tracepoint stores ntohs(skb->protocol): host order already.
    let protocol: u16 = field(ctx, tp::KF_PROTOCOL)?;
    let flow = tcp_flow(skb, protocol)?;
    // Armed flows, and any flow on a watched port: a server on this node
    // whose accept queue overflows is seen without a client here.
    if !of_interest(&flow) {
        return None;
    }

    let key = DropKey {
        flow,
        reason,
        netns: netns(skb),
    };
    let count = emit::bump(&DROPS, &key);
    if !count.is_power_of_two() {
        return Some(());
    }
    // Everything fallible comes before the reservation: a reserved entry
    // must be submitted on every path.
    let location: u64 = field(ctx, tp::KF_LOCATION).unwrap_or(0);
    emit::record(
        kind::DROP,
        DropRecord {
            header: emit::header(kind::DROP, size_of::<DropRecord>()),
            location,
            key,
            count,
            _pad: 0,
        },
    )
}

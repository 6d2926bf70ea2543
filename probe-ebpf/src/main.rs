//! netprobe's kernel side. Every program is passive: it copies what it saw
//! into the ring buffer and never changes a packet's fate. The one exception
//! is netprobe's own owner-probe frames (marked, see `pin.rs`), whose
//! destination MAC the egress classifier sets.
#![no_std]
#![no_main]

mod capture;
mod classifier;
mod drop;
mod emit;
mod icmp_sent;
mod maps;
mod neigh;
mod packet;
mod pin;
mod reset;
mod reset_sent;
mod retransmit;
mod skb;
mod sockstate;
mod synack;
mod tcp_tracepoint;
mod tls;

use aya_ebpf::{
    macros::{cgroup_skb, classifier, raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, SkBuffContext, TcContext, TracePointContext},
};
use probe_common::direction;

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit(ctx: RawTracePointContext) -> u32 {
    retransmit::handle_raw(&ctx);
    0
}

/// The same from the formatted tracepoint, where the socket's layout is
/// not known (see `KernelOffsets::sock_v6_daddr`).
#[tracepoint]
pub fn tcp_retransmit_tp(ctx: TracePointContext) -> u32 {
    retransmit::handle(&ctx);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    reset::handle(&ctx);
    0
}

#[tracepoint]
pub fn neigh_update(ctx: TracePointContext) -> u32 {
    neigh::handle(&ctx);
    0
}

#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    sockstate::handle(&ctx);
    0
}

#[tracepoint]
pub fn skb_kfree(ctx: TracePointContext) -> u32 {
    drop::handle(&ctx);
    0
}

#[tracepoint]
pub fn icmp_send(ctx: TracePointContext) -> u32 {
    icmp_sent::handle(&ctx);
    0
}

#[tracepoint]
pub fn synack_retrans(ctx: TracePointContext) -> u32 {
    synack::handle(&ctx);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    reset_sent::handle(&ctx);
    0
}

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    classifier::handle(&ctx, direction::INGRESS)
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    // netprobe's own owner probe: pinned to its MAC and not traced (it
    // would be judged as one more stuck handshake).
    if let Some(slot) = pin::slot(&ctx) {
        return pin::rewrite(&ctx, slot);
    }
    classifier::handle(&ctx, direction::EGRESS)
}

/// Every local socket's packets, pods' included, on the root cgroup: one
/// attach for the node, whatever the CNI does below the socket. Always
/// allows the packet.
#[cgroup_skb(ingress)]
pub fn sock_ingress(ctx: SkBuffContext) -> i32 {
    classifier::handle_l3(&ctx, direction::SOCKET_INGRESS);
    1
}

#[cgroup_skb(egress)]
pub fn sock_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let mark = unsafe { (*ctx.skb.skb).mark };
    // netprobe's own owner probe is not a handshake to judge.
    if pin::slot_of(mark).is_none() {
        classifier::handle_l3(&ctx, direction::SOCKET_EGRESS);
    }
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! `tcp/tcp_retransmit_synack`: a listener retransmitted its SYN-ACK (the
//! client's final ACK did not come, or came while the accept queue was
//! full). The kernel counts these in RetransSegs but does not fire
//! `tcp_retransmit_skb` for them.

use aya_ebpf::programs::TracePointContext;
use probe_common::kind;

use crate::{
    skb::sock_netns,
    tcp_tracepoint::{self, AddrOffsets, FlowOffsets},
};

const FLOW: FlowOffsets = FlowOffsets {
    skaddr: 8,
    sport: 24,
    dport: 26,
    addrs: AddrOffsets {
        family: 28,
        saddr: 30,
        daddr: 34,
        saddr_v6: 38,
        daddr_v6: 54,
    },
};
/// `TCP_SYN_RECV`: the request's state.
const SYN_RECV: u8 = 3;

/// The listening socket's namespace is the request's.
#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    tcp_tracepoint::emit_flow(ctx, kind::SYNACK_RETRANSMIT, &FLOW, SYN_RECV, sock_netns)
}

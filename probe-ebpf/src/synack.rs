//! `tcp/tcp_retransmit_synack`: a listener retransmitted its SYN-ACK (the
//! client's final ACK did not come, or came while the accept queue was
//! full). The kernel counts these in RetransSegs but does not fire
//! `tcp_retransmit_skb` for them.

use aya_ebpf::programs::TracePointContext;
use probe_common::{kind, tp};

use crate::{
    skb::sock_netns,
    tcp_tracepoint::{self, AddrSlots, FlowSlots},
};

const FLOW: FlowSlots = FlowSlots {
    skaddr: tp::SA_SKADDR,
    sport: tp::SA_SPORT,
    dport: tp::SA_DPORT,
    addrs: AddrSlots {
        family: tp::SA_FAMILY,
        saddr: tp::SA_SADDR,
        daddr: tp::SA_DADDR,
        saddr_v6: tp::SA_SADDR6,
        daddr_v6: tp::SA_DADDR6,
    },
};
/// `TCP_SYN_RECV`: the request's state.
const SYN_RECV: u8 = 3;

/// The listening socket's namespace is the request's.
#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    tcp_tracepoint::emit_flow(ctx, kind::SYNACK_RETRANSMIT, &FLOW, SYN_RECV, sock_netns)
}

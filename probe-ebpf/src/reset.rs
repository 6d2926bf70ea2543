//! `tcp/tcp_receive_reset`: the peer reset a connection. Userspace uses it to
//! stop waiting on that flow (a refused handshake is not an unanswered one).

use aya_ebpf::programs::TracePointContext;
use probe_common::kind;

use crate::tcp_tracepoint::{self, AddrOffsets, FlowOffsets};

const FLOW: FlowOffsets = FlowOffsets {
    skaddr: 8,
    sport: 16,
    dport: 18,
    addrs: AddrOffsets {
        family: 20,
        saddr: 22,
        daddr: 26,
        saddr_v6: 30,
        daddr_v6: 46,
    },
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    tcp_tracepoint::emit_flow(ctx, kind::RESET, &FLOW, 0, |_| 0)
}

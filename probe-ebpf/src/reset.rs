//! `tcp/tcp_receive_reset`: the peer reset a connection. Userspace uses it to
//! stop waiting on that flow (a refused handshake is not an unanswered one).

use aya_ebpf::programs::TracePointContext;
use probe_common::{kind, tp};

use crate::tcp_tracepoint::{self, AddrSlots, FlowSlots};

const FLOW: FlowSlots = FlowSlots {
    skaddr: tp::RR_SKADDR,
    sport: tp::RR_SPORT,
    dport: tp::RR_DPORT,
    addrs: AddrSlots {
        family: tp::RR_FAMILY,
        saddr: tp::RR_SADDR,
        daddr: tp::RR_DADDR,
        saddr_v6: tp::RR_SADDR6,
        daddr_v6: tp::RR_DADDR6,
    },
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    tcp_tracepoint::emit_flow(ctx, kind::RESET, &FLOW, 0, |_| 0)
}

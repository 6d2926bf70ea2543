//! `tcp/tcp_receive_reset`: the peer reset a connection. Userspace uses it to
//! stop waiting on that flow (a refused handshake is not an unanswered one).

use aya_ebpf::programs::TracePointContext;
use probe_common::{TcpRecord, kind};

use crate::{
    emit,
    tcp_tracepoint::{self, AddrOffsets, read},
};

const OFF_SKADDR: usize = 8;
const OFF_SPORT: usize = 16;
const OFF_DPORT: usize = 18;
const ADDRS: AddrOffsets = AddrOffsets {
    family: 20,
    saddr: 22,
    daddr: 26,
    saddr_v6: 30,
    daddr_v6: 46,
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let (family, saddr, daddr) = tcp_tracepoint::addrs(ctx, &ADDRS)?;
    let record = TcpRecord {
        header: emit::header(kind::RESET, size_of::<TcpRecord>()),
        skaddr: read(ctx, OFF_SKADDR)?,
        netns: 0,
        state: 0,
        family,
        has_seq: 0,
        not_sent: 0,
        sport: read(ctx, OFF_SPORT)?,
        dport: read(ctx, OFF_DPORT)?,
        snd_una: 0,
        snd_nxt: 0,
        pid: 0,
        saddr,
        daddr,
        comm: [0; 16],
    };
    let mut entry = emit::reserve::<TcpRecord>(kind::RESET)?;
    entry.write(record);
    entry.submit(0);
    Some(())
}

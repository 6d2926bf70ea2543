//! `tcp/tcp_retransmit_skb`: one record per retransmitted segment.
//!
//! Field offsets are those of the tracepoint's format file; the loader checks
//! them against /sys/kernel/tracing before it attaches.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use probe_common::{TcpRecord, kind};

use crate::{
    emit,
    maps::kernel_offsets,
    tcp_tracepoint::{self, AddrOffsets, read},
};

const OFF_SKADDR: usize = 16;
const OFF_STATE: usize = 24;
const OFF_SPORT: usize = 28;
const OFF_DPORT: usize = 30;
const ADDRS: AddrOffsets = AddrOffsets {
    family: 32,
    saddr: 34,
    daddr: 38,
    saddr_v6: 42,
    daddr_v6: 58,
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let skaddr: u64 = read(ctx, OFF_SKADDR)?;
    let (family, saddr, daddr) = tcp_tracepoint::addrs(ctx, &ADDRS)?;
    let sock = SockInfo::read(skaddr);
    let owner = crate::sockstate::owner(skaddr);
    let record = TcpRecord {
        header: emit::header(kind::RETRANSMIT, size_of::<TcpRecord>()),
        skaddr,
        netns: sock.netns,
        state: read::<i32>(ctx, OFF_STATE)? as u8,
        family,
        has_seq: sock.has_seq,
        _pad: 0,
        sport: read(ctx, OFF_SPORT)?,
        dport: read(ctx, OFF_DPORT)?,
        snd_una: sock.snd_una,
        snd_nxt: sock.snd_nxt,
        pid: owner.pid,
        saddr,
        daddr,
        comm: owner.comm,
    };
    let mut entry = emit::reserve::<TcpRecord>(kind::RETRANSMIT)?;
    entry.write(record);
    entry.submit(0);
    Some(())
}

/// What the socket itself says, through offsets found in BTF by userspace.
#[derive(Default)]
struct SockInfo {
    netns: u32,
    snd_una: u32,
    snd_nxt: u32,
    has_seq: u8,
}

impl SockInfo {
    #[inline(always)]
    fn read(sk: u64) -> Self {
        let offs = kernel_offsets();
        let mut info = Self::default();
        if sk == 0 {
            return info;
        }
        if offs.sock_net != 0 && offs.net_inum != 0 {
            // SAFETY: bpf_probe_read_kernel tolerates bad pointers (returns an error).
            let net =
                unsafe { bpf_probe_read_kernel((sk + u64::from(offs.sock_net)) as *const u64) };
            if let Ok(net) = net
                && net != 0
            {
                let inum = unsafe {
                    bpf_probe_read_kernel((net + u64::from(offs.net_inum)) as *const u32)
                };
                info.netns = inum.unwrap_or(0);
            }
        }
        if offs.tcp_snd_una != 0 && offs.tcp_snd_nxt != 0 {
            let una =
                unsafe { bpf_probe_read_kernel((sk + u64::from(offs.tcp_snd_una)) as *const u32) };
            let nxt =
                unsafe { bpf_probe_read_kernel((sk + u64::from(offs.tcp_snd_nxt)) as *const u32) };
            if let (Ok(una), Ok(nxt)) = (una, nxt) {
                info.snd_una = una;
                info.snd_nxt = nxt;
                info.has_seq = 1;
            }
        }
        info
    }
}

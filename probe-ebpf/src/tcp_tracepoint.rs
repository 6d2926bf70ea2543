//! What the TCP tracepoints share: the record reader, the address block
//! (family, IPv4 and IPv6 source and destination) they all carry, and the
//! flow record of those that report a socket and its ports.

use aya_ebpf::programs::TracePointContext;
use probe_common::{AF_INET, TcpRecord};

use crate::emit;

#[inline(always)]
pub fn read<T>(ctx: &TracePointContext, off: usize) -> Option<T> {
    // SAFETY: offsets are inside the tracepoint record (the loader checks
    // them against tracefs before attaching).
    unsafe { ctx.read_at::<T>(off) }.ok()
}

/// Offsets of the address fields in one tracepoint's record.
pub struct AddrOffsets {
    pub family: usize,
    pub saddr: usize,
    pub daddr: usize,
    pub saddr_v6: usize,
    pub daddr_v6: usize,
}

/// (family, source, destination); IPv4 in the first 4 bytes.
#[inline(always)]
pub fn addrs(ctx: &TracePointContext, o: &AddrOffsets) -> Option<(u8, [u8; 16], [u8; 16])> {
    let family = read::<u16>(ctx, o.family)? as u8;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        saddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, o.saddr)?);
        daddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, o.daddr)?);
    } else {
        saddr = read(ctx, o.saddr_v6)?;
        daddr = read(ctx, o.daddr_v6)?;
    }
    Some((family, saddr, daddr))
}

/// Where one tracepoint keeps the socket, ports and addresses.
pub struct FlowOffsets {
    pub skaddr: usize,
    pub sport: usize,
    pub dport: usize,
    pub addrs: AddrOffsets,
}

/// A [`TcpRecord`] of `kind` for the tracepoint's socket and flow, without
/// sequence numbers or owner; `netns` of the socket when the caller knows
/// it.
#[inline(always)]
pub fn emit_flow(
    ctx: &TracePointContext,
    kind: u16,
    o: &FlowOffsets,
    state: u8,
    netns: impl FnOnce(u64) -> u32,
) -> Option<()> {
    let (family, saddr, daddr) = addrs(ctx, &o.addrs)?;
    let skaddr: u64 = read(ctx, o.skaddr)?;
    let record = TcpRecord {
        header: emit::header(kind, size_of::<TcpRecord>()),
        skaddr,
        netns: netns(skaddr),
        state,
        family,
        has_seq: 0,
        not_sent: 0,
        sport: read(ctx, o.sport)?,
        dport: read(ctx, o.dport)?,
        snd_una: 0,
        snd_nxt: 0,
        pid: 0,
        saddr,
        daddr,
        comm: [0; 16],
    };
    emit::record(kind, record)
}

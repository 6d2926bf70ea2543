//! What the TCP tracepoints share: the record reader and the address block
//! (family, IPv4 and IPv6 source and destination) they all carry.

use aya_ebpf::programs::TracePointContext;
use probe_common::AF_INET;

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

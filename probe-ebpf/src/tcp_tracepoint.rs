//! What the TCP tracepoints share: the record reader, the address block
//! (family, IPv4 and IPv6 source and destination) they all carry, and the
//! flow record of those that report a socket and its ports.
//!
//! Fields are found by name in the running kernel's tracefs format by
//! userspace (`probe_common::tp` slots, [`crate::maps::tp_off`]); a field
//! the kernel's record lacks is not read.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use probe_common::{AF_INET, AF_INET6, TcpRecord};

use crate::{
    emit,
    maps::{kernel_offsets, tp_off},
};

#[inline(always)]
pub fn read<T>(ctx: &TracePointContext, off: usize) -> Option<T> {
    // SAFETY: offsets come from the kernel's own format of this record;
    // bpf_probe_read tolerates a bad one (returns an error).
    unsafe { ctx.read_at::<T>(off) }.ok()
}

/// Tracepoint field `slot` (a `probe_common::tp` constant), None where
/// this kernel's record has no such field.
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, slot: usize) -> Option<T> {
    read(ctx, tp_off(slot)?)
}

/// Slots of the address fields in one tracepoint's record.
pub struct AddrSlots {
    pub family: usize,
    pub saddr: usize,
    pub daddr: usize,
    pub saddr_v6: usize,
    pub daddr_v6: usize,
}

/// The socket's family where the record has no `family` (before 5.11 or
/// so): read from the socket when BTF confirmed `sock_common`'s head
/// layout, else from the addresses, as the kernel stored them: an IPv4
/// socket's IPv6 fields hold its v4-mapped addresses.
#[inline(always)]
fn family_without_field(ctx: &TracePointContext, o: &AddrSlots, skaddr: u64) -> Option<u8> {
    if skaddr != 0 && kernel_offsets().sock_v6_daddr != 0 {
        // SAFETY: bpf_probe_read_kernel tolerates bad pointers.
        if let Ok(f) = unsafe { bpf_probe_read_kernel((skaddr + 16) as *const u16) } {
            if f as u8 == AF_INET || f as u8 == AF_INET6 {
                return Some(f as u8);
            }
        }
    }
    let s6: [u8; 16] = field(ctx, o.saddr_v6)?;
    let mapped = s6[..10].iter().all(|b| *b == 0) && s6[10] == 0xff && s6[11] == 0xff;
    Some(if mapped { AF_INET } else { AF_INET6 })
}

/// (family, source, destination); IPv4 in the first 4 bytes.
#[inline(always)]
pub fn addrs(
    ctx: &TracePointContext,
    o: &AddrSlots,
    skaddr: u64,
) -> Option<(u8, [u8; 16], [u8; 16])> {
    let family = match field::<u16>(ctx, o.family) {
        Some(f) => f as u8,
        None => family_without_field(ctx, o, skaddr)?,
    };
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        saddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, o.saddr)?);
        daddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, o.daddr)?);
    } else {
        saddr = field(ctx, o.saddr_v6)?;
        daddr = field(ctx, o.daddr_v6)?;
    }
    Some((family, saddr, daddr))
}

/// Where one tracepoint keeps the socket, ports and addresses (slots).
pub struct FlowSlots {
    pub skaddr: usize,
    pub sport: usize,
    pub dport: usize,
    pub addrs: AddrSlots,
}

/// A [`TcpRecord`] of `kind` for the tracepoint's socket and flow, without
/// sequence numbers or owner; `netns` of the socket when the caller knows
/// it.
#[inline(always)]
pub fn emit_flow(
    ctx: &TracePointContext,
    kind: u16,
    o: &FlowSlots,
    state: u8,
    netns: impl FnOnce(u64) -> u32,
) -> Option<()> {
    let skaddr: u64 = field(ctx, o.skaddr)?;
    let (family, saddr, daddr) = addrs(ctx, &o.addrs, skaddr)?;
    let record = TcpRecord {
        header: emit::header(kind, size_of::<TcpRecord>()),
        skaddr,
        netns: netns(skaddr),
        state,
        family,
        has_seq: 0,
        not_sent: 0,
        sport: field(ctx, o.sport)?,
        dport: field(ctx, o.dport)?,
        snd_una: 0,
        snd_nxt: 0,
        pid: 0,
        saddr,
        daddr,
        comm: [0; 16],
    };
    emit::record(kind, record)
}

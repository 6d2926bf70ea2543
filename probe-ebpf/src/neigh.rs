//! `neigh/neigh_update`: every change of an ARP or NDP entry, with the MAC
//! and state before and after, and which process asked for it.

use aya_ebpf::programs::TracePointContext;
use probe_common::{NeighRecord, kind, tp};

use crate::{
    emit,
    tcp_tracepoint::{field, read},
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let family = field::<u32>(ctx, tp::NU_FAMILY)? as u8;
    let mut ip = [0u8; 16];
    if family == probe_common::AF_INET {
        ip[..4].copy_from_slice(&field::<[u8; 4]>(ctx, tp::NU_KEY4)?);
    } else {
        ip = field(ctx, tp::NU_KEY6)?;
    }
    // `dev` is a __data_loc string: offset in the low 16 bits.
    let dev_loc: u32 = field(ctx, tp::NU_DEV)?;
    let dev: [u8; 16] = read(ctx, (dev_loc & 0xffff) as usize).unwrap_or([0; 16]);
    let record = NeighRecord {
        header: emit::header(kind::NEIGHBOUR, size_of::<NeighRecord>()),
        family,
        lladdr_len: field(ctx, tp::NU_LLADDR_LEN)?,
        old_state: field(ctx, tp::NU_NUD_STATE)?,
        new_state: field(ctx, tp::NU_NEW_STATE)?,
        flags: field(ctx, tp::NU_FLAGS)?,
        dead: field(ctx, tp::NU_DEAD)?,
        _pad: [0; 2],
        update_flags: field(ctx, tp::NU_UPDATE_FLAGS)?,
        pid: field(ctx, tp::NU_PID)?,
        ip,
        old_mac: field(ctx, tp::NU_LLADDR)?,
        new_mac: field(ctx, tp::NU_NEW_LLADDR)?,
        dev,
    };
    emit::record(kind::NEIGHBOUR, record)
}

//! `neigh/neigh_update`: every change of an ARP or NDP entry, with the MAC
//! and state before and after, and which process asked for it.

use aya_ebpf::programs::TracePointContext;
use probe_common::{NeighRecord, kind};

use crate::emit;

const OFF_FAMILY: usize = 8;
const OFF_DEV_LOC: usize = 12;
const OFF_LLADDR: usize = 16;
const OFF_LLADDR_LEN: usize = 48;
const OFF_FLAGS: usize = 49;
const OFF_NUD_STATE: usize = 50;
const OFF_DEAD: usize = 52;
const OFF_KEY4: usize = 60;
const OFF_KEY6: usize = 64;
const OFF_NEW_LLADDR: usize = 104;
const OFF_NEW_STATE: usize = 136;
const OFF_UPDATE_FLAGS: usize = 140;
const OFF_PID: usize = 144;

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: usize) -> Option<T> {
    // SAFETY: offsets are inside the tracepoint record (checked by the loader).
    unsafe { ctx.read_at::<T>(off) }.ok()
}

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let family = read::<u32>(ctx, OFF_FAMILY)? as u8;
    let mut ip = [0u8; 16];
    if family == probe_common::AF_INET {
        ip[..4].copy_from_slice(&read::<[u8; 4]>(ctx, OFF_KEY4)?);
    } else {
        ip = read(ctx, OFF_KEY6)?;
    }
    // `dev` is a __data_loc string: offset in the low 16 bits.
    let dev_loc: u32 = read(ctx, OFF_DEV_LOC)?;
    let dev: [u8; 16] = read(ctx, (dev_loc & 0xffff) as usize).unwrap_or([0; 16]);
    let record = NeighRecord {
        header: emit::header(kind::NEIGHBOUR, size_of::<NeighRecord>()),
        family,
        lladdr_len: read(ctx, OFF_LLADDR_LEN)?,
        old_state: read(ctx, OFF_NUD_STATE)?,
        new_state: read(ctx, OFF_NEW_STATE)?,
        flags: read(ctx, OFF_FLAGS)?,
        dead: read(ctx, OFF_DEAD)?,
        _pad: [0; 2],
        update_flags: read(ctx, OFF_UPDATE_FLAGS)?,
        pid: read(ctx, OFF_PID)?,
        ip,
        old_mac: read(ctx, OFF_LLADDR)?,
        new_mac: read(ctx, OFF_NEW_LLADDR)?,
        dev,
    };
    emit::record(kind::NEIGHBOUR, record)
}

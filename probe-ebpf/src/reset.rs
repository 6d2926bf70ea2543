//! `tcp/tcp_receive_reset`: the peer reset a connection. Userspace uses it to
//! stop waiting on that flow (a refused handshake is not an unanswered one).

use aya_ebpf::programs::TracePointContext;
use probe_common::{AF_INET, TcpRecord, kind};

use crate::emit;

const OFF_SKADDR: usize = 8;
const OFF_SPORT: usize = 16;
const OFF_DPORT: usize = 18;
const OFF_FAMILY: usize = 20;
const OFF_SADDR: usize = 22;
const OFF_DADDR: usize = 26;
const OFF_SADDR_V6: usize = 30;
const OFF_DADDR_V6: usize = 46;

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: usize) -> Option<T> {
    // SAFETY: offsets are inside the tracepoint record (checked by the loader).
    unsafe { ctx.read_at::<T>(off) }.ok()
}

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    let family = read::<u16>(ctx, OFF_FAMILY)? as u8;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        saddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, OFF_SADDR)?);
        daddr[..4].copy_from_slice(&read::<[u8; 4]>(ctx, OFF_DADDR)?);
    } else {
        saddr = read(ctx, OFF_SADDR_V6)?;
        daddr = read(ctx, OFF_DADDR_V6)?;
    }
    let record = TcpRecord {
        header: emit::header(kind::RESET, size_of::<TcpRecord>()),
        skaddr: read(ctx, OFF_SKADDR)?,
        netns: 0,
        state: 0,
        family,
        has_seq: 0,
        _pad: 0,
        sport: read(ctx, OFF_SPORT)?,
        dport: read(ctx, OFF_DPORT)?,
        snd_una: 0,
        snd_nxt: 0,
        _pad2: 0,
        saddr,
        daddr,
    };
    let mut entry = emit::reserve::<TcpRecord>(kind::RESET)?;
    entry.write(record);
    entry.submit(0);
    Some(())
}

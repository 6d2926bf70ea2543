//! `tcp/tcp_retransmit_skb`: one record per retransmitted segment, from the
//! raw tracepoint (the socket read through BTF offsets), or from the
//! formatted one where those offsets are missing.
//!
//! The formatted record's fields are found by name in the running kernel's
//! format (see `tcp_tracepoint::field`).
//!
//! Newer kernels fire the tracepoint for attempts that sent nothing too,
//! with their error. -EBUSY means the original segment is still in this
//! host's queue (a qdisc, the driver), so nothing was retransmitted: the
//! kernel counts it as TcpExtTCPSpuriousRtxHostQueues, not in RetransSegs,
//! and netprobe does not report it. Other errors (no route, a full qdisc)
//! are reported with the errno: the socket is retransmitting, the packet
//! just did not leave.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    programs::{RawTracePointContext, TracePointContext},
};
use probe_common::{AF_INET, TcpRecord, kind, tp};

use crate::{
    emit,
    maps::{kernel_offsets, retransmit_has_err},
    skb::sock_netns,
    tcp_tracepoint::{self, AddrSlots, field},
};

const EBUSY: i32 = 16;
const ADDRS: AddrSlots = AddrSlots {
    family: tp::RT_FAMILY,
    saddr: tp::RT_SADDR,
    daddr: tp::RT_DADDR,
    saddr_v6: tp::RT_SADDR6,
    daddr_v6: tp::RT_DADDR6,
};

#[inline(always)]
pub fn handle(ctx: &TracePointContext) -> Option<()> {
    // Kernels without `err` fire only for attempts that were sent.
    let err = field::<i32>(ctx, tp::RT_ERR).unwrap_or(0);
    if err == -EBUSY {
        return None;
    }
    let skaddr: u64 = field(ctx, tp::RT_SKADDR)?;
    let (family, saddr, daddr) = tcp_tracepoint::addrs(ctx, &ADDRS, skaddr)?;
    let head = SockHead {
        family,
        state: field::<i32>(ctx, tp::RT_STATE)? as u8,
        sport: field(ctx, tp::RT_SPORT)?,
        dport: field(ctx, tp::RT_DPORT)?,
        saddr,
        daddr,
    };
    emit_record(skaddr, &head, err)
}

/// `tcp_retransmit_skb(sk, skb, ...)` as a raw tracepoint: the socket is
/// read directly (the formatted record is not built). A raw tracepoint is
/// guarded per program, so, unlike the formatted one, it is not skipped
/// because some other BPF program happened to be running on the CPU.
#[inline(always)]
pub fn handle_raw(ctx: &RawTracePointContext) -> Option<()> {
    let sk: u64 = ctx.arg(0);
    if sk == 0 {
        return None;
    }
    // tcp_retransmit_skb(sk, skb, err) where the tracepoint has `err`.
    let err = if retransmit_has_err() {
        ctx.arg::<u64>(2) as i32
    } else {
        0
    };
    if err == -EBUSY {
        return None;
    }
    let v6 = u64::from(kernel_offsets().sock_v6_daddr);
    if v6 == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates bad pointers (returns an error).
    let c: [u8; 20] = unsafe { bpf_probe_read_kernel(sk as *const [u8; 20]) }.ok()?;
    let family = u16::from_ne_bytes([c[16], c[17]]) as u8;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET {
        daddr[..4].copy_from_slice(&c[0..4]);
        saddr[..4].copy_from_slice(&c[4..8]);
    } else {
        // SAFETY: as above; skc_v6_daddr then skc_v6_rcv_saddr.
        let a: [u8; 32] = unsafe { bpf_probe_read_kernel((sk + v6) as *const [u8; 32]) }.ok()?;
        daddr.copy_from_slice(&a[..16]);
        saddr.copy_from_slice(&a[16..]);
    }
    let head = SockHead {
        family,
        state: c[18],
        // skc_num is host order; skc_dport is the wire's.
        sport: u16::from_ne_bytes([c[14], c[15]]),
        dport: u16::from_be_bytes([c[12], c[13]]),
        saddr,
        daddr,
    };
    emit_record(sk, &head, err)
}

/// The flow and state of the retransmitting socket, however it was read.
struct SockHead {
    family: u8,
    state: u8,
    sport: u16,
    dport: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

#[inline(always)]
fn emit_record(skaddr: u64, h: &SockHead, err: i32) -> Option<()> {
    let sock = SockInfo::read(skaddr);
    let owner = crate::sockstate::owner(skaddr);
    let record = TcpRecord {
        header: emit::header(kind::RETRANSMIT, size_of::<TcpRecord>()),
        skaddr,
        netns: sock.netns,
        state: h.state,
        family: h.family,
        has_seq: sock.has_seq,
        // Errnos are small; anything else reads as "not sent" all the same.
        not_sent: if err < 0 && err > -256 {
            (-err) as u8
        } else {
            u8::from(err != 0)
        },
        sport: h.sport,
        dport: h.dport,
        snd_una: sock.snd_una,
        snd_nxt: sock.snd_nxt,
        pid: owner.pid,
        saddr: h.saddr,
        daddr: h.daddr,
        comm: owner.comm,
    };
    emit::record(kind::RETRANSMIT, record)
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
        info.netns = sock_netns(sk);
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

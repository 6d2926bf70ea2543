//! TLS handshake detection on watched ports.
//!
//! A segment whose payload starts with a handshake record header carrying a
//! ClientHello or ServerHello is copied to userspace (first `TLS_CAPTURE`
//! bytes). When a ClientHello record is longer than its segment, the flow is
//! remembered in `FOLLOW` and the segments that carry the rest of that byte
//! range are copied too, so userspace can reassemble it by sequence number.

use aya_ebpf::{helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use probe_common::{FlowKey, FollowState, TLS_CAPTURE, TLS_FOLLOW_MAX, TlsRecord, kind, tls_part};

use crate::{
    emit,
    maps::FOLLOW,
    packet::{self, Ethernet, Ip, Tcp},
};

const CONTENT_HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// Largest record length RFC 8446 allows on the wire (2^14 + 256).
const MAX_RECORD: u16 = 16384 + 256;
/// Records per segment at most: TLS_FOLLOW_MAX / TLS_CAPTURE.
const MAX_CHUNKS: usize = (TLS_FOLLOW_MAX as usize).div_ceil(TLS_CAPTURE);

/// Returns whether the segment belongs to a followed handshake record.
#[inline(always)]
pub fn handle(ctx: &TcContext, direction: u8, eth: &Ethernet, ip: &Ip, tcp: &Tcp) -> bool {
    let key = FlowKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: tcp.sport,
        dport: tcp.dport,
        family: ip.family,
        _pad: [0; 3],
    };
    if let Some(head) = packet::load::<[u8; 6]>(ctx, tcp.payload_off) {
        let record_len = packet::be16(&head, 3);
        let is_start = head[0] == CONTENT_HANDSHAKE
            && head[1] == 3
            && head[2] <= 4
            && record_len > 0
            && record_len <= MAX_RECORD
            && (head[5] == CLIENT_HELLO || head[5] == SERVER_HELLO);
        if is_start {
            let wire_len = u32::from(record_len) + 5;
            if head[5] == SERVER_HELLO {
                // The ServerHello itself is short; what follows it is not ours to copy.
                let _ = emit_chunks(
                    ctx,
                    direction,
                    eth,
                    ip,
                    tcp,
                    tls_part::START,
                    TLS_CAPTURE as u32,
                );
                return true;
            }
            let followed = core::cmp::min(wire_len, TLS_FOLLOW_MAX);
            if followed > tcp.payload_len as u32 {
                let follow = FollowState {
                    start_seq: tcp.seq,
                    end_seq: tcp.seq.wrapping_add(followed),
                };
                // Best effort: a full LRU map evicts its oldest entry.
                let _ = FOLLOW.insert(&key, &follow, 0);
            }
            let _ = emit_chunks(ctx, direction, eth, ip, tcp, tls_part::START, followed);
            return true;
        }
    }
    // SAFETY: read-only copy of the map value.
    let Some(follow) = (unsafe { FOLLOW.get(&key) }).copied() else {
        return false;
    };
    let rel = tcp.seq.wrapping_sub(follow.start_seq);
    let span = follow.end_seq.wrapping_sub(follow.start_seq);
    if rel == 0 || rel >= span {
        return false;
    }
    if rel.wrapping_add(tcp.payload_len as u32) >= span {
        let _ = FOLLOW.remove(&key);
    }
    let _ = emit_chunks(
        ctx,
        direction,
        eth,
        ip,
        tcp,
        tls_part::CONTINUATION,
        span - rel,
    );
    true
}

/// Segments longer than `TLS_CAPTURE` go out as several records, one per
/// `TLS_CAPTURE` bytes, so a ClientHello with a post-quantum key share
/// (about 1.5 KB, e.g. Go's X25519MLKEM768) arrives whole. `wanted` bounds
/// how many bytes of the segment belong to the followed record.
#[inline(always)]
fn emit_chunks(
    ctx: &TcContext,
    direction: u8,
    eth: &Ethernet,
    ip: &Ip,
    tcp: &Tcp,
    first: u8,
    wanted: u32,
) -> Option<()> {
    let limit = core::cmp::min(tcp.payload_len, wanted as usize);
    let mut part = first;
    for k in 0..MAX_CHUNKS {
        let skip = k * TLS_CAPTURE;
        if skip >= limit {
            break;
        }
        let last = skip + TLS_CAPTURE >= limit;
        emit_segment(ctx, direction, eth, ip, tcp, part, k, last)?;
        part = tls_part::CONTINUATION;
    }
    Some(())
}

/// One record: `TLS_CAPTURE` bytes of the segment from `skip` on. Records
/// before the last say they hold exactly what they captured, so userspace
/// sees no gap between them; the last one reports the true remainder.
#[expect(
    clippy::too_many_arguments,
    reason = "packet context is passed apart to stay on the eBPF stack"
)]
#[inline(always)]
fn emit_segment(
    ctx: &TcContext,
    direction: u8,
    eth: &Ethernet,
    ip: &Ip,
    tcp: &Tcp,
    part: u8,
    chunk: usize,
    last: bool,
) -> Option<()> {
    let skip = chunk * TLS_CAPTURE;
    let mut entry = emit::reserve::<TlsRecord>(kind::TLS)?;
    let rec = entry.as_mut_ptr();
    let remaining = tcp.payload_len - skip;
    let want = core::cmp::min(remaining, TLS_CAPTURE);
    let claimed = if last { remaining } else { want };
    // SAFETY: `rec` points at a reserved, exclusively owned ring-buffer slot;
    // every field is written before submit. The record is too large for the
    // 512-byte eBPF stack, so it is filled in place.
    unsafe {
        (*rec).header = emit::header(kind::TLS, size_of::<TlsRecord>());
        (*rec).ifindex = (*ctx.skb.skb).ifindex;
        (*rec).direction = direction;
        (*rec).family = ip.family;
        (*rec).part = part;
        (*rec).chunk = chunk as u8;
        (*rec).sport = tcp.sport;
        (*rec).dport = tcp.dport;
        (*rec).seq = tcp.seq.wrapping_add(skip as u32);
        (*rec).payload_len = claimed as u16;
        (*rec).saddr = ip.saddr;
        (*rec).daddr = ip.daddr;
        (*rec).src_mac = eth.src;
        (*rec).dst_mac = eth.dst;
        let captured = copy_payload(
            ctx,
            tcp.payload_off + skip,
            want,
            (*rec).payload.as_mut_ptr(),
        );
        (*rec).captured = captured as u16;
    }
    entry.submit(0);
    Some(())
}

/// Copies `len` bytes at `off` into `dst` (room for `TLS_CAPTURE`). The
/// length is checked against both bounds right before the helper call so
/// the verifier sees a size in [1, TLS_CAPTURE]; a ladder of constant-size
/// loads would do too, but multiplies verifier states per chunk.
#[inline(always)]
unsafe fn copy_payload(ctx: &TcContext, off: usize, len: usize, dst: *mut u8) -> usize {
    let n = len as u32;
    if n == 0 || n > TLS_CAPTURE as u32 {
        return 0;
    }
    // LLVM rewrites the check above into a form the verifier cannot use.
    // Hide the range from LLVM, then rebuild it with arithmetic the
    // verifier follows: ((n - 1) & 511) + 1 is n here, and provably in
    // [1, TLS_CAPTURE].
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = (n.wrapping_sub(1) & (TLS_CAPTURE as u32 - 1)) + 1;
    // SAFETY: `dst` has room for TLS_CAPTURE >= n bytes.
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, off as u32, dst.cast(), n) };
    if rc == 0 { n as usize } else { 0 }
}

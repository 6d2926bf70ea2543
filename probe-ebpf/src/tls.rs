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

pub fn handle(ctx: &TcContext, direction: u8, eth: &Ethernet, ip: &Ip, tcp: &Tcp) -> Option<()> {
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
            if head[5] == CLIENT_HELLO && wire_len > tcp.payload_len as u32 {
                let follow = FollowState {
                    start_seq: tcp.seq,
                    end_seq: tcp.seq.wrapping_add(core::cmp::min(wire_len, TLS_FOLLOW_MAX)),
                };
                // Best effort: a full LRU map evicts its oldest entry.
                let _ = FOLLOW.insert(&key, &follow, 0);
            }
            return emit_segment(ctx, direction, eth, ip, tcp, tls_part::START);
        }
    }
    // SAFETY: read-only copy of the map value.
    let follow = unsafe { *FOLLOW.get(&key)? };
    let rel = tcp.seq.wrapping_sub(follow.start_seq);
    let span = follow.end_seq.wrapping_sub(follow.start_seq);
    if rel == 0 || rel >= span {
        return None;
    }
    if rel.wrapping_add(tcp.payload_len as u32) >= span {
        let _ = FOLLOW.remove(&key);
    }
    emit_segment(ctx, direction, eth, ip, tcp, tls_part::CONTINUATION)
}

fn emit_segment(ctx: &TcContext, direction: u8, eth: &Ethernet, ip: &Ip, tcp: &Tcp, part: u8) -> Option<()> {
    let mut entry = emit::reserve::<TlsRecord>(kind::TLS)?;
    let rec = entry.as_mut_ptr();
    let want = core::cmp::min(tcp.payload_len, TLS_CAPTURE);
    // SAFETY: `rec` points at a reserved, exclusively owned ring-buffer slot;
    // every field is written before submit. The record is too large for the
    // 512-byte eBPF stack, so it is filled in place.
    unsafe {
        (*rec).header = emit::header(kind::TLS, size_of::<TlsRecord>());
        (*rec).ifindex = (*ctx.skb.skb).ifindex;
        (*rec).direction = direction;
        (*rec).family = ip.family;
        (*rec).part = part;
        (*rec)._pad = 0;
        (*rec).sport = tcp.sport;
        (*rec).dport = tcp.dport;
        (*rec).seq = tcp.seq;
        (*rec).payload_len = tcp.payload_len as u16;
        (*rec).saddr = ip.saddr;
        (*rec).daddr = ip.daddr;
        (*rec).src_mac = eth.src;
        (*rec).dst_mac = eth.dst;
        let captured = copy_payload(ctx, tcp.payload_off, want, (*rec).payload.as_mut_ptr());
        (*rec).captured = captured as u16;
    }
    entry.submit(0);
    Some(())
}

/// Copies `len` (<= TLS_CAPTURE) bytes at `off` into `dst` with constant-size
/// loads only: the verifier rejects a variable-length `bpf_skb_load_bytes`
/// that it cannot prove non-zero and in bounds.
#[inline(always)]
unsafe fn copy_payload(ctx: &TcContext, off: usize, len: usize, dst: *mut u8) -> usize {
    let skb = ctx.skb.skb as *const _;
    let load = |at: usize, to: *mut u8, n: u32| -> bool {
        // SAFETY: `to` has room for `n` bytes (see the callers' bounds).
        unsafe { bpf_skb_load_bytes(skb, at as u32, to.cast(), n) == 0 }
    };
    if len >= TLS_CAPTURE {
        return if load(off, dst, TLS_CAPTURE as u32) { TLS_CAPTURE } else { 0 };
    }
    let mut done = 0usize;
    macro_rules! chunk {
        ($n:expr) => {
            if len - done >= $n {
                // SAFETY: the chunks below sum to 511 < TLS_CAPTURE.
                if !load(off + done, unsafe { dst.add(done) }, $n) {
                    return done;
                }
                done += $n;
            }
        };
    }
    chunk!(256);
    chunk!(128);
    chunk!(64);
    chunk!(32);
    chunk!(16);
    chunk!(8);
    chunk!(4);
    chunk!(2);
    chunk!(1);
    done
}

//! TLS handshake detection on watched ports.
//!
//! A segment whose payload starts with a handshake record header carrying a
//! ClientHello or ServerHello is copied to userspace (first `TLS_CAPTURE`
//! bytes). When a ClientHello record is longer than its segment, the flow is
//! remembered in `FOLLOW` and the segments that carry the rest of that byte
//! range are copied too, so userspace can reassemble it by sequence number.

use aya_ebpf::helpers::generated::bpf_skb_load_bytes;
use probe_common::{FlowKey, FollowState, TLS_CAPTURE, TLS_FOLLOW_MAX, TlsRecord, kind, tls_part};

use crate::{
    emit,
    maps::{FLIGHTS, FOLLOW, FOLLOW_SLOTS, FlightSlot, FollowSlot},
    packet::{self, Ethernet, Ip, Pkt, Tcp},
};

const CONTENT_HANDSHAKE: u8 = 0x16;
const CHANGE_CIPHER_SPEC: u8 = 0x14;
const APPLICATION_DATA: u8 = 0x17;
/// Bytes of the client's next flight copied: its record header.
const FLIGHT_BYTES: u32 = 16;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// Largest record length RFC 8446 allows on the wire (2^14 + 256).
const MAX_RECORD: u16 = 16384 + 256;
/// Records per segment at most: TLS_FOLLOW_MAX / TLS_CAPTURE.
const MAX_CHUNKS: usize = (TLS_FOLLOW_MAX as usize).div_ceil(TLS_CAPTURE);
/// Bits of the flow hash that pick a follow slot.
const SLOT_BITS: u32 = FOLLOW_SLOTS.trailing_zeros();

/// The follow and flight slot of a segment's flow (the top bits of its hash).
#[inline(always)]
fn slot_of(tcp: &Tcp) -> u32 {
    tcp.flow_hash >> (32 - SLOT_BITS)
}

/// Who a record is about: the frame's MACs and the flow.
struct Meta {
    direction: u8,
    /// The socket's namespace at a socket hook (0 on tc: the hook's own).
    netns: u32,
    eth: Ethernet,
    key: FlowKey,
}

#[inline(always)]
fn meta<C: Pkt>(ctx: &C, direction: u8, ip: &Ip, tcp: &Tcp) -> Option<Meta> {
    let netns = ctx.netns();
    if !crate::maps::node_netns(netns) {
        return None;
    }
    let eth = packet::macs(ctx)?;
    let (saddr, daddr) = packet::addrs(ctx, ip.family)?;
    Some(Meta {
        direction,
        netns,
        eth,
        key: FlowKey {
            saddr,
            daddr,
            sport: tcp.sport,
            dport: tcp.dport,
            family: ip.family,
            _pad: [0; 3],
        },
    })
}

/// Returns whether the segment belongs to a handshake record. Bulk data
/// costs a look at its first byte and at one follow slot (no helper call
/// when the payload is in the linear data).
#[inline(always)]
pub fn handle<C: Pkt>(ctx: &C, direction: u8, ip: &Ip, tcp: &Tcp) -> bool {
    if let Some(head) = packet::payload_head::<6, _>(ctx, tcp.payload_off) {
        if head[0] == CONTENT_HANDSHAKE {
            let record_len = packet::be16(&head, 3);
            let is_start = head[1] == 3
                && head[2] <= 4
                && record_len > 0
                && record_len <= MAX_RECORD
                && (head[5] == CLIENT_HELLO || head[5] == SERVER_HELLO);
            if is_start {
                let hello = (u32::from(head[5]) << 16) | u32::from(record_len);
                let _ = start(ctx, direction, ip, tcp, hello);
                return true;
            }
        }
        // A record header toward the server: maybe the client's next
        // flight (one slot load and a sequence compare).
        if (CHANGE_CIPHER_SPEC..=APPLICATION_DATA).contains(&head[0])
            && head[1] == 3
            && crate::maps::watched(tcp.dport)
            && flight(ctx, direction, ip, tcp).is_some()
        {
            return true;
        }
    }
    follow(ctx, direction, ip, tcp).is_some()
}

/// The client's first segment after its ClientHello starts exactly where
/// the hello ended: decided on the slot's sequence number first.
#[inline(always)]
fn flight<C: Pkt>(ctx: &C, direction: u8, ip: &Ip, tcp: &Tcp) -> Option<()> {
    let slot = FLIGHTS.get_ptr_mut(slot_of(tcp))?;
    // SAFETY: a slot of an array map (see `start`).
    if unsafe { (*slot).next_seq } != tcp.seq {
        return None;
    }
    client_flight(ctx, direction, ip, tcp, slot)
}

/// Reports the client's next flight once (the first hook that sees it
/// frees the slot), with its first bytes.
#[inline(never)]
fn client_flight<C: Pkt>(
    ctx: &C,
    direction: u8,
    ip: &Ip,
    tcp: &Tcp,
    slot: *mut FlightSlot,
) -> Option<()> {
    let m = meta(ctx, direction, ip, tcp)?;
    // SAFETY: a slot of an array map (see `start`).
    if !same_flow(&m.key, unsafe { &(*slot).key }) {
        return None;
    }
    // SAFETY: as above. An emptied key matches no flow.
    unsafe { (*slot).key.family = 0 };
    emit_chunks::<C, false>(ctx, &m, tcp, tls_part::FLIGHT, FLIGHT_BYTES)
}

/// A segment that starts a ClientHello or ServerHello record; `hello` is
/// the handshake type << 16 | the record length (five arguments at most).
/// Not inlined: its stack (records are built in place, but keys and MACs
/// are not) must not add to the ARP and NDP subprograms' in the verifier's
/// combined-stack sum.
#[inline(never)]
fn start<C: Pkt>(ctx: &C, direction: u8, ip: &Ip, tcp: &Tcp, hello: u32) -> Option<()> {
    let record_len = hello as u16;
    let m = meta(ctx, direction, ip, tcp)?;
    if (hello >> 16) as u8 == SERVER_HELLO {
        // The ServerHello itself is short; what follows it is not ours to copy.
        return emit_chunks::<C, true>(ctx, &m, tcp, tls_part::START, TLS_CAPTURE as u32);
    }
    let wire_len = u32::from(record_len) + 5;
    if let Some(slot) = FLIGHTS.get_ptr_mut(slot_of(tcp)) {
        // SAFETY: a slot of an array map (see below).
        unsafe {
            (*slot).key = m.key;
            (*slot).next_seq = tcp.seq.wrapping_add(wire_len);
        }
    }
    let followed = core::cmp::min(wire_len, TLS_FOLLOW_MAX);
    if followed > tcp.payload_len as u32
        && let Some(slot) = FOLLOW.get_ptr_mut(slot_of(tcp))
    {
        // SAFETY: a slot of an array map; a concurrent writer at worst
        // makes this flow's follow-up segments go unnoticed.
        unsafe {
            (*slot).key = m.key;
            (*slot).state = FollowState {
                start_seq: tcp.seq,
                end_seq: tcp.seq.wrapping_add(followed),
            };
        }
    }
    emit_chunks::<C, true>(ctx, &m, tcp, tls_part::START, followed)
}

/// A later segment of a followed ClientHello. Decided on the slot's
/// sequence range first (scalars already loaded); the flow key is compared
/// only for segments inside a live range.
#[inline(always)]
fn follow<C: Pkt>(ctx: &C, direction: u8, ip: &Ip, tcp: &Tcp) -> Option<()> {
    let slot = FOLLOW.get_ptr_mut(slot_of(tcp))?;
    // SAFETY: a slot of an array map (see `start`).
    let state = unsafe { (*slot).state };
    let rel = tcp.seq.wrapping_sub(state.start_seq);
    let span = state.end_seq.wrapping_sub(state.start_seq);
    if rel == 0 || rel >= span {
        return None;
    }
    continuation(ctx, direction, ip, tcp, slot)
}

/// A segment inside a live follow range: copied if it is that flow's.
#[inline(never)]
fn continuation<C: Pkt>(
    ctx: &C,
    direction: u8,
    ip: &Ip,
    tcp: &Tcp,
    slot: *mut FollowSlot,
) -> Option<()> {
    // SAFETY: a slot of an array map (see `start`).
    let state = unsafe { (*slot).state };
    let rel = tcp.seq.wrapping_sub(state.start_seq);
    let span = state.end_seq.wrapping_sub(state.start_seq);
    if rel == 0 || rel >= span {
        return None;
    }
    let m = meta(ctx, direction, ip, tcp)?;
    // SAFETY: as above.
    if !same_flow(&m.key, unsafe { &(*slot).key }) {
        return None;
    }
    if rel.wrapping_add(tcp.payload_len as u32) >= span {
        // SAFETY: as above. The record is complete: free the slot.
        unsafe { (*slot).state.end_seq = state.start_seq };
    }
    emit_chunks::<C, false>(ctx, &m, tcp, tls_part::CONTINUATION, span - rel)
}

/// Byte-wise, so no `memcmp` call (eBPF has none) is emitted.
#[inline(always)]
fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    let mut diff = 0u8;
    for i in 0..16 {
        diff |= (a.saddr[i] ^ b.saddr[i]) | (a.daddr[i] ^ b.daddr[i]);
    }
    diff == 0 && a.sport == b.sport && a.dport == b.dport && a.family == b.family
}

/// Segments longer than `TLS_CAPTURE` go out as several records, one per
/// `TLS_CAPTURE` bytes, so a ClientHello with a post-quantum key share
/// (about 1.5 KB, e.g. Go's X25519MLKEM768) arrives whole. `wanted` bounds
/// how many bytes of the segment belong to the followed record.
#[inline(always)]
///
/// `INLINE` writes the records in the caller's own frame: `start`'s is the
/// largest, and main + `start` + a writer call is one frame too many for
/// the verifier of 5.10 and 6.1 (which rounds each frame to 32 bytes and
/// allows 512 across a call chain).
fn emit_chunks<C: Pkt, const INLINE: bool>(
    ctx: &C,
    m: &Meta,
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
        let part_chunk = (u32::from(part) << 8) | k as u32;
        if INLINE {
            write_segment(ctx, m, tcp, part_chunk, last)?;
        } else {
            emit_segment(ctx, m, tcp, part_chunk, last)?;
        }
        part = tls_part::CONTINUATION;
    }
    Some(())
}

/// One record: `TLS_CAPTURE` bytes of the segment from `skip` on. Records
/// before the last say they hold exactly what they captured, so userspace
/// sees no gap between them; the last one reports the true remainder.
/// Not inlined, for the verifier's stack sum (see `start`); `part_chunk`
/// is the record's part << 8 | its chunk index (five arguments at most).
#[inline(never)]
fn emit_segment<C: Pkt>(ctx: &C, m: &Meta, tcp: &Tcp, part_chunk: u32, last: bool) -> Option<()> {
    write_segment(ctx, m, tcp, part_chunk, last)
}

/// The body of [`emit_segment`], inlined where the caller's frame allows.
#[inline(always)]
fn write_segment<C: Pkt>(ctx: &C, m: &Meta, tcp: &Tcp, part_chunk: u32, last: bool) -> Option<()> {
    let part = (part_chunk >> 8) as u8;
    let chunk = (part_chunk & 0xff) as usize;
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
        (*rec).ifindex = ctx.ifindex();
        (*rec).netns = m.netns;
        (*rec)._pad = 0;
        (*rec).direction = m.direction;
        (*rec).family = m.key.family;
        (*rec).part = part;
        (*rec).chunk = chunk as u8;
        (*rec).sport = tcp.sport;
        (*rec).dport = tcp.dport;
        (*rec).seq = tcp.seq.wrapping_add(skip as u32);
        (*rec).payload_len = claimed as u16;
        (*rec).saddr = m.key.saddr;
        (*rec).daddr = m.key.daddr;
        (*rec).src_mac = m.eth.src;
        (*rec).dst_mac = m.eth.dst;
        let captured = copy_payload(
            ctx,
            tcp.payload_off + skip,
            want,
            (*rec).payload.as_mut_ptr(),
        );
        (*rec).captured = captured as u16;
    }
    emit::submit(entry);
    Some(())
}

/// Copies `len` bytes at `off` into `dst` (room for `TLS_CAPTURE`). The
/// length is checked against both bounds right before the helper call so
/// the verifier sees a size in [1, TLS_CAPTURE]; a ladder of constant-size
/// loads would do too, but multiplies verifier states per chunk.
#[inline(always)]
unsafe fn copy_payload<C: Pkt>(ctx: &C, off: usize, len: usize, dst: *mut u8) -> usize {
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
    let rc = unsafe { bpf_skb_load_bytes(ctx.skb() as *const _, off as u32, dst.cast(), n) };
    if rc == 0 { n as usize } else { 0 }
}

//! Packet copies for capture bundles: only when the loader asked for them,
//! only for frames the classifier already cares about (ARP, NDP, TCP on
//! watched ports), and never beyond the TLS handshake.

use aya_ebpf::{helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use probe_common::{PACKET_CAPTURE, PacketRecord, kind};

use crate::{emit, maps::capture_packets};

/// Copies the first `keep` bytes of the frame (at most PACKET_CAPTURE).
#[inline(always)]
pub fn frame(ctx: &TcContext, direction: u8, keep: usize) {
    if !capture_packets() {
        return;
    }
    let wire_len = ctx.len();
    let n = core::cmp::min(core::cmp::min(keep, wire_len as usize), PACKET_CAPTURE) as u32;
    if n == 0 {
        return;
    }
    let Some(mut entry) = emit::reserve::<PacketRecord>(kind::PACKET) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    // Hide the range from LLVM and rebuild it so the verifier sees a
    // length in [1, PACKET_CAPTURE] (see tls::copy_payload).
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = (n.wrapping_sub(1) & (PACKET_CAPTURE as u32 - 1)) + 1;
    // SAFETY: exclusively owned reserved slot, fully written before submit;
    // `data` has room for PACKET_CAPTURE >= n bytes.
    unsafe {
        (*rec).header = emit::header(kind::PACKET, size_of::<PacketRecord>());
        (*rec).ifindex = (*ctx.skb.skb).ifindex;
        (*rec).direction = direction;
        (*rec)._pad = [0; 3];
        (*rec).wire_len = wire_len;
        let rc = bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            0,
            (*rec).data.as_mut_ptr().cast(),
            n,
        );
        (*rec).captured = if rc == 0 { n } else { 0 };
    }
    emit::submit(entry);
}

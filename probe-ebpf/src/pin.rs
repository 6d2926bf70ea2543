//! Owner probes: netprobe's own TCP socket, marked `PIN_MARK_BASE + slot`
//! (SO_MARK), makes a TLS handshake through one chosen MAC. Its frames
//! leave with the destination MAC userspace put in `PIN_MAC[slot]`; the
//! node's neighbour table, routes and every other frame are untouched.
//!
//! For ordinary packets the cost is one load of `skb->mark` and a compare.

use aya_ebpf::programs::TcContext;
use probe_common::{PIN_MARK_BASE, PIN_SLOTS};

use crate::maps::PIN_MAC;

/// The pin slot of this frame, if netprobe's own probe socket sent it.
#[inline(always)]
pub fn slot(ctx: &TcContext) -> Option<u32> {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let mark = unsafe { (*ctx.skb.skb).mark };
    slot_of(mark)
}

/// The same from a mark: the socket hooks see it too (the stack copies the
/// socket's mark to its packets before the cgroup egress hook), and leave
/// netprobe's own probe out of what they report.
#[inline(always)]
pub fn slot_of(mark: u32) -> Option<u32> {
    (mark & !(PIN_SLOTS - 1) == PIN_MARK_BASE).then_some(mark & (PIN_SLOTS - 1))
}

// The range test above is one mask and one compare.
const _: () = assert!(PIN_SLOTS.is_power_of_two() && PIN_MARK_BASE % PIN_SLOTS == 0);

/// Rewrites the Ethernet destination to the slot's MAC and counts the
/// frame (an all-zero MAC is an unused slot: the frame is left as it is).
/// Returns TCX_NEXT.
#[inline(never)]
pub fn rewrite(ctx: &TcContext, slot: u32) -> i32 {
    let Some(entry) = PIN_MAC.get_ptr_mut(slot) else {
        return crate::classifier::TCX_NEXT;
    };
    // SAFETY: an array value, valid while the program runs; a lost count
    // under a race is harmless (userspace only asks "any frames?").
    let mac = unsafe { (*entry).mac };
    if mac != [0u8; 6] && ctx.len() >= 14 {
        // bpf_skb_store_bytes makes a cloned (retransmit-queue) skb's
        // header private before writing, so TCP's copy is not changed.
        if ctx.store(0, &mac, 0).is_ok() {
            // SAFETY: as above.
            unsafe { (*entry).frames = (*entry).frames.wrapping_add(1) };
        }
    }
    crate::classifier::TCX_NEXT
}

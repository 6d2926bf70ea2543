//! Ring-buffer reservation with loss accounting: a full buffer is counted,
//! never silent.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::ring_buf::RingBufEntry};
use probe_common::RecordHeader;

use crate::maps::{EVENTS, LOST};

/// Reserves a record of type `T`, or counts one loss for `kind`.
#[inline(always)]
pub fn reserve<T: 'static>(kind: u16) -> Option<RingBufEntry<T>> {
    match EVENTS.reserve::<T>(0) {
        Some(entry) => Some(entry),
        None => {
            if let Some(slot) = LOST.get_ptr_mut(u32::from(kind)) {
                // SAFETY: per-CPU slot, no concurrent writer on this CPU.
                unsafe { *slot += 1 };
            }
            None
        }
    }
}

#[inline(always)]
pub fn header(kind: u16, size: usize) -> RecordHeader {
    // SAFETY: helper without preconditions.
    RecordHeader::new(kind, size, unsafe { bpf_ktime_get_ns() })
}

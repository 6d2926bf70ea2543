//! Ring-buffer reservation with loss accounting: a full buffer is counted,
//! never silent.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    maps::{LruHashMap, ring_buf::RingBufEntry},
};
use probe_common::RecordHeader;

use crate::maps::{EVENTS, LOST, wake_bytes};

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

/// Writes `record` of `kind` to the ring buffer (or counts it lost).
#[inline(always)]
pub fn record<T: 'static>(kind: u16, record: T) -> Option<()> {
    let mut entry = reserve::<T>(kind)?;
    entry.write(record);
    submit(entry);
    Some(())
}

/// Submits a reserved record. The reader is woken only once
/// [`wake_bytes`] are pending; below that it finds the record on its own
/// timed drain (userspace `DRAIN_INTERVAL`). A wake-up per record cost the
/// submitting program ~2.5 µs and the reader a whole cycle per record; a
/// burst now costs one. The wake-up is forced: the kernel's default wakes
/// the reader only for the first record after it caught up, which the
/// records held back here would never be.
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>) {
    let pending = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let flags = if pending >= wake_bytes() {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    entry.submit(flags);
}

#[inline(always)]
pub fn header(kind: u16, size: usize) -> RecordHeader {
    // SAFETY: helper without preconditions.
    RecordHeader::new(kind, size, unsafe { bpf_ktime_get_ns() })
}

/// Adds one to `key`'s counter in an aggregation map and returns the new
/// count; the callers report at counts 1, 2, 4, 8, ...
#[inline(always)]
pub fn bump<K>(map: &LruHashMap<K, u32>, key: &K) -> u32 {
    // SAFETY: the value is copied out at once.
    let count = unsafe { map.get(key) }.map_or(1, |c| c.saturating_add(1));
    let _ = map.insert(key, &count, 0);
    count
}

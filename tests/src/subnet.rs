//! Per-lab address block `10.<octet>.0.0/16` with `octet` in 200..=255.
//!
//! netprobe's tracepoints are global, so a test recognises its own flows by
//! address. Blocks are leased with flock(2) on a per-block file: distinct
//! across labs alive at the same time, also across test binaries running in
//! parallel, and released by the kernel if a test process dies.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

const LOCK_DIR: &str = "/run/netprobe-lab";
pub const FIRST_OCTET: u8 = 200;
const BLOCKS: u32 = 56; // 200..=255

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Lease {
    octet: u8,
    _lock: File,
}

impl Lease {
    /// Second octet of the block: the lab uses 10.<octet>.0.0/16 and
    /// fd00:10:<octet>::/48.
    pub fn octet(&self) -> u8 {
        self.octet
    }
}

/// Takes a free block; rotates the starting point so consecutive labs use
/// different blocks (stale neighbour or conntrack state cannot leak between
/// tests even if a namespace outlived its test).
pub fn lease() -> Lease {
    try_lease()
        .unwrap_or_else(|| panic!("all {BLOCKS} lab address blocks 10.200-255.0.0/16 are in use"))
}

/// Like [`lease`], None when every block is taken.
pub fn try_lease() -> Option<Lease> {
    std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("creating {LOCK_DIR}: {e}"));
    let start = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id();
    for i in 0..BLOCKS {
        let k = (start + i) % BLOCKS;
        let octet = FIRST_OCTET + k as u8;
        let path = Path::new(LOCK_DIR).join(format!("block-{octet}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            NEXT.store(
                k + 1 + BLOCKS - std::process::id() % BLOCKS,
                Ordering::Relaxed,
            );
            return Some(Lease { octet, _lock: file });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_leases_differ_and_are_released() {
        let a = lease();
        let b = lease();
        assert_ne!(a.octet(), b.octet());
        assert!(a.octet() >= FIRST_OCTET && b.octet() >= FIRST_OCTET);
        let held = a.octet();
        drop(a);
        // Released: some later lease takes it again (held ones are kept
        // until the end so the search walks every free block once).
        let mut kept = Vec::new();
        while let Some(l) = try_lease() {
            if l.octet() == held {
                return;
            }
            kept.push(l);
        }
        panic!("block {held} never came back");
    }
}

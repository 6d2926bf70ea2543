//! The bundle's size cap. Packets, events and table snapshots spend from
//! it; a slice is held back for report.md, which is written last and is
//! bounded by construction.

pub const MIB: u64 = 1024 * 1024;
/// Held back for report.md (at most a quarter of the cap).
const REPORT_RESERVE: u64 = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    cap: u64,
    used: u64,
    /// Set once something did not fit: nothing more is written.
    exhausted: bool,
}

impl Budget {
    pub fn new(cap_bytes: u64) -> Self {
        Self {
            cap: cap_bytes,
            used: 0,
            exhausted: false,
        }
    }

    /// What packets, events and snapshots may use together.
    pub fn data_limit(&self) -> u64 {
        self.cap - REPORT_RESERVE.min(self.cap / 4)
    }

    /// Takes `n` bytes if they fit; the first refusal exhausts the budget,
    /// so the bundle ends where the cap was reached rather than with holes.
    pub fn take(&mut self, n: u64) -> bool {
        if self.exhausted || self.used + n > self.data_limit() {
            self.exhausted = true;
            return false;
        }
        self.used += n;
        true
    }

    /// Corrects an estimate taken with [`Budget::take`] to what was written.
    pub fn settle(&mut self, estimated: u64, actual: u64) {
        self.used = self.used - estimated + actual;
    }

    /// Counts bytes written outside the cap's control (the files' headers).
    pub fn spend(&mut self, n: u64) {
        self.used += n;
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn exhausted(&self) -> bool {
        self.exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_data_limit_and_stays_shut() {
        let mut b = Budget::new(MIB);
        assert_eq!(b.data_limit(), MIB - 256 * 1024);
        assert!(b.take(700 * 1024));
        assert!(!b.take(200 * 1024), "would pass the limit");
        assert!(b.exhausted());
        // Even a small write after the first refusal: the capture ends there.
        assert!(!b.take(1));
        assert_eq!(b.used(), 700 * 1024);
    }

    #[test]
    fn small_caps_keep_three_quarters_for_data_and_estimates_settle() {
        let mut b = Budget::new(1000);
        assert_eq!(b.data_limit(), 750);
        assert!(b.take(100));
        b.settle(100, 60);
        assert_eq!(b.used(), 60);
        b.spend(40);
        assert!(b.take(650));
        assert!(!b.take(1));
    }
}
